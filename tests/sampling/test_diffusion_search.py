"""Search over diffusion latents: NFE accounting by hand, the lookahead estimator and beam
search against a NumPy re-implementation on Gaussian data (exact denoiser), beam search with one
beam and one successor == one sampler chain, best-of-N and the fidelity chains == the sampler's
runs, and the search raising the reward."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from alignax.models import diffusion as D
from alignax.sampling import diffusion_search as S

MU = np.array([1.0, -0.5], np.float32)
STD = 0.5
T = 50
TARGET = np.array([1.6, 0.2], np.float32)


def reward(x, cond=None):
    return -jnp.sum(jnp.square(x - TARGET), -1)


def world():
    sch = D.make_schedule("linear", T)
    return sch, D.gaussian_denoiser(sch, MU, STD)


# ---------------------------------------------------------------- a NumPy reference (float64)


def np_abar(sch, t):
    return 1.0 if t < 0 else float(np.asarray(sch.alpha_bars, np.float64)[t])


def np_eps(sch, x, t):
    a = np_abar(sch, t)
    v = a * STD ** 2 + 1 - a
    return np.sqrt(1 - a) / v * (x - np.sqrt(a) * MU)


def np_step(sch, x, t, s, eta):
    """DDIM (Song et al. eq. 12): mean, std and x0_hat of the step from t to s."""
    a, a_s = np_abar(sch, t), np_abar(sch, s)
    eps = np_eps(sch, x, t)
    x0 = (x - np.sqrt(1 - a) * eps) / np.sqrt(a)
    var = eta ** 2 * max((1 - a_s) / (1 - a) * (1 - a / a_s), 0.0)
    return np.sqrt(a_s) * x0 + np.sqrt(max(1 - a_s - var, 0.0)) * eps, np.sqrt(var), x0


def np_lookahead(sch, x, s, la):
    grid = [(s * (la - j)) // la for j in range(la + 1)]
    for j in range(la):
        x, _, x0 = np_step(sch, x, grid[j], grid[j + 1], 0.0)
    return x0


def np_reward(x):
    return -np.sum((x - TARGET) ** 2, -1)


# ------------------------------------------------------------------------------------- tests


def test_search_nfe_by_hand():
    assert S.search_nfe(20, num_samples=50) == {"sampling": 1000, "lookahead": 0, "nfe": 1000,
                                                "reward_calls": 50}
    # K B + (K - 1) B K_c L = 20*2 + 19*2*5*5; reward calls K B K_c = 20*2*5
    assert S.search_nfe(20, beams=2, candidates=5, lookahead=5) == {
        "sampling": 40, "lookahead": 950, "nfe": 990, "reward_calls": 200}
    assert S.search_nfe(4, beams=1, candidates=12) == {"sampling": 4, "lookahead": 36,
                                                       "nfe": 40, "reward_calls": 48}


@pytest.mark.parametrize("level,la", [(37, 1), (37, 3), (2, 4), (0, 2)])
def test_lookahead_x0_matches_the_reference(level, la):
    sch, apply = world()
    x = np.random.default_rng(0).normal(size=(5, 2)).astype(np.float32)
    got = jax.jit(lambda x, s: S.lookahead_x0(apply, None, sch, x, s, la))(x, level)
    want = np_lookahead(sch, x.astype(np.float64), level, la)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    grid = np.asarray(S.lookahead_grid(level, la))
    assert grid[0] == level and grid[-1] == 0 and len(grid) == la + 1
    if la == 1:  # plain Tweedie: the exact posterior mean for Gaussian data
        np.testing.assert_allclose(got, D.gaussian_posterior_x0(sch, MU, STD, x, level),
                                   rtol=1e-4, atol=1e-5)


def test_beam_search_matches_a_naive_reference():
    sch, apply = world()
    seq = D.timestep_sequence(T, 4)
    key = jax.random.key(11)
    b, c, la = 2, 3, 2
    res = S.beam_search(apply, None, sch, key, seq, reward, beams=b, candidates=c, lookahead=la,
                        data_shape=(2,), eta=0.8)
    x = np.asarray(jax.random.normal(jax.random.fold_in(key, 0), (b, 2)), np.float64)
    noise_key = jax.random.fold_in(key, 1)
    prev = list(seq[1:]) + [-1]
    for k, (t, s) in enumerate(zip(seq, prev)):
        z = np.asarray(jax.random.normal(jax.random.fold_in(noise_key, k), (b, c, 2)), np.float64)
        cand = []
        for i in range(b):
            mean, std, _ = np_step(sch, x[i], int(t), int(s), 0.8)
            cand += [mean + std * z[i, j] for j in range(c)]
        cand = np.stack(cand)
        if s >= 0:
            scores = np.array([np_reward(np_lookahead(sch, y, int(s), la)) for y in cand])
            keep = np.argsort(-scores, kind="stable")[:b]
            x = cand[keep]
    np.testing.assert_allclose(res.samples, cand, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(res.final, cand[np.argmax(np_reward(cand))], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(res.reward, np_reward(cand).max(), rtol=1e-4, atol=1e-4)
    assert res.step_scores.shape == (3,)
    cost = S.search_nfe(4, beams=b, candidates=c, lookahead=la)
    assert (int(res.nfe), int(res.lookahead_nfe), int(res.reward_calls)) == (
        cost["sampling"], cost["lookahead"], cost["reward_calls"])


def test_one_beam_one_candidate_is_one_sampler_chain():
    sch, apply = world()
    seq = D.timestep_sequence(T, 6)
    key = jax.random.key(3)
    res = S.beam_search(apply, None, sch, key, seq, reward, beams=1, candidates=1, lookahead=3,
                        data_shape=(2,))
    x_T = jax.random.normal(jax.random.fold_in(key, 0), (1, 2))
    chain = D.sample(apply, None, sch, jax.random.fold_in(key, 1), x_T, seq)
    np.testing.assert_allclose(res.final, chain.final[0], rtol=1e-6, atol=1e-6)
    greedy = S.greedy_search(apply, None, sch, key, seq, reward, candidates=1, lookahead=3,
                             data_shape=(2,))
    np.testing.assert_array_equal(greedy.final, res.final)


def test_best_of_n_and_fidelity_chains_are_the_samplers_runs():
    sch, apply = world()
    seq = D.timestep_sequence(T, 8)
    key = jax.random.key(5)
    bon = S.best_of_n(apply, None, sch, key, seq, reward, num_samples=16, data_shape=(2,))
    x_T = jax.random.normal(jax.random.fold_in(key, 0), (16, 2))
    chains = D.sample(apply, None, sch, jax.random.fold_in(key, 1), x_T, seq)
    np.testing.assert_allclose(bon.samples, chains.final, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(bon.rewards, np_reward(np.asarray(chains.final)), rtol=1e-5)
    assert int(jnp.argmax(bon.rewards)) == int(np.argmax(np_reward(np.asarray(chains.final))))
    assert (int(bon.nfe), int(bon.lookahead_nfe), int(bon.reward_calls)) == (128, 0, 16)

    est, finals = S.lookahead_fidelity(apply, None, sch, key, seq, reward, num_samples=16,
                                       data_shape=(2,), step=3, lookaheads=(1, 4),
                                       continuations=3)
    assert est.shape == (2, 16) and finals.shape == (3, 16)
    # continuation 0 with the trunk's key is the full run; the others are new draws
    np.testing.assert_allclose(finals[0], bon.rewards, rtol=1e-5, atol=1e-6)
    assert not np.allclose(finals[1], finals[0]) and not np.allclose(finals[2], finals[1])
    trunk = np.asarray(chains.latents[3], np.float64)
    np.testing.assert_allclose(est[1], [np_reward(np_lookahead(sch, y, int(seq[3]), 4))
                                        for y in trunk], rtol=1e-4, atol=1e-5)


def test_search_raises_the_reward_and_vmaps_without_retrace():
    sch, apply = world()
    seq = D.timestep_sequence(T, 8)
    traces = []

    def run(kind, keys):
        def one(key):
            traces.append(kind)
            if kind == "plain":
                return S.best_of_n(apply, None, sch, key, seq, reward, num_samples=1,
                                   data_shape=(2,)).reward
            return S.beam_search(apply, None, sch, key, seq, reward, beams=2, candidates=4,
                                 lookahead=2, data_shape=(2,)).reward
        return jax.vmap(one)(keys)

    beam = jax.jit(lambda k: run("beam", k))
    plain = jax.jit(lambda k: run("plain", k))
    keys = jax.random.split(jax.random.key(0), 128)
    r_beam, r_plain = np.asarray(beam(keys)), np.asarray(plain(keys))
    beam(jax.random.split(jax.random.key(1), 128))
    assert traces.count("beam") == 1  # one trace for two calls
    # E|x - target|^2 under the data law is |mu - target|^2 + 2 STD^2 = 1.3; the search halves it
    assert r_plain.mean() < -1.0 and r_beam.mean() > -0.5, (r_plain.mean(), r_beam.mean())


def test_condition_is_repeated_for_every_row():
    sch, gaussian = world()
    seen = []

    def apply(params, x, t, cond):
        seen.append(cond.shape)
        assert cond.shape == (x.shape[0],)
        return gaussian(params, x, t) + 0.0 * cond[:, None]

    def cond_reward(x, cond):
        assert cond.shape == (x.shape[0],)
        return reward(x)

    seq = D.timestep_sequence(T, 3)
    S.beam_search(apply, None, sch, jax.random.key(0), seq, cond_reward, beams=2, candidates=3,
                  lookahead=2, data_shape=(2,), cond=jnp.asarray(4.0))
    assert (2,) in seen and (6,) in seen


def test_bad_arguments_fail_in_one_line():
    sch, apply = world()
    seq = D.timestep_sequence(T, 3)
    with pytest.raises(ValueError, match="lookahead"):
        S.lookahead_x0(apply, None, sch, jnp.zeros((2, 2)), 5, 0)
    with pytest.raises(ValueError, match="beams"):
        S.beam_search(apply, None, sch, jax.random.key(0), seq, reward, beams=0, candidates=2,
                      data_shape=(2,))
    with pytest.raises(ValueError, match="descend"):
        S.best_of_n(apply, None, sch, jax.random.key(0), [3, 7], reward, num_samples=2,
                    data_shape=(2,))
    with pytest.raises(ValueError, match="step"):
        S.lookahead_fidelity(apply, None, sch, jax.random.key(0), seq, reward, num_samples=2,
                             data_shape=(2,), step=3, lookaheads=(1,))
