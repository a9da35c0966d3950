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
- KL placement: `kl_in` "loss" or "reward" (`kl_control`);
- the rollout: one sampled response per prompt (`online.rollout_from_config`), or what
  `train(rollout_fn=)` builds, e.g. multi-turn rollouts with tool calls whose observations are
  attended to but masked from the loss (`alignax.algorithms.tool_rollout`, TRL's
  `max_tool_calling_iterations`).

Config: `default_config()` lists every key with its default; `train` rejects unknown keys.
  iterations, prompts_per_iteration, num_samples, max_new_tokens, temperature, top_k, top_p,
  stop_tokens, advantage (see online.ADVANTAGES, or "brpo"), loss (POLICY_LOSSES: "ppo_clip" |
  "gspo" | "sapo" | "vespo"),
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
  by pi / pi_old), min_p and repetition_penalty (the sampler's, `alignax.sampling.sample`),
  sapo_temperature_pos/neg (loss "sapo": `losses.policy_gradient.sapo_loss`),
  vespo_k_pos/lambda_pos/k_neg/lambda_neg (loss "vespo": `vespo_loss`),
  off_policy_mask_threshold (None, or delta: negative-advantage responses whose mean
  log(pi_old / pi) exceeds it leave the policy term, `off_policy_sequence_mask`),
  adaptive_entropy (None, or {target, min, max, delta}: `entropy_coef` becomes the initial
  value of a coefficient that evolves every update, `kl_control.adaptive_entropy_control`),
  sync_ref (None, or {alpha, steps}: TR-DPO, every `steps` updates the reference moves to
  alpha * policy + (1 - alpha) * reference, `synced_reference`; the reference is then part of
  the checkpointed state).

Memory: with a model of `logits_chunk > 0` the update and the reference forward take token
log-probs from the model (`make_policy_loss(token_logps=True)`) and the entropy comes from the
LM head in vocabulary chunks (`online.head_entropy_fn`): no [N, R, V] logits.

Resume: the whole iteration state (train state, KL coefficient, entropy coefficient,
objective weights and front, a synced reference) is checkpointed by the one training loop;
prompts and sampling keys are functions of (seed, iteration), so a restarted run repeats
exactly the iterations an uninterrupted one would have run.
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
from alignax.algorithms.kl_control import (KL_PLACEMENTS, adaptive_entropy_control,
                                           adaptive_kl_control, kl_penalized_rewards)
from alignax.algorithms.objectives import objective_mixer
from alignax.losses import aggregate, gspo_loss, ppo_clip_loss
from alignax.losses.policy_gradient import off_policy_sequence_mask, sapo_loss, vespo_loss
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
    kl_bias_correction=False, min_p=0.0, repetition_penalty=1.0,
    sapo_temperature_pos=1.0, sapo_temperature_neg=1.05,
    vespo_k_pos=2.0, vespo_lambda_pos=3.0, vespo_k_neg=3.0, vespo_lambda_neg=2.0,
    off_policy_mask_threshold=None, adaptive_entropy=None, sync_ref=None,
)
ADAPTIVE_ENTROPY_KEYS = ("target", "min", "max", "delta")


def default_config(**overrides):
    """The locked config of the recipe (every key with its default), updated by `overrides`."""
    return recipe_config(DEFAULTS, overrides, "policy-gradient config")


POLICY_LOSSES = ("ppo_clip", "gspo", "sapo", "vespo")
# the losses of [B, T] token terms (GSPO's are per sequence)
TOKEN_LOSSES = ("ppo_clip", "sapo", "vespo")


