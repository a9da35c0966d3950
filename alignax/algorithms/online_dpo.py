"""Online and iterative DPO: the policy samples, a judge ranks, DPO trains on the fresh pairs.

Per iteration: `num_samples` >= 2 responses per prompt from the current policy; a judge scores
them, either `reward_fn` (a reward model, a verifier, a gold oracle) or the policy's own implicit
reward beta log(pi / pi_ref) ("implicit": self-rewarding, as in Yuan et al. 2024 and CREAM);
the best and the worst response of each prompt form a pair (prompts whose scores all tie are
skipped), and `epochs` x `minibatches` updates of the same direct loss wrapper as the offline
recipe (`direct.make_direct_loss`, with the reference log-probs computed at rollout time)
follow (Guo et al. 2024, "Direct Language Model Alignment from Online AI Feedback",
arXiv 2402.04792; Xiong et al. 2024, iterative DPO).
With `ref_update_every` = k > 0 the reference becomes the current policy every k iterations
(iterative DPO rounds). The reference is part of the checkpointed iteration state, so a run
resumed mid-round continues that round against the same reference, exactly as an uninterrupted
run would.

Memory levers: with a policy of `logits_chunk > 0` the update (`make_direct_loss(token_logps=
True)`) and the reference forward take token log-probs from the model: no [2B, R, V] logits.
`grad_accum_steps` = k splits each minibatch of pairs into k micro-batches of pairs inside the
step (one update; the pairs per minibatch must divide by k); micro-batches are weighed by
their valid (untied) pairs ("pairs"), so the update equals the whole minibatch's.
`lora` = {rank, alpha, targets, dropout, full} (`alignax.models.lora.LoraConfig`) trains
adapters on the frozen `init_params`, which are also the reference (`ref_params` is then not
used; `ref_update_every` must be 0: a refreshed reference would be a second full copy); the
rollouts run the adapted model and the result's "params" are merged.
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
from alignax.algorithms.direct import loss_beta, make_direct_loss
from alignax.train import sharding as shd
from alignax.train.optim import make_optimizer
from alignax.types import Rollout

DEFAULTS = dict(
    iterations=10, prompts_per_iteration=16, num_samples=4, max_new_tokens=16,
    temperature=1.0, top_k=0, top_p=1.0, stop_tokens=(), judge="reward_fn",
    loss="dpo", loss_kwargs=dict(beta=0.1), ref_update_every=0, epochs=1, minibatches=1,
    grad_accum_steps=1, lora=None,
    optimizer=dict(name="adamw", learning_rate=1e-5, warmup_steps=0, schedule="constant",
                   clip_norm=1.0, kwargs=dict(weight_decay=0.0)),
    checkpoint_every=10, eval_every=0, log_every=1, progress=True, mesh=None,
)


def default_config(**overrides):
    """The locked config of the recipe (every key with its default), updated by `overrides`."""
    return recipe_config(DEFAULTS, overrides, "online-DPO config")


def pick_pairs(scores, num_samples: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(chosen rows, rejected rows, valid [G]): best and worst sample of each prompt; a prompt
    whose scores all tie is not valid."""
    s = np.asarray(scores, np.float64).reshape(-1, num_samples)
    offset = np.arange(s.shape[0]) * num_samples
    best, worst = np.argmax(s, axis=1), np.argmin(s, axis=1)
    return best + offset, worst + offset, s.max(axis=1) > s.min(axis=1)


def validate(config: Mapping[str, Any] | None) -> dict:
    """The resolved config (see `default_config`), checked before any work: known keys, value
    types and ranges, the judge and loss names, the optimizer, and how the pairs split over
    minibatches and the mesh. Raises ValueError naming the bad key."""
    from alignax.algorithms import common

    label = "online-DPO config"
    cfg = resolve_config(DEFAULTS, config, label)
    if int(cfg["num_samples"]) < 2:
        raise ValueError(f"{label}: num_samples={cfg['num_samples']} must be >= 2 (a pair per "
                         "prompt)")
    common.check_name(cfg["judge"], ("reward_fn", "implicit"), label, "judge")
    loss_beta(cfg["loss"], cfg["loss_kwargs"])  # a known direct loss with a beta
    online.check_config(cfg, label, rows_per_prompt=1)
    if cfg["lora"] and int(cfg["ref_update_every"]):
        raise ValueError(f"{label}: lora needs ref_update_every=0 (the frozen base is the "
                         "reference)")
    return cfg

