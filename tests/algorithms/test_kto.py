"""The KTO recipe: its first step is kto_loss on log-probs from the params (with TRL's KL from
the mismatched pairs of the batch), the weights, APO-zero, resume, config errors, TRL parity."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from alignax.algorithms import common, kto
from alignax.losses import kto_loss
from alignax.models.transformer import TransformerConfig, make_lm
from tests.algorithms import unpaired_rows
from tests.test_utils import ListSource

MODEL_CFG = dict(vocab_size=32, d_model=32, n_layers=2, n_heads=2, d_ff=64, max_len=16)
MODEL = make_lm(TransformerConfig(**MODEL_CFG))
REF = MODEL.init(jax.random.key(1))
POLICY = MODEL.init(jax.random.key(3))  # its KL on the first batch is > 0
T = 12
APPLY = jax.jit(MODEL.apply)


def unpaired_source(n=16, seed=0):
    return ListSource(unpaired_rows(n, T, seed))


def _hand_logps(params, ids, mask, resp):
    """sum_t log p(ids[t] | ids[<t]) over the completion tokens, one row at a time."""
    logp = np.asarray(jax.nn.log_softmax(APPLY(params, ids, mask), -1), np.float64)
    return np.array([sum(logp[i, t - 1, ids[i, t]] for t in range(1, T) if resp[i, t])
                     for i in range(len(ids))])


def _kl_rows(batch):
    """TRL's mismatched pairs, by hand: prompt i + completion i - 1 (row 0 takes the last)."""
    ids, mask, resp = (np.asarray(batch[k]) for k in ("ids", "mask", "response_mask"))
    b = len(ids)
    kl = np.zeros_like(ids), np.zeros_like(mask), np.zeros_like(resp)
    for i in range(b):
        prompt = ids[i][(mask[i] == 1) & (resp[i] == 0)].tolist()
        comp = ids[(i - 1) % b][resp[(i - 1) % b] == 1].tolist()
        row = (prompt + comp)[:T]
        kl[0][i, :len(row)] = row
        kl[1][i, :len(row)] = 1
        kl[2][i, len(prompt):len(row)] = 1
    return kl


def _hand_loss(params, batch, kl=None, **weights):
    pol = _hand_logps(params, batch["ids"], batch["mask"], batch["response_mask"])
    ref = _hand_logps(REF, batch["ids"], batch["mask"], batch["response_mask"])
    kl_rows = _kl_rows(batch)
    mean_kl = (_hand_logps(params, *kl_rows) - _hand_logps(REF, *kl_rows)).mean()
    losses, _ = kto_loss(jnp.asarray(pol, jnp.float32), jnp.asarray(ref, jnp.float32),
                         np.asarray(batch["label"]), kl=mean_kl if kl is None else kl, **weights)
    return float(losses.mean()), mean_kl


def _first_batch(n, batch_size, seed=0):
    it = common.make_iterator(unpaired_source(n), batch_size=batch_size, seed=seed)
    return {k: np.asarray(v) for k, v in next(iter(it)).items()}


def _cfg(steps=1, batch_size=8, **kw):
    return kto.default_config(model=MODEL_CFG, optimizer=dict(learning_rate=1e-2),
                              train=dict(steps=steps, batch_size=batch_size,
                                         checkpoint_every=2, log_every=1, progress=False), **kw)


