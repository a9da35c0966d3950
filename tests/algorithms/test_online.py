"""Online pieces (rollout, advantages, KL control, policy loss) and the GRPO-family recipe."""

import functools
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from alignax.algorithms import kl_control, online, policy_gradient
from alignax.models.transformer import TransformerConfig, make_lm
from alignax.train.state import TrainState
from alignax.train.step import make_train_step
from alignax.train.writers import read_metrics

CFG = TransformerConfig(vocab_size=16, d_model=32, n_layers=1, n_heads=2, d_ff=64, max_len=16)
MODEL = make_lm(CFG)
PARAMS = MODEL.init(jax.random.key(0))
PROMPTS = jnp.array([[0, 3, 4], [5, 6, 7]], jnp.int32)
PROMPT_MASK = PROMPTS != 0


def _response_logps(response_len):
    """online.response_logps of MODEL as one jitted program (one compile, not op by op)."""
    return jax.jit(lambda p, ids, mask: online.response_logps(MODEL.apply, p, ids, mask,
                                                              response_len))


_logps4 = _response_logps(4)


@pytest.fixture(scope="module")
def rollout4():
    """2 samples of 4 tokens for each prompt from PARAMS: one sampler compile for the module."""
    return online.make_rollout(MODEL, num_samples=2, max_new_tokens=4)(
        PARAMS, PROMPTS, PROMPT_MASK, jax.random.key(2))


def test_rollout_logps_equal_the_training_forward():
    rollout = online.make_rollout(MODEL, num_samples=3, max_new_tokens=5, stop_tokens=(2,))(
        PARAMS, PROMPTS, PROMPT_MASK, jax.random.key(1))
    assert rollout.ids.shape == (6, 8) and rollout.response_mask.shape == (6, 5)
    np.testing.assert_array_equal(rollout.prompt_index, [0, 0, 0, 1, 1, 1])
    logps = _response_logps(5)(PARAMS, rollout.ids, rollout.mask)
    np.testing.assert_allclose(np.where(rollout.response_mask, logps, 0.0), rollout.old_logps,
                               atol=1e-5)


def test_advantage_estimators():
    r = jnp.array([1.0, 0.0, 0.0, 1.0, 1.0, 1.0])
    np.testing.assert_allclose(online.compute_advantages("dr_grpo", r, 3),
                               [2 / 3, -1 / 3, -1 / 3, 0, 0, 0], atol=1e-6)
    np.testing.assert_allclose(online.compute_advantages("rloo", r, 3),
                               [1.0, -0.5, -0.5, 0, 0, 0], atol=1e-6)
    grpo = online.compute_advantages("grpo", r, 3)
    assert float(grpo[0]) == pytest.approx((2 / 3) / np.std([1, 0, 0]), rel=1e-4)
    np.testing.assert_allclose(online.compute_advantages("reinforce", r, 3), r)
    assert np.isfinite(np.asarray(online.compute_advantages("bnpo", r, 3))).all()
    assert abs(float(online.compute_advantages("reinforce_pp", r, 3).mean())) < 1e-6
    with pytest.raises(ValueError, match="unknown advantage"):
        online.compute_advantages("ppo", r, 3)


def test_adaptive_kl_control_moves_toward_the_target():
    ctl = kl_control.adaptive_kl_control(0.1, target=1.0, horizon=100)
    state = ctl.init()
    assert state.coef.dtype == jnp.float32
    state = ctl.update(state, 3.0, 10)
    assert float(state.coef) == pytest.approx(0.1 * 1.02)  # error clipped at +0.2
    state = ctl.update(state, 0.5, 10)
    assert float(state.coef) == pytest.approx(0.1 * 1.02 * 0.98)  # clipped at -0.2
    state = ctl.update(state, 1.1, 10)
    assert float(state.coef) == pytest.approx(0.1 * 1.02 * 0.98 * 1.01, rel=1e-6)  # unclipped
    fixed = kl_control.adaptive_kl_control(0.1)
    assert float(fixed.update(fixed.init(), 100.0, 10).coef) == pytest.approx(0.1)
    # jit-able: the controller is pure
    jitted = jax.jit(ctl.update, static_argnums=2)(ctl.init(), jnp.float32(3.0), 10)
    assert float(jitted.coef) == pytest.approx(0.1 * 1.02)


def test_kl_penalized_rewards():
    logps = jnp.array([[-1.0, -2.0], [-1.0, -1.0]])
    ref = jnp.array([[-1.5, -2.0], [-1.0, -3.0]])
    mask = jnp.array([[True, True], [True, False]])
    out = kl_control.kl_penalized_rewards(jnp.array([1.0, 1.0]), logps, ref, mask, coef=0.5)
    np.testing.assert_allclose(out, [1.0 - 0.5 * 0.5, 1.0], rtol=1e-6)


def _update_once(rollout, advantages, loss="ppo_clip", **kw):
    batch = online.training_batch(rollout, advantages)
    tx = optax.sgd(0.5)
    step = make_train_step(policy_gradient.make_policy_loss(MODEL.apply, loss=loss, **kw), tx)
    params = jax.tree.map(jnp.copy, PARAMS)  # the step donates its state
    state, metrics = step(TrainState.create(params, tx, jax.random.key(0)), batch)
    before = _logps4(PARAMS, rollout.ids, rollout.mask)
    after = _logps4(state.params, rollout.ids, rollout.mask)
    m = rollout.response_mask
    return np.asarray(jnp.where(m, after - before, 0.0).sum(-1)), metrics


