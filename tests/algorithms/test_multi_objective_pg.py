"""Multi-objective GRPO with fixed, gradient-based and hypervolume-guided weights as loss state;
PaCo-RL's group-centred advantage with a global std."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from alignax.algorithms import multi_objective_pg as mo
from alignax.algorithms import small_pg
from alignax.models import sequence_table as st
from alignax.rewards import aggregate
from alignax.rewards.pareto_jax import hypervolume_multipliers
from alignax.train.small import fit_small

SPACE = st.SequenceSpace(3, 2)  # 9 responses
G = 4


def _policy():
    sample, log_prob, _ = small_pg.sequence_table_policy(SPACE)
    return sample, log_prob


def _rewards(prompts, responses, data):
    """Three objectives of a response: token 0 first, token 1 last, 'both tokens are 2'."""
    tok = jnp.asarray(SPACE.sequences)[responses]  # [M, G, L]
    return jnp.stack([(tok[..., 0] == 0), (tok[..., 1] == 1),
                      (tok == 2).all(-1)]).astype(jnp.float32)


def _batch(key=0):
    return {"rng": jax.random.key(key), "data": {"prompts": jnp.ones((2, 1))}}


def _params(seed=0):
    return st.init_table(SPACE, 1, key=jax.random.key(seed), scale=0.5)


def test_weight_update_equals_the_aggregate_rule_and_the_advantage_by_hand():
    g = jnp.array([[1.0, 0.0, 0.5], [0.2, 1.0, 0.0], [1.0, 1.0, 1.0]])
    w = jnp.array([0.2, 0.3, 0.5])
    np.testing.assert_allclose(mo.exp_weight_update(w, mo.influence(g), step_size=0.7),
                               aggregate.gradient_weight_update(w, g, step_size=0.7), rtol=1e-6)
    r = jnp.array([[1.0, 3.0], [2.0, 2.0]])  # group means 2, 2; batch std 1/sqrt(2)
    np.testing.assert_allclose(mo.group_centred_global_std(r),
                               [[-np.sqrt(2), np.sqrt(2)], [0.0, 0.0]], rtol=1e-5)


def test_fixed_one_hot_weights_are_the_single_reward_grpo_loss():
    sample, log_prob = _policy()
    multi = mo.multi_objective_pg_loss(sample, log_prob, _rewards, group_size=G)
    single = small_pg.group_pg_loss(sample, log_prob,
                                    lambda p, y, d: _rewards(p, y, d)[1], group_size=G)
    state = mo.init_weight_state([0.0, 1.0, 0.0])
    g_multi, g_single, (_, metrics, new) = jax.jit(lambda p: (
        jax.grad(lambda q: multi(q, _batch(), state)[0])(p),
        jax.grad(lambda q: single(q, _batch())[0])(p), multi(p, _batch(), state)))(_params())
    for a, b in zip(jax.tree.leaves(g_multi), jax.tree.leaves(g_single)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(new.weights, state.weights)  # fixed: the weights stay
    assert int(new.step) == 1 and metrics["weight_1"] == 1.0


def test_log_tamed_aggregation_with_the_global_std_advantage_is_paco_grpo():
    """The loss with aggregation="log_tamed" and group_centred_global_std equals
    group_pg_loss on the log-tamed sum of the same responses' rewards."""
    sample, log_prob = _policy()
    w = jnp.array([0.5, 1.0, 2.0])

    def tamed(p, y, d):
        r = _rewards(p, y, d)
        return aggregate.log_tamed_sum(r.reshape(3, -1), w).reshape(r.shape[1:])

    multi = mo.multi_objective_pg_loss(sample, log_prob, _rewards, group_size=G,
                                       aggregation="log_tamed",
                                       advantage=mo.group_centred_global_std)
    single = small_pg.group_pg_loss(sample, log_prob, tamed, group_size=G,
                                    advantage=mo.group_centred_global_std)
    state = mo.init_weight_state(w)  # normalised to sum 1: scale the reference the same
    w = w / w.sum()
    g_multi, g_single = jax.jit(lambda p: (
        jax.grad(lambda q: multi(q, _batch(), state)[0])(p),
        jax.grad(lambda q: single(q, _batch())[0])(p)))(_params())
    for a, b in zip(jax.tree.leaves(g_multi), jax.tree.leaves(g_single)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


def test_gradient_weights_follow_the_per_objective_gradients_after_each_window():
    sample, log_prob = _policy()
    loss = mo.multi_objective_pg_loss(sample, log_prob, _rewards, group_size=G,
                                      weighting="gradient", step_size=3.0, window=2)
    loss = jax.jit(loss)
    state = mo.init_weight_state(jnp.ones(3))
    params = _params()
    # the per-objective gradients by hand: the GRPO surrogate with r_k's advantages alone
    ones = [small_pg.group_pg_loss(sample, log_prob,
                                   lambda p, y, d, k=k: _rewards(p, y, d)[k], group_size=G)
            for k in range(3)]

    @jax.jit
    def by_hand(p):
        grads = [jax.grad(lambda q, one=one: one(q, _batch())[0])(p) for one in ones]
        return jnp.stack([jnp.concatenate([x.ravel() for x in jax.tree.leaves(g)])
                          for g in grads])

    s = mo.influence(by_hand(params))
    assert float(jnp.abs(s).max()) > 0
    _, _, mid = loss(params, _batch(), state)  # first update of the window: accumulate only
    np.testing.assert_allclose(mid.weights, state.weights)
    np.testing.assert_allclose(mid.influence, s, rtol=1e-4, atol=1e-7)
    _, _, end = loss(params, _batch(), mid)  # same batch again: the window's mean is s
    np.testing.assert_allclose(end.weights, mo.exp_weight_update(state.weights, s,
                                                                 step_size=3.0), rtol=1e-4)
    np.testing.assert_allclose(end.influence, 0.0)
    # a per-row step size in the data overrides the argument
    batch = _batch()
    batch["data"]["weight_step_size"] = jnp.float32(0.0)
    _, _, frozen = loss(params, batch, mid)
    np.testing.assert_allclose(frozen.weights, state.weights, rtol=1e-6)


def _batch_vectors(sample, params, key):
    """The objective rewards [K, M, G] of the responses the loss samples with batch key."""
    responses = sample(params, jax.random.split(jax.random.key(key))[1], jnp.ones((2, 1)), G)
    return _rewards(None, responses, None)


def test_hypervolume_weighting_multiplies_the_next_update_by_the_checkpoint_gain():
    sample, log_prob = _policy()
    loss = jax.jit(mo.multi_objective_pg_loss(sample, log_prob, _rewards, group_size=G,
                                              weighting="hypervolume", advantage="rloo"))
    sample = jax.jit(sample, static_argnums=3)
    state = mo.init_weight_state(jnp.ones(3), buffer_size=3)
    # the initial model nearly always answers "1 0" (every objective ~0); later checkpoints
    # are uniform and beat it on all three
    bad = st.init_table(SPACE, 1)
    bad["bias"] = bad["bias"].at[0, 1].set(4.0).at[2, 0].set(4.0)
    _, m0, s1 = loss(bad, _batch(0), state)
    v0 = _batch_vectors(sample, bad, 0).reshape(3, -1).mean(1)
    params = st.init_table(SPACE, 1)
    np.testing.assert_allclose(s1.reference, v0, rtol=1e-6)  # the initial model
    np.testing.assert_allclose(s1.buffer[0], v0, rtol=1e-6)  # starts the buffer
    assert np.asarray(s1.filled).tolist() == [1.0, 0.0, 0.0]
    assert float(m0["hv_multiplier"]) == 1.0 and float(s1.multiplier) == 1.0
    for key in (1, 2, 3, 4):  # checkpoints after the first: gain over the buffer
        _, m, s2 = loss(params, _batch(key), s1)
        r = _batch_vectors(sample, params, key)
        v = r.reshape(3, -1).mean(1)
        front = [row for row, f in zip(np.asarray(s1.buffer), np.asarray(s1.filled)) if f]
        gain = (aggregate.hypervolume(front + [np.asarray(v)], np.asarray(v0))
                - aggregate.hypervolume(front, np.asarray(v0)))
        assert float(s2.multiplier) == pytest.approx(0.5 + 1.5 * np.tanh(gain), rel=1e-5)
        # this update's rewards were scaled by the previous checkpoint's multiplier
        expected = float(s1.multiplier) * float(jnp.tensordot(s1.weights, r, axes=1).mean())
        assert float(m["reward"]) == pytest.approx(expected, rel=1e-5)
        assert float(np.sum(s2.filled)) == float(np.sum(s1.filled)) + (gain > 0)
        s1 = s2
    assert float(np.sum(s1.filled)) >= 2  # some checkpoint extended the front


def test_per_sample_hypervolume_multipliers():
    sample, log_prob = _policy()
    loss = jax.jit(mo.multi_objective_pg_loss(sample, log_prob, _rewards, group_size=G,
                                              weighting="hypervolume", hv_mode="sample",
                                              advantage="rloo"))
    sample = jax.jit(sample, static_argnums=3)
    params = _params()
    _, _, s1 = loss(params, _batch(0), mo.init_weight_state(jnp.ones(3), buffer_size=3))
    _, m, _ = loss(params, _batch(2), s1)
    r = _batch_vectors(sample, params, 2)
    mult = hypervolume_multipliers(s1.buffer, r.reshape(3, -1).T, s1.reference, s1.filled > 0)
    expected = (mult * jnp.tensordot(s1.weights, r, axes=1).reshape(-1)).mean()
    assert float(m["reward"]) == pytest.approx(float(expected), rel=1e-5)
    assert float(m["hv_multiplier"]) == pytest.approx(float(mult.mean()), rel=1e-5)


def test_a_grid_of_weights_runs_as_rows_of_one_fit_small(tmp_path):
    """Per-row initial weights and step sizes from the data; the state is checkpointed."""
    sample, log_prob = _policy()
    loss = mo.multi_objective_pg_loss(sample, log_prob, _rewards, group_size=G,
                                      weighting="gradient")
    data = {"prompts": jnp.ones((2, 2, 1)),
            "objective_weights": jnp.array([[1.0, 0.0, 0.0], [1.0, 1.0, 2.0]]),
            "weight_step_size": jnp.array([0.0, 1.0])}
    fit = fit_small(str(tmp_path), loss_fn=loss, init_params=lambda k: st.init_table(SPACE, 1),
                    tx=optax.adam(0.1), num_steps=6, data=data, per_seed_data=True,
                    seeds=[0, 1], batch_fn=small_pg.rl_batch,
                    loss_state=mo.init_weight_state(jnp.ones(3)), steps_per_log=3)
    w = np.asarray(fit.loss_state.weights)
    np.testing.assert_allclose(w[0], [1.0, 0.0, 0.0], atol=1e-6)  # eta 0: the row's weights
    assert not np.allclose(w[1], [0.25, 0.25, 0.5]) and w[1].sum() == pytest.approx(1.0)
    assert np.asarray(fit.loss_state.step).tolist() == [6, 6]


def test_bad_arguments():
    sample, log_prob = _policy()
    with pytest.raises(ValueError, match="weighting"):
        mo.multi_objective_pg_loss(sample, log_prob, _rewards, group_size=G, weighting="pareto")
    with pytest.raises(ValueError, match="hv_mode"):
        mo.multi_objective_pg_loss(sample, log_prob, _rewards, group_size=G, hv_mode="front")
    with pytest.raises(ValueError, match="aggregation"):
        mo.multi_objective_pg_loss(sample, log_prob, _rewards, group_size=G, aggregation="max")
    with pytest.raises(ValueError, match="group_size"):
        mo.multi_objective_pg_loss(sample, log_prob, _rewards, group_size=1)
    loss = mo.multi_objective_pg_loss(sample, log_prob, _rewards, group_size=G)
    with pytest.raises(ValueError, match=r"K=2"):
        loss(_params(), _batch(), mo.init_weight_state(jnp.ones(2)))
