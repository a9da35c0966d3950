"""Recipes from a pretrained checkpoint (`model.path`, alignax.algorithms.pretrained): tiny
random Qwen2 / Llama checkpoints written by transformers in the test (no download)."""

import json
import re
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from alignax.algorithms import direct, pretrained, reward_model, sft
from alignax.losses import REWARD_LOSSES
from alignax.models.hf import import_hf
from tests.test_utils import ListSource, pair_source

transformers = pytest.importorskip("transformers")
torch = pytest.importorskip("torch")

TINY = dict(vocab_size=32, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=32,
            pad_token_id=0, num_labels=1)
TRAIN = dict(steps=2, batch_size=8, checkpoint_every=100, log_every=1, progress=False)


def _save(path, family, head, **extra):
    torch.manual_seed(0)
    cfg = {"llama": transformers.LlamaConfig, "qwen2": transformers.Qwen2Config}[family](
        **TINY, **extra)
    arch = {"llama": "Llama", "qwen2": "Qwen2"}[family]
    model = getattr(transformers, arch + head)(cfg).eval()
    if head == "ForSequenceClassification":  # a trained-looking head, not the init one
        with torch.no_grad():
            model.score.weight.normal_(0, 1.0)
    model.save_pretrained(path, safe_serialization=True)
    return model


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    root = tmp_path_factory.mktemp("ckpts")
    out = {}
    for name, family, head, extra in (
            ("qwen2", "qwen2", "ForCausalLM", {}),
            ("llama", "llama", "ForCausalLM", dict(initializer_range=0.5)),
            ("qwen2_rm", "qwen2", "ForSequenceClassification", {})):
        out[name] = str(root / name)
        out[name + "_hf"] = _save(out[name], family, head, **extra)
    return out


