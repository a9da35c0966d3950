"""AUROC (ties counted half) against a naive O(n^2) reference, and pruned majority voting."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from alignax.eval.ranking import auroc, majority_vote, pruned_majority_vote


def naive_auroc(scores, labels):
    s, y = np.asarray(scores, np.float64), np.asarray(labels).astype(bool)
    pos, neg = s[y], s[~y]
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    wins = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return wins / (len(pos) * len(neg))


def test_auroc_golden_values():
    f = jax.jit(auroc)
    assert float(f(jnp.array([0.9, 0.8, 0.1, 0.2]), jnp.array([1, 1, 0, 0]))) == 1.0
    assert float(f(jnp.array([0.1, 0.2, 0.9, 0.8]), jnp.array([1, 1, 0, 0]))) == 0.0
    # by hand: pos {3, 1}, neg {2, 1}: 3>2, 3>1, 1<2, 1=1 (half) -> 2.5 / 4
    assert float(f(jnp.array([3.0, 1.0, 2.0, 1.0]), jnp.array([1, 1, 0, 0]))) == 0.625
    assert float(f(jnp.zeros(6), jnp.array([1, 0, 1, 0, 1, 0]))) == 0.5  # all tied
    assert np.isnan(float(f(jnp.ones(3), jnp.ones(3, int))))  # one class only


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_auroc_matches_naive_reference_with_ties(seed):
    rng = np.random.default_rng(seed)
    n = 200
    scores = rng.integers(0, 12, n).astype(np.float32)  # many ties
    labels = rng.random(n) < 0.3 + 0.04 * scores
    np.testing.assert_allclose(jax.jit(auroc)(scores, labels), naive_auroc(scores, labels),
                               rtol=1e-6)
    cont = rng.normal(size=n).astype(np.float32)
    np.testing.assert_allclose(auroc(cont, labels), naive_auroc(cont, labels), rtol=1e-6)


def test_auroc_mask_equals_slice_and_symmetries():
    rng = np.random.default_rng(3)
    s = rng.normal(size=50).astype(np.float32)
    y = rng.random(50) < 0.5
    m = rng.random(50) < 0.6
    np.testing.assert_allclose(auroc(s, y, m), naive_auroc(s[m], y[m]), rtol=1e-6)
    # flipping labels or negating scores gives 1 - AUROC; monotone maps leave it unchanged
    a = float(auroc(s, y))
    np.testing.assert_allclose(auroc(s, ~y), 1 - a, rtol=1e-6)
    np.testing.assert_allclose(auroc(-s, y), 1 - a, rtol=1e-6)
    np.testing.assert_allclose(auroc(np.exp(s), y), a, rtol=1e-6)
    # vmaps over rows (e.g. prefix fractions)
    batch = jax.vmap(auroc, in_axes=(0, None))(jnp.stack([s, -s]), y)
    np.testing.assert_allclose(batch, [a, 1 - a], rtol=1e-6)
    # extreme finite scores
    np.testing.assert_allclose(auroc(np.array([3e38, -3e38, 0.0]), np.array([1, 0, 0])), 1.0)


def test_majority_vote():
    answers = jnp.array([[3, 3, 5, -1], [2, 5, 5, 2], [-1, -1, -1, -1]])
    np.testing.assert_array_equal(majority_vote(answers, jnp.ones((3, 4)), 10), [3, 2, -1])
    np.testing.assert_array_equal(
        majority_vote(answers, jnp.array([[0, 0, 1, 1], [0, 1, 1, 1], [1, 1, 1, 1]]), 10),
        [5, 5, -1])


def test_pruned_majority_vote_golden():
    scores = jnp.array([[0.9, 0.1, 0.8, 0.2, 0.7]])
    answers = jnp.array([[4, 7, 4, 7, 1]])  # low-scored samples carry the wrong answer 7
    lengths = jnp.array([[10, 10, 10, 10, 10]])
    prefix = jnp.array([[4, 4, 4, 4, 4]])
    out = jax.jit(pruned_majority_vote, static_argnames=("quantile", "num_answers"))(
        scores, answers, lengths, prefix, quantile=0.5, num_answers=10)
    np.testing.assert_array_equal(out.kept, [[True, False, True, False, True]])
    np.testing.assert_array_equal(out.answer, [4])
    np.testing.assert_array_equal(out.full_answer, [4])  # 4 and 7 tie: the smaller wins
    np.testing.assert_allclose(out.tokens_used, [3 * 10 + 2 * 4])
    np.testing.assert_allclose(out.tokens_full, [50])
    # quantile 0 keeps everything; quantile 1 keeps the best only
    keep_all = pruned_majority_vote(scores, answers, lengths, prefix, quantile=0.0,
                                    num_answers=10)
    assert bool(keep_all.kept.all()) and float(keep_all.tokens_used[0]) == 50.0
    best = pruned_majority_vote(scores, answers, lengths, prefix, quantile=1.0, num_answers=10)
    np.testing.assert_array_equal(best.kept, [[True, False, False, False, False]])


def test_pruned_majority_vote_matches_numpy_loop():
    rng = np.random.default_rng(4)
    p, s = 20, 16
    scores = rng.normal(size=(p, s)).astype(np.float32)
    answers = rng.integers(-1, 10, size=(p, s))
    lengths = rng.integers(8, 30, size=(p, s))
    prefix = lengths // 2
    out = pruned_majority_vote(scores, answers, lengths, prefix, quantile=0.6, num_answers=10)
    for i in range(p):
        keep = scores[i] >= np.quantile(scores[i], 0.6)
        np.testing.assert_array_equal(out.kept[i], keep)
        counts = np.bincount(answers[i][keep & (answers[i] >= 0)], minlength=10)
        assert int(out.answer[i]) == (int(counts.argmax()) if counts.max() > 0 else -1)
        assert float(out.tokens_used[i]) == lengths[i][keep].sum() + prefix[i][~keep].sum()


def test_shape_errors():
    # shape checks are chex asserts (trace-time): AssertionError naming the arguments
    with pytest.raises(AssertionError,
                       match=r"different shapes: \[\(3,\), \(4,\)\]\. \[scores, labels\]"):
        auroc(jnp.ones(3), jnp.ones(4))
    with pytest.raises(AssertionError, match=r"rank 2 .* but expected 1\. \[scores\]"):
        auroc(jnp.ones((2, 3)), jnp.ones((2, 3)))
    with pytest.raises(AssertionError,
                       match=r"different shapes: .*\(2, 4\)\]\. "
                             r"\[prefix_scores, answers, lengths, prefix_lengths\]"):
        pruned_majority_vote(jnp.ones((2, 3)), jnp.ones((2, 3), int), jnp.ones((2, 3)),
                             jnp.ones((2, 4)), quantile=0.5, num_answers=3)
    with pytest.raises(ValueError, match="quantile"):
        pruned_majority_vote(jnp.ones((2, 3)), jnp.ones((2, 3), int), jnp.ones((2, 3)),
                             jnp.ones((2, 3)), quantile=1.5, num_answers=3)
