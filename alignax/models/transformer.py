"""Decoder-only transformer (Llama style) and its reward-model variant, as pure (init, apply) pairs.

The modules are Flax NNX; they never cross a jit boundary as objects. `mask` is boolean (padding on
either side) or integer segment ids for packed rows (0 padding, 1..k sequences): attention and
positions then stay within each packed sequence. `make_lm` and
`make_reward_model` return a `Model` of two pure functions over a nested dict of arrays:

    params = model.init(rng)
    logits = model.apply(params, input_ids, mask)          # LM:     [B, T, V]
    rewards = model.apply(params, input_ids, mask)         # reward: [B]

Every parameter has logical axis names (`model.logical_axes(params)`), mapped onto a device mesh
by `alignax.train.sharding`.

Parameter tree. Unscanned (the default) the blocks are `params["decoder"]["layers"][i]` for
i = 0..L-1 (integer keys), each the subtree of one `Block` (attn_norm, attn/{q,k,v,o}, mlp_norm,
mlp/..., and with `post_norms` attn_post_norm, mlp_post_norm). With `scan_layers=True` the L
blocks are one subtree with a leading layer axis,
`params["decoder"]["layers"]` = the subtree of one Block whose every leaf is [L, *shape]
(e.g. decoder/layers/attn/q/kernel [L, D, H*E]; logical axes ("layers", *axes)).
`stack_layers` / `unstack_layers` convert between the two exactly; `scanned.init(rng)` equals
`stack_layers(unscanned.init(rng))`.

Shapes: B batch, T tokens, D model width, H heads, K kv heads, E head dim, F MLP width, V vocab.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import re
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import PartitionSpec

from alignax._src.eager import jit_when_concrete
from alignax.models.attention import IMPLEMENTATIONS as ATTENTION_IMPLEMENTATIONS
from alignax.models.attention import attention, attention_bias  # noqa: F401 (re-exported)
from alignax.models.attention import sliding_window_mask
from alignax.models.rope import apply_rope, normalize_scaling, rope, rope_tables  # noqa: F401

Params = dict[str, Any]


REMAT_POLICIES = ("none", "full", "dots", "offload")
NORMS = ("rms", "layer", "rms_offset")
MLPS = ("swiglu", "gelu", "geglu")
POOLS = ("last", "last_non_pad")


def _has_host_memory() -> bool:
    """Whether the default backend's devices can address pinned host memory."""
    return "pinned_host" in {m.kind for m in jax.devices()[0].addressable_memories()}


def remat_policy(name: str):
    """The `jax.checkpoint` policy of a `TransformerConfig.remat` value (None for "none").

    Raises:
      ValueError: "offload" on a backend without pinned host memory.
    """
    if name == "none":
        return None
    if name == "full":
        return jax.checkpoint_policies.nothing_saveable
    if name == "dots":
        return jax.checkpoint_policies.dots_with_no_batch_dims_saveable
    if name == "offload":
        if not _has_host_memory():
            raise ValueError(f"remat='offload' needs pinned host memory, which the "
                             f"{jax.default_backend()} backend does not have; use 'dots' or "
                             f"'full'")
        return jax.checkpoint_policies.offload_dot_with_no_batch_dims("device", "pinned_host")
    raise ValueError(f"remat must be one of {REMAT_POLICIES}, got {name!r}")


