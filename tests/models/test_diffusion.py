"""Diffusion stack: schedules and the forward process against closed forms, samplers against the
exact law of the chain for Gaussian data, Tweedie, the log-prob guarantee, composition of
sub-range runs, the denoisers, and a short training run on the 8-Gaussian ring."""

import functools

import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from alignax.losses.diffusion import epsilon_loss
from alignax.models import diffusion as D
from alignax.tasks.diffusion_data import assign_modes, eight_gaussians, mode_stats, ring_centers

MU = np.array([1.0, -0.5], np.float32)
S = 0.5


# ---------------------------------------------------------------------------------- schedules


def test_linear_and_cosine_schedules_match_closed_forms():
    sch = D.make_schedule("linear", 100)
    betas = np.asarray(sch.betas, np.float64)
    np.testing.assert_allclose(betas[[0, -1]], [1e-3, 0.2], rtol=1e-6)  # DDPM's, x 1000/T
    np.testing.assert_allclose(np.diff(betas), (0.2 - 1e-3) / 99, rtol=1e-4)
    np.testing.assert_allclose(sch.alphas, 1 - betas, rtol=1e-6)
    np.testing.assert_allclose(sch.alpha_bars, np.cumprod(1 - betas), rtol=1e-5)
    assert float(sch.final_alpha_bar) == 1.0

    cos = D.make_schedule("cosine", 50, set_alpha_to_one=False)
    f = lambda u: np.cos((u / 50 + 0.008) / 1.008 * np.pi / 2) ** 2  # noqa: E731
    t = np.arange(49)  # the last beta is clipped at 0.999
    np.testing.assert_allclose(np.asarray(cos.alpha_bars)[t], f(t + 1) / f(0), rtol=1e-5)
    assert np.all(np.diff(np.asarray(cos.alpha_bars)) < 0)
    np.testing.assert_allclose(cos.final_alpha_bar, cos.alpha_bars[0])
    np.testing.assert_allclose(D.alpha_bar(cos, jnp.array([-1, 0, 3])),
                               [cos.alpha_bars[0], cos.alpha_bars[0], cos.alpha_bars[3]])


def test_timestep_sequence_and_bad_configs():
    np.testing.assert_array_equal(D.timestep_sequence(10, 10), np.arange(9, -1, -1))
    np.testing.assert_array_equal(D.timestep_sequence(100, 4), [99, 66, 33, 0])
    np.testing.assert_array_equal(D.timestep_sequence(100, 3, last=1), [99, 50, 1])
    with pytest.raises(ValueError, match="num_steps"):
        D.timestep_sequence(10, 11)
    with pytest.raises(ValueError, match="schedule kind"):
        D.make_schedule("quadratic", 10)
    with pytest.raises(ValueError, match="kind"):
        D.DenoiserConfig(kind="transformer")
    with pytest.raises(ValueError, match="cond_vocab"):
        D.DenoiserConfig(cond_kind="class")
    with pytest.raises(ValueError, match="divisible"):
        D.DenoiserConfig(kind="unet", data_shape=(6, 6, 1), channels=(8, 8, 8), groups=4)


def test_forward_process_moments():
    sch = D.make_schedule("linear", 100)
    x0 = jnp.broadcast_to(jnp.asarray(MU), (20000, 2))
    t = jnp.full((20000,), 40)

    @jax.jit
    def draw():
        x_t = D.q_sample(sch, x0, t, jax.random.normal(jax.random.key(0), x0.shape))
        return x_t, D.q_moments(sch, x0, t), D.forward_noise(sch, jax.random.key(1), x0[:8])

    x_t, (mean, var), (xt2, t2, noise) = draw()
    ab = float(sch.alpha_bars[40])
    np.testing.assert_allclose(mean[0], np.sqrt(ab) * MU, rtol=1e-6)
    np.testing.assert_allclose(var[0], 1 - ab, rtol=1e-6)
    se = np.sqrt((1 - ab) / 20000)
    np.testing.assert_allclose(x_t.mean(0), np.sqrt(ab) * MU, atol=4 * se)
    np.testing.assert_allclose(x_t.var(0), 1 - ab, rtol=4 * np.sqrt(2 / 20000))
    ab2 = np.asarray(sch.alpha_bars)[np.asarray(t2)][:, None]
    np.testing.assert_allclose(xt2, np.sqrt(ab2) * MU + np.sqrt(1 - ab2) * np.asarray(noise),
                               rtol=1e-5, atol=1e-6)
    assert t2.dtype == jnp.int32 and int(t2.min()) >= 0 and int(t2.max()) < 100


