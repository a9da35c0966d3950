"""Token log-probs and cross-entropy of a linear LM head, computed in vocabulary chunks.

    logits = h W^T                              h [N, D], W [V, D]
    logp_n = logits[n, y_n] - logsumexp_v logits[n, v]

computed without ever holding the [N, V] logits (or their gradient): the forward pass walks the
vocabulary in chunks of C columns, keeping an online logsumexp (running max m and rescaled sum
s, Milakov & Gimelshein 2018) and the picked target logit; a `jax.custom_vjp` backward
recomputes each chunk's logits from the saved logsumexp and accumulates

    d logits = g (onehot(y) - softmax(logits))       [N, C] per chunk
    d h += d logits W_c ,   d W_c = d logits^T h

chunk by chunk. Temporaries are O(N C) (or O(R C) with row chunks of R rows) instead of the
O(N V) of `token_logprobs(h @ W.T, y)` and its backward: the cut-cross-entropy idea (Wijmans et
al. 2024, arXiv 2411.09009; Liger kernels, arXiv 2410.10989) as plain XLA loops, so it runs on
CPU, GPU and TPU alike and under jit, vmap, remat and gradient accumulation.

Why not tokamax (checked on tokamax 0.0.12, `tokamax.linear_softmax_cross_entropy_loss`):
- it returns only the scalar CE, reduced by "sum" or "mean" over all rows: no per-token
  log-probs (DPO and the policy-gradient losses need log pi(y_t) per token, summed per sequence
  under a response mask), no mask or ignore index (padding would count), no weights;
- its memory-efficient implementation is a Pallas Mosaic kernel for TPU generation >= 5 only,
  with the row count a multiple of its 1024-row block; the other ("xla") implementation is a
  reference that materialises the full [N, V] logits (no memory saved), and there is no GPU
  kernel;
- the weight must be laid out [D, V] (our tied embedding table is [V, D]) and `precision` is
  not supported.
So this module is our own portable version. On TPU with unmasked mean CE over >= 1024-row
batches tokamax's kernel could serve SFT; that is not wired in (SFT masks padding).

Numerics match `CausalLM.logits` + `token_logprobs`: the two operands are promoted to their
common dtype (as flax's `promote_dtype` does), the matmul accumulates in float32
(`preferred_element_type`), everything after it is float32. With float32 parameters (the
default) the values equal the plain path's to float32 rounding; with bfloat16 parameters and
hidden states the plain path rounds its logits to bfloat16 before the upcast while this one
keeps them in float32 (more accurate, not bit-equal).

A vocabulary size that is not a multiple of the chunk needs no padded copy of W: the last
chunk starts at V - C (overlapping the previous one) and masks the columns already counted.

Sharding: rows (batch x tokens) may be sharded freely (each device walks the vocabulary for its
rows; XLA sums the dW partials). The loop slices W along V, so a W sharded over V (vocab tensor
parallelism) is gathered by XLA; with FSDP the weight is gathered for the matmul anyway.
"""

from __future__ import annotations

import functools
import numbers

import jax
import jax.numpy as jnp

WEIGHT_LAYOUTS = ("vd", "dv")


def _positive_int(x) -> bool:
    return isinstance(x, numbers.Integral) and not isinstance(x, bool) and x >= 1


def _check(hidden, weight, targets, chunk, weight_layout, row_chunk):
    if weight_layout not in WEIGHT_LAYOUTS:
        raise ValueError(f"weight_layout must be one of {WEIGHT_LAYOUTS}, got {weight_layout!r}")
    if not _positive_int(chunk):
        raise ValueError(f"chunk must be a positive int, got {chunk!r}")
    if row_chunk is not None and not _positive_int(row_chunk):
        raise ValueError(f"row_chunk must be None or a positive int, got {row_chunk!r}")
    if weight.ndim != 2:
        raise ValueError(f"weight must be 2-D, got shape {weight.shape}")
    d = weight.shape[1] if weight_layout == "vd" else weight.shape[0]
    if hidden.ndim < 1 or hidden.shape[-1] != d:
        raise ValueError(f"hidden {hidden.shape} does not match weight {weight.shape} "
                         f"(layout {weight_layout!r})")
    if hidden.shape[:-1] != targets.shape:
        raise ValueError(f"hidden {hidden.shape} does not match targets {targets.shape}")
    if not jnp.issubdtype(targets.dtype, jnp.integer):
        raise ValueError(f"targets must be integers, got {targets.dtype}")


def _vocab(weight, layout):
    return weight.shape[0] if layout == "vd" else weight.shape[1]


def _weight_chunk(w, start, size, layout):
    """Rows [start, start + size) of W as [C, D], whichever way W is stored."""
    if layout == "vd":
        return jax.lax.dynamic_slice_in_dim(w, start, size, axis=0)
    return jax.lax.dynamic_slice_in_dim(w, start, size, axis=1).T


