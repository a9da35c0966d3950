"""Attention kernels of the decoder: the math softmax(q k^T / sqrt(E) + bias) v on grouped queries,
one function with an implementation per backend.

    out = attention(q, k, v, bias, causal=True)                          # "auto": per backend
    out = attention(q, k, v, bias, causal=True, implementation="cudnn")  # explicit override

Shapes: B batch, K key/value heads, G query heads per kv head (H = K G), T queries, S keys,
E head dim. The mask always arrives as the additive float32 `bias` [B, 1, 1, T, S] of
`attention_bias` (0 where a query may see a key, -1e30 elsewhere); padding on either side and
packed rows (segment ids) are both encoded in it. Implementations (`IMPLEMENTATIONS`):

- "xla": the CPU path: a hand-written custom-vjp softmax attention (backward through the output,
  dS = P (dP - rowsum(dO O))) whose causal form splits the queries into <= 8 blocks and skips the
  keys above each block's diagonal. Fastest on this CPU; "auto" on CPU.
- "reference": the plain softmax einsum in float32, autodiff backward. For tests.
- "dot_product": `jax.nn.dot_product_attention(..., implementation="xla")`: XLA's fused
  softmax attention, any dtype, any backend; the GPU fallback of "auto" where cuDNN refuses.
- "cudnn": `jax.nn.dot_product_attention(..., implementation="cudnn")`: cuDNN's flash attention
  (O(T) memory, causal blocks skipped) on NVIDIA GPUs. Its constraints, read in jax 0.10.2's
  jax/_src/cudnn/fused_attention_stablehlo.py (check_layout, check_is_flash_attention,
  combine_bias_and_mask; unchanged in 0.11.2, a GPU image's jax): q, k, v float16 or bfloat16
  of one dtype; head dim a multiple of 8, <= 128 (<= 256 on compute capability >= 9.0); with a
  bias and a backward pass, T and S even; the bias is added in the compute dtype, and cuDNN
  mishandles the difference of two large negative numbers, so jax's own boolean masks use
  -2^41 (bf16) / -2^15 (fp16). Here: the bias is clipped to that value and cast; an odd T or S
  is padded by one query row / one masked key and sliced off; `causal=True` becomes cuDNN's
  causal mask type (blocks above the diagonal skipped) on top of the bias. GQA is native
  (N = K G query heads in K groups, BTNH layout).
- "splash": TPU splash attention, `jax.experimental.pallas.ops.tpu.splash_attention` (Pallas
  Mosaic flash kernel with block-sparse causal masks and segment ids), causal self-attention
  only (S = T, T a multiple of 128; other calls, e.g. decode steps, run "dot_product"). The
  kernel takes no bias: the mask becomes segment ids, those of `segment_ids` if the caller
  passes them, else `segments_from_bias` (exact for every mask of
  `transformer.causal_attention_mask`: padding on either side, packed rows). GQA through the
  MQA kernel, vmapped over kv heads and batch. Off TPU it runs in Pallas interpret mode (slow;
  tests only).

Why splash from jax and not tokamax (evaluated 2026-12, tokamax 0.0.12 installed here): tokamax
offers `tokamax.dot_product_attention` with "mosaic" (TPU and Hopper/Blackwell Pallas kernels),
"triton", "cudnn", "xla", "xla_chunked"; it imports on CPU. But its TPU kernel (tokamax
_src/ops/attention/pallas_mosaic_tpu_common.py: check_inputs_support, build_splash_kernel) wraps
a vendored copy of the same splash kernel and raises NotImplementedError for any bias, for a
batched boolean mask ("Only unbatched boolean masks are supported") and for q/k start/end
(sequence lengths): it cannot express per-row padding or packed rows, which alignax batches
always have. Every tokamax release after 0.0.12 requires Python >= 3.12 (this project supports
3.11), and it would add pydantic, qwix, einshape, typeguard and tensorboardx as dependencies.
jax's splash takes per-row segment ids, ships with jaxlib (no new dependency), and its interpret
mode lets this CPU test it.

`resolve_implementation` picks "auto" per backend: cpu -> "xla"; gpu -> "cudnn" where its
constraints hold (else "dot_product"; a decode step, T = 1, also takes "dot_product": one query
row per head reads the cache once, nothing for a flash kernel to tile); tpu -> "splash" for causal
self-attention with T a multiple of 128, else "dot_product".
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

_NEG_INF = -1e30  # finite, so fully masked rows (padding) stay NaN-free


def sliding_window_mask(q_len: int, kv_len: int, window: int, offset=0):
    """[1, T, S] boolean: query slot `offset` + t may see key slot s iff offset + t - s < window.

    Added (and-ed) on top of a causal mask it is sliding-window attention (Mistral; transformers'
    `sliding_window_overlay`: kv_idx > q_idx - window): each query sees itself and the
    window - 1 slots before it. `offset` (int or traced scalar) is the slot of the first query,
    the cache index when decoding.
    """
    q = offset + jnp.arange(q_len)[:, None]
    return (q - jnp.arange(kv_len)[None, :] < window)[None]


def attention_bias(attn_mask):
    """Additive float32 bias [B, 1, 1, T, S] of a boolean [B, T, S] mask: 0 or -1e30."""
    return jnp.where(attn_mask, 0.0, _NEG_INF).astype(jnp.float32)[:, None, None]


# --------------------------------------------------------------------------------------------
# "xla": the CPU path (custom vjp, causal query blocks)
# --------------------------------------------------------------------------------------------

_CAUSAL_BLOCK = 64  # smallest query block of causal attention


def softcap_scores(scores, softcap: float):
    """c tanh(s / c) for c = softcap > 0 (Gemma 2's attention logit soft-capping), else s."""
    return softcap * jnp.tanh(scores / softcap) if softcap else scores


def _probs(q, k, bias, scale, softcap):
    scores = jnp.einsum("bkgte,bkse->bkgts", q, k).astype(jnp.float32) * scale
    scores = softcap_scores(scores, softcap) + bias
    scores = jnp.exp(scores - scores.max(-1, keepdims=True))
    return scores / scores.sum(-1, keepdims=True)


def _attend_fwd(q, k, v, bias, scale, softcap):
    probs = _probs(q, k, bias, scale, softcap)
    out = jnp.einsum("bkgts,bkse->bkgte", probs.astype(v.dtype), v)
    return out, (q, k, v, probs, out)


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5))
def _attend(q, k, v, bias, scale, softcap=0.0):
    return _attend_fwd(q, k, v, bias, scale, softcap)[0]  # residuals: dead code without a grad


