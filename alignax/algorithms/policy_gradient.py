"""Critic-free online policy gradient: GRPO and its variants, RLOO, REINFORCE++, BNPO, BRPO.

One iteration: draw `prompts_per_iteration` prompts, sample `num_samples` responses each with the
jitted KV sampler, score them with `reward_fn`, turn the rewards into advantages with an
advantage function, run `epochs` passes of `minibatches` updates of the clipped surrogate
(`make_policy_loss`), with the KL to the frozen reference in the loss (GRPO) or in the reward
(PPO-RLHF style, fixed or adaptive coefficient: `alignax.algorithms.kl_control`).

The variants compose as functions rather than flags:
- an advantage function `(rewards [N], rollout, rng) -> (advantages [N], metrics)`:
  `group_advantage(name, n)` for the estimators of `online.ADVANTAGES` (the config's
  `advantage`), `brpo_advantage(judge_fn, n)` (Writing-Zero's bootstrapped pairwise
  reference), and `difficulty_scaled(advantage_fn, difficulty_fn, n)` (GRPO-S); pass your own
  as `advantage_fn=`;
- several objectives: `reward_fn` returns [K, N] and an `objectives.objective_mixer` (the
  config's objective_* keys) combines them, its weights evolving as checkpointed state;
- KL placement: `kl_in` "loss" or "reward" (`kl_control`).

Config: `default_config()` lists every key with its default; `train` rejects unknown keys.
  iterations, prompts_per_iteration, num_samples, max_new_tokens, temperature, top_k, top_p,
  stop_tokens, advantage (see online.ADVANTAGES, or "brpo"), loss ("ppo_clip" | "gspo"),
  clip_low, clip_high, aggregation (see losses.AGGREGATIONS), kl_coef, kl_in ("loss" |
  "reward"), kl_estimator, kl_target (adaptive KL; None = fixed), kl_horizon, entropy_coef,
  epochs, minibatches, grad_accum_steps (k: each minibatch is k micro-batches inside the
  step, one update; exact for PPO-clip with any aggregation, see `policy_accum_weight`),
  optimizer (see train.optim.make_optimizer), checkpoint_every,
  eval_every, log_every, progress, mesh (None: one device; or {data, fsdp, tensor} sizes),
  objective_weights (None: `reward_fn` returns [N]; K weights: it returns [K, N]),
  objective_aggregation ("weighted" | "log_tamed"), objective_weighting ("fixed" |
  "gradient" | "hypervolume"), objective_step_size, lora (None, or {rank, alpha, targets,
  dropout, full}: `alignax.models.lora.LoraConfig`; the trained state is the adapters, the
  frozen `init_params` are the adapted policy's base and the reference (`ref_params` is then
  not used); rollouts run the adapted model; the result's "params" are merged);
  TRL's GRPO/RLOO options (docs/trl.md): delta (two-sided clipping of the ratio),
  top_entropy_quantile (policy gradient on the highest-entropy tokens only),
  mask_truncated_completions (responses without a stop token leave the loss), reward_clip
  ([low, high] on the rewards before the advantage), kl_bias_correction (the KL term weighted
  by pi / pi_old).

Memory: with a model of `logits_chunk > 0` the update and the reference forward take token
log-probs from the model (`make_policy_loss(token_logps=True)`) and the entropy comes from the
LM head in vocabulary chunks (`online.head_entropy_fn`): no [N, R, V] logits.

Resume: the whole iteration state (train state, KL coefficient, objective weights and front)
is checkpointed by the one training loop; prompts and sampling keys are functions of
(seed, iteration), so a restarted run repeats exactly the iterations an uninterrupted one
would have run.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from alignax import ops
from alignax._src.config import recipe_config, resolve_config
from alignax.algorithms import online
from alignax.algorithms.kl_control import (KL_PLACEMENTS, adaptive_kl_control,
                                           kl_penalized_rewards)
from alignax.algorithms.objectives import objective_mixer
from alignax.losses import aggregate, gspo_loss, ppo_clip_loss
from alignax.train import sharding as shd
from alignax.train.optim import make_optimizer
from alignax.types import Rollout

AdvantageFn = Callable[[jax.Array, Rollout, np.random.Generator],
                       tuple[jax.Array, dict[str, float]]]

DEFAULTS = dict(
    iterations=20, prompts_per_iteration=8, num_samples=8, max_new_tokens=16,
    temperature=1.0, top_k=0, top_p=1.0, stop_tokens=(), advantage="grpo",
    loss="ppo_clip", clip_low=0.2, clip_high=None, aggregation="token_mean",
    kl_coef=0.04, kl_in="loss", kl_estimator="k3", kl_target=None, kl_horizon=10_000,
    entropy_coef=0.0, epochs=1, minibatches=1, grad_accum_steps=1,
    optimizer=dict(name="adamw", learning_rate=1e-5, warmup_steps=0, schedule="constant",
                   clip_norm=1.0, kwargs=dict(weight_decay=0.0)),
    checkpoint_every=10, eval_every=0, log_every=1, progress=True, mesh=None,
    objective_weights=None, objective_aggregation="weighted", objective_weighting="fixed",
    objective_step_size=0.1, lora=None,
    delta=None, top_entropy_quantile=1.0, mask_truncated_completions=False, reward_clip=None,
    kl_bias_correction=False,
)


def default_config(**overrides):
    """The locked config of the recipe (every key with its default), updated by `overrides`."""
    return recipe_config(DEFAULTS, overrides, "policy-gradient config")


POLICY_LOSSES = ("ppo_clip", "gspo")


def make_policy_loss(apply_fn, *, loss: str = "ppo_clip", clip_low: float = 0.2,
                     clip_high: float | None = None, kl_estimator: str = "k3",
                     aggregation: str = "token_mean", entropy_coef: float = 0.0,
                     max_length: int | None = None, token_logps: bool = False,
                     entropy_fn: Callable | None = None, delta: float | None = None,
                     top_entropy_quantile: float = 1.0,
                     kl_bias_correction: bool = False) -> Callable:
    """`loss_fn(params, batch, rng, kl_coef=0.0)` of the policy update on a `training_batch`.

    loss = aggregate(PPO-clip token losses) [or the mean of GSPO's sequence losses]
           + kl_coef * aggregate(KL estimate to the reference)   (KL in the loss, GRPO style)
           - entropy_coef * aggregate(entropy)

    `kl_coef` is an argument of the step (a scalar array), so an adaptive coefficient changes
    without recompiling; the KL term needs `ref_logps` in the batch.

    `token_logps=True` (the recipe sets it for a model with `logits_chunk > 0`:
    `online.uses_token_logps`) asks the model for the response tokens' log-probs
    (`online.response_logps(..., token_logps=True)`), so the [N, R, V] logits are never formed;
    loss, metrics and gradients equal the logits path's. The entropy then comes from
    `entropy_fn(params, hidden) -> [N, R]` on the forward's final hidden states
    (`online.head_entropy_fn(model)`: the LM head in vocabulary chunks, no logits; the recipe
    passes it); under stop_gradient when `entropy_coef` is 0 (a metric). Without an
    `entropy_fn` there is no `entropy` metric and `entropy_coef` must be 0 (ValueError).

    `delta` caps the unclipped ratio (two-sided clipping, `ppo_clip_loss`).
    `top_entropy_quantile` q < 1 keeps the policy-gradient term of only the response tokens
    whose entropy is at least the (1 - q) quantile of the minibatch's valid tokens (Wang et al.
    2025, "Beyond the 80/20 Rule", arXiv 2506.01939; TRL's GRPOConfig.top_entropy_quantile):
    the other tokens still count in the normaliser, and the KL term is over every token.
    `kl_bias_correction` multiplies each token's KL estimate by the (differentiable) ratio
    pi / pi_old, which makes the k3 estimate unbiased for the KL of the current policy when the
    samples come from the old one (TRL's GRPOConfig.use_bias_correction_kl, on by default
    there).

    Metrics: pg_loss, kl (k3 estimate, token mean), entropy (token mean; with token_logps only
    given an `entropy_fn`), clip_fraction, ratio (mean over response tokens), advantage
    mean/std, tokens (the response tokens of the batch: the normaliser of the token-mean loss,
    which gradient accumulation weighs micro-batches by, see `accum_weight`).
    """
    if loss not in POLICY_LOSSES:
        raise ValueError(f"unknown policy loss {loss!r}; valid: {POLICY_LOSSES}")
    if token_logps and entropy_coef and entropy_fn is None:
        raise ValueError(f"entropy_coef={entropy_coef} with token_logps needs an entropy_fn "
                         "(online.head_entropy_fn) or the logits (logits_chunk=0)")
    if not 0.0 < top_entropy_quantile <= 1.0:
        raise ValueError(f"top_entropy_quantile must lie in (0, 1], got {top_entropy_quantile}")
    entropy_mask = top_entropy_quantile < 1.0
    if entropy_mask and token_logps and entropy_fn is None:
        raise ValueError("top_entropy_quantile < 1 with token_logps needs an entropy_fn")
    if entropy_mask and loss != "ppo_clip":
        raise ValueError("top_entropy_quantile masks token losses: loss must be 'ppo_clip'")
    if delta is not None and delta <= 1.0 + (clip_low if clip_high is None else clip_high):
        raise ValueError(f"delta={delta} must exceed 1 + clip_high")

    def loss_fn(params, batch, rng, kl_coef=0.0):
        del rng
        rmask = batch["response_mask"]
        r = rmask.shape[1]
        entropy = None
        if token_logps and entropy_fn is not None:
            logps, entropy = online.response_logps_entropy(
                apply_fn, params, batch["ids"], batch["mask"], r, entropy_fn,
                differentiable=bool(entropy_coef))
        elif token_logps:
            logps = online.response_logps(apply_fn, params, batch["ids"], batch["mask"], r,
                                          token_logps=True)
        else:
            logits = online.response_logits(apply_fn, params, batch["ids"], batch["mask"], r)
            logps = ops.token_logprobs(logits, batch["ids"][:, -r:])
            entropy = ops.token_entropy(logits)
        adv = batch["advantages"]
        if loss == "ppo_clip":
            tok, stats = ppo_clip_loss(logps, batch["old_logps"], adv, rmask,
                                       clip_low=clip_low, clip_high=clip_high, delta=delta)
            if entropy_mask:
                tok = tok * high_entropy_mask(jax.lax.stop_gradient(entropy), rmask,
                                              top_entropy_quantile)
            pg = aggregate(tok, rmask, aggregation, max_length=max_length)
            clip_fraction = ops.masked_mean(stats["clipped"], rmask, axis=None)
            ratio = ops.masked_mean(stats["ratio"], rmask, axis=None)
        else:
            seq, stats = gspo_loss(logps, batch["old_logps"], adv, rmask,
                                   **({} if clip_high is None else {"clip_high": clip_high}),
                                   clip_low=clip_low)
            pg = seq.mean()
            clip_fraction, ratio = stats["clipped"].mean(), stats["ratio"].mean()
        total = pg
        metrics = {"pg_loss": pg, "clip_fraction": clip_fraction, "ratio": ratio,
                   "advantage_mean": adv.mean(), "advantage_std": adv.std(),
                   "tokens": jnp.asarray(rmask, jnp.float32).sum()}
        if "ref_logps" in batch:
            kl_tok = ops.kl_estimate(logps, batch["ref_logps"], kl_estimator)
            if kl_bias_correction:
                log_ratio = jnp.where(jnp.asarray(rmask) > 0, logps - batch["old_logps"], 0.0)
                kl_tok = kl_tok * jnp.exp(jnp.clip(log_ratio, -20.0, 20.0))
            kl = aggregate(kl_tok, rmask, aggregation, max_length=max_length)
            metrics["kl"] = ops.masked_mean(ops.kl_estimate(logps, batch["ref_logps"], "k3"),
                                            rmask, axis=None)
            total = total + kl_coef * kl
        if entropy is not None:
            metrics["entropy"] = ops.masked_mean(entropy, rmask, axis=None)
            if entropy_coef:
                total = total - entropy_coef * aggregate(entropy, rmask, aggregation,
                                                         max_length=max_length)
        return total, metrics

    return loss_fn


def high_entropy_mask(entropy: jax.Array, mask: jax.Array, quantile: float) -> jax.Array:
    """[B, T] float mask of the valid tokens whose entropy is >= the (1 - quantile) quantile
    (linear interpolation) of the entropies of all valid tokens; 0 off the mask."""
    valid = jnp.asarray(mask) > 0
    values = jnp.where(valid, jnp.asarray(entropy, jnp.float32), jnp.nan)
    threshold = jnp.nanquantile(values, 1.0 - quantile)
    return (valid & (entropy >= threshold)).astype(jnp.float32)


def truncated_rows(responses: jax.Array, response_mask: jax.Array, stop_tokens) -> jax.Array:
    """[N] bool: the responses that hold no stop token among their valid tokens (cut at
    max_new_tokens rather than finished)."""
    stops = jnp.isin(responses, jnp.asarray(list(stop_tokens), responses.dtype))
    return ~jnp.any(stops & (jnp.asarray(response_mask) > 0), axis=-1)


def policy_accum_weight(loss: str, aggregation: str) -> str | None:
    """The normaliser metric gradient accumulation weighs micro-batches by, so that k
    micro-batches give the whole minibatch's gradient (`make_train_step(accum_weight=)`).

    - PPO-clip with "token_mean": "tokens" (every term is a sum over the minibatch's response
      tokens / their count; a micro-batch weighs by its token count);
    - every "seq_mean_*" aggregation: None (means over rows; micro-batches hold equally many);
    - GSPO with "token_mean" and a KL in the loss mixes a row mean (GSPO) with a token mean
      (the KL): None, exact for the GSPO term, and for the KL only when the micro-batches hold
      equally many response tokens.

    The token-mean metrics (kl, clip_fraction, ratio, entropy) are exact with "tokens" and
    micro-batch means otherwise; advantage_mean/std are micro-batch statistics averaged.
    """
    return "tokens" if loss == "ppo_clip" and aggregation == "token_mean" else None


def group_advantage(name: str, num_samples: int) -> AdvantageFn:
    """The advantage function of a named estimator (`online.ADVANTAGES`)."""
    if name not in online.ADVANTAGES:
        raise ValueError(f"unknown advantage estimator {name!r}; valid: "
                         f"{sorted(online.ADVANTAGES) + ['brpo']}")

    def advantage_fn(rewards, rollout, rng):
        del rollout, rng
        return online.compute_advantages(name, rewards, num_samples), {}

    return advantage_fn


def bootstrap_reference_rows(rng: np.random.Generator, num_groups: int,
                             num_samples: int) -> tuple[np.ndarray, np.ndarray]:
    """BRPO's bootstrapped references: one random sample per group, as (index within the group
    [G], row of each sample's group reference [G * n])."""
    index = rng.integers(0, num_samples, size=num_groups)
    rows = np.repeat(index + np.arange(num_groups) * num_samples, num_samples)
    return index, rows


def brpo_advantage(judge_fn: Callable[[Rollout, np.ndarray], Any],
                   num_samples: int) -> AdvantageFn:
    """BRPO (Writing-Zero, arXiv 2506.00103): each group's reference is one of its own samples,
    drawn anew each iteration; `judge_fn(rollout, reference_rows [N]) -> [N]` gives every
    sample's pairwise outcome (+1 / 0 / -1) against it, and the outcomes are the advantages
    (`ops.bootstrapped_reference_advantages`). The rewards are only logged."""

    def advantage_fn(rewards, rollout, rng):
        del rewards
        groups = rollout.ids.shape[0] // num_samples
        ref_index, ref_rows = bootstrap_reference_rows(rng, groups, num_samples)
        outcomes = jnp.asarray(judge_fn(rollout, ref_rows), jnp.float32)
        adv = ops.bootstrapped_reference_advantages(outcomes, jnp.asarray(ref_index),
                                                    num_samples)
        return adv, {"judge_outcome": float(outcomes.mean())}

    return advantage_fn


def difficulty_scaled(advantage_fn: AdvantageFn, difficulty_fn: Callable[[Rollout, Any], Any],
                      num_samples: int) -> AdvantageFn:
    """GRPO-S (DR-IRL): `difficulty_fn(rollout, rewards [N]) -> [G]` scales each prompt
    group's advantages (`ops.difficulty_scaled_advantages`)."""

    def scaled(rewards, rollout, rng):
        adv, metrics = advantage_fn(rewards, rollout, rng)
        scale = jnp.asarray(difficulty_fn(rollout, rewards), jnp.float32)
        return ops.difficulty_scaled_advantages(adv, scale, num_samples), metrics

    return scaled


def _objective_gradients(surrogate):
    @jax.jit
    def gradients(params, batch, advantages):  # [K, N] -> [K, D]
        def one(adv):
            g = jax.grad(lambda p: surrogate(p, dict(batch, advantages=adv), None)[0])(params)
            return jnp.concatenate([x.ravel() for x in jax.tree.leaves(g)])
        return jax.lax.map(one, advantages)

    return gradients


def validate(config: Mapping[str, Any] | None) -> dict:
    """The resolved config (see the module docstring), checked before any work: known keys,
    value types and ranges, loss, advantage, KL and aggregation names, the optimizer, and how
    the rows split over minibatches and the mesh. Raises ValueError naming the bad key."""
    from alignax.algorithms import common
    from alignax.losses import AGGREGATIONS

    label = "policy-gradient config"
    cfg = resolve_config(DEFAULTS, config, label)
    common.check_name(cfg["loss"], POLICY_LOSSES, label, "loss")
    common.check_name(cfg["advantage"], [*online.ADVANTAGES, "brpo"], label, "advantage")
    common.check_name(cfg["kl_in"], KL_PLACEMENTS, label, "kl_in")
    common.check_name(cfg["aggregation"], AGGREGATIONS, label, "aggregation")
    online.check_config(cfg, label, rows_per_prompt=int(cfg["num_samples"]))
    if cfg["mask_truncated_completions"] and not cfg["stop_tokens"]:
        raise ValueError(f"{label}: mask_truncated_completions needs stop_tokens (a response "
                         "is truncated when it holds none)")
    clip = cfg["reward_clip"]
    if clip is not None and (len(clip) != 2 or not float(clip[0]) < float(clip[1])):
        raise ValueError(f"{label}: reward_clip must be [low, high] with low < high, got {clip}")
    try:
        make_policy_loss(None, loss=cfg["loss"], clip_low=float(cfg["clip_low"]),
                         clip_high=None if cfg["clip_high"] is None else float(cfg["clip_high"]),
                         delta=None if cfg["delta"] is None else float(cfg["delta"]),
                         top_entropy_quantile=float(cfg["top_entropy_quantile"]))
    except ValueError as e:
        raise ValueError(f"{label}: {e}") from None
    return cfg

def train(config: Mapping[str, Any], workdir: str, *, model, init_params, ref_params,
          prompt_ids: np.ndarray, prompt_mask: np.ndarray,
          reward_fn: Callable[[Rollout], Any] | None = None,
          eval_fn: Callable | None = None, seed: int = 0,
          advantage_fn: AdvantageFn | None = None,
          difficulty_fn: Callable | None = None, judge_fn: Callable | None = None,
          reward_state: Any = None) -> dict:
    """Runs the online loop; returns {"params", "metrics" (last iteration), "eval", "history",
    "state", "resumed_from"}.

    Args:
      config: see the module docstring (missing keys take `default_config()` values; unknown
        keys are an error).
      workdir: metrics.jsonl, TensorBoard events and checkpoints go here.
      model: the policy's Model (a causal LM with `apply_cached`).
      init_params: the starting policy (usually the SFT reference).
      ref_params: the frozen reference policy.
      prompt_ids, prompt_mask: [M, P] the prompt pool (left- or right-padded).
      reward_fn: `rollout -> [N]` rewards (or [K, N] with objective_weights);
        `rollout.prompt_index` holds each sample's row of the prompt pool (to look up answers or
        references). The other online recipes take the same kind of reward_fn.
      eval_fn: optional `params -> metrics`, every `eval_every` iterations and at the end.
      seed: seed of prompt draws, sampling keys and the train state.
      advantage_fn: `(rewards, rollout, rng) -> (advantages, metrics)`; default: the config's
        `advantage` (`group_advantage`, or `brpo_advantage(judge_fn)` for "brpo").
      difficulty_fn: GRPO-S, `(rollout, rewards [N]) -> [G]` per-prompt advantage scales.
      judge_fn: BRPO, `(rollout, reference_rows [N]) -> [N]` outcomes against the references.
      reward_state: the initial state of a stateful reward (a pytree of arrays, e.g. PPO-C's
        running mean of batch rewards). Given, `reward_fn` is called as `reward_fn(rollout,
        state) -> (rewards, new_state)`, and the state lives in the checkpointed train state
        (`state.controls["reward"]`), so a resumed run continues it exactly.
    """
    cfg = validate(config)
    n, per_iter = int(cfg["num_samples"]), int(cfg["prompts_per_iteration"])
    if cfg["kl_in"] not in KL_PLACEMENTS:
        raise ValueError(f"kl_in must be one of {KL_PLACEMENTS}, got {cfg['kl_in']!r}")
    if advantage_fn is None:
        if cfg["advantage"] == "brpo":
            if judge_fn is None:
                raise ValueError("advantage='brpo' needs a judge_fn(rollout, reference_rows)")
            advantage_fn = brpo_advantage(judge_fn, n)
        else:
            advantage_fn = group_advantage(cfg["advantage"], n)
    if reward_fn is None and cfg["advantage"] != "brpo":
        raise ValueError(f"advantage={cfg['advantage']!r} needs a reward_fn")
    if difficulty_fn is not None:
        advantage_fn = difficulty_scaled(advantage_fn, difficulty_fn, n)
    mixer = None
    if cfg["objective_weights"] is not None:
        if reward_fn is None:
            raise ValueError("objective_weights need a reward_fn returning [K, N] rewards")
        mixer = objective_mixer(cfg["objective_weights"],
                                aggregation=cfg["objective_aggregation"],
                                weighting=cfg["objective_weighting"],
                                step_size=float(cfg["objective_step_size"]))
    prompt_ids, prompt_mask = online.prompt_pool(prompt_ids, prompt_mask, per_iter)
    place = shd.Placement.from_config(cfg["mesh"])
    reward_fn = online.rewards_where_sampled(reward_fn, place)
    place.check_rows(per_iter, "prompts_per_iteration")
    place.check_rows(per_iter * n // int(cfg["minibatches"]), "minibatch")
    tx = make_optimizer(cfg["optimizer"], int(cfg["iterations"]) * int(cfg["epochs"])
                        * int(cfg["minibatches"]))
    use_ref = float(cfg["kl_coef"]) > 0 or cfg["kl_target"] is not None
    kl_in_loss = use_ref and cfg["kl_in"] == "loss"
    axes = model.logical_axes(init_params)
    lora = None
    if cfg["lora"]:
        if mixer is not None and mixer.weighting == "gradient":
            raise ValueError("lora does not support objective_weighting='gradient'")
        lora = online.online_lora(model, cfg["lora"], place, init_params, axes, seed)
        ref_params, init_params, axes = lora.base, lora.adapters, lora.axes
    else:
        ref_params = place.put_params(ref_params, axes)
    kl_control = adaptive_kl_control(float(cfg["kl_coef"]), cfg["kl_target"],
                                     int(cfg["kl_horizon"]))
    controls = {"kl": kl_control.init()}
    if reward_state is not None:
        if reward_fn is None:
            raise ValueError("reward_state needs a reward_fn(rollout, state) -> (rewards, state)")
        controls["reward"] = jax.tree.map(jnp.asarray, reward_state)
    if mixer is not None:
        controls["objectives"] = mixer.init()
    init_state, abstract, train_sharding = online.initial_state(
        place, params=init_params, logical_axes=axes, tx=tx, seed=seed, controls=controls)
    clip_high = None if cfg["clip_high"] is None else float(cfg["clip_high"])
    token_logps = online.uses_token_logps(model)
    loss_fn = make_policy_loss(
        model.apply, loss=cfg["loss"], clip_low=float(cfg["clip_low"]), clip_high=clip_high,
        kl_estimator=cfg["kl_estimator"], aggregation=cfg["aggregation"],
        entropy_coef=float(cfg["entropy_coef"]), max_length=int(cfg["max_new_tokens"]),
        token_logps=token_logps, entropy_fn=online.head_entropy_fn(model),
        delta=None if cfg["delta"] is None else float(cfg["delta"]),
        top_entropy_quantile=float(cfg["top_entropy_quantile"]),
        kl_bias_correction=bool(cfg["kl_bias_correction"]))
    frozen_shardings = None
    if lora is not None:
        loss_fn = online.lora_loss(loss_fn, lora.cfg)
        if place.mesh is not None:
            frozen_shardings = [lora.base_shardings, shd.replicated(place.mesh)]
    step = online.make_update_step(
        place, loss_fn, tx, train_sharding, num_frozen=1 + (lora is not None),
        frozen_shardings=frozen_shardings, accum_steps=int(cfg["grad_accum_steps"]),
        accum_weight=policy_accum_weight(cfg["loss"], cfg["aggregation"]))
    objective_gradients = None
    if mixer is not None and mixer.weighting == "gradient":
        objective_gradients = _objective_gradients(make_policy_loss(
            model.apply, loss=cfg["loss"], clip_low=float(cfg["clip_low"]),
            aggregation=cfg["aggregation"], max_length=int(cfg["max_new_tokens"]),
            token_logps=token_logps))
    rollout_fn = online.rollout_from_config(model if lora is None else lora.model, cfg, n)
    policy_of = (lambda p: p) if lora is None else lora.policy
    frozen = () if lora is None else (lora.base,)
    ref_logps_fn = online.make_reference_logps(model.apply, int(cfg["max_new_tokens"]),
                                               token_logps=token_logps)

    def iterate(state: online.OnlineState, it: int):
        kl_state = state.controls["kl"]
        t0 = time.perf_counter()
        rollout, rng = online.iteration_rollout(rollout_fn, policy_of(state.train.params),
                                                prompt_ids, prompt_mask, seed=seed, it=it,
                                                per_iteration=per_iter, placement=place)
        metrics: dict[str, float] = {}
        objective_rewards = None
        new_reward_state = None

        def score(rollout):
            nonlocal new_reward_state
            if reward_state is None:
                return reward_fn(rollout)
            out, new_reward_state = reward_fn(rollout, state.controls["reward"])
            return out

        if mixer is not None:
            objective_rewards = mixer.check(score(rollout))
            rewards = mixer.combine(objective_rewards, state.controls["objectives"])
            for k in range(mixer.num):
                metrics[f"objective_{k}"] = float(objective_rewards[k].mean())
                metrics[f"objective_weight_{k}"] = float(
                    state.controls["objectives"].weights[k])
        elif reward_fn is not None:
            rewards = jnp.asarray(score(rollout), jnp.float32)
        else:
            rewards = None
        if rewards is not None and cfg["reward_clip"] is not None:
            rewards = jnp.clip(rewards, float(cfg["reward_clip"][0]),
                               float(cfg["reward_clip"][1]))
        if cfg["mask_truncated_completions"]:
            cut = truncated_rows(rollout.responses, rollout.response_mask, cfg["stop_tokens"])
            keep = jnp.asarray(rollout.response_mask).astype(bool) & ~cut[:, None]
            rollout = rollout._replace(
                response_mask=keep.astype(jnp.asarray(rollout.response_mask).dtype))
            metrics["truncated_fraction"] = float(jnp.mean(cut))
        if rewards is not None:
            jax.block_until_ready(rewards)
        t_rollout = time.perf_counter() - t0
        ref_logps = ref_logps_fn(ref_params, rollout.ids, rollout.mask) if use_ref else None
        shaped = rewards
        if use_ref and cfg["kl_in"] == "reward":
            shaped = kl_penalized_rewards(rewards, rollout.old_logps, ref_logps,
                                          rollout.response_mask, coef=kl_state.coef,
                                          estimator="k1")
        adv, adv_metrics = advantage_fn(shaped, rollout, rng)
        if rewards is None:  # BRPO without a reward: the judge's outcomes are the reward
            rewards = jnp.full_like(adv, adv_metrics.get("judge_outcome", 0.0))
        metrics.update(adv_metrics)
        controls = dict(state.controls)
        if new_reward_state is not None:
            controls["reward"] = jax.tree.map(
                lambda new, old: jnp.asarray(new, old.dtype), new_reward_state,
                state.controls["reward"])
        if mixer is not None:
            grads = None
            if objective_gradients is not None:
                per_objective = jnp.stack([online.compute_advantages(cfg["advantage"], o, n)
                                           for o in objective_rewards])
                grads = objective_gradients(state.train.params,
                                            online.training_batch(rollout, adv), per_objective)
            controls["objectives"] = mixer.update(objective_rewards, state.controls["objectives"],
                                                  gradients=grads)
        kl_coef = kl_state.coef if kl_in_loss else jnp.float32(0.0)
        train_state, update_metrics, t_update = online.run_updates(
            lambda st, mb: step(st, mb, *frozen, kl_coef), state.train,
            online.training_batch(rollout, adv, ref_logps=ref_logps),
            epochs=cfg["epochs"], num_minibatches=cfg["minibatches"], rng=rng,
            placement=place)
        metrics.update(update_metrics)
        metrics.update({
            "reward": float(rewards.mean()), "reward_std": float(rewards.std()),
            "response_length": online.mean_response_length(rollout),
            "kl_coef": float(kl_state.coef),
            "time/rollout_s": t_rollout, "time/update_s": t_update,
        })
        if use_ref:
            seq_kl = ops.masked_sum(ops.kl_estimate(rollout.old_logps, ref_logps, "k1"),
                                    rollout.response_mask).mean()
            metrics["kl_ref_seq"] = float(seq_kl)
            controls["kl"] = kl_control.update(kl_state, seq_kl, per_iter * n)
        return state._replace(train=train_state, controls=controls), metrics

    return online.run_online(workdir, init_state=init_state, abstract_state=abstract,
                             iterate=iterate, cfg=cfg, eval_fn=eval_fn, desc="policy gradient",
                             **({} if lora is None else {
                                 "params_of": lambda train: lora.merge(train.params)}))
