"""Hierarchical (lexicographic with margins) comparison of trajectories by ranked reward factors.

Bukharin et al. 2023, "Deep Reinforcement Learning from Hierarchical Weak Preference Feedback"
(HERON, arXiv 2309.02632): instead of weighting reward factors into one scalar, an expert ranks the
factors by importance; two trajectories are compared on the most important factor, and only if they
are within its margin delta_i on the next one, and so on.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp


def hierarchical_preference(factors_a, factors_b, margins, *, key=None):
    """Labels pairs by the first (most important) factor whose difference exceeds its margin.

    With d_i = z_i(a) - z_i(b) for factors ordered by importance (i = 0 first) and "higher is
    better" (negate a factor where less is better), the deciding level is
        i* = min { i : |d_i| > delta_i }
    and the label is 1 (a preferred) if d_{i*} > 0, 0 if d_{i*} < 0. If no factor exceeds its
    margin the pair is undecided: label 0.5 and level M, or a fair coin flip when `key` is given.
    With all margins 0 this is the strict lexicographic order. Swapping a and b maps the label
    y -> 1 - y and keeps the level.

    Args:
      factors_a: [B, M] factor values of the first trajectories (M factors, most important first).
      factors_b: [B, M] factor values of the second trajectories.
      margins: [M] (or scalar) non-negative margins delta_i.
      key: optional PRNG key; if given, undecided pairs get a Bernoulli(0.5) label.

    Returns:
      (labels, levels): labels [B] float32 in {0, 0.5, 1} ({0, 1} with `key`); levels [B] int32,
      the deciding factor index in [0, M), or M where undecided.

    Reference: Bukharin et al. 2023, "Deep Reinforcement Learning from Hierarchical Weak
    Preference Feedback" (HERON).
    """
    chex.assert_rank(factors_a, 2, custom_message="factors_a")
    chex.assert_equal_shape([factors_a, factors_b], custom_message="factors_a, factors_b")
    num_factors = jnp.shape(factors_a)[-1]
    if num_factors < 1:
        raise ValueError("factors need at least one column (M >= 1)")
    chex.assert_is_broadcastable(jnp.shape(margins), (num_factors,),
                                 custom_message="margins against the factor axis [M]")
    diff = jnp.asarray(factors_a, jnp.float32) - jnp.asarray(factors_b, jnp.float32)
    margins = jnp.broadcast_to(jnp.asarray(margins, jnp.float32), (num_factors,))
    decisive = jnp.abs(diff) > margins  # [B, M]
    decided = jnp.any(decisive, axis=-1)
    first = jnp.argmax(decisive, axis=-1)  # first True (0 where none)
    d_first = jnp.take_along_axis(diff, first[:, None], axis=-1)[:, 0]
    tie_label = jnp.full(decided.shape, 0.5, jnp.float32)
    if key is not None:
        tie_label = jax.random.bernoulli(key, 0.5, decided.shape).astype(jnp.float32)
    labels = jnp.where(decided, (d_first > 0).astype(jnp.float32), tie_label)
    levels = jnp.where(decided, first, num_factors).astype(jnp.int32)
    return labels, levels
