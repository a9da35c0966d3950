"""Pieces shared by the algorithm recipes: models, data iterators and meshes from config.

Tokenized record formats the recipes read (dicts of fixed-shape numpy arrays):

- sequences (SFT): `input_ids` [T] int32, optional `mask` [T] (valid tokens, default all) and
  `loss_mask` [T] (tokens that are targets, default all valid tokens but the first).
- preference pairs: `chosen_ids`, `rejected_ids` [T] int32, `chosen_mask`, `rejected_mask` [T]
  (valid tokens), `chosen_response_mask`, `rejected_response_mask` [T] (response tokens, the ones
  whose log-probs count), plus any extra fields (gold rewards, labels) the recipes ignore.
"""

from __future__ import annotations

from typing import Any, Mapping

import jax
import numpy as np

from alignax.models.transformer import Model, TransformerConfig, make_lm, make_reward_model
from alignax.train import sharding as shd

MODEL_KINDS = {"lm": make_lm, "reward": make_reward_model}


def make_model(model_cfg: Mapping[str, Any], kind: str) -> Model:
    """A Model of `kind` ("lm" or "reward") from a model config mapping."""
    if kind not in MODEL_KINDS:
        raise ValueError(f"unknown model kind {kind!r}; valid: {sorted(MODEL_KINDS)}")
    return MODEL_KINDS[kind](TransformerConfig.from_mapping(model_cfg))


def make_iterator(source, *, batch_size: int, seed: int):
    """This process's slice of shuffled global batches of `source` (checkpointable, repeats)."""
    from alignax.data.pipeline import make_batch_iterator

    return make_batch_iterator(
        source,
        global_batch_size=batch_size,
        seed=seed,
        shuffle=True,
        num_epochs=None,
        process_index=jax.process_index(),
        process_count=jax.process_count(),
    )


def mesh_from(cfg: Mapping[str, Any] | None):
    return shd.mesh_from_config(cfg)


def stack_records(source, indices=None) -> dict[str, np.ndarray]:
    """All (or some) records of a random-access source stacked into arrays."""
    indices = range(len(source)) if indices is None else indices
    records = [source[i] for i in indices]
    return {k: np.stack([np.asarray(r[k]) for r in records]) for k in records[0]}