def _losses(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    return np.array([r["train/loss"] for r in rows if "train/loss" in r])


def _sequences(n=8, t=12, vocab=32, seed=0):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(4, t + 1, n)
    ids = np.where(np.arange(t) < lengths[:, None], rng.integers(1, vocab, (n, t)), 0)
    mask = (np.arange(t) < lengths[:, None]).astype(np.int32)
    return ids.astype(np.int32), mask


def _nll(logits, ids, mask):
    """Token-mean next-token NLL, by hand: [B, T, V] logits, [B, T] ids and mask."""
    logp = jax.nn.log_softmax(jnp.asarray(logits, jnp.float32), -1)[:, :-1]
    tok = jnp.take_along_axis(logp, jnp.asarray(ids)[:, 1:, None], -1)[..., 0]
    m = jnp.asarray(mask[:, 1:] * mask[:, :-1], jnp.float32)
    return float(-(tok * m).sum() / m.sum())


def test_sft_from_path_starts_at_the_checkpoint(ckpts, tmp_path):
    ids, mask = _sequences()
    source = ListSource([{"input_ids": i, "mask": m} for i, m in zip(ids, mask)])
    cfg = sft.default_config(model={"path": ckpts["qwen2"]}, train=TRAIN,
                             optimizer=dict(learning_rate=1e-2))
    out = sft.train(cfg, str(tmp_path), train_source=source)
    losses = _losses(str(tmp_path))
    model, params = import_hf(ckpts["qwen2"])
    by_hand = _nll(model.apply(params, jnp.asarray(ids), jnp.asarray(mask, bool)), ids, mask)
    np.testing.assert_allclose(losses[0], by_hand, rtol=1e-5)
    with torch.no_grad():  # and transformers' own logits of the same checkpoint
        hf_logits = ckpts["qwen2_hf"](torch.tensor(ids.astype(np.int64)),
                                      attention_mask=torch.tensor(mask)).logits.numpy()
    np.testing.assert_allclose(losses[0], _nll(hf_logits, ids, mask), rtol=1e-5)
    assert len(losses) == 2 and losses[1] < losses[0]
    assert out["model"].config == model.config


def test_direct_from_path_uses_the_checkpoint_as_policy_and_reference(ckpts, tmp_path):
    pairs = pair_source(n=8, t=10)
    cfg = direct.default_config(model={"path": ckpts["llama"], "logits_chunk": 8},
                                train=TRAIN, optimizer=dict(learning_rate=1e-2))
    direct.train(cfg, str(tmp_path / "path"), train_source=pairs)
    from_path = _losses(str(tmp_path / "path"))
    assert from_path[0] == pytest.approx(np.log(2.0), abs=1e-6)  # policy == reference
    _, params = import_hf(ckpts["llama"], logits_chunk=8)
    explicit = direct.default_config(model=_fields(ckpts["llama"], 8),
                                     train=TRAIN, optimizer=dict(learning_rate=1e-2))
    direct.train(explicit, str(tmp_path / "explicit"), train_source=pairs, ref_params=params)
    np.testing.assert_allclose(from_path, _losses(str(tmp_path / "explicit")), rtol=1e-5)
    assert from_path[1] < from_path[0]


def _fields(path, logits_chunk=0):
    import dataclasses

    model, _ = import_hf(path, logits_chunk=logits_chunk)
    return {f.name: getattr(model.config, f.name) for f in dataclasses.fields(model.config)}


def test_reward_model_from_a_causal_lm_keeps_its_backbone_and_inits_the_head(ckpts, tmp_path):
    lm, lm_params = import_hf(ckpts["llama"])
    rm, rm_params = pretrained.load_pretrained({"path": ckpts["llama"]}, "reward", seed=3)
    assert set(rm_params) == {"decoder", "score"}
    jax.tree.map(np.testing.assert_array_equal, rm_params["decoder"], lm_params["decoder"])
    ids, mask = _sequences(n=4)
    _, hidden = lm.apply(lm_params, jnp.asarray(ids), jnp.asarray(mask, bool),
                         return_hidden=True)  # [B, T, D] after the final norm
    last = hidden[np.arange(4), mask.sum(1) - 1]
    head = rm_params["score"]
    assert head["kernel"].shape == (32, 1) and set(head) == {"kernel"}  # no bias, as HF's score
    np.testing.assert_allclose(rm.apply(rm_params, jnp.asarray(ids), jnp.asarray(mask, bool)),
                               (last @ head["kernel"])[:, 0], rtol=1e-5, atol=1e-6)
    # transformers' init: Normal(0, initializer_range) (0.5 in this checkpoint), seeded
    np.testing.assert_allclose(head["kernel"],
                               0.5 * jax.random.normal(jax.random.key(3), (32, 1)), rtol=1e-6)
    again = pretrained.load_pretrained({"path": ckpts["llama"]}, "reward", seed=3)[1]
    np.testing.assert_array_equal(again["score"]["kernel"], head["kernel"])
    big = pretrained.init_score_head(jax.random.key(0), 20000, 0.02)["kernel"]
    assert abs(big.mean()) < 3 * 0.02 / np.sqrt(20000) and abs(big.std() / 0.02 - 1) < 0.02
    # qwen2 has initializer_range 0.02 in its config.json
    _, q = pretrained.load_pretrained({"path": ckpts["qwen2"]}, "reward", seed=3)
    np.testing.assert_allclose(q["score"]["kernel"], head["kernel"] * (0.02 / 0.5), rtol=1e-6)

    # the recipe: first-step loss = Bradley-Terry by hand on the same params
    pairs = pair_source(n=8, t=10)
    cfg = reward_model.default_config(model={"path": ckpts["llama"]}, train=TRAIN)
    reward_model.train(cfg, str(tmp_path), train_source=pairs, seed=3)
    batch = {k: np.stack([pairs[i][k] for i in range(8)]) for k in pairs[0]}
    chosen = rm.apply(rm_params, batch["chosen_ids"], batch["chosen_mask"].astype(bool))
    rejected = rm.apply(rm_params, batch["rejected_ids"], batch["rejected_mask"].astype(bool))
    by_hand = float(REWARD_LOSSES["bradley_terry"](chosen, rejected).mean())
    np.testing.assert_allclose(_losses(str(tmp_path))[0], by_hand, rtol=1e-5)


def test_reward_model_from_a_classification_checkpoint_scores_as_transformers(ckpts):
    rm, params = pretrained.load_pretrained({"path": ckpts["qwen2_rm"]}, "reward")
    ids, mask = _sequences(n=4)
    with torch.no_grad():
        expected = ckpts["qwen2_rm_hf"](torch.tensor(ids.astype(np.int64)),
                                        attention_mask=torch.tensor(mask)).logits[:, 0].numpy()
    got = rm.apply(params, jnp.asarray(ids), jnp.asarray(mask, bool))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_runtime_fields_and_the_online_helper(ckpts):
    model, params = pretrained.model_and_params(
        {"path": ckpts["qwen2"], "scan_layers": True, "remat": "full", "logits_chunk": 16,
         "d_model": 32, "n_layers": 2})  # agreeing architecture keys are allowed
    assert model.config.scan_layers and model.config.remat == "full"
    assert model.config.logits_chunk == 16
    ref_model, ref = import_hf(ckpts["qwen2"], scan_layers=True)
    jax.tree.map(np.testing.assert_array_equal, params, ref)
    random_model, random = pretrained.model_and_params(dict(vocab_size=32, d_model=32), seed=1)
    jax.tree.map(np.testing.assert_array_equal, random, random_model.init(jax.random.key(1)))


def test_bad_model_configs_fail_in_one_line(ckpts, tmp_path):
    path = ckpts["qwen2"]
    cases = [
        (sft, {"path": path, "d_model": 64}, "model.d_model=64 disagrees with the checkpoint"),
        (sft, {"path": path, "dmodel": 32}, "unknown model keys ['dmodel']"),
        (sft, {"path": str(tmp_path)}, "no config.json"),
        (direct, {"path": path, "tie_embeddings": True}, "model.tie_embeddings=True disagrees"),
    ]
    for recipe, model_cfg, message in cases:
        with pytest.raises(ValueError, match=r"config: .*" + re.escape(message)) as e:
            recipe.validate({"model": model_cfg})
        assert "\n" not in str(e.value)
    pairs = pair_source(n=8, t=10)
    with pytest.raises(ValueError, match="pass ref_params or set model.path"):
        direct.train(direct.default_config(train=TRAIN), str(tmp_path / "a"), train_source=pairs)
    with pytest.raises(ValueError, match="model.path and init_params both"):
        reward_model.train(reward_model.default_config(model={"path": path}, train=TRAIN),
                           str(tmp_path / "b"), train_source=pairs, init_params={})
    with pytest.raises(ValueError, match="sequence-classification checkpoint"):
        pretrained.load_pretrained({"path": ckpts["qwen2_rm"]}, "lm")


def test_the_byom_example_runs_dpo_from_a_checkpoint_and_a_dataset(ckpts, tmp_path):
    """examples/byom.py (docs/byom.md) end to end: tokenizer.json + ChatML template in the
    checkpoint folder, a conversational save_to_disk dataset, one DPO step."""
    datasets = pytest.importorskip("datasets")
    from tokenizers import AddedToken, Tokenizer, models, pre_tokenizers

    from alignax import experiment

    ckpt = tmp_path / "ckpt"
    ckpts["qwen2_hf"].save_pretrained(ckpt, safe_serialization=True)
    words = ["<pad>", "<|im_start|>", "<|im_end|>", "user", "assistant"] + [
        f"w{i}" for i in range(20)]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<pad>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.add_special_tokens([AddedToken("<|im_start|>", special=True),
                            AddedToken("<|im_end|>", special=True)])
    tok.save(str(ckpt / "tokenizer.json"))
    template = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}"
                "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n"
                "{% endif %}")
    (ckpt / "tokenizer_config.json").write_text(json.dumps(
        {"eos_token": "<|im_end|>", "pad_token": "<pad>", "chat_template": template}))
    rng = np.random.default_rng(0)

    def text(n):
        return " ".join(f"w{i}" for i in rng.integers(0, 20, n))

    datasets.Dataset.from_list([
        {"prompt": [{"role": "user", "content": text(3)}],
         "chosen": [{"role": "assistant", "content": text(2)}],
         "rejected": [{"role": "assistant", "content": text(2)}]} for _ in range(8)]
    ).save_to_disk(str(tmp_path / "prefs"))
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    module = experiment.load_module(os.path.join(root, "examples", "byom.py"))
    config = experiment.load_config(module, "dpo")
    experiment.apply_overrides(config, [
        f"model.path={ckpt}", f"data.path={tmp_path / 'prefs'}", "data.max_length=16",
        "train.steps=1", "train.batch_size=8", "train.progress=False", "model.logits_chunk=8"])
    with config.unlocked():
        config.seed = 0
    metrics = module.run(config, str(tmp_path / "run"))
    assert metrics["loss"] == pytest.approx(np.log(2.0), abs=1e-6)
    assert metrics["policy_chosen_logps"] < 0  # the responses were tokenised, not padding
