"""alignax.algorithms.diffusion_branch: B^2-DiffuRL's interval schedule, branch sampling and
its update as a fit_small loss."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from alignax.algorithms import diffusion as dt
from alignax.algorithms import diffusion_branch as db
from alignax.models import diffusion as dm
from alignax.train.small import fit_small

DEN = dm.make_denoiser(dm.DenoiserConfig(kind="mlp", data_shape=(2,), hidden=32, n_blocks=1,
                                         time_dim=16))
SCH = dm.make_schedule("linear", 20, set_alpha_to_one=False)
STEPS = dm.timestep_sequence(20, 6, last=1)
K = len(STEPS)
TARGET = jnp.array([1.0, 1.0])


def _reward(x0, cond):
    return -jnp.sum(jnp.square(x0 - TARGET), -1)


def _params():
    # a non-zero output layer, so that eps (and the gradient's every path) is not trivial
    p = DEN.init(jax.random.key(0))
    leaves, tree = jax.tree.flatten(p)
    keys = jax.random.split(jax.random.key(1), len(leaves))
    return jax.tree.unflatten(tree, [x + 0.02 * jax.random.normal(k, x.shape)
                                     for x, k in zip(leaves, keys)])


def test_interval_schedule_by_hand_and_as_the_reference_stage_loop():
    got = [int(db.interval_length(u, num_updates=10, first=3, last=6)) for u in range(10)]
    # L = min(3 + floor(4 u / 10), 6)
    assert got == [3, 3, 3, 4, 4, 5, 5, 5, 6, 6]
    # the reference code's run_process.sh: 100 stages, split_step from 14 to 20 of 20 steps
    ref = [14 + (i * 7) // 100 for i in range(100)]
    ours = np.asarray(jax.vmap(lambda u: db.interval_length(u, num_updates=100, first=14,
                                                            last=20))(jnp.arange(100)))
    np.testing.assert_array_equal(ours, ref)
    np.testing.assert_array_equal(db.interval_mask(2, 5), [False, False, False, True, True])
    np.testing.assert_array_equal(db.interval_mask(5, 5), [True] * 5)
    with pytest.raises(ValueError, match="first"):
        db.interval_length(0, num_updates=5, first=4, last=3)
    with pytest.raises(ValueError, match="num_updates"):
        db.interval_length(0, num_updates=0, first=1, last=3)


@pytest.mark.parametrize("j", [0, 3])
def test_branch_sample_is_a_trunk_then_branches(j):
    params, n, m = _params(), 3, 4
    x_T = jax.random.normal(jax.random.key(5), (n, 2))
    key = jax.random.key(7)
    out = db.branch_sample(DEN.apply, params, SCH, key, x_T, STEPS, num_branches=m,
                           branch_step=j)
    assert out.final.shape == (n * m, 2) and out.latents.shape == (K + 1, n * m, 2)
    assert float(out.nfe) == n * j + n * m * (K - j)

    # by hand: the split run of `sample` with the documented per-row keys
    trunk_keys, row_keys = db.branch_keys(key, n, m)
    x_j = x_T
    if j:
        x_j = dm.sample(DEN.apply, params, SCH, trunk_keys, x_T, STEPS, stop=j).final
    tail = dm.sample(DEN.apply, params, SCH, row_keys, jnp.repeat(x_j, m, 0), STEPS, start=j)
    np.testing.assert_allclose(out.final, tail.final, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(out.logps[j:], tail.logps, rtol=1e-6, atol=1e-5)

    # the rows of one trunk share x_0 .. x_j and differ after
    lat = np.asarray(out.latents).reshape(K + 1, n, m, 2)
    np.testing.assert_array_equal(lat[:j + 1], np.repeat(lat[:j + 1, :, :1], m, 2))
    assert np.all(np.abs(lat[j + 1:, :, 0] - lat[j + 1:, :, 1]).sum(-1) > 0)

    # a traced branch step gives the same numbers (the schedule inside a compiled loop)
    traced = jax.jit(lambda p, jj: db.branch_sample(DEN.apply, p, SCH, key, x_T, STEPS,
                                                    num_branches=m, branch_step=jj))(params, j)
    for a, b in ((traced.latents, out.latents), (traced.logps, out.logps)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    assert float(traced.nfe) == float(out.nfe) and int(traced.branch_step) == j

    # the sampler's log-probs are the training recompute's (the DDPO guarantee)
    again = dm.chain_logprobs(DEN.apply, params, SCH, out.latents, out.timesteps,
                              out.prev_timesteps)
    np.testing.assert_allclose(again, out.logps, rtol=1e-5, atol=1e-5)


def test_branch_loss_gradient_is_reinforce_on_the_interval_with_group_baselines():
    params, n, m, u = _params(), 4, 3, 5
    kw = dict(num_trunks=n, num_branches=m, data_shape=(2,), num_updates=10, first=2,
              advantage_clip=None, clip_x0=3.0)
    loss_fn = db.branch_loss(DEN, SCH, STEPS, _reward, **kw)
    batch = {"key": jax.random.key(3), "step": jnp.asarray(u, jnp.int32)}
    (loss, metrics), grad = jax.value_and_grad(loss_fn, has_aux=True)(params, batch)
    length = 2 + (u * (K - 2 + 1)) // 10  # 4
    j = K - length
    assert float(metrics["interval"]) == length
    assert float(metrics["nfe"]) == n * j + n * m * length
    assert float(metrics["approx_kl"]) < 1e-9

    # by hand: -(1 / (N M L)) sum A_{n,m} sum_{k >= j} log p, A normalised within each trunk
    key_noise, key_x = jax.random.split(batch["key"])
    x_T = jax.random.normal(key_x, (n, 2), jnp.float32)
    out = db.branch_sample(DEN.apply, params, SCH, key_noise, x_T, STEPS, num_branches=m,
                           branch_step=j, clip_x0=3.0)
    r = np.asarray(_reward(out.final, None)).reshape(n, m)
    adv = ((r - r.mean(1, keepdims=True)) / (r.std(1, keepdims=True) + 1e-6)).reshape(-1)
    np.testing.assert_allclose(float(metrics["reward"]), r.mean(), rtol=1e-5)

    def reinforce(p):
        lp = dm.chain_logprobs(DEN.apply, p, SCH, out.latents, out.timesteps,
                               out.prev_timesteps, clip_x0=3.0)
        return -(jnp.asarray(adv) * lp[j:].sum(0)).sum() / (n * m * length)

    # at the update the ratio is 1: the loss is -mean_b A_b, 0 for within-group normalised A
    np.testing.assert_allclose(float(loss), -adv.mean(), atol=1e-5)
    want = jax.grad(reinforce)(params)
    for a, b in zip(jax.tree.leaves(grad), jax.tree.leaves(want)):
        # float32 sums of advantage-weighted terms that cancel within each group (sum_m A = 0):
        # compare each leaf at the scale of its largest entry
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * float(np.abs(b).max()))


def test_tied_groups_carry_no_gradient():
    # a reward that is equal within every trunk's group gives A = 0 and no gradient
    loss_fn = db.branch_loss(DEN, SCH, STEPS, lambda x0, c: jnp.zeros(x0.shape[0]),
                             num_trunks=2, num_branches=2, data_shape=(2,), num_updates=4,
                             first=1)
    batch = {"key": jax.random.key(0), "step": jnp.asarray(0, jnp.int32)}
    (loss, metrics), grad = jax.value_and_grad(loss_fn, has_aux=True)(_params(), batch)
    assert float(metrics["tied_groups"]) == 1.0
    assert all(float(jnp.abs(g).max()) == 0.0 for g in jax.tree.leaves(grad))


def test_branch_loss_through_fit_small_raises_the_reward(tmp_path):
    loss_fn = db.branch_loss(DEN, SCH, STEPS, _reward, num_trunks=8, num_branches=4,
                             data_shape=(2,), num_updates=40, first=2, clip_x0=3.0)
    fit = fit_small(str(tmp_path), loss_fn=loss_fn, has_aux=True, init_params=DEN.init,
                    tx=optax.adam(1e-2), num_steps=40, seeds=(0, 1), steps_per_log=20,
                    with_step=True, batch_fn=lambda d, rng, step: {"key": rng, "step": step},
                    plots=False)
    start, end = fit.history[0], fit.history[-1]
    assert end["reward"] > start["reward"] + 0.5, (start["reward"], end["reward"])
    assert start["interval"] < end["interval"] == K  # the interval grew to the whole chain


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="num_branches"):
        db.branch_loss(DEN, SCH, STEPS, _reward, num_trunks=2, num_branches=1,
                       data_shape=(2,), num_updates=4, first=1)
    with pytest.raises(ValueError, match="first"):
        db.branch_loss(DEN, SCH, STEPS, _reward, num_trunks=2, num_branches=2,
                       data_shape=(2,), num_updates=4, first=K + 1)
    with pytest.raises(ValueError, match="branch_step"):
        db.branch_sample(DEN.apply, DEN.init(jax.random.key(0)), SCH, jax.random.key(0),
                         jnp.zeros((2, 2)), STEPS, num_branches=2, branch_step=K)
    assert dt.group_advantages(jnp.array([1.0, 1.0]), 2).tolist() == [0.0, 0.0]