@pytest.mark.parametrize("t,s", [(10, 9), (10, 4), (3, -1)])
def test_posterior_matches_bayes_rule(t, s):
    # q(x_s | x_t, x_0) from the product of q(x_t | x_s) and q(x_s | x_0), per coordinate
    sch = D.make_schedule("cosine", 20)
    ab = np.asarray(sch.alpha_bars, np.float64)
    a_t, a_s = ab[t], (ab[s] if s >= 0 else 1.0)
    x0, x_t = np.array([[0.3, -1.2]]), np.array([[1.1, 0.4]])
    a_ts = a_t / a_s
    if s >= 0:
        prec = a_ts / (1 - a_ts) + 1 / (1 - a_s)
        mean = (np.sqrt(a_ts) * x_t / (1 - a_ts) + np.sqrt(a_s) * x0 / (1 - a_s)) / prec
        var = 1 / prec
    else:  # the output level is clean data: the posterior is the point x_0
        mean, var = x0, 0.0
    got_mean, got_var = D.posterior_moments(sch, jnp.asarray(x_t, jnp.float32),
                                            jnp.asarray(x0, jnp.float32), t, s)
    np.testing.assert_allclose(got_mean, mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got_var[0], var, rtol=1e-5, atol=1e-7)
    if s == t - 1:  # the default t_prev
        np.testing.assert_allclose(D.posterior_moments(sch, jnp.asarray(x_t, jnp.float32),
                                                       jnp.asarray(x0, jnp.float32), t)[0],
                                   mean, rtol=1e-5)


# ---------------------------------------------------------------- Gaussian data, exact denoiser


def _chain_law(ab, seq, method, eta):
    """Exact mean and std of the sampler's output for x_0 ~ N(MU, S^2 I), x_T ~ N(0, I): every
    step is affine in x plus Gaussian noise, x' = A x + b + sigma z (float64)."""
    m, v = np.zeros(2), np.ones(2)
    for t, s in zip(seq, list(seq[1:]) + [-1]):
        a_t, a_s = ab[t], (ab[s] if s >= 0 else 1.0)
        post = (1 - a_s) / (1 - a_t) * (1 - a_t / a_s)

        def step(x):
            v_t = a_t * S ** 2 + 1 - a_t
            e = np.sqrt(1 - a_t) / v_t * (x - np.sqrt(a_t) * MU)
            x0 = (x - np.sqrt(1 - a_t) * e) / np.sqrt(a_t)
            if method == "ddpm":
                return (np.sqrt(a_s) * (1 - a_t / a_s) / (1 - a_t) * x0
                        + np.sqrt(a_t / a_s) * (1 - a_s) / (1 - a_t) * x), post
            return np.sqrt(a_s) * x0 + np.sqrt(1 - a_s - eta ** 2 * post) * e, eta ** 2 * post

        b, sig2 = step(np.zeros(2))
        A = step(np.ones(2))[0] - b
        m, v = A * m + b, A ** 2 * v + sig2
    return m, np.sqrt(v)


@functools.partial(jax.jit, static_argnames=("seq", "method", "n"))
def _sample_gaussian(sch, key, x_key, eta, *, seq, method, n):
    x_T = jax.random.normal(x_key, (n, 2))
    return D.sample(D.gaussian_denoiser(sch, MU, S), None, sch, key, x_T, seq, method=method,
                    eta=eta)


def _run(sch, seq, method, eta, n, key=0, x_key=None):
    """The sampler with the exact denoiser; x_T ~ N(0, I) from `x_key` (default 100 + key)."""
    x_key = 100 + key if x_key is None else x_key
    return _sample_gaussian(sch, jax.random.key(key), jax.random.key(x_key), eta,
                            seq=tuple(int(t) for t in seq), method=method, n=n)


@pytest.mark.parametrize("method,eta", [("ddpm", 1.0), ("ddim", 0.0), ("ddim", 0.5),
                                        ("ddim", 1.0)])
