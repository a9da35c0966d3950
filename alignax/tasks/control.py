"""2-D point navigation with a "noisy TV" distractor: a control testbed for latent world models.

The task of RePo's toy (Zhu et al., "RePo: Resilient Model-Based Reinforcement Learning by
Regularizing Posterior Predictability", NeurIPS 2023, arXiv 2309.00082): a point s_t in the
square [-1, 1]^2 moves to a goal g; the agent observes the point together with a large
distractor that neither the actions nor the rewards depend on.

    s_{t+1} = clip(s_t + step_size a_t, -1, 1),           a_t in [-1, 1]^2
    r_t     = -||s_t - g||_2                               (the reward of the state at time t)
    u_{t+1} = rho u_t + sqrt(1 - rho^2) xi_t,  xi_t ~ N(0, I_K)   (stationary, unit variance)
    d_t     = scale M u_t                                  [D], M [D, K] with unit-norm columns
    o_t     = [s_t, d_t]                                   [2 + D]

`optimal_action` is the exact optimal controller (the oracle of a planner's return).
The distractor is a K-factor AR(1) "TV" seen through a fixed mixing M: correlated across its
D dimensions, of variance scale^2 |M_i|^2 per dimension (far above the point's), and
independent of a and r. An episode starts at s_0 ~ U([-1, 1]^2), u_0 ~ N(0, I) and runs
`length` steps; its return is sum_{t=1..T} r_t (the rewards of the states the actions reach).

Everything is pure jax (vmappable over episodes and seeds); the task's parameters (goal, M,
step size, rho, scale) are a `NavTask` pytree.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp

STATE_DIM = 2
ACTION_DIM = 2


@functools.partial(jax.tree_util.register_dataclass,
                   data_fields=["goal", "mixing", "step_size", "rho", "scale"],
                   meta_fields=[])
@dataclasses.dataclass(frozen=True)
class NavTask:
    """Parameters of the navigation task (a pytree).

    Attributes:
      goal: [2] the goal g in [-1, 1]^2.
      mixing: [D, K] the distractor's mixing M (unit-norm columns; D = 0: no distractor).
      step_size: the largest move per step (scalar).
      rho: the AR(1) coefficient of the distractor's factors, in [0, 1).
      scale: the distractor's amplitude.
    """

    goal: Any
    mixing: Any
    step_size: Any
    rho: Any
    scale: Any

    @property
    def obs_dim(self) -> int:
        """O = 2 + D (also of a task stacked over seeds, mixing [S, D, K])."""
        return STATE_DIM + self.mixing.shape[-2]


def make_task(key: jax.Array, *, distractor_dims: int = 20, factors: int = 4,
              step_size: float = 0.2, rho: float = 0.9, scale: float = 3.0,
              goal: Any = None) -> NavTask:
    """A task: the goal ~ U([-0.8, 0.8]^2) (or `goal`) and a Gaussian mixing M [D, K] with
    unit-norm columns, both drawn from `key`."""
    if distractor_dims < 0 or factors < 1:
        raise ValueError(f"distractor_dims={distractor_dims} must be >= 0 and factors={factors} "
                         ">= 1")
    if not 0.0 <= rho < 1.0:
        raise ValueError(f"rho={rho} must be in [0, 1)")
    k_goal, k_mix = jax.random.split(key)
    g = (jax.random.uniform(k_goal, (STATE_DIM,), minval=-0.8, maxval=0.8) if goal is None
         else jnp.asarray(goal, jnp.float32))
    m = jax.random.normal(k_mix, (distractor_dims, factors))
    m = m / jnp.maximum(jnp.linalg.norm(m, axis=0, keepdims=True), 1e-6)
    return NavTask(goal=g, mixing=m, step_size=jnp.float32(step_size), rho=jnp.float32(rho),
                   scale=jnp.float32(scale))


def reset(task: NavTask, key: jax.Array) -> dict:
    """The initial env state {"pos": [2] ~ U([-1, 1]^2), "tv": [K] ~ N(0, I)}."""
    k_pos, k_tv = jax.random.split(key)
    return {"pos": jax.random.uniform(k_pos, (STATE_DIM,), minval=-1.0, maxval=1.0),
            "tv": jax.random.normal(k_tv, (task.mixing.shape[1],))}


def move(task: NavTask, pos: jax.Array, action: jax.Array) -> jax.Array:
    """s' = clip(s + step_size clip(a, -1, 1), -1, 1) ([..., 2] -> [..., 2])."""
    return jnp.clip(pos + task.step_size * jnp.clip(action, -1.0, 1.0), -1.0, 1.0)


