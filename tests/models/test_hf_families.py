"""Hugging Face families: the config-key table, every rope type, parity of tiny random Llama
(rope types), Mistral (sliding window), Qwen2 and Qwen3 (q/k norm, head_dim != D/H) models built
by transformers in the test (fp32 and bf16, left and right padding), export back (sharded, with
tokenizer files and generation config), and the streaming, mesh-placed import."""

import dataclasses
import json
import math
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from alignax.models import hf as hf_mod  # noqa: E402
from alignax.models import rope as rope_mod  # noqa: E402
from alignax.models.hf import MATH_KEYS, NON_MATH_KEYS, config_from_hf, export_hf, import_hf  # noqa: E402
from alignax.models.transformer import positions_from_mask  # noqa: E402
from tests.models import hf_logits  # noqa: E402

BASE = dict(vocab_size=96, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
            rms_norm_eps=1e-6, pad_token_id=0)
CONFIG_CLASSES = {"llama": "LlamaConfig", "mistral": "MistralConfig", "qwen2": "Qwen2Config",
                  "qwen3": "Qwen3Config", "gpt2": "GPT2Config", "gemma2": "Gemma2Config",
                  "gemma3_text": "Gemma3TextConfig", "gemma3": "Gemma3Config"}
# (Gemma parity: tests/models/test_gemma.py; gemma3 is multimodal: its text_config is read)
FAMILIES = {  # name -> (model_type, extra config)
    "llama": ("llama", {}),
    "llama_linear": ("llama", {"rope_parameters": {"rope_type": "linear", "factor": 2.0,
                                                   "rope_theta": 10000.0}}),
    "llama3": ("llama", {"tie_word_embeddings": True, "rope_parameters": {
        "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
        "original_max_position_embeddings": 64, "rope_theta": 10000.0}}),
    "llama_yarn": ("llama", {"rope_parameters": {
        "rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 16,
        "rope_theta": 10000.0}}),
    "llama_dynamic": ("llama", {"max_position_embeddings": 8, "rope_parameters": {
        "rope_type": "dynamic", "factor": 2.0, "rope_theta": 10000.0}}),
    "mistral": ("mistral", {"sliding_window": 5}),
    "qwen2": ("qwen2", {}),
    "qwen3": ("qwen3", {"head_dim": 16}),  # H E = 64 != D = 32
}
T = 16
IDS = np.random.default_rng(0).integers(1, 96, size=(3, T))
MASKS = {  # row 0 full; row 1 right-padded; row 2 left-padded
    "padded": np.array([[True] * T, [True] * 11 + [False] * 5, [False] * 4 + [True] * 12]),
}


def _hf_model(name, seed=0, dtype=torch.float32):
    model_type, extra = FAMILIES[name]
    torch.manual_seed(seed)
    cfg = getattr(transformers, CONFIG_CLASSES[model_type])(**{**BASE, **extra})
    cfg._attn_implementation = "eager"
    model = transformers.AutoModelForCausalLM.from_config(cfg).eval()
    with torch.no_grad():  # non-trivial norms and biases, so the test sees them
        for pname, p in model.named_parameters():
            if "norm" in pname or pname.endswith("bias"):
                p.add_(0.3 * torch.randn_like(p))
    return model.to(dtype)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """name -> (HF model, folder with its fp32 checkpoint)."""
    out = {}
    root = tmp_path_factory.mktemp("families")
    for name in FAMILIES:
        model = _hf_model(name)
        model.save_pretrained(root / name)
        out[name] = (model, root / name)
    return out


# --------------------------------------------------------------------------------------------
# the config-key table
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("model_type", sorted(CONFIG_CLASSES))
def test_every_config_key_transformers_writes_is_classified(model_type):
    cls = getattr(transformers, CONFIG_CLASSES[model_type])
    written = set(cls().to_dict()) | set(json.loads(cls().to_json_string(use_diff=False)))
    unclassified = sorted(written - set(MATH_KEYS[model_type]) - NON_MATH_KEYS)
    assert not unclassified, f"{model_type}: classify {unclassified} in MATH_KEYS or NON_MATH_KEYS"


