"""KL control of the online recipes: the coefficient as evolving state, and where KL is paid.

The coefficient is a typed pytree (`KLControlState`) carried in the recipe's state and
checkpointed with it, updated by an optax-style `(init, update)` pair, in float32 on both
sides of a checkpoint, so a resumed run repeats an uninterrupted one bit for bit.

Placement: `"loss"` adds coef * KL(pi || pi_ref) to the update's loss (GRPO style; the
coefficient enters the jitted step as a batch scalar, so an adaptive coefficient needs no
recompilation), `"reward"` subtracts coef * sum_t kl_t from each sample's reward before the
advantages (PPO-RLHF style, `kl_penalized_rewards`).
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from alignax import ops

KL_PLACEMENTS = ("loss", "reward")


class KLControlState(NamedTuple):
    """coef: float32 scalar, the current KL coefficient."""

    coef: jax.Array


class KLControl(NamedTuple):
    """`init() -> KLControlState`; `update(state, kl, num_samples) -> KLControlState`."""

    init: Callable[[], KLControlState]
    update: Callable[..., KLControlState]


def adaptive_kl_control(coef: float, target: float | None = None,
                        horizon: int = 10_000) -> KLControl:
    """Adaptive KL coefficient (Ziegler et al. 2019, arXiv 1909.08593):

        e = clip(KL / target - 1, -0.2, 0.2),  coef <- coef (1 + e n / horizon)

    after each batch of n samples with mean sequence KL `kl`; `target=None` keeps the
    coefficient fixed.
    """
    if horizon <= 0:
        raise ValueError(f"kl horizon must be positive, got {horizon}")

    def init() -> KLControlState:
        return KLControlState(coef=jnp.float32(coef))

    def update(state: KLControlState, kl, num_samples: int) -> KLControlState:
        if target is None:
            return state
        error = jnp.clip(jnp.float32(kl) / jnp.float32(target) - 1.0, -0.2, 0.2)
        return KLControlState(coef=state.coef * (1.0 + error * num_samples / horizon))

    return KLControl(init, update)


def kl_penalized_rewards(rewards, logps, ref_logps, response_mask, *, coef,
                         estimator: str = "k1") -> jax.Array:
    """KL in the reward: r - coef * sum_t kl_t over the response ([N] rewards, [N, R] log-probs).
    """
    kl = ops.kl_estimate(logps, ref_logps, estimator)
    return jnp.asarray(rewards, jnp.float32) - coef * ops.masked_sum(kl, response_mask)
