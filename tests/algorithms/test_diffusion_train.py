"""alignax.algorithms.diffusion: denoising pretraining and DDPO updates as fit_small losses."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from alignax.algorithms import diffusion as dt
from alignax.models import diffusion as dm
from alignax.tasks.diffusion_data import eight_gaussians
from alignax.train.small import fit_small

DEN = dm.make_denoiser(dm.DenoiserConfig(kind="mlp", data_shape=(2,), hidden=32, n_blocks=1,
                                         time_dim=16))
SCH = dm.make_schedule("linear", 20, set_alpha_to_one=False)
STEPS = dm.timestep_sequence(20, 5, last=1)
TARGET = jnp.array([1.0, 1.0])


def _reward(x0, cond):
    return -jnp.sum(jnp.square(x0 - TARGET), -1)


def test_group_advantages_by_hand():
    r = jnp.array([1.0, 3.0, 10.0, 10.0])
    np.testing.assert_allclose(dt.group_advantages(r, 2), [-1, 1, 0, 0], atol=1e-5)
    whole = (np.array(r) - 6.0) / (np.std(np.array(r)) + 1e-6)
    np.testing.assert_allclose(dt.group_advantages(r), whole, rtol=1e-5)
    with pytest.raises(ValueError, match="group_size"):
        dt.group_advantages(r, 3)


def test_pretraining_lowers_the_denoising_loss(tmp_path):
    pts = eight_gaussians(512, seed=0)
    fit = dt.pretrain(str(tmp_path), DEN, SCH, {"x0": jnp.asarray(pts.points, jnp.float32)},
                      num_steps=60, batch_size=64, learning_rate=3e-3, seeds=(0, 1),
                      steps_per_log=20, plots=False)
    first = fit.history[0]["eps_mse"]
    assert fit.history[-1]["eps_mse"] < 0.8 * first, (first, fit.history[-1]["eps_mse"])


def test_ddpo_gradient_is_reinforce_on_the_sampled_chains():
    params = DEN.init(jax.random.key(0))
    loss_fn = dt.ddpo_loss(DEN, SCH, STEPS, _reward, batch_size=16, data_shape=(2,),
                           advantage_clip=None, clip_x0=3.0)
    batch = {"key": jax.random.key(3)}
    (loss, metrics), grad = jax.value_and_grad(loss_fn, has_aux=True)(params, batch)
    assert float(metrics["approx_kl"]) < 1e-9 and float(metrics["nfe"]) == 16 * len(STEPS)

    # the same chains by hand: -mean_b A_b mean_k log p(x_{k+1} | x_k)
    key_noise, key_x = jax.random.split(batch["key"])
    x_T = jax.random.normal(key_x, (16, 2), jnp.float32)
    out = dm.sample(DEN.apply, params, SCH, key_noise, x_T, STEPS, method="ddim", eta=1.0,
                    clip_x0=3.0)
    adv = dt.group_advantages(_reward(out.final, None))
    np.testing.assert_allclose(float(metrics["reward"]), float(_reward(out.final, None).mean()),
                               rtol=1e-6)
    np.testing.assert_allclose(float(metrics["reward_std"]),
                               float(np.std(np.asarray(_reward(out.final, None)))), rtol=1e-5)

    def reinforce(p):
        lp = dm.chain_logprobs(DEN.apply, p, SCH, out.latents, out.timesteps,
                               out.prev_timesteps, method="ddim", eta=1.0, clip_x0=3.0)
        return -(adv * lp.mean(0)).mean()

    want = jax.grad(reinforce)(params)
    for a, b in zip(jax.tree.leaves(grad), jax.tree.leaves(want)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    # per-sample weights: the loss is mean_b w_b l_b (here l_b's gradient is -A_b grad mean_k lp)
    w = jnp.linspace(0.5, 2.0, 16)
    weighted = dt.ddpo_loss(DEN, SCH, STEPS, _reward, batch_size=16, data_shape=(2,),
                            advantage_clip=None, clip_x0=3.0, weight_fn=lambda x0, c: w)
    (_, wm), g_w = jax.value_and_grad(weighted, has_aux=True)(params, batch)
    want_w = jax.grad(lambda p: -(w * adv * dm.chain_logprobs(
        DEN.apply, p, SCH, out.latents, out.timesteps, out.prev_timesteps, method="ddim",
        eta=1.0, clip_x0=3.0).mean(0)).mean())(params)
    for a, b in zip(jax.tree.leaves(g_w), jax.tree.leaves(want_w)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(float(wm["weight_mean"]), 1.25, rtol=1e-6)
    with pytest.raises(ValueError, match="weight_fn must return"):
        dt.ddpo_loss(DEN, SCH, STEPS, _reward, batch_size=16, data_shape=(2,),
                     weight_fn=lambda x0, c: jnp.ones(3))(params, batch)
    # a step mask restricts the gradient to the chosen steps: an all-off mask gives zero
    none = jnp.zeros((len(STEPS),), bool)
    g0 = jax.grad(lambda p: loss_fn(p, {**batch, "step_mask": none})[0])(params)
    assert all(float(jnp.abs(x).max()) == 0.0 for x in jax.tree.leaves(g0))


def test_ddpo_through_fit_small_raises_the_reward(tmp_path):
    loss_fn = dt.ddpo_loss(DEN, SCH, STEPS, _reward, batch_size=32, data_shape=(2,),
                           clip_x0=3.0)
    fit = fit_small(str(tmp_path), loss_fn=loss_fn, has_aux=True, init_params=DEN.init,
                    tx=optax.adam(1e-2), num_steps=40, seeds=(0, 1), steps_per_log=20,
                    batch_fn=lambda d, rng: {"key": rng}, plots=False)
    start, end = fit.history[0]["reward"], fit.history[-1]["reward"]
    assert end > start + 0.5, (start, end)


def test_bad_arguments_are_refused(tmp_path):
    with pytest.raises(ValueError, match="step_mask"):
        dt.ddpo_loss(DEN, SCH, STEPS, _reward, batch_size=4, data_shape=(2,),
                     step_mask=jnp.ones((3,), bool))
    with pytest.raises(ValueError, match="num_steps"):
        dt.pretrain(str(tmp_path), DEN, SCH, {"x0": jnp.zeros((4, 2))}, num_steps=0,
                    batch_size=2)
