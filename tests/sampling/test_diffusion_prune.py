"""Pruned diffusion search: NFE accounting against the formula, survivors equal their unpruned
chains, the top-k of the intermediate scores survive, best-of-N as the no-prune case, jit and
vmap."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from alignax.models.diffusion import gaussian_denoiser, make_schedule, sample, timestep_sequence
from alignax.sampling import diffusion_prune as dp

SCHED = make_schedule("linear", 50)
APPLY = gaussian_denoiser(SCHED, 0.5, 0.3)  # exact eps of N(0.5, 0.3^2) data
TS = timestep_sequence(50, 10)


def _inputs(n, seed=0):
    keys = jax.random.split(jax.random.key(seed), n)
    x_T = jax.random.normal(jax.random.key(seed + 100), (n, 2))
    return keys, x_T


def test_nfe_formula_and_budget():
    assert dp.prune_nfe(10, 8) == 80  # best-of-N
    # 12 candidates through step 3 (4 calls), 3 survivors for the 6 remaining steps
    assert dp.prune_nfe(10, 12, (3,), (3,)) == 12 * 4 + 3 * 6
    assert dp.prune_nfe(10, 12, (2, 5), (6, 2)) == 12 * 3 + 6 * 3 + 2 * 4
    assert dp.keep_counts(12, 0.25) == (3,)
    assert dp.keep_counts(10, 0.25, 2) == (3, 1)
    n0 = dp.candidates_for_budget(80, 10, (3,), 0.25)
    assert dp.prune_nfe(10, n0, (3,), dp.keep_counts(n0, 0.25)) <= 80
    assert dp.prune_nfe(10, n0 + 1, (3,), dp.keep_counts(n0 + 1, 0.25)) > 80
    assert dp.candidates_for_budget(80, 10) == 8
    with pytest.raises(ValueError, match="prune_steps"):
        dp.prune_nfe(10, 4, (5, 3), (2, 1))
    with pytest.raises(ValueError, match="keep"):
        dp.prune_nfe(10, 4, (3,), (5,))


def test_survivors_equal_their_unpruned_chains_and_the_top_scores_survive():
    keys, x_T = _inputs(6)
    score = lambda x0h, xt, t: x0h[:, 0]  # noqa: E731
    final = lambda x: -jnp.abs(x[:, 1])  # noqa: E731
    res = jax.jit(lambda k, x: dp.prune_sample(APPLY, None, SCHED, k, x, TS, prune_steps=(3,),
                                               keep=(2,), score_fn=score,
                                               final_score_fn=final))(keys, x_T)
    full = sample(APPLY, None, SCHED, keys, x_T, TS)
    # the intermediate score is the x0_hat of step 3's input, over all 6 candidates
    np.testing.assert_allclose(res.stage_scores[0], full.x0_hats[3][:, 0], rtol=1e-6)
    top = np.argsort(-np.asarray(full.x0_hats[3][:, 0]))[:2]
    np.testing.assert_array_equal(res.index, top)
    np.testing.assert_allclose(res.final, full.final[top], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(res.final_scores, final(full.final[top]), rtol=1e-5, atol=1e-6)
    best = int(top[np.argmax(final(full.final[top]))])
    assert int(res.best_index) == best
    np.testing.assert_allclose(res.best, full.final[best], rtol=1e-5, atol=1e-6)
    assert int(res.nfe) == dp.prune_nfe(10, 6, (3,), (2,)) == 6 * 4 + 2 * 6
    assert int(res.rm_calls) == 6 + 2


def test_two_prunes_and_a_prune_at_the_last_step():
    keys, x_T = _inputs(8, 1)
    score = lambda x0h, xt, t: -jnp.sum(jnp.square(x0h - 0.5), -1)  # noqa: E731
    final = lambda x: x[:, 0]  # noqa: E731
    full = sample(APPLY, None, SCHED, keys, x_T, TS)
    res = dp.prune_sample(APPLY, None, SCHED, keys, x_T, TS, prune_steps=(2, 6), keep=(4, 2),
                          score_fn=score, final_score_fn=final)
    assert [s.shape for s in res.stage_scores] == [(8,), (4,)]
    np.testing.assert_allclose(res.final, full.final[np.asarray(res.index)], rtol=1e-5,
                               atol=1e-6)
    assert int(res.nfe) == dp.prune_nfe(10, 8, (2, 6), (4, 2))
    last = dp.prune_sample(APPLY, None, SCHED, keys, x_T, TS, prune_steps=(9,), keep=(3,),
                           score_fn=score, final_score_fn=final)
    assert int(last.nfe) == 80
    np.testing.assert_allclose(last.final, full.final[np.asarray(last.index)], rtol=1e-5,
                               atol=1e-6)


def test_best_of_n_is_the_no_prune_case_and_vmaps_over_searches():
    keys, x_T = _inputs(4, 2)
    final = lambda x: x[:, 1]  # noqa: E731
    res = dp.prune_sample(APPLY, None, SCHED, keys, x_T, TS, prune_steps=(), keep=(),
                          score_fn=None, final_score_fn=final)
    full = sample(APPLY, None, SCHED, keys, x_T, TS)
    assert int(res.best_index) == int(np.argmax(full.final[:, 1])) and int(res.nfe) == 40
    # three independent searches in one program
    many_keys = jnp.stack([_inputs(4, s)[0] for s in range(3)])
    many_x = jnp.stack([_inputs(4, s)[1] for s in range(3)])
    out = jax.jit(jax.vmap(lambda k, x: dp.prune_sample(
        APPLY, None, SCHED, k, x, TS, prune_steps=(4,), keep=(2,),
        score_fn=lambda x0h, xt, t: x0h[:, 1], final_score_fn=final).best))(many_keys, many_x)
    for s in range(3):
        one = dp.prune_sample(APPLY, None, SCHED, many_keys[s], many_x[s], TS, prune_steps=(4,),
                              keep=(2,), score_fn=lambda x0h, xt, t: x0h[:, 1],
                              final_score_fn=final)
        np.testing.assert_allclose(out[s], one.best, rtol=1e-5, atol=1e-6)
