"""Planning with a model: the cross-entropy method (CEM) and model-predictive control (MPC).

CEM (Rubinstein 1999; the planner of PlaNet, Hafner et al. 2019, arXiv 1811.04551) searches
action sequences a_{0:H} in [low, high]^{H x A} for the highest score J(a): for I iterations,
sample P sequences from N(mu, diag sigma^2) (clipped to the box), keep the K best (the
elites) and refit mu, sigma to them (sigma floored at `min_std`). The first iteration starts
from (mu_0, sigma_0). Fixed I, P, K: one `lax.fori_loop`, jit-able and vmappable (over seeds,
episodes).

MPC (`mpc_episode`) runs an episode with a planner in the loop: at every step the agent
updates its belief from the last action and the new observation, plans from that belief and
executes the plan's first action (a `lax.scan` over the episode). The planner and the belief
are callables, so the same loop runs a learned latent model (belief = the posterior mean,
score = imagined return; `alignax.algorithms.world_model`), the true simulator (belief = the
true state: the oracle) or random actions.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp


def cem(score_fn: Callable[[jax.Array], jax.Array], key: jax.Array, *, horizon: int,
        action_dim: int, population: int = 64, elites: int = 8, iterations: int = 4,
        low: float = -1.0, high: float = 1.0, init_std: float = 1.0, min_std: float = 0.05,
        init_mean: jax.Array | None = None) -> dict:
    """The cross-entropy method over action sequences.

    Args:
      score_fn: [P, H, A] sequences -> [P] scores (higher is better).
      key: PRNG key.
      horizon: H.
      action_dim: A.
      population: P samples per iteration.
      elites: K <= P kept per iteration.
      iterations: I >= 1.
      low, high: the action box.
      init_std: sigma_0.
      min_std: the floor of the refitted sigma.
      init_mean: mu_0 [H, A] (default: the box's centre).

    Returns:
      {"mean": [H, A] the final mu (the plan), "best_actions": [H, A] the best sample seen,
      "best_score": its score}.
    """
    if not 1 <= elites <= population or iterations < 1 or horizon < 1:
        raise ValueError(f"cem needs 1 <= elites ({elites}) <= population ({population}), "
                         f"iterations ({iterations}) >= 1 and horizon ({horizon}) >= 1")
    shape = (horizon, action_dim)
    mean = (jnp.full(shape, 0.5 * (low + high), jnp.float32) if init_mean is None
            else jnp.asarray(init_mean, jnp.float32))
    std = jnp.full(shape, init_std, jnp.float32)

    def body(i, carry):
        mean, std, best_a, best_s = carry
        eps = jax.random.normal(jax.random.fold_in(key, i), (population, *shape))
        samples = jnp.clip(mean + std * eps, low, high)
        scores = score_fn(samples)
        top_scores, top = jax.lax.top_k(scores, elites)
        elite = samples[top]
        improved = top_scores[0] > best_s
        best_a = jnp.where(improved, elite[0], best_a)
        best_s = jnp.where(improved, top_scores[0], best_s)
        return elite.mean(0), jnp.maximum(elite.std(0), min_std), best_a, best_s

    init = (mean, std, mean, jnp.asarray(-jnp.inf, jnp.float32))
    mean, std, best_a, best_s = jax.lax.fori_loop(0, iterations, body, init)
    return {"mean": mean, "best_actions": best_a, "best_score": best_s}


def mpc_episode(key: jax.Array, env_state: Any, *, num_steps: int,
                env_step: Callable[[Any, jax.Array, jax.Array], tuple[Any, jax.Array]],
                observe: Callable[[Any], Any], belief: Any,
                update_belief: Callable[[Any, jax.Array, Any], Any],
                act: Callable[[Any, jax.Array], jax.Array], action_dim: int) -> dict:
    """One episode of model-predictive control.

    At step t: b_t = update_belief(b_{t-1}, a_{t-1}, observe(s_t)) (a_{-1} = 0),
    a_t = act(b_t, key_t), (s_{t+1}, r_{t+1}) = env_step(s_t, a_t, key'_t).

    Args:
      key: PRNG key of the episode (planner and environment noise).
      env_state: s_0, a pytree.
      num_steps: T.
      env_step: (state, action [A], key) -> (next state, reward of the next state).
      observe: state -> observation (a pytree; e.g. the state itself for an oracle).
      belief: b_{-1}, the belief before the first observation (a pytree).
      update_belief: (belief, previous action [A], observation) -> belief.
      act: (belief, key) -> action [A] (e.g. the first action of a `cem` plan).
      action_dim: A.

    Returns:
      {"rewards": [T] r_1..r_T, "actions": [T, A], "return": sum of the rewards}.
    """
    def body(carry, k):
        state, b, prev = carry
        k_act, k_env = jax.random.split(k)
        b = update_belief(b, prev, observe(state))
        action = act(b, k_act)
        state, r = env_step(state, action, k_env)
        return (state, b, action), (r, action)

    start = (env_state, belief, jnp.zeros((action_dim,), jnp.float32))
    _, (rewards, actions) = jax.lax.scan(body, start, jax.random.split(key, num_steps))
    return {"rewards": rewards, "actions": actions, "return": rewards.sum()}