@pytest.mark.parametrize("loss", ["ppo_clip", "gspo"])
def test_one_update_moves_the_policy_in_the_direction_of_the_advantage(loss, rollout4):
    adv = jnp.array([1.0, -1.0, -1.0, 1.0])
    delta, metrics = _update_once(rollout4, adv, loss=loss)
    # The gradient step raises the advantage-weighted log-probs (to first order, lr * |grad|^2).
    # Each sample's own change is not bound to follow its advantage's sign: samples share
    # parameters, and a sample's gradient can point against the others'.
    adv = np.asarray(adv)
    assert float(np.dot(delta, adv)) > 0, delta
    assert delta[adv > 0].mean() > delta[adv < 0].mean(), delta
    # on-policy first step: the ratio is 1 and nothing is clipped
    assert float(metrics["ratio"]) == pytest.approx(1.0, abs=1e-5)
    assert float(metrics["clip_fraction"]) == 0.0
    assert float(metrics["entropy"]) > 0


def test_kl_term_pulls_toward_the_reference(rollout4):
    rollout = rollout4
    other = MODEL.init(jax.random.key(7))
    ref = _logps4(other, rollout.ids, rollout.mask)
    batch = online.training_batch(rollout, jnp.zeros(4), ref_logps=ref)
    # jitted: the loss and its gradient as one program each (op by op they compile per primitive)
    loss_fn = jax.jit(functools.partial(policy_gradient.make_policy_loss(MODEL.apply),
                                        kl_coef=1.0))
    (loss, metrics), grads = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))(PARAMS, batch,
                                                                                 None)
    assert float(metrics["kl"]) > 0 and float(loss) == pytest.approx(float(metrics["kl"]),
                                                                      rel=1e-4)
    # a small step against the gradient lowers the KL
    moved = jax.tree.map(lambda p, g: p - 0.05 * g, PARAMS, grads)
    assert float(loss_fn(moved, batch, None)[1]["kl"]) < float(metrics["kl"])


def _reward_token_3(rollout):
    return (rollout.responses == 3).astype(jnp.float32).mean(-1)


def test_grpo_recipe_raises_the_reward_and_resumes(tmp_path):
    prompts = np.tile(np.array([[4, 5, 6]], np.int32), (8, 1))
    prompts[:, 1] = np.arange(8) + 4
    config = policy_gradient.default_config(
        iterations=12, prompts_per_iteration=4, num_samples=4, max_new_tokens=6,
        kl_coef=0.01, checkpoint_every=6, epochs=2,
        optimizer=dict(name="adamw", learning_rate=1e-2, warmup_steps=0, schedule="constant",
                       clip_norm=1.0, kwargs=dict(weight_decay=0.0)))
    args = dict(model=MODEL, init_params=PARAMS, ref_params=PARAMS, prompt_ids=prompts,
                prompt_mask=np.ones_like(prompts, bool), reward_fn=_reward_token_3)
    out = policy_gradient.train(config, str(tmp_path / "a"), **args)
    hist = [m["reward"] for m in out["history"]]
    assert np.mean(hist[-3:]) > np.mean(hist[:3]) + 0.1, hist
    for key in ("kl", "entropy", "clip_fraction", "response_length", "advantage_std"):
        assert key in out["metrics"]
    # wall-clock numbers are kept out of metrics.jsonl, in timings.jsonl
    assert not any(k.startswith("time/") or k.endswith("_s") for k in out["history"][0])
    with open(os.path.join(tmp_path, "a", "timings.jsonl")) as f:
        timings = [json.loads(line) for line in f]
    assert [t["step"] for t in timings] == list(range(1, 13))
    assert all(t["time/rollout_s"] > 0 and t["time/update_s"] > 0 for t in timings)
    # stopped after 6 iterations and restarted: the same metrics file, byte for byte
    policy_gradient.train({**config, "iterations": 6}, str(tmp_path / "b"), **args)
    resumed = policy_gradient.train(config, str(tmp_path / "b"), **args)
    assert resumed["resumed_from"] == 6
    a = read_metrics(str(tmp_path / "a" / "metrics.jsonl"))
    b = read_metrics(str(tmp_path / "b" / "metrics.jsonl"))
    assert [m["step"] for m in b] == list(range(1, 13))
    assert b == a and resumed["history"] == out["history"]


def test_recipe_rejects_bad_config():
    with pytest.raises(ValueError, match="unknown policy-gradient config"):
        policy_gradient.default_config(nope=1)
    with pytest.raises(ValueError, match="kl_in"):
        policy_gradient.train({"kl_in": "both"}, "/tmp/unused", model=MODEL, init_params=PARAMS,
                              ref_params=PARAMS, prompt_ids=np.ones((8, 2), np.int32),
                              prompt_mask=np.ones((8, 2), bool), reward_fn=_reward_token_3)
