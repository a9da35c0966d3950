"""Judges for toy token responses: reference-conditioned features and the linear judge, and a
policy's referee role (verdict preference, agreement reward)."""

import jax.numpy as jnp
import numpy as np

from alignax.rewards import judges


def test_reference_match_features_layout_and_broadcasting():
    tokens = jnp.array([[2, 0, 2], [1, 1, 3]])
    f = judges.reference_match_features(tokens, jnp.array([2, 1]), vocab_size=4)
    assert f.shape == (2, 3 + 3 * 4)
    np.testing.assert_array_equal(f[0, :3], [1, 0, 1])
    np.testing.assert_array_equal(f[1, :3], [1, 1, 0])
    np.testing.assert_array_equal(f[0, 3:].reshape(3, 4).argmax(-1), [2, 0, 2])
    np.testing.assert_array_equal(f[:, 3:].sum(-1), 3)  # one token per position
    # one reference for many responses, and many references for one response
    many = judges.reference_match_features(tokens[:1], jnp.array([0, 1, 2]), vocab_size=4)
    assert many.shape == (3, 15)
    np.testing.assert_array_equal(many[:, :3], [[0, 1, 0], [0, 0, 0], [1, 0, 1]])


def test_linear_judge_scores_and_starts_at_zero():
    params = judges.linear_judge_init(5)
    x = jnp.ones((3, 5))
    np.testing.assert_array_equal(judges.linear_judge_score(params, x), 0.0)
    params = {"w": jnp.arange(5.0), "b": jnp.array(1.0)}
    np.testing.assert_allclose(judges.linear_judge_score(params, x), 11.0)


def test_referee_scores_and_pair_agreement_reward():
    lp = jnp.log(jnp.array([[0.6, 0.2, 0.2], [0.1, 0.3, 0.6]]))
    np.testing.assert_allclose(judges.referee_scores(lp, 0, 1), [0.75, 0.25], rtol=1e-6)
    r = judges.pair_agreement_reward(jnp.array([0, 1, 2, 1]),
                                     jnp.array([True, True, False, False]), 0, 1)
    np.testing.assert_array_equal(r, [1, 0, 0, 1])
    tied = judges.pair_agreement_reward(jnp.array([[0, 1], [0, 1]]), jnp.array([[True], [False]]),
                                        0, 1, tie=jnp.array([[False], [True]]))
    np.testing.assert_array_equal(tied, [[1, 0], [0.5, 0.5]])


def test_round_robin_scores_average_both_orders_and_ignore_self():
    p = jnp.array([[0.5, 0.9, 1.0], [0.3, 0.5, 0.8], [0.0, 0.4, 0.5]])
    s = judges.round_robin_scores(p)
    want0 = (0.5 * (0.9 + 1 - 0.3) + 0.5 * (1.0 + 1 - 0.0)) / 2
    np.testing.assert_allclose(s[0], want0, rtol=1e-6)
    # antisymmetric judges: scores sum to G / 2 (every pair hands out one win)
    q = jnp.array([[0.5, 0.7], [0.3, 0.5]])
    np.testing.assert_allclose(judges.round_robin_scores(q).sum(), 1.0, rtol=1e-6)
    # a position-biased judge (always prefers the first slot) gives everyone 0.5
    np.testing.assert_allclose(judges.round_robin_scores(jnp.full((3, 3), 0.9)), 0.5, rtol=1e-6)