@pytest.mark.parametrize("model_type,key", [(m, k) for m in sorted(MATH_KEYS)
                                            for k, (_, bad) in MATH_KEYS[m].items()
                                            if bad is not None])
def test_every_refused_key_fails_with_its_name(model_type, key):
    base = (dict(vocab_size=96, n_embd=32, n_layer=2, n_head=4, n_positions=16)
            if model_type == "gpt2" else {"text_config": dict(BASE)} if model_type == "gemma3"
            else dict(BASE))
    config_from_hf({**base, "model_type": model_type})  # the plain config imports
    bad = MATH_KEYS[model_type][key][1]
    if key == "max_window_layers":
        cfg = {**base, "model_type": model_type, "use_sliding_window": True,
               "sliding_window": 4, key: bad}
    else:
        cfg = {**base, "model_type": model_type, key: bad}
    with pytest.raises(ValueError, match=key) as info:
        config_from_hf(cfg)
    assert "\n" not in str(info.value)


def test_gemma_1_is_refused_by_name():
    with pytest.raises(ValueError, match="model_type 'gemma' is not supported: Gemma 1"):
        config_from_hf({**BASE, "model_type": "gemma"})


def test_implemented_keys_reach_the_config():
    cfg = config_from_hf({**BASE, "model_type": "qwen2", "use_sliding_window": True,
                          "sliding_window": 6, "max_window_layers": 0})
    assert cfg.sliding_window == 6 and cfg.qkv_bias and not cfg.qk_norm
    cfg = config_from_hf({**BASE, "model_type": "qwen3", "head_dim": 16})
    assert cfg.qk_norm and cfg.head_dim == 16 and cfg.attn_head_dim == 16
    cfg = config_from_hf({**BASE, "model_type": "llama", "rope_theta": 5e5,
                          "rope_scaling": {"type": "linear", "factor": 2.0}})  # older format
    assert cfg.rope_theta == 5e5 and dict(cfg.rope_scaling) == {"rope_type": "linear",
                                                                "factor": 2.0}
    with pytest.warns(UserWarning, match="mystery_key"):
        config_from_hf({**BASE, "model_type": "llama", "mystery_key": 1})


# --------------------------------------------------------------------------------------------
# rope types: published formulas and transformers
# --------------------------------------------------------------------------------------------

def test_rope_formulas_by_hand():
    plain = 1.0 / 10000.0 ** (np.arange(0, 8, 2) / 8)  # 1, 0.1, 0.01, 0.001
    np.testing.assert_allclose(rope_mod.linear_inv_freq(8, 1e4, 4.0), plain / 4)
    # llama3, L = 64, low 1, high 4: wavelengths 6.3 (< 16: kept), 62.8 (smoothed),
    # 628 and 6283 (> 64: divided by f)
    got = rope_mod.llama3_inv_freq(8, 1e4, 8.0, 1.0, 4.0, 64)
    s = (64 / (2 * math.pi / plain[1]) - 1) / 3
    np.testing.assert_allclose(got, [plain[0], (1 - s) * plain[1] / 8 + s * plain[1],
                                     plain[2] / 8, plain[3] / 8])
    # yarn: dims turning >= 32 times in L extrapolate, <= once interpolate (eq. 18)
    got = rope_mod.yarn_inv_freq(64, 1e4, 4.0, 2048)
    full = 1.0 / 10000.0 ** (np.arange(0, 64, 2) / 64)
    turns = 2048 * full / (2 * math.pi)
    np.testing.assert_allclose(got[turns > 40], full[turns > 40])
    np.testing.assert_allclose(got[turns < 0.5], full[turns < 0.5] / 4)
    assert rope_mod.yarn_attention_factor(4.0) == pytest.approx(0.1 * math.log(4) + 1)
    # dynamic NTK: no change up to M, base grows beyond
    assert rope_mod.dynamic_theta(1e4, 8, 2.0, 8, 8) == pytest.approx(1e4)
    assert rope_mod.dynamic_theta(1e4, 8, 2.0, 16, 8) == pytest.approx(1e4 * 3 ** (8 / 6))
    with pytest.raises(ValueError, match="rope_type 'longrope' is not supported"):
        rope_mod.normalize_scaling({"rope_type": "longrope"})
    with pytest.raises(ValueError, match=r"needs \['factor'\]"):
        rope_mod.normalize_scaling({"rope_type": "linear"})


