"""Reward-model objectives on per-example rewards. Each returns per-example values [B]."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from alignax._src import checks


def bradley_terry_loss(
    chosen_rewards: jax.Array,
    rejected_rewards: jax.Array,
    *,
    margin: jax.Array | float = 0.0,
    label_smoothing: float = 0.0,
) -> jax.Array:
    """Bradley-Terry negative log-likelihood of the preference, with margin and label smoothing.

    .. math::
        d = r_c - r_r - m, \\quad
        L = -(1 - \\epsilon) \\log \\sigma(d) - \\epsilon \\log \\sigma(-d)

    `margin` m (scalar or [B]) is the Llama-2 margin loss (Touvron et al. 2023, arXiv 2307.09288);
    `label_smoothing` epsilon is the conservative soft label of Secrets of RLHF II (Wang et al.
    2024, arXiv 2401.06080). With m = eps = 0 this is the reward-model loss of Ouyang et al. 2022
    (arXiv 2203.02155).

    Args:
      chosen_rewards: [B] rewards of the preferred responses.
      rejected_rewards: [B] rewards of the other responses.
      margin: scalar or [B] margin m.
      label_smoothing: epsilon in [0, 1).

    Returns:
      [B] float32 losses.
    """
    checks.check_rank(chosen_rewards, 1, "chosen_rewards")
    checks.check_same_shape([chosen_rewards, rejected_rewards],
                            ["chosen_rewards", "rejected_rewards"])
    d = (jnp.asarray(chosen_rewards, jnp.float32) - jnp.asarray(rejected_rewards, jnp.float32)
         - jnp.asarray(margin, jnp.float32))
    loss = -jax.nn.log_sigmoid(d)
    if label_smoothing:
        loss = (1.0 - label_smoothing) * loss - label_smoothing * jax.nn.log_sigmoid(-d)
    return loss


def pairwise_accuracy(chosen_rewards: jax.Array, rejected_rewards: jax.Array) -> jax.Array:
    """1 where r_c > r_r, 0.5 on ties, 0 otherwise: [B] float32."""
    checks.check_same_shape([chosen_rewards, rejected_rewards],
                            ["chosen_rewards", "rejected_rewards"])
    c = jnp.asarray(chosen_rewards, jnp.float32)
    r = jnp.asarray(rejected_rewards, jnp.float32)
    return jnp.where(c > r, 1.0, jnp.where(c == r, 0.5, 0.0))
