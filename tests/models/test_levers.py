"""The decoder's memory levers equal the plain path: scanned layers, remat, parameter dtype,
token log-probs from (chunked) logits. fp32 on CPU, 1e-5."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from alignax.models.transformer import (
    TransformerConfig,
    init_cache,
    layers_stacked,
    make_lm,
    make_reward_model,
    stack_layers,
    unstack_layers,
)
from alignax.sampling import sample

TINY = TransformerConfig(vocab_size=37, d_model=32, n_layers=3, n_heads=4, n_kv_heads=2, d_ff=48)
GPT2 = TransformerConfig.gpt2_style(vocab_size=37, d_model=32, n_layers=2, n_heads=4, d_ff=48,
                                    max_len=16)


def _batch(t=8, b=3):
    ids = jax.random.randint(jax.random.key(1), (b, t), 2, TINY.vocab_size)
    mask = jnp.ones((b, t), bool).at[0, :3].set(False).at[1, -2:].set(False)  # both paddings
    return ids, mask


def _close(a, b, tol=1e-5):
    jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=tol, atol=tol), a, b)


def _loss(model):
    def loss(params, ids, mask):
        out = model.apply(params, ids, mask)
        w = jnp.cos(jnp.arange(out.size, dtype=jnp.float32)).reshape(out.shape)
        return jnp.sum(out * w)
    return jax.jit(jax.value_and_grad(loss))


@pytest.fixture(scope="module")
def plain():
    model = make_lm(TINY)
    return model, model.init(jax.random.key(0))


# ---------------------------------------------------------------- scan_layers


def test_scanned_params_are_the_stacked_unscanned_ones(plain):
    model, params = plain
    scanned = make_lm(dataclasses.replace(TINY, scan_layers=True))
    sparams = scanned.init(jax.random.key(0))
    assert layers_stacked(sparams) and not layers_stacked(params)
    assert sparams["decoder"]["layers"]["attn"]["q"]["kernel"].shape == (3, 32, 32)
    assert sparams["decoder"]["layers"]["mlp_norm"]["scale"].shape == (3, 32)
    _close(sparams, stack_layers(params), 0)  # exact
    _close(unstack_layers(sparams), params, 0)
    axes = scanned.logical_axes(sparams)["decoder"]["layers"]
    assert axes["attn"]["q"]["kernel"] == ("layers", "embed", "heads")
    assert axes["mlp_norm"]["scale"] == ("layers", "norm")
    assert scanned.logical_axes(sparams)["decoder"]["embed"]["embedding"] == ("vocab", "embed")
    with pytest.raises(ValueError, match="stacked already"):
        stack_layers(sparams)
    with pytest.raises(ValueError, match="list of layers already"):
        unstack_layers(params)
    with pytest.raises(ValueError, match="scan_layers must be a bool"):
        TransformerConfig(scan_layers=1)


@pytest.mark.parametrize("cfg", [TINY, GPT2], ids=["llama", "gpt2"])
def test_scanned_logits_and_grads_equal_unscanned(cfg):
    model = make_lm(cfg)
    params = model.init(jax.random.key(0))
    scanned = make_lm(dataclasses.replace(cfg, scan_layers=True))
    sparams = stack_layers(params)
    ids, mask = _batch()
    want_v, want_g = _loss(model)(params, ids, mask)
    step = _loss(scanned)
    got_v, got_g = step(sparams, ids, mask)
    _close(got_v, want_v)
    _close(got_g, stack_layers(want_g))
    step(sparams, ids, mask)
    assert step._cache_size() == 1  # no retrace


def test_scanned_reward_model_equals_unscanned():
    model = make_reward_model(TINY)
    params = model.init(jax.random.key(2))
    scanned = make_reward_model(dataclasses.replace(TINY, scan_layers=True))
    ids, mask = _batch()
    want = _loss(model)(params, ids, mask)
    got = _loss(scanned)(stack_layers(params), ids, mask)
    _close(got[0], want[0])
    _close(got[1], stack_layers(want[1]))


def test_scanned_caches_and_sampling_equal_unscanned(plain):
    model, params = plain
    cfg = dataclasses.replace(TINY, scan_layers=True)
    scanned = make_lm(cfg)
    caches = init_cache(cfg, 2, 5)
    assert caches["k"].shape == (3, 2, 2, 5, 8)  # [L, B, K, S, E]
    prompts = jax.random.randint(jax.random.key(3), (2, 4), 2, TINY.vocab_size)
    pmask = jnp.ones((2, 4), bool).at[0, 0].set(False)
    kw = dict(max_new_tokens=5, num_samples=2, temperature=1.0)
    a = sample(model, params, prompts, pmask, jax.random.key(4), **kw)
    b = sample(scanned, stack_layers(params), prompts, pmask, jax.random.key(4), **kw)
    np.testing.assert_array_equal(a.tokens, b.tokens)
    np.testing.assert_array_equal(a.mask, b.mask)
    _close(a.logps, b.logps)


def _lowered_size(cfg, n_layers):
    model = make_lm(dataclasses.replace(cfg, n_layers=n_layers))
    params = jax.eval_shape(model.init, jax.random.key(0))
    ids = jax.ShapeDtypeStruct((2, 8), jnp.int32)
    mask = jax.ShapeDtypeStruct((2, 8), bool)
    return len(jax.jit(model.apply).lower(params, ids, mask).as_text().splitlines())


def test_scanned_program_does_not_grow_with_depth():
    scanned = dataclasses.replace(TINY, scan_layers=True)
    s1, s5 = _lowered_size(scanned, 1), _lowered_size(scanned, 5)
    u1, u5 = _lowered_size(TINY, 1), _lowered_size(TINY, 5)
    assert s5 == s1, (s1, s5)  # only the stacked shapes change
    assert u5 > 2 * u1, (u1, u5)  # one block's program per layer
