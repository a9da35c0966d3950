"""The latent world model: Gaussian KL and NLL against closed forms, KL balancing's gradient
split, the two objectives' gradients, RePo's dual step by hand, imagined returns and the
linear probe."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from alignax.algorithms import lagrangian
from alignax.algorithms import world_model as wm

CFG = wm.WorldModelConfig(obs_dim=3, action_dim=2, latent_dim=2, hidden=8)


def _batch(key=0, b=2, t=4):
    k = jax.random.split(jax.random.key(key), 4)
    return {"obs": jax.random.normal(k[0], (b, t, 3)),
            "prev_actions": jax.random.uniform(k[1], (b, t, 2), minval=-1, maxval=1),
            "rewards": jax.random.normal(k[2], (b, t)), "key": k[3]}


def test_gaussian_kl_closed_form():
    # KL(N(1, 2^2) || N(0, 1)) = log(1/2) + (4 + 1) / 2 - 1/2
    kl = wm.gaussian_kl(jnp.array([1.0]), jnp.array([2.0]), jnp.array([0.0]), jnp.array([1.0]))
    assert float(kl) == pytest.approx(math.log(0.5) + 2.0, rel=1e-6)
    rng = np.random.default_rng(0)
    mq, mp = rng.normal(size=(4, 3)), rng.normal(size=(4, 3))
    sq, sp = rng.uniform(0.2, 2, (4, 3)), rng.uniform(0.2, 2, (4, 3))
    ref = np.sum(np.log(sp / sq) + (sq ** 2 + (mq - mp) ** 2) / (2 * sp ** 2) - 0.5, -1)
    np.testing.assert_allclose(wm.gaussian_kl(mq, sq, mp, sp), ref, rtol=1e-5)
    assert float(wm.gaussian_kl(mq, sq, mq, sq).max()) == pytest.approx(0.0, abs=1e-6)


def test_balanced_kl_value_and_gradient_split():
    mq, sq, mp, sp = jnp.array([0.5, -1.0]), jnp.array([0.7, 1.2]), jnp.zeros(2), jnp.ones(2)
    value = wm.balanced_kl(mq, sq, mp, sp, alpha=0.8)
    assert float(value) == pytest.approx(float(wm.gaussian_kl(mq, sq, mp, sp)), rel=1e-6)
    full_q, full_p = jax.grad(wm.gaussian_kl, argnums=(0, 2))(mq, sq, mp, sp)
    g_q, g_p = jax.grad(lambda a, b: wm.balanced_kl(a, sq, b, sp, alpha=0.8), argnums=(0, 1))(
        mq, mp)
    np.testing.assert_allclose(g_q, 0.2 * full_q, rtol=1e-5)
    np.testing.assert_allclose(g_p, 0.8 * full_p, rtol=1e-5)


def test_gaussian_nll_closed_form():
    nll = wm.gaussian_nll(jnp.array(2.0), jnp.array(0.5), 0.5)
    assert float(nll) == pytest.approx(0.5 * 9.0 + math.log(0.5) + 0.5 * math.log(2 * math.pi))


def test_observe_shapes_and_means():
    params = wm.init_params(jax.random.key(0), CFG)
    b = _batch()
    out = wm.observe(params, CFG, b["obs"][0], b["prev_actions"][0], None)
    assert out["z"].shape == (4, 2)
    np.testing.assert_array_equal(out["z"], out["post_mean"])
    assert float(out["post_std"].min()) >= CFG.min_std
    with pytest.raises(ValueError, match="prev_actions"):
        wm.observe(params, CFG, b["obs"][0], b["prev_actions"][0, :, :1], None)


def test_losses_gradients_finite_and_terms():
    params = wm.init_params(jax.random.key(1), CFG)
    b = _batch()
    (loss, met), g = jax.jit(jax.value_and_grad(
        lambda p: wm.reconstruction_loss(p, b, cfg=CFG), has_aux=True))(params)
    assert float(loss) == pytest.approx(float(met["obs_nll"] + met["reward_nll"] + met["kl"]),
                                        rel=1e-5)
    assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(g))
    (loss, met), g = jax.value_and_grad(
        lambda p: wm.repo_loss(p, b, 2.0, cfg=CFG), has_aux=True)(params)
    assert float(loss) == pytest.approx(float(met["reward_nll"] + 2.0 * met["kl"]), rel=1e-5)
    assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(g))
    assert float(jnp.abs(g["decoder"]["l1"]["w"]).max()) == 0.0  # RePo reconstructs nothing
    # with beta = 0 only the reward term trains: the prior gets no gradient
    g0 = jax.grad(lambda p: wm.repo_loss(p, b, 0.0, cfg=CFG)[0])(params)
    assert float(jnp.abs(g0["prior"]["l1"]["w"]).max()) == 0.0
    assert float(jnp.abs(g0["reward"]["l2"]["w"]).max()) > 0.0
    with pytest.raises(ValueError, match="decoder"):
        wm.reconstruction_loss({k: v for k, v in params.items() if k != "decoder"}, b, cfg=CFG)


def test_repo_dual_step_by_hand():
    params = wm.init_params(jax.random.key(2), CFG)
    b = _batch()
    loss_fn = wm.repo_dual_loss(cfg=CFG, epsilon=0.5, dual_lr=0.1)
    state = lagrangian.init_dual_state(1.0)
    loss, met, new = loss_fn(params, b, state)
    kl = float(wm.repo_loss(params, b, 1.0, cfg=CFG)[1]["kl"])
    assert float(met["kl"]) == pytest.approx(kl, rel=1e-6)
    assert float(new["multiplier"]) == pytest.approx(max(0.0, 1.0 + 0.1 * (kl - 0.5)), rel=1e-5)
    assert float(met["lagrange_multiplier"]) == 1.0  # the update used the beta before the step
    # below the budget beta shrinks, and never below 0
    _, _, low = wm.repo_dual_loss(cfg=CFG, epsilon=kl + 100.0, dual_lr=0.1)(params, b, state)
    assert float(low["multiplier"]) == 0.0


def test_imagined_returns_match_a_loop():
    params = wm.init_params(jax.random.key(3), CFG)
    z0 = jnp.array([0.3, -0.2])
    acts = jax.random.uniform(jax.random.key(4), (5, 3, 2), minval=-1, maxval=1)
    got = wm.imagined_returns(params, CFG, z0, acts)
    for p in range(5):
        z, total = z0, 0.0
        for k in range(3):
            z = wm.prior(params, CFG, z, acts[p, k])[0]
            total += float(wm.reward_mean(params, z))
        assert float(got[p]) == pytest.approx(total, rel=1e-5, abs=1e-6)


def test_linear_probe_r2():
    rng = np.random.default_rng(0)
    x, x2 = rng.normal(size=(200, 3)), rng.normal(size=(100, 3))
    w = rng.normal(size=(3, 2))
    assert float(wm.linear_probe_r2(x, x @ w + 1.0, x2, x2 @ w + 1.0)) == pytest.approx(1.0,
                                                                                          abs=1e-3)
    noise, noise2 = rng.normal(size=(200, 2)), rng.normal(size=(100, 2))
    assert float(wm.linear_probe_r2(x, noise, x2, noise2)) < 0.1
