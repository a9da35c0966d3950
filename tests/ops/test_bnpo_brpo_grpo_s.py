"""BNPO beta normalisation, GRPO-S difficulty scaling, BRPO bootstrapped-reference advantages."""

import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats
from scipy.special import beta as beta_fn

from alignax.ops import (beta_normalization_parameters, beta_normalized_advantages,
                         bootstrapped_reference_advantages, difficulty_scaled_advantages,
                         group_normalized_advantages)

REWARDS = jnp.array([1, 0, 0, 1, 1, 1, 1, 0, 0, 0, 0, 0, 1, 0, 0, 0], jnp.float32)


def test_bnpo_matches_the_beta_density_formula():
    out = beta_normalized_advantages(REWARDS, 4, alpha=2.0, beta=3.0)
    g = np.asarray(REWARDS).reshape(4, 4)
    p = g.mean(1, keepdims=True)
    expected = (g - p) / np.maximum(stats.beta.pdf(p, 2.0, 3.0), 1e-6)
    expected = np.where(g == p, 0.0, expected)
    np.testing.assert_allclose(out, expected.reshape(-1), rtol=1e-4)
    assert np.isfinite(np.asarray(out)).all()


def test_bnpo_special_cases_are_reinforce_and_grpo():
    g = np.asarray(REWARDS).reshape(4, 4)
    centred = (g - g.mean(1, keepdims=True)).reshape(-1)
    np.testing.assert_allclose(beta_normalized_advantages(REWARDS, 4, alpha=1.0, beta=1.0),
                               centred, rtol=1e-5, atol=1e-6)
    # Beta(3/2, 3/2) density = sqrt(p (1 - p)) / B(3/2, 3/2): GRPO's binary std, up to B
    grpo = group_normalized_advantages(REWARDS, 4, eps=0.0)
    np.testing.assert_allclose(
        np.asarray(beta_normalized_advantages(REWARDS, 4, alpha=1.5, beta=1.5))
        / beta_fn(1.5, 1.5), np.nan_to_num(grpo), rtol=1e-4, atol=1e-5)


def test_bnpo_parameters_method_of_moments():
    p = np.array([0.1, 0.3, 0.5, 0.2, 0.4])
    alpha, beta = beta_normalization_parameters(jnp.asarray(p))
    mu, var = p.mean(), p.var(ddof=1)
    common = mu * (1 - mu) / var - 1
    np.testing.assert_allclose([alpha, beta], [1 + mu * common / 3, 1 + (1 - mu) * common / 3],
                               rtol=1e-5)
    # very spread rates would give a < 0: floored at 1 (REINFORCE)
    alpha, beta = beta_normalization_parameters(jnp.array([0.0, 1.0, 0.0, 1.0]))
    assert float(alpha) == 1.0 and float(beta) == 1.0
    with pytest.raises(ValueError, match="at least 2"):
        beta_normalization_parameters(jnp.array([0.5]))


def test_grpo_s_scales_each_group_and_survives_std_normalisation():
    rewards = jnp.array([1.0, 0.0, 2.0, 0.5, 0.5, 1.5])
    scale = jnp.array([3.0, 0.5])
    adv = group_normalized_advantages(rewards, 3)
    out = difficulty_scaled_advantages(adv, scale, 3)
    np.testing.assert_allclose(out[:3], 3.0 * adv[:3], rtol=1e-6)
    np.testing.assert_allclose(out[3:], 0.5 * adv[3:], rtol=1e-6)
    # scaling the rewards instead would be undone by the std normalisation
    np.testing.assert_allclose(group_normalized_advantages(rewards * jnp.repeat(scale, 3), 3),
                               adv, rtol=1e-4)
    with pytest.raises(AssertionError, match=r"shape \(3,\) but expected \(2\)\. \[scale\]"):
        difficulty_scaled_advantages(adv, jnp.ones(3), 3)


def test_brpo_zeroes_the_reference_and_keeps_judgements():
    outcomes = jnp.array([1.0, -1.0, 0.0, 1.0, -1.0, -1.0, 1.0, 1.0])
    out = bootstrapped_reference_advantages(outcomes, jnp.array([2, 0]), 4)
    np.testing.assert_array_equal(out, [1.0, -1.0, 0.0, 1.0, 0.0, -1.0, 1.0, 1.0])
    with pytest.raises(ValueError, match="groups of 4"):
        bootstrapped_reference_advantages(outcomes[:6], jnp.array([0, 0]), 4)
