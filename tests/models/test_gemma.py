"""Gemma 2 and Gemma 3 (text) checkpoints: parity of tiny random transformers models (fp32 with
left and right padding, unrolled and scanned layers; bf16 against transformers' own bf16 error),
the features each test sees (soft caps, sliding layers, the local rope base), export round
trips of the LM and of the reward model (Gemma*ForSequenceClassification, no score bias)."""

import copy
import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from alignax.models import hf as hf_mod  # noqa: E402
from alignax.models.hf import export_hf, import_hf  # noqa: E402
from alignax.models.transformer import init_cache, make_lm, positions_from_mask  # noqa: E402
from tests.models import hf_logits as _hf_out  # noqa: E402 (fp32 numpy)

# 3 layers: sliding, full, sliding (window 4 < T); head_dim 16 (H E = 64 != D = 32);
# query_pre_attn_scalar 24 (not E); initializer_range 0.5 so scores and logits reach the caps
BASE = dict(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=3,
            num_attention_heads=4, num_key_value_heads=2, head_dim=16,
            max_position_embeddings=64, rms_norm_eps=1e-6, pad_token_id=0,
            query_pre_attn_scalar=24, sliding_window=4, initializer_range=0.5,
            layer_types=["sliding_attention", "full_attention", "sliding_attention"])
FAMILIES = {  # name -> (config class, extra config)
    "gemma2": ("Gemma2Config", dict(attn_logit_softcapping=2.0, final_logit_softcapping=3.0)),
    "gemma3_text": ("Gemma3TextConfig", dict(rope_parameters={
        "full_attention": {"rope_type": "linear", "factor": 2.0, "rope_theta": 1e4},
        "sliding_attention": {"rope_type": "default", "rope_theta": 10.0}})),
}
T = 12
IDS = np.random.default_rng(0).integers(1, 64, size=(3, T))
MASK = np.array([[True] * T, [True] * 8 + [False] * 4, [False] * 3 + [True] * 9])


def _hf_config(name, **extra):
    cls, family = FAMILIES[name]
    cfg = getattr(transformers, cls)(**{**BASE, **family, **extra})
    cfg._attn_implementation = "eager"
    return cfg


def _perturb_norms(model):
    with torch.no_grad():  # (1 + w) norms start at w = 0: make them non-trivial
        for pname, p in model.named_parameters():
            if "norm" in pname:
                p.add_(0.3 * torch.randn_like(p))
    return model


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """name -> (HF causal LM, its fp32 checkpoint folder, its logits on IDS / MASK)."""
    out = {}
    root = tmp_path_factory.mktemp("gemma")
    for name in FAMILIES:
        torch.manual_seed(0)
        model = _perturb_norms(transformers.AutoModelForCausalLM.from_config(
            _hf_config(name)).eval())
        model.save_pretrained(root / name)
        out[name] = (model, root / name, _hf_out(model, IDS, MASK))
    return out


@functools.lru_cache(maxsize=None)
def _jit_apply(cfg):
    """One jitted forward per architecture, shared by the tests (equal configs compile once)."""
    return jax.jit(make_lm(cfg).apply)


def _logits(model, params, ids=IDS, mask=MASK):
    apply = jax.jit(model.apply) if "score" in params else _jit_apply(model.config)
    return np.asarray(apply(params, jnp.asarray(ids), jnp.asarray(mask)))


def _close(got, want, mask=MASK, **tol):
    np.testing.assert_allclose(np.asarray(got)[mask], want[mask], **tol)


@pytest.mark.parametrize("name,scan", [("gemma2", False), ("gemma3_text", True)])
def test_logits_match_transformers_fp32_with_padding(saved, name, scan):
    """Gemma 2 unrolled, Gemma 3 scanned (the per-layer sliding flags scanned along; the other
    layout of each runs in the bf16 test); each feature the parity covers changes the logits
    here, so the parity sees it."""
    _, folder, want = saved[name]
    model, params = import_hf(str(folder), scan_layers=scan)
    cfg = model.config
    assert (cfg.norm, cfg.mlp, cfg.scale_embeddings, cfg.post_norms, cfg.sliding_window,
            cfg.sliding_layers) == ("rms_offset", "geglu", True, True, 4, (True, False, True))
    assert cfg.attn_scale == 24 ** -0.5 and not cfg.score_bias
    jax.tree.leaves(model.logical_axes(params))  # the new norms have logical axes (mesh import)
    apply = _jit_apply(cfg)
    got = np.asarray(apply(params, jnp.asarray(IDS), jnp.asarray(MASK)))
    _close(got, want, rtol=1e-5, atol=1e-5)
    apply(params, jnp.asarray(IDS[::-1]), jnp.asarray(MASK[::-1]))
    assert apply._cache_size() == 1
    if name == "gemma2":
        assert (cfg.attn_softcap, cfg.logits_softcap, cfg.qk_norm) == (2.0, 3.0, False)
        assert np.abs(want).max() > 2.0  # the final cap 3 tanh(z / 3) bends these logits
        change = dict(attn_softcap=0.0)
    else:
        assert (cfg.rope_local_theta, dict(cfg.rope_scaling), cfg.qk_norm) == (
            10.0, {"rope_type": "linear", "factor": 2.0}, True)
        change = dict(rope_local_theta=0.0)
    other = make_lm(dataclasses.replace(cfg, **change))
    assert np.abs(_logits(other, params) - got)[MASK].max() > 1e-2, change


