"""Hugging Face interop: import/export safetensors checkpoints of the Llama 2/3.x, Mistral,
Qwen2/2.5, Qwen3, Gemma 2, Gemma 3 (model_type gemma3_text) and GPT-2 families; the language
model of a multimodal Gemma 3 checkpoint (model_type gemma3, Gemma3ForConditionalGeneration:
Gemma 3 4B/12B/27B) is imported as gemma3_text (`TEXT_MODEL_OF`: its text_config and
language_model.* tensors; the vision tower and projector are skipped) and exports as
gemma3_text. Gemma 1 is refused by name (`REFUSED_FAMILIES`).

    model, params = import_hf("path/to/checkpoint")                 # causal LM
    model, params = import_hf("path/to/rm", kind="reward")          # *ForSequenceClassification
    model, params = import_hf(path, param_dtype="bfloat16", mesh=mesh)  # streamed onto a mesh
    export_hf(model, params, "out/", model_type="qwen2", dtype="bfloat16",
              max_shard_size="2GB", tokenizer_dir="path/to/checkpoint")

Only files are read (config.json, *.safetensors, model.safetensors.index.json); nothing is
downloaded. Reading needs only numpy and the `safetensors` package, not torch. Linear weights
are stored [out, in] by Hugging Face and [in, out] here, so they are transposed on the way in
and out.

Config keys. `MATH_KEYS[model_type]` lists every config.json key that changes what a family
computes, each implemented (a TransformerConfig field: head_dim -> attn_head_dim, Qwen3's q/k
RMSNorm -> qk_norm, sliding_window/use_sliding_window/max_window_layers/layer_types ->
sliding_window, rope_parameters/rope_scaling -> rope_scaling with every rope type transformers
writes but longrope/proportional, see `alignax.models.rope`) or refused with a one-line
ValueError naming the key; `NON_MATH_KEYS` are the bookkeeping keys. Dropout keys are not
applied (alignax has no dropout; TRL's trainers disable it by default).

Settings that are not part of the checkpoint (`RUNTIME_FIELDS`: compute and parameter dtype,
remat, scanned layers, logits chunk, attention kernel, reward pooling) are keywords of
`import_hf`.

Gemma 2 / 3 (transformers 5.25's modeling_gemma2.py / modeling_gemma3.py): embeddings times
sqrt(D) rounded to the weight dtype (`scale_embeddings`), RMSNorm x (1 + w) in float32
(norm="rms_offset", also for Gemma 3's q/k norms), GeLU-tanh gated MLP (mlp="geglu"), norms on
the attention and MLP outputs (`post_norms`: post_attention_layernorm -> attn_post_norm,
pre_feedforward_layernorm -> mlp_norm, post_feedforward_layernorm -> mlp_post_norm), scores
scaled by query_pre_attn_scalar^-1/2 (`attn_scale`), Gemma 2's attention and final logit
soft caps (`attn_softcap`, `logits_softcap`), `layer_types` (`sliding_layers`, one flag per
layer, scanned along), Gemma 3's local rope base (`rope_local_theta`) with rope scaling only on
the full layers.

The score head. Hugging Face's `score` layer has no bias, so every imported config has
`score_bias=False`: an imported reward model is exactly transformers' (and exports back); a
causal LM imported as a reward backbone gets a bias-free head too. Pooling: alignax reads the
reward at the last valid token of the mask; transformers reads it at the last token that is not
the pad id, which differs when pad == eos (TRL pads with eos when a tokenizer has no pad token).
`import_hf(..., kind="reward", pool="last_non_pad")` reproduces transformers (pad id from
config.json, or `pad_token_id=`), e.g. to score such a published reward model as RewardBench.

Streaming. `import_hf` reads the shards one after the other and each tensor once (safetensors'
lazy `safe_open`), converts it into its parameter's dtype (a bfloat16 checkpoint imported with
param_dtype="bfloat16" is never upcast) and puts it in its slot of the (stacked, with
`scan_layers`) tree: as a host numpy array, or, with `mesh`, directly on the devices with the
parameter's NamedSharding. `export_hf` takes either layout, fetches one tensor at a time and
writes shards of at most `max_shard_size` bytes in the chosen dtype, plus the tokenizer files and
generation_config.json.
"""

from __future__ import annotations

import dataclasses
import functools
import glob
import json
import os
import shutil
import warnings
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, PartitionSpec
from safetensors import SafetensorError, safe_open
from safetensors.numpy import load_file, save_file

from alignax.models.rope import normalize_scaling

from alignax.models.transformer import (
    Model,
    TransformerConfig,
    layers_stacked,
    make_lm,
    make_reward_model,
)

SUPPORTED = ("llama", "mistral", "qwen2", "qwen3", "gemma2", "gemma3_text", "gpt2")
GEMMA = ("gemma2", "gemma3_text")
_ARCH = {"llama": "Llama", "mistral": "Mistral", "qwen2": "Qwen2", "qwen3": "Qwen3",
         "gemma2": "Gemma2", "gemma3_text": "Gemma3"}
# families refused by name, with the reason
REFUSED_FAMILIES = {
    "gemma": "Gemma 1 (no post-norms, attention scale 1/sqrt(E)) is not implemented; Gemma 2 "
             "(gemma2) and Gemma 3 (gemma3, gemma3_text) are",
}
# multimodal model types whose language model is imported (text only): -> its model_type
TEXT_MODEL_OF = {"gemma3": "gemma3_text"}
# tensor-name prefixes of the language model in such checkpoints (published: language_model.
# model.*; transformers' own module tree: model.language_model.*), and of the parts skipped
_TEXT_PREFIXES = (("language_model.model.", "model."), ("model.language_model.", "model."),
                  ("language_model.lm_head.", "lm_head."))
_SKIPPED_PREFIXES = ("vision_tower.", "multi_modal_projector.", "model.vision_tower.",
                     "model.multi_modal_projector.")
# TransformerConfig fields that a checkpoint does not fix: keywords of `import_hf` (pool and
# pad_token_id: the reward model's pooling; pool="last_non_pad" takes config.json's
# pad_token_id unless one is given)
RUNTIME_FIELDS = ("dtype", "param_dtype", "scan_layers", "remat", "logits_chunk", "attention",
                  "pool", "pad_token_id")

_ROPE = ("implemented (alignax.models.rope): rope_type default, linear, dynamic, yarn, llama3; "
         "longrope and proportional refused")
_SLIDING = ("implemented when every layer has one attention type (all full or all sliding, "
            "TransformerConfig.sliding_window); a mix of full and sliding layers refused")