def make_policy_loss(apply_fn, *, loss: str = "ppo_clip", clip_low: float = 0.2,
                     clip_high: float | None = None, kl_estimator: str = "k3",
                     aggregation: str = "token_mean", entropy_coef: float = 0.0,
                     max_length: int | None = None, token_logps: bool = False,
                     entropy_fn: Callable | None = None, delta: float | None = None,
                     top_entropy_quantile: float = 1.0,
                     kl_bias_correction: bool = False, loss_kwargs: Mapping | None = None,
                     off_policy_mask_threshold: float | None = None,
                     dynamic_entropy_coef: bool = False) -> Callable:
    """`loss_fn(params, batch, rng, kl_coef=0.0[, entropy_coef_now])` of the policy update on
    a `training_batch`.

    loss = aggregate(token losses of PPO-clip / SAPO / VESPO) [or the mean of GSPO's sequence
           losses]
           + kl_coef * aggregate(KL estimate to the reference)   (KL in the loss, GRPO style)
           - entropy_coef * aggregate(entropy)

    `loss` picks the policy term: "ppo_clip" (`ppo_clip_loss`), "gspo" (`gspo_loss`), "sapo"
    (`sapo_loss`: a soft sigmoid gate instead of the clip) or "vespo" (`vespo_loss`: the
    policy gradient weighted by a gamma function of the sequence ratio); `loss_kwargs` are the
    SAPO / VESPO keywords (temperature_pos/neg; k_pos, lambda_pos, k_neg, lambda_neg).
    `off_policy_mask_threshold` delta multiplies the policy term of each response by
    `off_policy_sequence_mask` (0 for a negative advantage whose mean log(pi_old / pi) over
    its tokens exceeds delta; DeepSeek-V3.2), with the batch's `old_logps` as the behaviour
    policy (the sampler's own log-probs).
    `dynamic_entropy_coef=True` (adaptive entropy control) takes the entropy coefficient as
    the step argument `entropy_coef_now` after `kl_coef` (a scalar array, so it evolves without
    recompiling; `entropy_coef` here is then unused) and reports `entropy_active`, the mean
    entropy of the tokens the policy term acts on (those the entropy-quantile mask keeps),
    which `kl_control.adaptive_entropy_control` measures.

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
    loss_kwargs = dict(loss_kwargs or {})
    if loss_kwargs and loss not in ("sapo", "vespo"):
        raise ValueError(f"loss_kwargs are SAPO's / VESPO's; loss {loss!r} takes none")
    if loss == "sapo" and min(loss_kwargs.get("temperature_pos", 1.0),
                              loss_kwargs.get("temperature_neg", 1.0)) <= 0:
        raise ValueError(f"sapo temperatures must be > 0, got {loss_kwargs}")
    if off_policy_mask_threshold is not None and off_policy_mask_threshold < 0:
        raise ValueError(f"off_policy_mask_threshold must be >= 0, got "
                         f"{off_policy_mask_threshold}")
    if delta is not None and loss in ("sapo", "vespo"):
        raise ValueError(f"delta caps the clipped ratio of 'ppo_clip'; loss {loss!r} has none")
    entropy_grad = bool(entropy_coef) or dynamic_entropy_coef
    if token_logps and entropy_grad and entropy_fn is None:
        raise ValueError(f"entropy_coef={entropy_coef} with token_logps needs an entropy_fn "
                         "(online.head_entropy_fn) or the logits (logits_chunk=0)")
    if not 0.0 < top_entropy_quantile <= 1.0:
        raise ValueError(f"top_entropy_quantile must lie in (0, 1], got {top_entropy_quantile}")
    entropy_mask = top_entropy_quantile < 1.0
    if entropy_mask and token_logps and entropy_fn is None:
        raise ValueError("top_entropy_quantile < 1 with token_logps needs an entropy_fn")
    if entropy_mask and loss not in TOKEN_LOSSES:
        raise ValueError(f"top_entropy_quantile masks token losses: loss must be one of "
                         f"{TOKEN_LOSSES}")
    if delta is not None and delta <= 1.0 + (clip_low if clip_high is None else clip_high):
        raise ValueError(f"delta={delta} must exceed 1 + clip_high")

    def loss_fn(params, batch, rng, kl_coef=0.0, entropy_coef_now=None):
        del rng
        ent_coef = (entropy_coef_now if dynamic_entropy_coef and entropy_coef_now is not None
                    else (0.0 if dynamic_entropy_coef else entropy_coef))
        rmask = batch["response_mask"]
        r = rmask.shape[1]
        entropy = None
        if token_logps and entropy_fn is not None:
            logps, entropy = online.response_logps_entropy(
                apply_fn, params, batch["ids"], batch["mask"], r, entropy_fn,
                differentiable=entropy_grad)
        elif token_logps:
            logps = online.response_logps(apply_fn, params, batch["ids"], batch["mask"], r,
                                          token_logps=True)
        else:
            logits = online.response_logits(apply_fn, params, batch["ids"], batch["mask"], r)
            logps = ops.token_logprobs(logits, batch["ids"][:, -r:])
            entropy = ops.token_entropy(logits)
        adv = batch["advantages"]
        metrics = {}
        keep_seq = None
        if off_policy_mask_threshold is not None:
            keep_seq = off_policy_sequence_mask(logps, batch["old_logps"], adv, rmask,
                                                threshold=off_policy_mask_threshold)
            metrics["off_policy_masked"] = 1.0 - keep_seq.mean()
        active = rmask  # the tokens the policy term acts on (adaptive entropy measures them)
        if loss in TOKEN_LOSSES:
            if loss == "ppo_clip":
                tok, stats = ppo_clip_loss(logps, batch["old_logps"], adv, rmask,
                                           clip_low=clip_low, clip_high=clip_high, delta=delta)
                metrics["clip_fraction"] = ops.masked_mean(stats["clipped"], rmask, axis=None)
            elif loss == "sapo":
                tok, stats = sapo_loss(logps, batch["old_logps"], adv, rmask, **loss_kwargs)
                metrics["sapo_gate"] = ops.masked_mean(stats["gate"], rmask, axis=None)
            else:
                tok, stats = vespo_loss(logps, batch["old_logps"], adv, rmask, **loss_kwargs)
                metrics["vespo_phi"] = stats["phi"].mean()
            if keep_seq is not None:
                tok = tok * (keep_seq[:, None] if keep_seq.ndim == 1 else keep_seq)
            if entropy_mask:
                keep = high_entropy_mask(jax.lax.stop_gradient(entropy), rmask,
                                         top_entropy_quantile)
                tok, active = tok * keep, keep
            pg = aggregate(tok, rmask, aggregation, max_length=max_length)
            ratio = (stats["ratio"].mean() if loss == "vespo"  # VESPO's ratio is per sequence
                     else ops.masked_mean(stats["ratio"], rmask, axis=None))
        else:
            seq, stats = gspo_loss(logps, batch["old_logps"], adv, rmask,
                                   **({} if clip_high is None else {"clip_high": clip_high}),
                                   clip_low=clip_low)
            if keep_seq is not None:
                seq = seq * keep_seq
            pg = seq.mean()
            metrics["clip_fraction"], ratio = stats["clipped"].mean(), stats["ratio"].mean()
        total = pg
        metrics.update({"pg_loss": pg, "ratio": ratio,
                        "advantage_mean": adv.mean(), "advantage_std": adv.std(),
                        "tokens": jnp.asarray(rmask, jnp.float32).sum()})
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
            if dynamic_entropy_coef:
                metrics["entropy_active"] = ops.masked_mean(jax.lax.stop_gradient(entropy),
                                                            active, axis=None)
            if entropy_grad:
                total = total - ent_coef * aggregate(entropy, rmask, aggregation,
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

    - a token loss (PPO-clip, SAPO, VESPO) with "token_mean": "tokens" (every term is a sum
      over the minibatch's response tokens / their count; a micro-batch weighs by its token
      count);
    - every "seq_mean_*" aggregation: None (means over rows; micro-batches hold equally many);
    - GSPO with "token_mean" and a KL in the loss mixes a row mean (GSPO) with a token mean
      (the KL): None, exact for the GSPO term, and for the KL only when the micro-batches hold
      equally many response tokens.

    The token-mean metrics (kl, clip_fraction, ratio, entropy) are exact with "tokens" and
    micro-batch means otherwise; advantage_mean/std are micro-batch statistics averaged.
    """
    return "tokens" if loss in TOKEN_LOSSES and aggregation == "token_mean" else None


