"""Masked multi-output ridge regression and reward decorrelation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from alignax.ops.regression import (
    decorrelate,
    decorrelation_coefficients,
    masked_ridge_regression,
)


# jit once per shape: eager op-by-op dispatch of the solves is much slower
ridge = jax.jit(masked_ridge_regression, static_argnames=("l2", "fit_intercept"))
coefficients = jax.jit(decorrelation_coefficients)


def naive_ridge(x, y, m, l2, fit_intercept=True):
    x, y, m = (np.asarray(a, np.float64) for a in (x, y, m))
    d, k = x.shape[1], y.shape[1]
    w, b = np.zeros((d, k)), np.zeros(k)
    for j in range(k):
        rows = m[:, j] > 0
        xs, ys = x[rows], y[rows, j]
        if fit_intercept:
            # augmented least squares with an unpenalised intercept column
            a = np.concatenate([xs, np.ones((len(xs), 1))], axis=1)
            reg = np.diag([l2] * d + [0.0])
            sol = np.linalg.solve(a.T @ a + reg, a.T @ ys)
            w[:, j], b[j] = sol[:d], sol[d]
        else:
            w[:, j] = np.linalg.solve(xs.T @ xs + l2 * np.eye(d), xs.T @ ys)
    return w, b


def test_golden_values_under_jit():
    # x = [1, 2, 3], y = 2x + 1, l2 = 1: centred x = [-1, 0, 1], sum xc^2 = 2,
    # sum xc (y - ybar) = 2 * 2 = 4 -> w = 4 / (2 + 1) = 4/3, b = ybar - xbar w = 5 - 8/3 = 7/3.
    x = jnp.array([[1.0], [2.0], [3.0]])
    y = jnp.array([[3.0], [5.0], [7.0]])
    w, b = jax.jit(masked_ridge_regression)(x, y)
    np.testing.assert_allclose(w, [[4 / 3]], rtol=1e-6)
    np.testing.assert_allclose(b, [7 / 3], rtol=1e-6)
    # no intercept: w = sum x y / (sum x^2 + 1) = 34 / 15
    w, b = ridge(x, y, fit_intercept=False)
    np.testing.assert_allclose(w, [[34 / 15]], rtol=1e-6)
    np.testing.assert_allclose(b, [0.0])


def test_matches_numpy_reference_with_missing_labels():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 5)).astype(np.float32)
    y = rng.normal(size=(60, 3)).astype(np.float32)
    m = rng.uniform(size=(60, 3)) < 0.6
    for fit_intercept in (True, False):
        w, b = ridge(x, y, m, l2=0.5, fit_intercept=fit_intercept)
        w_ref, b_ref = naive_ridge(x, y, m, 0.5, fit_intercept)
        np.testing.assert_allclose(w, w_ref, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(b, b_ref, rtol=1e-4, atol=1e-5)


def test_masked_equals_sliced_and_ignores_unrated_values():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(40, 4)).astype(np.float32)
    y = rng.normal(size=(40, 2)).astype(np.float32)
    m = np.zeros((40, 2), bool)
    m[:25, 0] = True
    m[10:, 1] = True
    w, b = ridge(x, y, m)
    w0, b0 = ridge(x[:25], y[:25, :1])
    w1, b1 = ridge(x[10:], y[10:, 1:])
    np.testing.assert_allclose(w, np.concatenate([w0, w1], axis=1), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(b, np.concatenate([b0, b1]), rtol=1e-5, atol=1e-6)
    # NaN (unrated) entries are never read
    y_nan = np.where(m, y, np.nan)
    w2, b2 = ridge(x, y_nan, m)
    np.testing.assert_allclose(w2, w, rtol=1e-6)
    np.testing.assert_allclose(b2, b, rtol=1e-6)
    # an objective with no rated rows is all zeros
    w3, b3 = ridge(x, y, np.zeros_like(m))
    np.testing.assert_array_equal(w3, 0.0)
    np.testing.assert_array_equal(b3, 0.0)


def test_recovers_exact_linear_map_as_l2_vanishes():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(200, 6))
    w_true = rng.normal(size=(6, 2))
    y = x @ w_true + np.array([0.5, -1.0])
    w, b = ridge(x.astype(np.float32), y.astype(np.float32), l2=1e-4)
    np.testing.assert_allclose(w, w_true, atol=1e-3)
    np.testing.assert_allclose(b, [0.5, -1.0], atol=1e-3)


def test_permuting_objectives_permutes_outputs():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(30, 3)).astype(np.float32)
    y = rng.normal(size=(30, 4)).astype(np.float32)
    m = rng.uniform(size=(30, 4)) < 0.7
    perm = np.array([2, 0, 3, 1])
    w, b = ridge(x, y, m)
    wp, bp = ridge(x, y[:, perm], m[:, perm])
    np.testing.assert_allclose(wp, w[:, perm], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(bp, b[perm], rtol=1e-5, atol=1e-6)


def test_ridge_gradients():
    rng = np.random.default_rng(4)
    x = jnp.asarray(rng.normal(size=(12, 3)))
    y = jnp.asarray(rng.normal(size=(12, 2)))
    m = jnp.asarray(rng.uniform(size=(12, 2)) < 0.8)

    def f(x, y):
        w, b = ridge(x, y, m, l2=0.3)
        return jnp.sum(w**2) + jnp.sum(b)

    f = jax.jit(f)
    check_grads(f, (x, y), order=1, modes=["rev"], atol=1e-2, rtol=1e-2)
    g = jax.grad(f, argnums=(0, 1))(x * 1e3, y * 1e3)
    assert all(np.isfinite(np.asarray(a)).all() for a in g)


def test_ridge_shape_errors():
    # shape checks are chex asserts (trace-time): AssertionError naming the arguments
    with pytest.raises(AssertionError,
                       match=r"input 0 has rank 1 .* but expected 2\. \[features, targets\]"):
        masked_ridge_regression(jnp.ones(3), jnp.ones((3, 1)))
    with pytest.raises(AssertionError, match=r"at dims 0: \[3, 4\] .*same number of rows"):
        masked_ridge_regression(jnp.ones((3, 2)), jnp.ones((4, 1)))
    with pytest.raises(AssertionError, match=r"different shapes.*\[targets, mask\]"):
        masked_ridge_regression(jnp.ones((3, 2)), jnp.ones((3, 2)), jnp.ones((3, 1)))
    with pytest.raises(ValueError, match="l2 must be > 0"):
        masked_ridge_regression(jnp.ones((3, 2)), jnp.ones((3, 2)), l2=0.0)


def test_decorrelation_golden_and_zero_correlation():
    # v = [0, 1, 2], r = [[1, 0], [2, 1], [4, 1]]: Var v = 2/3,
    # Cov(r0, v) = (-1 * -4/3 + 0 + 1 * 5/3) / 3 = 1, Cov(r1, v) = (-1 * -2/3 + 1 * 1/3) / 3 = 1/3
    v = jnp.array([0.0, 1.0, 2.0])
    r = jnp.array([[1.0, 0.0], [2.0, 1.0], [4.0, 1.0]])
    lam = jax.jit(decorrelation_coefficients)(r, v)
    np.testing.assert_allclose(lam, [1.5, 0.5], rtol=1e-6)

    rng = np.random.default_rng(5)
    v = rng.normal(size=500).astype(np.float32)
    r = (rng.normal(size=(500, 3)) + np.outer(v, [2.0, -1.0, 0.0])).astype(np.float32)
    r = np.concatenate([r, v[:, None]], axis=1)  # the reference itself as the last objective
    lam = coefficients(r, v)
    out = np.asarray(decorrelate(r, v, lam), np.float64)
    corr = [np.corrcoef(out[:, k], v)[0, 1] for k in range(3)]
    np.testing.assert_allclose(corr, 0.0, atol=1e-4)
    np.testing.assert_allclose(lam[3], 1.0, rtol=1e-5)
    np.testing.assert_allclose(out[:, 3], 0.0, atol=1e-5)
    # decorrelating twice changes nothing more (lambda = 0 the second time)
    np.testing.assert_allclose(coefficients(out.astype(np.float32), v), 0.0,
                               atol=1e-4)


def test_decorrelation_scale_invariance_and_mask():
    rng = np.random.default_rng(6)
    v = rng.normal(size=100).astype(np.float32)
    r = (rng.normal(size=(100, 2)) + v[:, None]).astype(np.float32)
    lam = coefficients(r, v)
    lam3 = coefficients(r, 3.0 * v)
    np.testing.assert_allclose(lam3, lam / 3.0, rtol=1e-5)
    np.testing.assert_allclose(decorrelate(r, 3.0 * v, lam3), decorrelate(r, v, lam), atol=1e-5)
    mask = np.arange(100) < 60
    np.testing.assert_allclose(coefficients(r, v, mask),
                               coefficients(r[:60], v[:60]), rtol=1e-5)
    # constant reference: nothing to remove
    np.testing.assert_array_equal(coefficients(r, np.ones(100, np.float32)), 0.0)


def test_decorrelation_gradients_and_shape_errors():
    rng = np.random.default_rng(7)
    r = jnp.asarray(rng.normal(size=(10, 2)))
    v = jnp.asarray(rng.normal(size=10))
    f = jax.jit(lambda r, v: jnp.sum(decorrelation_coefficients(r, v) ** 2))
    check_grads(f, (r, v), order=1, modes=["rev"], atol=1e-2, rtol=1e-2)
    g = jax.jit(jax.grad(lambda v: jnp.sum(decorrelation_coefficients(r * 1e4, v))))(v * 1e-4)
    assert np.isfinite(np.asarray(g)).all()
    with pytest.raises(AssertionError,
                       match=r"input 1 has rank 2 .* but expected 1\. \[rewards, reference\]"):
        decorrelation_coefficients(r, v[:, None])
    with pytest.raises(AssertionError, match=r"at dims 0: .*same number of rows"):
        decorrelation_coefficients(r, v[:5])
    with pytest.raises(AssertionError, match=r"shape \(3,\) but expected .*\[coefficients\]"):
        decorrelate(r, v, jnp.ones(3))
