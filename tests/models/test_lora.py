"""LoRA adapters (alignax.models.lora): the factored forward equals the merged-weights model
(values and adapter gradients), never forms a full-size W + AB, trains through make_train_step
with the base as the frozen reference, merges/unmerges and exports to transformers."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from alignax.algorithms.direct import make_direct_loss
from alignax.models import lora
from alignax.models.transformer import TransformerConfig, make_lm, make_reward_model
from alignax.ops import sequence_logprobs
from alignax.train.state import TrainState
from alignax.train.step import make_train_step

# d_model, d_ff, vocab and B*T all different, so a kernel-shaped [I, O] array is recognisable
CFG = TransformerConfig(vocab_size=48, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, d_ff=40,
                        max_len=16)
LORA = lora.LoraConfig(rank=4, alpha=8.0)
IDS = jax.random.randint(jax.random.key(2), (3, 7), 1, 48)
MASK = jnp.asarray(np.arange(7)[None, :] < np.array([[7], [5], [6]]))
_merge = jax.jit(lora.merge, static_argnums=2)
_unmerge = jax.jit(lora.unmerge, static_argnums=2)


def _close(a, b, tol=1e-5):
    jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=tol, atol=tol), a, b)


def _random(tree, seed=3, std=0.1):
    """`tree` (zeros where abstract) plus N(0, std^2) noise, drawn with numpy (no per-shape XLA
    compiles); on adapters (B = 0 at init would hide every bug of the update) it moves the
    logits by about 0.4."""
    rng = np.random.default_rng(seed)

    def noisy(x):
        x = np.zeros(x.shape) if isinstance(x, jax.ShapeDtypeStruct) else np.asarray(x)
        return (x + std * rng.standard_normal(x.shape)).astype(np.float32)

    return jax.tree.map(noisy, tree)


def _logp(logits):
    """Summed next-token log-probs of IDS: the quantity every trainer differentiates (its
    gradients are O(1); a sum of raw logits' would be O(30) and compare float32 rounding)."""
    return sequence_logprobs(logits[:, :-1], IDS[:, 1:], MASK[:, 1:]).sum()


@pytest.fixture(scope="module")
def setup():
    model = make_lm(CFG)
    base = model.init(jax.random.key(0))
    return model, base, lora.init_adapters(jax.random.key(1), base, LORA)


def test_adapted_equals_base_at_init(setup):
    model, base, adapters = setup
    got = jax.jit(lora.make_lora_apply(model, LORA))(adapters, base, IDS, MASK)
    np.testing.assert_allclose(got, model.apply(base, IDS, MASK), rtol=1e-6, atol=1e-6)
    layer = adapters["decoder"]["layers"][0]
    assert layer["attn"]["q"]["a"].shape == (32, 4) and layer["attn"]["q"]["b"].shape == (4, 32)
    assert layer["attn"]["k"]["b"].shape == (4, 16)  # 2 kv heads x 8
    assert layer["mlp"]["down"]["a"].shape == (40, 4)
    assert float(jnp.abs(layer["mlp"]["down"]["a"]).max()) > 0


def _logits_and_grad(apply, adapters, base):
    """(logits, d _logp / d adapters) of `apply(adapters, base, IDS, MASK)`, one compile."""

    def f(ad):
        logits = apply(ad, base, IDS, MASK)
        return _logp(logits), logits

    grad, logits = jax.jit(jax.grad(f, has_aux=True))(adapters)
    return logits, grad


@pytest.fixture(scope="module")
def adapted(setup):
    """Random nonzero adapters and the factored model's (logits, adapter gradients)."""
    model, base, adapters = setup
    adapters = _random(adapters)
    return adapters, _logits_and_grad(lora.make_lora_apply(model, LORA), adapters, base)


def test_adapted_equals_merged_values_and_gradients(setup, adapted):
    model, base, _ = setup
    adapters, (logits, grad) = adapted

    def merged_apply(ad, base, ids, mask):
        return model.apply(lora.merge(base, ad, LORA), ids, mask)

    want_logits, want_grad = _logits_and_grad(merged_apply, adapters, base)
    np.testing.assert_allclose(logits, want_logits, rtol=1e-5, atol=1e-5)
    assert float(jnp.abs(logits - model.apply(base, IDS, MASK)).max()) > 0.1
    assert float(jnp.abs(grad["decoder"]["layers"][0]["attn"]["q"]["a"]).max()) > 1e-2
    _close(grad, want_grad)


def _dot_shapes(jaxpr) -> set:
    """Output shapes of every dot_general in a (closed) jaxpr, nested jaxprs included."""
    shapes = set()
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "dot_general":
            shapes.update(tuple(v.aval.shape) for v in eqn.outvars)
        for p in eqn.params.values():
            for sub in p if isinstance(p, (tuple, list)) else (p,):
                inner = getattr(sub, "jaxpr", sub)
                if hasattr(inner, "eqns"):
                    shapes |= _dot_shapes(inner)
    return shapes


def test_step_never_forms_a_full_size_update(setup):
    """The gradient of the adapted forward has no dot_general of a kernel's shape [I, O]:
    neither W + AB nor dW is formed (the merged formulation, checked alongside, has both)."""
    model, base, adapters = setup
    apply = lora.make_lora_apply(model, LORA)
    kernels = {(32, 32), (32, 16), (32, 40), (40, 32)}

    def shapes(fn):
        return _dot_shapes(jax.make_jaxpr(jax.grad(fn))(adapters).jaxpr)

    factored = shapes(lambda ad: apply(ad, base, IDS, MASK).sum())
    merged = shapes(lambda ad: model.apply(lora.merge(base, ad, LORA), IDS, MASK).sum())
    assert not factored & kernels
    assert merged & kernels == kernels


def _abstract_adapters(base, cfg):
    return jax.eval_shape(lambda b: lora.init_adapters(jax.random.key(1), b, cfg), base)


def test_targets_select_projections_and_bad_configs_fail(setup):
    model, base, _ = setup
    cfg = lora.LoraConfig(rank=2, alpha=2.0, targets=r"attn/(q|v)$")
    adapters = _abstract_adapters(base, cfg)
    assert set(adapters) == {"decoder"} and set(adapters["decoder"]) == {"layers"}
    for layer in adapters["decoder"]["layers"].values():
        assert set(layer) == {"attn"} and set(layer["attn"]) == {"q", "v"}
    only_first = lora.LoraConfig(rank=2, alpha=2.0, targets=r"layers/0/mlp/up")
    assert list(lora.targeted(base, only_first)) == ["decoder/layers/0/mlp/up"]
    with pytest.raises(ValueError, match=r"match no projection.*decoder/layers/\*/attn/q"):
        lora.init_adapters(jax.random.key(1), base, lora.LoraConfig(targets="attention/query"))
    for bad, match in (({"rank": 0}, "rank"), ({"alpha": -1.0}, "alpha"),
                       ({"dropout": 1.0}, "dropout"), ({"targets": "("}, "not a regex"),
                       ({"dtype": "float16"}, "dtype")):
        with pytest.raises(ValueError, match=match):
            lora.LoraConfig(**bad)
    with pytest.raises(ValueError, match="unknown LoRA config keys"):
        lora.LoraConfig.from_mapping({"rank": 4, "r": 4})
    wrong = _abstract_adapters(base, dataclasses.replace(cfg, rank=3))
    with pytest.raises(ValueError, match="do not fit kernel"):
        lora.merge(base, wrong, cfg)
    with pytest.raises(TypeError, match="outside an adapted function"):
        jax.eval_shape(model.apply, lora.lora_params(adapters, base, cfg), IDS, MASK)


def test_merge_unmerge_round_trip_and_full_params():
    model = make_reward_model(CFG)
    base = _random(jax.eval_shape(model.init, jax.random.key(0)), std=0.2)
    cfg = lora.LoraConfig(rank=4, alpha=8.0, full="score/")
    adapters = _random(_abstract_adapters(base, cfg), seed=4)
    merged = _merge(base, adapters, cfg)
    q = ("decoder", "layers", 1, "attn", "q")
    w = base["decoder"]["layers"][1]["attn"]["q"]["kernel"]
    ab = adapters["decoder"]["layers"][1]["attn"]["q"]
    np.testing.assert_allclose(lora._get(merged, q + ("kernel",)), w + 2.0 * ab["a"] @ ab["b"],
                               rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(merged["score"]["kernel"], adapters["score"]["kernel"])
    assert merged["decoder"]["layers"][0]["mlp"]["up"]["kernel"].dtype == jnp.float32
    half = jax.tree.map(lambda x: jnp.asarray(x, jnp.bfloat16), base)
    assert _merge(half, adapters, cfg)["decoder"]["layers"][0]["mlp"]["up"]["kernel"].dtype == \
        jnp.bfloat16  # merged in float32, stored in the base's dtype
    concrete = jax.tree.map(jnp.asarray, base)
    head = lora.init_adapters(jax.random.key(1), concrete, cfg)["score"]["kernel"]
    assert head.unsafe_buffer_pointer() != concrete["score"]["kernel"].unsafe_buffer_pointer()
    back = _unmerge(merged, adapters, cfg)
    back["score"] = base["score"]  # trained in full: unmerge keeps the trained head
    _close(back, base)
    params = lora.lora_params(adapters, base, cfg)  # what the adapted forward reads
    assert params["score"]["kernel"] is adapters["score"]["kernel"]
    kernel = lora._get(params, q + ("kernel",))
    assert isinstance(kernel, lora.LowRankKernel) and kernel.w is w and kernel.key is None


def test_adapter_logical_axes_follow_the_base(setup):
    model, base, adapters = setup
    axes = lora.adapter_logical_axes(adapters, model.logical_axes(base))
    layer = axes["decoder"]["layers"][0]
    assert layer["attn"]["q"] == {"a": ("embed", None), "b": (None, "heads")}
    assert layer["mlp"]["down"] == {"a": ("mlp", None), "b": (None, "embed")}
    assert jax.tree.structure(axes, is_leaf=lambda x: isinstance(x, tuple)) == \
        jax.tree.structure(adapters)


def test_dropout_only_with_an_rng(setup, adapted):
    model, base, _ = setup
    adapters, (logits, _) = adapted
    cfg = dataclasses.replace(LORA, dropout=0.5)
    apply = jax.jit(lora.make_lora_apply(model, cfg))
    plain = apply(adapters, base, IDS, MASK)
    np.testing.assert_allclose(plain, logits, rtol=1e-6, atol=1e-6)
    a = apply(adapters, base, IDS, MASK, rng=jax.random.key(7))
    b = apply(adapters, base, IDS, MASK, rng=jax.random.key(8))
    assert float(jnp.abs(a - plain).max()) > 1e-3 and float(jnp.abs(a - b).max()) > 1e-3


def test_cached_decoding_reads_the_same_adapters(setup, adapted):
    """The sampler's path (apply_cached, prefill into a KV cache) gives the training forward's
    logits with the same adapters."""
    from alignax.models.transformer import (causal_attention_mask, init_cache,
                                            positions_from_mask)

    model, base, _ = setup
    adapters, (logits, _) = adapted
    cached = lora.with_adapters(model.apply_cached)

    @jax.jit
    def prefill(adapters, base):
        return cached(lora.lora_params(adapters, base, LORA), IDS, positions_from_mask(MASK),
                      causal_attention_mask(MASK), init_cache(CFG, 3, 7), 0)[0]

    valid = np.asarray(MASK)
    np.testing.assert_allclose(np.asarray(prefill(adapters, base))[valid],
                               np.asarray(logits)[valid], rtol=1e-5, atol=1e-5)


def _pairs(n=4, t=8, seed=0):
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, 48, size=(2, n, t))
    response = np.zeros((n, t), bool)
    response[:, 3:] = True
    mask = np.ones((n, t), bool)
    return {"chosen_ids": ids[0], "rejected_ids": ids[1], "chosen_mask": mask,
            "rejected_mask": mask, "chosen_response_mask": response,
            "rejected_response_mask": response}


def test_dpo_trains_only_adapters_against_the_frozen_base(setup):
    model, base, adapters = setup
    adapters = jax.tree.map(jnp.copy, adapters)  # the step donates the state
    base_copy = jax.tree.map(np.array, base)
    loss_fn = lora.make_lora_loss(make_direct_loss(model.apply, "dpo", {"beta": 0.5}), LORA)
    tx = optax.adam(3e-2)
    step = make_train_step(loss_fn, tx)
    state = TrainState.create(adapters, tx, jax.random.key(0))
    batch = jax.tree.map(jnp.asarray, _pairs())
    losses = []
    for _ in range(6):
        state, metrics = step(state, batch, base)
        losses.append(float(metrics["loss"]))
    assert step._cache_size() == 1
    np.testing.assert_allclose(losses[0], np.log(2.0), rtol=1e-5)  # policy == reference at init
    assert losses[-1] < losses[0] - 0.1
    _close(base, base_copy, tol=0)  # the base: not donated, not updated
    assert jax.tree.structure(state.params) == jax.tree.structure(adapters)
    b = state.params["decoder"]["layers"][0]["attn"]["q"]["b"]
    assert float(jnp.abs(b).max()) > 0


def test_scanned_layers_take_stacked_adapters(setup, adapted):
    from alignax.models.transformer import stack_layers

    model, base, _ = setup
    adapters, (want, want_grad) = adapted
    scanned = make_lm(dataclasses.replace(CFG, scan_layers=True))
    sbase, sadapters = stack_layers(jax.tree.map(np.asarray, (base, adapters)))
    fresh = _abstract_adapters(sbase, LORA)
    assert fresh["decoder"]["layers"]["attn"]["q"]["a"].shape == (2, 32, 4)
    axes = lora.adapter_logical_axes(fresh, scanned.logical_axes(sbase))
    assert axes["decoder"]["layers"]["attn"]["q"] == {"a": ("layers", "embed", None),
                                                      "b": ("layers", None, "heads")}
    logits, grad = _logits_and_grad(lora.make_lora_apply(scanned, LORA), sadapters, sbase)
    np.testing.assert_allclose(logits, want, rtol=1e-5, atol=1e-5)
    dropped = jax.jit(lora.make_lora_apply(scanned, dataclasses.replace(LORA, dropout=0.5)))(
        sadapters, sbase, IDS, MASK, rng=jax.random.key(0))  # one dropout key per layer
    assert np.isfinite(dropped).all() and float(jnp.abs(dropped - logits).max()) > 1e-3
    _close(grad, stack_layers(jax.tree.map(np.asarray, want_grad)))
    merged = _merge(sbase, sadapters, LORA)
    _close(merged, stack_layers(jax.tree.map(np.asarray, _merge(base, adapters, LORA))))


def test_export_merged_loads_in_transformers(tmp_path, setup, adapted):
    """The merged checkpoint, loaded by transformers, gives the adapted model's logits."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")

    model, base, _ = setup
    adapters, (logits, _) = adapted
    lora.export_merged(model, base, adapters, LORA, str(tmp_path))
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        got = reloaded(torch.tensor(np.asarray(IDS)),
                       attention_mask=torch.tensor(np.asarray(MASK))).logits.numpy()
    valid = np.asarray(MASK)  # right padding: the valid positions see the same prefix
    np.testing.assert_allclose(got[valid], np.asarray(logits)[valid], rtol=1e-4, atol=1e-4)
