"""The memory levers through the offline recipes' configs: train.grad_accum_steps,
precompute_ref_logps, lora and model.logits_chunk give the plain path's training (or, for LoRA,
train adapters on the frozen reference)."""

import json
import os

import jax
import numpy as np
import pytest

from alignax.algorithms import direct, sft
from alignax.models.transformer import TransformerConfig, make_lm
from tests.test_utils import ListSource, pair_source

MODEL_CFG = dict(vocab_size=32, d_model=32, n_layers=2, n_heads=2, d_ff=64, max_len=16)
REF = make_lm(TransformerConfig(**MODEL_CFG)).init(jax.random.key(1))


def _train_cfg(**train):
    return {**dict(steps=3, batch_size=8, checkpoint_every=100, log_every=1, progress=False),
            **train}


def _losses(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    return np.array([r["train/loss"] for r in rows if "train/loss" in r])


def _dpo(tmp_path, name, *, model=None, n=24, **overrides):
    train = overrides.pop("train", {})
    cfg = direct.default_config(model=dict(MODEL_CFG, **(model or {})),
                                optimizer=dict(learning_rate=1e-2), train=_train_cfg(**train),
                                **overrides)
    workdir = str(tmp_path / name)
    return direct.train(cfg, workdir, train_source=pair_source(n=n), ref_params=REF), workdir


def test_dpo_with_accumulation_and_precomputed_reference_equals_the_plain_step(tmp_path):
    _, plain = _dpo(tmp_path, "plain")
    _, levers = _dpo(tmp_path, "levers", train=dict(grad_accum_steps=2),
                     precompute_ref_logps=True)
    a, b = _losses(plain), _losses(levers)
    assert len(a) == len(b) == 3 and a[-1] < a[0]
    np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)
    # the reference's values are stored with the run and reloaded on resume
    assert os.listdir(os.path.join(levers, "ref_logps"))


def test_dpo_with_lora_trains_adapters_on_the_frozen_reference(tmp_path):
    # one batch of 8 pairs seen at every step: its loss must fall
    out, workdir = _dpo(tmp_path, "lora", model=dict(logits_chunk=8), n=8,
                        lora=dict(rank=4, alpha=8.0, targets=r"attn/(q|v)$"))
    losses = _losses(workdir)
    assert losses[0] == pytest.approx(np.log(2.0), abs=1e-6)  # policy == reference at init
    assert losses[-1] < losses[0]
    flat_ref = dict(jax.tree_util.tree_leaves_with_path(REF))
    changed = {jax.tree_util.keystr(p) for p, x in jax.tree_util.tree_leaves_with_path(
        out["params"]) if not np.array_equal(np.asarray(x), np.asarray(flat_ref[p]))}
    assert changed and all("'attn'" in p and ("'q'" in p or "'v'" in p) for p in changed)
    shapes = {np.shape(x) for x in jax.tree_util.tree_leaves(out["adapters"])}
    assert shapes == {(32, 4), (4, 32)}  # A [D, r] and B [r, D] of q and v, nothing else


def test_sft_accumulation_weighs_micro_batches_by_their_tokens(tmp_path):
    rng = np.random.default_rng(0)
    records = []
    for i in range(16):
        n = 3 + (i % 4) * 4  # unequal lengths: micro-batch token counts differ
        ids = np.zeros(16, np.int32)
        ids[:n] = rng.integers(1, 32, n)
        records.append({"input_ids": ids, "mask": (np.arange(16) < n).astype(np.int32)})
    losses = []
    for k in (1, 2):
        cfg = sft.default_config(model=MODEL_CFG, optimizer=dict(learning_rate=1e-2),
                                 train=_train_cfg(grad_accum_steps=k))
        workdir = str(tmp_path / f"sft{k}")
        sft.train(cfg, workdir, train_source=ListSource(records), init_params=REF)
        losses.append(_losses(workdir))
    np.testing.assert_allclose(losses[1], losses[0], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("overrides, match", [
    (dict(train=dict(batch_size=8, grad_accum_steps=3)), "not divisible by"),
    (dict(train=dict(grad_accum_steps=0)), "positive int"),
    (dict(lora=dict(rank=4, beta=1.0)), "lora: unknown LoRA config keys"),
    (dict(loss="tdpo", loss_kwargs={}, precompute_ref_logps=True), "sequential KL"),
    (dict(loss="simpo", loss_kwargs={}, precompute_ref_logps=True), "nothing to precompute"),
    (dict(sync_ref={"alpha": 0.5}), "sync_ref is"),
    (dict(sync_ref={"alpha": 1.5, "steps": 4}), "0 < alpha"),
    (dict(sync_ref={"alpha": 0.5, "steps": 4}, precompute_ref_logps=True), "precomputed"),
    (dict(sync_ref={"alpha": 0.5, "steps": 4}, lora={"rank": 2}), "frozen base"),
])
def test_lever_configs_are_checked_before_any_work(overrides, match):
    with pytest.raises(ValueError, match=match):
        direct.validate(overrides)


def test_lora_needs_a_base_to_adapt(tmp_path):
    cfg = sft.default_config(model=MODEL_CFG, train=_train_cfg(), lora=dict(rank=2))
    with pytest.raises(ValueError, match="LoRA adapts a given model"):
        sft.train(cfg, str(tmp_path / "x"), train_source=ListSource([]))


def test_synced_reference_soft_update_every_k_steps():
    from alignax.algorithms.common import synced_reference_fit_args

    ref = {"w": np.array([1.0, 2.0], np.float32)}
    args = synced_reference_fit_args(None, None, ref, 0.25, 2)
    params = {"w": np.array([5.0, -2.0], np.float32)}
    post = jax.jit(args["extra_post_update"])
    extra = args["extra_init"]
    np.testing.assert_array_equal(post(extra, params, 1)["ref"]["w"], ref["w"])  # not yet
    np.testing.assert_allclose(post(extra, params, 2)["ref"]["w"],
                               0.25 * params["w"] + 0.75 * ref["w"], rtol=1e-7)
    with pytest.raises(ValueError, match="alpha"):
        synced_reference_fit_args(None, None, ref, 0.0, 2)


@pytest.mark.slow  # an end-to-end training run: the system tier (make test-slow)
def test_tr_dpo_reference_follows_the_policy_and_resumes(tmp_path):
    """alpha = 1 every step: each update starts from policy == reference, so every DPO loss is
    exactly log 2 -- also after a restart, which must restore the synced reference (the frozen
    initial one would give another loss at step 3)."""
    sync = {"sync_ref": {"alpha": 1.0, "steps": 1}}
    _dpo(tmp_path, "tr", train={"steps": 2}, **sync)
    _, workdir = _dpo(tmp_path, "tr", train={"steps": 4}, **sync)
    losses = _losses(workdir)
    assert len(losses) == 4
    np.testing.assert_allclose(losses, np.log(2.0), rtol=1e-6)
    plain = _losses(_dpo(tmp_path, "plain", train={"steps": 2})[1])
    assert abs(plain[1] - np.log(2.0)) > 1e-4  # without syncing the second loss moves
