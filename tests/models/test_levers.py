"""The decoder's memory levers equal the plain path: scanned layers, remat, parameter dtype,
token log-probs from (chunked) logits. fp32 on CPU, 1e-5."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.ad_checkpoint import print_saved_residuals

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

TINY = TransformerConfig(vocab_size=37, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, d_ff=48)
L = TINY.n_layers


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


def _params(model, seed=0):
    """Random params of `model` drawn with numpy: no XLA program to compile (an init is the
    slowest compile of these tiny models)."""
    rng = np.random.default_rng(seed)

    def draw(path, leaf):
        scale = leaf.shape[-2] ** -0.5 if leaf.ndim >= 2 else 0.1
        base = 1.0 if "scale" in jax.tree_util.keystr(path) else 0.0
        return jnp.asarray(base + scale * rng.normal(size=leaf.shape), leaf.dtype)

    return jax.tree_util.tree_map_with_path(draw, jax.eval_shape(model.init, jax.random.key(0)))


@pytest.fixture(scope="module")
def plain():
    model = make_lm(TINY)
    return model, _params(model)


@pytest.fixture(scope="module")
def reference(plain):
    """(loss, grads) of the plain model on `_batch()`."""
    model, params = plain
    return _loss(model)(params, *_batch())


# ---------------------------------------------------------------- scan_layers


def test_scanned_params_are_the_stacked_unscanned_ones():
    model = make_lm(TINY)
    params = model.init(jax.random.key(0))
    scanned = make_lm(dataclasses.replace(TINY, scan_layers=True))
    sparams = scanned.init(jax.random.key(0))
    assert layers_stacked(sparams) and not layers_stacked(params)
    assert sparams["decoder"]["layers"]["attn"]["q"]["kernel"].shape == (L, 32, 32)
    assert sparams["decoder"]["layers"]["mlp_norm"]["scale"].shape == (L, 32)
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


@pytest.mark.parametrize("scan,remat", [(True, "none"), (False, "full"), (True, "offload")])
def test_scan_and_remat_equal_the_plain_model(plain, reference, scan, remat):
    _, params = plain
    model = make_lm(dataclasses.replace(TINY, scan_layers=scan, remat=remat))
    ids, mask = _batch()
    step = _loss(model)
    got_v, got_g = step(stack_layers(params) if scan else params, ids, mask)
    _close(got_v, reference[0])
    _close(got_g, stack_layers(reference[1]) if scan else reference[1])
    step(stack_layers(params) if scan else params, ids, mask)
    assert step._cache_size() == 1  # no retrace


def test_scanned_full_remat_equals_plain_and_shrinks_compiled_temp_memory(plain, reference):
    _, params = plain
    ids, mask = _batch()
    temps = {}
    for remat in ("none", "full"):  # "none" was compiled above: a persistent-cache hit
        model = make_lm(dataclasses.replace(TINY, scan_layers=True, remat=remat))
        compiled = _loss(model).lower(stack_layers(params), ids, mask).compile()
        temps[remat] = compiled.memory_analysis().temp_size_in_bytes
    got_v, got_g = compiled(stack_layers(params), ids, mask)
    _close(got_v, reference[0])
    _close(got_g, stack_layers(reference[1]))
    # only each block's input [B, T, D] is kept; the rest is recomputed in the backward
    assert temps["full"] < 0.6 * temps["none"], temps


def test_stacked_layer_axis_is_replicated_by_the_default_rules():
    from types import SimpleNamespace

    from jax.sharding import PartitionSpec

    from alignax.train.sharding import logical_to_spec

    mesh = SimpleNamespace(shape={"data": 1, "fsdp": 2, "tensor": 2})  # only .shape is read
    assert logical_to_spec(("layers", "embed", "mlp"), (3, 32, 48), mesh) == PartitionSpec(
        None, "fsdp", "tensor")


def test_scanned_reward_model_equals_plain():
    model = make_reward_model(TINY)
    params = _params(model, 2)
    scanned = make_reward_model(dataclasses.replace(TINY, scan_layers=True, remat="dots"))
    ids, mask = _batch()
    _close(jax.jit(scanned.apply)(stack_layers(params), ids, mask),
           jax.jit(model.apply)(params, ids, mask))


def test_scanned_caches_and_sampling_equal_unscanned(plain):
    model, params = plain
    cfg = dataclasses.replace(TINY, scan_layers=True)
    scanned = make_lm(cfg)
    caches = init_cache(cfg, 2, 5)
    assert caches["k"].shape == (L, 2, 2, 5, 8)  # [L, B, K, S, E]
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


# ---------------------------------------------------------------- remat


def _residuals(cfg, params, capsys):
    """Lines of `print_saved_residuals` of the loss: what the backward pass keeps."""
    model = make_lm(cfg)
    params = stack_layers(params) if cfg.scan_layers else params
    ids, mask = _batch()
    capsys.readouterr()
    print_saved_residuals(lambda p: model.apply(p, ids, mask).sum(), params)
    return capsys.readouterr().out.splitlines()


@pytest.mark.parametrize("scan", [False, True])
def test_remat_policies_change_what_the_backward_keeps(capsys, plain, scan):
    lines = {r: _residuals(dataclasses.replace(TINY, scan_layers=scan, remat=r), plain[1], capsys)
             for r in ("none", "full", "dots", "offload")}
    n = {r: len(v) for r, v in lines.items()}
    assert n["full"] < n["dots"] < n["none"], n  # full keeps block inputs, dots also matmuls
    # offload keeps the same matmul outputs, but in host memory
    assert n["offload"] == n["dots"]
    assert any("<host>" in line for line in lines["offload"])
    assert not any("<host>" in line for line in lines["dots"])


def test_offload_is_refused_without_host_memory(monkeypatch, plain):
    from alignax.models import transformer

    _, params = plain
    model = make_lm(dataclasses.replace(TINY, remat="offload"))
    monkeypatch.setattr(transformer, "_has_host_memory", lambda: False)
    ids, mask = _batch()
    with pytest.raises(ValueError, match="remat='offload' needs pinned host memory"):
        jax.eval_shape(model.apply, params, ids, mask)
    with pytest.raises(ValueError, match="remat must be one of"):
        TransformerConfig(remat="some")


# ---------------------------------------------------------------- param_dtype


def test_bf16_params_are_created_in_bf16_and_compute_as_their_fp32_values():
    # untied, so each parameter is used once and its bf16 gradient is one rounding of the fp32
    # one (a tied embedding sums two separately rounded bf16 cotangents)
    base = dataclasses.replace(TINY, tie_embeddings=False)
    model = make_lm(dataclasses.replace(base, param_dtype="bfloat16"))
    abstract = jax.eval_shape(model.init, jax.random.key(0))
    assert {x.dtype for x in jax.tree.leaves(abstract)} == {jnp.dtype(jnp.bfloat16)}
    # bf16 storage, fp32 compute: exactly the fp32 model at the bf16-rounded weights
    bf16 = jax.tree.map(lambda x: x.astype(jnp.bfloat16), _params(make_lm(base)))
    ids, mask = _batch()
    want_v, want_g = _loss(make_lm(base))(jax.tree.map(lambda x: x.astype(jnp.float32), bf16),
                                          ids, mask)
    got_v, got_g = _loss(model)(bf16, ids, mask)
    _close(got_v, want_v)
    assert {x.dtype for x in jax.tree.leaves(got_g)} == {jnp.dtype(jnp.bfloat16)}
    # the fp32 gradient rounded once to bf16: equal up to one bf16 rounding step (2^-8)
    jax.tree.map(lambda g, w: np.testing.assert_allclose(
        np.float32(g), np.float32(w), rtol=2 ** -8, atol=1e-6), got_g, want_g)
    with pytest.raises(ValueError, match="param_dtype must be"):
        TransformerConfig(param_dtype="float16")


def test_pure_bf16_is_close_to_fp32(plain):
    model, params = plain
    pure = make_lm(dataclasses.replace(TINY, param_dtype="bfloat16", dtype="bfloat16"))
    bf16 = jax.tree.map(lambda x: x.astype(jnp.bfloat16), params)
    ids, mask = _batch()
    out = jax.jit(pure.apply)(bf16, ids, mask)
    assert out.dtype == jnp.float32
    np.testing.assert_allclose(out, jax.jit(model.apply)(params, ids, mask), atol=0.1)


# ---------------------------------------------------------------- targets / logits_chunk


def _targets_case(tie, seed=3):
    base = dataclasses.replace(TINY, tie_embeddings=tie)
    model = make_lm(base)
    ids, mask = _batch()
    return base, model, _params(model, seed), ids, mask, jnp.roll(ids, -1, axis=1)


def test_chunked_token_logprobs_and_grads_equal_those_of_the_full_logits():
    from alignax.ops.logprobs import token_logprobs

    base, model, params, ids, mask, targets = _targets_case(tie=True)
    lm = make_lm(dataclasses.replace(base, logits_chunk=16))  # 16 does not divide V = 37
    w = jnp.cos(jnp.arange(targets.size, dtype=jnp.float32)).reshape(targets.shape)

    def loss(logprobs):
        def f(params):
            out = logprobs(params)
            return jnp.sum(out * w), out
        return jax.jit(jax.value_and_grad(f, has_aux=True))

    (_, want), want_g = loss(lambda p: token_logprobs(model.apply(p, ids, mask), targets))(params)
    step = loss(lambda p: lm.apply(p, ids, mask, targets=targets))
    (_, got), got_g = step(params)
    assert got.shape == targets.shape and got.dtype == jnp.float32
    _close(got, want)
    _close(got_g, want_g)
    step(params)
    assert step._cache_size() == 1  # no retrace
    # composes with logits_range: targets [B, stop - start]
    part = jax.jit(lambda p: lm.apply(p, ids, mask, logits_range=(2, 6),
                                      targets=targets[:, 2:6]))(params)
    _close(part, want[:, 2:6])
    with pytest.raises(ValueError, match="do not match the positions"):
        jax.eval_shape(lambda p: lm.apply(p, ids, mask, logits_range=(2, 6), targets=targets),
                       params)
    with pytest.raises(ValueError, match="logits_chunk must be"):
        TransformerConfig(logits_chunk=-1)


def test_untied_head_token_logprobs_plain_and_chunked():
    from alignax.ops.logprobs import token_logprobs

    base, model, params, ids, mask, targets = _targets_case(tie=False)
    want = jax.jit(lambda p: token_logprobs(model.apply(p, ids, mask), targets))(params)
    for chunk in (0, 16):  # the full logits, and the lm_head kernel [D, V] in chunks
        lm = make_lm(dataclasses.replace(base, logits_chunk=chunk))
        _close(jax.jit(lambda p: lm.apply(p, ids, mask, targets=targets))(params), want)