def _chunk_logits(h, w, j, chunk, vocab, layout, targets):
    """Logits of vocabulary chunk j ([R, C] float32, already-counted columns at -inf), whether
    each column is new (valid [C]), whether it is the target ([R, C]), and the chunk's start."""
    done = j * chunk
    start = jnp.minimum(done, vocab - chunk)  # the last chunk overlaps instead of padding
    wc = _weight_chunk(w, start, chunk, layout)
    logits = jax.lax.dot_general(h, wc, (((1,), (1,)), ((), ())),
                                 preferred_element_type=jnp.float32)
    cols = start + jnp.arange(chunk)
    valid = cols >= done
    logits = jnp.where(valid[None, :], logits, -jnp.inf)
    hit = valid[None, :] & (cols[None, :] == targets[:, None])
    return logits, valid, hit, start, wc


def _rows_forward(h, w, targets, chunk, vocab, layout):
    """(logsumexp, target logit) [R] of one block of rows, over the vocabulary in chunks."""
    r = h.shape[0]

    def body(j, carry):
        m, s, picked = carry
        logits, _, hit, _, _ = _chunk_logits(h, w, j, chunk, vocab, layout, targets)
        m_new = jnp.maximum(m, logits.max(axis=-1))
        s = s * jnp.exp(m - m_new) + jnp.exp(logits - m_new[:, None]).sum(axis=-1)
        picked = picked + jnp.where(hit, logits, 0.0).sum(axis=-1)
        return m_new, s, picked

    init = (jnp.full((r,), -jnp.inf, jnp.float32), jnp.zeros((r,), jnp.float32),
            jnp.zeros((r,), jnp.float32))
    m, s, picked = jax.lax.fori_loop(0, -(-vocab // chunk), body, init)
    return m + jnp.log(s), picked


def _rows_backward(h, w, targets, lse, g, dw, chunk, vocab, layout):
    """d h [R, D] (float32) of one block of rows, and dW (float32, W's layout) + this block's
    contribution; g [R] is the cotangent of the block's log-probs."""

    def dlogits(logits, valid, hit):  # g (onehot(y) - softmax(z)); invalid columns: exp = 0
        return g[:, None] * (hit.astype(jnp.float32) - jnp.exp(logits - lse[:, None]))

    return _rows_vjp(h, w, targets, dw, chunk, vocab, layout, dlogits)


def _rows_vjp(h, w, targets, dw, chunk, vocab, layout, dlogits_fn):
    """(d h [R, D] float32, dW + this block's contribution) for the chunk cotangents
    `dlogits_fn(logits [R, C], valid [C], hit [R, C]) -> d logits [R, C]` (0 where not valid):
    d h += d logits W_c, d W_c += d logits^T h, chunk by chunk."""

    def body(j, carry):
        dh, dw = carry
        logits, valid, hit, start, wc = _chunk_logits(h, w, j, chunk, vocab, layout, targets)
        dlogits = dlogits_fn(logits, valid, hit).astype(h.dtype)
        dh = dh + jnp.dot(dlogits, wc, preferred_element_type=jnp.float32)
        if layout == "vd":
            dwc = jax.lax.dot_general(dlogits, h, (((0,), (0,)), ((), ())),
                                      preferred_element_type=jnp.float32)  # [C, D]
            old = jax.lax.dynamic_slice_in_dim(dw, start, chunk, axis=0)
            dw = jax.lax.dynamic_update_slice_in_dim(dw, old + dwc, start, axis=0)
        else:
            dwc = jax.lax.dot_general(h, dlogits, (((0,), (0,)), ((), ())),
                                      preferred_element_type=jnp.float32)  # [D, C]
            old = jax.lax.dynamic_slice_in_dim(dw, start, chunk, axis=1)
            dw = jax.lax.dynamic_update_slice_in_dim(dw, old + dwc, start, axis=1)
        return dh, dw

    dh = jnp.zeros(h.shape, jnp.float32)
    return jax.lax.fori_loop(0, -(-vocab // chunk), body, (dh, dw))


def _row_blocks(n, row_chunk):
    """(rows per block R, number of blocks); the last block starts at N - R (overlapping)."""
    if row_chunk is None or row_chunk >= n:
        return n, 1
    return row_chunk, -(-n // row_chunk)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4, 5))
def _logprobs(h, w, targets, chunk, layout, row_chunk):
    return _logprobs_fwd(h, w, targets, chunk, layout, row_chunk)[0]


def _logprobs_fwd(h, w, targets, chunk, layout, row_chunk):
    vocab = _vocab(w, layout)
    n = h.shape[0]
    r, blocks = _row_blocks(n, row_chunk)
    if blocks == 1:
        lse, picked = _rows_forward(h, w, targets, chunk, vocab, layout)
    else:
        def body(i, carry):
            lse, picked = carry
            start = jnp.minimum(i * r, n - r)  # overlapping rows are recomputed identically
            hb = jax.lax.dynamic_slice_in_dim(h, start, r)
            tb = jax.lax.dynamic_slice_in_dim(targets, start, r)
            lb, pb = _rows_forward(hb, w, tb, chunk, vocab, layout)
            return (jax.lax.dynamic_update_slice_in_dim(lse, lb, start, 0),
                    jax.lax.dynamic_update_slice_in_dim(picked, pb, start, 0))

        zeros = jnp.zeros((n,), jnp.float32)
        lse, picked = jax.lax.fori_loop(0, blocks, body, (zeros, zeros))
    return picked - lse, (h, w, targets, lse)


def _logprobs_bwd(chunk, layout, row_chunk, res, g):
    h, w, targets, lse = res
    vocab = _vocab(w, layout)
    n = h.shape[0]
    g = g.astype(jnp.float32)
    dw = jnp.zeros(w.shape, jnp.float32)
    r, blocks = _row_blocks(n, row_chunk)
    if blocks == 1:
        dh, dw = _rows_backward(h, w, targets, lse, g, dw, chunk, vocab, layout)
    else:
        def body(i, carry):
            dh, dw = carry
            done = i * r
            start = jnp.minimum(done, n - r)
            sl = lambda x: jax.lax.dynamic_slice_in_dim(x, start, r)  # noqa: E731
            # rows of an overlapping last block that an earlier block counted get no cotangent
            gb = jnp.where(start + jnp.arange(r) >= done, sl(g), 0.0)
            dhb, dw = _rows_backward(sl(h), w, sl(targets), sl(lse), gb, dw, chunk, vocab,
                                     layout)
            old = jax.lax.dynamic_slice_in_dim(dh, start, r)
            return jax.lax.dynamic_update_slice_in_dim(dh, old + dhb, start, 0), dw

        dh, dw = jax.lax.fori_loop(0, blocks, body, (jnp.zeros(h.shape, jnp.float32), dw))
    return dh.astype(h.dtype), dw.astype(w.dtype), None


_logprobs.defvjp(_logprobs_fwd, _logprobs_bwd)


def chunked_token_logprobs(hidden: jax.Array, weight: jax.Array, targets: jax.Array, *,
                           chunk: int, weight_layout: str = "vd",
                           row_chunk: int | None = None) -> jax.Array:
    """log softmax(hidden W^T)[targets] in float32, the vocabulary walked in chunks:
    [..., D], W, [...] -> [...].

        logp = (h W^T)[y] - logsumexp_v (h W^T)_v

    Equal to `token_logprobs(hidden @ W^T, targets)` (the LM head + `alignax.ops.token_logprobs`)
    and differentiable w.r.t. `hidden` and `weight` (custom VJP), but neither the forward nor
    the backward holds more than [R, C] logits at once (R = `row_chunk` or all rows, C =
    `chunk`): for an LM head of vocabulary V the [B, T, V] logits are never materialised.

    Args:
      hidden: final hidden states [..., D], any float dtype (bfloat16 allowed).
      weight: the LM head: [V, D] when `weight_layout == "vd"` (a tied embedding table), or
        [D, V] when `"dv"` (a Linear kernel).
      targets: token ids [...] in [0, V) (an id outside it picks no logit: -logsumexp).
      chunk: vocabulary columns per step C (static); a chunk >= V is one step. A C that does not
        divide V is fine (the last chunk overlaps the previous one).
      weight_layout: "vd" or "dv" (static).
      row_chunk: rows per block R (static; None = all rows at once). Bounds the temporaries
        by R x C when N = prod(...) is large, e.g. a long-sequence batch.

    Returns:
      float32 log-probs [...].

    Raises:
      ValueError: on a bad layout, chunk or shapes.
    """
    _check(hidden, weight, targets, chunk, weight_layout, row_chunk)
    lead = targets.shape
    vocab = _vocab(weight, weight_layout)
    dtype = jnp.result_type(hidden.dtype, weight.dtype)  # flax's promote_dtype
    h = hidden.reshape(-1, hidden.shape[-1]).astype(dtype)
    w = weight.astype(dtype)
    out = _logprobs(h, w, targets.reshape(-1).astype(jnp.int32), min(int(chunk), vocab),
                    weight_layout, None if row_chunk is None else int(row_chunk))
    return out.reshape(lead)


def chunked_cross_entropy(hidden: jax.Array, weight: jax.Array, targets: jax.Array,
                          mask: jax.Array, *, chunk: int, weight_layout: str = "vd",
                          row_chunk: int | None = None) -> jax.Array:
    """Token-mean negative log-likelihood under `mask`, chunked: [..., D], W, [...], [...] -> [].

        L = -sum_n m_n log p(y_n) / max(sum_n m_n, 1)

    The SFT objective without the [..., V] logits (see `chunked_token_logprobs` for the
    arguments).
    """
    logps = chunked_token_logprobs(hidden, weight, targets, chunk=chunk,
                                   weight_layout=weight_layout, row_chunk=row_chunk)
    m = mask.astype(jnp.float32)
    return -(logps * m).sum() / jnp.maximum(m.sum(), 1.0)


def _rows_entropy(h, w, chunk, vocab, layout):
    """(logsumexp, E_p[z]) [R] of one block of rows: an online logsumexp (running max m, sum
    s = sum e^(z - m)) with t = sum e^(z - m) z rescaled alongside, E_p[z] = t / s."""
    r = h.shape[0]
    no_targets = jnp.full((r,), -1, jnp.int32)

    def body(j, carry):
        m, s, t = carry
        logits, valid, _, _, _ = _chunk_logits(h, w, j, chunk, vocab, layout, no_targets)
        m_new = jnp.maximum(m, logits.max(axis=-1))
        scale = jnp.exp(m - m_new)
        e = jnp.exp(logits - m_new[:, None])
        s = s * scale + e.sum(axis=-1)
        t = t * scale + jnp.where(valid[None, :], e * logits, 0.0).sum(axis=-1)
        return m_new, s, t

    init = (jnp.full((r,), -jnp.inf, jnp.float32), jnp.zeros((r,), jnp.float32),
            jnp.zeros((r,), jnp.float32))
    m, s, t = jax.lax.fori_loop(0, -(-vocab // chunk), body, init)
    return m + jnp.log(s), t / s


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _entropy(h, w, chunk, layout):
    return _entropy_fwd(h, w, chunk, layout)[0]


def _entropy_fwd(h, w, chunk, layout):
    lse, mean = _rows_entropy(h, w, chunk, _vocab(w, layout), layout)
    return lse - mean, (h, w, lse, mean)


def _entropy_bwd(chunk, layout, res, g):
    # dH/dz_v = p_v (E_p[z] - z_v), p = softmax(z)
    h, w, lse, mean = res
    g = g.astype(jnp.float32)
    no_targets = jnp.full((h.shape[0],), -1, jnp.int32)

    def dlogits(logits, valid, hit):
        del hit
        d = g[:, None] * jnp.exp(logits - lse[:, None]) * (mean[:, None] - logits)
        return jnp.where(valid[None, :], d, 0.0)

    dh, dw = _rows_vjp(h, w, no_targets, jnp.zeros(w.shape, jnp.float32), chunk,
                       _vocab(w, layout), layout, dlogits)
    return dh.astype(h.dtype), dw.astype(w.dtype)


_entropy.defvjp(_entropy_fwd, _entropy_bwd)


def chunked_entropy(hidden: jax.Array, weight: jax.Array, *, chunk: int,
                    weight_layout: str = "vd") -> jax.Array:
    """Entropy of softmax(hidden W^T) per position in float32, the vocabulary walked in chunks:
    [..., D], W -> [...].

        H = logsumexp_v z_v - sum_v p_v z_v,    z = h W^T,  p = softmax(z)

    Equal to `alignax.ops.token_entropy(hidden @ W^T)` (the policy-gradient entropy metric and
    bonus) without the [..., V] logits: the forward keeps an online logsumexp and the running
    sum of e^(z - m) z; the custom backward recomputes each chunk's logits and applies
    dH/dz_v = p_v (E_p[z] - z_v) to d hidden and d W chunk by chunk, so temporaries are
    O(N C) (N = prod(...) rows, all at once: no row blocks).

    Args:
      hidden: final hidden states [..., D] (any float dtype).
      weight: the LM head, [V, D] ("vd") or [D, V] ("dv").
      chunk: vocabulary columns per step C (static).
      weight_layout: "vd" or "dv" (static).

    Returns:
      float32 entropies [...] (nats).

    Raises:
      ValueError: on a bad layout, chunk or shapes.
    """
    lead = hidden.shape[:-1]
    _check(hidden, weight, jnp.zeros(lead, jnp.int32), chunk, weight_layout, None)
    vocab = _vocab(weight, weight_layout)
    dtype = jnp.result_type(hidden.dtype, weight.dtype)
    h = hidden.reshape(-1, hidden.shape[-1]).astype(dtype)
    out = _entropy(h, weight.astype(dtype), min(int(chunk), vocab), weight_layout)
    return out.reshape(lead)
