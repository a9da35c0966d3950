"""Supervised fine-tuning (next-token cross-entropy): the reference policy of every method."""

from __future__ import annotations

from typing import Any, Mapping

import jax
import jax.numpy as jnp

from alignax.algorithms import common
from alignax.ops import shift_for_next_token, token_logprobs
from alignax.train.loop import fit
from alignax.train.optim import make_optimizer


def make_sft_loss(apply_fn):
    """Token-mean negative log-likelihood over the whole (global) batch.

        L = -sum_{b,t} m_{b,t} log pi(y_{b,t+1} | y_{b,<=t}) / sum_{b,t} m_{b,t}
    """

    def loss_fn(params, batch, rng):
        del rng
        ids = batch["input_ids"]
        mask = batch.get("mask", jnp.ones_like(ids, bool))
        loss_mask = batch.get("loss_mask", mask)
        targets, target_mask = shift_for_next_token(ids, loss_mask)
        logps = token_logprobs(apply_fn(params, ids, mask), targets)
        n = jnp.maximum(target_mask.sum(), 1)
        nll = -(logps * target_mask).sum() / n
        return nll, {"nll": nll, "tokens": n.astype(jnp.float32)}

    return loss_fn


def train(config: Mapping[str, Any], workdir: str, *, train_source, seed: int = 0) -> dict:
    """Trains a causal LM on `train_source` sequences.

    Config keys: model (TransformerConfig fields), optimizer (see make_optimizer),
    train.{steps, batch_size, checkpoint_every, log_every}, mesh.

    Returns:
      {"params": params, "model": Model, "metrics": last train metrics}.
    """
    model = common.make_model(config["model"], "lm")
    steps = int(config["train"]["steps"])
    result = fit(
        workdir=workdir,
        loss_fn=make_sft_loss(model.apply),
        tx=make_optimizer(config["optimizer"], steps),
        init_params=model.init,
        logical_axes=model.logical_axes(jax.eval_shape(model.init, jax.random.key(0))),
        rng=jax.random.key(seed),
        data_iter=common.make_iterator(
            train_source, batch_size=int(config["train"]["batch_size"]), seed=seed
        ),
        num_steps=steps,
        mesh=common.mesh_from(config.get("mesh")),
        checkpoint_every=int(config["train"].get("checkpoint_every", 100)),
        log_every=int(config["train"].get("log_every", 1)),
        progress=bool(config["train"].get("progress", True)),
        desc="sft",
    )
    return {"params": result.state.params, "model": model, "metrics": result.metrics,
            "fit": result}
