"""GRPO-S difficulty scaling, BRPO bootstrapped references and multi-objective rewards in the
policy-gradient recipe, and the objective mixer on hand-made numbers."""

import json
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from alignax.algorithms import policy_gradient
from alignax.algorithms.objectives import objective_mixer
from alignax.models.transformer import TransformerConfig, make_lm
from alignax.rewards import aggregate

CFG = TransformerConfig(vocab_size=16, d_model=32, n_layers=1, n_heads=2, d_ff=64, max_len=16)
MODEL = make_lm(CFG)
PARAMS = MODEL.init(jax.random.key(0))
PROMPTS = np.array([[4, 5, 6], [7, 8, 9], [10, 11, 12], [13, 14, 15]], np.int32)
ARGS = dict(model=MODEL, init_params=PARAMS, ref_params=PARAMS, prompt_ids=PROMPTS,
            prompt_mask=np.ones_like(PROMPTS, bool))


def _config(**kw):
    return policy_gradient.default_config(**{
        "iterations": 2, "prompts_per_iteration": 2, "num_samples": 4, "max_new_tokens": 4,
        "kl_coef": 0.0,
        "optimizer": dict(name="adamw", learning_rate=1e-2, kwargs=dict(weight_decay=0.0)), **kw})


def _text(path):
    with open(path) as f:
        return f.read()


def _token_rate(token):
    return lambda rollout: (rollout.responses == token).astype(jnp.float32).mean(-1)


def _two_objectives(rollout):
    return jnp.stack([_token_rate(3)(rollout), _token_rate(4)(rollout)])


# --- the objective mixer ----------------------------------------------------------------------

def test_fixed_mixer_is_the_weighted_sum_and_checks_shapes():
    mixer = objective_mixer([0.25, 2.0])
    r = jnp.array([[1.0, 0.0, 2.0], [0.5, 1.0, -1.0]])
    state = mixer.init()
    np.testing.assert_allclose(mixer.combine(r, state), [1.25, 2.0, -1.5], rtol=1e-6)
    assert mixer.update(r, state) is state
    with pytest.raises(ValueError, match=r"\[K=2, N\]"):
        mixer.combine(jnp.ones(3), state)
    with pytest.raises(ValueError, match="weighting"):
        objective_mixer([1.0], weighting="pareto")
    with pytest.raises(ValueError, match="non-negative"):
        objective_mixer([1.0, -1.0])


def test_log_tamed_mixer_matches_the_aggregate():
    mixer = objective_mixer([1.0, 1.0], aggregation="log_tamed")
    r = jnp.array([[1.0, 1.1, 0.9, 1.0], [0.0, 9.0, 0.1, 3.0]])
    np.testing.assert_allclose(mixer.combine(r, mixer.init()),
                               aggregate.log_tamed_sum(r, jnp.ones(2)), rtol=1e-6)


def test_gradient_mixer_moves_weight_to_the_objective_that_helps_both():
    mixer = objective_mixer([1.0, 1.0], weighting="gradient", step_size=0.5)
    state = mixer.init()
    assert np.asarray(state.weights).tolist() == [0.5, 0.5]
    grads = jnp.array([[1.0, 1.0], [1.0, -0.5]])  # <g0, g0 + g1> = 2.5 > <g1, g0 + g1> = 1.75
    new = mixer.update(None, state, gradients=grads).weights
    expected = np.exp(0.5 * np.array([2.5, 1.75]))
    np.testing.assert_allclose(new, expected / expected.sum(), rtol=1e-5)


def test_hypervolume_mixer_rewards_samples_that_extend_the_front():
    mixer = objective_mixer([1.0, 1.0], weighting="hypervolume")
    state = mixer.init()
    r0 = jnp.array([[0.0, 0.2], [0.0, 0.2]])  # mean (0.1, 0.1) becomes the reference point
    np.testing.assert_allclose(mixer.combine(r0, state), [0.0, 0.4], rtol=1e-6)  # no multiplier
    state = mixer.update(r0, state)
    np.testing.assert_allclose(state.reference, [0.1, 0.1])
    assert np.isnan(state.front).all()
    state = mixer.update(jnp.array([[0.5, 0.5], [0.3, 0.3]]), state)  # mean (0.5, 0.3)
    np.testing.assert_allclose(state.front[0], [0.5, 0.3])
    assert np.isnan(state.front[1:]).all()
    r = jnp.array([[0.6, 0.05, 0.4], [0.6, 0.9, 0.2]])
    out = np.asarray(mixer.combine(r, state))
    gain = 0.5 * 0.5 - 0.4 * 0.2  # the first sample's box (0.1..0.6)^2 minus the front's
    np.testing.assert_allclose(out[0], 1.2 * (0.5 + 1.5 * np.tanh(gain)), rtol=1e-5)
    assert out[1] == pytest.approx(0.95 * 0.5)  # below the reference in objective 0: m = 0.5
    assert out[2] == pytest.approx(0.6 * 0.5)  # dominated by the front: m = 0.5


# --- the recipe -------------------------------------------------------------------------------

def test_objectives_with_one_hot_weights_equal_the_scalar_run(tmp_path):
    scalar = policy_gradient.train(_config(), str(tmp_path / "a"), reward_fn=_token_rate(3),
                                   **ARGS)
    mixed = policy_gradient.train(_config(objective_weights=[1.0, 0.0]), str(tmp_path / "b"),
                                  reward_fn=_two_objectives, **ARGS)
    for a, b in zip(scalar["history"], mixed["history"]):
        for key in ("reward", "loss", "grad_norm", "advantage_std"):
            assert a[key] == pytest.approx(b[key], rel=1e-6, abs=1e-7), key
        assert b["objective_0"] == pytest.approx(a["reward"], rel=1e-6)
        assert "objective_1" in b and b["objective_weight_1"] == 0.0


