"""Rewards from models: a scalar reward model's score of each rollout, or an ensemble's."""

from __future__ import annotations

from typing import Callable, Sequence

import jax
import jax.numpy as jnp

from alignax.rewards.aggregate import ensemble


def reward_model_reward(apply_fn: Callable, params) -> Callable:
    """`rollout -> [N]` scores of a scalar RM (`apply(params, ids, mask) -> [N]`) on the full
    prompt + response sequences (the RM must share the policy's tokenizer)."""
    score = jax.jit(apply_fn)

    def reward(rollout) -> jax.Array:
        return score(params, rollout.ids, rollout.mask).astype(jnp.float32)

    return reward


def ensemble_reward(apply_fn: Callable, members: Sequence, *, mode: str = "mean",
                    lam: float = 1.0) -> Callable:
    """`rollout -> [N]` aggregate of M reward models with the same architecture (mean, min, or
    mean - lam * std; Coste et al. 2023, Eisenstein et al. 2023)."""
    stacked = jax.tree.map(lambda *x: jnp.stack(x), *members)
    score = jax.jit(jax.vmap(apply_fn, in_axes=(0, None, None)))

    def reward(rollout) -> jax.Array:
        return ensemble(score(stacked, rollout.ids, rollout.mask), mode=mode, lam=lam)

    return reward