@pytest.mark.parametrize("name", ["llama_linear", "llama3", "llama_yarn", "llama_dynamic"])
def test_rope_frequencies_match_transformers(name):
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    model_type, extra = FAMILIES[name]
    hf_cfg = transformers.LlamaConfig(**{**BASE, **extra})
    cfg = config_from_hf({**hf_cfg.to_dict(), "model_type": "llama"})
    kind = extra["rope_parameters"]["rope_type"]
    seq = 16
    expected, af = ROPE_INIT_FUNCTIONS[kind](hf_cfg, "cpu", seq_len=seq)
    pos = jnp.arange(seq)[None]
    cos, _ = rope_mod.rope_tables(pos, cfg.head_dim, cfg.rope_theta, cfg.rope_scaling)
    angles = np.arange(seq)[:, None] * expected.numpy()[None]
    np.testing.assert_allclose(np.asarray(cos[0, :, 0]), np.cos(angles) * af, rtol=1e-5,
                               atol=1e-6)
    if kind != "dynamic":
        got, got_af = rope_mod.rope_frequencies(cfg.head_dim, cfg.rope_theta, cfg.rope_scaling)
        np.testing.assert_allclose(got, expected.numpy(), rtol=1e-6)
        assert got_af == pytest.approx(af)


def test_legacy_llama_3_2_config_json_matches_transformers():
    """A Llama-3.2-1B config.json as published (transformers 4.x: top-level rope_theta and
    rope_scaling with rope_type llama3), shrunk: same frequencies as transformers reads."""
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    published = {**BASE, "model_type": "llama", "rope_theta": 500000.0, "head_dim": 8,
                 "rope_scaling": {"factor": 32.0, "high_freq_factor": 4.0,
                                  "low_freq_factor": 1.0,
                                  "original_max_position_embeddings": 8192,
                                  "rope_type": "llama3"},
                 "torch_dtype": "bfloat16", "attention_bias": False, "mlp_bias": False,
                 "pretraining_tp": 1, "hidden_act": "silu", "tie_word_embeddings": True}
    cfg = config_from_hf(published)
    hf_cfg = transformers.LlamaConfig(**{k: v for k, v in published.items()
                                         if k != "model_type"})
    expected, _ = ROPE_INIT_FUNCTIONS["llama3"](hf_cfg, "cpu")
    got, _ = rope_mod.rope_frequencies(cfg.head_dim, cfg.rope_theta, cfg.rope_scaling)
    assert cfg.rope_theta == 500000.0
    np.testing.assert_allclose(got, expected.numpy(), rtol=1e-6)


def test_yarn_options_match_transformers():
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    for extra in ({"mscale": 2.0, "mscale_all_dim": 1.0}, {"truncate": False, "beta_fast": 16},
                  {"attention_factor": 1.3}):
        params = {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 16,
                  "rope_theta": 10000.0, **extra}
        hf_cfg = transformers.LlamaConfig(**{**BASE, "rope_parameters": params})
        expected, af = ROPE_INIT_FUNCTIONS["yarn"](hf_cfg, "cpu")
        spec = {k: v for k, v in params.items() if k != "rope_theta"}
        got, got_af = rope_mod.rope_frequencies(8, 1e4, spec)
        np.testing.assert_allclose(got, expected.numpy(), rtol=1e-6)
        assert got_af == pytest.approx(af)


# --------------------------------------------------------------------------------------------
# parity: fp32 and bf16, padding on either side
# --------------------------------------------------------------------------------------------