def test_cached_decoding_equals_the_full_forward(saved):
    """Token by token through the KV cache (`apply_cached`, as the sampler decodes), scanned
    Gemma 3 layers (the [L] flags select each layer's mask and rope in the cached scan body):
    each step's logits equal transformers' full forward (sliding layers mask by cache slot)."""
    _, folder, want = saved["gemma3_text"]
    model, params = import_hf(str(folder), scan_layers=True)
    caches = init_cache(model.config, 1, T)
    slots = jnp.arange(T)

    @jax.jit
    def step(params, caches, tok, i):
        attn = (slots <= i)[None, None, :]  # [1, 1, S]
        return model.apply_cached(params, tok[None, None], i[None, None], attn, caches, i)

    got = []
    for i in range(T):
        logits, caches = step(params, caches, jnp.asarray(IDS[0, i]), jnp.asarray(i))
        got.append(np.asarray(logits[0, 0]))
    np.testing.assert_allclose(np.stack(got), want[0], rtol=1e-5, atol=1e-5)
    assert step._cache_size() == 1


def test_gemma2_gradients_match_torch(saved):
    """d/dparams of the masked mean next-token log-likelihood, scanned layers (the soft-capped
    attention's custom backward, the capped logits, the (1 + w) and post norms), against
    torch autograd of the same loss on transformers' model: each tensor to 1e-5 of its
    largest entry."""
    hf_model, folder, _ = saved["gemma2"]
    model, params = import_hf(str(folder), scan_layers=True)
    targets = np.roll(IDS, -1, axis=1)
    weights = (MASK & np.roll(MASK, -1, axis=1)).astype(np.float32)
    weights[:, -1] = 0

    def loss(p):
        logp = jax.nn.log_softmax(model.apply(p, jnp.asarray(IDS), jnp.asarray(MASK)), -1)
        picked = jnp.take_along_axis(logp, jnp.asarray(targets)[..., None], -1)[..., 0]
        return (picked * weights).sum() / weights.sum()

    grads = jax.jit(jax.grad(loss))(params)
    hf_model.zero_grad()
    pos = np.asarray(positions_from_mask(jnp.asarray(MASK)))
    logits = hf_model(torch.tensor(IDS), attention_mask=torch.tensor(MASK.astype(np.int64)),
                      position_ids=torch.tensor(pos)).logits
    logp = torch.log_softmax(logits, -1).gather(-1, torch.tensor(targets)[..., None])[..., 0]
    w = torch.tensor(weights)
    ((logp * w).sum() / w.sum()).backward()
    ours = dict(hf_mod._export_tensors(model.config, "lm", jax.device_get(grads), "gemma2"))
    theirs = {k: p.grad.numpy() for k, p in hf_model.named_parameters()}
    assert set(ours) == set(theirs)
    for k, g in theirs.items():
        np.testing.assert_allclose(ours[k], g, atol=1e-5 * np.abs(g).max(), rtol=0, err_msg=k)


