"""Hugging Face interop: import/export safetensors checkpoints of the Llama, Qwen2 and GPT-2
families.

    model, params = import_hf("path/to/checkpoint")                 # causal LM
    model, params = import_hf("path/to/rm", kind="reward")          # *ForSequenceClassification
    export_hf(model, params, "out/", model_type="llama")           # config.json + model.safetensors

Only files are read (config.json, *.safetensors); nothing is downloaded. Reading needs only numpy
and the `safetensors` package, not torch. Linear weights are stored [out, in] by Hugging Face and
[in, out] here, so they are transposed on the way in and out.

Settings that are not part of the checkpoint (`RUNTIME_FIELDS`: compute and parameter dtype,
remat, scanned layers, logits chunk) are keywords of `import_hf`:

    model, params = import_hf(path, scan_layers=True, remat="full", param_dtype="bfloat16")

Each tensor is converted once into the dtype of its parameter (so a bfloat16 checkpoint imported
with param_dtype="bfloat16" is never upcast) and written into its slot of the (stacked, with
`scan_layers`) tree. `export_hf` takes either layout and writes the parameters' dtype.
"""

from __future__ import annotations

import dataclasses
import glob
import json
import os
from typing import Any

import jax
import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load_file, save_file

from alignax.models.transformer import (
    Model,
    TransformerConfig,
    layers_stacked,
    make_lm,
    make_reward_model,
    unstack_layers,
)

SUPPORTED = ("llama", "qwen2", "gpt2")
# TransformerConfig fields that a checkpoint does not fix: keywords of `import_hf`
RUNTIME_FIELDS = ("dtype", "param_dtype", "scan_layers", "remat", "logits_chunk", "attention")


def config_from_hf(hf: dict, **overrides) -> TransformerConfig:
    """TransformerConfig from a Hugging Face config.json dict (Llama, Qwen2 or GPT-2), with
    `overrides` of `RUNTIME_FIELDS` (e.g. scan_layers=True)."""
    bad = sorted(set(overrides) - set(RUNTIME_FIELDS))
    if bad:
        raise ValueError(f"{bad} cannot be overridden on import; allowed: {RUNTIME_FIELDS}")
    return dataclasses.replace(_config_from_hf(hf), **overrides)


def _config_from_hf(hf: dict) -> TransformerConfig:
    model_type = hf.get("model_type")
    if model_type not in SUPPORTED:
        raise ValueError(f"unsupported model_type {model_type!r}; supported: {SUPPORTED}")
    if model_type == "gpt2":
        return _gpt2_config_from_hf(hf)
    if hf.get("rope_scaling"):
        raise ValueError(f"rope_scaling={hf['rope_scaling']!r} is not supported")
    if hf.get("mlp_bias"):
        raise ValueError("mlp_bias=True is not supported")
    if model_type == "llama" and hf.get("attention_bias"):
        raise ValueError("attention_bias=True is not supported for llama")
    act = hf.get("hidden_act", "silu")
    if act != "silu":
        raise ValueError(f"hidden_act={act!r} is not supported (SwiGLU with silu only)")
    d, heads = hf["hidden_size"], hf["num_attention_heads"]
    head_dim = hf.get("head_dim") or d // heads
    if head_dim * heads != d:
        raise ValueError(f"head_dim={head_dim} x heads={heads} != hidden_size={d}")
    rope_theta = hf.get("rope_theta")
    if rope_theta is None:  # newer transformers nest it in rope_parameters
        rope_theta = (hf.get("rope_parameters") or {}).get("rope_theta", 10000.0)
    return TransformerConfig(
        vocab_size=hf["vocab_size"],
        d_model=d,
        n_layers=hf["num_hidden_layers"],
        n_heads=heads,
        n_kv_heads=hf.get("num_key_value_heads") or heads,
        d_ff=hf["intermediate_size"],
        max_len=hf.get("max_position_embeddings", 2048),
        rope_theta=float(rope_theta),
        norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
        tie_embeddings=bool(hf.get("tie_word_embeddings", False)),
        qkv_bias=model_type == "qwen2",
    )


def _gpt2_config_from_hf(hf: dict) -> TransformerConfig:
    act = hf.get("activation_function", "gelu_new")
    if act not in ("gelu_new", "gelu_pytorch_tanh"):
        raise ValueError(f"activation_function={act!r} is not supported (tanh GELU only)")
    for flag in ("scale_attn_by_inverse_layer_idx", "reorder_and_upcast_attn"):
        if hf.get(flag):
            raise ValueError(f"{flag}=True is not supported")
    if hf.get("scale_attn_weights") is False:
        raise ValueError("scale_attn_weights=False is not supported")
    d = hf["n_embd"]
    return TransformerConfig.gpt2_style(
        vocab_size=hf["vocab_size"], d_model=d, n_layers=hf["n_layer"], n_heads=hf["n_head"],
        d_ff=hf.get("n_inner") or 4 * d, max_len=hf["n_positions"],
        norm_eps=float(hf.get("layer_norm_epsilon", 1e-5)),
        tie_embeddings=bool(hf.get("tie_word_embeddings", True)))