@dataclasses.dataclass(frozen=True)
class TransformerConfig:
    """Architecture of a pre-norm decoder: Llama/Qwen2 style by default (RMSNorm, RoPE, SwiGLU,
    grouped-query attention) or GPT-2 style (`gpt2_style()`: LayerNorm, learned positions, GELU
    MLP, biases everywhere).

    Attributes:
      vocab_size: V.
      d_model: D.
      n_layers: number of decoder blocks.
      n_heads: H query heads; D must be divisible by H.
      n_kv_heads: K key/value heads (grouped-query attention); None means K = H.
      d_ff: F, the MLP hidden width.
      max_len: longest sequence (the size of the learned position table; RoPE has no table).
      rope_theta: RoPE base.
      norm_eps: normalisation epsilon.
      tie_embeddings: LM head is the transposed token embedding.
      qkv_bias: biases on the query/key/value projections (Qwen2, GPT-2).
      norm: "rms" (RMSNorm) or "layer" (LayerNorm with bias).
      mlp: "swiglu" (gate/up/down) or "gelu" (fc/proj, tanh-approximated GELU as GPT-2).
      positions: "rope" or "learned" (absolute position embeddings added to the tokens).
      linear_bias: biases on the attention output and MLP projections (GPT-2).
      dtype: compute dtype ("float32" or "bfloat16") of the activations and matmuls.
      param_dtype: the dtype every parameter is created and stored in ("float32" or
        "bfloat16"). dtype="bfloat16" with param_dtype="float32" is mixed precision with fp32
        master weights (each matmul casts its weight to bf16); both "bfloat16" is pure bf16
        (half the parameter memory; gradients come in bf16). Norm statistics are computed in
        float32 whatever the dtypes, and logits are returned in float32.
      scan_layers: the L blocks' parameters are stacked along a leading axis (see the module
        docstring for the tree) and the forward is one `jax.lax.scan` over them, so the traced
        program, the HLO and the compile time do not grow with depth (use it for deep models
        and pod compiles; on a 2-core CPU unrolled layers run about 10% faster). KV caches
        are then stacked too: {"k", "v"} of [L, B, K, S, E] (`init_cache`); a decode step
        writes only the new slots of the stacked cache in place, but XLA copies each layer's
        [B, K, S, E] slice once per step for the attention, so for decode throughput sample
        with unscanned layers (`unstack_layers` of the same params: per-layer caches updated
        in place).
      logits_chunk: 0, or C > 0: token log-probs (`CausalLM(..., targets=...)`) are computed
        over vocabulary chunks of C columns with a custom backward
        (`alignax.ops.chunked.chunked_token_logprobs`), so the [B, T, V] float32 logits and
        their gradient are never materialised (at Llama-3 shape, 2 x 4096 tokens x 128k vocab
        is 4 GiB); use it whenever the loss needs only log pi(y_t), e.g. DPO and policy
        gradients. Plain logits (`apply` without targets) are unaffected.
      remat: rematerialisation of each decoder block in the backward pass (`jax.checkpoint`
        around the block, or around the scan body), trading compute for activation memory:
        "none" keeps every intermediate for the backward; "full" keeps only each block's input
        [B, T, D] and recomputes the block (about one extra forward, activation memory O(L B T
        D) instead of O(L B T (D + F + H S))); "dots" also keeps the outputs of the projection
        matmuls (`dots_with_no_batch_dims_saveable`: q/k/v/o, MLP; attention scores and
        elementwise ops are recomputed); "offload" keeps those matmul outputs in pinned host
        memory instead of on the device (`offload_dot_with_no_batch_dims`; needs a backend
        with host memory, a one-line ValueError at apply time otherwise). Inference
        (`apply_cached`) never rematerialises. Use it with `scan_layers`: the loop fixes when
        each block is recomputed, whereas XLA:CPU schedules the recomputation of unrolled
        blocks early and its compiled temp memory hardly drops (6 layers, D 64, B 4, T 128:
        unrolled 28.2 -> 27.1 MB, scanned 30.7 -> 6.3 MB with "full", 11.7 MB with "dots").
      attention: the attention kernel (`alignax.models.attention`): "auto" picks per backend
        (CPU: "xla", the blocked custom-vjp path; GPU: cuDNN flash attention where its dtype and
        head-dim rules hold, else "dot_product"; TPU: Pallas splash attention where it applies,
        else "dot_product"), or name one of "xla", "reference", "dot_product", "cudnn",
        "splash" to override. Every implementation computes the same softmax attention (tests
        in tests/models/test_attention.py give each one's tolerance against "reference").
      attn_head_dim: E, the per-head width of queries, keys and values; None means D / H
        (then D must be divisible by H). Set it for checkpoints whose heads are wider or
        narrower than D / H (Qwen3: D 1024, H 16, E 128): q is [D, H E], o is [H E, D].
      qk_norm: RMSNorm (eps `norm_eps`, a learned [E] scale each, `attn/q_norm`, `attn/k_norm`)
        over the head dim of every query and key head before the rotary embedding, as Qwen3:
        q_h <- q_h / sqrt(mean(q_h^2) + eps) * w_q.
      sliding_window: 0 (full causal attention) or W > 0: query slot t sees only keys at slots
        s with t - s < W (W keys including itself), in every layer, on top of the causal and
        padding mask: Mistral's sliding-window attention, transformers' mask
        (`kv_idx > q_idx - W`). Slots are indices along the row (the cache slots when
        decoding), so for a row whose valid tokens are contiguous the window is over the
        previous W - 1 tokens.
      rope_scaling: the context-extension variant of the rotary embedding, as the
        (key, value) pairs of transformers' `rope_parameters` without `rope_theta` (e.g.
        (("factor", 8.0), ("high_freq_factor", 4.0), ("low_freq_factor", 1.0),
        ("original_max_position_embeddings", 8192), ("rope_type", "llama3"))); a dict is
        accepted and normalised. () is the plain embedding. The rope types and their math:
        `alignax.models.rope`.
      norm: (also) "rms_offset": RMSNorm whose learned scale is stored as an offset from 1,
        y = x / sqrt(mean(x^2) + eps) * (1 + w) with w initialised at 0, computed in float32
        and cast back (Gemma 2/3; the q/k norms of `qk_norm` then use it too).
      mlp: (also) "geglu": down(gelu_tanh(gate x) * up x), the gated MLP of Gemma 2/3
        (`hidden_activation` gelu_pytorch_tanh).
      scale_embeddings: the token embeddings are multiplied by sqrt(D), the constant rounded to
        the embedding's dtype first (Gemma: sqrt(2304) = 48.0 in bfloat16).
      post_norms: each block also normalises the attention output and the MLP output before
        adding them to the residual stream (Gemma 2/3's post_attention_layernorm and
        post_feedforward_layernorm; params attn_post_norm, mlp_post_norm):
        x += post_attn(attn(attn_norm(x))); x += post_mlp(mlp(mlp_norm(x))).
      attn_scale: the factor of the attention scores q k^T * attn_scale; None means
        1 / sqrt(E). Gemma sets query_pre_attn_scalar^-1/2.
      attn_softcap: 0, or c > 0: attention scores are soft-capped before the mask,
        s <- c tanh(s / c) (Gemma 2's attn_logit_softcapping). Runs the "xla" or "reference"
        attention ("auto" picks "xla" on every backend; the fused kernels have no cap).
      logits_softcap: 0, or c > 0: the LM logits are soft-capped, z <- c tanh(z / c), in
        float32 (Gemma 2's final_logit_softcapping); not with `logits_chunk` (the chunked
        log-softmax has no cap).
      sliding_layers: which layers use `sliding_window`: () means every layer when
        sliding_window > 0 (Mistral), else a tuple of L bools, True for a sliding (local) layer
        and False for a full (global) one (Gemma 2/3's `layer_types`). With scanned layers the
        flags are an [L] array scanned along with the blocks: each layer selects its mask (and
        its rotary table, `rope_local_theta`) from the two computed once.
      rope_local_theta: 0, or the RoPE base of the sliding layers (Gemma 3's
        rope_local_base_freq), which then use the plain rotary embedding while the full layers
        use `rope_theta` and `rope_scaling`. Needs sliding layers.
      score_bias: the scalar reward head (`make_reward_model`) has a bias. True for the
        from-scratch reward models; False for checkpoints from Hugging Face, whose `score`
        layer has none (`alignax.models.hf` sets it), so the model and its export match
        transformers exactly.
      pool: where the scalar reward model reads the hidden state: "last" (default: the last
        valid token of the mask) or "last_non_pad": the last slot whose token id differs from
        `pad_token_id`, whatever the mask (transformers' sequence classifiers). They differ only
        when the pad id also occurs as a real token, e.g. pad == eos (TRL pads with eos when a
        tokenizer has no pad token): "last" scores the trailing eos, "last_non_pad" the token
        before it. Use "last_non_pad" to reproduce the scores of such a checkpoint in
        transformers (RewardBench); train with "last".
      pad_token_id: the pad id of pool="last_non_pad" (None otherwise).
    """

    vocab_size: int = 32
    d_model: int = 64
    n_layers: int = 2
    n_heads: int = 4
    n_kv_heads: int | None = None
    d_ff: int = 176
    max_len: int = 64
    rope_theta: float = 10000.0
    norm_eps: float = 1e-6
    tie_embeddings: bool = True
    qkv_bias: bool = False
    norm: str = "rms"
    mlp: str = "swiglu"
    positions: str = "rope"
    linear_bias: bool = False
    dtype: str = "float32"
    param_dtype: str = "float32"
    scan_layers: bool = False
    remat: str = "none"
    logits_chunk: int = 0
    attention: str = "auto"
    attn_head_dim: int | None = None
    qk_norm: bool = False
    sliding_window: int = 0
    rope_scaling: Any = ()
    scale_embeddings: bool = False
    post_norms: bool = False
    attn_scale: float | None = None
    attn_softcap: float = 0.0
    logits_softcap: float = 0.0
    sliding_layers: tuple = ()
    rope_local_theta: float = 0.0
    score_bias: bool = True
    pool: str = "last"
    pad_token_id: int | None = None

    def __post_init__(self):
        object.__setattr__(self, "rope_scaling", normalize_scaling(self.rope_scaling))
        if isinstance(self.sliding_layers, (list, tuple)):
            object.__setattr__(self, "sliding_layers", tuple(self.sliding_layers))
        if self.rope_scaling and self.positions != "rope":
            raise ValueError("rope_scaling needs positions='rope'")
        if self.attn_head_dim is not None and (
                not isinstance(self.attn_head_dim, int) or self.attn_head_dim <= 0
                or self.attn_head_dim % 2):
            raise ValueError(f"attn_head_dim must be None or an even int > 0, got "
                             f"{self.attn_head_dim!r}")
        if (not isinstance(self.sliding_window, int) or isinstance(self.sliding_window, bool)
                or self.sliding_window < 0):
            raise ValueError(f"sliding_window must be an int >= 0, got {self.sliding_window!r}")
        if not isinstance(self.qk_norm, bool):
            raise ValueError(f"qk_norm must be a bool, got {self.qk_norm!r}")
        for name, allowed in (("norm", NORMS), ("mlp", MLPS), ("pool", POOLS),
                              ("positions", ("rope", "learned")), ("remat", REMAT_POLICIES)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        if self.attn_head_dim is None and self.d_model % self.n_heads:
            raise ValueError(f"d_model={self.d_model} is not divisible by n_heads={self.n_heads}")
        if self.n_heads % self.kv_heads:
            raise ValueError(
                f"n_heads={self.n_heads} is not divisible by n_kv_heads={self.kv_heads}")
        for name in ("dtype", "param_dtype"):
            if getattr(self, name) not in ("float32", "bfloat16"):
                raise ValueError(f"{name} must be 'float32' or 'bfloat16', got "
                                 f"{getattr(self, name)!r}")
        if (not isinstance(self.logits_chunk, int) or isinstance(self.logits_chunk, bool)
                or self.logits_chunk < 0):
            raise ValueError(f"logits_chunk must be an int >= 0, got {self.logits_chunk!r}")
        if not isinstance(self.scan_layers, bool):
            raise ValueError(f"scan_layers must be a bool, got {self.scan_layers!r}")
        if self.attention not in ("auto", *ATTENTION_IMPLEMENTATIONS):
            raise ValueError(f"attention must be 'auto' or one of "
                             f"{sorted(ATTENTION_IMPLEMENTATIONS)}, got {self.attention!r}")
        self._check_gemma_fields()

    def _check_gemma_fields(self):
        for name in ("scale_embeddings", "post_norms", "score_bias"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be a bool, got {getattr(self, name)!r}")
        for name in ("attn_softcap", "logits_softcap", "rope_local_theta"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ValueError(f"{name} must be a number >= 0, got {value!r}")
        if self.attn_scale is not None and (isinstance(self.attn_scale, bool) or not isinstance(
                self.attn_scale, (int, float)) or self.attn_scale <= 0):
            raise ValueError(f"attn_scale must be None or a number > 0, got {self.attn_scale!r}")
        layers = self.sliding_layers
        if not isinstance(layers, tuple) or any(not isinstance(f, bool) for f in layers):
            raise ValueError(f"sliding_layers must be () or a tuple of bools, got {layers!r}")
        if layers and len(layers) != self.n_layers:
            raise ValueError(f"sliding_layers has {len(layers)} flags for n_layers="
                             f"{self.n_layers}")
        if any(layers) and not self.sliding_window:
            raise ValueError("sliding_layers marks sliding layers but sliding_window is 0")
        if self.rope_local_theta and not any(self.layer_sliding):
            raise ValueError("rope_local_theta needs sliding layers (sliding_window > 0)")
        if self.logits_softcap and self.logits_chunk:
            raise ValueError("logits_softcap does not work with logits_chunk > 0 (the chunked "
                             "log-softmax has no soft cap); set logits_chunk=0")
        if self.pool == "last_non_pad" and (not isinstance(self.pad_token_id, int)
                                            or isinstance(self.pad_token_id, bool)):
            raise ValueError(f"pool='last_non_pad' needs an int pad_token_id, got "
                             f"{self.pad_token_id!r}")

    @property
    def layer_sliding(self) -> tuple[bool, ...]:
        """Per layer: whether it uses the sliding window (`sliding_layers`, or every layer
        when sliding_window > 0 and sliding_layers is ())."""
        return self.sliding_layers or (bool(self.sliding_window),) * self.n_layers

    @classmethod
    def gpt2_style(cls, **kwargs) -> "TransformerConfig":
        """GPT-2 defaults: LayerNorm (eps 1e-5), learned positions, GELU MLP, biases, tied."""
        base = dict(norm="layer", mlp="gelu", positions="learned", qkv_bias=True,
                    linear_bias=True, norm_eps=1e-5, tie_embeddings=True)
        return cls(**{**base, **kwargs})

    @property
    def kv_heads(self) -> int:
        return self.n_kv_heads or self.n_heads

    @property
    def head_dim(self) -> int:
        """E: `attn_head_dim`, or D / H."""
        return self.attn_head_dim or self.d_model // self.n_heads

    @classmethod
    def from_mapping(cls, mapping) -> "TransformerConfig":
        """Builds a config from a dict or ConfigDict, rejecting unknown keys."""
        mapping = dict(mapping)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(mapping) - known)
        if unknown:
            raise ValueError(f"unknown transformer config keys {unknown}; valid: {sorted(known)}")
        return cls(**mapping)


def head_dtype(cfg: TransformerConfig):
    """Compute dtype of the embedding lookup and the output heads: float32 unless both the
    parameters and the compute are bfloat16 (so fp32 master weights keep fp32 logits)."""
    return jnp.promote_types(jnp.dtype(cfg.param_dtype), jnp.dtype(cfg.dtype))


def _init(scale: float = 1.0):
    return nnx.initializers.variance_scaling(scale, "fan_in", "truncated_normal")


def dense(layer, x):
    """`layer` (a Linear, or any map of the last axis) applied to [..., D] as one 2-D matmul.

    The math is that of `layer(x)`; only the shape XLA sees changes. On XLA:CPU a projection of
    a [B, T, D] activation compiles its backward pass into transposed elementwise copies of the
    [B*T, F] gradients, and flattening to [B*T, D] first roughly halves the time of an MLP's
    forward plus backward (benchmarks/RESULTS.md).

    Under a mesh set with `jax.set_mesh` (or `jax.sharding.use_abstract_mesh`, under which the
    steps of `alignax.train.step.make_train_step` are traced) its input and output rows are
    pinned to the batch axes (`rows_on_batch_axes`); without one nothing changes.
    """
    x = rows_on_batch_axes(x)
    lead = x.shape[:-1]
    y = layer(x.reshape(-1, x.shape[-1]))
    return rows_on_batch_axes(y.reshape(*lead, y.shape[-1]))


_BATCH_AXES = ("data", "fsdp")  # alignax.train.sharding.BATCH_AXES (not imported: no cycle)


def rows_on_batch_axes(x):
    """`x` [B, ...] with its rows constrained to the mesh's data x fsdp axes, the other dims
    left to XLA, when a mesh with those axes is set (`jax.set_mesh`) and divides B; else `x`.

    Parameters are sharded on their embed dim over fsdp; left alone, XLA's sharding propagation
    may follow that dim into the activations (contract each device's slice of D and all-reduce
    the output) so that every device holds the activations of the whole global batch. Pinning
    the rows keeps activations per device proportional to the local batch and makes XLA gather
    the weights instead (ZeRO-3); measured by `benchmarks/aot.py` on Llama-3 shapes.
    """
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty or not set(_BATCH_AXES) <= set(mesh.axis_names):
        return x
    shards = math.prod(mesh.shape[a] for a in _BATCH_AXES)
    if shards == 1 or x.ndim == 0 or x.shape[0] % shards:
        return x
    spec = PartitionSpec(_BATCH_AXES, *[PartitionSpec.UNCONSTRAINED] * (x.ndim - 1))
    return jax.lax.with_sharding_constraint(x, spec)


class RMSNorm(nnx.Module):
    """x / sqrt(mean(x^2) + eps) * w in float32, cast back to x's dtype; with `offset` the
    stored parameter is w - 1 (initialised at 0): * (1 + scale) (Gemma)."""

    def __init__(self, dim: int, eps: float, param_dtype=jnp.float32, offset: bool = False):
        self.scale = nnx.Param((jnp.zeros if offset else jnp.ones)((dim,), param_dtype))
        self.eps = eps
        self.offset = offset

    def __call__(self, x):
        x32 = x.astype(jnp.float32)
        y = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
        w = self.scale[...].astype(jnp.float32)
        return (y * (1.0 + w if self.offset else w)).astype(x.dtype)


class LayerNorm(nnx.Module):
    def __init__(self, dim: int, eps: float, param_dtype=jnp.float32):
        self.scale = nnx.Param(jnp.ones((dim,), param_dtype))
        self.bias = nnx.Param(jnp.zeros((dim,), param_dtype))
        self.eps = eps

    def __call__(self, x):
        x32 = x.astype(jnp.float32)
        mean = jnp.mean(x32, axis=-1, keepdims=True)
        var = jnp.mean(jnp.square(x32 - mean), axis=-1, keepdims=True)
        y = (x32 - mean) * jax.lax.rsqrt(var + self.eps)
        return (y * self.scale[...].astype(jnp.float32)
                + self.bias[...].astype(jnp.float32)).astype(x.dtype)


def make_norm(cfg: "TransformerConfig", dim: int | None = None):
    """The norm of `cfg.norm` over `dim` features (default D)."""
    dim = cfg.d_model if dim is None else dim
    if cfg.norm == "layer":
        return LayerNorm(dim, cfg.norm_eps, jnp.dtype(cfg.param_dtype))
    return RMSNorm(dim, cfg.norm_eps, jnp.dtype(cfg.param_dtype), offset=cfg.norm == "rms_offset")


class Attention(nnx.Module):
    def __init__(self, cfg: TransformerConfig, rngs: nnx.Rngs):
        d, h, k, e = cfg.d_model, cfg.n_heads, cfg.kv_heads, cfg.head_dim
        dt, pdt = jnp.dtype(cfg.dtype), jnp.dtype(cfg.param_dtype)
        self.cfg = cfg
        bias = cfg.qkv_bias

        def linear(a, b, use_bias):
            return nnx.Linear(a, b, use_bias=use_bias, dtype=dt, param_dtype=pdt,
                              kernel_init=_init(), rngs=rngs)

        self.q = linear(d, h * e, bias)
        self.k = linear(d, k * e, bias)
        self.v = linear(d, k * e, bias)
        self.o = linear(h * e, d, cfg.linear_bias)
        if cfg.qk_norm:  # RMSNorm (with cfg.norm's offset)
            offset = cfg.norm == "rms_offset"
            self.q_norm = RMSNorm(e, cfg.norm_eps, pdt, offset)
            self.k_norm = RMSNorm(e, cfg.norm_eps, pdt, offset)

    def __call__(self, x, rope_cs, bias, cache=None, cache_index=None, causal=False):
        """Self-attention; with `cache` ({"k", "v"}: [B, K, S, E]) the new keys/values are
        written at slots [cache_index, cache_index + T) and the queries attend all S slots.

        Args:
          x: [B, T, D] inputs.
          rope_cs: (cos, sin) of `rope_tables`, or None without rotary positions.
          bias: [B, 1, 1, T, S] additive mask of `attention_bias`.
          causal: `bias` masks every key after its query (see `attention`); ignored with a
            cache.

        Returns (out, new_cache or None).
        """
        cfg = self.cfg
        b, t, _ = x.shape
        h, k, e = cfg.n_heads, cfg.kv_heads, cfg.head_dim
        q = dense(self.q, x).reshape(b, t, h, e)
        kk = dense(self.k, x).reshape(b, t, k, e)
        if cfg.qk_norm:
            q, kk = self.q_norm(q), self.k_norm(kk)
        if rope_cs is not None:
            q = apply_rope(q, *rope_cs)
            kk = apply_rope(kk, *rope_cs)
        # keys and values in [B, K, T, E]: the layout of the KV cache and of the attention
        # matmuls, so decoding never transposes the cache
        kk = kk.transpose(0, 2, 1, 3)
        v = dense(self.v, x).reshape(b, t, k, e).transpose(0, 2, 1, 3)
        new_cache = None
        if cache is not None:
            start = (0, 0, cache_index, 0)
            kk = jax.lax.dynamic_update_slice(cache["k"], kk.astype(cache["k"].dtype), start)
            v = jax.lax.dynamic_update_slice(cache["v"], v.astype(cache["v"].dtype), start)
            new_cache = {"k": kk, "v": v}
            kk, v = kk.astype(x.dtype), v.astype(x.dtype)
        # query heads grouped by their kv head: [B, K, G, T, E]
        q = q.reshape(b, t, k, h // k, e).transpose(0, 2, 3, 1, 4)
        out = attention(q, kk, v, bias, causal=causal and cache is None,
                        implementation=cfg.attention, sliding_window=cfg.sliding_window,
                        scale=cfg.attn_scale, softcap=cfg.attn_softcap)
        out = out.transpose(0, 3, 1, 2, 4).reshape(b, t, h * e)
        return dense(self.o, out), new_cache


class MLP(nnx.Module):
    """SwiGLU: down(silu(gate x) * up x); GeGLU: down(gelu_tanh(gate x) * up x) (Gemma); or
    GELU: proj(gelu_tanh(fc x)) (GPT-2)."""

    def __init__(self, cfg: TransformerConfig, rngs: nnx.Rngs):
        dt, pdt = jnp.dtype(cfg.dtype), jnp.dtype(cfg.param_dtype)
        d, f, bias = cfg.d_model, cfg.d_ff, cfg.linear_bias
        self.kind = cfg.mlp

        def linear(a, b):
            return nnx.Linear(a, b, use_bias=bias, dtype=dt, param_dtype=pdt, kernel_init=_init(),
                              rngs=rngs)

        if cfg.mlp in ("swiglu", "geglu"):
            self.gate, self.up, self.down = linear(d, f), linear(d, f), linear(f, d)
        else:
            self.fc, self.proj = linear(d, f), linear(f, d)

    def __call__(self, x):
        if self.kind == "swiglu":
            return dense(self.down, jax.nn.silu(dense(self.gate, x)) * dense(self.up, x))
        if self.kind == "geglu":
            gate = jax.nn.gelu(dense(self.gate, x), approximate=True)
            return dense(self.down, gate * dense(self.up, x))
        return dense(self.proj, jax.nn.gelu(dense(self.fc, x), approximate=True))


class Block(nnx.Module):
    def __init__(self, cfg: TransformerConfig, rngs: nnx.Rngs):
        self.attn_norm = make_norm(cfg)
        self.attn = Attention(cfg, rngs)
        self.mlp_norm = make_norm(cfg)
        self.mlp = MLP(cfg, rngs)
        self.post_norms = cfg.post_norms
        if cfg.post_norms:
            self.attn_post_norm = make_norm(cfg)
            self.mlp_post_norm = make_norm(cfg)

    def __call__(self, x, rope_cs, bias, cache=None, cache_index=None, causal=False):
        y, new_cache = self.attn(self.attn_norm(x), rope_cs, bias, cache, cache_index, causal)
        if self.post_norms:
            y = self.attn_post_norm(y)
        x = x + y
        y = self.mlp(self.mlp_norm(x))
        if self.post_norms:
            y = self.mlp_post_norm(y)
        return x + y, new_cache


def positions_from_mask(mask):
    """Position of each token within its sequence, counting only valid tokens. [B, T] -> [B, T].

    `mask` is boolean (one sequence per row, padded on either side) or integer segment ids for
    packed rows (0 = padding, 1, 2, ... = the sequences packed in the row, each contiguous):
    positions restart at 0 at each new segment. Padding gets position 0.
    """
    seg = mask.astype(jnp.int32)
    valid = seg > 0
    count = jnp.cumsum(valid.astype(jnp.int32), axis=-1)  # valid tokens so far, inclusive
    previous = jnp.pad(seg, ((0, 0), (1, 0)))[:, :-1]
    starts = valid & (seg != previous)
    base = jax.lax.cummax(jnp.where(starts, count - 1, 0), axis=1)
    return jnp.where(valid, count - 1 - base, 0)


def causal_attention_mask(mask):
    """[B, T, T] boolean: query t attends to valid key s <= t of the same segment.

    `mask` as in `positions_from_mask` (boolean, or integer segment ids for packed rows).
    """
    t = mask.shape[-1]
    seg = mask.astype(jnp.int32)
    causal = jnp.tril(jnp.ones((t, t), dtype=bool))
    same = seg[:, :, None] == seg[:, None, :]
    return causal[None] & same & (seg > 0)[:, None, :]


def _pure_block(graphdef, rope_cs, bias, causal):
    """One block as a pure function (layer variables, x [B, T, D]) -> x, for `jax.checkpoint`
    and `lax.scan` (the rotary tables and mask are shared by every layer)."""
    def apply(state, x):
        return nnx.merge(graphdef, state)(x, rope_cs, bias, None, None, causal)[0]

    return apply


def _stack_blocks(blocks: list) -> nnx.Module:
    """One module of the structure of `blocks[0]` whose every variable is the [L, ...] stack of
    the blocks' (built one by one, so the initial values equal the unscanned model's)."""
    graphdef, _ = nnx.split(blocks[0])
    states = [nnx.state(b) for b in blocks]
    return nnx.merge(graphdef, jax.tree.map(lambda *xs: jnp.stack(xs), *states))


class Decoder(nnx.Module):
    """Token embedding, decoder blocks, final norm: hidden states [B, T, D]."""

    def __init__(self, cfg: TransformerConfig, rngs: nnx.Rngs):
        self.cfg = cfg
        pdt, hdt = jnp.dtype(cfg.param_dtype), head_dtype(cfg)
        # dtype hdt: the tied LM head (`attend`) computes in it
        self.embed = nnx.Embed(cfg.vocab_size, cfg.d_model, dtype=hdt, param_dtype=pdt,
                               embedding_init=nnx.initializers.normal(0.02), rngs=rngs)
        if cfg.positions == "learned":
            self.pos_embed = nnx.Embed(cfg.max_len, cfg.d_model, dtype=hdt, param_dtype=pdt,
                                       embedding_init=nnx.initializers.normal(0.01), rngs=rngs)
        blocks = [Block(cfg, rngs) for _ in range(cfg.n_layers)]
        # scanned: one Block whose variables are [L, ...] stacks (the scan's xs)
        self.layers = _stack_blocks(blocks) if cfg.scan_layers else nnx.List(blocks)
        self.final_norm = make_norm(cfg)

    def __call__(self, input_ids, mask):
        hidden, _ = self.forward(input_ids, positions_from_mask(mask), causal_attention_mask(mask),
                                 causal=True)
        return hidden

    def forward(self, input_ids, positions, attn_mask, caches=None, cache_index=None,
                causal=False):
        """Hidden states [B, T, D] from explicit positions [B, T] and attention mask ([B, T, T],
        or [B, T, S] with `caches` as made by `init_cache`). Returns (hidden, new caches).

        `causal=True` promises that `attn_mask` never lets a query see a later key (true of
        `causal_attention_mask`); attention then skips the blocks above the diagonal.
        """
        cfg = self.cfg
        x = self.embed(input_ids)
        if cfg.scale_embeddings:  # sqrt(D) rounded to the embedding's dtype, as Gemma
            scale = jnp.asarray(math.sqrt(cfg.d_model), jnp.dtype(cfg.param_dtype))
            x = x * scale.astype(x.dtype)
        if cfg.positions == "learned":
            x = x + self.pos_embed(positions)
        x = x.astype(jnp.dtype(cfg.dtype))
        pick = self._layer_inputs(positions, attn_mask, cache_index)
        if cfg.scan_layers:
            x, new_caches = self._scan(x, pick, caches, cache_index, causal)
            return self.final_norm(x), new_caches
        sliding = cfg.layer_sliding
        policy = remat_policy(cfg.remat) if caches is None else None
        if policy is not None:
            for layer, flag in zip(self.layers, sliding):
                graphdef, state = nnx.split(layer)
                x = jax.checkpoint(_pure_block(graphdef, *pick(flag), causal),
                                   policy=policy)(state, x)
            return self.final_norm(x), None
        new_caches = []
        for i, layer in enumerate(self.layers):
            cache = None if caches is None else caches[i]
            x, new_cache = layer(x, *pick(sliding[i]), cache, cache_index, causal)
            new_caches.append(new_cache)
        return self.final_norm(x), (None if caches is None else new_caches)

    def _layer_inputs(self, positions, attn_mask, cache_index):
        """`pick(flag) -> (rope_cs, bias)`: a layer's rotary tables (None without rotary
        positions) and additive mask [B, 1, 1, T, S], computed once for the full (global) and
        once for the sliding (local) layers. `flag` is a layer's `layer_sliding` entry: a
        python bool (unrolled layers: a static choice) or a traced bool (scanned layers:
        selected elementwise, `jnp.where`)."""
        cfg = self.cfg
        sliding = cfg.layer_sliding
        full_rope = local_rope = None
        if cfg.positions == "rope":
            full_rope = rope_tables(positions, cfg.head_dim, cfg.rope_theta, cfg.rope_scaling)
            local_rope = (rope_tables(positions, cfg.head_dim, cfg.rope_local_theta, ())
                          if cfg.rope_local_theta else full_rope)
        full_bias = local_bias = None
        if not all(sliding):
            full_bias = attention_bias(attn_mask)
        if any(sliding):
            local_bias = attention_bias(attn_mask & sliding_window_mask(
                attn_mask.shape[-2], attn_mask.shape[-1], cfg.sliding_window,
                0 if cache_index is None else cache_index))
        full, local = (full_rope, full_bias), (local_rope, local_bias)

        def pick(flag):
            if len(set(sliding)) == 1:
                return local if sliding[0] else full
            if isinstance(flag, (bool, np.bool_)):
                return local if flag else full
            return jax.tree.map(lambda a, b: jnp.where(flag, a, b), local, full)

        return pick

    def _sliding_flags(self):
        """[L] bool array of `layer_sliding`, scanned along with the stacked blocks, or None when
        every layer is of one kind (nothing to select)."""
        sliding = self.cfg.layer_sliding
        return None if len(set(sliding)) == 1 else jnp.asarray(sliding)

    def _scan(self, x, pick, caches, cache_index, causal):
        """The blocks as one `lax.scan` over the stacked layer variables (and, with layers of
        both kinds, the [L] sliding flags: each step selects its rotary table and mask).

        With caches ({"k", "v"}: [L, B, K, S, E]) the stacked caches ride in the carry: layer l
        reads its slice and writes back only the T new slots [cache_index, cache_index + T), so
        the update stays in place (a scan output of whole caches would copy them every step).
        """
        graphdef, state = nnx.split(self.layers)
        flags = self._sliding_flags()
        uniform = self.cfg.layer_sliding[0]

        def inputs(flag):
            return pick(uniform if flags is None else flag)

        if caches is None:
            policy = remat_policy(self.cfg.remat)

            def body(x, xs):
                layer_state, flag = xs
                block = _pure_block(graphdef, *inputs(flag), causal)
                if policy is not None:  # no CSE barrier needed inside a scan body
                    block = jax.checkpoint(block, policy=policy, prevent_cse=False)
                return block(layer_state, x), None

            x, _ = jax.lax.scan(body, x, (state, flags))
            return x, None

        t = x.shape[1]

        def cached_body(carry, xs):
            x, ck, cv = carry
            layer_state, i, flag = xs
            rope_cs, bias = inputs(flag)
            x, new = nnx.merge(graphdef, layer_state)(x, rope_cs, bias, {"k": ck[i], "v": cv[i]},
                                                      cache_index, causal)
            start = (i, 0, 0, cache_index, 0)
            new_k = jax.lax.dynamic_slice_in_dim(new["k"], cache_index, t, axis=2)
            new_v = jax.lax.dynamic_slice_in_dim(new["v"], cache_index, t, axis=2)
            ck = jax.lax.dynamic_update_slice(ck, new_k[None], start)
            cv = jax.lax.dynamic_update_slice(cv, new_v[None], start)
            return (x, ck, cv), None

        layer_ids = jnp.arange(self.cfg.n_layers)
        (x, ck, cv), _ = jax.lax.scan(cached_body, (x, caches["k"], caches["v"]),
                                      (state, layer_ids, flags))
        return x, {"k": ck, "v": cv}


class CausalLM(nnx.Module):
    """Decoder + LM head: logits [B, T, V] (float32)."""

    def __init__(self, cfg: TransformerConfig, rngs: nnx.Rngs):
        self.cfg = cfg
        self.decoder = Decoder(cfg, rngs)
        if not cfg.tie_embeddings:
            self.lm_head = nnx.Linear(cfg.d_model, cfg.vocab_size, use_bias=False,
                                      dtype=head_dtype(cfg), param_dtype=jnp.dtype(cfg.param_dtype),
                                      kernel_init=_init(), rngs=rngs)

    def __call__(self, input_ids, mask, logits_range: tuple[int, int] | None = None,
                 return_hidden: bool = False, targets=None):
        """Logits [B, T, V]; with `logits_range=(start, stop)` (static) only those of positions
        [start, stop), [B, stop - start, V]: the LM head (and its backward) skips the rest.
        With `targets` (int [B, T'], T' = T or stop - start; its presence is static), the token
        log-probs log softmax(logits)[targets] [B, T'] float32 instead of the logits
        (`token_logprobs`; with `logits_chunk` > 0 the [B, T', V] logits never exist).
        With `return_hidden=True` (static), `(logits or log-probs, hidden)`: hidden the
        final-layer representations [B, T', D] the LM head reads (after the final norm, the
        same positions as the logits), e.g. for the spectral metrics of
        `alignax.eval.geometry`."""
        hidden = self.decoder(input_ids, mask)
        if logits_range is not None:
            hidden = hidden[:, logits_range[0]:logits_range[1]]
        out = self.logits(hidden) if targets is None else self.token_logprobs(hidden, targets)
        return (out, hidden) if return_hidden else out

    def token_logprobs(self, hidden, targets):
        """log softmax(LM head(hidden))[targets]: [B, T, D], [B, T] -> [B, T] float32.

        logits_chunk == 0: `alignax.ops.token_logprobs` of the full logits. logits_chunk = C > 0:
        `alignax.ops.chunked.chunked_token_logprobs` over vocabulary chunks of C with its custom
        backward (temporaries O(B T C) instead of O(B T V); equal to 1e-5 in float32).
        """
        if targets.shape != hidden.shape[:-1]:
            raise ValueError(f"targets {targets.shape} do not match the positions "
                             f"{hidden.shape[:-1]} of the logits")
        if self.cfg.logits_chunk == 0:
            from alignax.ops.logprobs import token_logprobs

            return token_logprobs(self.logits(hidden), targets)
        from alignax.ops.chunked import chunked_token_logprobs

        if self.cfg.tie_embeddings:
            weight, layout = self.decoder.embed.embedding[...], "vd"  # [V, D]
        else:
            weight, layout = self.lm_head.kernel[...], "dv"  # [D, V]
        return chunked_token_logprobs(hidden, weight, targets, chunk=self.cfg.logits_chunk,
                                      weight_layout=layout)

    def logits(self, hidden):
        """LM head: [B, T, D] -> [B, T, V] float32 (soft-capped with `logits_softcap`)."""
        if self.cfg.tie_embeddings:
            logits = dense(self.decoder.embed.attend, hidden)
        else:
            logits = dense(self.lm_head, hidden)
        logits = logits.astype(jnp.float32)
        cap = self.cfg.logits_softcap
        return cap * jnp.tanh(logits / cap) if cap else logits

    def forward_cached(self, input_ids, positions, attn_mask, caches, cache_index):
        """Logits [B, T, V] of T new tokens written into the KV caches at `cache_index`."""
        hidden, caches = self.decoder.forward(input_ids, positions, attn_mask, caches,
                                              cache_index)
        return self.logits(hidden), caches


def last_token_index(mask):
    """Index of the last valid token of each row (left or right padding). [B] int32."""
    t = mask.shape[-1]
    return (t - 1 - jnp.argmax(mask[:, ::-1].astype(jnp.int32), axis=-1)).astype(jnp.int32)


def last_non_pad_index(input_ids, pad_token_id: int, mask=None):
    """Index of the last slot whose token is not `pad_token_id`, 0 if none: [B, T] -> [B]
    int32 (transformers' sequence-classification pooling: max_t t * [id_t != pad]).

    With `mask` [B, T] only valid slots count: a row padded with another id than
    `pad_token_id` (alignax pads with the tokenizer's pad id, transformers with
    config.pad_token_id) pools the same token as transformers' padding would."""
    t = input_ids.shape[-1]
    keep = input_ids != pad_token_id
    if mask is not None:
        keep = keep & (mask > 0)
    return jnp.argmax(jnp.arange(t) * keep, axis=-1).astype(jnp.int32)


def _check_reward_positions(reward_positions, b: int) -> None:
    if (reward_positions.ndim != 2 or reward_positions.shape[0] != b
            or not jnp.issubdtype(reward_positions.dtype, jnp.integer)):
        raise ValueError(f"reward_positions must be int [B={b}, S], got "
                         f"{reward_positions.dtype} {reward_positions.shape}")


def _rewards_at(score, hidden, reward_positions):
    """score(hidden[b, p[b, s]]) for p = reward_positions [B, S] int (< 0: absent -> 0):
    [B, T, D] -> [B, S] float32."""
    _check_reward_positions(reward_positions, hidden.shape[0])
    present = reward_positions >= 0
    idx = jnp.where(present, reward_positions, 0).astype(jnp.int32)
    at = jnp.take_along_axis(hidden, idx[:, :, None], axis=1)  # [B, S, D]
    rewards = score(at)[..., 0].astype(jnp.float32)
    return jnp.where(present, rewards, 0.0)


class ScalarRewardModel(nnx.Module):
    """Decoder + linear score head (a bias with `score_bias`) read at the last valid token
    (`pool`): rewards [B] (float32)."""

    def __init__(self, cfg: TransformerConfig, rngs: nnx.Rngs):
        self.decoder = Decoder(cfg, rngs)
        self.cfg = cfg
        self.score = nnx.Linear(cfg.d_model, 1, use_bias=cfg.score_bias, dtype=head_dtype(cfg),
                                param_dtype=jnp.dtype(cfg.param_dtype),
                                kernel_init=nnx.initializers.normal(0.02), rngs=rngs)

    def __call__(self, input_ids, mask, *, reward_positions=None):
        """Rewards [B] float32: the score head at each row's last valid token (`pool`
        "last"; "last_non_pad": the last token that is not `pad_token_id`).

        Args:
          input_ids: [B, T] int tokens.
          mask: [B, T] boolean (padding on either side) or integer segment ids of packed rows
            (0 padding, 1..k sequences; see `positions_from_mask`).
          reward_positions: None (the default: one reward per row, at `last_token_index(mask)`),
            or [B, S] int: for packed rows, the slot of each segment's last token (-1 = no
            segment there). The rewards are then [B, S] float32, r[b, s] =
            score(hidden[b, reward_positions[b, s]]), and 0 where reward_positions[b, s] < 0.
            With segment-id masks each segment attends only to itself and its positions restart
            at 0, so r[b, s] equals the reward of that segment run alone (its pooled reward).
            Use it to score many short sequences (e.g. chosen and rejected of several pairs)
            packed into one row; the S slots are static, the positions traced (no retrace).
        """
        if reward_positions is not None:
            _check_reward_positions(reward_positions, input_ids.shape[0])
        hidden = self.decoder(input_ids, mask)  # [B, T, D]
        if reward_positions is None:
            idx = (last_token_index(mask) if self.cfg.pool == "last"
                   else last_non_pad_index(input_ids, self.cfg.pad_token_id, mask))
            last = jnp.take_along_axis(hidden, idx[:, None, None], axis=1)[:, 0]  # [B, D]
            return self.score(last)[:, 0].astype(jnp.float32)
        return _rewards_at(self.score, hidden, reward_positions)


# Logical axis names of every parameter, by path suffix. The first matching pattern wins.
_LOGICAL_AXES: tuple[tuple[str, tuple[str | None, ...] | None], ...] = (
    (r"(^|/)embed/embedding$", ("vocab", "embed")),
    (r"attn/(q|k|v)/kernel$", ("embed", "heads")),
    (r"attn/o/kernel$", ("heads", "embed")),
    (r"attn/(q|k|v)/bias$", ("heads",)),
    (r"mlp/(gate|up)/kernel$", ("embed", "mlp")),
    (r"mlp/down/kernel$", ("mlp", "embed")),
    (r"mlp/fc/kernel$", ("embed", "mlp")),
    (r"mlp/proj/kernel$", ("mlp", "embed")),
    (r"mlp/(gate|up|fc)/bias$", ("mlp",)),
    (r"(mlp/(down|proj)|attn/o)/bias$", ("norm",)),
    (r"pos_embed/embedding$", ("pos", "embed")),
    (r"norm/(scale|bias)$", ("norm",)),
    (r"lm_head/kernel$", ("embed", "vocab")),
    (r"score/kernel$", ("embed", None)),
    (r"score/bias$", (None,)),
    (r"(^|/)head/", None),  # small heads (alignax.models.heads): replicated
)


# a leaf of scanned (stacked) decoder blocks: decoder/layers/<not a layer number>/...
_STACKED = re.compile(r"(^|/)decoder/layers/(?!\d+(/|$))")


def logical_axes(params: Params) -> Any:
    """Tree of logical axis-name tuples with the structure of `params`.

    Leaves of stacked blocks (`scan_layers`) get ("layers", *the axes of one block's leaf).
    """

    def name(path, leaf):
        key = "/".join(str(getattr(p, "key", getattr(p, "idx", p))) for p in path)
        if _STACKED.search(key):
            return ("layers", *_axes_of(key, leaf.ndim - 1))
        return _axes_of(key, leaf.ndim)

    return jax.tree_util.tree_map_with_path(name, params)


def _axes_of(key: str, ndim: int) -> tuple:
    for pattern, axes in _LOGICAL_AXES:
        if re.search(pattern, key):
            if axes is None:
                return (None,) * ndim
            if len(axes) != ndim:
                raise ValueError(f"logical axes {axes} do not fit {key} of rank {ndim}")
            return axes
    raise ValueError(f"no logical axes for parameter {key!r}; add it to _LOGICAL_AXES")


class Model(NamedTuple):
    """A model as pure functions: `params = init(rng)`, `out = apply(params, input_ids, mask)`.

    Causal LMs also have `apply_cached(params, ids, positions, attn_mask, caches, index) ->
    (logits, caches)` for incremental decoding (None for other models).
    """

    init: Callable[[jax.Array], Params]
    apply: Callable[..., jax.Array]
    logical_axes: Callable[[Params], Any]
    config: TransformerConfig
    apply_cached: Callable[..., Any] | None = None


def init_cache(cfg: TransformerConfig, batch: int, length: int, dtype=None) -> list[dict] | dict:
    """Zero KV caches in the compute dtype by default: one {"k", "v"} of [B, K, S, E] per layer,
    or with `scan_layers` one stacked {"k", "v"} of [L, B, K, S, E]. Either way every array is
    [..., B, K, S, E] (`repeat_cache` relies on it); `apply_cached` takes and returns the same
    layout."""
    dtype = jnp.dtype(cfg.dtype if dtype is None else dtype)
    shape = (batch, cfg.kv_heads, length, cfg.head_dim)
    if cfg.scan_layers:
        shape = (cfg.n_layers, *shape)
        return {"k": jnp.zeros(shape, dtype), "v": jnp.zeros(shape, dtype)}
    return [{"k": jnp.zeros(shape, dtype), "v": jnp.zeros(shape, dtype)}
            for _ in range(cfg.n_layers)]


def repeat_cache(caches, n: int):
    """Each cache row repeated n times in place (row b -> rows b*n .. b*n+n-1) along the batch
    axis of either layout of `init_cache` ([..., B, K, S, E] -> [..., B*n, K, S, E])."""
    return jax.tree.map(lambda c: jnp.repeat(c, n, axis=c.ndim - 4), caches)


def _is_layer_list(layers) -> bool:
    return isinstance(layers, dict) and len(layers) > 0 and all(
        isinstance(k, int) for k in layers)


def _map_decoders(tree, fn):
    """`tree` with fn applied to the "layers" of every {"decoder": {"layers": ...}} in it
    (params, or trees that mirror them such as optimizer moments)."""
    if isinstance(tree, dict):
        out = {k: _map_decoders(v, fn) for k, v in tree.items()}
        dec = tree.get("decoder")
        if isinstance(dec, dict) and "layers" in dec:
            out["decoder"] = {**out["decoder"], "layers": fn(dec["layers"])}
        return out
    if isinstance(tree, tuple) and hasattr(tree, "_fields"):  # NamedTuple (optax states)
        return type(tree)(*(_map_decoders(v, fn) for v in tree))
    if isinstance(tree, (list, tuple)):
        return type(tree)(_map_decoders(v, fn) for v in tree)
    return tree


def _stack(*xs):
    if all(isinstance(x, np.ndarray) for x in xs):
        return np.stack(xs)  # host arrays stay on the host (checkpoint conversion)
    return jnp.stack(xs)


def stack_layers(params):
    """Unscanned params -> the `scan_layers` layout: `decoder/layers/{0..L-1}/<leaf>` becomes
    `decoder/layers/<leaf>` of [L, *shape] (exact; numpy leaves stay numpy).

    Raises:
      ValueError: if the layers are already stacked.
    """
    def stack(layers):
        if not _is_layer_list(layers):
            raise ValueError("stack_layers needs decoder/layers/{0..L-1}; are they stacked "
                             "already?")
        return jax.tree.map(_stack, *(layers[i] for i in range(len(layers))))

    return _map_decoders(params, stack)


def unstack_layers(params):
    """`scan_layers` params -> the unscanned layout (the inverse of `stack_layers`; exact).

    Raises:
      ValueError: if the layers are not stacked.
    """
    def unstack(layers):
        if _is_layer_list(layers):
            raise ValueError("unstack_layers needs stacked decoder/layers; they are a list of "
                             "layers already")
        n = jax.tree.leaves(layers)[0].shape[0]
        return {i: jax.tree.map(lambda x, i=i: x[i], layers) for i in range(n)}

    return _map_decoders(params, unstack)


def layers_stacked(params) -> bool:
    """Whether `params["decoder"]["layers"]` is in the `scan_layers` layout."""
    return not _is_layer_list(params["decoder"]["layers"])


def make_from_module(module_cls, cfg: TransformerConfig) -> Model:
    """Pure (init, apply) pair of `module_cls(cfg, rngs)` (any callable building an nnx module),
    e.g. a decoder with a custom head: `make_from_module(lambda c, rngs: MyRM(c, rngs), cfg)`.

    `apply` called outside any trace runs as one jitted program per input shapes (and static
    keyword values); under an enclosing jit, grad or vmap it is traced inline
    (`alignax._src.eager.jit_when_concrete`).
    """
    abstract = nnx.eval_shape(lambda: module_cls(cfg, nnx.Rngs(0)))
    graphdef, abstract_state = nnx.split(abstract, nnx.Param)

    def init(rng) -> Params:
        module = module_cls(cfg, nnx.Rngs(params=rng))
        return nnx.to_pure_dict(nnx.state(module, nnx.Param))

    def merge(params: Params):
        state = jax.tree.map(lambda x: x, abstract_state)
        nnx.replace_by_pure_dict(state, params)
        return nnx.merge(graphdef, state)

    # outside a trace the forward is one compiled program, not a few hundred op-by-op ones
    # (alignax._src.eager); under an enclosing jit/grad/vmap it is inlined as before
    @jit_when_concrete
    def forward(params: Params, input_ids, mask, **kwargs):
        return merge(params)(input_ids, mask, **kwargs)

    def apply(params: Params, input_ids, mask, **kwargs):
        if input_ids.ndim != 2 or mask.shape != input_ids.shape:
            raise ValueError(
                f"expected input_ids [B, T] and mask of the same shape, got {input_ids.shape} "
                f"and {mask.shape}"
            )
        return forward(params, input_ids, mask, **kwargs)

    apply_cached = None
    if hasattr(module_cls, "forward_cached"):
        def apply_cached(params: Params, input_ids, positions, attn_mask, caches, cache_index):
            return merge(params).forward_cached(input_ids, positions, attn_mask, caches,
                                                cache_index)

    return Model(init=init, apply=apply, logical_axes=logical_axes, config=cfg,
                 apply_cached=apply_cached)


# Equal configs give the same Model object: jitted programs that take a Model as a static
# argument (samplers, rollouts, steps) or call its `apply` are then traced and compiled once per
# config in a process, not once per `make_lm` call (an experiment that builds its policy in
# several places, a test suite). Models are immutable (NamedTuples of pure functions).
@functools.lru_cache(maxsize=128)
def make_lm(cfg: TransformerConfig) -> Model:
    """Causal LM: `apply(params, input_ids [B,T], mask [B,T]) -> logits [B,T,V]` (float32).

    Memoised: equal configs return the same `Model`."""
    return make_from_module(CausalLM, cfg)


@functools.lru_cache(maxsize=128)
def make_reward_model(cfg: TransformerConfig) -> Model:
    """Scalar reward model: `apply(params, input_ids [B,T], mask [B,T]) -> rewards [B]`;
    `apply(params, input_ids, segment_ids, reward_positions=[B, S]) -> rewards [B, S]` for
    packed rows (see `ScalarRewardModel.__call__`). Memoised: equal configs return the same
    `Model`."""
    return make_from_module(ScalarRewardModel, cfg)