def _losses(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    return np.array([r["train/loss"] for r in rows if "train/loss" in r]), rows


def test_loss_is_kto_loss_on_logps_from_the_params_with_the_kl_of_mismatched_pairs():
    batch = _first_batch(16, 8)
    weights = dict(beta=0.5, desirable_weight=1.0, undesirable_weight=1.0)
    fn = jax.jit(kto.make_kto_loss(MODEL.apply, **weights))
    loss, metrics = fn(POLICY, batch, None, REF)
    expected, kl = _hand_loss(POLICY, batch, **weights)
    assert kl > 0  # the clamp does not hide the term here, and the term moves the loss
    np.testing.assert_allclose(loss, expected, rtol=1e-5)
    # kl is a mean of differences of float32 sequence log-probs (about -20 each): their
    # rounding (~1e-6 absolute) is larger than 1e-5 of the small difference
    np.testing.assert_allclose(metrics["kl"], kl, rtol=1e-5, atol=2e-6)
    with_kl0 = _hand_loss(POLICY, batch, **weights, kl=0.0)[0]
    assert abs(with_kl0 - expected) > 1e-3
    # a policy whose mismatched log-ratios average below 0: z0 is clamped at 0
    other = MODEL.init(jax.random.key(2))
    loss2, metrics2 = fn(other, batch, None, REF)
    expected2, kl2 = _hand_loss(other, batch, **weights)
    assert kl2 < 0 and float(metrics2["kl"]) == 0.0
    np.testing.assert_allclose(loss2, expected2, rtol=1e-5)
    # the weights, and the chunked log-probs (logits_chunk > 0) give the same loss
    w = dict(beta=0.5, desirable_weight=2.0, undesirable_weight=0.5)
    loss, _ = jax.jit(kto.make_kto_loss(MODEL.apply, **w))(POLICY, batch, None, REF)
    np.testing.assert_allclose(loss, _hand_loss(POLICY, batch, **w)[0], rtol=1e-5)
    chunked = make_lm(TransformerConfig(**MODEL_CFG, logits_chunk=8))
    fn_c = jax.jit(kto.make_kto_loss(chunked.apply, **weights, token_logps=True))
    np.testing.assert_allclose(fn_c(POLICY, batch, None, REF)[0], expected, rtol=1e-5)
    # gradients: the KL enters detached, as in the hand-written loss of fixed kl
    grads = jax.grad(lambda p: fn(p, batch, None, REF)[0])(POLICY)

    def fixed_kl(p):
        pol = kto.row_logps(MODEL.apply, p, batch["ids"], batch["mask"], batch["response_mask"])
        ref = kto.row_logps(MODEL.apply, REF, batch["ids"], batch["mask"],
                            batch["response_mask"])
        # the z0 the loss used (its float32 value; the float64 hand kl differs by ~1e-6)
        return kto_loss(pol, ref, batch["label"], kl=metrics["kl"], **weights)[0].mean()

    for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(jax.grad(fixed_kl)(POLICY))):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


def test_apo_zero_unpaired_has_no_reference_point():
    batch = _first_batch(16, 8)
    pol = _hand_logps(POLICY, batch["ids"], batch["mask"], batch["response_mask"])
    ref = _hand_logps(REF, batch["ids"], batch["mask"], batch["response_mask"])
    r = 0.5 * (pol - ref)
    sig = 1.0 / (1.0 + np.exp(-r))
    expected = np.where(batch["label"], 2.0 * (1.0 - sig), 0.5 * sig).mean()
    fn = kto.make_kto_loss(MODEL.apply, loss_type="apo_zero_unpaired", beta=0.5,
                           desirable_weight=2.0, undesirable_weight=0.5)
    loss, metrics = fn(POLICY, batch, None, REF)
    np.testing.assert_allclose(loss, expected, rtol=1e-5)
    assert float(metrics["kl"]) == 0.0


def _grad_norm(batch, **w):
    """|grad| at the reference (where z0 = 0) of the hand-written loss."""
    def loss(p, part):
        pol = kto.row_logps(MODEL.apply, p, part["ids"], part["mask"], part["response_mask"])
        return kto_loss(pol, jax.lax.stop_gradient(pol), part["label"], kl=0.0, **w)[0].mean()

    grads = jax.jit(jax.grad(loss))(REF, batch)
    return float(jnp.sqrt(sum((x ** 2).sum() for x in jax.tree.leaves(grads))))


