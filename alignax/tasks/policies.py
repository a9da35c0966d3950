"""Reference policies for the language testbed: SFT once, cache on disk by config hash.

    policy = make_sft_policy(sft_policy_config())          # trains (~20 s on 2 CPU cores)
    policy = make_sft_policy(sft_policy_config())          # loads from the cache
    logits = policy.model.apply(policy.params, ids, mask)

The cache key is a hash of the full config (task, model, data, optimizer, steps, seed), so any
change retrains. Parameters are stored as safetensors next to the config as JSON; nothing is
pickled. The cache directory is `cache_dir`, else $ALIGNAX_CACHE, else ~/.cache/alignax.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from typing import Any, Mapping, NamedTuple

import jax
import numpy as np

from alignax.tasks.language import BigramLanguage

CACHE_VERSION = 1


class Policy(NamedTuple):
    model: Any            # alignax.models.transformer.Model
    params: Any
    task: BigramLanguage
    path: str             # cache entry directory
    trained: bool         # True if this call trained it, False if it was loaded


def sft_policy_config(**overrides) -> dict:
    """Default SFT config of the language testbed's reference policy (a plain dict).

    Keys: task (BigramLanguage fields), model (TransformerConfig fields but vocab_size/max_len,
    which come from the task), num_sequences, seed, optimizer, train. `overrides` replace
    top-level keys.
    """
    config = {
        "task": dict(vocab_size=32, prompt_len=4, response_len=12, concentration=0.5,
                     label_temperature=0.05, seed=0),
        "model": dict(d_model=64, n_layers=2, n_heads=4, d_ff=176),
        "num_sequences": 4096,
        "seed": 0,
        "optimizer": dict(name="adamw", learning_rate=3e-3, warmup_steps=0, schedule="constant",
                          clip_norm=1.0, kwargs=dict(weight_decay=0.0)),
        "train": dict(steps=600, batch_size=64, checkpoint_every=10_000, log_every=50,
                      eval_every=0, progress=False),
    }
    unknown = set(overrides) - set(config)
    if unknown:
        raise ValueError(f"unknown keys {sorted(unknown)}; valid: {sorted(config)}")
    config.update(overrides)
    return config


def _plain(x):
    if hasattr(x, "to_dict"):
        x = x.to_dict()
    if isinstance(x, Mapping):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if isinstance(x, np.generic):
        return x.item()
    return x


def config_hash(config: Mapping[str, Any]) -> str:
    """Stable 16-hex-digit hash of a JSON-able config (key order does not matter)."""
    blob = json.dumps({"version": CACHE_VERSION, "config": _plain(config)}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def default_cache_dir() -> str:
    return os.environ.get("ALIGNAX_CACHE") or os.path.join(os.path.expanduser("~"), ".cache",
                                                           "alignax")


def _flatten(params) -> dict[str, np.ndarray]:
    leaves, _ = jax.tree_util.tree_flatten_with_path(params)
    return {jax.tree_util.keystr(path): np.asarray(leaf) for path, leaf in leaves}


def _unflatten(template, flat: Mapping[str, np.ndarray]):
    leaves, treedef = jax.tree_util.tree_flatten_with_path(template)
    out = []
    for path, leaf in leaves:
        key = jax.tree_util.keystr(path)
        if key not in flat:
            raise ValueError(f"cached parameters lack {key}; delete the cache entry")
        value = flat[key]
        if value.shape != leaf.shape:
            raise ValueError(f"cached {key} has shape {value.shape}, expected {leaf.shape}")
        out.append(value.astype(leaf.dtype))
    return jax.tree_util.tree_unflatten(treedef, out)


def _model(config, task):
    from alignax.algorithms.common import make_model

    return make_model({**config["model"], "vocab_size": task.vocab_size,
                       "max_len": task.seq_len}, "lm")


def make_sft_policy(config: Mapping[str, Any] | None = None, *,
                    cache_dir: str | None = None) -> Policy:
    """The language task's SFT reference policy for `config`, trained once and cached.

    Training is next-token cross-entropy on `num_sequences` sequences of the chain
    (`alignax.algorithms.sft`). A later call with an equal config loads the cached parameters.
    """
    from safetensors.numpy import load_file, save_file

    config = _plain(sft_policy_config() if config is None else config)
    task = BigramLanguage(**config["task"])
    model = _model(config, task)
    root = cache_dir or default_cache_dir()
    entry = os.path.join(root, "sft", config_hash(config))
    params_path = os.path.join(entry, "params.safetensors")
    template = jax.eval_shape(model.init, jax.random.key(0))
    if os.path.exists(params_path):
        params = _unflatten(template, load_file(params_path))
        return Policy(model, jax.tree.map(jax.numpy.asarray, params), task, entry, False)

    from alignax.algorithms import sft

    os.makedirs(os.path.dirname(entry), exist_ok=True)
    work = tempfile.mkdtemp(prefix="sft-", dir=os.path.dirname(entry))
    try:
        source = task.sft_examples(int(config["num_sequences"]), int(config["seed"]))
        stage = {"optimizer": config["optimizer"], "train": config["train"],
                 "model": {**config["model"], "vocab_size": task.vocab_size,
                           "max_len": task.seq_len}}
        result = sft.train(stage, os.path.join(work, "run"), train_source=source,
                           seed=int(config["seed"]))
        params = result["params"]
        staged = os.path.join(work, "entry")
        os.makedirs(staged)
        save_file(_flatten(params), os.path.join(staged, "params.safetensors"))
        with open(os.path.join(staged, "config.json"), "w") as f:
            json.dump({"config": config, "final_nll": float(result["metrics"]["nll"])}, f,
                      indent=1, sort_keys=True)
        try:
            os.rename(staged, entry)  # atomic: a concurrent writer's entry wins, equal content
        except OSError:
            if not os.path.exists(params_path):
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return Policy(model, params, task, entry, True)