# Every config.json key that changes the math, per family: key -> (what alignax does, a value
# that is refused, or None when every value is implemented). tests/models/test_hf_families.py
# checks that every key transformers writes for the family is here or in NON_MATH_KEYS, and
# that each refused value raises a ValueError naming its key.
_DECODER_KEYS = {
    "vocab_size": ("implemented: V", None),
    "hidden_size": ("implemented: D", None),
    "intermediate_size": ("implemented: F", None),
    "num_hidden_layers": ("implemented: L", None),
    "num_attention_heads": ("implemented: H", None),
    "num_key_value_heads": ("implemented: K (grouped-query attention)", None),
    "head_dim": ("implemented: E (attn_head_dim when != D / H)", None),
    "max_position_embeddings": ("implemented: max_len, and M of dynamic/yarn rope", None),
    "rms_norm_eps": ("implemented: norm_eps", None),
    "hidden_act": ("implemented for silu (SwiGLU); other activations refused", "gelu"),
    "rope_theta": ("implemented: rope_theta (older configs; newer nest it)", None),
    "rope_parameters": (_ROPE, {"rope_type": "longrope", "rope_theta": 1e4,
                                "long_factor": [1.0], "short_factor": [1.0],
                                "original_max_position_embeddings": 16}),
    "rope_scaling": (_ROPE + " (the older name of rope_parameters)",
                     {"rope_type": "proportional", "factor": 2.0}),
    "partial_rotary_factor": ("refused unless 1 (rotating part of each head)", 0.5),
    "tie_word_embeddings": ("implemented: tie_embeddings", None),
    "attention_dropout": ("not applied: alignax has no dropout (TRL's trainers disable it, "
                          "disable_dropout=True; eval logits are unaffected)", None),
    "quantization_config": ("refused: quantized checkpoints are not read", {"quant_method": "x"}),
}
_QWEN_SLIDING = {
    "use_sliding_window": (_SLIDING, None),
    "sliding_window": (_SLIDING, None),
    "max_window_layers": ("implemented with use_sliding_window: layers >= it slide; "
                          "refused when that mixes full and sliding layers", 1),
    "layer_types": (_SLIDING, ["full_attention", "sliding_attention"]),
}
_GEMMA_KEYS = {
    **{k: _DECODER_KEYS[k] for k in (
        "vocab_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
        "num_key_value_heads", "head_dim", "tie_word_embeddings", "quantization_config")},
    "hidden_size": ("implemented: D (embeddings times sqrt(D): scale_embeddings)", None),
    "hidden_activation": ("implemented for gelu_pytorch_tanh / gelu_new (GeGLU, mlp='geglu'); "
                          "others refused", "gelu"),
    "hidden_act": ("not read by transformers' Gemma 2/3 (hidden_activation is); ignored", None),
    "max_position_embeddings": ("implemented: max_len", None),
    "rms_norm_eps": ("implemented: norm_eps of the (1 + w) RMSNorms", None),
    "attention_bias": ("refused when true (biases on q, k, v and o)", True),
    "attention_dropout": ("not applied: alignax has no dropout (TRL disables it)", None),
    "query_pre_attn_scalar": ("implemented: attn_scale = query_pre_attn_scalar^-1/2", None),
    "sliding_window": ("implemented: sliding_window of the sliding layers", None),
    "layer_types": ("implemented: sliding_layers (per-layer flags); types other than "
                    "full_attention / sliding_attention refused", ["chunked_attention"] * 2),
    "sliding_window_pattern": ("implemented when layer_types is absent: every n-th layer "
                               "full (older configs)", None),
    "_sliding_window_pattern": ("implemented as sliding_window_pattern", None),
    "final_logit_softcapping": ("implemented: logits_softcap (null: none)", None),
    "use_bidirectional_attention": ("refused when true (non-causal attention)", True),
    "cache_implementation": ("not applied: a generation setting", None),
}
_GEMMA_ROPE = ("implemented (alignax.models.rope): rope_type default, linear, dynamic, yarn, "
               "llama3; longrope and proportional refused")
MATH_KEYS = {
    "gemma3": {
        "text_config": ("implemented: the gemma3_text config of the language model (its keys: "
                        "MATH_KEYS['gemma3_text'])", None),
        "vision_config": ("not read: text-only import (the vision tower is skipped)", None),
        "mm_tokens_per_image": ("not read: image inputs only", None),
        "boi_token_index": ("not read: image inputs only", None),
        "eoi_token_index": ("not read: image inputs only", None),
        "image_token_index": ("not read: image inputs only", None),
        "tie_word_embeddings": ("implemented: text_config's tie_word_embeddings", None),
        "quantization_config": ("refused: quantized checkpoints are not read",
                                {"quant_method": "x"}),
    },
    "gemma2": {**_GEMMA_KEYS,
               "attn_logit_softcapping": ("implemented: attn_softcap (null: none)", None),
               "rope_parameters": (_GEMMA_ROPE + " (every layer)",
                                   {"rope_type": "longrope", "rope_theta": 1e4,
                                    "long_factor": [1.0], "short_factor": [1.0],
                                    "original_max_position_embeddings": 16}),
               "rope_theta": ("implemented: rope_theta (older configs)", None),
               "rope_scaling": (_GEMMA_ROPE + " (older name of rope_parameters)",
                                {"rope_type": "proportional", "factor": 2.0})},
    "gemma3_text": {**_GEMMA_KEYS,
                    "attn_logit_softcapping": ("refused when set: transformers' Gemma 3 "
                                               "attention does not apply it", 50.0),
                    "rope_parameters": ("implemented: full_attention -> rope_theta and "
                                        "rope_scaling (" + _GEMMA_ROPE + "); "
                                        "sliding_attention -> rope_local_theta (default type "
                                        "only; others refused)",
                                        {"full_attention": {"rope_type": "default",
                                                            "rope_theta": 1e6},
                                         "sliding_attention": {"rope_type": "linear",
                                                               "factor": 2.0,
                                                               "rope_theta": 1e4}}),
                    "rope_theta": ("implemented: the full layers' base (older configs)", None),
                    "rope_local_base_freq": ("implemented: rope_local_theta (older configs)",
                                             None),
                    "rope_scaling": ("implemented: the full layers' scaling (older configs)",
                                     {"rope_type": "longrope", "factor": 2.0})},
    "llama": {**_DECODER_KEYS,
              "attention_bias": ("refused when true (biases on q, k, v and o)", True),
              "mlp_bias": ("refused when true (biases on gate, up, down)", True)},
    "mistral": {**_DECODER_KEYS,
                "sliding_window": ("implemented: sliding_window (every layer)", None),
                "layer_types": ("refused (Ministral's alternating layers)",
                                ["full_attention", "sliding_attention"])},
    "qwen2": {**_DECODER_KEYS, **_QWEN_SLIDING},
    "qwen3": {**_DECODER_KEYS, **_QWEN_SLIDING,
              "attention_bias": ("refused when true (biases on q, k, v and o)", True)},
    "gpt2": {
        "vocab_size": ("implemented: V", None),
        "n_embd": ("implemented: D", None),
        "n_layer": ("implemented: L", None),
        "n_head": ("implemented: H", None),
        "n_inner": ("implemented: F (None: 4 D)", None),
        "n_positions": ("implemented: max_len (learned positions)", None),
        "layer_norm_epsilon": ("implemented: norm_eps", None),
        "activation_function": ("implemented for gelu_new / gelu_pytorch_tanh; others refused",
                                "relu"),
        "tie_word_embeddings": ("implemented: tie_embeddings", None),
        "scale_attn_weights": ("refused when false (no 1/sqrt(E))", False),
        "scale_attn_by_inverse_layer_idx": ("refused when true", True),
        "reorder_and_upcast_attn": ("refused when true", True),
        "attn_pdrop": ("not applied: no dropout (TRL disables it)", None),
        "embd_pdrop": ("not applied: no dropout (TRL disables it)", None),
        "resid_pdrop": ("not applied: no dropout (TRL disables it)", None),
        "summary_activation": ("not read: GPT2DoubleHeadsModel's head only", None),
        "summary_first_dropout": ("not read: GPT2DoubleHeadsModel's head only", None),
        "summary_proj_to_labels": ("not read: GPT2DoubleHeadsModel's head only", None),
        "summary_type": ("not read: GPT2DoubleHeadsModel's head only", None),
        "summary_use_proj": ("not read: GPT2DoubleHeadsModel's head only", None),
        "quantization_config": ("refused: quantized checkpoints are not read",
                                {"quant_method": "x"}),
    },
}
# keys that do not change what a loaded checkpoint computes (ids, bookkeeping, init, outputs)
NON_MATH_KEYS = frozenset({
    "_name_or_path", "architectures", "bos_token_id", "eos_token_id", "pad_token_id",
    "sep_token_id", "decoder_start_token_id", "chunk_size_feed_forward", "dtype", "torch_dtype",
    "id2label", "label2id", "num_labels", "initializer_range", "is_encoder_decoder",
    "model_type", "output_attentions", "output_hidden_states", "problem_type", "return_dict",
    "transformers_version", "use_cache", "pretraining_tp", "tokenizer_class",
    "task_specific_params", "auto_map", "_attn_implementation_autoset", "add_cross_attention",
})
_GELU_TANH = ("gelu_pytorch_tanh", "gelu_new")  # both the tanh approximation of GELU