def test_samplers_follow_the_exact_law_of_their_chain(method, eta):
    sch = D.make_schedule("linear", 100)
    seq = D.timestep_sequence(100, 20)
    n = 16384
    out = _run(sch, seq, method, eta, n)
    mean, std = _chain_law(np.asarray(sch.alpha_bars, np.float64), seq, method, eta)
    x = np.asarray(out.final, np.float64)
    np.testing.assert_array_less(np.abs(x.mean(0) - mean), 4 * std / np.sqrt(n))
    np.testing.assert_allclose(x.std(0), std, rtol=4 / np.sqrt(2 * n))
    assert out.latents.shape == (21, n, 2) and out.logps.shape == (20, n)
    assert int(out.nfe) == 20
    # Tweedie at every step equals E[x_0 | x_t] of the Gaussian
    for k in (0, 10, 19):
        np.testing.assert_allclose(out.x0_hats[k], D.gaussian_posterior_x0(
            sch, MU, S, out.latents[k], int(seq[k])), rtol=1e-4, atol=1e-4)


def test_full_chains_reproduce_the_data_distribution():
    # T = 1000: the chain's own law is within 1% of N(MU, S^2) (discretisation), and the
    # samples match it within sampling error
    sch = D.make_schedule("linear", 1000)
    ab = np.asarray(sch.alpha_bars, np.float64)
    n = 8192
    for method, k in (("ddpm", 1000), ("ddim", 1000)):
        seq = D.timestep_sequence(1000, k)
        mean, std = _chain_law(ab, seq, method, 0.0)
        np.testing.assert_allclose(mean, MU, atol=0.005)
        np.testing.assert_allclose(std, S, rtol=0.01)
        x = np.asarray(_run(sch, seq, method, 0.0, n).final, np.float64)
        np.testing.assert_allclose(x.mean(0), mean, atol=4 * S / np.sqrt(n))
        np.testing.assert_allclose(x.std(0), std, rtol=4 / np.sqrt(2 * n))