def test_bf16_logits_are_as_close_to_fp32_as_transformers_bf16(saved, tmp_path):
    """As tests/models/test_hf_families.py: alignax in pure bf16 (scanned layers, the layout
    the fp32 test of Gemma 2 does not run) no farther from the fp32 math on the bf16 weights
    than transformers' bf16 forward (x 1.5), and within 0.05 x the logits' scale. Gemma 2: the
    soft caps and sqrt(D) rounded to bf16 (5.65625 for D = 32)."""
    name = "gemma2"
    hf32, _, _ = saved[name]
    hf16 = copy.deepcopy(hf32).to(torch.bfloat16)
    hf16.save_pretrained(tmp_path)
    theirs = _hf_out(hf16, IDS, MASK)
    ref = _hf_out(hf16.float(), IDS, MASK)  # fp32 math on the bf16 weights
    model, params = import_hf(str(tmp_path), param_dtype="bfloat16", dtype="bfloat16",
                              scan_layers=True)
    assert {x.dtype for x in jax.tree.leaves(params)} == {np.dtype(jnp.bfloat16)}
    ours = _logits(model, params)
    err_ours = np.abs(ours - ref)[MASK].max()
    err_theirs = np.abs(theirs - ref)[MASK].max()
    assert err_ours <= 1.5 * err_theirs + 1e-3, (err_ours, err_theirs)
    assert err_ours < 0.05 * np.abs(ref).max()


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_export_loads_in_transformers_with_matching_logits(saved, tmp_path, name):
    hf_model, folder, want = saved[name]
    model, params = import_hf(str(folder), scan_layers=True)
    export_hf(model, params, str(tmp_path), model_type=name)
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(
        tmp_path, attn_implementation="eager").eval()
    state = reloaded.state_dict()
    for key, value in hf_model.state_dict().items():
        assert torch.equal(state[key], value), key
    assert reloaded.config.layer_types == hf_model.config.layer_types
    _close(_hf_out(reloaded, IDS, MASK), want, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="cannot be written as model_type 'llama'"):
        export_hf(model, params, str(tmp_path / "x"), model_type="llama")


def test_reward_model_matches_transformers_and_exports(tmp_path):
    """Gemma3TextForSequenceClassification: score (no bias) at the last valid token, padded on
    either side (pad id 0 marks padding for transformers); exported back it scores the same.
    (Gemma 2's reward model differs only by its architecture name, checked at the end.)"""
    from alignax.models.hf import config_to_hf

    name, cls = "gemma3_text", "Gemma3TextForSequenceClassification"
    torch.manual_seed(1)
    hf_model = _perturb_norms(getattr(transformers, cls)(_hf_config(name, num_labels=1)).eval())
    hf_model.save_pretrained(tmp_path / "in")
    ids = np.where(MASK, IDS, 0)
    want = _hf_out(hf_model, ids, MASK)[:, 0]
    model, params = import_hf(str(tmp_path / "in"), kind="reward")
    assert set(params["score"]) == {"kernel"} and not model.config.score_bias
    np.testing.assert_allclose(_logits(model, params, ids), want, rtol=1e-5, atol=1e-5)
    export_hf(model, params, str(tmp_path / "out"), model_type=name)
    reloaded = getattr(transformers, cls).from_pretrained(tmp_path / "out").eval()
    reloaded.config._attn_implementation = "eager"
    np.testing.assert_allclose(_hf_out(reloaded, ids, MASK)[:, 0], want, rtol=1e-5, atol=1e-5)
    g2 = config_to_hf(dataclasses.replace(model.config, qk_norm=False, rope_local_theta=0.0),
                      model_type="gemma2", kind="reward")
    assert g2["architectures"] == ["Gemma2ForSequenceClassification"]
    assert hasattr(transformers, g2["architectures"][0])


def test_config_keys_defaults_and_older_gemma3_configs():
    from alignax.models.hf import config_from_hf

    base = {k: v for k, v in BASE.items() if k not in ("layer_types", "query_pre_attn_scalar",
                                                       "sliding_window", "head_dim")}
    # keys left out take transformers' class defaults (Gemma 2: caps 50 and 30, scalar 256)
    cfg = config_from_hf({**base, "model_type": "gemma2"})
    want = transformers.Gemma2Config(**base)
    assert (cfg.attn_softcap, cfg.logits_softcap, cfg.attn_scale, cfg.sliding_window) == (
        want.attn_logit_softcapping, want.final_logit_softcapping,
        want.query_pre_attn_scalar ** -0.5, want.sliding_window)
    assert cfg.sliding_layers == tuple(t == "sliding_attention" for t in want.layer_types)
    # Gemma 3 as published before transformers 5: top-level rope keys and a layer pattern
    old = {**base, "model_type": "gemma3_text", "rope_theta": 1e6, "rope_local_base_freq": 1e4,
           "rope_scaling": {"rope_type": "linear", "factor": 8.0}, "sliding_window_pattern": 2}
    new = transformers.Gemma3TextConfig(**{k: v for k, v in old.items() if k != "model_type"})
    assert config_from_hf(old) == config_from_hf({**new.to_dict(), "model_type": "gemma3_text"})
    cfg = config_from_hf(old)
    assert (cfg.rope_theta, cfg.rope_local_theta, dict(cfg.rope_scaling)) == (
        1e6, 1e4, {"rope_type": "linear", "factor": 8.0})
    assert cfg.sliding_layers == (True, False, True) == tuple(
        t == "sliding_attention" for t in new.layer_types)
    # no sliding layer: plain full attention, one rope table
    cfg = config_from_hf({**base, "model_type": "gemma3_text",
                          "layer_types": ["full_attention"] * 3})
    assert (cfg.sliding_window, cfg.sliding_layers, cfg.rope_local_theta) == (0, (), 0.0)