def reward(task: NavTask, pos: jax.Array) -> jax.Array:
    """r = -||s - g||_2 ([..., 2] -> [...])."""
    return -jnp.linalg.norm(pos - task.goal, axis=-1)


def optimal_action(task: NavTask, pos: jax.Array) -> jax.Array:
    """The optimal action a* = clip((g - s) / step_size, -1, 1) ([..., 2] -> [..., 2]).

    Optimal for every horizon: a move changes each coordinate by at most step_size, so after t
    steps |s_t,i - g_i| >= max(0, |s_0,i - g_i| - t step_size) for each coordinate i, and a*
    reaches that bound for every i and t at once (the goal lies inside the square), hence the
    smallest distance -r_t at every step.
    """
    return jnp.clip((task.goal - pos) / task.step_size, -1.0, 1.0)


def distractor(task: NavTask, tv: jax.Array) -> jax.Array:
    """d = scale M u ([..., K] -> [..., D])."""
    return task.scale * tv @ task.mixing.T


def observe(task: NavTask, state: dict) -> jax.Array:
    """o = [s, d] [2 + D]."""
    return jnp.concatenate([state["pos"], distractor(task, state["tv"])], -1)


def advance(task: NavTask, state: dict, action: jax.Array, noise: jax.Array
            ) -> tuple[dict, jax.Array]:
    """One transition with the TV's innovation given: (state, a [2], xi [K]) -> (next state,
    r of the next state)."""
    pos = move(task, state["pos"], action)
    tv = task.rho * state["tv"] + jnp.sqrt(1.0 - task.rho ** 2) * noise
    return {"pos": pos, "tv": tv}, reward(task, pos)


def step(task: NavTask, state: dict, action: jax.Array, key: jax.Array) -> tuple[dict, jax.Array]:
    """One transition: (state, a [2], key) -> (next state, r of the next state); the TV's
    innovation is xi = normal(key, [K])."""
    return advance(task, state, action, jax.random.normal(key, state["tv"].shape))


def random_episode(task: NavTask, key: jax.Array, length: int) -> dict:
    """An episode of uniform random actions a_t ~ U([-1, 1]^2).

    Returns:
      {"obs": [T + 1, O] o_0..o_T, "actions": [T + 1, 2] the action *before* each observation
      (a_{-1} = 0, then a_0..a_{T-1}), "rewards": [T + 1] r_t = -||s_t - g|| of each
      observation's state, "pos": [T + 1, 2], "distractor": [T + 1, D]}.
    """
    k_reset, k_act, k_env = jax.random.split(key, 3)
    start = reset(task, k_reset)
    actions = jax.random.uniform(k_act, (length, ACTION_DIM), minval=-1.0, maxval=1.0)
    noise = jax.random.normal(k_env, (length, task.mixing.shape[-1]))  # drawn once, not per step

    def body(state, inputs):
        state, _ = advance(task, state, *inputs)
        return state, state

    _, states = jax.lax.scan(body, start, (actions, noise))
    states = jax.tree.map(lambda a, b: jnp.concatenate([a[None], b]), start, states)
    return {"obs": observe(task, states),
            "actions": jnp.concatenate([jnp.zeros((1, ACTION_DIM)), actions]),
            "rewards": reward(task, states["pos"]), "pos": states["pos"],
            "distractor": distractor(task, states["tv"])}
