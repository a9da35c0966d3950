"""Exact evaluators of policies over an enumerated response space (`alignax.models.sequence_table`).

With every response y of a prompt enumerated, gold expectations and win rates are sums, not
Monte Carlo estimates.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def win_probabilities(gold: jax.Array, ref_log_probs: jax.Array) -> jax.Array:
    """[..., N] for each response y the probability that it beats a response of the reference,
    ties counting 1/2:  P_{y' ~ ref}(g(y') < g(y)) + P_{y' ~ ref}(g(y') = g(y)) / 2.

    gold [..., N] gold rewards of every response; ref_log_probs [..., N] the reference's
    log-probs of them. These do not depend on the policy, so precompute them once; then a
    policy's exact gold win rate against the reference is `(pi * win_probabilities).sum(-1)`
    (the enumerated counterpart of `alignax.eval.metrics.win_rate`).
    """
    g = jnp.asarray(gold, jnp.float32)
    q = jnp.exp(jnp.asarray(ref_log_probs, jnp.float32))
    beats = (g[..., :, None] > g[..., None, :]).astype(jnp.float32)
    ties = (g[..., :, None] == g[..., None, :]).astype(jnp.float32)
    return jnp.einsum("...ij,...j->...i", beats + 0.5 * ties, q)


def win_rate_vs_reference(policy_log_probs: jax.Array, gold: jax.Array,
                          ref_log_probs: jax.Array) -> jax.Array:
    """[...] exact P(g(y) > g(y')) + P(=)/2 with y ~ pi and y' ~ ref independent, per prompt."""
    p = jnp.exp(jnp.asarray(policy_log_probs, jnp.float32))
    return (p * win_probabilities(gold, ref_log_probs)).sum(-1)