def _valid_close(got, expected, mask, **tol):
    np.testing.assert_allclose(np.asarray(got)[mask], expected[mask], **tol)


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_logits_match_transformers_fp32_with_padding(saved, name):
    hf_model, folder = saved[name]
    model, params = import_hf(str(folder))
    mask = MASKS["padded"]
    got = model.apply(params, jnp.asarray(IDS), jnp.asarray(mask))
    _valid_close(got, hf_logits(hf_model, IDS, mask), mask, rtol=1e-5, atol=1e-5)


def test_sliding_window_changes_the_logits(saved):
    """The window matters here (W = 5 < T = 16), so the parity above tests the mask."""
    _, folder = saved["mistral"]
    model, params = import_hf(str(folder))
    assert model.config.sliding_window == 5
    full = hf_mod.make_lm(dataclasses.replace(model.config, sliding_window=0))
    ones = jnp.ones(IDS.shape, bool)
    a = model.apply(params, jnp.asarray(IDS), ones)
    b = full.apply(params, jnp.asarray(IDS), ones)
    np.testing.assert_allclose(a[:, :5], b[:, :5], rtol=1e-5, atol=1e-6)
    assert np.abs(np.asarray(a[:, 5:] - b[:, 5:])).max() > 1e-3


@pytest.mark.parametrize("name", ["llama3", "qwen3"])
def test_bf16_logits_are_as_close_to_fp32_as_transformers_bf16(saved, tmp_path, name):
    """bf16 keeps 8 significant bits (relative rounding 2^-9 per op), so neither bf16 model
    equals the fp32 logits; alignax in pure bf16 (bf16 weights as stored, bf16 matmuls, fp32
    norms/softmax/rotary) must be no farther from the fp32 reference than transformers' bf16
    forward of the same bf16 weights is (x 1.5 for the different rounding points, e.g.
    transformers rotates in bf16), and both within 0.05 of it."""
    hf32, _ = saved[name]
    hf16 = _hf_model(name, dtype=torch.bfloat16)
    hf16.save_pretrained(tmp_path)
    ref = hf_logits(hf16.float(), IDS, MASKS["padded"])  # fp32 math on the bf16 weights
    hf16 = hf16.to(torch.bfloat16)
    theirs = hf_logits(hf16, IDS, MASKS["padded"])
    model, params = import_hf(str(tmp_path), param_dtype="bfloat16", dtype="bfloat16")
    assert {x.dtype for x in jax.tree.leaves(params)} == {np.dtype(jnp.bfloat16)}
    ours = np.asarray(model.apply(params, jnp.asarray(IDS), jnp.asarray(MASKS["padded"])))
    m = MASKS["padded"]
    err_ours, err_theirs = np.abs(ours - ref)[m].max(), np.abs(theirs - ref)[m].max()
    assert err_ours <= 1.5 * err_theirs + 1e-3, (err_ours, err_theirs)
    assert err_ours < 0.05


# --------------------------------------------------------------------------------------------
# export back
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["llama3", "mistral", "qwen2", "qwen3"])
def test_export_loads_in_transformers_with_matching_logits(saved, tmp_path, name):
    hf_model, folder = saved[name]
    model, params = import_hf(str(folder))
    export_hf(model, params, str(tmp_path / "out"), model_type=FAMILIES[name][0])
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(
        tmp_path / "out", attn_implementation="eager").eval()
    mask = MASKS["padded"]
    _valid_close(hf_logits(reloaded, IDS, mask), hf_logits(hf_model, IDS, mask), mask,
                 rtol=1e-5, atol=1e-5)


def _tokenizer_dir(path):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel()
    tok.train_from_iterator(["hello world", "preference data"] * 10,
                            trainers.BpeTrainer(vocab_size=80,
                                                special_tokens=["<pad>", "<s>", "</s>", "<unk>"]))
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>",
                                                eos_token="</s>", pad_token="<pad>")
    fast.save_pretrained(path)
    with open(os.path.join(path, "generation_config.json"), "w") as f:
        json.dump({"bos_token_id": 1, "eos_token_id": 2, "do_sample": True,
                   "temperature": 0.6}, f)
    return fast