def _attend_bwd(scale, softcap, res, d_out):
    # the softmax backward through the output: dS = P * (dP - rowsum(dO * O)), which reads
    # [B, K, G, T, E] for the row sums instead of the [.., T, S] product P * dP; with a soft
    # cap, times its derivative 1 - tanh(s / c)^2 (the scores recomputed, not stored)
    q, k, v, probs, out = res
    d_v = jnp.einsum("bkgts,bkgte->bkse", probs.astype(v.dtype), d_out)
    d_probs = jnp.einsum("bkgte,bkse->bkgts", d_out, v).astype(jnp.float32)
    delta = jnp.sum(d_out.astype(jnp.float32) * out.astype(jnp.float32), -1, keepdims=True)
    d_scores = probs * (d_probs - delta) * scale
    if softcap:
        raw = jnp.einsum("bkgte,bkse->bkgts", q, k).astype(jnp.float32) * scale
        d_scores = d_scores * (1.0 - jnp.square(jnp.tanh(raw / softcap)))
    d_scores = d_scores.astype(q.dtype)
    d_q = jnp.einsum("bkgts,bkse->bkgte", d_scores, k)
    d_k = jnp.einsum("bkgts,bkgte->bkse", d_scores, q)
    return d_q, d_k, d_v, None  # the mask is not differentiated


_attend.defvjp(_attend_fwd, _attend_bwd)