def config_from_hf(hf: dict, **overrides) -> TransformerConfig:
    """TransformerConfig from a Hugging Face config.json dict (`SUPPORTED` families), with
    `overrides` of `RUNTIME_FIELDS` (e.g. scan_layers=True).

    Every key of `MATH_KEYS[model_type]` is implemented or refused with a one-line ValueError
    naming it; keys in neither `MATH_KEYS` nor `NON_MATH_KEYS` are reported in a warning.
    """
    bad = sorted(set(overrides) - set(RUNTIME_FIELDS))
    if bad:
        raise ValueError(f"{bad} cannot be overridden on import; allowed: {RUNTIME_FIELDS}")
    if overrides.get("pool") == "last_non_pad" and overrides.get("pad_token_id") is None:
        pad = hf.get("pad_token_id", (hf.get("text_config") or {}).get("pad_token_id"))
        overrides = {**overrides, "pad_token_id": pad}
    return dataclasses.replace(_config_from_hf(hf), **overrides)


def _refuse(cond: bool, message: str) -> None:
    if cond:
        raise ValueError(message)


def _rope_scaling_from_hf(hf: dict) -> tuple[float, dict]:
    """(rope_theta, the rope scaling spec without rope_theta) from rope_parameters (newer
    transformers) or rope_theta + rope_scaling (older)."""
    params = dict(hf.get("rope_parameters") or {})
    legacy = dict(hf.get("rope_scaling") or {})
    key = "rope_parameters" if params else "rope_scaling"
    spec = params or legacy
    theta = spec.pop("rope_theta", None)
    if theta is None:
        theta = hf.get("rope_theta", 10000.0)
    partial = spec.pop("partial_rotary_factor", hf.get("partial_rotary_factor", 1.0))
    _refuse(partial not in (None, 1, 1.0),
            f"partial_rotary_factor={partial!r} is not supported (rotary on part of each head)")
    if "rope_type" in spec:
        spec.pop("type", None)
    kind = spec.get("rope_type", spec.get("type", "default"))
    if kind == "dynamic":
        spec.setdefault("max_position_embeddings", hf.get("max_position_embeddings", 2048))
    if kind == "yarn":
        spec.setdefault("original_max_position_embeddings",
                        hf.get("max_position_embeddings", 2048))
        if spec.get("factor") is None:
            spec["max_position_embeddings"] = hf.get("max_position_embeddings", 2048)
    try:
        normalize_scaling(spec)
    except ValueError as e:
        raise ValueError(f"{key}: {e}") from None
    return float(theta), spec


def _sliding_from_hf(hf: dict, model_type: str, n_layers: int) -> int:
    """The sliding window W (0: none) of a config whose layers are all of one type."""
    window = hf.get("sliding_window")
    if model_type == "mistral":
        _refuse(bool(hf.get("layer_types")), "layer_types is not supported for mistral "
                "(alternating full/sliding layers, Ministral)")
        return int(window or 0)
    if model_type not in ("qwen2", "qwen3"):
        return 0
    types = hf.get("layer_types")
    if not types:
        use = bool(hf.get("use_sliding_window")) and window is not None
        first = hf.get("max_window_layers", n_layers)
        if first is None:
            first = n_layers
        types = ["sliding_attention" if use and i >= first else "full_attention"
                 for i in range(n_layers)]
    kinds = set(types)
    _refuse(not kinds <= {"full_attention", "sliding_attention"},
            f"layer_types {sorted(kinds)} are not supported")
    _refuse(len(kinds) > 1, "layer_types / use_sliding_window + max_window_layers mix full and "
            "sliding attention layers: not supported (one attention type for every layer)")
    return int(window) if kinds == {"sliding_attention"} else 0


def _config_from_hf(hf: dict) -> TransformerConfig:
    model_type = hf.get("model_type")
    if model_type in TEXT_MODEL_OF:
        _refuse(bool(hf.get("quantization_config")),
                "quantization_config: quantized checkpoints are not supported")
        unknown = sorted(set(hf) - set(MATH_KEYS[model_type]) - NON_MATH_KEYS)
        if unknown:
            warnings.warn(f"config.json keys {unknown} are not known to alignax's {model_type} "
                          f"import and are ignored", stacklevel=3)
        text = dict(hf.get("text_config") or {})
        _refuse(not text, f"model_type {model_type!r}: config.json has no text_config")
        return _config_from_hf({**text, "model_type": TEXT_MODEL_OF[model_type]})
    if model_type in REFUSED_FAMILIES:
        raise ValueError(f"model_type {model_type!r} is not supported: "
                         f"{REFUSED_FAMILIES[model_type]}")
    if model_type not in SUPPORTED:
        raise ValueError(f"unsupported model_type {model_type!r}; supported: {SUPPORTED}")
    unknown = sorted(set(hf) - set(MATH_KEYS[model_type]) - NON_MATH_KEYS)
    if unknown:
        warnings.warn(f"config.json keys {unknown} are not known to alignax's {model_type} "
                      f"import and are ignored", stacklevel=3)
    _refuse(bool(hf.get("quantization_config")),
            "quantization_config: quantized checkpoints are not supported")
    if model_type == "gpt2":
        return _gpt2_config_from_hf(hf)
    if model_type in GEMMA:
        return _gemma_config_from_hf(hf, model_type)
    for flag in ("mlp_bias", "attention_bias"):
        _refuse(bool(hf.get(flag)), f"{flag}=True is not supported for {model_type}")
    act = hf.get("hidden_act", "silu")
    _refuse(act != "silu", f"hidden_act={act!r} is not supported (SwiGLU with silu only)")
    d, heads = hf["hidden_size"], hf["num_attention_heads"]
    head_dim = hf.get("head_dim") or d // heads
    theta, scaling = _rope_scaling_from_hf(hf)
    n_layers = hf["num_hidden_layers"]
    return TransformerConfig(
        vocab_size=hf["vocab_size"],
        d_model=d,
        n_layers=n_layers,
        n_heads=heads,
        n_kv_heads=hf.get("num_key_value_heads") or heads,
        d_ff=hf["intermediate_size"],
        max_len=hf.get("max_position_embeddings", 2048),
        rope_theta=theta,
        norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
        tie_embeddings=bool(hf.get("tie_word_embeddings", False)),
        qkv_bias=model_type == "qwen2",
        attn_head_dim=None if head_dim * heads == d else head_dim,
        qk_norm=model_type == "qwen3",
        sliding_window=_sliding_from_hf(hf, model_type, n_layers),
        rope_scaling=scaling,
        score_bias=False,
    )


