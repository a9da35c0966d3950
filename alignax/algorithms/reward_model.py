"""Reward-model training on preference pairs with a pairwise loss (Bradley-Terry by default)."""

from __future__ import annotations

from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from alignax.algorithms import common, pretrained
from alignax.data.packing import PACKING_DEFAULTS, check_packing, packed_train_source
from alignax.eval.metrics import expected_calibration_error
from alignax.losses import REWARD_LOSSES, pairwise_accuracy


def pair_rewards(apply_fn, params, batch) -> tuple[jax.Array, jax.Array]:
    """Rewards of chosen and rejected sequences, one forward over the 2B stacked rows."""
    ids = jnp.concatenate([batch["chosen_ids"], batch["rejected_ids"]], axis=0)
    mask = jnp.concatenate([batch["chosen_mask"], batch["rejected_mask"]], axis=0)
    rewards = apply_fn(params, ids, mask)
    b = batch["chosen_ids"].shape[0]
    return rewards[:b], rewards[b:]


def packed_pair_rewards(apply_fn, params, batch) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Rewards of the pairs packed in rows (`alignax.data.packing.pack_pairs`), one forward.

    Each row holds several pairs, pair j's chosen and rejected as segments 2j + 1, 2j + 2 of the
    integer segment-id `mask`; the reward model is read at each segment's last token
    (`ScalarRewardModel`'s `reward_positions`), which equals the reward of that sequence alone
    in a padded row (segments attend only to themselves, positions restart per segment).

    Args:
      apply_fn: reward model apply taking `reward_positions` ([B, S'] -> rewards [B, S']).
      params: its params.
      batch: `input_ids`, `mask` [B, T] int; `chosen_end`, `rejected_end` [B, S] int (-1: no
        pair in that slot).

    Returns:
      (chosen [B*S], rejected [B*S] float32 rewards, valid [B*S] float32: 1 where a pair is).
    """
    chosen_end, rejected_end = batch["chosen_end"], batch["rejected_end"]
    s = chosen_end.shape[1]
    positions = jnp.concatenate([chosen_end, rejected_end], axis=1)  # [B, 2S]
    rewards = apply_fn(params, batch["input_ids"], batch["mask"], reward_positions=positions)
    valid = (chosen_end >= 0).reshape(-1).astype(jnp.float32)
    return rewards[:, :s].reshape(-1), rewards[:, s:].reshape(-1), valid


def make_reward_loss(apply_fn, loss: str = "bradley_terry", loss_kwargs=None) -> Callable:
    """`loss_fn(params, batch, rng)` = mean over pairs of `REWARD_LOSSES[loss]`.

    A batch of packed rows (it has `chosen_end`: `alignax.data.packing.pack_pairs`) is scored
    with `packed_pair_rewards`; the loss and metrics are then means over the batch's valid pairs
    (sum over pairs / number of pairs, reported as the metric `pairs`, the normaliser gradient
    accumulation weighs micro-batches by), which equal the unpacked ones over the same pairs.
    """
    if loss not in REWARD_LOSSES:
        raise ValueError(f"unknown reward loss {loss!r}; valid: {sorted(REWARD_LOSSES)}")
    per_example = REWARD_LOSSES[loss]
    loss_kwargs = dict(loss_kwargs or {})

    def loss_fn(params, batch, rng):
        del rng
        if "chosen_end" in batch:
            chosen, rejected, valid = packed_pair_rewards(apply_fn, params, batch)
            n = valid.sum()
            mean = lambda x: (x * valid).sum() / jnp.maximum(n, 1.0)  # noqa: E731
        else:
            chosen, rejected = pair_rewards(apply_fn, params, batch)
            n, mean = None, jnp.mean
        losses = per_example(chosen, rejected, **loss_kwargs)
        metrics = {
            "accuracy": mean(pairwise_accuracy(chosen, rejected)),
            "margin": mean(chosen - rejected),
            "reward_mean": 0.5 * mean(chosen + rejected),
        }
        if n is not None:
            metrics["pairs"] = n
        return mean(losses), metrics

    return loss_fn


def make_pairwise_eval(apply_fn, pairs: Mapping[str, Any], *, gold_better=None):
    """Jitted `params -> metrics` on fixed held-out pairs.

    Args:
      apply_fn: reward model apply.
      pairs: stacked preference arrays (chosen_ids, chosen_mask, rejected_ids, rejected_mask).
      gold_better: optional [N] array, 1.0 where the "chosen" response truly has the higher gold
        reward; then `gold_accuracy` measures agreement with the gold ordering rather than with
        the (possibly noisy) labels.

    Metrics: `label_accuracy`, `label_ece` (expected calibration error of the BT probability
    sigmoid(r_c - r_r) against the labels, each pair counted in both orders), and with
    `gold_better` `gold_accuracy`.
    """
    inputs = {k: np.asarray(pairs[k]) for k in
              ("chosen_ids", "chosen_mask", "rejected_ids", "rejected_mask")}
    gold_better = None if gold_better is None else np.asarray(gold_better, np.float32)

    @jax.jit
    def evaluate(params):
        chosen, rejected = pair_rewards(apply_fn, params, inputs)
        # calibration over both orders of each pair, so the labels are not all 1
        p = jax.nn.sigmoid(chosen - rejected)
        out = {"label_accuracy": pairwise_accuracy(chosen, rejected).mean(),
               "label_ece": expected_calibration_error(
                   jnp.concatenate([p, 1.0 - p]),
                   jnp.concatenate([jnp.ones_like(p), jnp.zeros_like(p)]))}
        if gold_better is not None:
            g = gold_better
            agree = jnp.where(chosen > rejected, g, 1.0 - g)
            out["gold_accuracy"] = agree.mean()
        return out

    return evaluate


DEFAULTS = common.offline_defaults(loss="bradley_terry", loss_kwargs={},
                                   packing=dict(PACKING_DEFAULTS, max_pairs=0))


def default_config(**overrides):
    """The locked config of the recipe (every key with its default), updated by `overrides`."""
    return common.offline_config(DEFAULTS, overrides, "reward-model config")


def validate(config: Mapping[str, Any] | None) -> dict:
    """The resolved config (see `default_config`), checked before any work: known keys, value
    types and ranges, the loss name and its loss_kwargs, the optimizer and the mesh.

    Raises:
      ValueError: one line naming the bad key or value.
    """
    config = common.validate_offline(DEFAULTS, config, "reward-model config", REWARD_LOSSES,
                                     positional=2)
    check_packing(config["packing"], "reward-model config")
    return config


def train(
    config: Mapping[str, Any], workdir: str, *, train_source, eval_pairs=None, gold_better=None,
    seed: int = 0, init_params=None,
) -> dict:
    """Trains a scalar reward model on preference pairs.

    Config keys (`default_config()`): model, optimizer, loss (name in REWARD_LOSSES),
    loss_kwargs, train.{steps, batch_size, checkpoint_every, eval_every, log_every, progress},
    mesh, lora. Unknown keys are an error. `init_params` starts from given reward-model params;
    `model.path` (an HF checkpoint folder) from a checkpoint: a sequence-classification one with
    its score head, a causal LM's backbone with a new head initialised as transformers does
    (Normal(0, initializer_range), seeded by `seed`; `alignax.algorithms.pretrained`).

    `packing.enabled` (`alignax.data.packing.PACKING_DEFAULTS` plus `max_pairs`) packs whole
    pairs of `train_source` into rows of `packing.length` tokens (default twice the pairs' row
    length), chosen and rejected as adjacent segments, rewards read at each segment's last
    token (`packed_pair_rewards`); `train.batch_size` then counts packed rows, the loss is the
    mean over the batch's pairs and accumulated micro-batches weigh by their pair counts. Use it
    when pair lengths vary a lot: fewer pad tokens are computed for the same update.
    """
    config = validate(config)
    packing = config["packing"]
    if packing["enabled"]:
        train_source = packed_train_source(train_source, packing, "pair")
    model, init_params = pretrained.recipe_model(config, "reward", init_params=init_params,
                                                 seed=seed)
    eval_fn = None
    if eval_pairs is not None:
        eval_fn = make_pairwise_eval(model.apply, eval_pairs, gold_better=gold_better)
    return common.fit_recipe(
        config, workdir, model=model,
        loss_fn=make_reward_loss(model.apply, config["loss"], config["loss_kwargs"]),
        train_source=train_source, seed=seed, init_params=init_params, eval_fn=eval_fn,
        desc="reward model", grad_accum_weight="pairs" if packing["enabled"] else None)