def _xla(q, k, v, bias, *, causal, scale, segment_ids, softcap=0.0):
    """The custom-vjp path; causal: queries in <= 8 blocks, each attends keys up to its end.

    Rows whose keys are all masked (padding) average a different set of values than without
    blocks; their outputs are meaningless either way."""
    del segment_ids
    t = q.shape[3]
    block = max(_CAUSAL_BLOCK, -(-t // 8))
    if not causal or t <= block or k.shape[2] != t:
        return _attend(q, k, v, bias, scale, softcap)
    outs = []
    for start in range(0, t, block):
        stop = min(start + block, t)
        outs.append(_attend(q[:, :, :, start:stop], k[:, :, :stop], v[:, :, :stop],
                            bias[..., start:stop, :stop], scale, softcap))
    return jnp.concatenate(outs, axis=3)


# --------------------------------------------------------------------------------------------
# "reference" and the two jax.nn.dot_product_attention paths
# --------------------------------------------------------------------------------------------

def _reference(q, k, v, bias, *, causal, scale, segment_ids, softcap=0.0):
    """softmax(cap(q k^T scale) + bias) v with scores and probabilities in float32, autodiff."""
    del causal, segment_ids
    scores = jnp.einsum("bkgte,bkse->bkgts", q.astype(jnp.float32), k.astype(jnp.float32))
    probs = jax.nn.softmax(softcap_scores(scores * scale, softcap) + bias, axis=-1)
    return jnp.einsum("bkgts,bkse->bkgte", probs, v.astype(jnp.float32)).astype(v.dtype)


def _to_btnh(q, k, v):
    """[B, K, G, T, E], [B, K, S, E] -> [B, T, K G, E], [B, S, K, E] (query head n = k G + g,
    the grouping of `jax.nn.dot_product_attention`)."""
    b, kh, g, t, e = q.shape
    return (q.transpose(0, 3, 1, 2, 4).reshape(b, t, kh * g, e), k.transpose(0, 2, 1, 3),
            v.transpose(0, 2, 1, 3))


def _from_btnh(out, kh, g):
    b, t, _, e = out.shape
    return out.reshape(b, t, kh, g, e).transpose(0, 2, 3, 1, 4)


def _dot_product(q, k, v, bias, *, causal, scale, segment_ids):
    """`jax.nn.dot_product_attention(implementation="xla")`; the bias carries the causal mask."""
    del causal, segment_ids
    kh, g = q.shape[1], q.shape[2]
    qq, kk, vv = _to_btnh(q, k, v)
    out = jax.nn.dot_product_attention(qq, kk, vv, bias=bias[:, 0], scale=scale,
                                       implementation="xla")
    return _from_btnh(out, kh, g)


# cuDNN's large negative of jax's own boolean masks (fused_attention_stablehlo.py,
# get_large_negative_number): a -1e30 bias would hit cuDNN's bug with two large negatives
_CUDNN_NEG = {jnp.dtype(jnp.bfloat16): -float(2 << 40), jnp.dtype(jnp.float16): -float(2 << 14)}


def _cudnn(q, k, v, bias, *, causal, scale, segment_ids):
    """`jax.nn.dot_product_attention(implementation="cudnn")` with the bias clipped to cuDNN's
    large negative and cast to the compute dtype; odd T / S padded by one row / masked key."""
    del segment_ids
    kh, g, t, s = q.shape[1], q.shape[2], q.shape[3], k.shape[2]
    reason = cudnn_unsupported(q.dtype, q.shape[-1])
    if reason:
        raise ValueError(f"implementation 'cudnn': {reason}")
    neg = _CUDNN_NEG[jnp.dtype(q.dtype)]
    qq, kk, vv = _to_btnh(q, k, v)
    b4 = jnp.maximum(bias[:, 0], neg)  # [B, 1, T, S]
    pt, ps = t % 2, s % 2  # cuDNN's backward with a bias needs even T and S
    if pt or ps:
        qq = jnp.pad(qq, ((0, 0), (0, pt), (0, 0), (0, 0)))
        kk = jnp.pad(kk, ((0, 0), (0, ps), (0, 0), (0, 0)))
        vv = jnp.pad(vv, ((0, 0), (0, ps), (0, 0), (0, 0)))
        b4 = jnp.pad(b4, ((0, 0), (0, 0), (0, pt), (0, 0)))  # the extra query sees every key
        b4 = jnp.pad(b4, ((0, 0), (0, 0), (0, 0), (0, ps)), constant_values=neg)
    out = jax.nn.dot_product_attention(qq, kk, vv, bias=b4.astype(q.dtype), scale=scale,
                                       is_causal=causal and t == s, implementation="cudnn")
    return _from_btnh(out[:, :t], kh, g)


# --------------------------------------------------------------------------------------------
# "splash": TPU splash attention (segment ids instead of a bias)
# --------------------------------------------------------------------------------------------

_SPLASH_BLOCKS = (512, 256, 128)  # the largest that divides T is used


def segments_from_bias(bias):
    """Segment ids [B, T] int32 of a causal self-attention bias [B, 1, 1, T, T]: 0 where a query
    sees no key of its own (padding), else 1 + the first key the query attends.

    For a bias of `causal_attention_mask(seg)` (query t sees valid keys s <= t with
    seg[s] = seg[t]) the first key query t attends is the first occurrence of seg[t], a
    one-to-one map of the ids; so two valid tokens get equal derived ids iff their segments are
    equal, and "causal & equal derived ids" is the bias's mask on every valid query row. (Rows of
    padding then attend earlier padding instead of nothing: their outputs stay finite and
    meaningless, as in every implementation.) Other biases are not representable as segments.
    """
    allowed = bias[:, 0, 0] > _NEG_INF / 2  # [B, T, S]
    first = jnp.argmax(allowed, axis=-1).astype(jnp.int32)
    valid = jnp.diagonal(allowed, axis1=-2, axis2=-1)
    return jnp.where(valid, first + 1, 0)


@functools.lru_cache(maxsize=32)
def _splash_kernel(t: int, groups: int, interpret: bool):
    from jax.experimental.pallas.ops.tpu import splash_attention as sa

    block = next(b for b in _SPLASH_BLOCKS if t % b == 0)
    sizes = sa.BlockSizes(block_q=block, block_kv=block, block_kv_compute=block,
                          block_q_dkv=block, block_kv_dkv=block, block_kv_dkv_compute=block,
                          block_q_dq=block, block_kv_dq=block)
    mask = sa.MultiHeadMask([sa.CausalMask((t, t))] * groups)
    with jax.ensure_compile_time_eval():  # concrete mask tables, safe to cache across traces
        kernel = sa.make_splash_mqa_single_device(mask, block_sizes=sizes, interpret=interpret)
    return kernel, sa.SegmentIds


def _splash(q, k, v, bias, *, causal, scale, segment_ids):
    """Splash attention per (batch row, kv head) with the MQA kernel: q [G, T, E], k, v [T, E]."""
    b, kh, g, t, e = q.shape
    reason = splash_unsupported(causal, t, k.shape[2])
    if reason:  # `attention` routes such calls to "dot_product" (resolve_implementation)
        raise ValueError(f"implementation 'splash': {reason}")
    seg = segments_from_bias(bias) if segment_ids is None else segment_ids.astype(jnp.int32)
    if seg.shape != (b, t):
        raise ValueError(f"segment_ids must be [B, T] = {(b, t)}, got {seg.shape}")
    kernel, segment_ids_cls = _splash_kernel(t, g, jax.default_backend() != "tpu")

    def one(q1, k1, v1, s1):
        return kernel(q1, k1, v1, segment_ids=segment_ids_cls(s1, s1))

    over_heads = jax.vmap(one, in_axes=(0, 0, 0, None))
    # splash takes no scale: the queries are scaled (in their dtype) before the kernel
    out = jax.vmap(over_heads)((q * scale).astype(q.dtype), k, v, seg)
    return out.astype(v.dtype)


# --------------------------------------------------------------------------------------------
# registry and selection
# --------------------------------------------------------------------------------------------

IMPLEMENTATIONS = {
    "xla": _xla,
    "reference": _reference,
    "dot_product": _dot_product,
    "cudnn": _cudnn,
    "splash": _splash,
}
# those that take a soft cap on the scores (`attention(..., softcap=c)`)
SOFTCAP_IMPLEMENTATIONS = ("xla", "reference")
# where each runs natively; "splash" also runs elsewhere in Pallas interpret mode (tests)
BACKENDS = {"xla": ("cpu", "gpu", "tpu"), "reference": ("cpu", "gpu", "tpu"),
            "dot_product": ("cpu", "gpu", "tpu"), "cudnn": ("gpu",), "splash": ("tpu",)}


def _gpu_compute_capability() -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in jax.devices("gpu")[0].compute_capability.split("."))
    except (RuntimeError, AttributeError, ValueError):
        return (0,)


def cudnn_unsupported(dtype, head_dim: int, compute_capability=None) -> str | None:
    """Why cuDNN flash attention cannot run these inputs, or None if it can (jax 0.10.2's rules:
    bf16/fp16, head dim a multiple of 8 and <= 128, or <= 256 from compute capability 9.0)."""
    if dtype is None or jnp.dtype(dtype) not in _CUDNN_NEG:
        return f"cuDNN flash attention takes bfloat16 or float16, got {dtype}"
    cc = _gpu_compute_capability() if compute_capability is None else tuple(compute_capability)
    h_max = 256 if cc >= (9, 0) else 128
    if head_dim % 8 or head_dim > h_max:
        return f"head dim must be a multiple of 8 and <= {h_max}, got {head_dim}"
    return None


def splash_unsupported(causal: bool, q_len: int, kv_len: int, sliding_window: int = 0
                       ) -> str | None:
    """Why splash cannot run this call, or None: it needs causal self-attention (S = T) with T a
    multiple of 128 (the kernel's block), and no sliding window (its segment ids cannot express
    one)."""
    if sliding_window:
        return f"segment ids cannot express a sliding window ({sliding_window})"
    if not causal or q_len != kv_len:
        return f"needs causal self-attention (causal=True, S = T), got causal={causal}, " \
               f"T={q_len}, S={kv_len}"
    if q_len % _SPLASH_BLOCKS[-1]:
        return f"needs T a multiple of {_SPLASH_BLOCKS[-1]}, got {q_len}"
    return None


def resolve_implementation(name: str = "auto", *, backend: str | None = None, dtype=None,
                           head_dim: int | None = None, q_len: int | None = None,
                           kv_len: int | None = None, causal: bool = False,
                           compute_capability=None, sliding_window: int = 0,
                           softcap: float = 0.0) -> str:
    """The implementation that `attention` runs for `name` on `backend` (default: jax's).

    "auto": cpu -> "xla"; gpu -> "cudnn" when `cudnn_unsupported` finds nothing and T > 1, else
    "dot_product"; tpu -> "splash" when `splash_unsupported` finds nothing, else "dot_product".
    An explicit name is returned as is after checking it can run here: ValueError (one line, the
    reason) for "cudnn" off a GPU or on a dtype / head dim it refuses (its T, S rules are met by
    padding); "splash" on a call it cannot take (not causal self-attention, e.g. a decode step
    with a KV cache, or T not a multiple of 128) runs "dot_product" instead, by rule, so that a
    model configured for splash still samples. Unknown names: ValueError listing the valid ones.
    """
    valid = ("auto",) + tuple(IMPLEMENTATIONS)
    if name not in valid:
        raise ValueError(f"unknown attention implementation {name!r}; valid: {list(valid)}")
    if softcap:  # only "xla" and "reference" cap the scores; "auto" runs "xla" everywhere
        if name not in SOFTCAP_IMPLEMENTATIONS + ("auto",):
            raise ValueError(f"attention implementation {name!r} has no logit soft cap; use "
                             f"one of {list(SOFTCAP_IMPLEMENTATIONS)} or 'auto'")
        return "xla" if name == "auto" else name
    backend = backend or jax.default_backend()
    if name == "auto":
        if backend == "gpu":
            ok = (head_dim is not None and (q_len or 0) > 1
                  and cudnn_unsupported(dtype, head_dim, compute_capability) is None)
            return "cudnn" if ok else "dot_product"
        if backend == "tpu":
            ok = q_len is not None and splash_unsupported(causal, q_len, kv_len,
                                                          sliding_window) is None
            return "splash" if ok else "dot_product"
        return "xla"
    if name == "cudnn":
        if backend != "gpu":
            raise ValueError(f"attention implementation 'cudnn' needs an NVIDIA GPU (jax backend "
                             f"'gpu'); this one is {backend!r}")
        if head_dim is not None:
            reason = cudnn_unsupported(dtype, head_dim, compute_capability)
            if reason:
                raise ValueError(f"attention implementation 'cudnn': {reason}")
    if name == "splash" and q_len is not None:
        # by rule, not an error: a model configured for splash also decodes with a KV cache
        if splash_unsupported(causal, q_len, q_len if kv_len is None else kv_len,
                              sliding_window):
            return "dot_product"
    return name


def attention(q, k, v, bias, *, causal: bool = False, implementation: str = "auto",
              segment_ids=None, sliding_window: int = 0, scale: float | None = None,
              softcap: float = 0.0):
    """softmax(q k^T / sqrt(E) + bias) v for grouped queries, by the chosen implementation.

    Args:
      q: [B, K, G, T, E] queries, grouped by their key/value head (G = H / K).
      k, v: [B, K, S, E] keys and values.
      bias: [B, 1, 1, T, S] float32 additive mask (`attention_bias`).
      causal: the caller promises that `bias` masks every key s > t for query t (with S = T).
        "xla" then splits the queries into at most 8 blocks, block i attending only keys up to
        its last query (62.5% of the score work skipped at 4 blocks); "cudnn" and "splash" skip
        the blocks above the diagonal inside their kernels.
      implementation: "auto" (per backend, `resolve_implementation`) or a key of
        `IMPLEMENTATIONS` ("xla", "reference", "dot_product", "cudnn", "splash").
      segment_ids: optional [B, T] int (or bool) segment ids of the rows (0 = padding), read by
        "splash" only, which otherwise derives them from `bias` (`segments_from_bias`); they
        must describe the same mask as `bias`.
      sliding_window: W > 0 when `bias` also carries a sliding window
        (`sliding_window_mask`): only so that "splash", which cannot express it, is not picked
        (the call runs "dot_product" instead); the mask itself is in `bias`.
      scale: the factor of the scores, q k^T * scale; None means 1 / sqrt(E) (Gemma:
        query_pre_attn_scalar^-1/2).
      softcap: 0, or c > 0: the scaled scores are soft-capped before the mask,
        s <- c tanh(s / c) (Gemma 2). Only "xla" (custom backward: times 1 - tanh^2) and
        "reference" (autodiff) take it; "auto" then runs "xla" on every backend, and naming
        another implementation is a ValueError.

    Returns [B, K, G, T, E] in the dtype of `v`. Rows whose keys are all masked (padding) are
    finite and meaningless (each implementation averages a different set of values).
    """
    if q.ndim != 5 or k.ndim != 4 or bias.ndim != 5:
        raise ValueError(f"attention takes q [B, K, G, T, E], k/v [B, K, S, E], bias "
                         f"[B, 1, 1, T, S]; got {q.shape}, {k.shape}, {bias.shape}")
    t, e = q.shape[3], q.shape[-1]
    name = resolve_implementation(implementation, dtype=q.dtype, head_dim=e, q_len=t,
                                  kv_len=k.shape[2], causal=causal,
                                  sliding_window=sliding_window, softcap=softcap)
    scale = 1.0 / float(e) ** 0.5 if scale is None else float(scale)
    extra = {"softcap": float(softcap)} if softcap else {}
    return IMPLEMENTATIONS[name](q, k, v, bias, causal=causal, scale=scale,
                                 segment_ids=segment_ids, **extra)
