"""Self-rewarding pair selection and the rank consistency of successive iterates (SRLM, CREAM).

A self-rewarding language model (Yuan et al. 2024) judges its own samples: at iteration t it
draws N responses per prompt from pi_t, scores them, and trains the next iterate by DPO on the
best-vs-worst pair. CREAM (Wang et al. 2024, "CREAM: Consistency Regularized Self-Rewarding
Language Models", arXiv 2410.12735) scores with the policy's implicit DPO reward
r_t(x, y) = beta log pi_t(y|x) / pi_ref(y|x) and measures how far that judgement can be trusted
by the agreement of this iterate's ranking J_t of the N responses with the previous iterate's
ranking J_{t-1}: C = (tau_Kendall(J_t, J_{t-1}) + 1) / 2, averaged over prompts. The next DPO
round then uses C as a soft label (`alignax.losses.direct.cream_loss`):
L = C L_DPO(y+, y-) + (1 - C) L_DPO(y-, y+).

Pieces (pure jax, any leading batch shape, vmappable over seeds):

- `implicit_reward(policy_logps, ref_logps, beta)`: beta (log pi - log pi_ref);
- `self_reward_pairs(scores)`: positions of y+ = argmax and y- = argmin of each row of N scores
  and whether the pair is usable (max > min: a row of equal scores gives no preference);
- `ranking_consistency(scores_t, scores_prev)`: Kendall's tau-b per row (NaN where a row is
  constant in either ranking);
- `consistency_weight(tau)`: C = (mean tau over the rows where it is defined + 1) / 2, and the
  hard label `default` (1) when no row has one (e.g. the first iteration, with no previous
  judge).

The same best-vs-worst selection labels pairs by any scorer (a gold reward in online DPO).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from alignax.ops.rank import kendall_tau


def implicit_reward(policy_logps: jax.Array, ref_logps: jax.Array, beta: float) -> jax.Array:
    """The DPO implicit reward beta (log pi(y|x) - log pi_ref(y|x)), elementwise."""
    return float(beta) * (jnp.asarray(policy_logps, jnp.float32)
                          - jnp.asarray(ref_logps, jnp.float32))


def self_reward_pairs(scores: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """The best-vs-worst pair of each row of N scored responses.

    Args:
      scores: [..., N] the scores of N responses to one prompt (a self-reward or any reward).

    Returns:
      (chosen, rejected, valid): [...] int32 positions in the row of the highest (y+) and the
      lowest (y-) score (ties: the first), and a bool that is True where the row has a strict
      preference (max > min, every score finite); an invalid row's pair must not be trained on.
    """
    scores = jnp.asarray(scores, jnp.float32)
    if scores.ndim < 1 or scores.shape[-1] < 2:
        raise ValueError(f"self_reward_pairs needs >= 2 responses per row, got {scores.shape}")
    chosen = jnp.argmax(scores, axis=-1).astype(jnp.int32)
    rejected = jnp.argmin(scores, axis=-1).astype(jnp.int32)
    finite = jnp.all(jnp.isfinite(scores), axis=-1)
    valid = finite & (jnp.max(scores, axis=-1) > jnp.min(scores, axis=-1))
    return chosen, rejected, valid


def ranking_consistency(scores_t: jax.Array, scores_prev: jax.Array) -> jax.Array:
    """[...] Kendall's tau-b between two scorings [..., N] of the same N responses per row
    (this iterate's and the previous iterate's); NaN where a row is constant in either."""
    return kendall_tau(scores_t, scores_prev)


def consistency_weight(tau: jax.Array, valid: jax.Array | None = None, *,
                       default: float = 1.0) -> jax.Array:
    """CREAM's soft label C = (mean tau + 1) / 2 over the rows whose tau is defined.

    Args:
      tau: [..., P] per-prompt Kendall taus (NaN where undefined).
      valid: optional [..., P] bool: only these rows count (e.g. the trainable pairs).
      default: C where no row has a defined tau (1: the hard label of plain self-rewarding).

    Returns:
      [...] C in [0, 1].
    """
    tau = jnp.asarray(tau, jnp.float32)
    ok = jnp.isfinite(tau)
    if valid is not None:
        ok = ok & jnp.asarray(valid, bool)
    n = jnp.sum(ok, axis=-1)
    mean = jnp.sum(jnp.where(ok, tau, 0.0), axis=-1) / jnp.maximum(n, 1)
    return jnp.where(n > 0, (mean + 1.0) / 2.0, jnp.float32(default))