def test_ddim_eta0_is_deterministic_and_ddim_eta1_is_ddpm():
    sch = D.make_schedule("cosine", 50)
    seq = D.timestep_sequence(50, 10)
    a, b = _run(sch, seq, "ddim", 0.0, 64, key=0), _run(sch, seq, "ddim", 0.0, 64, key=0)
    c = _run(sch, seq, "ddim", 0.0, 64, key=7, x_key=100)
    np.testing.assert_array_equal(a.final, b.final)
    np.testing.assert_allclose(a.final, c.final, rtol=1e-6)  # another key, same x_T
    np.testing.assert_array_equal(a.logps, 0.0)  # deterministic steps have log-prob 0
    ddpm, ddim1 = _run(sch, seq, "ddpm", 0.0, 64, key=3), _run(sch, seq, "ddim", 1.0, 64, key=3)
    np.testing.assert_allclose(ddpm.latents, ddim1.latents, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(ddpm.logps[:-1], ddim1.logps[:-1], rtol=1e-4, atol=1e-3)
    np.testing.assert_array_equal(ddpm.logps[-1], 0.0)  # into clean data: deterministic


def test_tweedie_closed_form_is_the_regression_of_x0_on_xt():
    sch = D.make_schedule("linear", 100)
    n, t = 200_000, 60
    k0, k1 = jax.random.split(jax.random.key(0))
    x0 = MU + S * np.asarray(jax.random.normal(k0, (n, 2)), np.float64)
    x_t = np.asarray(D.q_sample(sch, jnp.asarray(x0, jnp.float32), t,
                                jax.random.normal(k1, (n, 2))), np.float64)
    hat = np.asarray(D.gaussian_posterior_x0(sch, MU, S, jnp.asarray(x_t, jnp.float32), t))
    eps = D.gaussian_denoiser(sch, MU, S)(None, jnp.asarray(x_t, jnp.float32), t)
    np.testing.assert_allclose(D.tweedie_x0(jnp.asarray(x_t, jnp.float32), eps,
                                            sch.alpha_bars[t]), hat, rtol=1e-4, atol=1e-4)
    for d in range(2):  # least squares of x0 on (1, x_t): the conditional mean is affine
        coef, *_ = np.linalg.lstsq(np.stack([np.ones(n), x_t[:, d]], 1), x0[:, d], rcond=None)
        coef_hat, *_ = np.linalg.lstsq(np.stack([np.ones(n), x_t[:, d]], 1), hat[:, d],
                                       rcond=None)
        np.testing.assert_allclose(coef, coef_hat, atol=0.01)
    # the residual x0 - E[x0 | x_t] has the posterior variance
    ab = float(sch.alpha_bars[t])
    post_var = S ** 2 * (1 - ab) / (ab * S ** 2 + 1 - ab)
    np.testing.assert_allclose((x0 - hat).var(0), post_var, rtol=0.02)


# ---------------------------------------------------- log-prob guarantee, composition, networks


def _perturbed(model, seed=0, scale=0.05):
    """Init params moved off the zero-initialised output layer, so eps depends on the input."""
    flat, unravel = jax.flatten_util.ravel_pytree(model.init(jax.random.key(seed)))
    noise = jax.jit(lambda k: jax.random.normal(k, flat.shape, flat.dtype))(
        jax.random.key(seed + 1))
    return unravel(flat + scale * noise)


NETS = {
    "mlp": D.DenoiserConfig(hidden=32, n_blocks=1, time_dim=16, cond_kind="class", cond_vocab=3),
    "unet": D.DenoiserConfig(kind="unet", data_shape=(8, 8, 1), channels=(8, 16), groups=4,
                             time_dim=16, cond_kind="tokens", cond_vocab=11),
}


@pytest.mark.parametrize("net", ["mlp", "unet"])
def test_sampler_logps_equal_training_recompute(net):
    cfg = NETS[net]
    model = D.make_denoiser(cfg)
    params = _perturbed(model)
    sch = D.make_schedule("linear", 40, set_alpha_to_one=False)
    seq = D.timestep_sequence(40, 6, last=1)  # every step stochastic
    b = 3
    cond = jnp.array([0, 2, 3]) if net == "mlp" else jnp.array([[1, 4, -1], [2, -1, -1],
                                                                 [5, 6, 7]])
    x_T = jax.random.normal(jax.random.key(5), (b, *cfg.data_shape))
    # the U-Net (slow to compile here) runs the general case; the MLP also DDPM and clipping
    cases = ((("ddim", 0.7, None),) if net == "unet" else
             (("ddpm", 1.0, None), ("ddim", 0.7, 1.0)))
    for method, eta, clip in cases:
        @jax.jit
        def run_and_recompute(p, key, eta):
            out = D.sample(model.apply, p, sch, key, x_T, seq, cond=cond, method=method,
                           eta=eta, clip_x0=clip)
            return out, D.chain_logprobs(model.apply, p, sch, out.latents, out.timesteps,
                                         out.prev_timesteps, cond, method=method, eta=eta,
                                         clip_x0=clip)

        out, logps = run_and_recompute(params, jax.random.key(1), eta)
        assert bool(jnp.all(out.logps != 0))
        np.testing.assert_allclose(logps, out.logps, rtol=1e-5, atol=1e-5)
    if net == "unet":
        return
    # one step with per-row (shuffled) timesteps, as a DDPO update batches them, and its gradient
    rows, cols = jnp.array([0, 3, 5]), jnp.arange(b)

    def one(p):
        return D.step_logprob(model.apply, p, sch, out.latents[rows, cols], out.timesteps[rows],
                              out.prev_timesteps[rows], out.latents[rows + 1, cols], cond,
                              eta=0.7, clip_x0=1.0)

    value, grads = jax.jit(jax.value_and_grad(lambda p: one(p).sum(), has_aux=False))(params)
    np.testing.assert_allclose(value, out.logps[rows, cols].sum(), rtol=1e-5, atol=1e-5)
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves(grads))
    assert float(optax.tree.norm(grads)) > 0


_jit_sample = jax.jit(D.sample, static_argnames=("apply", "timesteps", "method", "start", "stop",
                                                "clip_x0"))


