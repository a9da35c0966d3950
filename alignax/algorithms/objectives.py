"""Several rewards combined into one, with fixed or evolving objective weights.

`objective_mixer(...)` returns an optax-style triple: `init() -> ObjectiveState`,
`combine(rewards [K, N], state) -> [N]`, `update(rewards [K, N], state, gradients=None) ->
ObjectiveState`. The state (weights, the hypervolume reference point and Pareto front) is a
typed pytree of float32 arrays carried in the recipe's state and checkpointed with it; the
host-side math reads it back from those float32 values, so a resumed run equals an
uninterrupted one.

- aggregation "weighted": sum_k w_k r_k; "log_tamed": PaCo-RL's log-tamed sum
  (`alignax.rewards.aggregate.log_tamed_sum`).
- weighting "fixed": w stays; "gradient": after each iteration
  w <- softmax(log w + step_size * sum_j <g_k, g_j>) from the per-objective policy gradients
  g_k (`gradient_weight_update`); "hypervolume": each sample's reward is multiplied by
  m_i = 0.5 + 1.5 tanh(HV gain of its objective vector over the front of the earlier
  iterations' mean vectors), with the first iteration's mean as the reference point
  (`hypervolume_multiplier`).
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from alignax.rewards import aggregate as agg

OBJECTIVE_AGGREGATIONS = ("weighted", "log_tamed")
OBJECTIVE_WEIGHTINGS = ("fixed", "gradient", "hypervolume")
MAX_FRONT = 8


class ObjectiveState(NamedTuple):
    """weights [K]; reference [K] (NaN until set); front [MAX_FRONT, K] (NaN rows unused)."""

    weights: jax.Array
    reference: jax.Array
    front: jax.Array


class ObjectiveMixer(NamedTuple):
    """The (init, combine, update) functions of `objective_mixer` and its settings."""

    init: Callable[[], ObjectiveState]
    combine: Callable[..., jax.Array]
    update: Callable[..., ObjectiveState]
    num: int
    weighting: str

    def check(self, rewards) -> jax.Array:
        r = jnp.asarray(rewards, jnp.float32)
        if r.ndim != 2 or r.shape[0] != self.num:
            raise ValueError(f"with {self.num} objectives the reward_fn must return [K={self.num},"
                             f" N] rewards, got shape {tuple(r.shape)}")
        return r


def _reference(state: ObjectiveState) -> np.ndarray | None:
    ref = np.asarray(state.reference, np.float64)
    return None if np.isnan(ref).any() else ref


def _front(state: ObjectiveState) -> list[np.ndarray]:
    return [row for row in np.asarray(state.front, np.float64) if not np.isnan(row).any()]


def objective_mixer(weights, *, aggregation: str = "weighted", weighting: str = "fixed",
                    step_size: float = 0.1) -> ObjectiveMixer:
    """K objective weights and how they combine and evolve (see the module docstring)."""
    if aggregation not in OBJECTIVE_AGGREGATIONS:
        raise ValueError(f"unknown objective aggregation {aggregation!r}; valid: "
                         f"{OBJECTIVE_AGGREGATIONS}")
    if weighting not in OBJECTIVE_WEIGHTINGS:
        raise ValueError(f"unknown objective weighting {weighting!r}; valid: "
                         f"{OBJECTIVE_WEIGHTINGS}")
    w0 = np.asarray(weights, np.float64)
    if w0.ndim != 1 or len(w0) < 1 or (w0 < 0).any() or w0.sum() <= 0:
        raise ValueError(f"objective weights must be K >= 1 non-negative numbers, got {w0}")
    num = len(w0)
    if weighting == "gradient":
        w0 = w0 / w0.sum()

    def init() -> ObjectiveState:
        return ObjectiveState(weights=jnp.asarray(w0, jnp.float32),
                              reference=jnp.full((num,), jnp.nan, jnp.float32),
                              front=jnp.full((MAX_FRONT, num), jnp.nan, jnp.float32))

    def check(rewards):
        return ObjectiveMixer.check(mixer, rewards)

    def combine(rewards, state: ObjectiveState) -> jax.Array:
        r = check(rewards)
        out = (agg.weighted_sum(r, state.weights) if aggregation == "weighted"
               else agg.log_tamed_sum(r, state.weights))
        ref = _reference(state) if weighting == "hypervolume" else None
        if ref is not None:
            front = _front(state)
            mult = np.array([agg.hypervolume_multiplier(front, p, ref)
                             for p in np.asarray(r, np.float64).T])
            out = out * jnp.asarray(mult, jnp.float32)
        return out

    def update(rewards, state: ObjectiveState, *, gradients=None) -> ObjectiveState:
        if weighting == "gradient":
            w = agg.gradient_weight_update(state.weights, gradients, step_size=step_size)
            return state._replace(weights=jnp.asarray(w, jnp.float32))
        if weighting == "hypervolume":
            mean = np.asarray(check(rewards), np.float64).mean(axis=1)
            ref = _reference(state)
            if ref is None:
                return state._replace(reference=jnp.asarray(mean, jnp.float32))
            front = [q for q in agg.pareto_front(_front(state) + [mean])
                     if np.all(q > ref)][-MAX_FRONT:]
            rows = np.full((MAX_FRONT, num), np.nan)
            if front:
                rows[:len(front)] = np.asarray(front)
            return state._replace(front=jnp.asarray(rows, jnp.float32))
        return state

    mixer = ObjectiveMixer(init, combine, update, num, weighting)
    return mixer
