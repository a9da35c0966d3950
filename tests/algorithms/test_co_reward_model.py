"""The co-trained reward models of CRM (peer review): the loss against a hand computation at
three points of the drop-rate curriculum, gradients of each model only from the pairs its peer
selected, a 2-step train on tiny transformers that resumes to the same params, the checkpoint
start (two score heads on one backbone) and the one-line config errors."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from alignax.algorithms import co_reward_model as crm
from alignax.algorithms import pretrained, reward_model
from alignax.models.transformer import TransformerConfig, make_reward_model
from tests.test_utils import pair_source, write_tiny_checkpoint

MODEL_CFG = dict(vocab_size=32, d_model=16, n_layers=1, n_heads=2, d_ff=32, max_len=8)

# model a's and b's margins on 4 pairs (the rejected rewards are 0)
MARGINS_A = np.array([2.0, -1.0, 0.5, 1.0], np.float32)
MARGINS_B = np.array([-0.5, 3.0, 1.0, 0.0], np.float32)


def _table_batch():
    """Reward = a table entry per first token: pair i's chosen starts with token i, its rejected
    with token 4 + i, so r_c[i] = w[i] and r_r[i] = w[4 + i]."""
    ids = np.arange(8, dtype=np.int32)[:, None] * np.ones((1, 3), np.int32)
    mask = np.ones((4, 3), np.int32)
    batch = {"chosen_ids": ids[:4], "rejected_ids": ids[4:], "chosen_mask": mask,
             "rejected_mask": mask}
    params = {m: {"w": jnp.asarray(np.concatenate([margins, np.zeros(4, np.float32)]))}
              for m, margins in zip(crm.MODELS, (MARGINS_A, MARGINS_B))}
    return (lambda p, ids, mask: p["w"][ids[:, 0]]), params, batch


def _softplus(x):
    return np.logaddexp(0.0, x)


@pytest.mark.parametrize("step, tau, for_a, for_b", [
    (0, 0.0, [0, 1, 2, 3], [0, 1, 2, 3]),  # no drop at t = 0
    (2, 0.25, [1, 2, 3], [0, 2, 3]),       # half way up the ramp: keep round(0.75 * 4) = 3
    (9, 0.5, [1, 2], [0, 3]),              # past the warmup: tau_max, keep 2
])
def test_loss_equals_the_hand_computation_along_the_curriculum(step, tau, for_a, for_b):
    apply_fn, params, batch = _table_batch()
    loss_fn = jax.jit(crm.make_co_reward_loss(apply_fn, max_drop_rate=0.5, warmup_steps=4))
    loss, m = loss_fn(params, batch, None, step=jnp.int32(step))
    # a trains on b's most confident pairs and b on a's; -log sigma(m) = softplus(-m)
    want_a = _softplus(-MARGINS_A[for_a]).mean()
    want_b = _softplus(-MARGINS_B[for_b]).mean()
    np.testing.assert_allclose(float(loss), want_a + want_b, rtol=1e-6)
    np.testing.assert_allclose([m["a_loss"], m["b_loss"]], [want_a, want_b], rtol=1e-6)
    assert float(m["drop_rate"]) == pytest.approx(tau)
    assert float(m["kept_fraction"]) == len(for_a) / 4
    assert float(m["overlap"]) == pytest.approx(len(set(for_a) & set(for_b)) / len(for_a))
    # a: margins > 0 on pairs 0, 2, 3; b: on 1, 2 and a tie (counts 1/2) on 3
    assert float(m["a_accuracy"]) == 0.75 and float(m["b_accuracy"]) == 0.625
    assert float(m["mean_accuracy"]) == 1.0  # a + b: 1.5, 2, 1.5, 1
    assert float(m["agreement"]) == 0.25  # both prefer chosen only on pair 2


def test_gradients_of_each_model_come_only_from_the_pairs_its_peer_selected():
    model = make_reward_model(TransformerConfig(**MODEL_CFG))
    pair = crm.pair_model(model)
    params = pair.init(jax.random.key(0))
    records = [pair_source(n=8)[i] for i in range(8)]
    batch = {k: np.stack([r[k] for r in records]) for k in
             ("chosen_ids", "chosen_mask", "rejected_ids", "rejected_mask")}
    loss_fn = crm.make_co_reward_loss(model.apply, max_drop_rate=0.5, warmup_steps=0)
    grads = jax.jit(jax.grad(lambda p: loss_fn(p, batch, None, step=jnp.int32(0))[0]))(params)
    margins = jax.jit(lambda p: {m: jnp.subtract(*reward_model.pair_rewards(
        model.apply, p[m], batch)) for m in crm.MODELS})(params)
    plain = jax.jit(jax.grad(lambda p, b: reward_model.make_reward_loss(model.apply)(
        p, b, None)[0]))
    a, b = crm.MODELS
    picked = {}
    for m, peer in ((a, b), (b, a)):
        picked[m] = np.sort(np.argsort(-np.asarray(margins[peer]), kind="stable")[:4])
        want = plain(params[m], {k: v[picked[m]] for k, v in batch.items()})
        # the same float32 gradient summed over the picked pairs in another order (a masked
        # mean over the batch vs a mean over the gathered rows): a few ulps, atol for ~0 entries
        jax.tree.map(lambda g, w: np.testing.assert_allclose(g, w, rtol=2e-5, atol=1e-7),
                     grads[m], want)
    # the two models start apart (different keys) and select different pairs for each other
    assert set(picked[a]) != set(picked[b])


def _cfg(steps, model=MODEL_CFG, eval_every=1, **extra):
    return dict(model=model, optimizer=dict(learning_rate=1e-2),
                peer_review=dict(max_drop_rate=0.5, warmup_steps=2),
                train=dict(steps=steps, batch_size=4, checkpoint_every=1,
                           eval_every=eval_every, log_every=1, progress=False), **extra)


def _history(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def test_two_step_train_runs_and_resumes_to_identical_params(tmp_path):
    source = pair_source(n=12)
    held = {k: np.stack([source[i][k] for i in range(6)]) for k in source[0]}
    kw = dict(train_source=source, eval_pairs=held, validation_rows=2, seed=3)
    whole = crm.train(_cfg(2), str(tmp_path / "whole"), **kw)
    crm.train(_cfg(1), str(tmp_path / "split"), **kw)
    resumed = crm.train(_cfg(2), str(tmp_path / "split"), **kw)
    assert resumed["fit"].resumed_from == 1
    jax.tree.map(lambda x, y: np.testing.assert_array_equal(np.asarray(x), np.asarray(y)),
                 whole["params"], resumed["params"])
    assert set(whole["params"]) == set(crm.MODELS)
    rows = _history(str(tmp_path / "whole"))
    assert rows == _history(str(tmp_path / "split"))
    train_rows = [r for r in rows if "train/drop_rate" in r]
    # the curriculum follows the update count, restored with the checkpoint
    assert [r["train/drop_rate"] for r in train_rows] == [0.0, 0.25]
    for key in ("val_a_accuracy", "val_b_accuracy", "val_mean_accuracy", "test_mean_accuracy"):
        assert 0.0 <= rows[-1][f"eval/{key}"] <= 1.0
    a, b = (whole["params"][m]["score"]["kernel"] for m in crm.MODELS)
    assert not np.array_equal(a, b)


@pytest.fixture(scope="module")
def world_ckpt(tmp_path_factory):
    return write_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "lm", n_layers=1,
                                 d_model=16)


def test_lora_trains_adapters_and_the_new_heads_of_both_models(tmp_path, world_ckpt):
    model = {"path": world_ckpt}
    cfg = _cfg(1, model=model, eval_every=0, lora=dict(rank=2, alpha=4.0, full="score/"))
    out = crm.train(cfg, str(tmp_path / "lora"), train_source=pair_source(n=8), seed=0)
    assert set(out["adapters"]) == set(crm.MODELS)
    start = crm.starting_params(crm.validate({"model": model}), seed=0)[1]
    for m in crm.MODELS:
        assert set(out["adapters"][m]) == {"decoder", "score"}
        assert not np.allclose(out["params"][m]["score"]["kernel"], start[m]["score"]["kernel"])


def test_checkpoint_start_gives_two_heads_on_one_backbone(world_ckpt, tmp_path):
    cfg = crm.validate({"model": {"path": world_ckpt}})
    model, params = crm.starting_params(cfg, seed=5)
    for m, seed in zip(crm.MODELS, (5, 5 + crm.PEER_SEED_OFFSET)):
        _, want = pretrained.load_pretrained(cfg["model"], "reward", seed=seed)
        jax.tree.map(np.testing.assert_array_equal, params[m], want)
    a, b = (params[m] for m in crm.MODELS)
    assert a["decoder"] is b["decoder"] and not np.array_equal(a["score"]["kernel"],
                                                              b["score"]["kernel"])
    rm = write_tiny_checkpoint(tmp_path / "rm", kind="reward", n_layers=1, d_model=16)
    with pytest.raises(ValueError, match="sequence-classification checkpoint: both"):
        crm.starting_params(crm.validate({"model": {"path": rm}}))
    with pytest.raises(ValueError, match="model.path and init_params"):
        crm.starting_params(cfg, init_params={m: {} for m in crm.MODELS})


@pytest.mark.parametrize("config, match", [
    ({"peer_review": {"max_drop_rate": 1.0}}, r"peer_review.max_drop_rate=1.0 must be in"),
    ({"peer_review": {"max_drop_rate": -0.1}}, r"max_drop_rate=-0.1 must be in \[0, 1\)"),
    ({"peer_review": {"warmup_steps": -1}}, r"peer_review.warmup_steps=-1 must be an int >= 0"),
    ({"peer_review": {"drop": 0.1}}, r"unknown co-reward-model config key 'peer_review.drop'"),
    ({"loss": "bradly_terry"}, r"unknown loss 'bradly_terry'; did you mean 'bradley_terry'"),
    ({"loss_kwargs": {"beta": 1.0}}, r"loss_kwargs: bradley_terry_loss takes no \['beta'\]"),
])
def test_config_errors_are_one_line_and_name_the_key(config, match):
    with pytest.raises(ValueError, match=match) as e:
        crm.validate(config)
    assert "\n" not in str(e.value)


def test_bad_starting_params_and_eval_split_are_refused():
    cfg = crm.validate({"model": MODEL_CFG})
    with pytest.raises(ValueError, match=r"init_params must be \{'rm_a'"):
        crm.starting_params(cfg, init_params={"policy": {}})
    _, _, batch = _table_batch()
    with pytest.raises(ValueError, match=r"validation_rows=4 must be in \[0, 4\)"):
        crm.make_co_pairwise_eval(None, batch, validation_rows=4)