@pytest.mark.parametrize("per_row", [False, True])
def test_trunk_then_continuation_equals_one_run(per_row):
    sch = D.make_schedule("linear", 30)
    seq = tuple(int(t) for t in D.timestep_sequence(30, 10))
    apply = D.gaussian_denoiser(sch, MU, S)
    x_T = jax.random.normal(jax.random.key(0), (4, 2))
    key = jax.random.split(jax.random.key(1), 4) if per_row else jax.random.key(1)
    run = functools.partial(_jit_sample, apply, None, sch, key, timesteps=seq, eta=0.8)
    full = run(x_T)
    trunk = run(x_T, stop=4)
    rest = run(trunk.final, start=4)
    np.testing.assert_allclose(rest.final, full.final, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(jnp.concatenate([trunk.logps, rest.logps]), full.logps,
                               rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(jnp.concatenate([trunk.timesteps, rest.timesteps]), seq)
    assert int(trunk.nfe) + int(rest.nfe) == int(full.nfe) == 10
    np.testing.assert_allclose(trunk.latents[-1], full.latents[4], rtol=1e-6)
    if per_row:  # row-wise keys: a row's sample does not depend on its batch neighbours
        alone = _jit_sample(apply, None, sch, key[2:3], x_T[2:3], seq, eta=0.8)
        np.testing.assert_allclose(alone.final[0], full.final[2], rtol=1e-6, atol=1e-6)
    else:  # branches: the trunk's state repeated, continued with another key, differ
        branches = run(jnp.repeat(trunk.final[:1], 4, 0), start=4)
        assert float(jnp.abs(branches.final[0] - branches.final[1]).max()) > 1e-3


def test_denoiser_shapes_conditioning_and_bf16():
    for name, cfg in NETS.items():
        model = D.make_denoiser(cfg)
        params = _perturbed(model)
        x = jax.random.normal(jax.random.key(0), (2, *cfg.data_shape))
        cond = jnp.array([1, 3]) if name == "mlp" else jnp.array([[1, -1], [2, 3]])
        other = jnp.array([0, 0]) if name == "mlp" else jnp.array([[5, -1], [5, -1]])
        apply = jax.jit(model.apply)
        eps = apply(params, x, jnp.array([3, 7]), cond)
        assert eps.shape == x.shape and eps.dtype == jnp.float32
        # the condition matters
        assert float(jnp.abs(apply(params, x, jnp.array([3, 7]), other) - eps).max()) > 1e-4
        with pytest.raises(ValueError, match="cond"):
            model.apply(params, x, 3)
        with pytest.raises(ValueError, match="x_t"):
            model.apply(params, x[..., :1] if name == "mlp" else x[:, :4], 3, cond)
    cfg = D.DenoiserConfig(hidden=32, n_blocks=1, time_dim=16)
    f32 = D.make_denoiser(cfg)
    params = _perturbed(f32)
    bf16 = D.make_denoiser(D.DenoiserConfig(hidden=32, n_blocks=1, time_dim=16,
                                            dtype="bfloat16"))
    x = jax.random.normal(jax.random.key(0), (8, 2))
    lo, hi = jax.jit(bf16.apply)(params, x, 5), jax.jit(f32.apply)(params, x, 5)
    assert lo.dtype == jnp.float32
    np.testing.assert_allclose(lo, hi, atol=0.05 * float(jnp.abs(hi).max()))
    pure = D.make_denoiser(D.DenoiserConfig(hidden=32, n_blocks=1, time_dim=16,
                                            param_dtype="bfloat16"))
    dtypes = {p.dtype for p in jax.tree.leaves(jax.eval_shape(pure.init, jax.random.key(0)))}
    assert dtypes == {jnp.dtype(jnp.bfloat16)}


def test_vector_condition_shapes_null_and_logps():
    """cond_kind "vector" (inpainting: the known coordinates as a float condition): shapes, the
    condition matters, the zero vector is the unconditional (null) input, bad conds fail, and
    the sampler's log-probs equal the training recompute with a vector condition."""
    cfg = D.DenoiserConfig(data_shape=(1,), hidden=32, n_blocks=1, time_dim=16,
                           cond_kind="vector", cond_dim=2)
    model = D.make_denoiser(cfg)
    params = _perturbed(model)
    assert params["embed"]["cond"]["kernel"].shape == (2, 16)
    b = 3
    x = jax.random.normal(jax.random.key(0), (b, 1))
    cond = jnp.array([[0.5, -1.0], [2.0, 0.0], [-1.5, 1.0]])
    apply = jax.jit(model.apply)
    eps = apply(params, x, jnp.array([3, 7, 9]), cond)
    assert eps.shape == (b, 1) and eps.dtype == jnp.float32
    assert float(jnp.abs(apply(params, x, jnp.array([3, 7, 9]), 2 * cond) - eps).max()) > 1e-4
    # the null condition: with a zero cond bias the embedding gets nothing from it
    unbiased = jax.tree.map(lambda v: v, params)
    unbiased["embed"]["cond"]["bias"] = jnp.zeros_like(params["embed"]["cond"]["bias"])
    no_cond = D.make_denoiser(D.DenoiserConfig(data_shape=(1,), hidden=32, n_blocks=1,
                                               time_dim=16))
    stripped = {**unbiased, "embed": {k: v for k, v in unbiased["embed"].items() if k != "cond"}}
    np.testing.assert_allclose(apply(unbiased, x, 5, jnp.zeros((b, 2))),
                               jax.jit(no_cond.apply)(stripped, x, 5), rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="cond_dim=2"):
        model.apply(params, x, 3, cond[:, :1])
    with pytest.raises(ValueError, match="rank 2"):
        model.apply(params, x, 3, cond[:, 0])
    with pytest.raises(ValueError, match="cond_dim"):
        D.DenoiserConfig(cond_kind="vector")
    sch = D.make_schedule("linear", 40, set_alpha_to_one=False)
    seq = D.timestep_sequence(40, 6, last=1)
    x_T = jax.random.normal(jax.random.key(5), (b, 1))

    @jax.jit
    def run_and_recompute(p, key, eta):
        out = D.sample(model.apply, p, sch, key, x_T, seq, cond=cond, eta=eta, clip_x0=3.0)
        return out, D.chain_logprobs(model.apply, p, sch, out.latents, out.timesteps,
                                     out.prev_timesteps, cond, eta=eta, clip_x0=3.0)

    out, logps = run_and_recompute(params, jax.random.key(1), 0.8)
    assert bool(jnp.all(out.logps != 0))
    np.testing.assert_allclose(logps, out.logps, rtol=1e-5, atol=1e-5)


def test_mlp_denoiser_learns_the_eight_gaussian_ring():
    sch = D.make_schedule("linear", 100)
    model = D.make_denoiser(D.DenoiserConfig(hidden=64, n_blocks=2, time_dim=32))
    data = jnp.asarray(eight_gaussians(4096, seed=0).points)
    tx = optax.adam(2e-3)
    params = model.init(jax.random.key(0))

    def loss_fn(p, key):
        kb, kn = jax.random.split(key)
        x0 = data[jax.random.randint(kb, (256,), 0, data.shape[0])]
        x_t, t, noise = D.forward_noise(sch, kn, x0)
        return epsilon_loss(model.apply(p, x_t, t), noise).mean()

    @jax.jit
    def train(p, key):
        def step(carry, k):
            p, opt = carry
            loss, g = jax.value_and_grad(loss_fn)(p, k)
            upd, opt = tx.update(g, opt, p)
            return (optax.apply_updates(p, upd), opt), loss
        (p, _), losses = jax.lax.scan(step, (p, tx.init(p)), jax.random.split(key, 600))
        return p, losses

    trained, losses = train(params, jax.random.key(1))
    first, last = float(losses[:50].mean()), float(losses[-50:].mean())
    assert last < 0.6 * first, (first, last)

    seq = D.timestep_sequence(100, 50)
    gen = jax.jit(functools.partial(D.sample, model.apply, timesteps=seq, eta=1.0))
    x_T = jax.random.normal(jax.random.key(2), (1024, 2))
    centers = ring_centers()
    stats = {}
    for name, p in (("trained", trained), ("untrained", _perturbed(model, scale=0.02))):
        x = np.asarray(gen(p, sch, jax.random.key(3), x_T).final)
        stats[name] = mode_stats(assign_modes(x, centers, max_distance=0.5), 8)
    # a mode's radius 0.5 is 5 standard deviations of the data (whose on-mode fraction is 1);
    # 600 steps are a short training (measured: about 2/3 on-mode, 3/4 after 1000 steps), so the
    # bar is loose: most samples near a mode, every mode holding at least 3% of them
    assert stats["trained"].on_mode > 0.5, stats
    assert stats["trained"].covered == 8 and stats["trained"].counts.min() > 0.03 * 1024, stats
    assert stats["untrained"].on_mode < 0.3, stats
