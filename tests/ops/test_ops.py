"""Masked reductions, log-probs, the next-token shift and entropy."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from alignax.ops import (masked_mean, masked_sum, sequence_logprobs, shift_for_next_token,
                         token_entropy, token_logprobs)
from tests.test_utils import count_compilations


def test_count_compilations_helper_counts():
    def affine(x):
        return x * 3 + 1

    f = jax.jit(affine)
    a, b, c = jnp.ones(3), jnp.zeros(3), jnp.ones(4)
    with count_compilations("affine") as n:
        f(a)
        f(b)
        f(c)
    assert n() == 2


def test_masked_reductions_equal_slicing():
    x = np.random.default_rng(0).normal(size=(3, 6)).astype(np.float32)
    lengths = [6, 2, 4]
    mask = np.arange(6)[None, :] < np.array(lengths)[:, None]
    np.testing.assert_allclose(masked_sum(x, mask), [x[i, :n].sum() for i, n in enumerate(lengths)],
                               rtol=1e-6)
    np.testing.assert_allclose(masked_mean(x, mask),
                               [x[i, :n].mean() for i, n in enumerate(lengths)], rtol=1e-6)


def test_masked_mean_of_empty_mask_is_zero_with_finite_gradient():
    x = jnp.array([[1.0, 2.0]])
    mask = jnp.zeros((1, 2), bool)
    assert float(masked_mean(x, mask)[0]) == 0.0
    g = jax.grad(lambda x: masked_mean(x, mask).sum())(x)
    np.testing.assert_array_equal(g, 0.0)


def test_token_logprobs_golden_and_reference():
    logits = jnp.array([[[0.0, 0.0], [1.0, 0.0]]])
    tokens = jnp.array([[0, 1]])
    # log(1/2) and log(1 / (1 + e))
    np.testing.assert_allclose(jax.jit(token_logprobs)(logits, tokens),
                               [[-0.6931472, -1.3132616]], rtol=1e-6)
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(2, 5, 7)).astype(np.float32) * 10
    tokens = rng.integers(0, 7, size=(2, 5))
    ref = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    ref = np.take_along_axis(ref, tokens[..., None], -1)[..., 0]
    np.testing.assert_allclose(token_logprobs(logits, tokens), ref, rtol=1e-5, atol=1e-5)
    mask = np.array([[1, 1, 0, 0, 0], [1, 1, 1, 1, 1]])
    np.testing.assert_allclose(sequence_logprobs(logits, tokens, mask),
                               [ref[0, :2].sum(), ref[1].sum()], rtol=1e-5)


def test_token_logprobs_bf16_logits_are_upcast_and_extreme_logits_finite():
    logits = jnp.array([[[1e4, -1e4, 0.0]]], jnp.bfloat16)
    out = token_logprobs(logits, jnp.array([[1]]))
    assert out.dtype == jnp.float32 and np.isfinite(np.asarray(out)).all()
    g = jax.grad(lambda x: token_logprobs(x, jnp.array([[1]])).sum())(logits.astype(jnp.float32))
    assert np.isfinite(np.asarray(g)).all()


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="do not match"):
        token_logprobs(jnp.zeros((2, 3, 4)), jnp.zeros((2, 4), jnp.int32))


def test_shift_for_next_token():
    ids = jnp.array([[5, 6, 7, 8]])
    mask = jnp.array([[0, 1, 1, 1]])
    targets, tmask = shift_for_next_token(ids, mask)
    np.testing.assert_array_equal(targets, [[6, 7, 8, 0]])
    np.testing.assert_array_equal(tmask, [[1, 1, 1, 0]])
    # with the attention mask: the first token of a left-padded row is predicted from padding
    _, tmask = shift_for_next_token(ids, mask, mask)
    np.testing.assert_array_equal(tmask, [[0, 1, 1, 0]])
    # packed rows: no target across a sequence boundary, none from padding
    segments = jnp.array([[1, 1, 2, 2, 2, 0]])
    _, tmask = shift_for_next_token(jnp.arange(6)[None], segments > 0, segments)
    np.testing.assert_array_equal(tmask, [[1, 0, 1, 1, 0, 0]])


def test_entropy():
    np.testing.assert_allclose(token_entropy(jnp.zeros((1, 1, 4))), [[np.log(4)]], rtol=1e-6)
    assert float(token_entropy(jnp.array([[[1e4, 0.0]]]))[0, 0]) == pytest.approx(0.0, abs=1e-6)
