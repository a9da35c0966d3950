"""Supervised fine-tuning (next-token cross-entropy): the reference policy of every method."""

from __future__ import annotations

from typing import Any, Mapping

import jax.numpy as jnp

from alignax.algorithms import common, pretrained
from alignax.data.packing import PACKING_DEFAULTS, check_packing, packed_train_source
from alignax.ops import shift_for_next_token, token_logprobs


def make_sft_loss(apply_fn, *, token_logps: bool = False):
    """Token-mean negative log-likelihood over the whole (global) batch.

        L = -sum_{b,t} m_{b,t} log pi(y_{b,t+1} | y_{b,<=t}) / sum_{b,t} m_{b,t}

    with m_{b,t} = loss_mask[b, t + 1] where t and t + 1 are valid tokens of the same sequence.
    Packed rows (`alignax.data.packing.pack_sequences`: `mask` holds integer segment ids) are
    read the same way: each segment attends only to itself, and the target of a segment's last
    token (the next segment's first token) is masked out (`shift_for_next_token`), so the loss
    is the token mean over exactly the target tokens of the same examples unpadded.

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


DEFAULTS = common.offline_defaults(packing=dict(PACKING_DEFAULTS))


def default_config(**overrides):
    """The locked config of the recipe (every key with its default), updated by `overrides`."""
    return common.offline_config(DEFAULTS, overrides, "SFT config")


def validate(config: Mapping[str, Any] | None) -> dict:
    """The resolved config (see `default_config`), checked before any work: known keys, value
    types and ranges, the optimizer and the mesh. Raises ValueError naming the bad key."""
    config = common.validate_offline(DEFAULTS, config, "SFT config")
    check_packing(config["packing"], "SFT config")
    return config


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

    `packing.enabled` (`alignax.data.packing.PACKING_DEFAULTS`: length, strategy, window) packs
    the examples of `train_source` (fixed-length rows, cut to their valid tokens, or unpadded
    examples with `packing.length` set) into rows of `packing.length` tokens with integer
    segment ids (best-fit decreasing by default, as TRL's `packing=True`); `train.batch_size`
    then counts packed rows. The loss stays the token mean over all target tokens of the batch
    (each example's `loss_mask`: completion-only when it has one), so the update equals the
    unpacked one over the same examples while far fewer pad tokens are computed. Use it when
    example lengths vary a lot (chat data): the speed-up is about 1 / (fraction of real tokens
    in the padded rows).

    Returns:
      See `alignax.algorithms.common.fit_recipe`.
    """
    config = validate(config)
    if config["packing"]["enabled"]:
        train_source = packed_train_source(train_source, config["packing"], "sequence")
    model, init_params = pretrained.recipe_model(config, "lm", init_params=init_params)
    loss_fn = make_sft_loss(model.apply,
                            token_logps=getattr(model.config, "logits_chunk", 0) > 0)
    return common.fit_recipe(config, workdir, model=model, loss_fn=loss_fn,
                             train_source=train_source, seed=seed, init_params=init_params,
                             desc="sft", grad_accum_weight="tokens")
