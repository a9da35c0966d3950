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

import numpy as np

from alignax import ops
from alignax.algorithms import online
from alignax._src.config import with_overrides


def default_config(**overrides) -> dict:
    config = dict(
        iterations=10, prompts_per_iteration=16, num_samples=8, max_new_tokens=16,
        temperature=1.0, top_k=0, top_p=1.0, stop_tokens=(), epochs=2, minibatches=1,
        optimizer=dict(name="adamw", learning_rate=1e-4, warmup_steps=0, schedule="constant",
                       clip_norm=1.0, kwargs=dict(weight_decay=0.0)),
        checkpoint_every=10, eval_every=0, log_every=1, mesh=None,
    )
    return with_overrides(config, overrides, "RAFT config keys")


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


def train(config: Mapping[str, Any], workdir: str, *, model, init_params, prompt_ids,
          prompt_mask, reward_fn: Callable[[online.Rollout], Any],
          eval_fn: Callable | None = None, seed: int = 0) -> dict:
    """Runs RAFT; returns {"params", "metrics", "eval", "history", "start_iteration"}."""
    from alignax.train.optim import make_optimizer

    cfg = online.merged_config(default_config, config)
    n, per_iter = int(cfg["num_samples"]), int(cfg["prompts_per_iteration"])
    prompt_ids, prompt_mask = online.prompt_pool(prompt_ids, prompt_mask, per_iter)
    place = online.Placement.from_config(cfg["mesh"])
    place.check_rows(per_iter, "prompts_per_iteration")
    place.check_rows(per_iter // int(cfg["minibatches"]), "minibatch")
    tx = make_optimizer(cfg["optimizer"], int(cfg["iterations"]) * int(cfg["epochs"])
                        * int(cfg["minibatches"]))
    state, step = place.make_state_and_step(init_params, model.logical_axes(init_params), tx,
                                            make_response_nll_loss(model.apply), seed=seed)
    rollout_fn = online.rollout_from_config(model, cfg, n)

    def iterate(state, extra, it):
        t0 = time.perf_counter()
        rollout, rng = online.iteration_rollout(rollout_fn, state.params, prompt_ids,
                                                prompt_mask, seed=seed, it=it,
                                                per_iteration=per_iter, placement=place)
        rewards = np.asarray(reward_fn(rollout), np.float32)
        t_rollout = time.perf_counter() - t0
        keep = best_rows(rewards, n)
        batch = {"ids": rollout.ids[keep], "mask": rollout.mask[keep],
                 "response_mask": rollout.response_mask[keep]}
        state, metrics, t_update = online.run_updates(
            step, state, batch, epochs=cfg["epochs"], num_minibatches=cfg["minibatches"],
            rng=rng, placement=place)
        metrics.update({
            "reward": float(rewards.mean()), "reward_std": float(rewards.std()),
            "reward_kept": float(rewards[keep].mean()),
            "response_length": float(np.asarray(rollout.lengths).mean()),
            "rollout_s": t_rollout, "update_s": t_update,
        })
        return state, extra, metrics

    return online.run_recipe(workdir, state=state, iterate=iterate, cfg=cfg, eval_fn=eval_fn)
