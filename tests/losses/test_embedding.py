"""Cosine-similarity regression and in-batch contrastive losses against hand computations."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from alignax.losses.embedding import (cosine_matrix, cosine_regression_loss, cosine_similarity,
                                      in_batch_contrastive_loss)

A = np.array([[1.0, 0.0], [1.0, 1.0], [0.0, 2.0]], np.float32)
B = np.array([[1.0, 0.0], [1.0, -1.0], [3.0, 4.0]], np.float32)
COS = np.array([1.0, 0.0, 0.8])  # hand: (1,0).(1,0); (1,1).(1,-1)=0; (0,2).(3,4)/(2*5)=0.8


def test_cosine_similarity_by_hand():
    np.testing.assert_allclose(cosine_similarity(A, B), COS, atol=1e-6)
    m = np.asarray(cosine_matrix(A, B))
    assert m.shape == (3, 3)
    np.testing.assert_allclose(np.diagonal(m), COS, atol=1e-6)
    np.testing.assert_allclose(m[0, 2], 3 / 5, atol=1e-6)
    assert float(cosine_similarity(np.zeros(2), np.ones(2))) == 0.0  # zero row: 0, finite


def test_cosine_regression_golden_and_mask():
    target = np.array([0.5, 0.0, -0.2], np.float32)
    loss = jax.jit(cosine_regression_loss)(A, B, target)
    np.testing.assert_allclose(loss, (COS - target) ** 2, atol=1e-6)  # 0.25, 0, 1.0
    masked = cosine_regression_loss(A, B, target, mask=np.array([1, 0, 1], bool))
    np.testing.assert_allclose(masked, [0.25, 0.0, 1.0], atol=1e-6)
    # masked == sliced
    np.testing.assert_allclose(np.asarray(masked)[[0, 2]],
                               cosine_regression_loss(A[[0, 2]], B[[0, 2]], target[[0, 2]]),
                               atol=1e-7)
    # symmetric in the two sides and invariant to the embeddings' scale
    np.testing.assert_allclose(cosine_regression_loss(3 * B, A, target), loss, atol=1e-6)
    with pytest.raises(ValueError, match="target_similarity"):
        cosine_regression_loss(A, B, target[:2])


def test_cosine_regression_gradients():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(4, 3)), rng.normal(size=(4, 3))
    t = rng.uniform(-1, 1, size=4)
    check_grads(lambda x: cosine_regression_loss(x, b, t).sum(), (a,), order=1,
                modes=("rev",), atol=1e-2, rtol=1e-2)
    g = jax.grad(lambda x: cosine_regression_loss(x, b, t).sum())(jnp.asarray(a, jnp.float32))
    assert np.isfinite(np.asarray(g)).all()


def _naive_infonce(a, b, tau, valid):
    out = np.zeros(len(a))
    for i in range(len(a)):
        if not valid[i]:
            continue
        logits = [a[i] @ b[j] / np.linalg.norm(a[i]) / np.linalg.norm(b[j]) / tau
                  for j in range(len(b)) if valid[j]]
        pos = a[i] @ b[i] / np.linalg.norm(a[i]) / np.linalg.norm(b[i]) / tau
        out[i] = np.log(np.sum(np.exp(logits))) - pos
    return out


def test_contrastive_matches_naive_and_hand():
    # hand: a row whose positive is its only valid key has loss 0
    one = in_batch_contrastive_loss(A, B, temperature=0.5, mask=np.array([1, 0, 0]))
    np.testing.assert_allclose(one, [0.0, 0.0, 0.0], atol=1e-6)
    # hand, two rows, tau = 1: row 0 logits (cos(a0,b0), cos(a0,b1)) = (1, 1/sqrt2)
    two = in_batch_contrastive_loss(A[:2], B[:2], temperature=1.0)
    expect0 = np.log(np.exp(1.0) + np.exp(1 / np.sqrt(2))) - 1.0
    np.testing.assert_allclose(two[0], expect0, atol=1e-6)
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(5, 4)), rng.normal(size=(5, 4))
    valid = np.array([1, 1, 0, 1, 1], bool)
    got = jax.jit(lambda x, y, m: in_batch_contrastive_loss(x, y, temperature=0.1, mask=m))(
        a, b, valid)
    np.testing.assert_allclose(got, _naive_infonce(a, b, 0.1, valid), rtol=1e-5, atol=1e-5)
    # masked == sliced
    np.testing.assert_allclose(np.asarray(got)[valid],
                               in_batch_contrastive_loss(a[valid], b[valid], temperature=0.1),
                               rtol=1e-5, atol=1e-5)
    sym = in_batch_contrastive_loss(a, b, temperature=0.1, symmetric=True)
    np.testing.assert_allclose(sym, 0.5 * (_naive_infonce(a, b, 0.1, np.ones(5, bool))
                                           + _naive_infonce(b, a, 0.1, np.ones(5, bool))),
                               rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="temperature"):
        in_batch_contrastive_loss(a, b, temperature=0.0)


def test_contrastive_gradients_finite_at_extremes():
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(3, 2)), rng.normal(size=(3, 2))
    g = jax.grad(lambda x: in_batch_contrastive_loss(x, b, temperature=1e-3).sum())(
        jnp.asarray(a, jnp.float32))
    assert np.isfinite(np.asarray(g)).all()
    check_grads(lambda x: in_batch_contrastive_loss(x, b, temperature=0.5).sum(), (a,),
                order=1, modes=("rev",), atol=1e-2, rtol=1e-2)
