"""Critic-free online policy gradient: GRPO and its variants, RLOO, REINFORCE++, BNPO, BRPO.

One iteration: draw `prompts_per_iteration` prompts, sample `num_samples` responses each with the
jitted KV sampler, score them with `reward_fn`, compute advantages, run `epochs` passes of
`minibatches` updates of the clipped surrogate (`alignax.algorithms.online.make_policy_loss`),
with the KL to the frozen reference in the loss (GRPO) or in the reward (PPO-RLHF style, fixed or
adaptive coefficient).

Config (a mapping; `default_config()` lists every key with its default):
  iterations, prompts_per_iteration, num_samples, max_new_tokens, temperature, top_k, top_p,
  stop_tokens, advantage (see online.ADVANTAGES), loss ("ppo_clip" | "gspo"), clip_low,
  clip_high, aggregation (see losses.AGGREGATIONS), kl_coef, kl_in ("loss" | "reward"),
  kl_estimator, kl_target (adaptive KL; None = fixed), kl_horizon, entropy_coef, epochs,
  minibatches, optimizer (see train.optim.make_optimizer), checkpoint_every, eval_every,
  log_every, mesh (None: one device; or {data, fsdp, tensor} sizes, see online.Placement),
  objective_weights (None: `reward_fn` returns [N]; K weights: it returns [K, N] objective
  rewards, combined by `online.ObjectiveMixer`), objective_aggregation ("weighted" |
  "log_tamed"), objective_weighting ("fixed" | "gradient" | "hypervolume"),
  objective_step_size.

Variants beyond the advantage estimator:
- GRPO-S (dynamic reward scaling): `difficulty_fn(rollout, rewards) -> [G]` scales each prompt
  group's advantages (`ops.difficulty_scaled_advantages`).
- BRPO (Writing-Zero): advantage="brpo" with `judge_fn(rollout, reference_rows) -> [N]`, the
  pairwise outcome (+1 / 0 / -1) of every sample against a bootstrapped reference drawn from
  its own group each iteration (`ops.bootstrapped_reference_advantages`); `reward_fn` is then
  optional and only logged.

Resume: the train state and the KL coefficient are checkpointed (orbax) every `checkpoint_every`
iterations; prompts and sampling keys are functions of (seed, iteration), so a restarted run
repeats exactly the iterations an uninterrupted one would have run.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from alignax import ops
from alignax.algorithms import online
from alignax._src.config import with_overrides


def default_config(**overrides) -> dict:
    config = dict(
        iterations=20, prompts_per_iteration=8, num_samples=8, max_new_tokens=16,
        temperature=1.0, top_k=0, top_p=1.0, stop_tokens=(), advantage="grpo",
        loss="ppo_clip", clip_low=0.2, clip_high=None, aggregation="token_mean",
        kl_coef=0.04, kl_in="loss", kl_estimator="k3", kl_target=None, kl_horizon=10_000,
        entropy_coef=0.0, epochs=1, minibatches=1,
        optimizer=dict(name="adamw", learning_rate=1e-5, warmup_steps=0, schedule="constant",
                       clip_norm=1.0, kwargs=dict(weight_decay=0.0)),
        checkpoint_every=10, eval_every=0, log_every=1, mesh=None,
        objective_weights=None, objective_aggregation="weighted", objective_weighting="fixed",
        objective_step_size=0.1,
    )
    return with_overrides(config, overrides, "policy-gradient config keys")


def train(config: Mapping[str, Any], workdir: str, *, model, init_params, ref_params,
          prompt_ids: np.ndarray, prompt_mask: np.ndarray,
          reward_fn: Callable[[online.Rollout], Any] | None = None,
          eval_fn: Callable | None = None, seed: int = 0,
          difficulty_fn: Callable | None = None, judge_fn: Callable | None = None) -> dict:
    """Runs the online loop; returns {"params", "metrics" (last iteration), "eval", "history"}.

    Args:
      config: see the module docstring (missing keys take `default_config()` values).
      workdir: metrics.jsonl, TensorBoard events and checkpoints go here.
      model: the policy's Model (a causal LM with `apply_cached`).
      init_params: the starting policy (usually the SFT reference).
      ref_params: the frozen reference policy.
      prompt_ids, prompt_mask: [M, P] the prompt pool (left- or right-padded).
      reward_fn: `rollout -> [N]` rewards (host or device arrays); `rollout.prompt_index` holds
        each sample's row of the prompt pool (to look up answers or references). The other
        online recipes (ppo, rejection, online_dpo) take the same kind of reward_fn.
      eval_fn: optional `params -> metrics`, every `eval_every` iterations and at the end.
      seed: seed of prompt draws, sampling keys and the train state.
      difficulty_fn: GRPO-S, `(rollout, rewards [N]) -> [G]` per-prompt advantage scales.
      judge_fn: BRPO, `(rollout, reference_rows [N]) -> [N]` outcomes against the references.
    """
    from alignax.train.optim import make_optimizer

    cfg = online.merged_config(default_config, config)
    n, per_iter = int(cfg["num_samples"]), int(cfg["prompts_per_iteration"])
    if cfg["kl_in"] not in ("loss", "reward"):
        raise ValueError(f"kl_in must be 'loss' or 'reward', got {cfg['kl_in']!r}")
    brpo = cfg["advantage"] == "brpo"
    if brpo and judge_fn is None:
        raise ValueError("advantage='brpo' needs a judge_fn(rollout, reference_rows)")
    if not brpo and reward_fn is None:
        raise ValueError(f"advantage={cfg['advantage']!r} needs a reward_fn")
    if brpo and cfg["objective_weights"] is not None:
        raise ValueError("BRPO's judge gives one outcome per sample; objective_weights must be "
                         "None")
    mixer = None if cfg["objective_weights"] is None else online.ObjectiveMixer(
        cfg["objective_weights"], aggregation=cfg["objective_aggregation"],
        weighting=cfg["objective_weighting"], step_size=float(cfg["objective_step_size"]))
    prompt_ids, prompt_mask = online.prompt_pool(prompt_ids, prompt_mask, per_iter)
    place = online.Placement.from_config(cfg["mesh"])
    place.check_rows(per_iter, "prompts_per_iteration")
    place.check_rows(per_iter * n // int(cfg["minibatches"]), "minibatch")
    tx = make_optimizer(cfg["optimizer"], int(cfg["iterations"]) * int(cfg["epochs"])
                        * int(cfg["minibatches"]))
    use_ref = float(cfg["kl_coef"]) > 0 or cfg["kl_target"] is not None
    axes = model.logical_axes(init_params)
    ref_params = place.put_params(ref_params, axes)
    state, step = place.make_state_and_step(init_params, axes, tx, online.make_policy_loss(
        model.apply, loss=cfg["loss"], clip_low=float(cfg["clip_low"]),
        clip_high=None if cfg["clip_high"] is None else float(cfg["clip_high"]),
        kl_coef=float(cfg["kl_coef"]) if cfg["kl_in"] == "loss" else 0.0,
        kl_estimator=cfg["kl_estimator"], aggregation=cfg["aggregation"],
        entropy_coef=float(cfg["entropy_coef"]), max_length=int(cfg["max_new_tokens"])),
        seed=seed)
    if mixer is not None and mixer.weighting == "gradient":
        surrogate = online.make_policy_loss(
            model.apply, loss=cfg["loss"], clip_low=float(cfg["clip_low"]),
            aggregation=cfg["aggregation"], max_length=int(cfg["max_new_tokens"]))

        @jax.jit
        def objective_gradients(params, batch, advantages):  # [K, N] -> [K, D]
            def one(adv):
                g = jax.grad(lambda p: surrogate(p, dict(batch, advantages=adv), None)[0])(
                    params)
                return jnp.concatenate([x.ravel() for x in jax.tree.leaves(g)])
            return jax.lax.map(one, advantages)
    rollout_fn = online.rollout_from_config(model, cfg, n)
    ref_logps_fn = online.make_reference_logps(model.apply, int(cfg["max_new_tokens"]))
    kl_ctl = online.AdaptiveKLController(float(cfg["kl_coef"]), cfg["kl_target"],
                                         int(cfg["kl_horizon"]))

    def iterate(state, extra, it):
        kl_ctl.coef = extra["kl_coef"]
        t0 = time.perf_counter()
        rollout, rng = online.iteration_rollout(rollout_fn, state.params, prompt_ids,
                                                prompt_mask, seed=seed, it=it,
                                                per_iteration=per_iter, placement=place)
        metrics_extra = {}
        objectives = None
        if brpo:
            ref_index, ref_rows = online.bootstrap_reference_rows(rng, per_iter, n)
            outcomes = jnp.asarray(judge_fn(rollout, ref_rows), jnp.float32)
            rewards = (jnp.asarray(reward_fn(rollout), jnp.float32) if reward_fn is not None
                       else outcomes)
            metrics_extra["judge_outcome"] = float(outcomes.mean())
        elif mixer is not None:
            objectives = mixer.check(reward_fn(rollout))
            rewards = mixer.combine(objectives, extra)
            for k in range(mixer.num):
                metrics_extra[f"objective_{k}"] = float(objectives[k].mean())
                metrics_extra[f"objective_weight_{k}"] = extra[f"objective_weight_{k}"]
        else:
            rewards = jnp.asarray(reward_fn(rollout), jnp.float32)
        jax.block_until_ready(rewards)
        t_rollout = time.perf_counter() - t0
        ref_logps = ref_logps_fn(ref_params, rollout.ids, rollout.mask) if use_ref else None
        shaped = rewards
        if use_ref and cfg["kl_in"] == "reward":
            shaped = online.kl_penalized_rewards(rewards, rollout.old_logps, ref_logps,
                                                 rollout.response_mask, coef=kl_ctl.coef,
                                                 estimator="k1")
        if brpo:
            adv = ops.bootstrapped_reference_advantages(outcomes, jnp.asarray(ref_index), n)
        else:
            adv = online.compute_advantages(cfg["advantage"], shaped, n)
        if difficulty_fn is not None:
            adv = ops.difficulty_scaled_advantages(adv, jnp.asarray(
                difficulty_fn(rollout, rewards), jnp.float32), n)
        new_extra = {}
        if mixer is not None:
            grads = None
            if mixer.weighting == "gradient":
                per_objective = jnp.stack([online.compute_advantages(cfg["advantage"], o, n)
                                           for o in objectives])
                grads = objective_gradients(state.params, online.training_batch(
                    rollout, adv), per_objective)
            new_extra = mixer.update(objectives, {k: v for k, v in extra.items()
                                                  if k != "kl_coef"}, gradients=grads)
        state, metrics, t_update = online.run_updates(
            step, state, online.training_batch(rollout, adv, ref_logps=ref_logps),
            epochs=cfg["epochs"], num_minibatches=cfg["minibatches"], rng=rng,
            placement=place)
        metrics.update({
            "reward": float(rewards.mean()), "reward_std": float(rewards.std()),
            "response_length": float(np.asarray(rollout.lengths, np.float32).mean()),
            "rollout_s": t_rollout, "update_s": t_update, "kl_coef": kl_ctl.coef,
            **metrics_extra,
        })
        if use_ref:
            seq_kl = online.ops.masked_sum(online.ops.kl_estimate(
                rollout.old_logps, ref_logps, "k1"), rollout.response_mask)
            metrics["kl_ref_seq"] = float(seq_kl.mean())
            kl_ctl.update(metrics["kl_ref_seq"], per_iter * n)
        return state, {"kl_coef": kl_ctl.coef, **new_extra}, metrics

    extra = {"kl_coef": kl_ctl.coef, **({} if mixer is None else mixer.initial_state())}
    return online.run_recipe(workdir, state=state, iterate=iterate, cfg=cfg, eval_fn=eval_fn,
                             extra=extra)