def config_to_hf(cfg: TransformerConfig, *, model_type: str, kind: str) -> dict:
    """config.json dict for a Llama, Qwen2 or GPT-2 checkpoint of `cfg`."""
    if model_type not in SUPPORTED:
        raise ValueError(f"unsupported model_type {model_type!r}; supported: {SUPPORTED}")
    gpt2_like = (cfg.norm, cfg.mlp, cfg.positions, cfg.linear_bias, cfg.qkv_bias) == (
        "layer", "gelu", "learned", True, True)
    llama_like = (cfg.norm, cfg.mlp, cfg.positions, cfg.linear_bias) == (
        "rms", "swiglu", "rope", False)
    if (model_type == "gpt2" and not gpt2_like) or (model_type != "gpt2" and not llama_like):
        raise ValueError(f"this architecture cannot be written as model_type {model_type!r}")
    if model_type == "gpt2":
        out = {"model_type": "gpt2",
               "architectures": ["GPT2LMHeadModel" if kind == "lm"
                                 else "GPT2ForSequenceClassification"],
               "vocab_size": cfg.vocab_size, "n_embd": cfg.d_model, "n_layer": cfg.n_layers,
               "n_head": cfg.n_heads, "n_inner": cfg.d_ff, "n_positions": cfg.max_len,
               "layer_norm_epsilon": cfg.norm_eps, "activation_function": "gelu_new",
               "tie_word_embeddings": cfg.tie_embeddings, "torch_dtype": "float32"}
        if kind == "reward":
            out["num_labels"] = 1
        return out
    if cfg.qkv_bias != (model_type == "qwen2"):
        raise ValueError(f"qkv_bias={cfg.qkv_bias} does not fit model_type {model_type!r}")
    arch = {"llama": "Llama", "qwen2": "Qwen2"}[model_type]
    head = "ForCausalLM" if kind == "lm" else "ForSequenceClassification"
    out = {
        "model_type": model_type,
        "architectures": [arch + head],
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.d_model,
        "num_hidden_layers": cfg.n_layers,
        "num_attention_heads": cfg.n_heads,
        "num_key_value_heads": cfg.kv_heads,
        "head_dim": cfg.head_dim,
        "intermediate_size": cfg.d_ff,
        "max_position_embeddings": cfg.max_len,
        "rope_theta": cfg.rope_theta,
        "rms_norm_eps": cfg.norm_eps,
        "tie_word_embeddings": cfg.tie_embeddings,
        "hidden_act": "silu",
        "torch_dtype": "float32",
    }
    if kind == "reward":
        out["num_labels"] = 1
    return out


def _layer_map(cfg: TransformerConfig, i: int) -> dict[str, tuple[tuple, bool]]:
    """HF tensor name -> (alignax path, transpose?) for decoder layer i."""
    hf, ax = f"model.layers.{i}.", ("decoder", "layers", i)
    m = {
        hf + "input_layernorm.weight": (ax + ("attn_norm", "scale"), False),
        hf + "post_attention_layernorm.weight": (ax + ("mlp_norm", "scale"), False),
        hf + "self_attn.o_proj.weight": (ax + ("attn", "o", "kernel"), True),
        hf + "mlp.gate_proj.weight": (ax + ("mlp", "gate", "kernel"), True),
        hf + "mlp.up_proj.weight": (ax + ("mlp", "up", "kernel"), True),
        hf + "mlp.down_proj.weight": (ax + ("mlp", "down", "kernel"), True),
    }
    for p in ("q", "k", "v"):
        m[hf + f"self_attn.{p}_proj.weight"] = (ax + ("attn", p, "kernel"), True)
        if cfg.qkv_bias:
            m[hf + f"self_attn.{p}_proj.bias"] = (ax + ("attn", p, "bias"), False)
    return m