def test_sharded_bf16_export_with_tokenizer_and_generation_config(saved, tmp_path):
    hf_model, folder = saved["qwen3"]
    model, params = import_hf(str(folder), scan_layers=True)
    fast = _tokenizer_dir(str(tmp_path / "tok"))
    out = tmp_path / "out"
    export_hf(model, params, str(out), model_type="qwen3", dtype="bfloat16",
              max_shard_size="20KB", tokenizer_dir=str(tmp_path / "tok"),
              config_extra={"bos_token_id": 1, "eos_token_id": 2})
    with open(out / "model.safetensors.index.json") as f:
        index = json.load(f)
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) > 2 and all((out / s).exists() for s in shards)
    assert not (out / "model.safetensors").exists()
    from safetensors.numpy import load_file

    for s in shards:
        assert os.path.getsize(out / s) < 20_000 + 16_384  # one tensor may overflow a shard
        assert {v.dtype for v in load_file(str(out / s)).values()} == {np.dtype(jnp.bfloat16)}
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(out).eval()
    assert reloaded.dtype == torch.bfloat16
    for k, v in hf_model.state_dict().items():  # every tensor: the bf16 rounding of the source
        assert torch.equal(reloaded.state_dict()[k], v.to(torch.bfloat16)), k
    tok = transformers.AutoTokenizer.from_pretrained(out)
    assert tok("hello world").input_ids == fast("hello world").input_ids
    gen = transformers.GenerationConfig.from_pretrained(out)
    assert (gen.eos_token_id, gen.temperature) == (2, 0.6)
    # the sharded bf16 export imports back (index order, one shard at a time)
    _, back = import_hf(str(out), param_dtype="bfloat16")
    q = hf_model.model.layers[1].self_attn.q_proj.weight.detach().to(torch.bfloat16)
    np.testing.assert_array_equal(np.asarray(back["decoder"]["layers"][1]["attn"]["q"]["kernel"]),
                                  q.float().numpy().T.astype(jnp.bfloat16))


def test_generation_config_from_config_extra(saved, tmp_path):
    _, folder = saved["llama"]
    model, params = import_hf(str(folder))
    export_hf(model, params, str(tmp_path), config_extra={"bos_token_id": 1, "eos_token_id": 2})
    assert transformers.GenerationConfig.from_pretrained(tmp_path).eos_token_id == 2
    with pytest.raises(ValueError, match="max_shard_size"):
        export_hf(model, params, str(tmp_path), max_shard_size="lots")
    with pytest.raises(ValueError, match="qk_norm=False does not fit model_type 'qwen3'"):
        export_hf(model, params, str(tmp_path), model_type="qwen3")


# --------------------------------------------------------------------------------------------
# streaming import
# --------------------------------------------------------------------------------------------

def test_import_streams_shard_by_shard_in_the_checkpoint_dtype(tmp_path, monkeypatch):
    hf_model = _hf_model("qwen2", dtype=torch.bfloat16)
    hf_model.save_pretrained(tmp_path, max_shard_size="20KB")
    with open(tmp_path / "model.safetensors.index.json") as f:
        files = sorted(set(json.load(f)["weight_map"].values()))
    assert len(files) > 2
    events, conversions = [], []
    real_open, real_convert = hf_mod._open_shard, hf_mod._convert

    class Spy:
        def __init__(self, file):
            self.file, self.inner = os.path.basename(file), real_open(file)

        def __enter__(self):
            events.append(("open", self.file))
            return self

        def __exit__(self, *exc):
            events.append(("close", self.file))
            return self.inner.__exit__(*exc)

        def keys(self):
            return self.inner.keys()

        def get_tensor(self, name):
            events.append(("read", self.file))
            return self.inner.get_tensor(name)

    def convert(value, dtype):
        conversions.append((value.dtype, np.dtype(dtype)))
        return real_convert(value, dtype)

    monkeypatch.setattr(hf_mod, "_open_shard", Spy)
    monkeypatch.setattr(hf_mod, "_convert", convert)
    model, params = import_hf(str(tmp_path), param_dtype="bfloat16", scan_layers=True)
    # one file open at a time; the data of each shard read in one visit
    depth, visits = 0, []
    for kind, file in events:
        depth += {"open": 1, "close": -1, "read": 0}[kind]
        assert depth <= 1
        if kind == "read" and (not visits or visits[-1] != file):
            visits.append(file)
    assert visits == files
    assert conversions and all(a == b == np.dtype(jnp.bfloat16) for a, b in conversions)
    assert {x.dtype for x in jax.tree.leaves(params)} == {np.dtype(jnp.bfloat16)}
    mask = MASKS["padded"]
    ref = hf_logits(hf_model.float(), IDS, mask)
    got = model.apply(params, jnp.asarray(IDS), jnp.asarray(mask))
    assert np.abs(np.asarray(got) - ref)[mask].max() < 0.05


