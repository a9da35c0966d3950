"""RAFT / rejection-sampling fine-tuning: sample K per prompt, keep the best by a reward, SFT on
the kept samples, repeat (Dong et al. 2023, "RAFT", arXiv 2304.06767; the RSF loop of
Directional Preference Alignment).

Per iteration: rollouts of `num_samples` per prompt, rewards, the best sample of each prompt
(ties: the first), then `epochs` passes of `minibatches` next-token NLL updates on the kept
responses (response tokens only; the prompt is context).
"""

from __future__ import annotations

import time
from typing import Any, Callable, Mapping

import jax.numpy as jnp
import numpy as np

from alignax import ops
from alignax._src.config import recipe_config, resolve_config
from alignax.algorithms import online
from alignax.train import sharding as shd
from alignax.train.optim import make_optimizer
from alignax.types import Rollout

DEFAULTS = dict(
    iterations=10, prompts_per_iteration=16, num_samples=8, max_new_tokens=16,
    temperature=1.0, top_k=0, top_p=1.0, stop_tokens=(), epochs=2, minibatches=1,
    optimizer=dict(name="adamw", learning_rate=1e-4, warmup_steps=0, schedule="constant",
                   clip_norm=1.0, kwargs=dict(weight_decay=0.0)),
    checkpoint_every=10, eval_every=0, log_every=1, progress=True, mesh=None,
)


def default_config(**overrides):
    """The locked config of the recipe (every key with its default), updated by `overrides`."""
    return recipe_config(DEFAULTS, overrides, "RAFT config")


def make_response_nll_loss(apply_fn) -> Callable:
    """Token-mean NLL of the response tokens of a rollout batch (ids, mask, response_mask)."""

    def loss_fn(params, batch, rng):
        del rng
        rmask = batch["response_mask"]
        logps = online.response_logps(apply_fn, params, batch["ids"], batch["mask"],
                                      rmask.shape[1])
        nll = -ops.masked_mean(logps, rmask, axis=None)
        return nll, {"nll": nll}

    return loss_fn


def best_rows(rewards, num_samples: int) -> np.ndarray:
    """Row index of the best sample of each prompt: [G * n] -> [G] (first on ties)."""
    r = np.asarray(rewards).reshape(-1, num_samples)
    return np.argmax(r, axis=1) + np.arange(r.shape[0]) * num_samples


def validate(config: Mapping[str, Any] | None) -> dict:
    """The resolved config (see `default_config`), checked before any work: known keys, value
    types and ranges, the optimizer, and how the best-of-n rows split over minibatches and the
    mesh. Raises ValueError naming the bad key."""
    cfg = resolve_config(DEFAULTS, config, "RAFT config")
    online.check_config(cfg, "RAFT config", rows_per_prompt=1)
    return cfg

def train(config: Mapping[str, Any], workdir: str, *, model, init_params, prompt_ids,
          prompt_mask, reward_fn: Callable[[Rollout], Any],
          eval_fn: Callable | None = None, seed: int = 0) -> dict:
    """Runs RAFT; returns {"params", "metrics", "eval", "history", "state", "resumed_from"}."""
    cfg = validate(config)
    n, per_iter = int(cfg["num_samples"]), int(cfg["prompts_per_iteration"])
    prompt_ids, prompt_mask = online.prompt_pool(prompt_ids, prompt_mask, per_iter)
    place = shd.Placement.from_config(cfg["mesh"])
    reward_fn = online.rewards_where_sampled(reward_fn, place)
    place.check_rows(per_iter, "prompts_per_iteration")
    place.check_rows(per_iter // int(cfg["minibatches"]), "minibatch")
    tx = make_optimizer(cfg["optimizer"], int(cfg["iterations"]) * int(cfg["epochs"])
                        * int(cfg["minibatches"]))
    axes = model.logical_axes(init_params)
    init_state, abstract, train_sharding = online.initial_state(
        place, params=init_params, logical_axes=axes, tx=tx, seed=seed)
    step = online.make_update_step(place, make_response_nll_loss(model.apply), tx,
                                   train_sharding)
    rollout_fn = online.rollout_from_config(model, cfg, n)

    def iterate(state: online.OnlineState, it: int):
        t0 = time.perf_counter()
        rollout, rng = online.iteration_rollout(rollout_fn, state.train.params, prompt_ids,
                                                prompt_mask, seed=seed, it=it,
                                                per_iteration=per_iter, placement=place)
        # [N] on every process
        rewards = np.asarray(place.to_host(jnp.asarray(reward_fn(rollout), jnp.float32)))
        t_rollout = time.perf_counter() - t0
        keep = best_rows(rewards, n)
        batch = {"ids": rollout.ids[keep], "mask": rollout.mask[keep],
                 "response_mask": rollout.response_mask[keep]}
        train_state, metrics, t_update = online.run_updates(
            step, state.train, batch, epochs=cfg["epochs"], num_minibatches=cfg["minibatches"],
            rng=rng, placement=place)
        metrics.update({
            "reward": float(rewards.mean()), "reward_std": float(rewards.std()),
            "reward_kept": float(rewards[keep].mean()),
            "response_length": online.mean_response_length(rollout),
            "time/rollout_s": t_rollout, "time/update_s": t_update,
        })
        return state._replace(train=train_state), metrics

    return online.run_online(workdir, init_state=init_state, abstract_state=abstract,
                             iterate=iterate, cfg=cfg, eval_fn=eval_fn, desc="raft")
