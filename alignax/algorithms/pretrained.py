"""Recipes from a pretrained Hugging Face checkpoint: the `model.path` config key.

A recipe's `model` mapping either lists TransformerConfig fields (a model at random init, as
before) or names a checkpoint folder:

    model = {"path": "/ckpt/Qwen2.5-0.5B", "dtype": "bfloat16", "remat": "full",
             "scan_layers": True, "logits_chunk": 8192}

- `path`: an HF folder (config.json and *.safetensors) of a family `alignax.models.hf.import_hf`
  reads. The architecture (every math field of TransformerConfig) comes from its config.json.
- Runtime fields (`alignax.models.hf.RUNTIME_FIELDS`: dtype, param_dtype, remat, scan_layers,
  logits_chunk, attention) still come from the `model` mapping: they are not part of a
  checkpoint.
- Any other TransformerConfig field set alongside `path` must agree with the checkpoint (it is
  then redundant); one that disagrees is a one-line ValueError, as is an unknown key.

What each recipe builds from it (`recipe_model`):

- sft, direct: the causal LM and its imported params. direct uses them for both the policy's
  initial value and the frozen reference (one import, one copy; with LoRA they are the base).
- reward_model: a scalar reward model r(x) = w^T h_last(x) + b. From a sequence-classification
  checkpoint (`architectures` ending in "ForSequenceClassification", one label) its own score
  head is used. From a causal-LM checkpoint the decoder (backbone) is the LM's and the LM head
  is dropped; the score head is initialised as transformers initialises
  `*ForSequenceClassification.score` when TRL's RewardTrainer loads a causal LM with
  num_labels=1 (`PreTrainedModel._init_weights` on an `nn.Linear(D, 1, bias=False)`):

      w ~ Normal(0, sigma^2) [D, 1],  sigma = config.json's initializer_range (0 or missing:
      0.02),  b = 0

  drawn from `jax.random.key(seed)` (the recipe's seed), so a run is reproducible. alignax's
  head has a bias; it starts at 0, as transformers' head has none.
- policy_gradient and the other online recipes take (model, init_params, ref_params) from their
  caller: `model_and_params(config["model"], "lm")` gives them from the same mapping.

With a mesh in the config the checkpoint is streamed shard by shard straight onto the devices
with the parameters' shardings (`import_hf(mesh=...)`); without one it is imported on the host.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from alignax.models.hf import RUNTIME_FIELDS, config_from_hf, import_hf
from alignax.models.transformer import Model, TransformerConfig, make_lm, make_reward_model

PATH_KEY = "path"
DEFAULT_INIT_STD = 0.02  # transformers' fallback when initializer_range is 0 or missing


def has_path(model_cfg: Mapping[str, Any] | None) -> bool:
    """Whether a `model` mapping names a checkpoint (`model.path` set and not None)."""
    return isinstance(model_cfg, Mapping) and model_cfg.get(PATH_KEY) is not None


def read_hf_config(path: str) -> dict:
    """The config.json dict of checkpoint folder `path`; ValueError if it is missing or bad."""
    if not isinstance(path, (str, os.PathLike)):
        raise ValueError(f"model.path must be a folder path string, got {path!r}")
    file = os.path.join(path, "config.json")
    if not os.path.isfile(file):
        raise ValueError(f"model.path={str(path)!r}: no config.json there (an HF checkpoint "
                         f"folder is expected)")
    try:
        with open(file, encoding="utf-8") as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{file}: not a valid JSON config ({e})") from None


def checkpoint_kind(hf: Mapping[str, Any]) -> str:
    """"reward" for a sequence-classification checkpoint (an `architectures` entry ending in
    "ForSequenceClassification"), else "lm"."""
    archs = hf.get("architectures") or []
    return "reward" if any(str(a).endswith("ForSequenceClassification") for a in archs) else "lm"


def split_model_config(model_cfg: Mapping[str, Any]) -> tuple[str, dict, dict]:
    """(path, runtime fields, other fields) of a `model` mapping with `path`."""
    cfg = {k: v for k, v in dict(model_cfg).items()}
    path = cfg.pop(PATH_KEY)
    runtime = {k: cfg.pop(k) for k in list(cfg) if k in RUNTIME_FIELDS}
    return str(path), runtime, cfg


def checkpoint_config(model_cfg: Mapping[str, Any]) -> TransformerConfig:
    """The TransformerConfig of `model_cfg["path"]` with the mapping's runtime fields; the
    mapping's other fields are checked against it.

    Raises:
      ValueError: (one line) no config.json, an unsupported family or config key, an unknown
        model key, or a field that disagrees with the checkpoint.
    """
    path, runtime, others = split_model_config(model_cfg)
    hf = read_hf_config(path)
    cfg = config_from_hf(hf, **runtime)
    known = {f.name for f in dataclasses.fields(TransformerConfig)}
    unknown = sorted(set(others) - known)
    if unknown:
        raise ValueError(f"unknown model keys {unknown} with model.path; valid: "
                         f"{sorted(known | {PATH_KEY})}")
    if others:
        wanted = dataclasses.replace(cfg, **others)  # normalises values (e.g. rope_scaling)
        for key in sorted(others):
            if getattr(wanted, key) != getattr(cfg, key):
                raise ValueError(f"model.{key}={others[key]!r} disagrees with the checkpoint "
                                 f"{path!r} ({key}={getattr(cfg, key)!r}); drop it or fix it")
    return cfg


def check_model_config(model_cfg: Mapping[str, Any], label: str) -> None:
    """`checkpoint_config` as a recipe's validation step (reads config.json only, no weights);
    the ValueError is prefixed with `label`."""
    try:
        checkpoint_config(model_cfg)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{label}: {e}") from None


def init_score_head(key: jax.Array, d_model: int, std: float, dtype=jnp.float32,
                    bias: bool = False) -> dict:
    """The score head of a sequence-classification model built on a causal LM, as transformers
    initialises `nn.Linear(D, 1, bias=False)` (`_init_weights`): kernel ~ Normal(0, std^2)
    [D, 1]; no bias, as transformers (imported configs have `score_bias=False`), unless `bias`
    (then 0 [1], for a config with score_bias=True).

    Args:
      key: a jax PRNG key.
      d_model: D.
      std: the checkpoint's initializer_range (0.02 when 0 or missing).
      dtype: the parameter dtype.
      bias: add a zero bias [1] (`TransformerConfig.score_bias`).

    Returns:
      {"kernel": [D, 1]} (and "bias": [1]) numpy arrays of `dtype`.
    """
    kernel = std * jax.random.normal(key, (d_model, 1), jnp.float32)
    head = {"kernel": np.asarray(kernel.astype(dtype))}
    return {**head, "bias": np.zeros((1,), dtype)} if bias else head


def load_pretrained(model_cfg: Mapping[str, Any], kind: str, *, seed: int = 0,
                    mesh=None) -> tuple[Model, Any]:
    """(Model, params) of `kind` ("lm" or "reward") from the checkpoint `model_cfg["path"]`.

    kind "lm": `import_hf(path, kind="lm")`. kind "reward": a sequence-classification checkpoint
    is imported with its score head; a causal LM's decoder gets a new score head
    (`init_score_head`, from `jax.random.key(seed)`) and its LM head is dropped. The runtime
    fields of `model_cfg` are `import_hf` keywords; `mesh` places the params on the devices as
    they are read (None: host arrays).

    Raises:
      ValueError: see `checkpoint_config`; a sequence-classification checkpoint used as an LM.
    """
    if kind not in ("lm", "reward"):
        raise ValueError(f"unknown model kind {kind!r}; valid: ['lm', 'reward']")
    cfg = checkpoint_config(model_cfg)
    path, runtime, _ = split_model_config(model_cfg)
    hf = read_hf_config(path)
    stored = checkpoint_kind(hf)
    if kind == "lm" and stored == "reward":
        raise ValueError(f"model.path={path!r} is a sequence-classification checkpoint "
                         f"({hf.get('architectures')}); a causal LM is needed here")
    if kind == stored:
        model, params = import_hf(path, kind=kind, mesh=mesh, **runtime)
        return model, params
    _, lm_params = import_hf(path, kind="lm", mesh=mesh, **runtime)
    std = float(hf.get("initializer_range") or DEFAULT_INIT_STD)
    score = init_score_head(jax.random.key(seed), cfg.d_model, std, jnp.dtype(cfg.param_dtype),
                            bias=cfg.score_bias)
    return make_reward_model(cfg), {"decoder": lm_params["decoder"], "score": score}


def model_and_params(model_cfg: Mapping[str, Any], kind: str = "lm", *, seed: int = 0,
                     mesh=None) -> tuple[Model, Any]:
    """(Model, params) for a `model` config mapping, for the callers of the online recipes
    (policy_gradient.train's model / init_params / ref_params): the checkpoint's with
    `model.path` (`load_pretrained`), else a TransformerConfig model at random init
    (`model.init(jax.random.key(seed))`)."""
    if has_path(model_cfg):
        return load_pretrained(model_cfg, kind, seed=seed, mesh=mesh)
    model = {"lm": make_lm, "reward": make_reward_model}[kind](
        TransformerConfig.from_mapping(model_cfg))
    return model, model.init(jax.random.key(seed))


def recipe_model(config: Mapping[str, Any], kind: str, *, init_params=None, seed: int = 0,
                 params_name: str = "init_params", required: bool = False
                 ) -> tuple[Model, Any]:
    """The model and starting params of an offline recipe's resolved config.

    Without `model.path`: `common.make_model(config["model"], kind)` and `init_params` as given
    (None: the recipe initialises at random; with `required`, None is an error). With it:
    `load_pretrained` (on the config's mesh when it has one); passing `init_params` as well is
    an error (two sources of weights).

    Raises:
      ValueError: one line naming `params_name` or the bad model key.
    """
    from alignax.algorithms import common

    if not has_path(config["model"]):
        if required and init_params is None:
            raise ValueError(f"pass {params_name} or set model.path (an HF checkpoint folder)")
        return common.make_model(config["model"], kind), init_params
    if init_params is not None:
        raise ValueError(f"model.path and {params_name} both give the starting weights; "
                         f"pass only one")
    mesh = common.mesh_from(config["mesh"]) if config.get("mesh") is not None else None
    return load_pretrained(config["model"], kind, seed=seed, mesh=mesh)
