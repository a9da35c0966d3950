"""The ridge reward model on random Fourier features: the kernel the features approximate, the
fit and the width against NumPy closed forms, the bandit error bound's coverage, and PrefPaint's
trust weights and the lower confidence bound against hand computations."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from alignax.algorithms.diffusion import group_advantages
from alignax.rewards import ridge_rm as R


def test_random_fourier_features_approximate_the_gaussian_kernel():
    feats = R.random_fourier_features(jax.random.key(0), 2, 8192, 0.7)
    x = jnp.array([[0.0, 0.0], [0.3, -0.2], [1.0, 1.0], [-2.0, 0.5]])
    phi = R.featurize(feats, x)
    assert phi.shape == (4, 8192)
    gram = np.asarray(phi @ phi.T)
    d2 = np.sum((np.asarray(x)[:, None] - np.asarray(x)[None]) ** 2, -1)
    np.testing.assert_allclose(gram, np.exp(-d2 / (2 * 0.7 ** 2)), atol=0.04)
    with pytest.raises(ValueError, match=r"x \[N, 2\]"):
        R.featurize(feats, x[:, :1])


def test_ridge_fit_prediction_and_width_match_numpy():
    rng = np.random.default_rng(0)
    phi = rng.normal(size=(30, 6)).astype(np.float32)
    y = rng.normal(size=30).astype(np.float32)
    lam = 0.5
    rm = jax.jit(R.ridge_fit)(phi, y, lam)
    v = lam * np.eye(6) + phi.T.astype(np.float64) @ phi
    theta = np.linalg.solve(v, phi.T.astype(np.float64) @ y)
    np.testing.assert_allclose(rm.theta, theta, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(R.inverse_design(rm), np.linalg.inv(v), rtol=1e-4, atol=1e-6)
    q = rng.normal(size=(5, 6)).astype(np.float32)
    np.testing.assert_allclose(R.ridge_predict(rm, q), q @ theta, rtol=1e-4, atol=1e-5)
    want = np.sqrt(np.einsum("nd,de,ne->n", q, np.linalg.inv(v), q))
    np.testing.assert_allclose(jax.jit(R.confidence_width)(rm, q), want, rtol=1e-4)
    # masked rows are left out, as if sliced away
    mask = (np.arange(30) < 20).astype(np.float32)
    a, b = R.ridge_fit(phi, y, lam, mask), R.ridge_fit(phi[:20], y[:20], lam)
    np.testing.assert_allclose(a.theta, b.theta, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(a.chol, b.chol, rtol=1e-5, atol=1e-6)


def test_width_shrinks_with_coverage_and_is_capped_by_the_prior():
    feats = R.random_fourier_features(jax.random.key(1), 1, 64, 0.5)
    x = jnp.linspace(-1.0, 1.0, 40)[:, None]
    lam = 0.1
    rm = R.ridge_fit(R.featurize(feats, x), jnp.zeros(40), lam)
    inside = R.featurize(feats, jnp.array([[0.0]]))
    outside = R.featurize(feats, jnp.array([[4.0]]))
    w_in = float(R.confidence_width(rm, inside)[0])
    w_out = float(R.confidence_width(rm, outside)[0])
    assert w_in < 0.2 * w_out
    cap = float(jnp.linalg.norm(outside)) / math.sqrt(lam)  # no data: ||phi|| / sqrt(lambda)
    assert w_out <= cap * (1 + 1e-5)
    more = R.ridge_fit(R.featurize(feats, jnp.concatenate([x, jnp.array([[4.0]])])),
                       jnp.zeros(41), lam)
    assert float(R.confidence_width(more, outside)[0]) < w_out  # one more point at x shrinks it


def test_bandit_bound_covers_the_error_of_a_linear_truth():
    """|phi^T theta_hat - phi^T theta*| <= alpha ||phi||_{V^-1} on fresh points (delta 0.05)."""
    rng = np.random.default_rng(3)
    d, n, lam, sigma = 8, 60, 1.0, 0.3
    theta_star = rng.normal(size=d)
    theta_star /= np.linalg.norm(theta_star)
    misses = 0
    for trial in range(20):
        phi = rng.normal(size=(n, d)).astype(np.float32)
        y = (phi @ theta_star + sigma * rng.normal(size=n)).astype(np.float32)
        rm = R.ridge_fit(phi, y, lam)
        alpha = float(R.oful_radius(rm, lam, noise_std=sigma, norm_bound=1.0, delta=0.05))
        q = rng.normal(size=(200, d)).astype(np.float32)
        err = np.abs(np.asarray(R.ridge_predict(rm, q)) - q @ theta_star)
        misses += int(np.any(err > alpha * np.asarray(R.confidence_width(rm, q))))
    assert misses <= 2  # the bound holds for all points at once with prob >= 0.95
    # and it is not vacuous: alpha times the width is within 20x of the typical error
    bound = float(np.median(alpha * np.asarray(R.confidence_width(rm, q))))
    assert bound < 20 * float(np.median(err)), (bound, float(np.median(err)))


def test_trust_weights_and_lcb_hand_values():
    width = jnp.array([0.0, 2.0, 20.0, 200.0])
    got = jax.jit(R.trust_weights)(width)
    # exp(-0.05 w + 0.7): 2.0138, 1.8221, 0.7408 -> 1, 0.0000 -> 1 (clamp [1, 2.21])
    np.testing.assert_allclose(got, [math.exp(0.7), math.exp(0.6), 1.0, 1.0], rtol=1e-6)
    np.testing.assert_allclose(R.trust_weights(width, k=0.0, b=0.0), np.ones(4))
    np.testing.assert_allclose(R.trust_weights(jnp.array([0.0]), k=1.0, b=2.0), [2.21])
    np.testing.assert_allclose(R.lcb_reward(jnp.array([1.0, 2.0]), jnp.array([0.5, 3.0]), 2.0),
                               [0.0, -4.0])


def test_trust_weighted_advantages_fold_the_weight_into_the_clipped_loss():
    rng = np.random.default_rng(0)
    r = jnp.asarray(rng.normal(size=8), jnp.float32)
    width = jnp.asarray(rng.uniform(0, 30, size=8), jnp.float32)
    np.testing.assert_allclose(R.normalized_advantages(r, 4), group_advantages(r, 4), rtol=1e-6)
    np.testing.assert_allclose(R.normalized_advantages(r), group_advantages(r), rtol=1e-6)
    adv = R.trust_weighted_advantages(r, width, 4, advantage_clip=1.0)
    gamma = R.trust_weights(width)
    np.testing.assert_allclose(adv, gamma * jnp.clip(group_advantages(r, 4), -1, 1), rtol=1e-6)
    # gamma max(-A rho, -A clip(rho)) == max(-(gamma A) rho, -(gamma A) clip(rho))
    a, rho = group_advantages(r, 4), jnp.asarray(rng.uniform(0.5, 1.5, size=8), jnp.float32)
    loss = lambda adv: jnp.maximum(-adv * rho, -adv * jnp.clip(rho, 0.9, 1.1))  # noqa: E731
    np.testing.assert_allclose(gamma * loss(a), loss(gamma * a), rtol=1e-6)
    with pytest.raises(ValueError, match="group_size 3"):
        R.normalized_advantages(r, 3)