@pytest.mark.slow  # an end-to-end training run: the system tier (make test-slow)
@pytest.mark.parametrize("weighting", ["gradient", "hypervolume"])
def test_dynamic_weighting_runs_and_resumes_exactly(tmp_path, weighting):
    config = _config(iterations=4, checkpoint_every=1, objective_weights=[1.0, 1.0],
                     objective_weighting=weighting, objective_step_size=1.0)
    args = dict(reward_fn=_two_objectives, **ARGS)
    full = policy_gradient.train(config, str(tmp_path / "a"), **args)
    weights = [[m[f"objective_weight_{k}"] for k in range(2)] for m in full["history"]]
    if weighting == "gradient":
        assert all(sum(w) == pytest.approx(1.0, rel=1e-5) for w in weights)
        assert weights[-1] != weights[0], weights
    policy_gradient.train({**config, "iterations": 2}, str(tmp_path / "b"), **args)
    resumed = policy_gradient.train(config, str(tmp_path / "b"), **args)
    assert resumed["resumed_from"] == 2
    # the weights and front are checkpointed state: the resumed run is the same run
    assert _text(tmp_path / "b" / "metrics.jsonl") == _text(tmp_path / "a" / "metrics.jsonl")
    assert resumed["history"] == full["history"]


def test_grpo_s_scale_zero_freezes_the_policy_and_one_changes_nothing(tmp_path):
    plain = policy_gradient.train(_config(), str(tmp_path / "a"), reward_fn=_token_rate(3),
                                  **ARGS)
    ones = policy_gradient.train(_config(), str(tmp_path / "b"), reward_fn=_token_rate(3),
                                 difficulty_fn=lambda rollout, r: jnp.ones(2), **ARGS)
    for a, b in zip(plain["history"], ones["history"]):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-6, abs=1e-7)
    zeros = policy_gradient.train(_config(), str(tmp_path / "c"), reward_fn=_token_rate(3),
                                  difficulty_fn=lambda rollout, r: jnp.zeros(2), **ARGS)
    assert all(m["grad_norm"] == 0.0 for m in zeros["history"])
    for x, y in zip(jax.tree.leaves(zeros["params"]), jax.tree.leaves(PARAMS)):
        np.testing.assert_array_equal(x, y)


def test_brpo_judges_every_sample_against_a_reference_of_its_group(tmp_path):
    index, rows = policy_gradient.bootstrap_reference_rows(np.random.default_rng(0), 3, 4)
    assert index.shape == (3,) and rows.shape == (12,)
    np.testing.assert_array_equal(rows // 4, np.repeat(np.arange(3), 4))
    np.testing.assert_array_equal(rows[::4] % 4, index)
    seen = []

    def judge(rollout, reference_rows):
        r = np.asarray(_token_rate(3)(rollout))
        seen.append(np.asarray(reference_rows))
        return np.sign(r - r[reference_rows])

    out = policy_gradient.train(_config(advantage="brpo"), str(tmp_path), judge_fn=judge,
                                **ARGS)
    assert len(seen) == 2 and all((s // 4 == np.repeat(np.arange(2), 4)).all() for s in seen)
    assert "judge_outcome" in out["metrics"]
    with pytest.raises(ValueError, match="judge_fn"):
        policy_gradient.train(_config(advantage="brpo"), str(tmp_path / "x"),
                              reward_fn=_token_rate(3), **ARGS)
    with pytest.raises(ValueError, match="needs a reward_fn"):
        policy_gradient.train(_config(), str(tmp_path / "y"), **ARGS)


def test_a_stateful_reward_keeps_its_state_in_the_checkpoint(tmp_path):
    # PPO-C style: rewards shaped around a running mean of batch rewards, which must survive a
    # resume (kept in a closure it restarted at 0 and the resumed run diverged)
    base = _token_rate(3)

    def reward_fn(rollout, state):
        r = jnp.asarray(base(rollout), jnp.float32)
        mean = 0.5 * r.mean() + 0.5 * state["mean"]
        return r - mean, {"mean": mean, "calls": state["calls"] + 1}

    config = _config(iterations=4, checkpoint_every=1)
    init = {"mean": jnp.float32(0.25), "calls": jnp.int32(0)}
    args = dict(reward_fn=reward_fn, reward_state=init, **ARGS)
    full = policy_gradient.train(config, str(tmp_path / "a"), **args)
    assert int(full["state"].controls["reward"]["calls"]) == 4
    # the state's scalars after each iteration are logged
    logged = [json.loads(line) for line in _text(tmp_path / "a" / "metrics.jsonl").splitlines()]
    calls = [m["reward_state/calls"] for m in logged if "reward_state/calls" in m]
    assert calls == [1.0, 2.0, 3.0, 4.0]
    assert full["metrics"]["reward_state/mean"] == float(full["state"].controls["reward"]["mean"])
    policy_gradient.train({**config, "iterations": 2}, str(tmp_path / "b"), **args)
    resumed = policy_gradient.train(config, str(tmp_path / "b"), **args)
    assert resumed["resumed_from"] == 2
    assert int(resumed["state"].controls["reward"]["calls"]) == 4
    assert _text(tmp_path / "b" / "metrics.jsonl") == _text(tmp_path / "a" / "metrics.jsonl")
    np.testing.assert_array_equal(resumed["state"].controls["reward"]["mean"],
                                  full["state"].controls["reward"]["mean"])
    with pytest.raises(ValueError, match="reward_state needs a reward_fn"):
        policy_gradient.train({**config, "advantage": "brpo"}, str(tmp_path / "c"),
                              reward_state=init, judge_fn=lambda r, rows: rows * 0.0, **ARGS)