def synced_reference(ref, params, step, *, alpha: float, every: int):
    """TR-DPO's soft reference update after an optimizer update: every `every`-th update
    (`step`, the update count after it, a multiple of `every`)

        ref <- alpha * params + (1 - alpha) * ref      (in float32, cast back to ref's dtypes)

    else ref unchanged. Gorbatovski et al. 2024, "Learn Your Reference Model for Real Good
    Alignment" (arXiv 2404.09656); TRL's sync_ref_model / ref_model_mixup_alpha /
    ref_model_sync_steps (SyncRefModelCallback, on the step end of global steps that are
    multiples of ref_model_sync_steps). Jittable; `step` an int scalar array."""

    def mix(q, p):
        return jax.tree.map(lambda a, b: (alpha * b.astype(jnp.float32) + (1.0 - alpha)
                                          * a.astype(jnp.float32)).astype(a.dtype), q, p)

    return jax.lax.cond(jnp.asarray(step) % every == 0, mix, lambda q, p: q, ref, params)


def check_sync_ref(sync: Mapping[str, Any], label: str) -> tuple[float, int]:
    """(alpha, steps) of a `sync_ref` config value {alpha, steps}; ValueError naming `label`."""
    if not isinstance(sync, Mapping) or set(sync) != {"alpha", "steps"}:
        raise ValueError(f"{label}: sync_ref is {{alpha, steps}}, got {sync!r}")
    alpha, steps = float(sync["alpha"]), sync["steps"]
    if not 0.0 < alpha <= 1.0 or isinstance(steps, bool) or int(steps) != steps or steps < 1:
        raise ValueError(f"{label}: sync_ref needs 0 < alpha <= 1 and an int steps >= 1, "
                         f"got {dict(sync)}")
    return alpha, int(steps)


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
    if not 0.0 <= float(cfg["min_p"]) <= 1.0:
        raise ValueError(f"{label}: min_p must lie in [0, 1], got {cfg['min_p']}")
    if float(cfg["repetition_penalty"]) <= 0:
        raise ValueError(f"{label}: repetition_penalty must be > 0, got "
                         f"{cfg['repetition_penalty']}")
    if cfg["sync_ref"] is not None:
        check_sync_ref(cfg["sync_ref"], label)
        if cfg["lora"]:
            raise ValueError(f"{label}: sync_ref moves the reference; with LoRA the reference "
                             "is the frozen base")
        if not (float(cfg["kl_coef"]) > 0 or cfg["kl_target"] is not None):
            raise ValueError(f"{label}: sync_ref with kl_coef=0 (no reference in use)")
    try:
        entropy_control(cfg)
        make_policy_loss(None, loss=cfg["loss"], clip_low=float(cfg["clip_low"]),
                         clip_high=None if cfg["clip_high"] is None else float(cfg["clip_high"]),
                         delta=None if cfg["delta"] is None else float(cfg["delta"]),
                         top_entropy_quantile=float(cfg["top_entropy_quantile"]),
                         loss_kwargs=loss_kwargs(cfg),
                         off_policy_mask_threshold=_optional_float(
                             cfg["off_policy_mask_threshold"]))
    except ValueError as e:
        raise ValueError(f"{label}: {e}") from None
    return cfg


