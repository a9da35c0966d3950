"""Decoder LM and scalar reward model: shapes, logical axes, padding and batch invariance.

Forwards run jitted (eagerly every primitive of the model compiles on its own); inits stay eager
(their primitives' programs are shared by every init of the file)."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from alignax.models.transformer import (
    TransformerConfig,
    last_token_index,
    make_lm,
    make_reward_model,
    positions_from_mask,
)

TINY = TransformerConfig(vocab_size=37, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, d_ff=48)


@pytest.fixture(scope="module")
def lm():
    model = make_lm(TINY)
    return model, model.init(jax.random.key(0))


@pytest.fixture(scope="module")
def rm():
    model = make_reward_model(TINY)
    return model, model.init(jax.random.key(1))


def _gpt2():
    return TransformerConfig.gpt2_style(vocab_size=37, d_model=32, n_layers=2, n_heads=4,
                                        d_ff=48, max_len=16)


@pytest.fixture(scope="module")
def gpt2():
    model = make_lm(_gpt2())
    return model, model.init(jax.random.key(0))


def test_eval_shape_of_a_30m_config_needs_no_memory():
    cfg = TransformerConfig(vocab_size=8192, d_model=512, n_layers=8, n_heads=8, d_ff=1408,
                            max_len=256)
    model = make_lm(cfg)
    params = jax.eval_shape(model.init, jax.random.key(0))
    n = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(params))
    # embeddings 8192*512 + 8 layers * (4*512*512 + 3*512*1408 + 2*512) + final norm 512
    assert n == 8192 * 512 + 8 * (4 * 512 * 512 + 3 * 512 * 1408 + 2 * 512) + 512
    logits = jax.eval_shape(model.apply, params, jax.ShapeDtypeStruct((2, 256), jnp.int32),
                            jax.ShapeDtypeStruct((2, 256), bool))
    assert logits.shape == (2, 256, 8192) and logits.dtype == jnp.float32


def test_every_param_has_logical_axes_of_its_rank(lm, rm):
    for model, params in (lm, rm):
        axes = model.logical_axes(params)
        flat_p = jax.tree.leaves(params)
        flat_a = jax.tree.leaves(axes, is_leaf=lambda x: isinstance(x, tuple))
        assert len(flat_p) == len(flat_a)
        assert all(len(a) == p.ndim for p, a in zip(flat_p, flat_a))


def test_gqa_shapes(lm):
    _, params = lm
    attn = params["decoder"]["layers"][0]["attn"]
    assert attn["q"]["kernel"].shape == (32, 32)
    assert attn["k"]["kernel"].shape == (32, 16)  # 2 kv heads x head dim 8


def test_positions_and_last_index_for_left_and_right_padding():
    mask = np.array([[1, 1, 1, 0, 0], [0, 0, 1, 1, 1]], bool)
    positions, last = jax.jit(lambda m: (positions_from_mask(m), last_token_index(m)))(mask)
    # padding gets position 0 (documented); valid tokens count from 0 on either padding side
    np.testing.assert_array_equal(positions, [[0, 1, 2, 0, 0], [0, 0, 0, 1, 2]])
    np.testing.assert_array_equal(last, [2, 4])


def _rows(rng, b, t):
    return np.asarray(jax.random.randint(rng, (b, t), 2, TINY.vocab_size))


def test_lm_logits_do_not_depend_on_padding_side_or_neighbours(lm):
    model, params = lm
    ids = _rows(jax.random.key(2), 3, 6)
    apply = jax.jit(model.apply)
    alone = [apply(params, ids[i:i + 1], np.ones((1, 6), bool))[0] for i in range(3)]
    # right padding to length 9, batched with neighbours
    right = np.concatenate([ids, np.zeros((3, 3), ids.dtype)], axis=1)
    right_mask = np.concatenate([np.ones((3, 6), bool), np.zeros((3, 3), bool)], axis=1)
    out_right = apply(params, right, right_mask)
    # left padding to length 9
    left = np.concatenate([np.zeros((3, 3), ids.dtype), ids], axis=1)
    left_mask = np.concatenate([np.zeros((3, 3), bool), np.ones((3, 6), bool)], axis=1)
    out_left = apply(params, left, left_mask)
    for i in range(3):
        np.testing.assert_allclose(out_right[i, :6], alone[i], atol=1e-5)
        np.testing.assert_allclose(out_left[i, 3:], alone[i], atol=1e-5)


def test_reward_is_batch_and_padding_invariant(rm):
    model, params = rm
    ids = _rows(jax.random.key(3), 4, 5)
    apply = jax.jit(model.apply)
    alone = np.array([apply(params, ids[i:i + 1], np.ones((1, 5), bool))[0] for i in range(4)])
    batched = apply(params, ids, np.ones((4, 5), bool))
    left = np.concatenate([np.zeros((4, 2), ids.dtype), ids], axis=1)
    left_mask = np.concatenate([np.zeros((4, 2), bool), np.ones((4, 5), bool)], axis=1)
    right = np.concatenate([ids, np.full((4, 2), 7, ids.dtype)], axis=1)  # garbage after end
    right_mask = np.concatenate([np.ones((4, 5), bool), np.zeros((4, 2), bool)], axis=1)
    np.testing.assert_allclose(batched, alone, atol=1e-5)
    np.testing.assert_allclose(apply(params, left, left_mask), alone, atol=1e-5)
    np.testing.assert_allclose(apply(params, right, right_mask), alone, atol=1e-5)
    assert np.std(alone) > 0  # distinct sequences get distinct rewards


def test_causality(lm):
    model, params = lm
    ids = _rows(jax.random.key(4), 1, 8)
    changed = ids.copy()
    changed[0, 5] = (ids[0, 5] + 1) % TINY.vocab_size
    mask = np.ones((1, 8), bool)
    apply = jax.jit(model.apply)
    a, b = apply(params, ids, mask), apply(params, changed, mask)
    np.testing.assert_allclose(a[0, :5], b[0, :5], atol=1e-6)
    assert np.abs(np.asarray(a[0, 5:] - b[0, 5:])).max() > 1e-4


def test_return_hidden_gives_the_final_layer_states_the_head_reads(lm):
    model, params = lm
    ids = _rows(jax.random.key(5), 3, 8)
    mask = np.ones((3, 8), bool)

    @jax.jit
    def forwards(p):
        return (model.apply(p, ids, mask, return_hidden=True), model.apply(p, ids, mask),
                model.apply(p, ids, mask, logits_range=(2, 5), return_hidden=True))

    (logits, hidden), plain, (part, part_hidden) = jax.tree.map(np.asarray, forwards(params))
    assert hidden.shape == (3, 8, TINY.d_model)
    np.testing.assert_allclose(logits, plain, atol=1e-6)
    # tied embeddings: the logits are the hidden states times the token embedding
    np.testing.assert_allclose(hidden @ np.asarray(params["decoder"]["embed"]["embedding"]).T,
                               logits, atol=1e-4)
    np.testing.assert_allclose(part_hidden, hidden[:, 2:5], atol=1e-6)
    np.testing.assert_allclose(part, logits[:, 2:5], atol=1e-6)


def test_bf16_compute_is_close_to_fp32(lm):
    model, params = lm
    bf = make_lm(TransformerConfig(**{**TINY.__dict__, "dtype": "bfloat16"}))
    ids = _rows(jax.random.key(5), 2, 6)
    mask = np.ones((2, 6), bool)
    out32, out16 = jax.jit(lambda p: (model.apply(p, ids, mask), bf.apply(p, ids, mask)))(params)
    assert out16.dtype == jnp.float32
    np.testing.assert_allclose(out16, out32, atol=0.1)


def test_bad_config_and_inputs_fail_clearly():
    with pytest.raises(ValueError, match="divisible"):
        TransformerConfig(d_model=30, n_heads=4)
    with pytest.raises(ValueError, match="unknown transformer config keys"):
        TransformerConfig.from_mapping({"d_modle": 8})
    model = make_lm(TINY)
    params = jax.eval_shape(model.init, jax.random.key(0))
    with pytest.raises(ValueError, match="input_ids"):
        jax.eval_shape(model.apply, params, jax.ShapeDtypeStruct((2, 3), jnp.int32),
                       jax.ShapeDtypeStruct((2, 4), bool))


def test_gpt2_small_has_the_published_parameter_count():
    cfg = TransformerConfig.gpt2_style(vocab_size=50257, d_model=768, n_layers=12, n_heads=12,
                                       d_ff=3072, max_len=1024)
    model = make_lm(cfg)
    params = jax.eval_shape(model.init, jax.random.key(0))
    assert sum(int(np.prod(x.shape)) for x in jax.tree.leaves(params)) == 124_439_808
    axes = model.logical_axes(params)  # raises if a parameter has no logical names
    layer = axes["decoder"]["layers"][0]
    assert layer["mlp"]["fc"]["kernel"] == ("embed", "mlp")
    assert layer["attn"]["q"]["bias"] == ("heads",)
    assert axes["decoder"]["pos_embed"]["embedding"] == ("pos", "embed")


def test_gpt2_style_logits_do_not_depend_on_padding(gpt2):
    model, params = gpt2
    ids = _rows(jax.random.key(6), 2, 5)
    apply = jax.jit(model.apply)
    alone = apply(params, ids, np.ones((2, 5), bool))
    left = np.concatenate([np.zeros((2, 3), ids.dtype), ids], axis=1)
    left_mask = np.concatenate([np.zeros((2, 3), bool), np.ones((2, 5), bool)], axis=1)
    np.testing.assert_allclose(apply(params, left, left_mask)[:, 3:], alone, atol=1e-5)
    with pytest.raises(ValueError, match="norm must be one of"):
        TransformerConfig(norm="batch")


@pytest.mark.parametrize("style", ["llama", "gpt2"])
def test_packed_sequences_equal_separate_ones(style, gpt2):
    if style == "llama":
        model = make_lm(TransformerConfig(vocab_size=37, d_model=32, n_layers=2, n_heads=4,
                                          d_ff=48))
        params = model.init(jax.random.key(0))
    else:  # the same model and params as the gpt2 fixture's
        model, params = gpt2
        assert model.config == _gpt2()
    a = _rows(jax.random.key(7), 1, 4)
    b = _rows(jax.random.key(8), 1, 3)
    packed = np.concatenate([a, b, np.zeros((1, 1), a.dtype)], axis=1)
    segments = np.array([[1, 1, 1, 1, 2, 2, 2, 0]])

    @jax.jit
    def forwards(p):
        return (positions_from_mask(segments), model.apply(p, packed, segments),
                model.apply(p, a, np.ones((1, 4), bool)), model.apply(p, b, np.ones((1, 3), bool)))

    positions, out, out_a, out_b = forwards(params)
    np.testing.assert_array_equal(positions, [[0, 1, 2, 3, 0, 1, 2, 0]])
    np.testing.assert_allclose(out[:, :4], out_a, atol=1e-5)
    np.testing.assert_allclose(out[:, 4:7], out_b, atol=1e-5)


def test_llama_3_2_1b_shapes():
    cfg = TransformerConfig(vocab_size=128256, d_model=2048, n_layers=16, n_heads=32, n_kv_heads=8,
                            d_ff=8192, max_len=131072, rope_theta=500000.0, tie_embeddings=True)
    params = jax.eval_shape(make_lm(cfg).init, jax.random.key(0))
    assert sum(int(np.prod(x.shape)) for x in jax.tree.leaves(params)) == 1_235_814_400
    assert params["decoder"]["layers"][0]["attn"]["k"]["kernel"].shape == (2048, 512)


def _naive_attention(q, k, v, bias):
    s = jnp.einsum("bkgte,bkse->bkgts", q, k) / q.shape[-1] ** 0.5 + bias
    return jnp.einsum("bkgts,bkse->bkgte", jax.nn.softmax(s, axis=-1), v)


@pytest.mark.parametrize("t,groups,causal", [(32, 1, False), (200, 2, True), (256, 1, True)])
def test_attention_matches_softmax_reference_values_and_grads(t, groups, causal):
    from alignax.models.transformer import attention, attention_bias, causal_attention_mask

    b, kv, e = 2, 2, 16
    keys = jax.random.split(jax.random.key(0), 4)
    q = jax.random.normal(keys[0], (b, kv, groups, t, e))
    k = jax.random.normal(keys[1], (b, kv, t, e))
    v = jax.random.normal(keys[2], (b, kv, t, e))
    mask = jnp.ones((b, t), bool).at[0, :5].set(False)  # left padding in row 0
    bias = attention_bias(causal_attention_mask(mask))
    # cotangent only on real query rows: padded rows have no meaningful output
    w = jax.random.normal(keys[3], q.shape) * mask[:, None, None, :, None]

    def loss(fn, q, k, v):
        return jnp.sum(fn(q, k, v) * w)

    # jitted: eagerly every primitive of the blockwise kernel compiles on its own
    got = jax.jit(jax.value_and_grad(lambda *a: loss(
        lambda q, k, v: attention(q, k, v, bias, causal=causal), *a), argnums=(0, 1, 2)))(
            q, k, v)
    want = jax.jit(jax.value_and_grad(lambda *a: loss(
        lambda q, k, v: _naive_attention(q, k, v, bias), *a), argnums=(0, 1, 2)))(q, k, v)
    np.testing.assert_allclose(got[0], want[0], rtol=1e-5, atol=1e-4)
    for g, r in zip(got[1], want[1]):
        np.testing.assert_allclose(g, r, rtol=1e-4, atol=1e-4)
    out, naive = jax.jit(lambda q, k, v: (attention(q, k, v, bias, causal=causal),
                                          _naive_attention(q, k, v, bias)))(q, k, v)
    real = np.asarray(mask)[:, None, None, :, None]
    np.testing.assert_allclose(np.where(real, out, 0), np.where(real, naive, 0), rtol=1e-5,
                               atol=1e-5)


# --------------------------------------------------------------------------------------------
# checkpoint-family fields: attn_head_dim, qk_norm, sliding_window, rope_scaling
# --------------------------------------------------------------------------------------------

FAMILY = TransformerConfig(vocab_size=37, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2,
                           d_ff=48, attn_head_dim=16, qk_norm=True, sliding_window=4,
                           rope_scaling={"rope_type": "yarn", "factor": 4.0,
                                         "original_max_position_embeddings": 8})


def test_defaults_of_the_family_fields_change_nothing(lm):
    import dataclasses

    plain = TransformerConfig(**{f.name: getattr(TINY, f.name)
                                 for f in dataclasses.fields(TINY)})
    assert plain == TINY and TINY.rope_scaling == () and TINY.head_dim == 8
    model, params = lm  # make_lm(TINY) initialised from key 0
    assert model.config == TINY
    assert "q_norm" not in params["decoder"]["layers"][0]["attn"]
    # the rotary tables of rope_scaling=() are the historical formula, bit for bit
    from alignax.models.rope import rope_tables

    pos = jnp.arange(12)[None]
    freqs = 1.0 / (10000.0 ** (jnp.arange(0, 8, 2, dtype=jnp.float32) / 8))
    cos, sin = rope_tables(pos, 8, 10000.0)
    np.testing.assert_array_equal(cos[0, :, 0], jnp.cos(pos[0, :, None].astype(jnp.float32)
                                                         * freqs))


def test_family_fields_shapes_and_bad_values():
    params = make_lm(FAMILY).init(jax.random.key(0))
    attn = params["decoder"]["layers"][0]["attn"]
    assert attn["q"]["kernel"].shape == (32, 64) and attn["o"]["kernel"].shape == (64, 32)
    assert attn["q_norm"]["scale"].shape == (16,) and attn["k"]["kernel"].shape == (32, 32)
    assert dict(FAMILY.rope_scaling)["rope_type"] == "yarn"
    hash(FAMILY)  # static under jit
    for kwargs, match in ((dict(sliding_window=-1), "sliding_window"),
                          (dict(attn_head_dim=7), "attn_head_dim"),
                          (dict(qk_norm=1), "qk_norm"),
                          (dict(rope_scaling={"rope_type": "longrope"}), "longrope"),
                          (dict(rope_scaling={"rope_type": "linear", "factor": 0.5}), ">= 1")):
        with pytest.raises(ValueError, match=match):
            TransformerConfig(**kwargs)
    TransformerConfig(d_model=30, n_heads=4, attn_head_dim=8)  # D / H need not divide


def test_family_model_scanned_cached_padded_and_differentiable():
    """Sliding window + q/k norm + wide heads + yarn: padding invariance, scanned == unscanned,
    KV-cache decode == full forward, finite gradients equal in both layouts, no retrace."""
    import dataclasses

    from alignax.models.transformer import causal_attention_mask, init_cache, stack_layers

    # every forward jitted: eagerly, each of the model's primitives compiles on its own
    model = make_lm(FAMILY)
    params = model.init(jax.random.key(3))
    apply = jax.jit(model.apply)
    rng = np.random.default_rng(0)
    ids = jnp.asarray(rng.integers(1, 37, size=(2, 12)))
    ones = jnp.ones(ids.shape, bool)
    full = apply(params, ids, ones)
    # left padding: the valid tokens' logits are unchanged
    padded = jnp.concatenate([jnp.zeros((2, 3), ids.dtype), ids], axis=1)
    pmask = jnp.concatenate([jnp.zeros((2, 3), bool), ones], axis=1)
    np.testing.assert_allclose(apply(params, padded, pmask)[:, 3:], full, rtol=1e-5,
                               atol=1e-5)
    # the window acts: without it the late positions differ
    wide = jax.jit(make_lm(dataclasses.replace(FAMILY, sliding_window=0)).apply)(params, ids,
                                                                                 ones)
    np.testing.assert_allclose(wide[:, :4], full[:, :4], rtol=1e-5, atol=1e-5)
    assert np.abs(np.asarray(wide[:, 4:] - full[:, 4:])).max() > 1e-4
    # cached decode: prefill 7 then 5 single steps
    caches = init_cache(FAMILY, 2, 12)
    slots = jnp.arange(12)
    pos = positions_from_mask(ones)
    attn0 = causal_attention_mask(ones)[:, :7, :]
    cached = jax.jit(model.apply_cached)
    out, caches = cached(params, ids[:, :7], pos[:, :7], attn0, caches, jnp.int32(0))
    steps = [out]
    for i in range(7, 12):
        step_mask = jnp.broadcast_to((slots <= i)[None, None], (2, 1, 12))
        out, caches = cached(params, ids[:, i:i + 1], pos[:, i:i + 1], step_mask, caches,
                             jnp.int32(i))
        steps.append(out)
    np.testing.assert_allclose(jnp.concatenate(steps, axis=1), full, rtol=1e-5, atol=1e-5)
    # scanned layers: same logits and gradients
    scanned = make_lm(dataclasses.replace(FAMILY, scan_layers=True))
    sparams = stack_layers(params)
    np.testing.assert_allclose(jax.jit(scanned.apply)(sparams, ids, ones), full, rtol=1e-5,
                               atol=1e-5)

    traces = []

    def loss(p, m):
        traces.append(1)
        return jnp.mean(jax.nn.log_softmax(m.apply(p, ids, ones))[..., 0])

    g = jax.jit(jax.grad(lambda p: loss(p, model)))
    g1 = g(params)
    g(params)
    assert len(traces) == 1
    gs = jax.jit(jax.grad(lambda p: loss(p, scanned)))(sparams)
    for a, b in zip(jax.tree.leaves(stack_layers(g1)), jax.tree.leaves(gs)):
        assert np.all(np.isfinite(np.asarray(a)))
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert np.abs(np.asarray(g1["decoder"]["layers"][0]["attn"]["q_norm"]["scale"])).max() > 0


def test_reward_positions_of_packed_rows_equal_each_segment_run_alone(rm):
    model, params = rm
    a, b, c = (_rows(jax.random.key(k), 1, n) for k, n in ((11, 4), (12, 3), (13, 5)))
    # row 0: segments a, b then padding; row 1: segment c then padding
    ids = jnp.concatenate([jnp.concatenate([a, b, jnp.zeros((1, 2), a.dtype)], axis=1),
                           jnp.concatenate([c, jnp.zeros((1, 4), a.dtype)], axis=1)])
    seg = jnp.array([[1, 1, 1, 1, 2, 2, 2, 0, 0], [1, 1, 1, 1, 1, 0, 0, 0, 0]])
    where = jnp.array([[3, 6], [4, -1]], jnp.int32)
    # a, b, c alone: one per row, right-padded (the default reward is padding-invariant)
    alone_ids = jnp.concatenate([jnp.pad(x, ((0, 0), (0, 5 - x.shape[1]))) for x in (a, b, c)])
    alone_mask = jnp.arange(5)[None, :] < jnp.array([[4], [3], [5]])
    apply = jax.jit(model.apply)
    packed = jax.jit(lambda p, i, m, w: model.apply(p, i, m, reward_positions=w))
    both = jax.jit(lambda p, i, m, w: (model.apply(p, i, m, reward_positions=w),
                                       model.apply(p, i, m)))
    alone = np.asarray(apply(params, alone_ids, alone_mask))
    out, default = both(params, ids, seg, where)
    assert out.shape == (2, 2) and out.dtype == jnp.float32
    np.testing.assert_allclose(out, [[alone[0], alone[1]], [alone[2], 0.0]], atol=1e-5)
    # the default is unchanged: one reward per row, at its last valid token (segment b, c)
    np.testing.assert_allclose(default, [alone[1], alone[2]], atol=1e-5)
    # gradients: the sum of the packed rewards is the sum of the three rewards run alone
    grads = jax.jit(jax.grad(lambda p: packed(p, ids, seg, where).sum()))(params)
    want = jax.jit(jax.grad(lambda p: apply(p, alone_ids, alone_mask).sum()))(params)
    jax.tree.map(lambda g, w: np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5), grads, want)
    both(params, ids, seg, where.at[0, 0].set(2))  # new positions: no retrace
    assert both._cache_size() == 1
    with pytest.raises(ValueError, match="reward_positions must be int"):
        model.apply(params, ids, seg, reward_positions=where[0])


def test_score_bias_and_last_non_pad_pooling():
    cfg = dataclasses.replace(TINY, score_bias=False, pool="last_non_pad", pad_token_id=5)
    model = make_reward_model(cfg)
    params = model.init(jax.random.key(2))
    assert set(params["score"]) == {"kernel"}
    assert set(jax.eval_shape(make_reward_model(TINY).init, jax.random.key(0))["score"]) == {
        "kernel", "bias"}  # the default keeps the from-scratch head's bias
    ids = jnp.array([[1, 2, 5, 5], [5, 3, 4, 5], [5, 5, 5, 5]])
    mask = jnp.ones(ids.shape, bool)  # transformers' rule ignores the mask
    from alignax.models.transformer import last_non_pad_index

    np.testing.assert_array_equal(last_non_pad_index(ids, 5), [1, 2, 0])
    plain = make_reward_model(dataclasses.replace(cfg, pool="last"))
    # "last_non_pad" equals "last" with the mask cut after each row's last non-pad token
    # (causal: the slots after it are not seen there)
    got = jax.jit(model.apply)(params, ids, mask)
    cut = jnp.arange(4)[None, :] <= jnp.array([[1], [2], [0]])
    np.testing.assert_allclose(got, jax.jit(plain.apply)(params, ids, cut), rtol=1e-5,
                               atol=1e-6)
