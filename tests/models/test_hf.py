"""Hugging Face parity: tiny random Llama/Qwen2 models built with transformers in the test."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers

from alignax.models.hf import export_hf, import_hf

TINY = dict(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)


GPT2_TINY = dict(vocab_size=64, n_embd=32, n_layer=2, n_head=4, n_positions=32, n_inner=48)


def _gpt2(kind, seed=0):
    torch.manual_seed(seed)
    cfg = transformers.GPT2Config(**GPT2_TINY, num_labels=1, pad_token_id=0)
    name = "GPT2LMHeadModel" if kind == "lm" else "GPT2ForSequenceClassification"
    model = getattr(transformers, name)(cfg).eval()
    with torch.no_grad():  # non-trivial biases and norms, so the test sees them
        for name, p in model.named_parameters():
            if name.endswith("bias") or "ln_" in name:
                p.add_(0.1 * torch.randn_like(p))
    return model


def _hf_model(model_type, kind, tie=False, seed=0):
    if model_type == "gpt2":
        return _gpt2(kind, seed)
    torch.manual_seed(seed)
    cls_cfg = {"llama": transformers.LlamaConfig, "qwen2": transformers.Qwen2Config}[model_type]
    cfg = cls_cfg(**TINY, tie_word_embeddings=tie, num_labels=1, pad_token_id=0)
    arch = {"llama": "Llama", "qwen2": "Qwen2"}[model_type]
    suffix = "ForCausalLM" if kind == "lm" else "ForSequenceClassification"
    model = getattr(transformers, arch + suffix)(cfg).eval()
    if model_type == "qwen2":  # random biases, so the test sees them
        with torch.no_grad():
            for layer in model.model.layers:
                for p in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj):
                    p.bias.normal_(0, 0.5)
    return model


IDS = np.random.default_rng(0).integers(1, 64, size=(3, 9))


@pytest.mark.parametrize("model_type,tie", [("llama", False), ("llama", True), ("qwen2", False),
                                            ("gpt2", True)])
def test_causal_lm_logits_match_transformers(tmp_path, model_type, tie):
    hf = _hf_model(model_type, "lm", tie=tie)
    hf.save_pretrained(tmp_path, safe_serialization=True)
    model, params = import_hf(str(tmp_path))
    with torch.no_grad():
        expected = hf(torch.tensor(IDS)).logits.numpy()
    got = model.apply(params, jnp.asarray(IDS), jnp.ones(IDS.shape, bool))
    np.testing.assert_allclose(got, expected, atol=1e-4)
    assert model.config.qkv_bias == (model_type in ("qwen2", "gpt2"))


@pytest.mark.parametrize("model_type", ["llama", "gpt2"])
def test_reward_model_matches_transformers_with_right_padding(tmp_path, model_type):
    hf = _hf_model(model_type, "reward")
    hf.save_pretrained(tmp_path, safe_serialization=True)
    model, params = import_hf(str(tmp_path), kind="reward")
    ids = IDS.copy()
    ids[1, 6:] = 0  # right padding with pad_token_id 0
    mask = ids != 0
    with torch.no_grad():
        expected = hf(torch.tensor(ids), attention_mask=torch.tensor(mask)).logits[:, 0].numpy()
    got = model.apply(params, jnp.asarray(ids), jnp.asarray(mask))
    np.testing.assert_allclose(got, expected, atol=1e-4)


@pytest.mark.parametrize("model_type", ["llama", "qwen2", "gpt2"])
def test_export_round_trip_loads_in_transformers(tmp_path, model_type):
    hf = _hf_model(model_type, "lm", seed=1)
    hf.save_pretrained(tmp_path / "in", safe_serialization=True)
    model, params = import_hf(str(tmp_path / "in"))
    export_hf(model, params, str(tmp_path / "out"), model_type=model_type)
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "out").eval()
    with torch.no_grad():
        a = hf(torch.tensor(IDS)).logits.numpy()
        b = reloaded(torch.tensor(IDS)).logits.numpy()
    np.testing.assert_allclose(b, a, atol=1e-5)


def test_unsupported_configs_fail_clearly(tmp_path):
    import json

    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt_neox"}))
    with pytest.raises(ValueError, match="unsupported model_type 'gpt_neox'"):
        import_hf(str(tmp_path))
    cfg = {**TINY, "model_type": "llama", "rope_scaling": {"type": "longrope", "factor": 2.0}}
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="rope_scaling: rope_type 'longrope' is not supported"):
        import_hf(str(tmp_path))
    hf = _hf_model("llama", "lm")
    hf.save_pretrained(tmp_path / "llama", safe_serialization=True)
    model, params = import_hf(str(tmp_path / "llama"))
    with pytest.raises(ValueError, match="cannot be written as model_type 'gpt2'"):
        export_hf(model, params, str(tmp_path / "out"), model_type="gpt2")


@pytest.mark.parametrize("model_type", ["llama", "gpt2"])
def test_scanned_import_is_stacked_and_exports_back(tmp_path, model_type):
    hf = _hf_model(model_type, "lm", seed=2)
    hf.save_pretrained(tmp_path / "in", safe_serialization=True)
    model, params = import_hf(str(tmp_path / "in"), scan_layers=True)
    assert model.config.scan_layers
    first = params["decoder"]["layers"]["attn"]["q"]["kernel"]
    assert first.shape[0] == 2 and first.dtype == np.float32  # stacked [L, D, H*E]
    with torch.no_grad():
        expected = hf(torch.tensor(IDS)).logits.numpy()
    got = model.apply(params, jnp.asarray(IDS), jnp.ones(IDS.shape, bool))
    np.testing.assert_allclose(got, expected, atol=1e-4)
    export_hf(model, params, str(tmp_path / "out"), model_type=model_type)
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "out").eval()
    with torch.no_grad():
        np.testing.assert_allclose(reloaded(torch.tensor(IDS)).logits.numpy(), expected,
                                   atol=1e-5)
    with pytest.raises(ValueError, match="cannot be overridden"):
        import_hf(str(tmp_path / "in"), n_layers=3)


def test_bf16_checkpoint_imports_as_bf16_and_exports_bf16(tmp_path):
    from safetensors.numpy import load_file

    hf = _hf_model("llama", "lm", seed=3).to(torch.bfloat16)
    hf.save_pretrained(tmp_path / "in", safe_serialization=True)
    model, params = import_hf(str(tmp_path / "in"), param_dtype="bfloat16", scan_layers=True)
    assert {x.dtype for x in jax.tree.leaves(params)} == {np.dtype(jnp.bfloat16)}
    q = hf.model.layers[1].self_attn.q_proj.weight.detach().float().numpy().T
    np.testing.assert_array_equal(np.float32(params["decoder"]["layers"]["attn"]["q"]["kernel"][1]),
                                  q)  # the checkpoint's bf16 values, bit for bit
    export_hf(model, params, str(tmp_path / "out"))
    tensors = load_file(str(tmp_path / "out" / "model.safetensors"))
    assert {t.dtype for t in tensors.values()} == {np.dtype(jnp.bfloat16)}
    with open(tmp_path / "out" / "config.json") as f:
        assert json.load(f)["torch_dtype"] == "bfloat16"
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "out").eval()
    for a, b in zip(hf.state_dict().values(), reloaded.state_dict().values()):
        assert torch.equal(a, b)
    _, fp32 = import_hf(str(tmp_path / "in"))  # default: fp32 master weights
    assert {x.dtype for x in jax.tree.leaves(fp32)} == {np.dtype(np.float32)}