def _gpt2_name_map(cfg: TransformerConfig, kind: str) -> dict[str, tuple]:
    """HF GPT-2 name -> (alignax path, transpose, column slice of a fused c_attn or None).

    GPT-2 uses Conv1D layers stored [in, out], like alignax: no transposes. c_attn fuses q, k, v
    along its output columns.
    """
    d = cfg.d_model
    m = {
        "wte.weight": (("decoder", "embed", "embedding"), False, None),
        "wpe.weight": (("decoder", "pos_embed", "embedding"), False, None),
        "ln_f.weight": (("decoder", "final_norm", "scale"), False, None),
        "ln_f.bias": (("decoder", "final_norm", "bias"), False, None),
    }
    for i in range(cfg.n_layers):
        hf, ax = f"h.{i}.", ("decoder", "layers", i)
        for hf_name, path in (("ln_1", ("attn_norm",)), ("ln_2", ("mlp_norm",))):
            m[hf + hf_name + ".weight"] = (ax + path + ("scale",), False, None)
            m[hf + hf_name + ".bias"] = (ax + path + ("bias",), False, None)
        for part in ("weight", "bias"):
            leaf = "kernel" if part == "weight" else "bias"
            for j, p in enumerate(("q", "k", "v")):
                m[f"{hf}attn.c_attn.{part}#{p}"] = (ax + ("attn", p, leaf), False,
                                                    slice(j * d, (j + 1) * d))
            m[f"{hf}attn.c_proj.{part}"] = (ax + ("attn", "o", leaf), False, None)
            m[f"{hf}mlp.c_fc.{part}"] = (ax + ("mlp", "fc", leaf), False, None)
            m[f"{hf}mlp.c_proj.{part}"] = (ax + ("mlp", "proj", leaf), False, None)
    if kind == "lm" and not cfg.tie_embeddings:
        m["lm_head.weight"] = (("lm_head", "kernel"), True, None)
    if kind == "reward":
        m["score.weight"] = (("score", "kernel"), True, None)
    return m


