"""Policy gradient for small explicit policies: Gaussian helpers, REINFORCE to the KL optimum,
tabular rollouts and tabular REINFORCE."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from alignax.algorithms import small_pg
from alignax.train.small import fit_small


def test_gaussian_log_prob_and_kl():
    p = {"mean": jnp.array([0.5, -1.0]), "log_std": jnp.log(jnp.array([2.0, 0.5]))}
    x = jnp.array([[1.0, 0.0], [-0.3, -1.2]])
    std = np.array([2.0, 0.5])
    expected = np.sum(-0.5 * ((np.asarray(x) - [0.5, -1.0]) / std) ** 2 - np.log(std)
                      - 0.5 * np.log(2 * np.pi), -1)
    np.testing.assert_allclose(small_pg.gaussian_log_prob(p, x), expected, rtol=1e-5)
    ref = small_pg.gaussian_init(2)
    assert float(small_pg.gaussian_kl(ref, ref)) == pytest.approx(0.0, abs=1e-7)
    # Monte Carlo E_p[log p - log ref] against the exact KL
    xs = small_pg.gaussian_sample(p, jax.random.key(0), 200_000)
    mc = jnp.mean(small_pg.gaussian_log_prob(p, xs) - small_pg.gaussian_log_prob(ref, xs))
    assert float(mc) == pytest.approx(float(small_pg.gaussian_kl(p, ref)), rel=0.02)


def test_reinforce_reaches_the_kl_regularised_optimum(tmp_path):
    """Linear reward g.x with KL to N(0, I): the optimum of E[r] - beta KL is N(g / beta, I)."""
    g, beta = jnp.array([1.0, -0.5, 0.0]), 2.0
    ref = small_pg.gaussian_init(3)
    loss = small_pg.reinforce_loss(
        small_pg.gaussian_sample, small_pg.gaussian_log_prob, lambda x, d: x @ g,
        num_samples=64, kl_coef=beta,
        ref_log_prob_fn=lambda x: small_pg.gaussian_log_prob(ref, x))
    fit = fit_small(str(tmp_path), loss_fn=loss, has_aux=True,
                    init_params=lambda key: small_pg.gaussian_init(3),
                    tx=optax.adam(0.05), num_steps=400, batch_fn=small_pg.rl_batch,
                    seeds=[0], steps_per_log=100)
    mean = np.asarray(fit.params["mean"])
    std = np.exp(np.asarray(fit.params["log_std"]))
    np.testing.assert_allclose(mean, np.broadcast_to(np.asarray(g) / beta, mean.shape), atol=0.1)
    np.testing.assert_allclose(std, 1.0, atol=0.15)
    assert fit.history[-1]["objective"] > fit.history[0]["objective"]


def test_reinforce_needs_two_samples_and_a_reference_for_kl():
    with pytest.raises(ValueError, match="num_samples"):
        small_pg.reinforce_loss(small_pg.gaussian_sample, small_pg.gaussian_log_prob,
                                lambda x, d: x.sum(-1), num_samples=1)
    with pytest.raises(ValueError, match="ref_log_prob_fn"):
        small_pg.reinforce_loss(small_pg.gaussian_sample, small_pg.gaussian_log_prob,
                                lambda x, d: x.sum(-1), num_samples=4, kl_coef=0.1)


def _chain():
    """States 0 -> 1 -> 2 (terminal): action 1 moves right, action 0 stays."""
    p = np.zeros((3, 2, 3), np.float32)
    for s in range(3):
        p[s, 0, s] = 1.0
        p[s, 1, min(s + 1, 2)] = 1.0
    p[2] = 0.0
    p[2, :, 2] = 1.0
    terminal = jnp.array([False, False, True])
    start = jnp.array([1.0, 0.0, 0.0])
    return jnp.asarray(p), terminal, start


def test_tabular_rollouts_follow_the_policy_and_stop_at_terminal():
    p, terminal, start = _chain()
    right = jnp.array([[-50.0, 50.0]] * 3)  # always move right
    states, actions, valid = small_pg.tabular_rollouts(p, terminal, start, right,
                                                       jax.random.key(0), 4, 5)
    np.testing.assert_array_equal(states, np.tile([0, 1, 2, 2, 2, 2], (4, 1)))
    np.testing.assert_array_equal(valid, np.tile([True, True, False, False, False], (4, 1)))
    np.testing.assert_array_equal(actions, np.tile([1, 1, 0, 0, 0], (4, 1)))


def test_tabular_reinforce_learns_to_reach_the_goal(tmp_path):
    p, terminal, start = _chain()
    reward = jnp.zeros((3, 2, 3)).at[:, :, 2].set(1.0) - 0.1  # goal +1, step cost 0.1
    loss = small_pg.tabular_reinforce_loss(p, terminal, start, lambda d: reward,
                                           num_episodes=32, horizon=6)
    fit = fit_small(str(tmp_path), loss_fn=loss, has_aux=True,
                    init_params={"logits": jnp.zeros((3, 2))}, tx=optax.adam(0.1),
                    num_steps=200, batch_fn=small_pg.rl_batch, seeds=[0], steps_per_log=50)
    probs = np.asarray(jax.nn.softmax(fit.params["logits"][0], -1))
    assert probs[0, 1] > 0.9 and probs[1, 1] > 0.9
    assert fit.history[-1]["return"] == pytest.approx(0.8, abs=0.05)


# ---------------------------------------------------------------------------------------------
# group_pg_loss (GRPO for explicit policies)


def _space_and_reward():
    from alignax.models import sequence_table as st
    space = st.SequenceSpace(vocab_size=2, length=2)
    reward = jnp.array([0.0, 1.0, 0.5, 2.0])  # per sequence
    return st, space, reward


def test_group_pg_gradient_is_the_scaled_policy_gradient():
    """E[(r_i - group mean) grad log pi(y_i)] = (1 - 1/G) grad E_pi[r] (Dr. GRPO advantage)."""
    st, space, reward = _space_and_reward()
    params = st.init_table(space, 1, key=jax.random.key(1), scale=0.5)
    sample_fn, log_prob_fn, _ = small_pg.sequence_table_policy(space)
    group = 4
    loss = small_pg.group_pg_loss(sample_fn, log_prob_fn,
                                  lambda x, y, d: reward[y], group_size=group,
                                  advantage="dr_grpo")
    prompts = jnp.ones((40_000, 1))  # one prompt, many independent groups
    grad = jax.grad(lambda p: loss(p, {"rng": jax.random.key(2),
                                       "data": {"prompts": prompts}})[0])(params)
    exact = jax.grad(lambda p: -st.expectation(space, p, reward, prompts[:1])[0])(params)
    for k in ("bias", "weight"):
        np.testing.assert_allclose(grad[k], (1 - 1 / group) * exact[k], atol=0.01)


def test_group_pg_reaches_the_kl_regularised_optimum(tmp_path):
    """Exact KL to a uniform reference: the fixed point is pi* ∝ exp((1 - 1/G) r / beta)."""
    st, space, reward = _space_and_reward()
    beta, group = 1.0, 8
    ref = st.init_table(space, 1)  # F >= 1: orbax cannot checkpoint a zero-size leaf
    sample_fn, log_prob_fn, kl_fn = small_pg.sequence_table_policy(space)
    loss = small_pg.group_pg_loss(sample_fn, log_prob_fn, lambda x, y, d: reward[y],
                                  group_size=group, advantage="dr_grpo", kl_coef=beta,
                                  kl_fn=kl_fn)
    data = {"prompts": jnp.ones((64, 1)), "ref_params": ref}
    fit = fit_small(str(tmp_path), loss_fn=loss, has_aux=True,
                    init_params=lambda key: st.init_table(space, 1), data=data,
                    tx=optax.adam(0.05), num_steps=600, batch_fn=small_pg.rl_batch,
                    seeds=[0], steps_per_log=100)
    params = jax.tree.map(lambda a: a[0], fit.params)
    probs = np.exp(np.asarray(st.sequence_log_probs(space, params, jnp.ones(1))))
    target = np.exp((1 - 1 / group) * np.asarray(reward) / beta)
    np.testing.assert_allclose(probs, target / target.sum(), atol=0.03)
    assert fit.history[-1]["reward"] > fit.history[0]["reward"]
    assert fit.history[-1]["kl"] > 0


def test_group_pg_callable_advantage_metrics_and_errors():
    st, space, reward = _space_and_reward()
    params = st.init_table(space, 0)
    sample_fn, log_prob_fn, _ = small_pg.sequence_table_policy(space)
    seen = {}

    def adv(r, data):
        seen["shape"] = r.shape
        return jnp.ones_like(r)  # every sample pushed up equally: zero gradient for a softmax

    def reward_fn(x, y, d):
        return reward[y], {"hits": jnp.mean(y == 3)}

    loss = small_pg.group_pg_loss(sample_fn, log_prob_fn, reward_fn, group_size=3,
                                  advantage=adv)
    batch = {"rng": jax.random.key(0), "data": {"prompts": jnp.zeros((5, 0))}}
    value, metrics = loss(params, batch)
    assert seen["shape"] == (5, 3)
    assert set(metrics) == {"reward", "kl", "reward_std", "reward_hits"}
    assert float(metrics["kl"]) == 0.0
    # the prompt_fn draws the update's prompts
    drawn = small_pg.group_pg_loss(sample_fn, log_prob_fn, lambda x, y, d: reward[y],
                                   group_size=2, prompt_fn=lambda k, d: d["pool"][:2])
    _, m = drawn(params, {"rng": jax.random.key(0), "data": {"pool": jnp.zeros((7, 0))}})
    assert np.isfinite(float(m["reward"]))
    with pytest.raises(ValueError, match="group_size"):
        small_pg.group_pg_loss(sample_fn, log_prob_fn, reward_fn, group_size=1)
    with pytest.raises(ValueError, match="kl_fn"):
        small_pg.group_pg_loss(sample_fn, log_prob_fn, reward_fn, group_size=2, kl_coef=0.1)
    bad = small_pg.group_pg_loss(sample_fn, log_prob_fn, lambda x, y, d: reward[y][:, :1],
                                 group_size=2)
    with pytest.raises(ValueError, match="rewards"):
        bad(params, batch)


def test_group_pg_reward_key_gives_the_reward_fn_a_fresh_key():
    st, space, reward = _space_and_reward()
    params = st.init_table(space, 0)
    sample_fn, log_prob_fn, _ = small_pg.sequence_table_policy(space)

    def noisy(x, y, d, key):
        return reward[y] + jax.random.normal(key, y.shape)

    loss = jax.jit(small_pg.group_pg_loss(sample_fn, log_prob_fn, noisy, group_size=2,
                                          reward_key=True))
    batch = {"rng": jax.random.key(0), "data": {"prompts": jnp.zeros((3, 0))}}
    _, m1 = loss(params, batch)
    _, m2 = loss(params, {**batch, "rng": jax.random.key(1)})
    assert float(m1["reward"]) != float(m2["reward"])
    # the samples do not depend on the flag (the reward key is derived apart from them)
    plain = jax.jit(small_pg.group_pg_loss(sample_fn, log_prob_fn, lambda x, y, d: reward[y],
                                           group_size=2))
    keyed = jax.jit(small_pg.group_pg_loss(sample_fn, log_prob_fn,
                                           lambda x, y, d, k: reward[y], group_size=2,
                                           reward_key=True))
    np.testing.assert_allclose(plain(params, batch)[0], keyed(params, batch)[0])