def _optional_float(x):
    return None if x is None else float(x)


def loss_kwargs(cfg: Mapping[str, Any]) -> dict[str, float]:
    """The keywords of a config's SAPO / VESPO loss (`sapo_loss` / `vespo_loss`); {} for the
    other losses."""
    if cfg["loss"] == "sapo":
        return {"temperature_pos": float(cfg["sapo_temperature_pos"]),
                "temperature_neg": float(cfg["sapo_temperature_neg"])}
    if cfg["loss"] == "vespo":
        return {name: float(cfg[f"vespo_{name}"])
                for name in ("k_pos", "lambda_pos", "k_neg", "lambda_neg")}
    return {}


def entropy_control(cfg: Mapping[str, Any]):
    """The config's `kl_control.adaptive_entropy_control` (initial coefficient `entropy_coef`),
    or None without `adaptive_entropy`."""
    ae = cfg["adaptive_entropy"]
    if ae is None:
        return None
    if not isinstance(ae, Mapping) or set(ae) != set(ADAPTIVE_ENTROPY_KEYS):
        raise ValueError(f"adaptive_entropy is {{{', '.join(ADAPTIVE_ENTROPY_KEYS)}}}, got {ae!r}")
    return adaptive_entropy_control(float(cfg["entropy_coef"]), target=float(ae["target"]),
                                    coef_min=float(ae["min"]), coef_max=float(ae["max"]),
                                    delta=float(ae["delta"]))

