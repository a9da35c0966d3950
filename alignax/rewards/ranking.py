"""Rewards and metrics of generative recommendation: ReRe's hit + rank-penalty reward over a
beam-search group, and HR@K / NDCG@K of ranked item lists.

ReRe (Tan et al. 2025, "Reinforced Preference Optimization for Recommendation", arXiv
2510.12211) scores the G items that trie-constrained beam search returns for a user history
(`alignax.sampling.trie.beam_search`, beam k = rank k) with

    r_i = r_rule(y_i) + r_rank(y_i),     r_rule(y_i) = 1[y_i = y*],

    r_rank(y_i) = 0                         if y_i = y*, or if no item of the group is y*,
                = -w(k_i) / sum_{j=1}^{G} w(j)   otherwise,   w(k) = 1 / log2(k + 1),

with k_i in 1..G the item's beam rank. Negatives ranked higher (more likely under the policy:
the hard negatives) are penalised more, as NDCG discounts rank; the penalty is normalised to
sum to -1 over the G ranks, and applies only in groups that contain the target (a group
without it gets all-zero rewards, hence zero GRPO advantages). The exact form is the authors'
(github.com/sober-clever/ReRe, rere.py: `ndcg_rule_reward`, summed with `rule_reward` for
reward_type="ranking"); `normalise=False` gives the un-normalised -1 / log2(k + 1).

Metrics of a ranked list for one target (leave-one-out next-item evaluation, one relevant
item): HR@K = 1[rank < K]; NDCG@K = 1[rank < K] / log2(rank + 2) (0-based rank; the ideal DCG
is 1), the evaluation of ReRe's trainer (`test_beam` beams, K in 3, 5, 10, 20).

Shapes: M contexts, G group size (beams), K' list length.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

__all__ = ["hit_rate_at_k", "hits", "ndcg_at_k", "rank_penalties", "rere_rewards",
           "target_ranks"]


def rank_penalties(group_size: int, *, normalise: bool = True) -> np.ndarray:
    """[G] ReRe's penalty of a negative at each beam rank k = 1..G:
    -w(k) / sum_j w(j) with w(k) = 1 / log2(k + 1) (`normalise=False`: -w(k)).

    Raises:
      ValueError: group_size < 1.
    """
    g = int(group_size)
    if g < 1:
        raise ValueError(f"group_size must be >= 1, got {group_size}")
    w = 1.0 / np.log2(np.arange(1, g + 1) + 1.0)
    return (-w / w.sum() if normalise else -w).astype(np.float32)


def hits(items, targets) -> jnp.ndarray:
    """[M, G] bool: which of each context's items [M, G] is its target [M] (an invalid item
    -1 never hits)."""
    items = jnp.asarray(items)
    targets = jnp.asarray(targets)
    return (items == targets[:, None]) & (items >= 0)


def rere_rewards(hit, *, ranks=None, normalise: bool = True) -> jnp.ndarray:
    """ReRe's reward r = 1[hit] + r_rank of each item of each group (module docstring).

    Args:
      hit: [M, G] bool, item i of context m is the target.
      ranks: [M, G] int 0-based beam ranks (default: the column, beam order).
      normalise: the penalties sum to -1 over the G ranks (ReRe); False: -1 / log2(k + 1).

    Returns:
      [M, G] float32 rewards.
    """
    hit = jnp.asarray(hit, bool)
    if hit.ndim != 2:
        raise ValueError(f"hit must be [M, G], got shape {hit.shape}")
    g = hit.shape[1]
    ranks = (jnp.broadcast_to(jnp.arange(g), hit.shape) if ranks is None
             else jnp.asarray(ranks, jnp.int32))
    penalty = jnp.asarray(rank_penalties(g, normalise=normalise))[jnp.clip(ranks, 0, g - 1)]
    group_hit = hit.any(axis=1, keepdims=True)
    rank_reward = jnp.where(group_hit & ~hit, penalty, 0.0)
    return hit.astype(jnp.float32) + rank_reward


def target_ranks(ranked_items, targets) -> jnp.ndarray:
    """[M] int32 0-based position of each target [M] in its ranked list [M, K'] (the first
    occurrence), K' when absent."""
    ranked_items = jnp.asarray(ranked_items)
    k = ranked_items.shape[1]
    found = hits(ranked_items, targets)
    first = jnp.argmax(found, axis=1)
    return jnp.where(found.any(axis=1), first, k).astype(jnp.int32)


def hit_rate_at_k(ranked_items, targets, k: int) -> jnp.ndarray:
    """[M] float32 HR@K: 1 when the target is among the first K items of the list."""
    return (target_ranks(ranked_items, targets) < int(k)).astype(jnp.float32)


def ndcg_at_k(ranked_items, targets, k: int) -> jnp.ndarray:
    """[M] float32 NDCG@K with one relevant item: 1 / log2(rank + 2) when its 0-based rank is
    < K, else 0."""
    rank = target_ranks(ranked_items, targets)
    gain = 1.0 / jnp.log2(rank.astype(jnp.float32) + 2.0)
    return jnp.where(rank < int(k), gain, 0.0)