def train(config: Mapping[str, Any], workdir: str, *, model, init_params, ref_params,
          prompt_ids, prompt_mask, reward_fn: Callable[[Rollout], Any] | None = None,
          eval_fn: Callable | None = None, seed: int = 0) -> dict:
    """Runs online DPO; returns {"params", "metrics", "eval", "history", "state",
    "resumed_from"}."""
    cfg = validate(config)
    n, per_iter = int(cfg["num_samples"]), int(cfg["prompts_per_iteration"])
    if n < 2:
        raise ValueError("online DPO needs num_samples >= 2")
    if cfg["judge"] not in ("reward_fn", "implicit"):
        raise ValueError(f"judge must be 'reward_fn' or 'implicit', got {cfg['judge']!r}")
    if cfg["judge"] == "reward_fn" and reward_fn is None:
        raise ValueError("judge='reward_fn' needs a reward_fn")
    prompt_ids, prompt_mask = online.prompt_pool(prompt_ids, prompt_mask, per_iter)
    place = shd.Placement.from_config(cfg["mesh"])
    reward_fn = online.rewards_where_sampled(reward_fn, place)
    place.check_rows(per_iter, "prompts_per_iteration")
    place.check_rows(per_iter // int(cfg["minibatches"]), "minibatch (pairs)")
    beta = loss_beta(cfg["loss"], cfg["loss_kwargs"])
    tx = make_optimizer(cfg["optimizer"], int(cfg["iterations"]) * int(cfg["epochs"])
                        * int(cfg["minibatches"]))
    axes = model.logical_axes(init_params)
    every = int(cfg["ref_update_every"])
    lora = None
    if cfg["lora"]:
        lora = online.online_lora(model, cfg["lora"], place, init_params, axes, seed)
        ref_params, init_params, axes = lora.base, lora.adapters, lora.axes
    init_state, abstract, train_sharding = online.initial_state(
        place, params=init_params, logical_axes=axes, tx=tx, seed=seed, with_ref=every > 0)
    token_logps = online.uses_token_logps(model)
    loss_fn = with_pair_count(make_direct_loss(model.apply, cfg["loss"], cfg["loss_kwargs"],
                                               token_logps=token_logps))
    if lora is not None:
        loss_fn = online.lora_loss(loss_fn, lora.cfg)
    step = online.make_update_step(
        place, loss_fn, tx, train_sharding, num_frozen=int(lora is not None),
        frozen_shardings=None if lora is None or place.mesh is None else [lora.base_shardings],
        accum_steps=int(cfg["grad_accum_steps"]), accum_weight="pairs")
    frozen = () if lora is None else (lora.base,)
    policy_of = (lambda p: p) if lora is None else lora.policy
    rollout_fn = online.rollout_from_config(model if lora is None else lora.model, cfg, n)
    logps_fn = online.make_reference_logps(model.apply, int(cfg["max_new_tokens"]),
                                           token_logps=token_logps)
    if every:
        frozen_ref = None
    elif lora is not None:
        frozen_ref = lora.base
    else:
        frozen_ref = place.put_params(ref_params, axes)
    copy = jax.jit(lambda tree: jax.tree.map(jnp.copy, tree))

    def iterate(state: online.OnlineState, it: int):
        if every and it > 0 and it % every == 0:  # a new round: the policy becomes the reference
            state = state._replace(ref=copy(state.train.params))
        ref = state.ref if every else frozen_ref
        t0 = time.perf_counter()
        rollout, rng = online.iteration_rollout(rollout_fn, policy_of(state.train.params),
                                                prompt_ids, prompt_mask, seed=seed, it=it,
                                                per_iteration=per_iter, placement=place)
        ref_seq = ops.masked_sum(logps_fn(ref, rollout.ids, rollout.mask),
                                 rollout.response_mask)
        if cfg["judge"] == "implicit":
            scores = beta * (ops.masked_sum(rollout.old_logps, rollout.response_mask) - ref_seq)
        else:
            scores = jnp.asarray(reward_fn(rollout), jnp.float32)
        scores = np.asarray(place.to_host(scores), np.float32)  # [N] on every process
        t_rollout = time.perf_counter() - t0
        chosen, rejected, valid = pick_pairs(scores, n)
        both = np.concatenate([chosen, rejected])
        batch = {"ids": rollout.ids[both], "mask": rollout.mask[both],
                 "response_mask": rollout.response_mask[both], "ref_logps": ref_seq[both],
                 "weight": jnp.asarray(valid, jnp.float32)}
        train_state, metrics, t_update = online.run_updates(
            lambda st, mb: step(st, mb, *frozen), state.train, batch, epochs=cfg["epochs"],
            num_minibatches=cfg["minibatches"], rng=rng, split=_pair_minibatches, placement=place)
        metrics.update({
            "score": float(scores.mean()), "score_gap": float(
                (scores[chosen] - scores[rejected])[valid].mean()) if valid.any() else 0.0,
            "valid_pairs": float(valid.mean()),
            "response_length": online.mean_response_length(rollout),
            "time/rollout_s": t_rollout, "time/update_s": t_update,
        })
        return state._replace(train=train_state), metrics

    return online.run_online(workdir, init_state=init_state, abstract_state=abstract,
                             iterate=iterate, cfg=cfg, eval_fn=eval_fn, desc="online dpo",
                             **({} if lora is None else {
                                 "params_of": lambda train: lora.merge(train.params)}))


def with_pair_count(loss_fn: Callable) -> Callable:
    """`loss_fn` (a direct loss: a mean over the batch's pairs weighted by `weight` [B],
    sum_i w_i l_i / max(sum_i w_i, 1)) that also reports the metric "pairs" = sum_i w_i, its
    normaliser: gradient accumulation weighs micro-batches by it
    (`make_train_step(accum_weight="pairs")`), so k micro-batches give the whole minibatch's
    gradient whatever their share of tied (weight 0) pairs. The weights are 0/1, so a
    micro-batch's sum is 0 or >= 1 and the clamp changes nothing."""

    def wrapped(params, batch, rng, *args, **kwargs):
        loss, metrics = loss_fn(params, batch, rng, *args, **kwargs)
        w = batch["weight"] if "weight" in batch else jnp.ones((batch["ids"].shape[0] // 2,))
        return loss, {**metrics, "pairs": jnp.asarray(w, jnp.float32).sum()}

    return wrapped


def _pair_minibatches(batch, num_minibatches: int, rng):
    """Minibatches that keep each pair's chosen (row i) and rejected (row B + i) together."""
    b = batch["weight"].shape[0]
    if b % num_minibatches:
        raise ValueError(f"{b} pairs do not split into {num_minibatches} minibatches")
    out = []
    for idx in rng.permutation(b).reshape(num_minibatches, -1):
        rows = np.concatenate([idx, idx + b])
        out.append({k: (v[idx] if k == "weight" else v[rows]) for k, v in batch.items()})
    return out