def test_recipe_first_step_and_resume(tmp_path):
    """The recipe's first logged loss and gradient norm are the hand-computed ones on its first
    batch (the policy starts at the reference: every log-ratio and z0 are 0); 2 steps then 4
    equals 4 straight."""
    w = dict(beta=0.5, desirable_weight=1.5, undesirable_weight=0.75)
    for name, steps in (("resumed", 2), ("resumed", 4), ("straight", 4)):
        kto.train(_cfg(steps=steps, **w), str(tmp_path / name),
                  train_source=unpaired_source(16), ref_params=REF)
    (a, _), (b, rows) = _losses(str(tmp_path / "resumed")), _losses(str(tmp_path / "straight"))
    batch = _first_batch(16, 8)
    expected, kl = _hand_loss(REF, batch, **w)
    assert kl == 0.0
    np.testing.assert_allclose(b[0], expected, rtol=1e-5)
    np.testing.assert_allclose(rows[0]["train/grad_norm"], _grad_norm(batch, **w), rtol=1e-5)
    assert len(b) == 4 and b[-1] < b[0]
    np.testing.assert_allclose(a[-2:], b[-2:], rtol=1e-5)


def test_config_errors():
    with pytest.raises(ValueError, match="kto config: unknown loss_type 'kt'"):
        kto.validate(_cfg(loss_type="kt"))
    with pytest.raises(ValueError, match="beta must be > 0"):
        kto.validate(_cfg(beta=0.0))
    with pytest.raises(ValueError, match="desirable_weight and undesirable_weight must be >= 0"):
        kto.validate(_cfg(undesirable_weight=-1.0))
    with pytest.raises(ValueError, match="precompute_ref_logps needs kl_pairs='dataset'"):
        kto.validate(_cfg(precompute_ref_logps=True, kl_pairs="batch"))
    with pytest.raises(ValueError, match="kl_group_size with a .micro-.batch of 8"):
        kto.validate(_cfg(kl_group_size=3))
    with pytest.raises(ValueError, match="micro-.batch of 1"):
        kto.validate(kto.default_config(train=dict(batch_size=2, grad_accum_steps=2)))
    with pytest.raises(ValueError, match="unknown"):
        kto.default_config(loss="kto")
    assert kto.validate(_cfg(kl_group_size=4))["kl_group_size"] == 4


def test_loss_equals_trl_kto_loss():
    """TRL's KTOTrainer._compute_loss (TRL has no standalone KTO loss function: its loss code
    runs here on tensors, with a stub trainer: precomputed reference log-probs, a model stub
    returning the policy's log-probs, another giving the mismatched rows' log-probs)."""
    pytest.importorskip("trl")
    import collections
    import types

    import torch
    from trl.trainer.kto_trainer import KTOTrainer

    batch = _first_batch(16, 8)
    rng = np.random.default_rng(3)
    pol, ref = rng.normal(-20, 3, 8), rng.normal(-20, 3, 8)
    pol_kl, ref_kl = rng.normal(-25, 3, 8), rng.normal(-26, 3, 8)
    labels = np.asarray(batch["label"])

    class _Out:
        def __init__(self, logps):
            self.log_probs = torch.tensor(np.stack([np.zeros(8), logps], 1))
            self.entropy = torch.zeros(8, 2)
            self.mean_logits = torch.zeros(8, 2)

    def model(input_ids, **kw):  # the policy's forward over the batch's rows
        return _Out(pol)

    def kl_logps(stub, model, batch):  # the policy's forward over the mismatched rows
        return torch.tensor(pol_kl)

    class _Acc:
        device = "cpu"

        @staticmethod
        def gather_for_metrics(x):
            return x

    for loss_type in ("kto", "apo_zero_unpaired"):
        w = dict(beta=0.3, desirable_weight=1.3, undesirable_weight=0.8)
        stub = types.SimpleNamespace(
            model=types.SimpleNamespace(training=True), accelerator=_Acc(),
            aux_loss_enabled=False, precompute_ref_logps=True, calculate_KL=loss_type == "kto",
            loss_type=loss_type, _metrics={"train": collections.defaultdict(list)},
            _total_train_tokens=0, _tp_size=1, **w)
        stub._compute_kl_logps = types.MethodType(kl_logps, stub)
        inputs = {"input_ids": torch.zeros(8, 3, dtype=torch.long),
                  "attention_mask": torch.ones(8, 3, dtype=torch.long),
                  "completion_mask": torch.ones(8, 3, dtype=torch.long),
                  "label": torch.tensor(labels), "ref_logps": torch.tensor(ref),
                  "ref_KL_logps": torch.tensor(ref_kl)}
        trl_loss = float(KTOTrainer._compute_loss(stub, model, inputs, return_outputs=False))
        if loss_type == "kto":
            ours = kto_loss(jnp.asarray(pol), jnp.asarray(ref), labels,
                            kl=jnp.mean(jnp.asarray(pol_kl - ref_kl)), **w)[0].mean()
        else:
            ours = kto.apo_zero_unpaired_loss(jnp.asarray(pol), jnp.asarray(ref), labels,
                                              **w)[0].mean()
        np.testing.assert_allclose(float(ours), trl_loss, rtol=1e-5, atol=1e-6)