_MESH_SCRIPT = textwrap.dedent("""
    import os, sys
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
    import jax, jax.numpy as jnp, numpy as np
    from alignax.models.hf import import_hf
    from alignax.train.sharding import make_mesh

    from alignax.train.sharding import param_shardings

    mesh = make_mesh(data=2, fsdp=2, tensor=2)
    for scan in (False, True):  # unstacked leaves placed whole; stacked built layer by layer
        model, host = import_hf(sys.argv[1], scan_layers=scan, param_dtype="bfloat16")
        _, sharded = import_hf(sys.argv[1], scan_layers=scan, param_dtype="bfloat16", mesh=mesh)
        want = param_shardings(host, model.logical_axes(host), mesh)
        for a, b, s in zip(jax.tree.leaves(host), jax.tree.leaves(sharded),
                           jax.tree.leaves(want)):
            assert isinstance(a, np.ndarray) and isinstance(b, jax.Array)
            assert b.dtype == a.dtype and b.sharding.is_equivalent_to(s, a.ndim), (b.sharding, s)
            np.testing.assert_array_equal(np.asarray(b), a)
        q = sharded["decoder"]["layers"]
        q = (q["attn"]["q"]["kernel"] if scan else q[0]["attn"]["q"]["kernel"])
        assert len(q.sharding.device_set) == 8 and not q.sharding.is_fully_replicated
    print("OK")
""")


def test_mesh_import_equals_host_import(tmp_path):
    _hf_model("qwen3", dtype=torch.bfloat16).save_pretrained(tmp_path, max_shard_size="20KB")
    script = tmp_path / "mesh.py"
    script.write_text(_MESH_SCRIPT)
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    run = subprocess.run([sys.executable, str(script), str(tmp_path)], capture_output=True,
                         text=True, timeout=300, env=env)
    assert run.returncode == 0 and "OK" in run.stdout, run.stderr[-3000:]


def test_qwen3_reward_model_matches_transformers_with_padding(tmp_path):
    """*ForSequenceClassification (TRL's reward models): the score at the last valid token,
    left- and right-padded rows (pad id 0 marks padding for transformers)."""
    torch.manual_seed(4)
    cfg = transformers.Qwen3Config(**{**BASE, "head_dim": 16}, num_labels=1)
    cfg._attn_implementation = "eager"
    hf_model = transformers.Qwen3ForSequenceClassification(cfg).eval()
    hf_model.save_pretrained(tmp_path)
    mask = MASKS["padded"]
    ids = np.where(mask, IDS, 0)
    pos = np.asarray(positions_from_mask(jnp.asarray(mask)))
    with torch.no_grad():
        expected = hf_model(torch.tensor(ids), attention_mask=torch.tensor(mask.astype(np.int64)),
                            position_ids=torch.tensor(pos)).logits[:, 0].numpy()
    model, params = import_hf(str(tmp_path), kind="reward")
    got = model.apply(params, jnp.asarray(ids), jnp.asarray(mask))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
