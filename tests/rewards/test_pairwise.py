"""Pairwise judge with position-swap voting and BRPO's bootstrapped-reference outcomes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from alignax.rewards import pairwise


def test_swap_vote_table():
    ab = jnp.array([True, True, False, False])
    ba = jnp.array([False, True, False, True])
    np.testing.assert_array_equal(pairwise.swap_vote(ab, ba), [1.0, 0.0, 0.0, -1.0])


def test_expected_judge_outcome_matches_samples_and_swap_cancels_position_bias():
    a = jnp.full((20_000,), 0.7)
    b = jnp.full((20_000,), 0.2)
    kw = dict(temperature=0.5, position_bias=1.5)
    got = jax.jit(lambda k: pairwise.pairwise_judge(k, a, b, **kw))(jax.random.key(0))
    assert set(np.unique(np.asarray(got)).tolist()) <= {-1.0, 0.0, 1.0}
    exact = float(pairwise.expected_judge_outcome(0.7, 0.2, **kw))
    assert float(got.mean()) == pytest.approx(exact, abs=0.015)
    # swapped voting: antisymmetric, a response against itself is 0 whatever the bias
    assert float(pairwise.expected_judge_outcome(0.2, 0.7, **kw)) == pytest.approx(-exact)
    assert float(pairwise.expected_judge_outcome(0.3, 0.3, **kw)) == pytest.approx(0.0, abs=1e-7)
    # one order: the position bias makes the first-shown worse response win on average
    assert float(pairwise.expected_judge_outcome(0.2, 0.7, swap=False, **kw)) > 0.0
    single = jax.jit(lambda k: pairwise.pairwise_judge(k, a, b, swap=False, **kw))(
        jax.random.key(1))
    assert float(single.mean()) == pytest.approx(
        float(pairwise.expected_judge_outcome(0.7, 0.2, swap=False, **kw)), abs=0.015)
    with pytest.raises(ValueError, match="temperature"):
        pairwise.judge_first_prob(0.0, 1.0, temperature=0.0)


def test_bootstrapped_reference_outcomes():
    scores = jnp.array([[0.0, 1.0, 2.0, 3.0], [5.0, 4.0, 3.0, 2.0]])

    def judge(key, ya, yb):  # a noiseless comparator
        return jnp.sign(ya - yb)

    out, ref = jax.jit(lambda k: pairwise.bootstrapped_reference_outcomes(k, judge, scores))(
        jax.random.key(3))
    out, ref = np.asarray(out), np.asarray(ref)
    for m in range(2):
        expected = np.sign(np.asarray(scores[m]) - np.asarray(scores[m, ref[m]]))
        np.testing.assert_array_equal(out[m], expected)
        assert out[m, ref[m]] == 0.0
    # the reference is uniform over the group's slots
    refs = jax.jit(jax.vmap(
        lambda k: pairwise.bootstrapped_reference_outcomes(k, judge, scores)[1]))(
        jax.random.split(jax.random.key(4), 1000))
    counts = np.bincount(np.asarray(refs).reshape(-1), minlength=4) / refs.size
    np.testing.assert_allclose(counts, 0.25, atol=0.04)
    # pytrees of responses with trailing axes: the reference row is gathered per leaf
    tokens = jnp.arange(2 * 3 * 2).reshape(2, 3, 2)
    out2, ref2 = jax.jit(lambda k: pairwise.bootstrapped_reference_outcomes(
        k, lambda _, a, b: (a["t"][..., 0] - b["t"][..., 0]) / 2.0, {"t": tokens}))(
        jax.random.key(5))
    expected = (np.asarray(tokens)[..., 0]
                - np.asarray(tokens)[np.arange(2), np.asarray(ref2)][:, None, 0]) / 2.0
    np.testing.assert_allclose(out2, expected)


def test_brpo_advantages_are_the_outcomes():
    o = jnp.array([[1.0, 0.0, -1.0]])
    np.testing.assert_array_equal(pairwise.brpo_advantages(o, None), o)
    np.testing.assert_array_equal(pairwise.brpo_advantages(o, {}, scale=0.5), 0.5 * o)
