"""ReRe's hit + rank-penalty reward and HR@K / NDCG@K: hand values, the authors' formula, jit."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from alignax.ops.advantages import group_normalized_advantages
from alignax.rewards import ranking


def authors_penalties(num_generations):
    """The ranking reward of a negative at beam position i, as the authors' rere.py writes it
    (`ndcg_rule_reward`, github.com/sober-clever/ReRe)."""
    ndcg_rewards = [-1.0 / math.log2(i + 2) for i in range(num_generations)]
    return [-elm / sum(ndcg_rewards) for elm in ndcg_rewards]


def test_rank_penalties_by_hand_and_as_the_authors_write_them():
    w = np.array([1.0, 1.0 / math.log2(3), 0.5, 1.0 / math.log2(5)])
    np.testing.assert_allclose(ranking.rank_penalties(4), -w / w.sum(), rtol=1e-6)
    np.testing.assert_allclose(ranking.rank_penalties(4, normalise=False), -w, rtol=1e-6)
    for g in (1, 2, 16):
        np.testing.assert_allclose(ranking.rank_penalties(g), authors_penalties(g), rtol=1e-6)
        assert ranking.rank_penalties(g).sum() == pytest.approx(-1.0, abs=1e-6)
    # higher ranks (harder negatives) are penalised more
    assert np.all(np.diff(ranking.rank_penalties(16)) > 0)
    with pytest.raises(ValueError, match="group_size must be >= 1"):
        ranking.rank_penalties(0)


def test_rere_rewards_of_groups_with_and_without_the_target():
    p = ranking.rank_penalties(4)
    hit = np.array([[False, False, True, False],    # target at rank 3
                    [False, False, False, False],   # target not among the beams
                    [True, False, False, False]])   # target first
    rewards = jax.jit(ranking.rere_rewards)(hit)
    np.testing.assert_allclose(rewards, [[p[0], p[1], 1.0, p[3]], [0, 0, 0, 0],
                                         [1.0, p[1], p[2], p[3]]], rtol=1e-6)
    # explicit ranks (rows not in beam order): the penalty follows the rank, not the column
    ranks = np.array([[3, 2, 1, 0]] * 3)
    np.testing.assert_allclose(ranking.rere_rewards(hit, ranks=ranks)[0],
                               [p[3], p[2], 1.0, p[0]], rtol=1e-6)
    raw = ranking.rere_rewards(hit, normalise=False)
    np.testing.assert_allclose(raw[2], [1.0, -1 / math.log2(3), -0.5, -1 / math.log2(5)],
                               rtol=1e-6)
    with pytest.raises(ValueError, match=r"hit must be \[M, G\]"):
        ranking.rere_rewards(hit[0])


def test_the_rank_reward_orders_the_negatives_advantages_by_rank():
    # GRPO's group-normalised advantages of a group with a hit: the target gets the largest,
    # and among the negatives the top-ranked (hardest) gets the smallest; with the rule reward
    # alone the negatives are indistinguishable
    hit = np.zeros((1, 8), bool)
    hit[0, 5] = True
    adv = np.asarray(group_normalized_advantages(ranking.rere_rewards(hit).reshape(-1), 8))
    negatives = np.delete(adv, 5)
    assert adv[5] == adv.max() and np.all(np.diff(negatives) > 0)
    rule = np.asarray(group_normalized_advantages(jnp.asarray(hit, jnp.float32).reshape(-1), 8))
    assert np.ptp(np.delete(rule, 5)) == 0.0


def test_hits_ranks_and_metrics_by_hand():
    ranked = np.array([[5, 3, 9, 1], [2, 7, 8, 6], [-1, -1, 4, 0], [1, 1, 2, 3]])
    targets = np.array([3, 4, -1, 1])
    np.testing.assert_array_equal(
        ranking.hits(ranked, targets),
        [[0, 1, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0], [1, 1, 0, 0]])  # -1 never hits
    np.testing.assert_array_equal(ranking.target_ranks(ranked, targets), [1, 4, 4, 0])
    np.testing.assert_array_equal(ranking.hit_rate_at_k(ranked, targets, 1), [0, 0, 0, 1])
    np.testing.assert_array_equal(ranking.hit_rate_at_k(ranked, targets, 2), [1, 0, 0, 1])
    np.testing.assert_allclose(ranking.ndcg_at_k(ranked, targets, 2),
                               [1 / math.log2(3), 0, 0, 1.0], rtol=1e-6)
    np.testing.assert_allclose(ranking.ndcg_at_k(ranked, targets, 1), [0, 0, 0, 1.0])
    # NDCG@K <= HR@K, equal at rank 0; K beyond the list counts the whole list
    assert np.all(ranking.ndcg_at_k(ranked, targets, 10) <= ranking.hit_rate_at_k(
        ranked, targets, 10))
    jitted = jax.jit(ranking.ndcg_at_k, static_argnums=2)(ranked, targets, 2)
    np.testing.assert_allclose(jitted, ranking.ndcg_at_k(ranked, targets, 2))
