"""Constrained RL by dual ascent (alignax.algorithms.lagrangian): hand-computed steps, the
projection at 0 and lambda_max, the shaped reward, and the two ways the state is carried."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from alignax.algorithms import lagrangian
from alignax.algorithms.small_pg import reinforce_loss, rl_batch
from alignax.train.small import fit_small


def test_dual_ascent_matches_hand_computation():
    state = lagrangian.init_dual_state(0.5)
    # lambda = 0.5 + 2 * (0.3 - 0.1) = 0.9
    new = jax.jit(lambda s, c: lagrangian.dual_ascent(s, c, threshold=0.1, learning_rate=2.0))(
        state, jnp.float32(0.3))
    np.testing.assert_allclose(new["multiplier"], 0.9, rtol=1e-6)
    np.testing.assert_allclose(new["cost"], 0.3, rtol=1e-6)
    # below the budget lambda shrinks, and is projected onto >= 0: 0.9 + 2 (0 - 0.1) = 0.7,
    # then 0.7 + 10 (0 - 0.1) = -0.3 -> 0
    new = lagrangian.dual_ascent(new, 0.0, threshold=0.1, learning_rate=2.0)
    np.testing.assert_allclose(new["multiplier"], 0.7, rtol=1e-6)
    new = lagrangian.dual_ascent(new, 0.0, threshold=0.1, learning_rate=10.0)
    assert float(new["multiplier"]) == 0.0
    # the upper bound
    capped = lagrangian.dual_ascent(lagrangian.init_dual_state(1.0), 1.0, threshold=0.0,
                                    learning_rate=5.0, max_multiplier=3.0)
    assert float(capped["multiplier"]) == 3.0


def test_dual_ascent_is_elementwise_over_runs():
    state = lagrangian.init_dual_state(jnp.zeros(3))
    new = lagrangian.dual_ascent(state, jnp.array([0.5, 0.0, 0.2]), threshold=0.2,
                                 learning_rate=jnp.array([1.0, 1.0, 0.0]))
    # [0 + 0.3, max(0, -0.2), 0 (eta 0)]
    np.testing.assert_allclose(new["multiplier"], [0.3, 0.0, 0.0], atol=1e-7)
    np.testing.assert_allclose(new["cost"], [0.5, 0.0, 0.2], atol=1e-7)


def test_init_rejects_negative_multiplier():
    with pytest.raises(ValueError, match="must be >= 0"):
        lagrangian.init_dual_state(-1.0)


def test_lagrangian_rewards():
    r = lagrangian.lagrangian_rewards(jnp.array([1.0, 0.0, 1.0]), jnp.array([1.0, 1.0, 0.0]),
                                      0.25)
    np.testing.assert_allclose(r, [0.75, -0.25, 1.0])


def test_reward_fn_uses_the_multiplier_before_its_step():
    rewards = np.array([1.0, 1.0, 0.0, 0.0], np.float32)
    costs = np.array([1.0, 0.0, 1.0, 1.0], np.float32)
    fn = lagrangian.lagrangian_reward_fn(lambda ro: (rewards, costs), threshold=0.25,
                                         learning_rate=2.0)
    shaped, state = fn(None, lagrangian.init_dual_state(0.5))
    np.testing.assert_allclose(shaped, rewards - 0.5 * costs)
    # E[c] = 0.75: lambda = 0.5 + 2 (0.75 - 0.25) = 1.5
    np.testing.assert_allclose(state["multiplier"], 1.5, rtol=1e-6)
    shaped, state = fn(None, state)
    np.testing.assert_allclose(shaped, rewards - 1.5 * costs, rtol=1e-6)
    with pytest.raises(ValueError, match="returned costs of shape"):
        lagrangian.lagrangian_reward_fn(lambda ro: (rewards, costs[:2]), threshold=0.0,
                                        learning_rate=1.0)(None, state)


def test_lagrangian_loss_enforces_the_budget_in_fit_small(tmp_path):
    """A two-armed bandit: arm 1 pays 1 but costs 1, arm 0 pays 0.2 and costs 0. Without the
    dual step (eta = 0, lambda stays 0) the policy takes arm 1; with E[c] <= 0.2 dual ascent
    raises lambda above the price gap 0.8 and the costly arm becomes rare."""
    def inner(params, batch, lam):
        def reward_fn(x, data):
            return jnp.where(x == 1, 1.0, 0.2) - lam * (x == 1)
        loss, metrics = reinforce_loss(
            lambda p, key, n: jax.random.categorical(key, p["logits"], shape=(n,)),
            lambda p, x: jax.nn.log_softmax(p["logits"])[x], reward_fn,
            num_samples=32)(params, batch)
        # the same draws as the loss's (same key, same sampler)
        x = jax.random.categorical(batch["rng"], params["logits"], shape=(32,))
        return loss, {**metrics, "cost": jnp.mean(x == 1).astype(jnp.float32)}

    def train(eta, name):
        return fit_small(str(tmp_path / name),
                         loss_fn=lagrangian.lagrangian_loss(inner, threshold=0.2,
                                                            learning_rate=eta),
                         init_params={"logits": jnp.zeros(2)}, tx=optax.adam(0.1),
                         num_steps=200, seeds=[0], batch_fn=rl_batch, steps_per_log=10,
                         loss_state=lagrangian.init_dual_state(), plots=False)

    free, constrained = train(0.0, "free"), train(0.5, "constrained")
    p_free = float(jax.nn.softmax(free.params["logits"][0])[1])
    p_constrained = float(jax.nn.softmax(constrained.params["logits"][0])[1])
    assert p_free > 0.9, p_free
    assert float(free.loss_state["multiplier"][0]) == 0.0
    assert max(row["lagrange_multiplier"] for row in constrained.history) > 0.8
    assert p_constrained < 0.2, p_constrained
    with pytest.raises(KeyError, match="no 'missing'"):
        lagrangian.lagrangian_loss(inner, threshold=0.2, learning_rate=0.5,
                                   cost_metric="missing")(
            {"logits": jnp.zeros(2)}, {"rng": jax.random.key(0)}, lagrangian.init_dual_state())