def _gemma_layer_types(hf: dict, model_type: str, n_layers: int) -> list[str]:
    """config.json's layer_types, or the default pattern transformers builds without it (Gemma
    2: sliding, full, ...; Gemma 3: every `sliding_window_pattern`-th layer full, default 6)."""
    types = hf.get("layer_types")
    if types:
        _refuse(len(types) != n_layers, f"layer_types has {len(types)} entries for "
                f"num_hidden_layers={n_layers}")
        return list(types)
    every = 2 if model_type == "gemma2" else int(
        hf.get("sliding_window_pattern") or hf.get("_sliding_window_pattern") or 6)
    return ["sliding_attention" if (i + 1) % every else "full_attention"
            for i in range(n_layers)]


def _gemma3_rope_from_hf(hf: dict) -> tuple[float, dict, float]:
    """(full-layer theta, full-layer scaling, sliding-layer theta) of a gemma3_text config:
    rope_parameters nested by layer type (transformers 5), or rope_theta + rope_scaling +
    rope_local_base_freq (older)."""
    params = hf.get("rope_parameters") or {}
    if "full_attention" in params or "sliding_attention" in params:
        full = dict(params.get("full_attention") or {})
        local = dict(params.get("sliding_attention") or {})
        key = "rope_parameters"
    else:
        full = {**(hf.get("rope_scaling") or {}), **params}
        full.setdefault("rope_theta", hf.get("rope_theta", 1e6))
        local = {"rope_type": "default", "rope_theta": hf.get("rope_local_base_freq", 1e4)}
        key = "rope_scaling"
    local_type = local.get("rope_type", local.get("type", "default"))
    _refuse(local_type != "default", f"rope_parameters: sliding_attention rope_type "
            f"{local_type!r} is not supported (only the full layers' rope may be scaled)")
    try:
        theta, scaling = _rope_scaling_from_hf({"rope_parameters": full,
                                                "max_position_embeddings":
                                                    hf.get("max_position_embeddings", 2048)})
    except ValueError as e:
        raise ValueError(f"{key}: {e}") from None
    return theta, scaling, float(local.get("rope_theta", 1e4))


# transformers' class defaults of the Gemma keys a config.json may leave out
_GEMMA_DEFAULTS = {
    "gemma2": {"head_dim": 256, "query_pre_attn_scalar": 256, "sliding_window": 4096,
               "attn_logit_softcapping": 50.0, "final_logit_softcapping": 30.0,
               "max_position_embeddings": 8192, "num_key_value_heads": 4},
    "gemma3_text": {"head_dim": 256, "query_pre_attn_scalar": 256, "sliding_window": 4096,
                    "attn_logit_softcapping": None, "final_logit_softcapping": None,
                    "max_position_embeddings": 131072, "num_key_value_heads": 4},
}


def _gemma_config_from_hf(hf: dict, model_type: str) -> TransformerConfig:
    """Gemma 2 / Gemma 3 text: see the module docstring for the math. Keys left out take
    transformers' class defaults (`_GEMMA_DEFAULTS`, e.g. Gemma 2's soft caps 50 and 30)."""
    hf = {**_GEMMA_DEFAULTS[model_type], **hf}
    _refuse(bool(hf.get("attention_bias")), f"attention_bias=True is not supported for "
            f"{model_type}")
    _refuse(bool(hf.get("use_bidirectional_attention")),
            "use_bidirectional_attention=True is not supported (causal decoders only)")
    act = hf.get("hidden_activation") or "gelu_pytorch_tanh"
    _refuse(act not in _GELU_TANH, f"hidden_activation={act!r} is not supported (GeGLU with "
            f"the tanh GELU only: {_GELU_TANH})")
    if model_type == "gemma3_text":
        _refuse(hf.get("attn_logit_softcapping") is not None,
                "attn_logit_softcapping is set, but transformers' Gemma 3 attention does not "
                "apply it; refused as ambiguous")
        theta, scaling, local_theta = _gemma3_rope_from_hf(hf)
    else:
        theta, scaling = _rope_scaling_from_hf(hf)
        local_theta = 0.0
    n_layers = hf["num_hidden_layers"]
    types = _gemma_layer_types(hf, model_type, n_layers)
    _refuse(not set(types) <= {"full_attention", "sliding_attention"},
            f"layer_types {sorted(set(types))} are not supported")
    sliding = tuple(t == "sliding_attention" for t in types)
    window = hf.get("sliding_window")
    _refuse(any(sliding) and not window, "layer_types has sliding layers but sliding_window is "
            "not set")
    if not any(sliding):
        sliding, window, local_theta = (), 0, 0.0
    if local_theta == theta and not scaling:
        local_theta = 0.0  # one rotary table serves every layer
    d, heads = hf["hidden_size"], hf["num_attention_heads"]
    head_dim = hf["head_dim"] or d // heads
    qpas = hf["query_pre_attn_scalar"]
    return TransformerConfig(
        vocab_size=hf["vocab_size"], d_model=d, n_layers=n_layers, n_heads=heads,
        n_kv_heads=hf.get("num_key_value_heads") or heads, d_ff=hf["intermediate_size"],
        max_len=hf.get("max_position_embeddings", 8192), rope_theta=theta,
        norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
        tie_embeddings=bool(hf.get("tie_word_embeddings", True)),
        norm="rms_offset", mlp="geglu", scale_embeddings=True, post_norms=True,
        attn_head_dim=None if head_dim * heads == d else head_dim,
        qk_norm=model_type == "gemma3_text",
        attn_scale=float(qpas) ** -0.5,
        attn_softcap=float(hf.get("attn_logit_softcapping") or 0.0),
        logits_softcap=float(hf.get("final_logit_softcapping") or 0.0),
        sliding_window=int(window or 0) if any(sliding) else 0, sliding_layers=sliding,
        rope_local_theta=local_theta, rope_scaling=scaling, score_bias=False,
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
        tie_embeddings=bool(hf.get("tie_word_embeddings", True)), score_bias=False)