def test_levers_lora_chunked_logps_and_accumulation(tmp_path):
    """LoRA adapters on the reference (the frozen base is also the reference), chunked
    log-probs and two micro-batches (each with its own KL rows) in one run: the policy starts
    at the reference (loss 1 - sigma(0) = 0.5) and one batch seen every step is learnt."""
    cfg = kto.default_config(model=dict(MODEL_CFG, logits_chunk=8),
                             optimizer=dict(learning_rate=3e-2),
                             train=dict(steps=3, batch_size=8, grad_accum_steps=2, log_every=1,
                                        progress=False),
                             lora=dict(rank=4, alpha=8.0, targets=r"attn/(q|v)$"))
    out = kto.train(cfg, str(tmp_path / "lora"), train_source=unpaired_source(8), ref_params=REF)
    losses, rows = _losses(str(tmp_path / "lora"))
    assert losses[0] == pytest.approx(0.5, abs=1e-6) and losses[-1] < losses[0]
    assert rows[0]["train/kl"] == 0.0 and "adapters" in out


def test_sync_ref_mixes_the_reference_toward_the_policy_every_k_steps_and_resumes(tmp_path):
    """TR-DPO's soft update in KTO (sync_ref = {alpha, steps}): after updates 2 and 4 the
    reference is alpha * policy + (1 - alpha) * reference (the policy after that update), and
    a run stopped after step 2 resumes with the synced reference from its checkpoint (the loss
    takes it in place of the frozen one: the fit_recipe path the direct recipe's TR-DPO test
    checks through the losses)."""
    alpha = 0.25
    cfg = dict(sync_ref={"alpha": alpha, "steps": 2})
    workdir = str(tmp_path / "sync")
    first = kto.train(_cfg(steps=2, **cfg), workdir, train_source=unpaired_source(16),
                      ref_params=REF)
    second = kto.train(_cfg(steps=4, **cfg), workdir, train_source=unpaired_source(16),
                       ref_params=REF)
    assert second["fit"].resumed_from == 2
    assert first["fit"].compiles == second["fit"].compiles == 1  # no retrace
    ref2, ref4 = first["fit"].state.extra["ref"], second["fit"].state.extra["ref"]
    for before, after, policy in ((REF, ref2, first["params"]), (ref2, ref4, second["params"])):
        for b, a, p in zip(jax.tree.leaves(before), jax.tree.leaves(after),
                           jax.tree.leaves(policy)):
            np.testing.assert_allclose(np.asarray(a), alpha * np.asarray(p)
                                       + (1 - alpha) * np.asarray(b), rtol=1e-6, atol=1e-7)
    assert not np.allclose(jax.tree.leaves(ref4)[0], jax.tree.leaves(REF)[0])


def test_sync_ref_config_errors():
    with pytest.raises(ValueError, match="kto config: sync_ref is"):
        kto.validate(_cfg(sync_ref={"alpha": 0.5}))
    with pytest.raises(ValueError, match="0 < alpha <= 1"):
        kto.validate(_cfg(sync_ref={"alpha": 1.5, "steps": 2}))
    with pytest.raises(ValueError, match="sync_ref.steps=0 must be a positive int"):
        kto.validate(_cfg(sync_ref={"alpha": 0.5, "steps": 0}))
    with pytest.raises(ValueError, match="frozen base"):
        kto.validate(_cfg(sync_ref={"alpha": 0.5, "steps": 2}, lora={"rank": 2}))
