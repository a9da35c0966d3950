"""alignax.algorithms.diffusion_dpo: Diffusion-DPO as a fit_small loss."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from alignax.algorithms.diffusion_dpo import diffusion_dpo, pair_batch_fn
from alignax.models import diffusion as dm
from alignax.train.small import fit_small

SCH = dm.make_schedule("linear", 20)
DEN = dm.make_denoiser(dm.DenoiserConfig(kind="mlp", data_shape=(3,), hidden=16, n_blocks=1,
                                         time_dim=8, cond_kind="class", cond_vocab=2))


def _scale_denoiser():
    """eps = a * x_t: a Denoiser whose losses are computable by hand."""
    return dm.Denoiser(init=lambda k: {"a": jnp.float32(0.0)},
                       apply=lambda p, x, t, cond=None: p["a"] * x,
                       logical_axes=lambda p: p, config=None)


def _pairs(seed=0, b=4):
    rng = np.random.default_rng(seed)
    return {"chosen": jnp.asarray(rng.standard_normal((b, 3)), jnp.float32),
            "rejected": jnp.asarray(rng.standard_normal((b, 3)), jnp.float32),
            "cond": jnp.asarray(rng.integers(0, 2, b), jnp.int32)}


def test_hand_computation_with_a_linear_denoiser():
    den = _scale_denoiser()
    d = _pairs()
    batch = {"chosen": d["chosen"], "rejected": d["rejected"], "key": jax.random.key(3)}
    beta, a, a_ref = 0.5, 0.3, -0.2
    loss, m = jax.jit(diffusion_dpo(den, SCH, beta=beta, ref_params={"a": a_ref}))(
        {"a": jnp.float32(a)}, batch)
    # the draws: one t and one noise per pair, shared by its two images
    k_t, k_n = jax.random.split(batch["key"])
    t = np.asarray(jax.random.randint(k_t, (4,), 0, 20, jnp.int32))
    noise = np.asarray(jax.random.normal(k_n, (4, 3), jnp.float32), np.float64)
    ab = np.asarray(SCH.alpha_bars, np.float64)[t][:, None]
    xw = np.sqrt(ab) * np.asarray(d["chosen"]) + np.sqrt(1 - ab) * noise
    xl = np.sqrt(ab) * np.asarray(d["rejected"]) + np.sqrt(1 - ab) * noise
    err = lambda c, x: np.sum((noise - c * x) ** 2, -1)  # noqa: E731
    h = (err(a, xw) - err(a_ref, xw)) - (err(a, xl) - err(a_ref, xl))
    z = -beta * h
    np.testing.assert_allclose(loss, np.mean(np.log1p(np.exp(-z))), rtol=1e-5)
    np.testing.assert_allclose(m["implicit_accuracy"], np.mean(z > 0), rtol=1e-6)
    np.testing.assert_allclose(m["reward_margin"], np.mean(z), rtol=1e-4, atol=1e-6)


def test_at_the_reference_the_loss_is_log2_and_the_gradient_helps_the_chosen():
    d = _pairs(1)
    ref = DEN.init(jax.random.key(0))
    # a non-zero output layer, so eps_ref is not identically 0
    ref = jax.tree.map(lambda x: x, ref)
    ref["out"]["kernel"] = 0.3 * jax.random.normal(jax.random.key(1), ref["out"]["kernel"].shape)
    batch = {**d, "key": jax.random.key(5), "ref_params": ref}
    loss_fn = diffusion_dpo(DEN, SCH, beta=2.0)
    (loss, m), g = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))(ref, batch)
    np.testing.assert_allclose(loss, math.log(2.0), rtol=1e-6)
    assert float(m["implicit_accuracy"]) == 0.0
    np.testing.assert_allclose(m["policy_mse"], m["ref_mse"], rtol=1e-6)
    # a small descent step from theta = ref lowers the chosen images' denoising error relative
    # to the rejected ones' (at the same t and noise): the mean implicit margin turns positive
    # (first order: the gradient at the reference is -beta/2 grad of the mean margin / beta)
    step = jax.tree.map(lambda p, gr: p - 1e-3 * gr, ref, g)
    loss1, m1 = jax.jit(loss_fn)(step, batch)
    assert float(m1["reward_margin"]) > 0
    assert float(loss1) < math.log(2.0)


def test_small_beta_limit_is_half_the_denoising_loss_difference():
    d = _pairs(2)
    ref = DEN.init(jax.random.key(0))
    theta = jax.tree.map(lambda x: x + 0.05 * jax.random.normal(jax.random.key(9), x.shape),
                         ref)
    batch = {**d, "key": jax.random.key(7), "ref_params": ref}
    beta = 1e-4
    g = jax.jit(jax.grad(lambda p: diffusion_dpo(DEN, SCH, beta=beta)(p, batch)[0]))(theta)

    # beta -> 0: -log s(-beta h) = log 2 + beta h / 2 + O(beta^2), so grad / beta ->
    # grad of mean_b (e^w_theta - e^l_theta) / 2 at the same t and noise
    def half_gap(p):
        k_t, k_n = jax.random.split(batch["key"])
        t = jax.random.randint(k_t, (4,), 0, 20, jnp.int32)
        n = jax.random.normal(k_n, (4, 3), jnp.float32)
        e = lambda x: jnp.sum((n - DEN.apply(p, dm.q_sample(SCH, x, t, n), t, d["cond"])) ** 2,  # noqa: E731
                              -1)
        return 0.5 * jnp.mean(e(d["chosen"]) - e(d["rejected"]))

    want = jax.jit(jax.grad(half_gap))(theta)
    for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(want)):
        # a limit, not an identity: the remainder of the expansion is O(beta h) relative, and
        # dividing float32 gradients of size ~beta by beta amplifies their rounding
        np.testing.assert_allclose(np.asarray(a) / beta, b, rtol=2e-2, atol=1e-4)


def test_fit_small_with_per_seed_references_and_betas(tmp_path):
    d = _pairs(3, b=8)
    refs = jax.vmap(DEN.init)(jnp.stack([jax.random.key(0), jax.random.key(1)]))
    data = {k: jnp.stack([v, v]) for k, v in d.items()}
    data.update(ref_params=refs, beta=jnp.array([1.0, 3.0]))
    fit = fit_small(str(tmp_path), loss_fn=diffusion_dpo(DEN, SCH), has_aux=True,
                    init_params=refs, per_seed_init=True, tx=optax.adam(3e-3), num_steps=10,
                    data=data, seeds=[0, 1], per_seed_data=True,
                    batch_fn=pair_batch_fn(8), steps_per_log=10, checkpoint_every=1000,
                    plots=False)
    keys = jnp.stack([jax.random.key(k) for k in range(16)])

    # each seed moved away from its own reference in the preferred direction: the mean implicit
    # margin on its pairs over 16 draws of (t, noise) is positive (one program for both seeds)
    @jax.jit
    def margins(params, ref, beta):
        batch = {**d, "ref_params": ref, "beta": beta}
        return jax.vmap(lambda k: diffusion_dpo(DEN, SCH)(params, {**batch, "key": k})[1][
            "reward_margin"])(keys)

    m = jax.vmap(margins)(fit.params, refs, data["beta"])
    assert m.shape == (2, 16)
    assert np.all(np.asarray(m).mean(1) > 0), m


def test_missing_reference_or_beta_is_an_error():
    d = {**_pairs(), "key": jax.random.key(0)}
    params = DEN.init(jax.random.key(0))
    with pytest.raises(ValueError, match="ref_params"):
        diffusion_dpo(DEN, SCH, beta=1.0)(params, d)
    with pytest.raises(ValueError, match="beta"):
        diffusion_dpo(DEN, SCH, ref_params=params)(params, d)
    with pytest.raises(ValueError, match="batch_size"):
        pair_batch_fn(0)
