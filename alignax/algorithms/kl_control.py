"""KL control of the online recipes: the coefficient as evolving state, and where KL is paid;
the adaptive entropy coefficient (`adaptive_entropy_control`), evolving state of the same kind.

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


class EntropyControlState(NamedTuple):
    """coef: float32 scalar, the entropy coefficient; entropy: float32 scalar, the mean token
    entropy measured at the last update (+inf before the first)."""

    coef: jax.Array
    entropy: jax.Array


class EntropyControl(NamedTuple):
    """`init() -> EntropyControlState`; `applied(state) -> coef` the coefficient of the next
    update; `update(state, entropy) -> EntropyControlState` after an update."""

    init: Callable[[], EntropyControlState]
    applied: Callable[[EntropyControlState], jax.Array]
    update: Callable[[EntropyControlState, jax.Array], EntropyControlState]


def adaptive_entropy_control(coef: float, *, target: float, coef_min: float = 0.0,
                             coef_max: float = 1.0, delta: float = 0.005) -> EntropyControl:
    """Adaptive entropy coefficient (Skywork-OR1, He et al. 2025, arXiv 2505.22312; TRL's
    GRPOConfig use_adaptive_entropy with entropy_target, entropy_coef_{min,max,delta}).

    After each optimizer update with mean token entropy H (the entropy of the tokens the
    policy loss acts on):

        c <- min(c + delta, c_max)  if H <= target,   else  max(c - delta, c_min)

    and the next update applies c only if the last measured H <= target (0 otherwise; the
    first update, with no measurement yet, applies 0), so the bonus engages only once the
    entropy has collapsed below the target. The state is float32 scalars checkpointed with the
    recipe's state, so a resumed run continues the controller exactly.

    Args:
      coef: the initial coefficient c (the recipe's `entropy_coef`).
      target: the entropy target (nats per token).
      coef_min, coef_max: the bounds of c (0 <= c_min <= c_max).
      delta: the step of c (> 0).
    """
    if not 0.0 <= coef_min <= coef_max:
        raise ValueError(f"adaptive entropy needs 0 <= min <= max, got {coef_min}, {coef_max}")
    if delta <= 0:
        raise ValueError(f"adaptive entropy delta must be > 0, got {delta}")
    if not coef_min <= coef <= coef_max:
        raise ValueError(f"entropy_coef={coef} must lie in the adaptive range "
                         f"[{coef_min}, {coef_max}]")

    def init() -> EntropyControlState:
        return EntropyControlState(coef=jnp.float32(coef), entropy=jnp.float32(jnp.inf))

    def applied(state: EntropyControlState) -> jax.Array:
        return jnp.where(state.entropy <= target, state.coef, jnp.float32(0.0))

    def update(state: EntropyControlState, entropy) -> EntropyControlState:
        h = jnp.asarray(entropy, jnp.float32)
        c = jnp.where(h <= target, jnp.minimum(state.coef + delta, coef_max),
                      jnp.maximum(state.coef - delta, coef_min))
        return EntropyControlState(coef=c.astype(jnp.float32), entropy=h)

    return EntropyControl(init, applied, update)