def config_to_hf(cfg: TransformerConfig, *, model_type: str, kind: str) -> dict:
    """config.json dict of `cfg` as a checkpoint of `model_type` (`SUPPORTED`); a one-line
    ValueError when the architecture is not that family's."""
    if model_type in TEXT_MODEL_OF:
        raise ValueError(f"model_type {model_type!r} is imported as its language model only; "
                         f"export it as {TEXT_MODEL_OF[model_type]!r}")
    if model_type not in SUPPORTED:
        raise ValueError(f"unsupported model_type {model_type!r}; supported: {SUPPORTED}")
    if model_type in GEMMA:
        return _gemma_config_to_hf(cfg, model_type, kind)
    gemma_fields = [f for f in _GEMMA_FIELDS if getattr(cfg, f) != _DEFAULT_CONFIG[f]]
    if gemma_fields:
        raise ValueError(f"{gemma_fields} cannot be written as model_type {model_type!r} (Gemma "
                         f"fields: use gemma2 or gemma3_text)")
    gpt2_like = (cfg.norm, cfg.mlp, cfg.positions, cfg.linear_bias, cfg.qkv_bias) == (
        "layer", "gelu", "learned", True, True)
    llama_like = (cfg.norm, cfg.mlp, cfg.positions, cfg.linear_bias) == (
        "rms", "swiglu", "rope", False)
    if (model_type == "gpt2" and not gpt2_like) or (model_type != "gpt2" and not llama_like):
        raise ValueError(f"this architecture cannot be written as model_type {model_type!r}")
    if model_type == "gpt2":
        if cfg.attn_head_dim is not None and cfg.attn_head_dim * cfg.n_heads != cfg.d_model:
            raise ValueError("gpt2 needs head_dim = d_model / n_heads")
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
    if cfg.qk_norm != (model_type == "qwen3"):
        raise ValueError(f"qk_norm={cfg.qk_norm} does not fit model_type {model_type!r}")
    if cfg.sliding_window and model_type == "llama":
        raise ValueError("sliding_window does not fit model_type 'llama' (use mistral, qwen2 "
                         "or qwen3)")
    head = "ForCausalLM" if kind == "lm" else "ForSequenceClassification"
    scaling = dict(cfg.rope_scaling)
    if scaling.get("max_position_embeddings", cfg.max_len) != cfg.max_len:
        raise ValueError("rope_scaling's max_position_embeddings must equal max_len to be "
                         "written as a Hugging Face config")
    scaling.pop("max_position_embeddings", None)  # transformers reads config's own
    rope = {**(scaling or {"rope_type": "default"}), "rope_theta": cfg.rope_theta}
    out = {
        "model_type": model_type,
        "architectures": [_ARCH[model_type] + head],
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.d_model,
        "num_hidden_layers": cfg.n_layers,
        "num_attention_heads": cfg.n_heads,
        "num_key_value_heads": cfg.kv_heads,
        "head_dim": cfg.head_dim,
        "intermediate_size": cfg.d_ff,
        "max_position_embeddings": cfg.max_len,
        "rope_parameters": rope,
        # also the pre-5.0 spelling, for transformers 4.x and other readers (vLLM, llama.cpp)
        "rope_theta": cfg.rope_theta,
        "rope_scaling": scaling or None,
        "rms_norm_eps": cfg.norm_eps,
        "tie_word_embeddings": cfg.tie_embeddings,
        "hidden_act": "silu",
        "torch_dtype": "float32",
    }
    if model_type in ("llama", "qwen3"):
        out["attention_bias"] = False
    if model_type == "mistral":
        out["sliding_window"] = cfg.sliding_window or None
    if model_type in ("qwen2", "qwen3"):
        out["use_sliding_window"] = bool(cfg.sliding_window)
        out["sliding_window"] = cfg.sliding_window or None
        out["max_window_layers"] = 0 if cfg.sliding_window else cfg.n_layers
        out["layer_types"] = [("sliding_attention" if cfg.sliding_window else "full_attention")
                              for _ in range(cfg.n_layers)]
    if kind == "reward":
        out["num_labels"] = 1
    return out


_GEMMA_FIELDS = ("scale_embeddings", "post_norms", "attn_scale", "attn_softcap",
                 "logits_softcap", "sliding_layers", "rope_local_theta")
_DEFAULT_CONFIG = {f.name: f.default for f in dataclasses.fields(TransformerConfig)}


def _query_pre_attn_scalar(cfg: TransformerConfig) -> int | float:
    """query_pre_attn_scalar q with q^-1/2 == cfg.attn_scale (an int when one fits)."""
    scale = cfg.attn_scale if cfg.attn_scale is not None else cfg.head_dim ** -0.5
    q = 1.0 / scale ** 2
    return int(round(q)) if abs(q - round(q)) < 1e-9 * q and round(q) ** -0.5 == scale else q


def _gemma_config_to_hf(cfg: TransformerConfig, model_type: str, kind: str) -> dict:
    """config.json of a Gemma 2 / Gemma 3 text checkpoint (see `config_to_hf`)."""
    gemma_like = (cfg.norm, cfg.mlp, cfg.positions, cfg.linear_bias, cfg.qkv_bias,
                  cfg.scale_embeddings, cfg.post_norms) == (
        "rms_offset", "geglu", "rope", False, False, True, True)
    if not gemma_like:
        raise ValueError(f"this architecture cannot be written as model_type {model_type!r} "
                         f"(needs norm='rms_offset', mlp='geglu', rope, no biases, "
                         f"scale_embeddings and post_norms)")
    gemma3 = model_type == "gemma3_text"
    if cfg.qk_norm != gemma3:
        raise ValueError(f"qk_norm={cfg.qk_norm} does not fit model_type {model_type!r}")
    if gemma3 and cfg.attn_softcap:
        raise ValueError("attn_softcap does not fit model_type 'gemma3_text' (transformers' "
                         "Gemma 3 does not apply it)")
    if not gemma3 and cfg.rope_local_theta:
        raise ValueError("rope_local_theta does not fit model_type 'gemma2' (one rope for "
                         "every layer)")
    scaling = dict(cfg.rope_scaling)
    if scaling.get("max_position_embeddings", cfg.max_len) != cfg.max_len:
        raise ValueError("rope_scaling's max_position_embeddings must equal max_len to be "
                         "written as a Hugging Face config")
    scaling.pop("max_position_embeddings", None)
    full_rope = {**(scaling or {"rope_type": "default"}), "rope_theta": cfg.rope_theta}
    if gemma3:
        local = {"rope_type": "default", "rope_theta": cfg.rope_local_theta or cfg.rope_theta}
        if not cfg.rope_local_theta and scaling:
            raise ValueError("gemma3_text scales the rope of the full layers only; set "
                             "rope_local_theta (e.g. rope_theta) for the sliding layers")
        rope = {"full_attention": full_rope, "sliding_attention": local}
    else:
        rope = full_rope
    sliding = cfg.layer_sliding
    head = ("ForCausalLM" if kind == "lm" else
            ("TextForSequenceClassification" if gemma3 else "ForSequenceClassification"))
    out = {
        "model_type": model_type,
        "architectures": [_ARCH[model_type] + head],
        "vocab_size": cfg.vocab_size, "hidden_size": cfg.d_model,
        "intermediate_size": cfg.d_ff, "num_hidden_layers": cfg.n_layers,
        "num_attention_heads": cfg.n_heads, "num_key_value_heads": cfg.kv_heads,
        "head_dim": cfg.head_dim, "hidden_activation": "gelu_pytorch_tanh",
        "max_position_embeddings": cfg.max_len, "rms_norm_eps": cfg.norm_eps,
        "tie_word_embeddings": cfg.tie_embeddings, "rope_parameters": rope,
        "attention_bias": False, "query_pre_attn_scalar": _query_pre_attn_scalar(cfg),
        "sliding_window": cfg.sliding_window or None,
        "layer_types": ["sliding_attention" if f else "full_attention" for f in sliding],
        "final_logit_softcapping": cfg.logits_softcap or None,
        "attn_logit_softcapping": cfg.attn_softcap or None,
        "use_bidirectional_attention": False,
        "torch_dtype": "float32",
    }
    if kind == "reward":
        out["num_labels"] = 1
    return out