def train(config: Mapping[str, Any], workdir: str, *, model, init_params, ref_params,
          prompt_ids: np.ndarray, prompt_mask: np.ndarray,
          reward_fn: Callable[[Rollout], Any] | None = None,
          eval_fn: Callable | None = None, seed: int = 0,
          advantage_fn: AdvantageFn | None = None,
          difficulty_fn: Callable | None = None, judge_fn: Callable | None = None,
          reward_state: Any = None, rollout_fn: Callable | None = None) -> dict:
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
      rollout_fn: builds the iteration's rollout: `rollout_fn(model, cfg, num_samples) ->
        rollout(params, prompt_ids, prompt_mask, rng) -> Rollout` (called once, with the
        LoRA-adapted model under `lora` and the resolved config); default
        `online.rollout_from_config` (one sampled response per prompt). E.g.
        `tool_rollout.tool_rollout_from_config(env_fn, tokenizer, ...)`: multi-turn rollouts
        with tool calls, whose observation tokens are in `ids` / `mask` but not in
        `response_mask`, so they get no gradient and no KL. Its rollouts must have
        R = `max_new_tokens` response columns (ValueError otherwise).
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
    if place.multiprocess and (judge_fn is not None or difficulty_fn is not None):
        # they read the whole rollout on the host; on several processes each holds its rows only
        raise NotImplementedError(
            "judge_fn (BRPO) and difficulty_fn (GRPO-S) run in one process; this job has "
            f"{jax.process_count()} processes")
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
    ent_control = entropy_control(cfg)
    if ent_control is not None:
        controls["entropy"] = ent_control.init()
    sync = None if cfg["sync_ref"] is None else check_sync_ref(cfg["sync_ref"], "sync_ref")
    if reward_state is not None:
        if reward_fn is None:
            raise ValueError("reward_state needs a reward_fn(rollout, state) -> (rewards, state)")
        controls["reward"] = jax.tree.map(jnp.asarray, reward_state)
    if mixer is not None:
        controls["objectives"] = mixer.init()
    init_state, abstract, train_sharding = online.initial_state(
        place, params=init_params, logical_axes=axes, tx=tx, seed=seed, controls=controls,
        with_ref=sync is not None)
    sync_fn = None
    if sync is not None:  # TR-DPO: the reference is state, starting from ref_params
        fresh_state = init_state
        init_state = lambda: fresh_state()._replace(  # noqa: E731
            ref=jax.tree.map(jnp.copy, ref_params))
        sync_fn = jax.jit(lambda ref, params, step: synced_reference(
            ref, params, step, alpha=sync[0], every=sync[1]), donate_argnums=0)
    clip_high = None if cfg["clip_high"] is None else float(cfg["clip_high"])
    token_logps = online.uses_token_logps(model)
    loss_fn = make_policy_loss(
        model.apply, loss=cfg["loss"], clip_low=float(cfg["clip_low"]), clip_high=clip_high,
        kl_estimator=cfg["kl_estimator"], aggregation=cfg["aggregation"],
        entropy_coef=float(cfg["entropy_coef"]), max_length=int(cfg["max_new_tokens"]),
        token_logps=token_logps, entropy_fn=online.head_entropy_fn(model),
        delta=None if cfg["delta"] is None else float(cfg["delta"]),
        top_entropy_quantile=float(cfg["top_entropy_quantile"]),
        kl_bias_correction=bool(cfg["kl_bias_correction"]), loss_kwargs=loss_kwargs(cfg),
        off_policy_mask_threshold=_optional_float(cfg["off_policy_mask_threshold"]),
        dynamic_entropy_coef=ent_control is not None)
    num_scalars = 1 + (ent_control is not None)  # kl_coef [, entropy coefficient]
    frozen_shardings = None
    if lora is not None:
        loss_fn = online.lora_loss(loss_fn, lora.cfg)
        if place.mesh is not None:
            frozen_shardings = [lora.base_shardings] + [shd.replicated(place.mesh)] * num_scalars
    step = online.make_update_step(
        place, loss_fn, tx, train_sharding, num_frozen=num_scalars + (lora is not None),
        frozen_shardings=frozen_shardings, accum_steps=int(cfg["grad_accum_steps"]),
        accum_weight=policy_accum_weight(cfg["loss"], cfg["aggregation"]))
    objective_gradients = None
    if mixer is not None and mixer.weighting == "gradient":
        objective_gradients = _objective_gradients(make_policy_loss(
            model.apply, loss=cfg["loss"], clip_low=float(cfg["clip_low"]),
            aggregation=cfg["aggregation"], max_length=int(cfg["max_new_tokens"]),
            token_logps=token_logps, loss_kwargs=loss_kwargs(cfg)))
    build_rollout = online.rollout_from_config if rollout_fn is None else rollout_fn
    rollout_fn = build_rollout(model if lora is None else lora.model, cfg, n)
    check_rollout = build_rollout is not online.rollout_from_config
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
        if check_rollout and rollout.response_len != int(cfg["max_new_tokens"]):
            raise ValueError(f"policy-gradient config: max_new_tokens={cfg['max_new_tokens']} "
                             f"but rollout_fn's rollouts have {rollout.response_len} response "
                             "tokens")
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
        reference = state.ref if sync is not None else ref_params
        ref_logps = ref_logps_fn(reference, rollout.ids, rollout.mask) if use_ref else None
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
            # the scalar leaves of the reward's state after this iteration (e.g. a Lagrange
            # multiplier and its cost estimate) are logged, so their curves are in metrics.jsonl
            for path, leaf in jax.tree_util.tree_leaves_with_path(controls["reward"]):
                if jnp.ndim(leaf) == 0:
                    name = jax.tree_util.keystr(path, simple=True, separator="/")
                    metrics["reward_state" + (f"/{name}" if name else "")] = float(leaf)
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
        ent_state = state.controls.get("entropy")

        def update(st, mb):
            # the entropy controller and the synced reference move after every update
            nonlocal ent_state, reference
            scalars = (kl_coef,) if ent_control is None else (
                kl_coef, ent_control.applied(ent_state))
            st, m = step(st, mb, *frozen, *scalars)
            if ent_control is not None:
                ent_state = ent_control.update(ent_state, m["entropy_active"])
            if sync_fn is not None:
                reference = sync_fn(reference, st.params, st.step)
            return st, m

        train_state, update_metrics, t_update = online.run_updates(
            update, state.train, online.training_batch(rollout, adv, ref_logps=ref_logps),
            epochs=cfg["epochs"], num_minibatches=cfg["minibatches"], rng=rng,
            placement=place)
        metrics.update(update_metrics)
        if ent_control is not None:
            controls["entropy"] = ent_state
            metrics["entropy_coef"] = float(ent_state.coef)
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
        new = state._replace(train=train_state, controls=controls)
        return (new if sync is None else new._replace(ref=reference)), metrics

    return online.run_online(workdir, init_state=init_state, abstract_state=abstract,
                             iterate=iterate, cfg=cfg, eval_fn=eval_fn, desc="policy gradient",
                             **({} if lora is None else {
                                 "params_of": lambda train: lora.merge(train.params)}))
