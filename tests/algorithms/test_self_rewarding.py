"""alignax.algorithms.self_rewarding: best-vs-worst pairs, rank consistency and CREAM's C."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from alignax.algorithms.self_rewarding import (consistency_weight, implicit_reward,
                                               ranking_consistency, self_reward_pairs)


def test_implicit_reward_is_beta_times_log_ratio():
    r = implicit_reward(jnp.array([-1.0, -2.0]), jnp.array([-1.5, -1.0]), 0.5)
    np.testing.assert_allclose(r, [0.25, -0.5])


def test_pairs_are_argmax_and_argmin_with_validity():
    scores = jnp.array([[0.1, 0.9, -0.3, 0.2],
                        [1.0, 1.0, 1.0, 1.0],      # no preference
                        [2.0, -1.0, 2.0, -1.0],    # ties: the first
                        [0.0, jnp.nan, 1.0, 2.0]])  # non-finite
    c, r, valid = self_reward_pairs(scores)
    assert c.dtype == jnp.int32 and r.dtype == jnp.int32
    np.testing.assert_array_equal(c[:3], [1, 0, 0])
    np.testing.assert_array_equal(r[:3], [2, 0, 1])
    np.testing.assert_array_equal(valid, [True, False, True, False])
    # batched over a leading seed axis and under jit
    c2, r2, v2 = jax.jit(self_reward_pairs)(jnp.stack([scores[:3], -scores[:3]]))
    np.testing.assert_array_equal(c2[1], r[:3])
    np.testing.assert_array_equal(r2[1], c[:3])
    with pytest.raises(ValueError, match=">= 2 responses"):
        self_reward_pairs(jnp.ones((3, 1)))


def test_ranking_consistency_matches_scipy_per_row():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(5, 8))
    b = a + rng.normal(scale=0.7, size=(5, 8))
    b[0] = np.round(b[0])  # ties
    tau = np.asarray(ranking_consistency(a, b))
    for i in range(5):
        ref = stats.kendalltau(a[i], b[i], variant="b").statistic
        assert tau[i] == pytest.approx(ref, abs=1e-5)
    # identical rankings: 1; reversed: -1; a constant row: NaN
    np.testing.assert_allclose(ranking_consistency(a, 3 * a + 1), 1.0, atol=1e-6)
    np.testing.assert_allclose(ranking_consistency(a, -a), -1.0, atol=1e-6)
    assert np.isnan(ranking_consistency(np.ones(4), np.arange(4.0)))


def test_consistency_weight_averages_defined_rows_and_defaults():
    tau = jnp.array([0.5, jnp.nan, -0.1, 0.9])
    assert float(consistency_weight(tau)) == pytest.approx((0.5 - 0.1 + 0.9) / 3 / 2 + 0.5)
    valid = jnp.array([True, True, False, True])
    assert float(consistency_weight(tau, valid)) == pytest.approx((0.5 + 0.9) / 2 / 2 + 0.5)
    assert float(consistency_weight(jnp.full(3, jnp.nan))) == 1.0
    assert float(consistency_weight(jnp.full(3, jnp.nan), default=0.5)) == 0.5
    both = consistency_weight(jnp.stack([tau, jnp.full(4, jnp.nan)]))
    np.testing.assert_allclose(both, [float(consistency_weight(tau)), 1.0], rtol=1e-6)
    # C lies in [0, 1]: perfect agreement 1, perfect disagreement 0
    assert float(consistency_weight(jnp.ones(3))) == 1.0
    assert float(consistency_weight(-jnp.ones(3))) == 0.0