# ------------------------------------------------------------------------------------------
# tensor names: HF name -> (alignax path, transpose?, column slice of a fused tensor or None)
# ------------------------------------------------------------------------------------------

def _layer_map(cfg: TransformerConfig, i: int) -> dict[str, tuple]:
    """HF tensor name -> (alignax path, transpose?, None) for decoder layer i."""
    hf, ax = f"model.layers.{i}.", ("decoder", "layers", i)
    if cfg.post_norms:  # Gemma: post_attention_layernorm normalises the attention output
        norms = {"input_layernorm": "attn_norm", "post_attention_layernorm": "attn_post_norm",
                 "pre_feedforward_layernorm": "mlp_norm",
                 "post_feedforward_layernorm": "mlp_post_norm"}
    else:
        norms = {"input_layernorm": "attn_norm", "post_attention_layernorm": "mlp_norm"}
    m = {hf + f"{name}.weight": (ax + (ours, "scale"), False, None)
         for name, ours in norms.items()}
    m.update({
        hf + "self_attn.o_proj.weight": (ax + ("attn", "o", "kernel"), True, None),
        hf + "mlp.gate_proj.weight": (ax + ("mlp", "gate", "kernel"), True, None),
        hf + "mlp.up_proj.weight": (ax + ("mlp", "up", "kernel"), True, None),
        hf + "mlp.down_proj.weight": (ax + ("mlp", "down", "kernel"), True, None),
    })
    for p in ("q", "k", "v"):
        m[hf + f"self_attn.{p}_proj.weight"] = (ax + ("attn", p, "kernel"), True, None)
        if cfg.qkv_bias:
            m[hf + f"self_attn.{p}_proj.bias"] = (ax + ("attn", p, "bias"), False, None)
    if cfg.qk_norm:
        for p in ("q", "k"):
            m[hf + f"self_attn.{p}_norm.weight"] = (ax + ("attn", f"{p}_norm", "scale"), False,
                                                    None)
    return m


