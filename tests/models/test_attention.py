"""Attention by backend: every implementation that runs here agrees with the plain softmax
reference (values and gradients, causal and not, GQA, padding, packed rows), fully masked rows
stay finite, "auto" picks by rule, and the model-level guarantees (padding invariance, sampler
log-probs == training log-probs) hold per implementation.

Tolerances: float32 rtol = atol = 1e-5 elementwise. bfloat16: relative error in norm
||x - x_ref|| / ||x_ref|| <= 1e-2 against the float32 reference on the same (bf16) inputs:
bf16 keeps 8 significant bits (unit roundoff 2^-9 = 2e-3), the probabilities are rounded to
bf16 before the product with v and the output is rounded once more, so a few roundoffs are
expected; measured on this CPU 2e-3 (values) and 3.5e-3 (gradients) for "xla" and
"dot_product"; 1e-2 leaves 3x.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from alignax.models import attention as attn
from alignax.models.attention import (IMPLEMENTATIONS, attention, attention_bias,
                                      resolve_implementation, segments_from_bias)
from alignax.models.transformer import causal_attention_mask

BACKEND = jax.default_backend()
# implementations that run natively on this backend (splash off TPU runs interpreted: its own
# test below), "reference" excluded (it is what the others are compared with)
HERE = [n for n in IMPLEMENTATIONS if BACKEND in attn.BACKENDS[n] and n != "reference"]
FP32 = [n for n in HERE if n != "cudnn"]  # cuDNN takes bf16/fp16 only
BF16_TOL = 1e-2
on_gpu = pytest.mark.skipif(BACKEND != "gpu", reason="cuDNN needs an NVIDIA GPU")


def _segments(b, t):
    """Row 0 left-padded, row 1 two packed sequences then right padding (0 = padding)."""
    seg = np.ones((b, t), np.int32)
    seg[0, :5] = 0
    if b > 1:
        seg[1, t // 2:] = 2
        seg[1, t - 6:] = 0
    return seg


def _bias(mask):
    """`attention_bias` in NumPy (no eager jax ops to compile in the tests)."""
    return np.where(mask, 0.0, -1e30).astype(np.float32)[:, None, None]


def _causal_mask(seg):
    """`causal_attention_mask` in NumPy."""
    t = seg.shape[1]
    same = seg[:, :, None] == seg[:, None, :]
    return np.tril(np.ones((t, t), bool))[None] & same & (seg > 0)[:, None, :]


def _case(causal, b=2, kv=2, g=2, t=80, e=8, dtype=jnp.float32, seed=0, tq=5):
    """(q, k, v, bias, real rows [B, 1, 1, T, 1], cotangent on real rows) as NumPy/jnp arrays.

    Causal: packed and padded self-attention (T = 80 > 64, so "xla" runs its query blocks).
    Not causal: `tq` queries over T keys with left padding (a decode-like cross shape)."""
    rng = np.random.default_rng(seed)
    tq = t if causal else tq
    if causal:
        seg = _segments(b, t)
        mask, real = _causal_mask(seg), (seg > 0)[:, None, None, :, None]
    else:
        valid = np.arange(t)[None] >= np.array([7, 0])[:b, None]
        mask = np.broadcast_to(valid[:, None, :], (b, tq, t))
        real = np.ones((b, 1, 1, tq, 1), bool)
    q, w = rng.normal(size=(2, b, kv, g, tq, e))
    k, v = rng.normal(size=(2, b, kv, t, e))
    return (*(jnp.asarray(x, dtype) for x in (q, k, v)), jnp.asarray(_bias(mask)), real,
            jnp.asarray(w * real, jnp.float32))


TRACES = []


@functools.partial(jax.jit, static_argnames=("name", "causal"))
def _value_and_grads(q, k, v, bias, w, *, name, causal):
    """(out, grads of sum(out * w) wrt q, k, v) of `name` and of "reference" on the float32
    upcast inputs, in one program."""
    TRACES.append(name)

    def run(impl, q, k, v):
        def loss(q, k, v):
            out = attention(q, k, v, bias, causal=causal, implementation=impl)
            return jnp.sum(out.astype(jnp.float32) * w), out
        (_, out), grads = jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True)(q, k, v)
        return out, grads

    return run(name, q, k, v), run("reference", *(x.astype(jnp.float32) for x in (q, k, v)))


def _rel(x, ref):
    x, ref = np.asarray(x, np.float32), np.asarray(ref, np.float32)
    return float(np.linalg.norm(x - ref) / np.linalg.norm(ref))


def _check(name, causal, dtype=jnp.float32, **shape):
    """`name` equals the reference: float32 elementwise to 1e-5 on real rows (every gradient),
    bf16/fp16 in relative norm to BF16_TOL; everything finite, padded rows included."""
    q, k, v, bias, real, w = _case(causal, dtype=dtype, **shape)
    (out, grads), (ref_out, ref_grads) = _value_and_grads(q, k, v, bias, w, name=name,
                                                          causal=causal)
    assert out.dtype == dtype, (out.dtype, dtype)
    out32 = np.asarray(out, np.float32)
    assert all(bool(jnp.isfinite(x.astype(jnp.float32)).all()) for x in (out, *grads))
    if dtype == jnp.float32:
        np.testing.assert_allclose(np.where(real, out32, 0), np.where(real, ref_out, 0),
                                   rtol=1e-5, atol=1e-5)
        for got, want in zip(grads, ref_grads):
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    else:
        assert _rel(np.where(real, out32, 0), np.where(real, ref_out, 0)) < BF16_TOL
        for got, want in zip(grads, ref_grads):
            assert _rel(got, want) < BF16_TOL


@pytest.mark.parametrize("name", FP32)
def test_values_and_gradients_equal_the_reference(name):
    """float32 causal (packed + padded rows, GQA) and not causal (S != T, left padding), and
    bfloat16 causal; a second call with new values does not retrace."""
    _check(name, causal=True)
    _check(name, causal=False)
    _check(name, causal=True, dtype=jnp.bfloat16)
    before = len(TRACES)
    _check(name, causal=True, seed=1)
    assert len(TRACES) == before


def test_auto_on_cpu_is_the_xla_path_exactly():
    q, k, v, bias, _, _ = _case(True)
    assert resolve_implementation("auto", backend="cpu") == "xla"
    if BACKEND == "cpu":
        run = jax.jit(attention, static_argnames=("causal", "implementation"))
        np.testing.assert_array_equal(run(q, k, v, bias, causal=True),
                                      run(q, k, v, bias, causal=True, implementation="xla"))


@pytest.mark.parametrize("kwargs,expected", [
    (dict(backend="cpu"), "xla"),
    (dict(backend="gpu", dtype=jnp.bfloat16, head_dim=64, q_len=256, compute_capability=(9, 0)),
     "cudnn"),
    (dict(backend="gpu", dtype=jnp.float16, head_dim=128, q_len=7, compute_capability=(8, 0)),
     "cudnn"),
    (dict(backend="gpu", dtype=jnp.float32, head_dim=64, q_len=256), "dot_product"),
    (dict(backend="gpu", dtype=jnp.bfloat16, head_dim=12, q_len=256, compute_capability=(9, 0)),
     "dot_product"),
    (dict(backend="gpu", dtype=jnp.bfloat16, head_dim=256, q_len=256, compute_capability=(8, 0)),
     "dot_product"),
    (dict(backend="gpu", dtype=jnp.bfloat16, head_dim=256, q_len=256, compute_capability=(9, 0)),
     "cudnn"),
    (dict(backend="gpu", dtype=jnp.bfloat16, head_dim=64, q_len=1, compute_capability=(9, 0)),
     "dot_product"),  # a decode step
    (dict(backend="tpu", causal=True, q_len=256, kv_len=256), "splash"),
    (dict(backend="tpu", causal=True, q_len=200, kv_len=200), "dot_product"),
    (dict(backend="tpu", causal=False, q_len=1, kv_len=256), "dot_product"),
])
def test_auto_picks_per_backend(kwargs, expected):
    assert resolve_implementation("auto", **kwargs) == expected


def test_explicit_names_are_checked():
    with pytest.raises(ValueError, match="unknown attention implementation 'flash'; valid"):
        resolve_implementation("flash")
    with pytest.raises(ValueError, match="needs an NVIDIA GPU"):
        resolve_implementation("cudnn", backend="cpu")
    with pytest.raises(ValueError, match="takes bfloat16 or float16"):
        resolve_implementation("cudnn", backend="gpu", dtype=jnp.float32, head_dim=64)
    with pytest.raises(ValueError, match="multiple of 8"):
        resolve_implementation("cudnn", backend="gpu", dtype=jnp.bfloat16, head_dim=20,
                               compute_capability=(9, 0))
    # splash takes causal self-attention only; other calls (decode) run dot_product by rule
    assert resolve_implementation("splash", backend="tpu", causal=True, q_len=128) == "splash"
    assert resolve_implementation("splash", backend="tpu", q_len=1, kv_len=128) == "dot_product"
    assert resolve_implementation("xla", backend="tpu") == "xla"
    q, k, v, bias, _, _ = _case(True, t=16)
    with pytest.raises(ValueError, match="attention takes q"):
        attention(q[0], k, v, bias)


def test_segments_from_bias_recover_the_mask():
    seg = np.array([[0, 0, 1, 1, 1, 2, 2, 0], [1, 1, 0, 1, 1, 1, 1, 1],
                    [3, 3, 1, 1, 3, 3, 0, 0]], np.int32)  # left/right pad, a gap, reused ids
    derived = np.asarray(segments_from_bias(jnp.asarray(_bias(_causal_mask(seg)))))
    padded_rows = ~(seg > 0)[:, :, None]  # their masks differ (meaningless rows)
    np.testing.assert_array_equal(_causal_mask(seg) | padded_rows,
                                  _causal_mask(derived) | padded_rows)
    np.testing.assert_array_equal(derived > 0, seg > 0)
    # the transformer's own mask and bias give the same ids
    np.testing.assert_array_equal(derived, segments_from_bias(
        attention_bias(causal_attention_mask(jnp.asarray(seg)))))


def test_splash_equals_the_reference_with_packed_and_padded_rows():
    """TPU splash attention, natively on TPU and in Pallas interpret mode elsewhere (T = 128,
    the kernel's block): segment ids derived from the bias, GQA through the MQA kernel."""
    _check("splash", causal=True, b=2, kv=1, g=2, t=128, e=8)
    # the caller's segment ids (the transformer's mask) give the same rows
    q, k, v, bias, real, _ = _case(True, b=2, kv=1, g=2, t=128, e=8)
    run = jax.jit(attention, static_argnames=("causal", "implementation"))
    derived = run(q, k, v, bias, causal=True, implementation="splash")
    given = run(q, k, v, bias, causal=True, implementation="splash",
                segment_ids=jnp.asarray(_segments(2, 128)))
    np.testing.assert_allclose(np.where(real, given, 0), np.where(real, derived, 0),
                               rtol=1e-6, atol=1e-6)


def test_cudnn_wrapper_layout_padding_and_bias_clipping(monkeypatch):
    """The "cudnn" wrapper's own work (BTNH layout, GQA heads, the bias clipped to cuDNN's large
    negative in bf16, odd T padded to even and sliced off, causal passed on) checked on any
    backend by running XLA inside in place of cuDNN (bf16: XLA:CPU has no fp16 dot)."""
    original = jax.nn.dot_product_attention
    seen = []

    def xla_inside(*args, implementation=None, **kwargs):
        assert implementation == "cudnn"
        seen.append((args[0].shape, kwargs["bias"].dtype, kwargs["is_causal"]))
        jax.debug.callback(lambda m: seen.append(float(m)), kwargs["bias"].min())
        return original(*args, implementation="xla", **kwargs)

    monkeypatch.setattr(jax.nn, "dot_product_attention", xla_inside)
    monkeypatch.setattr(attn, "resolve_implementation", lambda name, **kw: name)
    _check("cudnn", causal=True, dtype=jnp.bfloat16, t=17)
    assert seen[0] == ((2, 18, 4, 8), jnp.bfloat16, True) and seen[-1] == -float(2 << 40)
    seen.clear()
    _check("cudnn", causal=False, dtype=jnp.bfloat16, t=17, tq=1)  # a decode step: T = 1 -> 2
    assert seen[0] == ((2, 2, 4, 8), jnp.bfloat16, False) and seen[-1] == -float(2 << 40)


@on_gpu
@pytest.mark.parametrize("causal,shape", [
    (True, dict()), (False, dict()), (True, dict(t=81)), (False, dict(t=81)),
    (True, dict(kv=1, g=4, e=64)), (False, dict(tq=1, e=64))])
@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_cudnn_equals_the_reference(causal, shape, dtype):
    """cuDNN flash attention in bf16 / fp16: GQA, padding, packed rows, odd T (padded to even
    lengths), a decode step (T = 1)."""
    _check("cudnn", causal, dtype=dtype, **shape)


# --------------------------------------------------------------------------------------------
# model-level guarantees per implementation (TransformerConfig.attention)
# --------------------------------------------------------------------------------------------

def _model_cfg(dtype, attention="auto"):
    from alignax.models.transformer import TransformerConfig

    return TransformerConfig(vocab_size=40, d_model=32, n_layers=1, n_heads=4, n_kv_heads=2,
                             d_ff=48, max_len=128, dtype=dtype, attention=attention)


MODEL_IMPLS = [n for n in HERE if n not in ("xla",)]  # "xla": tests/models, tests/sampling
MODEL_DTYPE = {"cudnn": "bfloat16"}
# bf16 (cuDNN only): the sampler's decode (T = 1, padded to 2) and the training forward (whole
# rows) tile cuDNN's kernel differently, so their attention outputs differ by bf16 roundoff
# (2e-3 relative, measured above on CPU for the other paths), which reaches log-probs of
# |x| <= 4 as ~1e-2; 5e-2 leaves margin (not yet run on a GPU). With one implementation for
# both, bf16 sampler and training log-probs agree to 2.4e-7 on this CPU.
MODEL_TOL = {"float32": 1e-5, "bfloat16": 5e-2}


@pytest.mark.parametrize("name", MODEL_IMPLS)
def test_padding_invariance_and_sampler_logps_per_implementation(name):
    from alignax.models.transformer import make_lm
    from alignax.ops import sequence_logprobs, shift_for_next_token, token_logprobs
    from alignax.sampling.sampler import sample

    dtype = MODEL_DTYPE.get(name, "float32")
    tol = MODEL_TOL[dtype]
    model = make_lm(_model_cfg(dtype, attention=name))
    params = jax.jit(model.init)(jax.random.key(0))  # jitted: eager init compiles op by op

    @jax.jit
    def score(ids, mask):
        targets, target_mask = shift_for_next_token(ids, mask, mask)
        return sequence_logprobs(model.apply(params, ids, mask), targets, target_mask)

    # one sequence of 7 tokens, alone (B = 1) and among 3 neighbours, padded left and right
    # (splash takes T a multiple of 128; shorter calls, like the sampler's, run dot_product)
    rng = np.random.default_rng(0)
    target, t = rng.integers(2, 40, size=7), (128 if name == "splash" else 12)
    values = []
    for rows in (1, 4):
        for side in ("left", "right"):
            ids, mask = np.zeros((rows, t), np.int32), np.zeros((rows, t), bool)
            for r in range(rows):
                seq = target if r == rows - 1 else rng.integers(2, 40, size=rng.integers(1, t))
                cols = slice(0, len(seq)) if side == "right" else slice(t - len(seq), t)
                ids[r, cols], mask[r, cols] = seq, True
            values.append(float(score(jnp.asarray(ids), jnp.asarray(mask))[rows - 1]))
    np.testing.assert_allclose(values, values[0], atol=tol)

    # sampler log-probs (prefill + KV-cache decode) == the training forward's
    prompts = jnp.array([[5, 6, 7, 8, 9], [0, 0, 11, 12, 13], [14, 15, 0, 0, 0]], jnp.int32)
    out = sample(model, params, prompts, prompts != 0, jax.random.key(1), max_new_tokens=4)
    ids = jnp.concatenate([out.prompt_ids, out.tokens], axis=1)
    mask = jnp.concatenate([out.prompt_mask, out.mask], axis=1)
    expected = jax.jit(lambda p, ids, mask, tokens: token_logprobs(
        model.apply(p, ids, mask)[:, prompts.shape[1] - 1:-1], tokens))(params, ids, mask,
                                                                         out.tokens)
    np.testing.assert_allclose(np.where(out.mask, out.logps, 0.0),
                               np.where(out.mask, expected, 0.0), atol=tol)


def test_the_config_field_selects_the_kernel():
    from alignax.models.transformer import make_lm

    with pytest.raises(ValueError, match="attention must be 'auto' or one of"):
        _model_cfg("float32", attention="flash")
    ids = jnp.array([[3, 4, 5, 6, 0, 0], [7, 8, 9, 10, 11, 12]], jnp.int32)
    mask = ids != 0
    plain = make_lm(_model_cfg("float32"))
    params = jax.jit(plain.init)(jax.random.key(0))
    expected = plain.apply(params, ids, mask)
    got = make_lm(_model_cfg("float32", attention="reference")).apply(params, ids, mask)
    np.testing.assert_allclose(np.where(mask[..., None], got, 0),
                               np.where(mask[..., None], expected, 0), rtol=1e-5, atol=1e-5)
    if jax.default_backend() != "gpu":  # the field reaches the kernel: cuDNN refuses off GPU
        with pytest.raises(ValueError, match="cudnn"):
            make_lm(_model_cfg("bfloat16", attention="cudnn")).apply(params, ids, mask)


def test_sliding_window_mask_is_transformers_overlay():
    """kv_idx > q_idx - W (transformers' sliding_window_overlay), also from a cache offset."""
    t, s, w = 6, 9, 3
    got = np.asarray(attn.sliding_window_mask(t, s, w, offset=3))[0]
    want = np.array([[kv > q + 3 - w for kv in range(s)] for q in range(t)])
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(np.asarray(attn.sliding_window_mask(4, 4, 2))[0],
                                  np.triu(np.tril(np.ones((4, 4), bool), 0), -1) | np.triu(
                                      np.ones((4, 4), bool), 1))


def test_a_sliding_window_never_runs_splash():
    assert resolve_implementation("auto", backend="tpu", q_len=256, kv_len=256, causal=True,
                                  sliding_window=64) == "dot_product"
    assert resolve_implementation("splash", backend="tpu", q_len=256, kv_len=256, causal=True,
                                  sliding_window=64) == "dot_product"
    assert "sliding window" in attn.splash_unsupported(True, 256, 256, 64)


def test_sliding_window_bias_through_the_causal_query_blocks():
    """T = 150 > the causal block: "xla" splits the queries into blocks and must still apply
    the window carried by the bias (values equal the reference)."""
    rng = np.random.default_rng(0)
    b, kv, g, t, e = 1, 1, 2, 150, 8
    q = jnp.asarray(rng.normal(size=(b, kv, g, t, e)), jnp.float32)
    k, v = (jnp.asarray(rng.normal(size=(b, kv, t, e)), jnp.float32) for _ in range(2))
    mask = causal_attention_mask(jnp.ones((b, t), bool)) & attn.sliding_window_mask(t, t, 20)
    bias = attention_bias(mask)
    want = attention(q, k, v, bias, implementation="reference")
    got = attention(q, k, v, bias, causal=True, implementation="xla", sliding_window=20)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    full = attention(q, k, v, attention_bias(causal_attention_mask(jnp.ones((b, t), bool))),
                     causal=True, implementation="xla")
    assert np.abs(np.asarray(full - got))[..., 20:, :].max() > 1e-3
