"""PPO, RAFT and online DPO: pieces against hand computations, one update's direction, smoke."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from alignax.algorithms.direct import make_direct_loss
from alignax.algorithms import online, online_dpo, ppo, rejection
from alignax.models.transformer import TransformerConfig, make_lm
from alignax.train.state import TrainState
from alignax.train.step import make_train_step

CFG = TransformerConfig(vocab_size=16, d_model=32, n_layers=1, n_heads=2, d_ff=64, max_len=16)
MODEL = make_lm(CFG)
PARAMS = MODEL.init(jax.random.key(0))
PROMPTS = np.array([[4, 5, 6], [7, 8, 9], [10, 11, 12], [13, 14, 15]], np.int32)
PMASK = np.ones_like(PROMPTS, bool)


def _value_model():
    from alignax.models.heads import make_token_reward_model

    return make_token_reward_model(CFG)


VALUE_MODEL = _value_model()
VALUE_PARAMS = VALUE_MODEL.init(jax.random.key(1))


def _reward(rollout):
    return (rollout.responses == 3).astype(jnp.float32).mean(-1)


@pytest.fixture(scope="module")
def rollout():
    """2 prompts x 2 samples of 4 tokens from PARAMS: one sampler compile for the module."""
    return online.make_rollout(MODEL, num_samples=2, max_new_tokens=4)(
        PARAMS, PROMPTS[:2], PMASK[:2], jax.random.key(2))


# The evaluations as one jitted program each (not op by op): the same values, one compile.
_logps = jax.jit(lambda p, ids, mask: online.response_logps(MODEL.apply, p, ids, mask, 4))
_values = jax.jit(lambda p, ids, mask: ppo.response_values(VALUE_MODEL.apply, p, ids, mask, 4))


def _fresh(params):
    return jax.tree.map(jnp.copy, params)


def test_ppo_token_rewards_put_the_score_on_the_last_valid_token():
    old = jnp.array([[-1.0, -1.0, -1.0], [-2.0, -2.0, -2.0]])
    ref = jnp.array([[-1.5, -1.0, -0.5], [-2.0, -2.0, -2.0]])
    mask = jnp.array([[True, True, True], [True, True, False]])
    r = ppo.token_rewards(jnp.array([1.0, 2.0]), old, ref, mask, kl_coef=0.1)
    np.testing.assert_allclose(r, [[-0.05, 0.0, 1.05], [0.0, 2.0, 0.0]], rtol=1e-6)


def test_ppo_update_moves_policy_with_the_advantage_and_fits_the_value(rollout):
    value_model, vparams = VALUE_MODEL, VALUE_PARAMS
    values = _values(vparams, rollout.ids, rollout.mask)
    adv = jnp.where(rollout.response_mask, jnp.array([1.0, -1.0, -1.0, 1.0])[:, None], 0.0)
    returns = values + 1.0
    batch = online.training_batch(rollout, adv)
    batch.update(old_values=values, returns=returns)
    tx = optax.sgd(0.3)
    step = make_train_step(ppo.make_ppo_loss(MODEL.apply, value_model.apply), tx)
    params = {"policy": _fresh(PARAMS), "value": _fresh(vparams)}
    state, m = step(TrainState.create(params, tx, jax.random.key(0)), batch)
    before = _logps(PARAMS, rollout.ids, rollout.mask)
    after = _logps(state.params["policy"], rollout.ids, rollout.mask)
    delta = np.asarray(jnp.where(rollout.response_mask, after - before, 0).sum(-1))
    assert (np.sign(delta) == [1, -1, -1, 1]).all(), delta
    new_values = _values(state.params["value"], rollout.ids, rollout.mask)
    m_ = rollout.response_mask
    assert float(jnp.where(m_, (new_values - returns) ** 2, 0).sum()) < float(
        jnp.where(m_, (values - returns) ** 2, 0).sum())
    assert float(m["value_loss"]) > 0


def test_ppo_smoke(tmp_path):
    value_model = VALUE_MODEL
    out = ppo.train(ppo.default_config(iterations=3, prompts_per_iteration=4, max_new_tokens=4,
                                       minibatches=2),
                    str(tmp_path), model=MODEL, value_model=value_model, init_params=PARAMS,
                    init_value_params=VALUE_PARAMS, ref_params=PARAMS,
                    prompt_ids=PROMPTS, prompt_mask=PMASK, reward_fn=_reward)
    for key in ("reward", "kl_ref_seq", "value_loss", "clip_fraction", "entropy",
                "response_length"):
        assert key in out["metrics"] and np.isfinite(out["metrics"][key])
    assert len(out["history"]) == 3


def test_raft_keeps_the_best_sample_and_fine_tunes_toward_it(tmp_path, rollout):
    np.testing.assert_array_equal(rejection.best_rows([0.1, 0.5, 0.2, 0.9, 0.9, 0.0], 3),
                                  [1, 3])
    batch = {"ids": rollout.ids[:1], "mask": rollout.mask[:1],
             "response_mask": rollout.response_mask[:1]}
    tx = optax.sgd(0.5)
    step = make_train_step(rejection.make_response_nll_loss(MODEL.apply), tx)
    state, _ = step(TrainState.create(_fresh(PARAMS), tx, jax.random.key(0)), batch)
    lp = lambda p: float(_logps(p, batch["ids"], batch["mask"]).sum())  # noqa: E731
    assert lp(state.params) > lp(PARAMS)
    out = rejection.train(rejection.default_config(iterations=2, prompts_per_iteration=2,
                                                   num_samples=3, max_new_tokens=4),
                          str(tmp_path), model=MODEL, init_params=PARAMS, prompt_ids=PROMPTS,
                          prompt_mask=PMASK, reward_fn=_reward)
    assert out["metrics"]["reward_kept"] >= out["metrics"]["reward"]


@pytest.mark.slow  # an end-to-end training run: the system tier (make test-slow)
def test_online_dpo_pairs_loss_and_smoke(tmp_path, rollout):
    chosen, rejected, valid = online_dpo.pick_pairs([0.1, 0.5, 0.2, 1.0, 1.0, 1.0], 3)
    np.testing.assert_array_equal(chosen, [1, 3])
    np.testing.assert_array_equal(rejected, [0, 3])
    np.testing.assert_array_equal(valid, [True, False])
    ref_seq = jnp.zeros(4)
    rows = np.array([0, 2, 1, 3])  # pairs (0, 1) and (2, 3)
    batch = {"ids": rollout.ids[rows], "mask": rollout.mask[rows],
             "response_mask": rollout.response_mask[rows], "ref_logps": ref_seq,
             "weight": jnp.array([1.0, 0.0])}
    loss_fn = make_direct_loss(MODEL.apply, "dpo", {"beta": 0.5})  # the offline wrapper
    jit_loss = jax.jit(loss_fn)
    loss, _ = jit_loss(PARAMS, batch, None)
    # the zero-weight pair does not count
    only_first = {k: (v[:1] if k == "weight" else v[np.array([0, 2])])
                  for k, v in batch.items()}
    np.testing.assert_allclose(loss, jit_loss(PARAMS, only_first, None)[0], rtol=1e-5)
    tx = optax.sgd(0.3)
    state, _ = make_train_step(loss_fn, tx)(TrainState.create(_fresh(PARAMS), tx,
                                                              jax.random.key(0)), batch)

    def margin(p):
        lp = _logps(p, batch["ids"], batch["mask"])
        seq = jnp.where(batch["response_mask"], lp, 0).sum(-1)
        return float(seq[0] - seq[2])

    assert margin(state.params) > margin(PARAMS)
    for judge in ("reward_fn", "implicit"):
        out = online_dpo.train(
            online_dpo.default_config(iterations=2, prompts_per_iteration=2, num_samples=3,
                                      max_new_tokens=4, judge=judge),
            str(tmp_path / judge), model=MODEL, init_params=PARAMS, ref_params=PARAMS,
            prompt_ids=PROMPTS, prompt_mask=PMASK, reward_fn=_reward)
        assert np.isfinite(out["metrics"]["loss"])
    with pytest.raises(ValueError, match="num_samples"):
        online_dpo.train({"num_samples": 1}, str(tmp_path / "x"), model=MODEL,
                         init_params=PARAMS, ref_params=PARAMS, prompt_ids=PROMPTS,
                         prompt_mask=PMASK, reward_fn=_reward)
