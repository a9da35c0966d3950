"""Multi-objective group policy gradient for small explicit policies, with dynamic weights.

`multi_objective_pg_loss` is `small_pg.group_pg_loss` (GRPO for prompt-conditioned explicit
policies) with K rewards per response and the objective weights as state that evolves from
update to update inside `fit_small(loss_state=...)` (checkpointed with the run, so a resumed run
is the same run). The rewards r [K, M, G] are combined into R [M, G] and then turned into
group-relative advantages as in GRPO. Weightings:

- "fixed": R = sum_k w_k r_k with the weights of the state (linear scalarisation).
- "gradient" (dynamic reward weighting, gradient-based): each update also computes the policy
  gradient g_k of the surrogate whose advantages come from r_k alone (per-objective jax
  vector-Jacobian products of the log-probs) and the influence s_k = sum_j <g_k, g_j>; after
  every `window` updates the mean influence over the window updates the weights,
  w <- softmax(log w + step_size * s / temperature) (exponentiated gradient,
  `exp_weight_update`; with window = 1 it is `aggregate.gradient_weight_update`; the paper's
  code uses the policy's learning rate as step_size and a regularisation factor as
  temperature), and the following updates form R with the new w.
- "hypervolume" (hypervolume-guided): the state keeps a buffer of the objective vectors of
  earlier checkpoints, initialised with the initial model's vector (the first update's batch
  mean), which is also the reference point. After each update the checkpoint's vector v_t
  (the update's batch-mean objective vector) gives the multiplier
  m = 0.5 + 1.5 tanh(HV(P u {v_t}) - HV(P)) (`alignax.rewards.pareto_jax`), and v_t joins the
  buffer (a ring) when it adds volume. With `hv_mode="checkpoint"` (the paper's code: a "meta
  reward") the next update's combined rewards are all multiplied by m; note that a common
  factor cancels in std-normalised advantages ("grpo"), so use it with "rloo" / "dr_grpo" /
  "reinforce". With `hv_mode="sample"` each response's reward is multiplied by the
  multiplier of its own objective vector against the buffer (as
  `alignax.algorithms.objectives` does for the LM recipes).

Per-row hyperparameters: with several configurations vmapped as `fit_small` "seeds", the data
may hold `objective_weights` [K] (the initial weights of that row, read at update 0) and
`weight_step_size` (a scalar), overriding the loss's arguments, so one compiled program runs a
whole grid.

`group_centred_global_std` is PaCo-RL's advantage (per-prompt group-centred, divided by the
std of the whole batch), a callable for `group_pg_loss(advantage=...)` and for this loss.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from alignax.algorithms.online import compute_advantages
from alignax.rewards.aggregate import log_tamed_sum
from alignax.rewards.pareto_jax import hypervolume_gains, hypervolume_multipliers

WEIGHTINGS = ("fixed", "gradient", "hypervolume")


class WeightState(NamedTuple):
    """The objective-weight state carried by `fit_small(loss_state=...)`.

    weights [K]; influence [K] (s summed over the current window); step (int32, updates
    done); reference [K] (hypervolume reference point, NaN until the first update); buffer
    [B, K] (objective vectors of earlier checkpoints, a ring); filled [B] (float 0/1: which
    buffer rows hold a vector); slot (int32, the next ring slot); multiplier (the hypervolume
    multiplier for the next update's rewards).
    """

    weights: jax.Array
    influence: jax.Array
    step: jax.Array
    reference: jax.Array
    buffer: jax.Array
    filled: jax.Array
    slot: jax.Array
    multiplier: jax.Array


def init_weight_state(weights, *, buffer_size: int = 8) -> WeightState:
    """The initial state: the given weights [K] (normalised to sum 1), an empty buffer."""
    w = jnp.asarray(weights, jnp.float32)
    if w.ndim != 1 or w.shape[0] < 1:
        raise ValueError(f"weights must be [K], got shape {w.shape}")
    k = w.shape[0]
    return WeightState(weights=w / w.sum(), influence=jnp.zeros(k, jnp.float32),
                       step=jnp.zeros((), jnp.int32),
                       reference=jnp.full((k,), jnp.nan, jnp.float32),
                       buffer=jnp.zeros((int(buffer_size), k), jnp.float32),
                       filled=jnp.zeros(int(buffer_size), jnp.float32),
                       slot=jnp.zeros((), jnp.int32), multiplier=jnp.ones((), jnp.float32))


def exp_weight_update(weights, influence, *, step_size, temperature: float = 1.0) -> jax.Array:
    """w <- softmax(log w + step_size * influence / temperature), [K]."""
    return jax.nn.softmax(jnp.log(weights) + step_size * influence / temperature)


def influence(gradients) -> jax.Array:
    """s_k = sum_j <g_k, g_j> of per-objective gradients [K, D] (how much a step along g_k
    helps every objective to first order). [K]."""
    g = jnp.asarray(gradients, jnp.float32)
    return (g @ g.T).sum(axis=1)


def group_centred_global_std(rewards, data=None, *, eps: float = 1e-6) -> jax.Array:
    """PaCo-RL's advantage: A_mi = (R_mi - mean_i R_mi) / std(R over the whole batch) for
    rewards [M, G] (M prompts, G responses each). Unlike GRPO's per-group std, a group whose
    rewards barely differ keeps small advantages. [M, G]."""
    del data
    r = jnp.asarray(rewards, jnp.float32)
    return (r - r.mean(axis=1, keepdims=True)) / (r.std() + eps)


def _advantages(advantage, rewards, data):
    if callable(advantage):
        return advantage(rewards, data)
    return compute_advantages(advantage, rewards.reshape(-1), rewards.shape[1]).reshape(
        rewards.shape)


def multi_objective_pg_loss(sample_fn: Callable[[Any, jax.Array, Any, int], jax.Array],
                            log_prob_fn: Callable[[Any, Any, jax.Array], jax.Array],
                            reward_fn: Callable[[Any, jax.Array, Any], jax.Array], *,
                            group_size: int, weighting: str = "fixed",
                            aggregation: str = "weighted",
                            advantage: str | Callable = "grpo", step_size: float = 0.1,
                            temperature: float = 1.0, window: int = 1,
                            hv_mode: str = "checkpoint", hv_scale: float = 1.0,
                            prompt_fn: Callable[[jax.Array, Any], Any] | None = None,
                            ) -> Callable[[Any, dict, WeightState], tuple]:
    """GRPO on K objectives with fixed, gradient-based or hypervolume-guided weights.

    Args:
      sample_fn, log_prob_fn, prompt_fn: as in `small_pg.group_pg_loss` (responses [M, G],
        log-probs [M, G]; prompts default to `data["prompts"]`).
      reward_fn: `(prompts, responses, data) -> [K, M, G]` objective rewards (no gradient);
        the hypervolume weighting expects them non-negative (a multiplier scales them).
      group_size: G >= 2.
      weighting: "fixed", "gradient" or "hypervolume" (module docstring).
      aggregation: "weighted" (sum_k w_k r_k) or "log_tamed" (PaCo-RL's
        `aggregate.log_tamed_sum` over the update's M x G responses: the rewards whose
        std / mean exceeds the mean of those ratios enter as log(1 + r)).
      advantage: an `ADVANTAGES` name or `(rewards [M, G], data) -> [M, G]`, used for the
        combined reward and, with "gradient", for each objective's own gradient.
      step_size, temperature: eta and lambda of the exponentiated-gradient update
        (`data["weight_step_size"]` overrides step_size per row).
      window: updates whose mean influence updates the weights.
      hv_mode: "checkpoint" (one multiplier per update from the checkpoint's vector, the
        paper's) or "sample" (one per response from its own vector).
      hv_scale: multipliers use tanh(gain / hv_scale) (1: the paper's formula).

    Returns:
      `loss_fn(params, batch, state) -> (loss, metrics, new_state)` for `fit_small(
      loss_state=init_weight_state(w0), batch_fn=small_pg.rl_batch)`; metrics: "reward"
      (mean combined reward), "advantage_std" (std of the advantages over the update's
      responses), "objective_<k>" (mean of r_k), "weight_<k>", and with
      "hypervolume" "hv_multiplier" (the mean multiplier).
    """
    if weighting not in WEIGHTINGS:
        raise ValueError(f"unknown weighting {weighting!r}; valid: {WEIGHTINGS}")
    if group_size < 2:
        raise ValueError(f"group_size must be >= 2 (group baseline), got {group_size}")
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    if aggregation not in ("weighted", "log_tamed"):
        raise ValueError(f"aggregation is 'weighted' or 'log_tamed', got {aggregation!r}")
    if hv_mode not in ("checkpoint", "sample"):
        raise ValueError(f"hv_mode is 'checkpoint' or 'sample', got {hv_mode!r}")

    def loss_fn(params, batch, state: WeightState):
        data = batch.get("data")
        k_prompt, k_sample = jax.random.split(batch["rng"])
        prompts = data["prompts"] if prompt_fn is None else prompt_fn(k_prompt, data)
        responses = jax.lax.stop_gradient(
            sample_fn(jax.lax.stop_gradient(params), k_sample, prompts, group_size))
        r = jax.lax.stop_gradient(jnp.asarray(reward_fn(prompts, responses, data),
                                              jnp.float32))
        if r.ndim != 3 or r.shape[0] != state.weights.shape[0] or r.shape[2] != group_size:
            raise ValueError(f"reward_fn must return [K={state.weights.shape[0]}, M, "
                             f"{group_size}] rewards, got {r.shape}")
        num = r.shape[0]
        weights = state.weights
        if isinstance(data, dict) and "objective_weights" in data:
            w0 = jnp.asarray(data["objective_weights"], jnp.float32)
            weights = jnp.where(state.step == 0, w0 / w0.sum(), weights)
        eta = (data["weight_step_size"] if isinstance(data, dict) and "weight_step_size" in data
               else step_size)
        if aggregation == "weighted":
            combined = jnp.tensordot(weights, r, axes=1)  # [M, G]
        else:
            combined = log_tamed_sum(r.reshape(num, -1), weights).reshape(r.shape[1:])
        vectors = r.reshape(num, -1).T  # [M G, K]
        mean_vec = vectors.mean(axis=0)
        reference = jnp.where(state.step == 0, mean_vec, state.reference)
        metrics = {}
        new = state._replace(weights=weights, step=state.step + 1, reference=reference)
        if weighting == "hypervolume":
            first = state.step == 0
            buffer = jnp.where(first, state.buffer.at[0].set(mean_vec), state.buffer)
            filled = jnp.where(first, state.filled.at[0].set(1.0), state.filled)
            slot = jnp.where(first, 1, state.slot)
            valid = filled > 0
            if hv_mode == "sample":
                mult = hypervolume_multipliers(buffer, vectors, reference, valid, scale=hv_scale)
                mult = jnp.where(first, 1.0, mult).reshape(combined.shape)
            else:
                mult = jnp.where(first, 1.0, state.multiplier)
            combined = combined * mult
            metrics["hv_multiplier"] = jnp.mean(mult)
            # this checkpoint's vector: its multiplier (for the next update) and the buffer
            gain = hypervolume_gains(buffer, mean_vec[None], reference, valid)[0]
            adds = (gain > 0) & ~first
            size = state.buffer.shape[0]
            new = new._replace(
                buffer=jnp.where(adds, buffer.at[slot % size].set(mean_vec), buffer),
                filled=jnp.where(adds, filled.at[slot % size].set(1.0), filled),
                slot=jnp.where(adds, slot + 1, slot),
                multiplier=jnp.where(first, 1.0, 0.5 + 1.5 * jnp.tanh(gain / hv_scale)))
            metrics["hv_gain"] = gain
        adv = jax.lax.stop_gradient(_advantages(advantage, combined, data))
        logp = log_prob_fn(params, prompts, responses)
        loss = -jnp.mean(adv * logp)
        if weighting == "gradient":
            per_obj = jax.lax.stop_gradient(jnp.stack([_advantages(advantage, r[k], data)
                                                       for k in range(num)]))
            _, vjp = jax.vjp(lambda p: log_prob_fn(p, prompts, responses),
                             jax.lax.stop_gradient(params))
            count = float(adv.size)
            grads = jax.vmap(lambda a: vjp(-a / count)[0])(per_obj)  # K pytrees [K, ...]
            flat = jnp.concatenate([x.reshape(num, -1) for x in jax.tree.leaves(grads)], 1)
            acc = state.influence + influence(flat)
            due = (state.step + 1) % window == 0
            updated = exp_weight_update(weights, acc / window, step_size=eta,
                                        temperature=temperature)
            new = new._replace(weights=jnp.where(due, updated, weights),
                               influence=jnp.where(due, jnp.zeros_like(acc), acc))
            metrics["influence_norm"] = jnp.linalg.norm(influence(flat))
        metrics.update({"reward": combined.mean(), "advantage_std": adv.std(),
                        **{f"objective_{k}": r[k].mean() for k in range(num)},
                        **{f"weight_{k}": new.weights[k] for k in range(num)}})
        return loss, metrics, new

    return loss_fn