@pytest.mark.parametrize("bad,match", [
    (dict(norm="rms1p"), "norm must be one of"),
    (dict(mlp="relu"), "mlp must be one of"),
    (dict(attn_softcap=-1.0), "attn_softcap must be a number >= 0"),
    (dict(logits_softcap="3"), "logits_softcap must be a number >= 0"),
    (dict(attn_scale=0.0), "attn_scale must be None or a number > 0"),
    (dict(sliding_layers=(True, False)), "sliding_layers has 2 flags for n_layers=3"),
    (dict(sliding_layers=(1, 0, 1)), "sliding_layers must be"),
    (dict(sliding_layers=(True, False, True), sliding_window=0), "sliding_window is 0"),
    (dict(rope_local_theta=10.0, sliding_window=0), "rope_local_theta needs sliding layers"),
    (dict(logits_softcap=3.0, logits_chunk=8), "logits_softcap does not work with logits_chunk"),
    (dict(pool="mean"), "pool must be one of"),
    (dict(pool="last_non_pad"), "pool='last_non_pad' needs an int pad_token_id"),
    (dict(score_bias=1), "score_bias must be a bool"),
    (dict(post_norms="yes"), "post_norms must be a bool"),
])
def test_bad_field_values_fail_in_one_line(bad, match):
    from alignax.models.transformer import TransformerConfig

    with pytest.raises(ValueError, match=match) as info:
        TransformerConfig(**{"n_layers": 3, "sliding_window": 4, **bad})
    assert "\n" not in str(info.value)


def test_soft_cap_runs_only_where_implemented():
    from alignax.models.attention import attention, resolve_implementation

    assert resolve_implementation("auto", backend="gpu", softcap=2.0) == "xla"
    assert resolve_implementation("auto", backend="tpu", softcap=2.0) == "xla"
    q, k = jnp.zeros((1, 1, 1, 4, 8)), jnp.zeros((1, 1, 4, 8))
    with pytest.raises(ValueError, match="'dot_product' has no logit soft cap"):
        attention(q, k, k, jnp.zeros((1, 1, 1, 4, 4)), implementation="dot_product",
                  softcap=2.0)


def test_multimodal_gemma3_imports_its_language_model(saved, tmp_path):
    """A Gemma3ForConditionalGeneration checkpoint (Gemma 3 4B and up; a tiny SigLIP tower
    here): text_config and the language_model.* tensors are read, the vision tower and the
    projector skipped; text-only logits equal transformers' and it exports as gemma3_text."""
    text = {k: v for k, v in _hf_config("gemma3_text").to_dict().items()
            if k not in ("architectures", "model_type")}
    vision = dict(model_type="siglip_vision_model", hidden_size=16, intermediate_size=32,
                  num_hidden_layers=1, num_attention_heads=2, image_size=28, patch_size=14)
    torch.manual_seed(0)
    cfg = transformers.Gemma3Config(text_config=text, vision_config=vision,
                                    mm_tokens_per_image=4)
    cfg._attn_implementation = "eager"
    cfg.text_config._attn_implementation = "eager"
    hf_model = _perturb_norms(transformers.Gemma3ForConditionalGeneration(cfg).eval())
    hf_model.save_pretrained(tmp_path / "mm")
    want = _hf_out(hf_model, IDS, MASK)
    model, params = import_hf(str(tmp_path / "mm"), scan_layers=True)
    _, text_folder, _ = saved["gemma3_text"]
    assert model.config == import_hf(str(text_folder), scan_layers=True)[0].config
    _close(_logits(model, params), want, rtol=1e-5, atol=1e-5)
    export_hf(model, params, str(tmp_path / "out"), model_type="gemma3_text")
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(
        tmp_path / "out", attn_implementation="eager").eval()
    _close(_hf_out(reloaded, IDS, MASK), want, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="export it as 'gemma3_text'"):
        export_hf(model, params, str(tmp_path / "x"), model_type="gemma3")
