"""Rank-then-sift curation (UnifiedReward, Wang et al. 2025) and the random-pair baseline."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from alignax.data.curation import pairwise_win_counts, random_pairs, rank_then_sift


def _numpy_rank_then_sift(pair_logits, scores, k_c, k_r):
    p, n = scores.shape
    chosen, rejected = [], []
    for i in range(p):
        wins = [sum((1.0 if pair_logits[i, a, b] > 0 else 0.5 if pair_logits[i, a, b] == 0
                     else 0.0) for b in range(n) if b != a) for a in range(n)]
        order = sorted(range(n), key=lambda a: (-wins[a], a))
        c_list, r_list = order[:k_c], order[n - k_r:]
        chosen.append(max(c_list, key=lambda a: (scores[i, a], -a)))
        rejected.append(min(r_list, key=lambda a: (scores[i, a], a)))
    return np.array(chosen), np.array(rejected)


def test_win_counts_golden():
    # candidate 0 beats 1 and 2, 1 beats 2, tie-free
    u = np.array([[3.0, 2.0, 1.0]])
    logits = u[:, :, None] - u[:, None, :]
    np.testing.assert_allclose(jax.jit(pairwise_win_counts)(logits), [[2.0, 1.0, 0.0]])
    ties = np.zeros((1, 3, 3))
    np.testing.assert_allclose(pairwise_win_counts(ties), [[1.0, 1.0, 1.0]])


def test_rank_then_sift_by_hand():
    # pairwise ranking 0 > 1 > 2 > 3 > 4 > 5; top-2 = {0, 1}, bottom-2 = {4, 5}
    u = np.array([[6.0, 5.0, 4.0, 3.0, 2.0, 1.0]])
    logits = u[:, :, None] - u[:, None, :]
    scores = np.array([[0.1, 0.9, 5.0, -5.0, 0.3, 0.2]])  # 2 and 3 are outside both lists
    f = jax.jit(lambda a, b: rank_then_sift(a, b, num_chosen=2))
    c, r = f(logits, scores)
    assert int(c[0]) == 1 and int(r[0]) == 5
    c, r = rank_then_sift(logits, scores, num_chosen=1, num_rejected=3)
    assert int(c[0]) == 0 and int(r[0]) == 3


def test_matches_numpy_reference_with_intransitive_judge():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((20, 7, 7))
    logits = a - np.swapaxes(a, 1, 2)  # antisymmetric but not from a scalar reward
    scores = rng.standard_normal((20, 7))
    for k_c, k_r in ((1, 1), (2, 3), (3, 4)):
        c, r = rank_then_sift(jnp.asarray(logits), jnp.asarray(scores), num_chosen=k_c,
                              num_rejected=k_r)
        c_ref, r_ref = _numpy_rank_then_sift(logits, scores, k_c, k_r)
        np.testing.assert_array_equal(c, c_ref)
        np.testing.assert_array_equal(r, r_ref)
        assert np.all(np.asarray(c) != np.asarray(r))


def test_permutation_equivariance():
    rng = np.random.default_rng(1)
    u = rng.standard_normal((5, 9))
    logits = u[:, :, None] - u[:, None, :]
    scores = rng.standard_normal((5, 9))
    perm = rng.permutation(9)
    c, r = rank_then_sift(logits, scores, num_chosen=3)
    cp, rp = rank_then_sift(logits[:, perm][:, :, perm], scores[:, perm], num_chosen=3)
    np.testing.assert_array_equal(perm[np.asarray(cp)], c)
    np.testing.assert_array_equal(perm[np.asarray(rp)], r)


def test_random_pairs_distinct_and_ordered_by_judge():
    u = jnp.asarray(np.random.default_rng(2).standard_normal((200, 6)))
    logits = u[:, :, None] - u[:, None, :]
    c, r = jax.jit(lambda k, x: random_pairs(k, (200, 6), pair_logits=x))(jax.random.key(0),
                                                                          logits)
    c, r = np.asarray(c), np.asarray(r)
    assert np.all(c != r) and c.min() >= 0 and c.max() < 6
    rows = np.arange(200)
    assert np.all(np.asarray(u)[rows, c] >= np.asarray(u)[rows, r])
    a, b = random_pairs(jax.random.key(1), (200, 6))
    assert np.all(np.asarray(a) != np.asarray(b))


def test_shape_and_size_errors():
    # shape checks are chex asserts (trace-time): AssertionError naming the arguments
    with pytest.raises(AssertionError, match=r"shape \(2, 3, 4\) but expected \(None, 4, 4\)\. "
                                             r"\[pair_logits \[P, N, N\]\]"):
        pairwise_win_counts(np.zeros((2, 3, 4)))
    with pytest.raises(AssertionError,
                       match=r"rank 2 .* but expected 3\. \[pair_logits \[P, N, N\]\]"):
        pairwise_win_counts(np.zeros((3, 3)))
    with pytest.raises(AssertionError, match=r"different shapes: \[\(2, 4\), \(2, 5\)\]\. "
                                             r"\[pair_logits\[\.\.\., 0\], point_scores\]"):
        rank_then_sift(np.zeros((2, 4, 4)), np.zeros((2, 5)), num_chosen=1)
    with pytest.raises(ValueError, match="num_chosen"):
        rank_then_sift(np.zeros((2, 4, 4)), np.zeros((2, 4)), num_chosen=3)
    with pytest.raises(AssertionError, match=r"rank 1 .* but expected 2\. \[point_scores\]"):
        rank_then_sift(np.zeros((2, 4, 4)), np.zeros(4), num_chosen=1)
