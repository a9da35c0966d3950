"""Preference-data curation from a reward model's judgments over N candidates per prompt."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp


def pairwise_win_counts(pair_logits):
    """Round-robin wins of each candidate: w_i = sum_{j != i} (1[l_ij > 0] + 1/2 1[l_ij = 0]).

    Args:
      pair_logits: [P, N, N], l_ij > 0 when candidate i is preferred to j (e.g. the logit of a
        pairwise judge); the diagonal is ignored.

    Returns:
      [P, N] float32 win counts in [0, N - 1].
    """
    chex.assert_rank(pair_logits, 3, custom_message="pair_logits [P, N, N]")
    n = pair_logits.shape[-1]
    chex.assert_shape(pair_logits, (None, n, n), custom_message="pair_logits [P, N, N]")
    logits = jnp.asarray(pair_logits, jnp.float32)
    wins = jnp.where(logits > 0, 1.0, jnp.where(logits == 0, 0.5, 0.0)) * (1.0 - jnp.eye(n))
    return jnp.sum(wins, -1)


def rank_then_sift(pair_logits, point_scores, *, num_chosen: int, num_rejected: int | None = None):
    """Rank-then-sift: pairwise ranking splits candidates, pointwise scores pick one of each.

    .. math::
        w_i = \\sum_{j \\ne i} 1[l_{ij} > 0], \\quad
        C = \\text{top}_{k_c}(w), \\ R = \\text{bottom}_{k_r}(w), \\quad
        y_w = \\arg\\max_{i \\in C} s_i, \\ y_l = \\arg\\min_{i \\in R} s_i

    For each prompt, the N candidates are ranked by their round-robin wins under a pairwise
    judge (`pairwise_win_counts`; equal wins keep the candidate order); the k_c best form the
    chosen list and the k_r worst the rejected list; the pointwise score s then picks the best of
    the chosen list and the worst of the rejected list as the DPO pair. Wang et al. 2025,
    "Unified Reward Model for Multimodal Understanding and Generation" (pair ranking, then point
    sifting).

    Args:
      pair_logits: [P, N, N] pairwise preference logits (l_ij > 0: i preferred to j).
      point_scores: [P, N] pointwise scores.
      num_chosen: k_c >= 1, the size of the chosen list.
      num_rejected: k_r >= 1 (default k_c), the size of the rejected list; k_c + k_r <= N so the
        lists are disjoint.

    Returns:
      (chosen [P] int32, rejected [P] int32) candidate indices.
    """
    chex.assert_rank(point_scores, 2, custom_message="point_scores")
    wins = pairwise_win_counts(pair_logits)
    chex.assert_equal_shape([wins, point_scores],
                            custom_message="pair_logits[..., 0], point_scores")
    n = point_scores.shape[-1]
    k_r = num_chosen if num_rejected is None else num_rejected
    if num_chosen < 1 or k_r < 1 or num_chosen + k_r > n:
        raise ValueError(f"need num_chosen >= 1, num_rejected >= 1 and num_chosen + num_rejected "
                         f"<= N = {n}, got {num_chosen} and {k_r}")
    rank = jnp.argsort(jnp.argsort(-wins, axis=-1, stable=True), axis=-1, stable=True)  # 0 = best
    in_chosen = rank < num_chosen
    in_rejected = rank >= n - k_r
    s = jnp.asarray(point_scores, jnp.float32)
    chosen = jnp.argmax(jnp.where(in_chosen, s, -jnp.inf), axis=-1)
    rejected = jnp.argmin(jnp.where(in_rejected, s, jnp.inf), axis=-1)
    return chosen.astype(jnp.int32), rejected.astype(jnp.int32)


def random_pairs(key, point_scores_shape, *, pair_logits=None):
    """Baseline curation: two distinct random candidates per prompt, ordered by the pairwise
    judge when `pair_logits` [P, N, N] is given (else as drawn). Returns (chosen [P], rejected [P])
    int32."""
    p, n = point_scores_shape
    k1, k2 = jax.random.split(key)
    a = jax.random.randint(k1, (p,), 0, n)
    b = (a + jax.random.randint(k2, (p,), 1, n)) % n  # distinct from a
    if pair_logits is None:
        return a.astype(jnp.int32), b.astype(jnp.int32)
    a_wins = jnp.take_along_axis(
        jnp.take_along_axis(pair_logits, a[:, None, None], axis=1)[:, 0], b[:, None], axis=1)[:, 0]
    chosen = jnp.where(a_wins >= 0, a, b)
    rejected = jnp.where(a_wins >= 0, b, a)
    return chosen.astype(jnp.int32), rejected.astype(jnp.int32)


__all__ = ["pairwise_win_counts", "rank_then_sift", "random_pairs"]