def _gpt2_tensors(tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Strips the "transformer." prefix and drops GPT-2's non-parameter attention buffers."""
    out = {}
    for name, value in tensors.items():
        name = name[len("transformer."):] if name.startswith("transformer.") else name
        if name.endswith(("attn.bias", "attn.masked_bias")) and value.ndim == 4:
            continue  # the causal-mask buffer of old checkpoints
        out[name] = value
    return out


def _name_map(cfg: TransformerConfig, kind: str) -> dict[str, tuple[tuple, bool]]:
    m = {
        "model.embed_tokens.weight": (("decoder", "embed", "embedding"), False),
        "model.norm.weight": (("decoder", "final_norm", "scale"), False),
    }
    for i in range(cfg.n_layers):
        m.update(_layer_map(cfg, i))
    if kind == "lm" and not cfg.tie_embeddings:
        m["lm_head.weight"] = (("lm_head", "kernel"), True)
    if kind == "reward":
        m["score.weight"] = (("score", "kernel"), True)
    return m


def _get(tree, path):
    for k in path:
        tree = tree[k]
    return tree


def _slot(params, path, stacked: bool):
    """(array, index) of the slot of `path`: a stacked layer's leaf is written at [i]."""
    if stacked and path[:2] == ("decoder", "layers"):
        return _get(params, path[:2] + path[3:]), path[2]
    return _get(params, path[:-1]), path[-1]


def _assign(params, path, value, stacked: bool, name: str, where: str) -> None:
    """Writes the checkpoint tensor `value` into its parameter, converted to its dtype."""
    holder, index = _slot(params, path, stacked)
    expected = holder[index].shape
    if value.shape != expected:
        raise ValueError(f"{where}: {name}: shape {value.shape} does not fit {path} "
                         f"{expected} (does config.json match the weights?)")
    holder[index] = np.asarray(value, holder[index].dtype)  # a no-op when the dtypes agree


def read_safetensors(path: str) -> dict[str, np.ndarray]:
    """All tensors of a checkpoint folder (one or several *.safetensors shards) as numpy; a
    corrupt or truncated shard is a one-line ValueError naming it."""
    files = sorted(glob.glob(os.path.join(path, "*.safetensors")))
    if not files:
        raise FileNotFoundError(f"no *.safetensors files in {path}")
    tensors: dict[str, np.ndarray] = {}
    for f in files:
        try:
            tensors.update(load_file(f))
        except SafetensorError as e:  # a truncated or corrupt file: one line, not a traceback
            raise ValueError(f"{f}: not a readable safetensors file ({e})") from None
    return tensors


def import_hf(path: str, *, kind: str = "lm", **overrides) -> tuple[Model, dict]:
    """Loads a Llama/Qwen2/GPT-2 checkpoint folder as (Model, params).

    Args:
      path: folder with config.json and *.safetensors.
      kind: "lm" (causal LM) or "reward" (sequence classification with one label: the score head
        reads the last valid token, whatever the padding side).
      **overrides: `RUNTIME_FIELDS` of the TransformerConfig (e.g. scan_layers=True: params in
        the stacked layout).

    Raises:
      ValueError: unsupported architecture, missing or unexpected tensors, wrong shapes.
    """
    config_path = os.path.join(path, "config.json")
    try:
        with open(config_path, encoding="utf-8") as f:
            hf = json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(f"{config_path}: not valid JSON ({e.msg} at line {e.lineno}, column "
                         f"{e.colno})") from None
    except UnicodeDecodeError:
        raise ValueError(f"{config_path}: not UTF-8 text") from None
    cfg = config_from_hf(hf, **overrides)
    labels = hf.get("num_labels", len(hf.get("id2label", {}) or [0, 0]))
    if kind == "reward" and labels != 1:
        raise ValueError(f"{config_path}: a reward model checkpoint needs num_labels == 1, got "
                         f"{labels}")
    model = {"lm": make_lm, "reward": make_reward_model}[kind](cfg)
    params = jax.tree.map(lambda x: np.zeros(x.shape, x.dtype),
                          jax.eval_shape(model.init, jax.random.key(0)))
    tensors = read_safetensors(path)
    if hf["model_type"] == "gpt2":
        _import_gpt2(cfg, kind, _gpt2_tensors(tensors), params, path)
        return model, params
    names = _name_map(cfg, kind)
    missing = sorted(set(names) - set(tensors))
    if missing:
        more = "..." if len(missing) > 5 else ""
        raise ValueError(f"{path}: missing tensors {missing[:5]}{more}")
    ignored = {"lm_head.weight"} if cfg.tie_embeddings or kind == "reward" else set()
    unexpected = sorted(set(tensors) - set(names) - ignored)
    unexpected = [n for n in unexpected if not n.endswith("rotary_emb.inv_freq")]
    if unexpected:
        raise ValueError(f"{path}: unexpected tensors {unexpected[:5]}")
    for name, (target, transpose) in names.items():
        value = tensors.pop(name)  # drop each tensor once copied: one model in memory
        _assign(params, target, value.T if transpose else value, cfg.scan_layers, name, path)
    return model, params


def _import_gpt2(cfg, kind, tensors, params, path):
    names = _gpt2_name_map(cfg, kind)
    needed = {n.split("#")[0] for n in names}
    missing = sorted(needed - set(tensors))
    if missing:
        raise ValueError(f"{path}: missing tensors {missing[:5]}")
    ignored = {"lm_head.weight"} if cfg.tie_embeddings or kind == "reward" else set()
    unexpected = sorted(set(tensors) - needed - ignored)
    if unexpected:
        raise ValueError(f"{path}: unexpected tensors {unexpected[:5]}")
    for name, (target, transpose, cols) in names.items():
        value = tensors[name.split("#")[0]]
        if cols is not None:
            value = value[..., cols]
        _assign(params, target, value.T if transpose else value, cfg.scan_layers, name, path)


def _export_gpt2(cfg, kind, params) -> dict[str, np.ndarray]:
    fused: dict[str, list] = {}
    tensors = {}
    for name, (source, transpose, cols) in _gpt2_name_map(cfg, kind).items():
        value = np.asarray(_get(params, source))
        value = value.T if transpose else value
        prefix = "" if name.startswith(("lm_head", "score")) else "transformer."
        if cols is not None:
            fused.setdefault(prefix + name.split("#")[0], []).append(value)
        else:
            tensors[prefix + name] = value
    for name, parts in fused.items():  # q, k, v in order
        tensors[name] = np.concatenate(parts, axis=-1)
    return {k: np.ascontiguousarray(v) for k, v in tensors.items()}


def export_hf(model: Model, params: Any, path: str, *, model_type: str = "llama") -> None:
    """Writes config.json and model.safetensors loadable by transformers' Auto classes.

    `params` in either layout (stacked by `scan_layers` or not); tensors are written in the
    parameters' dtype (torch_dtype in config.json is the embedding's).
    """
    cfg = model.config
    kind = "reward" if "score" in params else "lm"
    hf_config = config_to_hf(cfg, model_type=model_type, kind=kind)  # validates first
    params = jax.tree.map(np.asarray, params)  # on the host; layer views below copy nothing
    if layers_stacked(params):
        params = unstack_layers(params)
    hf_config["torch_dtype"] = str(params["decoder"]["embed"]["embedding"].dtype)
    os.makedirs(path, exist_ok=True)
    if model_type == "gpt2":
        tensors = _export_gpt2(cfg, kind, params)
    else:
        tensors = {}
        for name, (source, transpose) in _name_map(cfg, kind).items():
            value = np.asarray(_get(params, source))
            tensors[name] = np.ascontiguousarray(value.T if transpose else value)
    if kind == "reward" and np.any(np.asarray(params["score"]["bias"]) != 0):
        raise ValueError("the score head has a bias; Hugging Face's score layer has none")
    save_file(tensors, os.path.join(path, "model.safetensors"), metadata={"format": "pt"})
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(hf_config, f, indent=2)
