"""Supervised fine-tuning (next-token cross-entropy): the reference policy of every method."""

from __future__ import annotations

from typing import Any, Mapping

import jax.numpy as jnp

from alignax.algorithms import common, pretrained
from alignax.ops import shift_for_next_token, token_logprobs


def make_sft_loss(apply_fn, *, token_logps: bool = False):
    """Token-mean negative log-likelihood over the whole (global) batch.

        L = -sum_{b,t} m_{b,t} log pi(y_{b,t+1} | y_{b,<=t}) / sum_{b,t} m_{b,t}

    `token_logps=True`: `apply_fn(params, ids, mask, targets=targets)` returns the token
    log-probs [B, T] itself (an alignax causal LM with `logits_chunk > 0` computes them in
    vocabulary chunks, never forming the [B, T, V] logits); same values and gradients.
    """

    def loss_fn(params, batch, rng):
        del rng
        ids = batch["input_ids"]
        mask = batch.get("mask", jnp.ones_like(ids, bool))
        loss_mask = batch.get("loss_mask", mask)
        targets, target_mask = shift_for_next_token(ids, loss_mask, mask)
        if token_logps:
            logps = apply_fn(params, ids, mask, targets=targets)
        else:
            logps = token_logprobs(apply_fn(params, ids, mask), targets)
        n = jnp.maximum(target_mask.sum(), 1)
        nll = -(logps * target_mask).sum() / n
        return nll, {"nll": nll, "tokens": n.astype(jnp.float32)}

    return loss_fn


DEFAULTS = common.offline_defaults()


def default_config(**overrides):
    """The locked config of the recipe (every key with its default), updated by `overrides`."""
    return common.offline_config(DEFAULTS, overrides, "SFT config")


def validate(config: Mapping[str, Any] | None) -> dict:
    """The resolved config (see `default_config`), checked before any work: known keys, value
    types and ranges, the optimizer and the mesh. Raises ValueError naming the bad key."""
    return common.validate_offline(DEFAULTS, config, "SFT config")


def train(config: Mapping[str, Any], workdir: str, *, train_source, seed: int = 0,
          init_params=None) -> dict:
    """Trains a causal LM on `train_source` sequences.

    Config keys (`default_config()`): model (TransformerConfig fields), optimizer (see
    make_optimizer), train.{steps, batch_size, grad_accum_steps, checkpoint_every, eval_every,
    log_every, progress}, mesh, lora. Unknown keys are an error. With `model.logits_chunk > 0`
    the loss asks the model for token log-probs (chunked over the vocabulary) instead of
    logits. Accumulated micro-batches are weighted by their target-token counts, so the update
    equals the whole batch's token mean. `init_params` (e.g. an imported checkpoint's params)
    starts training from them instead of a random init; LoRA (`lora={rank, alpha, ...}`) needs
    them: it trains adapters on that frozen base. `model.path` (an HF checkpoint folder,
    `alignax.algorithms.pretrained`) starts from the checkpoint instead (not with init_params).

    Returns:
      See `alignax.algorithms.common.fit_recipe`.
    """
    config = validate(config)
    model, init_params = pretrained.recipe_model(config, "lm", init_params=init_params)
    loss_fn = make_sft_loss(model.apply,
                            token_logps=getattr(model.config, "logits_chunk", 0) > 0)
    return common.fit_recipe(config, workdir, model=model, loss_fn=loss_fn,
                             train_source=train_source, seed=seed, init_params=init_params,
                             desc="sft", grad_accum_weight="tokens")
