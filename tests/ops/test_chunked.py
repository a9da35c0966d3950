"""Chunked token log-probs / cross-entropy equal the plain LM head + token_logprobs, in values and
gradients, with compiled temporaries that scale with the chunk instead of the vocabulary."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from alignax.ops import chunked_cross_entropy, chunked_token_logprobs, token_logprobs
from tests.test_utils import count_compilations


def _inputs(n=(3, 11), d=16, v=50, seed=0, scale=1.0):
    rng = np.random.default_rng(seed)
    h = jnp.asarray(rng.normal(size=(*n, d)) * scale, jnp.float32)
    w = jnp.asarray(rng.normal(size=(v, d)), jnp.float32)
    y = jnp.asarray(rng.integers(0, v, n), jnp.int32)
    g = jnp.asarray(rng.normal(size=n), jnp.float32)
    return h, w, y, g


def _plain(h, w, y):
    """What CausalLM.logits + token_logprobs compute (float32 logits of the promoted matmul)."""
    return token_logprobs(jnp.einsum("...d,vd->...v", h, w).astype(jnp.float32), y)


def _value_and_grads(fn, h, w, g):
    """fn(h, w) and the gradients of sum(fn(h, w) * g) wrt (h, w), as one jitted program (one
    compile, not one per primitive)."""
    return jax.jit(lambda h, w: (fn(h, w), jax.grad(lambda h, w: (fn(h, w) * g).sum(),
                                                    (0, 1))(h, w)))(h, w)


@pytest.fixture(scope="module")
def plain_values_and_grads():
    h, w, y, g = _inputs()
    return _value_and_grads(lambda h, w: _plain(h, w, y), h, w, g)


@pytest.mark.parametrize("layout", ["vd", "dv"])
@pytest.mark.parametrize("chunk,row_chunk", [(7, None), (16, 8), (50, None), (64, 33), (13, 5)])
def test_values_and_gradients_equal_plain_path(layout, chunk, row_chunk,
                                               plain_values_and_grads):
    h, w, y, g = _inputs()  # V = 50: chunks 7, 13, 16 do not divide it; N = 33 rows

    def chunked(h, w):
        weight = w if layout == "vd" else w.T
        return chunked_token_logprobs(h, weight, y, chunk=chunk, weight_layout=layout,
                                      row_chunk=row_chunk)

    value, got = _value_and_grads(chunked, h, w, g)
    want_value, want = plain_values_and_grads
    np.testing.assert_allclose(value, want_value, rtol=1e-5, atol=1e-5)
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_weight_gradient_keeps_the_kernel_layout():
    h, w, y, _ = _inputs()
    dw = jax.jit(jax.grad(lambda k: chunked_token_logprobs(h, k, y, chunk=8,
                                                           weight_layout="dv").sum()))(w.T)
    assert dw.shape == w.T.shape


def test_bfloat16_hidden():
    """bf16 hidden against float32 parameters (the default model): the matmul is promoted to
    float32 exactly as the plain path's, so the values and gradients agree to 1e-5. With bf16
    hidden AND bf16 weight the plain path rounds its logits to bf16 (|error| <= |logit| 2^-8)
    while the chunked one keeps them in float32: both are within that rounding of the float32
    log-probs of the same (bf16-rounded) inputs, and the chunked one within 1e-5 of them."""
    h, w, y, g = _inputs()
    hb = h.astype(jnp.bfloat16)
    # each path as one jitted program per dtype combination (not op by op)
    chunked = jax.jit(lambda h, w: chunked_token_logprobs(h, w, y, chunk=16))
    plain = jax.jit(lambda h, w: _plain(h, w, y))
    got = chunked(hb, w)
    assert got.dtype == jnp.float32
    np.testing.assert_allclose(got, plain(hb, w), rtol=1e-5, atol=1e-5)
    dh = jax.jit(jax.grad(lambda h: (chunked(h, w) * g).sum()))(hb)
    dh_plain = jax.jit(jax.grad(lambda h: (plain(h, w) * g).sum()))(hb)
    assert dh.dtype == jnp.bfloat16
    np.testing.assert_allclose(dh.astype(jnp.float32), dh_plain.astype(jnp.float32),
                               rtol=1e-2, atol=1e-2)  # both rounded to bf16 (2^-8 relative)

    wb = w.astype(jnp.bfloat16)
    exact = plain(hb.astype(jnp.float32), wb.astype(jnp.float32))
    both = chunked(hb, wb)
    np.testing.assert_allclose(both, exact, rtol=1e-5, atol=1e-5)
    logits = np.abs(np.einsum("...d,vd->...v", np.asarray(hb, np.float32),
                              np.asarray(wb, np.float32))).max()
    assert float(np.abs(np.asarray(plain(hb, wb)) - np.asarray(exact)).max()) <= (
        2 * float(logits) * 2.0 ** -8)


def test_extreme_logits_are_finite():
    h, w, y, g = _inputs(scale=1e3)  # logits of order 1e4
    got, grads = _value_and_grads(lambda h, w: chunked_token_logprobs(h, w, y, chunk=16), h, w,
                                  g)
    assert bool(np.isfinite(got).all())
    np.testing.assert_allclose(got, jax.jit(_plain)(h, w, y), rtol=1e-5, atol=1e-2)
    assert all(bool(np.isfinite(x).all()) for x in grads)


def test_cross_entropy_is_the_masked_token_mean():
    h, w, y, _ = _inputs()
    mask = np.arange(11)[None, :] < np.array([11, 4, 0])[:, None]
    got = jax.jit(lambda h, w: chunked_cross_entropy(h, w, y, mask, chunk=16))(h, w)
    want = jax.jit(lambda h, w: -(_plain(h, w, y) * mask).sum() / mask.sum())(h, w)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_jit_and_no_retrace():
    h, w, y, _ = _inputs()

    def chunked_token_loss(h, w, y):
        return chunked_token_logprobs(h, w, y, chunk=16).sum()

    f = jax.jit(jax.value_and_grad(chunked_token_loss, (0, 1)))
    with count_compilations("chunked_token_loss") as n:
        f(h, w, y)
        f(h + 1.0, w * 2.0, (y + 1) % 50)
    assert n() == 1


def test_bad_arguments_raise():
    h, w, y, _ = _inputs()
    with pytest.raises(ValueError, match="weight_layout"):
        chunked_token_logprobs(h, w, y, chunk=8, weight_layout="kv")
    with pytest.raises(ValueError, match="chunk"):
        chunked_token_logprobs(h, w, y, chunk=0)
    with pytest.raises(ValueError, match="row_chunk"):
        chunked_token_logprobs(h, w, y, chunk=8, row_chunk=0)
    with pytest.raises(ValueError, match="does not match weight"):
        chunked_token_logprobs(h, w.T, y, chunk=8)
    with pytest.raises(ValueError, match="targets"):
        chunked_token_logprobs(h, w, y[:, :3], chunk=8)


def _grad_temp_bytes(f, n, d, v):
    args = (jax.ShapeDtypeStruct((n, d), jnp.float32), jax.ShapeDtypeStruct((v, d), jnp.float32),
            jax.ShapeDtypeStruct((n,), jnp.int32))
    compiled = jax.jit(jax.grad(lambda h, w, y: f(h, w, y).sum(), (0, 1))).lower(*args).compile()
    return compiled.memory_analysis().temp_size_in_bytes


def test_compiled_temp_memory_scales_with_chunk_not_vocab():
    """Temp bytes of the compiled gradient (XLA:CPU's estimate) at N = 256, D = 64: the plain
    path holds ~2 N V 4 bytes (logits and their gradient), the chunked one the same two buffers
    of one chunk, ~2 N C 4, whatever V is (measured with XLA:CPU's YNNPACK fusions off, as
    alignax runs: plain 16.8 MB / 67.1 MB at V = 8k / 32k; chunked 1.07 MB at C = 512 and 4.26 MB
    at C = 2048, for both V; with the fusions on, 0.85 and 3.2 MB)."""
    n, d = 256, 64
    plain = {v: _grad_temp_bytes(_plain, n, d, v) for v in (8192, 32768)}
    chunked = {(v, c): _grad_temp_bytes(
        lambda h, w, y, c=c: chunked_token_logprobs(h, w, y, chunk=c), n, d, v)
        for v in (8192, 32768) for c in (512, 2048)}
    assert plain[32768] >= 3.5 * plain[8192]  # the plain path scales with V
    assert plain[8192] >= n * 8192 * 4
    for c in (512, 2048):
        assert chunked[(8192, c)] == chunked[(32768, c)]  # independent of V
        # O(N C): the plain path's bytes per logit, with the chunk in place of the vocabulary
        assert chunked[(32768, c)] < 1.1 * plain[8192] * c / 8192
        assert chunked[(32768, c)] < plain[32768] / 10  # an order of magnitude below plain
    assert chunked[(32768, 2048)] > 3 * chunked[(32768, 512)]  # and it scales with C


@pytest.mark.parametrize("layout,chunk", [("vd", 8), ("dv", 5), ("vd", 64)])
def test_chunked_entropy_values_and_gradients_equal_token_entropy(layout, chunk):
    """chunked_entropy (online logsumexp and E_p[z], custom backward dH/dz = p (E_p[z] - z))
    equals token_entropy of the full logits, in values and in d hidden, d W (V = 37: chunks
    that overlap, and one chunk >= V)."""
    from alignax.ops import token_entropy
    from alignax.ops.chunked import chunked_entropy

    rng = np.random.default_rng(3)
    h = jnp.asarray(rng.standard_normal((2, 5, 16)) * 2, jnp.float32)
    w = jnp.asarray(rng.standard_normal((37, 16)), jnp.float32)
    w = w if layout == "vd" else w.T
    cot = jnp.asarray(rng.standard_normal((2, 5)), jnp.float32)
    full_w = (lambda w: w) if layout == "vd" else (lambda w: w.T)

    def plain(h, w):
        return (token_entropy(h @ full_w(w).T) * cot).sum()

    def chunked(h, w):
        return (chunked_entropy(h, w, chunk=chunk, weight_layout=layout) * cot).sum()

    np.testing.assert_allclose(
        jax.jit(lambda h, w: chunked_entropy(h, w, chunk=chunk, weight_layout=layout))(h, w),
        jax.jit(lambda h, w: token_entropy(h @ full_w(w).T))(h, w), rtol=1e-5, atol=1e-5)
    want = jax.jit(jax.grad(plain, argnums=(0, 1)))(h, w)
    got = jax.jit(jax.grad(chunked, argnums=(0, 1)))(h, w)
    for g, x in zip(got, want):
        np.testing.assert_allclose(g, x, rtol=1e-5, atol=1e-5)
