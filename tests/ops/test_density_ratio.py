"""Logistic regression by Newton's method, density ratios and BCO's UDM weights."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from alignax.ops.density_ratio import (
    logistic_regression,
    matching_weights,
    positive_probability,
    udm_weights,
)

fit = jax.jit(logistic_regression, static_argnames=("l2", "balanced", "num_iters"))


def _objective(theta, x, y, s, l2):
    z = x @ theta[:-1] + theta[-1]
    nll = -(s * (y * jax.nn.log_sigmoid(z) + (1 - y) * jax.nn.log_sigmoid(-z))).sum()
    return nll + 0.5 * l2 * jnp.sum(theta[:-1] ** 2)


def test_newton_reaches_the_regularised_optimum():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 3)).astype(np.float32)
    y = (x @ [1.0, -2.0, 0.5] + 0.3 + rng.logistic(size=200) > 0).astype(np.float32)
    for balanced in (True, False):
        w, b = fit(x, y, l2=0.1, balanced=balanced)
        if balanced:
            s = np.where(y > 0.5, 0.5 / y.sum(), 0.5 / (1 - y).sum())
        else:
            s = np.full(200, 1 / 200)
        theta = jnp.concatenate([w, b[None]])
        g = jax.grad(_objective)(theta, x, y, jnp.asarray(s, jnp.float32), 0.1)
        np.testing.assert_allclose(g, 0.0, atol=1e-5)
        # the optimum is a minimum: a perturbation raises the objective
        f0 = _objective(theta, x, y, s, 0.1)
        assert _objective(theta + 0.05, x, y, s, 0.1) > f0


def test_balanced_classifier_recovers_the_gaussian_density_ratio():
    # P = N(+1, 1), Q = N(-1, 1) in 1-d: log p/q = 2x exactly, whatever the class sizes
    rng = np.random.default_rng(1)
    pos = rng.normal(1.0, 1.0, size=(3000, 1))
    neg = rng.normal(-1.0, 1.0, size=(12000, 1))
    x = np.concatenate([pos, neg]).astype(np.float32)
    y = np.concatenate([np.ones(3000), np.zeros(12000)]).astype(np.float32)
    w, b = fit(x, y, l2=1e-4, balanced=True)
    np.testing.assert_allclose(w, [2.0], atol=0.1)
    np.testing.assert_allclose(b, 0.0, atol=0.1)
    # unbalanced: the intercept absorbs the log prior odds log(3000 / 12000)
    w, b = fit(x, y, l2=1e-4, balanced=False)
    np.testing.assert_allclose(b, np.log(0.25), atol=0.1)
    # matching_weights at x = 0.5: ratio exp(1) inside the clip range; far out it is clipped
    q = jnp.array([[0.5], [-3.0], [3.0]])
    got = matching_weights(pos, neg, q, l2=1e-4)
    np.testing.assert_allclose(got[0], np.e, rtol=0.15)
    np.testing.assert_allclose(got[1:], [0.5, 10.0])


def test_udm_weights_clip_the_odds():
    p = jnp.array([0.0, 0.2, 0.5, 0.8, 0.95, 1.0])
    np.testing.assert_allclose(udm_weights(p), [0.5, 0.5, 1.0, 4.0, 10.0, 10.0], rtol=1e-5)
    np.testing.assert_allclose(udm_weights(p, w_min=0.1, w_max=100.0),
                               [0.1, 0.25, 1.0, 4.0, 19.0, 100.0], rtol=1e-4)
    with pytest.raises(ValueError):
        udm_weights(p, w_min=2.0, w_max=1.0)
    np.testing.assert_allclose(positive_probability(jnp.array([1.0]), jnp.float32(0.0),
                                                    jnp.array([[0.0]])), [0.5])


def test_matching_weights_default_to_the_negatives_and_vmap_over_seeds():
    rng = np.random.default_rng(2)
    pos = rng.normal(0.5, 1.0, size=(2, 50, 2)).astype(np.float32)
    neg = rng.normal(-0.5, 1.0, size=(2, 80, 2)).astype(np.float32)
    both = jax.vmap(matching_weights)(pos, neg)
    assert both.shape == (2, 80)
    np.testing.assert_allclose(both[1], matching_weights(pos[1], neg[1]), rtol=1e-5)
    # negatives that look like positives get larger weights
    proj = neg[0] @ np.ones(2)
    assert np.corrcoef(proj, np.asarray(both[0]))[0, 1] > 0.5
