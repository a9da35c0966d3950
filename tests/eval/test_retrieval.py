"""Retrieval metrics (alignax.eval.retrieval) against hand-ranked toy examples."""

import jax
import numpy as np
import pytest

from alignax.eval import retrieval

# keys on the unit circle at angles 0, 30, 90, 180 degrees; queries at 0 and 90 degrees
KEYS = np.array([[1, 0], [np.cos(np.pi / 6), np.sin(np.pi / 6)], [0, 1], [-1, 0]], np.float32)
QUERIES = np.array([[2, 0], [0, 3]], np.float32)
# hand rankings: q0 -> 0, 1, 2, 3 (2 and 3: cos 0 and -1); q1 -> 2, 1, {0, 3} (cos 0, 0)
REL = np.array([[0, 1, 0, 1], [0, 0, 0, 0]], bool)


def test_top_k_by_hand_and_key_mask():
    idx, scores = retrieval.cosine_top_k(QUERIES, KEYS, 2)
    np.testing.assert_array_equal(idx, [[0, 1], [2, 1]])
    np.testing.assert_allclose(scores, [[1, np.cos(np.pi / 6)], [1, 0.5]], atol=1e-6)
    idx, _ = retrieval.cosine_top_k(QUERIES, KEYS, 2, key_mask=np.array([0, 1, 1, 1], bool))
    np.testing.assert_array_equal(idx, [[1, 2], [2, 1]])
    with pytest.raises(ValueError, match="k must be"):
        retrieval.cosine_top_k(QUERIES, KEYS, 5)


def test_precision_recall_mrr_by_hand():
    idx, _ = retrieval.cosine_top_k(QUERIES, KEYS, 2)
    np.testing.assert_allclose(retrieval.precision_at_k(idx, REL), [0.5, 0.0])
    np.testing.assert_allclose(retrieval.recall_at_k(idx, REL), [0.5, 0.0])  # q1: none relevant
    scores = retrieval.cosine_matrix(QUERIES, KEYS)
    np.testing.assert_allclose(retrieval.reciprocal_rank(scores, REL), [0.5, 0.0])
    rel = np.array([[0, 0, 0, 1], [1, 0, 0, 1]], bool)
    # q0: key 3 is last (rank 4); q1: keys 0 and 3 tie at cos 0 after 2, 1 -> key 0 at rank 3
    np.testing.assert_allclose(retrieval.reciprocal_rank(scores, rel), [0.25, 1 / 3], atol=1e-6)
    # masking key 1 moves q0's key 3 to rank 3; a masked relevant key does not count
    mask = np.array([1, 0, 1, 1], bool)
    np.testing.assert_allclose(retrieval.reciprocal_rank(scores, rel, key_mask=mask),
                               [1 / 3, 0.5], atol=1e-6)
    np.testing.assert_allclose(
        retrieval.reciprocal_rank(scores, np.array([[0, 1, 0, 0]] * 2, bool), key_mask=mask),
        [0.0, 0.0])


def test_knn_majority_and_ties():
    retrieved = np.array([[0, 1, 2], [2, 3, 0], [1, 3, 3]])
    labels = np.array([2, 2, 0, 1])
    np.testing.assert_array_equal(retrieval.knn_predict(retrieved, labels, 3), [2, 0, 1])
    # keys 2, 3, 0 have labels 0, 1, 2: one vote each, the tie goes to the smallest label
    np.testing.assert_array_equal(retrieval.knn_predict(np.array([[2, 3, 0]]), labels, 3), [0])
    np.testing.assert_allclose(retrieval.knn_accuracy(retrieved, labels, [2, 1, 1], 3),
                               [1, 0, 1])


def test_retrieval_metrics_jits_and_agrees():
    rng = np.random.default_rng(0)
    q, kx = rng.normal(size=(6, 4)), rng.normal(size=(10, 4))
    rel = rng.uniform(size=(6, 10)) < 0.3
    labels, qlabels = rng.integers(0, 3, 10), rng.integers(0, 3, 6)
    fn = jax.jit(lambda q, kx, rel, lab, ql: retrieval.retrieval_metrics(
        q, kx, rel, k=3, key_labels=lab, query_labels=ql, num_classes=3))
    m = fn(q, kx, rel, labels, qlabels)
    # naive numpy reference
    cos = (q / np.linalg.norm(q, axis=1, keepdims=True)) @ (
        kx / np.linalg.norm(kx, axis=1, keepdims=True)).T
    order = np.argsort(-cos, axis=1, kind="stable")
    top = order[:, :3]
    hits = np.take_along_axis(rel, top, 1)
    np.testing.assert_allclose(m["precision_at_k"], hits.mean(), atol=1e-6)
    recall = np.where(rel.sum(1) > 0, hits.sum(1) / np.maximum(rel.sum(1), 1), 0)
    np.testing.assert_allclose(m["recall_at_k"], recall.mean(), atol=1e-6)
    rr = [1 / (np.argmax(np.take_along_axis(rel, order, 1)[i]) + 1) if rel[i].any() else 0
          for i in range(6)]
    np.testing.assert_allclose(m["mrr"], np.mean(rr), atol=1e-6)
    votes = np.array([np.bincount(labels[t], minlength=3).argmax() for t in top])
    np.testing.assert_allclose(m["knn_accuracy"], np.mean(votes == qlabels), atol=1e-6)