def _gpt2_name_map(cfg: TransformerConfig, kind: str) -> dict[str, tuple]:
    """HF GPT-2 name -> (alignax path, transpose, column slice of a fused c_attn or None).

    GPT-2 uses Conv1D layers stored [in, out], like alignax: no transposes. c_attn fuses q, k, v
    along its output columns (names "<c_attn>#q" etc.).
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


def _gpt2_file_name(name: str) -> str | None:
    """The HF GPT-2 parameter name of a checkpoint tensor name (the "transformer." prefix
    stripped), or None for the non-parameter attention-mask buffers of old checkpoints."""
    name = name[len("transformer."):] if name.startswith("transformer.") else name
    if name.endswith(("attn.bias", "attn.masked_bias")) and name.count(".") == 3:
        return None  # h.{i}.attn.bias: the causal-mask buffer (c_attn.bias has 4 dots)
    return name


def _text_model_name(name: str) -> str | None:
    """The text-model (gemma3_text) name of a multimodal checkpoint's tensor, or None for the
    vision tower and projector (skipped)."""
    if name.startswith(_SKIPPED_PREFIXES):
        return None
    for prefix, new in _TEXT_PREFIXES:
        if name.startswith(prefix):
            return new + name[len(prefix):]
    return name


def _name_map(cfg: TransformerConfig, kind: str, model_type: str = "llama") -> dict[str, tuple]:
    if model_type == "gpt2":
        return _gpt2_name_map(cfg, kind)
    m = {
        "model.embed_tokens.weight": (("decoder", "embed", "embedding"), False, None),
        "model.norm.weight": (("decoder", "final_norm", "scale"), False, None),
    }
    for i in range(cfg.n_layers):
        m.update(_layer_map(cfg, i))
    if kind == "lm" and not cfg.tie_embeddings:
        m["lm_head.weight"] = (("lm_head", "kernel"), True, None)
    if kind == "reward":
        m["score.weight"] = (("score", "kernel"), True, None)
    return m


def _get(tree, path):
    for k in path:
        tree = tree[k]
    return tree


# ------------------------------------------------------------------------------------------
# reading: shard by shard
# ------------------------------------------------------------------------------------------

def _shard_files(path: str) -> list[str]:
    """The checkpoint's *.safetensors files: those model.safetensors.index.json names when
    there is one, else every *.safetensors of the folder; sorted (shard order)."""
    index = os.path.join(path, "model.safetensors.index.json")
    if os.path.exists(index):
        with open(index, encoding="utf-8") as f:
            weight_map = json.load(f).get("weight_map", {})
        return [os.path.join(path, f) for f in sorted(set(weight_map.values()))]
    files = sorted(glob.glob(os.path.join(path, "*.safetensors")))
    if not files:
        raise FileNotFoundError(f"no *.safetensors files in {path}")
    return files


def _open_shard(file: str):
    """A safetensors file opened for reading tensors one at a time (numpy, any dtype)."""
    try:
        return safe_open(file, framework="numpy")
    except (SafetensorError, OSError) as e:  # truncated or corrupt: one line
        raise ValueError(f"{file}: not a readable safetensors file ({e})") from None


def _shard_names(files: list[str]) -> dict[str, list[str]]:
    """file -> its tensor names (headers only: no tensor data is read)."""
    out = {}
    for file in files:
        with _open_shard(file) as f:
            out[file] = list(f.keys())
    return out


def read_safetensors(path: str) -> dict[str, np.ndarray]:
    """All tensors of a checkpoint folder (one or several *.safetensors shards) as numpy; a
    corrupt or truncated shard is a one-line ValueError naming it. (`import_hf` does not use
    it: it reads one tensor at a time.)"""
    tensors: dict[str, np.ndarray] = {}
    for file in _shard_files(path):
        try:
            tensors.update(load_file(file))
        except SafetensorError as e:
            raise ValueError(f"{file}: not a readable safetensors file ({e})") from None
    return tensors


def _convert(value: np.ndarray, dtype) -> np.ndarray:
    """`value` in `dtype`, C-contiguous: one copy (none when it already is)."""
    return np.ascontiguousarray(value, dtype=dtype)


class _Writer:
    """Fills the parameter tree leaf by leaf: an unstacked leaf is final when its tensor
    arrives; a stacked leaf ([L, ...], `scan_layers`) when all L layers have. Final leaves stay
    numpy on the host without a mesh, else are placed with their NamedSharding (stacked leaves
    are then built on the devices, one layer slice at a time, by a donated in-place update)."""

    def __init__(self, abstract, shardings, stacked: bool):
        self.params = abstract  # ShapeDtypeStruct leaves, replaced as they are filled
        self.shardings = shardings
        self.stacked = stacked
        self.pending: dict[tuple, Any] = {}  # stacked leaf path -> [buffer, layers left]

    def _leaf_path(self, path):
        if self.stacked and path[:2] == ("decoder", "layers"):
            return path[:2] + path[3:], path[2]
        return path, None

    def write(self, path, value: np.ndarray, name: str, where: str) -> None:
        leaf_path, layer = self._leaf_path(path)
        holder, key = _get(self.params, leaf_path[:-1]), leaf_path[-1]
        spec = holder[key] if layer is None else self.pending.get(leaf_path, [holder[key]])[0]
        shape = spec.shape if layer is None else spec.shape[1:]
        if value.shape != tuple(shape):
            raise ValueError(f"{where}: {name}: shape {value.shape} does not fit {path} "
                             f"{tuple(shape)} (does config.json match the weights?)")
        value = _convert(value, spec.dtype)
        sharding = None if self.shardings is None else _get(self.shardings, leaf_path)
        if layer is None:
            holder[key] = value if sharding is None else jax.device_put(value, sharding)
            return
        if leaf_path not in self.pending:
            n = spec.shape[0]
            if sharding is None:
                buf = np.empty(spec.shape, spec.dtype)
            else:
                buf = jax.jit(lambda: jnp.zeros(spec.shape, spec.dtype),
                              out_shardings=sharding)()
            self.pending[leaf_path] = [buf, n]
        entry = self.pending[leaf_path]
        if sharding is None:
            entry[0][layer] = value
        else:
            slice_sharding = jax.sharding.NamedSharding(sharding.mesh,
                                                        PartitionSpec(*sharding.spec[1:]))
            entry[0] = _set_layer(entry[0], jax.device_put(value, slice_sharding), layer)
        entry[1] -= 1
        if entry[1] == 0:
            holder[key] = entry[0]
            del self.pending[leaf_path]


    def finish(self):
        """The tree, with the parameters no checkpoint tensor fills (the score head's bias,
        which Hugging Face's score layer does not have) set to zeros."""
        if self.pending:  # unreachable when the name map covers every layer
            raise ValueError(f"incomplete stacked parameters {sorted(self.pending)}")

        def zeros(spec, sharding=None):
            if not isinstance(spec, jax.ShapeDtypeStruct):
                return spec
            value = np.zeros(spec.shape, spec.dtype)
            return value if sharding is None else jax.device_put(value, sharding)

        if self.shardings is None:
            return jax.tree.map(zeros, self.params)
        return jax.tree.map(zeros, self.params, self.shardings)


@functools.partial(jax.jit, donate_argnums=0)
def _set_layer(buf, value, i):
    return jax.lax.dynamic_update_index_in_dim(buf, value.astype(buf.dtype), i, 0)


def import_hf(path: str, *, kind: str = "lm", mesh: Mesh | None = None, rules=None,
              **overrides) -> tuple[Model, dict]:
    """Loads a checkpoint folder of a `SUPPORTED` family as (Model, params), streaming.

    The shards are read one after the other (in the order of model.safetensors.index.json),
    each tensor once: converted into its parameter's dtype (a bfloat16 checkpoint imported with
    param_dtype="bfloat16" is never upcast; with the default float32 each tensor is upcast on
    its own) and put in its slot, so the host never holds more than one shard's open file plus
    the tensor in hand (and, without a mesh, the result). With `mesh`, each parameter is placed
    on the devices as it is read, with the NamedSharding of its logical axes
    (`alignax.train.sharding.param_shardings`): the result is the sharded tree, equal to
    `jax.device_put` of the host import.

    Args:
      path: folder with config.json and *.safetensors (one file or index + shards).
      kind: "lm" (causal LM) or "reward" (sequence classification with one label: the score head
        reads the last valid token, whatever the padding side).
      mesh: a device mesh (`alignax.train.sharding.make_mesh`); None keeps numpy arrays on the
        host.
      rules: logical-axis rules for the mesh (default `alignax.train.sharding.DEFAULT_RULES`).
      **overrides: `RUNTIME_FIELDS` of the TransformerConfig (e.g. scan_layers=True: params in
        the stacked layout).

    Raises:
      ValueError: unsupported architecture or config key, missing or unexpected tensors, wrong
        shapes, unreadable shards.
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
    model_type = hf["model_type"]
    model = {"lm": make_lm, "reward": make_reward_model}[kind](cfg)
    abstract = jax.eval_shape(model.init, jax.random.key(0))
    shardings = None
    if mesh is not None:
        from alignax._src.logical import DEFAULT_RULES, param_shardings

        shardings = param_shardings(abstract, model.logical_axes(abstract), mesh,
                                    DEFAULT_RULES if rules is None else rules)
    names = _name_map(cfg, kind, model_type)
    files = _shard_files(path)
    in_files = _shard_names(files)
    rename = (_gpt2_file_name if model_type == "gpt2" else
              _text_model_name if model_type in TEXT_MODEL_OF else (lambda n: n))
    targets: dict[str, list] = {}  # HF name -> its entries of `names` (fused: several)
    for name, entry in names.items():
        targets.setdefault(name.split("#")[0], []).append((name, entry))
    present = {rename(n) for names_ in in_files.values() for n in names_} - {None}
    missing = sorted(set(targets) - present)
    if missing:
        more = "..." if len(missing) > 5 else ""
        raise ValueError(f"{path}: missing tensors {missing[:5]}{more}")
    ignored = {"lm_head.weight"} if cfg.tie_embeddings or kind == "reward" else set()
    unexpected = sorted(n for n in present - set(targets) - ignored
                        if not n.endswith("rotary_emb.inv_freq"))
    if unexpected:
        raise ValueError(f"{path}: unexpected tensors {unexpected[:5]}")
    writer = _Writer(abstract, shardings, cfg.scan_layers)
    done = set()
    for file in files:
        with _open_shard(file) as f:
            for stored in in_files[file]:
                name = rename(stored)
                if name not in targets or name in done:
                    continue
                done.add(name)
                value = f.get_tensor(stored)
                for full, (target, transpose, cols) in targets[name]:
                    part = value if cols is None else value[..., cols]
                    writer.write(target, part.T if transpose else part, full, path)
                del value
    return model, writer.finish()


# ------------------------------------------------------------------------------------------
# writing: sharded safetensors, tokenizer files, generation config
# ------------------------------------------------------------------------------------------

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   "tokenizer.model", "vocab.json", "merges.txt", "added_tokens.json",
                   "chat_template.jinja", "chat_template.json")
_DTYPES = {"float32": np.float32, "bfloat16": jnp.bfloat16, "float16": np.float16}


def _parse_size(size) -> int:
    """Bytes of an int or a string such as "5GB", "500MB", "64KiB"."""
    if isinstance(size, int) and size > 0:
        return size
    units = {"KB": 10**3, "MB": 10**6, "GB": 10**9, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30,
             "B": 1}
    text = str(size).strip().upper()
    for unit, mult in sorted(units.items(), key=lambda u: -len(u[0])):
        if text.endswith(unit):
            try:
                value = float(text[: -len(unit)])
            except ValueError:
                break
            if value > 0:
                return int(value * mult)
    raise ValueError(f"max_shard_size must be a positive int or e.g. '5GB', got {size!r}")


def _export_tensors(cfg, kind, params, model_type):
    """(HF name, host array) pairs in checkpoint order, one parameter fetched at a time (a
    stacked leaf's layer slice, not the whole stack); GPT-2's q, k, v fused into c_attn."""
    stacked = layers_stacked(params)
    fused: dict[str, list] = {}

    def fetch(path):
        if stacked and path[:2] == ("decoder", "layers"):
            return np.asarray(_get(params, path[:2] + path[3:])[path[2]])
        return np.asarray(_get(params, path))

    for name, (source, transpose, cols) in _name_map(cfg, kind, model_type).items():
        value = fetch(source)
        value = value.T if transpose else value
        prefix = ("transformer." if model_type == "gpt2"
                  and not name.startswith(("lm_head", "score")) else "")
        if cols is not None:  # q, k, v of a fused c_attn, in order
            parts = fused.setdefault(prefix + name.split("#")[0], [])
            parts.append(value)
            if len(parts) == 3:
                yield prefix + name.split("#")[0], np.concatenate(parts, axis=-1)
            continue
        yield prefix + name, value


def export_hf(model: Model, params: Any, path: str, *, model_type: str = "llama",
              dtype: str | None = None, max_shard_size: int | str = "5GB",
              tokenizer_dir: str | None = None, generation_config: dict | None = None,
              config_extra: dict | None = None) -> None:
    """Writes a checkpoint folder that transformers' Auto classes load: config.json, the
    weights as safetensors shards of at most `max_shard_size` bytes (one model.safetensors, or
    model-0000i-of-0000n.safetensors + model.safetensors.index.json), the tokenizer files of
    `tokenizer_dir` and generation_config.json.

    Args:
      model, params: the model and its parameters in either layout (stacked by `scan_layers`
        or not), on the host or on devices (fetched one tensor at a time).
      path: output folder (created).
      model_type: one of `SUPPORTED`; the architecture must fit it (`config_to_hf`).
      dtype: "float32", "bfloat16" or "float16" for every tensor; None: each parameter's own
        dtype. config.json's torch_dtype is the embedding's.
      max_shard_size: bytes per shard (int, or "5GB", "500MB", ...); a tensor larger than it
        gets a shard of its own.
      tokenizer_dir: a folder whose tokenizer files (`TOKENIZER_FILES`, and its
        generation_config.json unless `generation_config` is given) are copied.
      generation_config: the generation_config.json dict; by default the tokenizer folder's,
        else one built from the bos/eos/pad ids of `config_extra`.
      config_extra: keys added to config.json (e.g. bos_token_id, eos_token_id).
    """
    cfg = model.config
    kind = "reward" if "score" in params else "lm"
    hf_config = config_to_hf(cfg, model_type=model_type, kind=kind)  # validates first
    if dtype is not None and dtype not in _DTYPES:
        raise ValueError(f"dtype must be None or one of {sorted(_DTYPES)}, got {dtype!r}")
    limit = _parse_size(max_shard_size)
    if kind == "reward" and "bias" in params["score"] and np.any(
            np.asarray(params["score"]["bias"]) != 0):
        raise ValueError("the score head has a bias; Hugging Face's score layer has none")
    embed_dtype = np.asarray(params["decoder"]["embed"]["embedding"][:1]).dtype
    hf_config["torch_dtype"] = str(np.dtype(_DTYPES[dtype]) if dtype else embed_dtype)
    hf_config.update(config_extra or {})
    os.makedirs(path, exist_ok=True)
    shards: list[dict[str, np.ndarray]] = [{}]
    sizes = [0]
    files: list[str] = []

    def flush(final: bool):
        # a shard is written as soon as it is full; the names get their "of n" at the end
        if shards[-1]:
            name = f"model-part-{len(files):05d}.safetensors"
            save_file(shards[-1], os.path.join(path, name), metadata={"format": "pt"})
            files.append(name)
        if not final:
            shards.append({})
            sizes.append(0)

    weight_map = {}
    for name, value in _export_tensors(cfg, kind, params, model_type):
        value = np.ascontiguousarray(value, dtype=_DTYPES[dtype] if dtype else value.dtype)
        if sizes[-1] and sizes[-1] + value.nbytes > limit:
            flush(final=False)
        shards[-1][name] = value
        sizes[-1] += value.nbytes
        weight_map[name] = len(files)
    flush(final=True)
    total = sum(os.path.getsize(os.path.join(path, f)) for f in files)
    for stale in glob.glob(os.path.join(path, "model*.safetensors*")):
        if os.path.basename(stale) not in files:
            os.remove(stale)
    if len(files) == 1:
        os.replace(os.path.join(path, files[0]), os.path.join(path, "model.safetensors"))
    else:
        final = [f"model-{i + 1:05d}-of-{len(files):05d}.safetensors" for i in range(len(files))]
        for old, new in zip(files, final):
            os.replace(os.path.join(path, old), os.path.join(path, new))
        index = {"metadata": {"total_size": total},
                 "weight_map": {n: final[i] for n, i in sorted(weight_map.items())}}
        with open(os.path.join(path, "model.safetensors.index.json"), "w") as f:
            json.dump(index, f, indent=2)
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(hf_config, f, indent=2)
    _write_tokenizer_and_generation(path, tokenizer_dir, generation_config, hf_config)


def _write_tokenizer_and_generation(path, tokenizer_dir, generation_config, hf_config):
    if tokenizer_dir is not None:
        if not os.path.isdir(tokenizer_dir):
            raise ValueError(f"tokenizer_dir {tokenizer_dir!r} is not a folder")
        copied = [f for f in TOKENIZER_FILES if os.path.exists(os.path.join(tokenizer_dir, f))]
        if not copied:
            raise ValueError(f"tokenizer_dir {tokenizer_dir!r} has none of {TOKENIZER_FILES}")
        for f in copied:
            shutil.copyfile(os.path.join(tokenizer_dir, f), os.path.join(path, f))
        source = os.path.join(tokenizer_dir, "generation_config.json")
        if generation_config is None and os.path.exists(source):
            shutil.copyfile(source, os.path.join(path, "generation_config.json"))
            return
    if generation_config is None:
        generation_config = {k: hf_config[k] for k in ("bos_token_id", "eos_token_id",
                                                       "pad_token_id") if k in hf_config}
    generation_config = {**generation_config, "transformers_version":
                         generation_config.get("transformers_version", "4.0.0")}
    with open(os.path.join(path, "generation_config.json"), "w") as f:
        json.dump(generation_config, f, indent=2)
