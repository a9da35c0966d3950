"""Average ranks, Spearman's rho and Kendall's tau-b with ties, against scipy.stats."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from alignax.ops import average_ranks, kendall_tau, spearman

RNG = np.random.default_rng(0)

# jit once per shape (also checks that all three trace)
ranks_jit = jax.jit(average_ranks)
spearman_jit = jax.jit(spearman)
kendall_jit = jax.jit(kendall_tau)


def _pairs():
    n = 40
    a = RNG.normal(size=n)
    yield "continuous", a, a + RNG.normal(size=n)
    yield "ties_in_both", RNG.integers(0, 4, n).astype(np.float32), RNG.integers(0, 5, n)
    yield "ties_in_one", RNG.integers(0, 3, n).astype(np.float32), RNG.normal(size=n)
    yield "binary", RNG.integers(0, 2, n).astype(np.float32), RNG.integers(0, 2, n)
    yield "reversed_with_ties", np.array([1, 1, 2, 3, 3, 3.0]), -np.array([1, 1, 2, 3, 3, 3.0])


@pytest.mark.parametrize("name, a, b", list(_pairs()), ids=[p[0] for p in _pairs()])
def test_matches_scipy_with_and_without_ties(name, a, b):
    np.testing.assert_allclose(ranks_jit(jnp.asarray(a)), stats.rankdata(a), rtol=0, atol=0)
    np.testing.assert_allclose(spearman_jit(jnp.asarray(a), jnp.asarray(b)),
                               stats.spearmanr(a, b).statistic, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(kendall_jit(jnp.asarray(a), jnp.asarray(b)),
                               stats.kendalltau(a, b, variant="b").statistic, rtol=1e-5,
                               atol=1e-6)


def test_golden_values_by_hand():
    # a = [1, 2, 2, 3] -> ranks [1, 2.5, 2.5, 4]; b = [1, 3, 2, 4] -> ranks [1, 3, 2, 4]
    a, b = jnp.array([1.0, 2.0, 2.0, 3.0]), jnp.array([1.0, 3.0, 2.0, 4.0])
    np.testing.assert_array_equal(average_ranks(a), [1.0, 2.5, 2.5, 4.0])
    # centred ranks [-1.5, 0, 0, 1.5] and [-1.5, .5, -.5, 1.5]: 4.5 / sqrt(4.5 * 5)
    np.testing.assert_allclose(spearman(a, b), 4.5 / np.sqrt(4.5 * 5.0), rtol=1e-6)
    # 6 pairs, 1 tied in a (not in b), 5 concordant: 5 / sqrt((6 - 1) * 6)
    np.testing.assert_allclose(kendall_tau(a, b), 5 / np.sqrt(30.0), rtol=1e-6)
    # no ties: Spearman = 1 - 6 sum d^2 / (n (n^2 - 1)) = 1 - 6 * 2 / 60; tau-a = (5 - 1) / 6
    c = jnp.array([1.0, 2.0, 3.0, 4.0])
    np.testing.assert_allclose(spearman(c, b), 0.8, rtol=1e-6)
    np.testing.assert_allclose(kendall_tau(c, b), 4 / 6, rtol=1e-6)
    assert float(spearman(c, 10 * c + 3)) == 1.0 and float(kendall_tau(c, -c)) == -1.0


def test_integer_inputs_are_ranked_exactly():
    # 2**24 + 1 would round to 2**24 in float32 and create a tie that is not there
    x = jnp.array([2**24 + 1, 2**24, 5], jnp.int32)
    np.testing.assert_array_equal(average_ranks(x), [3.0, 2.0, 1.0])
    assert float(kendall_tau(x, jnp.array([3, 2, 1]))) == 1.0


def test_constant_input_and_short_rows_give_nan():
    const, x = jnp.full((5,), 2.0), jnp.arange(5.0)
    for fn in (spearman, kendall_tau, spearman_jit, kendall_jit):
        assert np.isnan(fn(const, x)) and np.isnan(fn(x, const)) and np.isnan(fn(const, const))
        assert np.isnan(fn(jnp.ones(1), jnp.ones(1)))
    with pytest.warns(stats.ConstantInputWarning):
        assert np.isnan(stats.spearmanr(np.full(5, 2.0), np.arange(5.0)).statistic)


def test_nan_propagates_per_row():
    a = jnp.array([[1.0, jnp.nan, 3.0, 4.0], [1.0, 2.0, 3.0, 4.0]])
    b = jnp.array([[1.0, 2.0, 3.0, 4.0], [4.0, 3.0, 2.0, 1.0]])
    np.testing.assert_array_equal(average_ranks(a)[0], [1.0, np.nan, 2.0, 3.0])
    for fn in (spearman_jit, kendall_jit):
        out = fn(a, b)
        assert np.isnan(out[0]) and float(out[1]) == -1.0
        out = fn(b, a)
        assert np.isnan(out[0]) and float(out[1]) == -1.0


def test_batched_rows_equal_row_by_row():
    a = RNG.integers(0, 5, (3, 2, 12)).astype(np.float32)
    b = RNG.normal(size=(3, 2, 12)).astype(np.float32)
    rho, tau = spearman_jit(a, b), kendall_jit(a, b)
    assert rho.shape == tau.shape == (3, 2)
    for i in np.ndindex(3, 2):
        np.testing.assert_allclose(rho[i], stats.spearmanr(a[i], b[i]).statistic, rtol=1e-5,
                                   atol=1e-6)
        np.testing.assert_allclose(tau[i], stats.kendalltau(a[i], b[i]).statistic, rtol=1e-5,
                                   atol=1e-6)
    np.testing.assert_allclose(ranks_jit(a), stats.rankdata(a, axis=-1), rtol=0, atol=0)


def test_symmetry_and_invariance_to_monotone_maps():
    a, b = RNG.normal(size=30), RNG.integers(0, 6, 30).astype(np.float32)
    for fn in (spearman_jit, kendall_jit):
        np.testing.assert_allclose(fn(a, b), fn(b, a), rtol=1e-6)
        np.testing.assert_allclose(fn(a, b), fn(np.exp(a), 3 * b - 1), rtol=1e-6)
        np.testing.assert_allclose(fn(-a, b), -fn(a, b), rtol=1e-6)


def test_shape_and_dtype_checks():
    # shape checks are chex asserts (trace-time): AssertionError naming the arguments
    with pytest.raises(AssertionError, match=r"different shapes: \[\(3,\), \(4,\)\]\. \[a, b\]"):
        spearman(jnp.ones(3), jnp.ones(4))
    with pytest.raises(AssertionError, match=r"different shapes: \[\(2, 3\), \(3,\)\]\. \[a, b\]"):
        kendall_tau(jnp.ones((2, 3)), jnp.ones(3))
    with pytest.raises(AssertionError, match=r"shape \(\) .*\[x must have at least one axis\]"):
        average_ranks(jnp.float32(1.0))
    with pytest.raises(TypeError, match="real-valued"):
        spearman(jnp.ones(3, jnp.complex64), jnp.ones(3))


def test_no_retrace_on_second_call():
    traces = []

    @jax.jit
    def both(a, b):
        traces.append(None)
        return spearman(a, b), kendall_tau(a, b)

    a, b = jnp.asarray(RNG.normal(size=9)), jnp.asarray(RNG.normal(size=9))
    both(a, b)
    both(b, a)
    assert len(traces) == 1
