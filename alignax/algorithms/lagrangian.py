"""Constrained RL by dual ascent on a Lagrange multiplier (cost-constrained policy optimisation).

The problem: maximise the expected reward under a budget on an expected cost,

    max_pi E_pi[r]   s.t.   E_pi[c] <= d,

solved on its Lagrangian L(pi, lambda) = E_pi[r] - lambda (E_pi[c] - d), lambda >= 0, by
alternating a policy step on the shaped reward r - lambda c (for a fixed lambda the constant
lambda d does not change the policy gradient) with projected gradient ascent on the dual,

    lambda <- clip(lambda + eta (E[c] - d), 0, lambda_max),

the update of Safe RLHF (Dai et al. 2023, arXiv 2310.12773, eq. 9-10) and of the self-monitor
cost of CoT Monitor+ (Ji et al. 2025, "Mitigating Deceptive Alignment via Self-Monitoring",
arXiv 2505.18807: the model's own monitor flag as the cost). lambda grows while the batch's mean
cost is above the budget d and shrinks (down to 0) while it is below.

The multiplier is state, a dict {"multiplier": lambda, "cost": the last batch's mean cost}
(arrays of any one shape: a scalar, or one entry per independent run), and lives in the
checkpointed state of the trainer that carries it:

- `fit_small(loss_state=init_dual_state(), loss_fn=lagrangian_loss(...))` for the small
  explicit policies (`alignax.algorithms.small_pg`): `lagrangian_loss` turns a loss that takes
  the multiplier into `fit_small`'s stateful loss, with one dual step per update;
- `policy_gradient.train(reward_state=init_dual_state(), reward_fn=lagrangian_reward_fn(...))`
  for language models: the rollout's rewards become r - lambda c and lambda takes one dual step
  per iteration (the state is checkpointed with the run, so a resume continues lambda exactly).

In both the policy step of an iteration uses the multiplier from before that iteration's dual
step (the batch's cost is measured under the current policy, then lambda moves).
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp


def init_dual_state(multiplier: Any = 0.0) -> dict:
    """The initial dual state {"multiplier": lambda_0, "cost": 0}, float32 arrays of the shape
    of `multiplier` (a scalar, or e.g. [R] for R independent runs)."""
    lam = jnp.asarray(multiplier, jnp.float32)
    if bool(jnp.any(lam < 0)):
        raise ValueError(f"the initial Lagrange multiplier must be >= 0, got {multiplier}")
    return {"multiplier": lam, "cost": jnp.zeros_like(lam)}


def dual_ascent(state: dict, cost: jax.Array, *, threshold: Any, learning_rate: Any,
                max_multiplier: float | None = None) -> dict:
    """One projected dual-ascent step: lambda <- clip(lambda + eta (cost - d), 0, lambda_max).

    Args:
      state: {"multiplier": lambda, "cost": ...}, arrays of one shape S (scalar or [R]).
      cost: the batch mean cost E[c], shape S (broadcastable).
      threshold: the budget d (scalar or shape S).
      learning_rate: eta >= 0 (scalar or shape S; 0 keeps lambda fixed).
      max_multiplier: lambda_max (None: no upper bound).

    Returns:
      The new state {"multiplier": lambda', "cost": cost}.
    """
    lam = state["multiplier"]
    cost = jnp.asarray(cost, lam.dtype)
    new = lam + jnp.asarray(learning_rate, lam.dtype) * (cost - jnp.asarray(threshold, lam.dtype))
    new = jnp.maximum(new, 0.0)
    if max_multiplier is not None:
        new = jnp.minimum(new, jnp.asarray(max_multiplier, lam.dtype))
    return {"multiplier": new.astype(lam.dtype),
            "cost": jnp.broadcast_to(cost, lam.shape).astype(lam.dtype)}


def lagrangian_rewards(rewards: jax.Array, costs: jax.Array, multiplier: Any) -> jax.Array:
    """The shaped reward r - lambda c of the policy step ([...] -> [...], broadcasting lambda).

    For a fixed lambda, maximising E[r - lambda c] is maximising the Lagrangian
    E[r] - lambda (E[c] - d): the constant lambda d has no policy gradient.
    """
    rewards = jnp.asarray(rewards, jnp.float32)
    return rewards - jnp.asarray(multiplier, jnp.float32) * jnp.asarray(costs, jnp.float32)


def lagrangian_loss(loss_fn: Callable[..., tuple[jax.Array, dict]], *, threshold: Any,
                    learning_rate: Any, cost_metric: str = "cost",
                    max_multiplier: float | None = None,
                    ) -> Callable[[Any, Any, dict], tuple[jax.Array, dict, dict]]:
    """`fit_small`'s stateful loss of a constrained policy step with dual ascent.

    Args:
      loss_fn: `(params, batch, multiplier) -> (loss, metrics)`, a policy loss whose rewards
        are `lagrangian_rewards(r, c, multiplier)` (no gradient through the multiplier);
        `metrics[cost_metric]` must be the batch's mean cost E[c] (shape of the multiplier).
      threshold: the cost budget d.
      learning_rate: the dual step size eta.
      cost_metric: the metrics key holding E[c].
      max_multiplier: optional upper bound of lambda.

    Returns:
      `loss(params, batch, state) -> (loss, metrics, new_state)` for
      `fit_small(loss_state=init_dual_state(...))`; metrics add "lagrange_multiplier" (the lambda
      this update used; a scalar state only, else the caller names its entries).
    """
    def loss(params, batch, state):
        lam = jax.lax.stop_gradient(state["multiplier"])
        value, metrics = loss_fn(params, batch, lam)
        if cost_metric not in metrics:
            raise KeyError(f"lagrangian_loss: loss_fn's metrics have no {cost_metric!r} "
                           f"(the batch mean cost), got {sorted(metrics)}")
        new = dual_ascent(state, jax.lax.stop_gradient(metrics[cost_metric]),
                          threshold=threshold, learning_rate=learning_rate,
                          max_multiplier=max_multiplier)
        metrics = dict(metrics)
        if jnp.ndim(lam) == 0:
            metrics["lagrange_multiplier"] = lam
        return value, metrics, new

    return loss


def lagrangian_reward_fn(reward_cost_fn: Callable[[Any], tuple[Any, Any]], *, threshold: float,
                         learning_rate: float, max_multiplier: float | None = None,
                         ) -> Callable[[Any, dict], tuple[jax.Array, dict]]:
    """A stateful `reward_fn` of `policy_gradient.train(reward_state=init_dual_state())`.

    Args:
      reward_cost_fn: `rollout -> (rewards [N], costs [N])`: the task rewards r and the costs c
        of the rollout's responses (e.g. c = 1 when the response's own monitor flags it), from
        one pass over the rollout (decoding it once).
      threshold: the budget d of E[c].
      learning_rate: the dual step size eta.
      max_multiplier: optional upper bound of lambda.

    Returns:
      `(rollout, state) -> (r - lambda c [N], new_state)`: the rewards of this iteration use the
      multiplier before its dual step; the new state holds lambda' and this batch's mean cost.
    """
    def shaped(rollout, state):
        rewards, costs = reward_cost_fn(rollout)
        rewards = jnp.asarray(rewards, jnp.float32)
        costs = jnp.asarray(costs, jnp.float32)
        if costs.shape != rewards.shape:
            raise ValueError(f"reward_cost_fn returned costs of shape {costs.shape} for rewards "
                             f"of shape {rewards.shape}")
        out = lagrangian_rewards(rewards, costs, state["multiplier"])
        return out, dual_ascent(state, costs.mean(), threshold=threshold,
                                learning_rate=learning_rate, max_multiplier=max_multiplier)

    return shaped
