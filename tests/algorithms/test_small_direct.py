"""Online / offline pair losses and best-of-K SFT for sequence-table policies.

The offline, best-of-K and SFT losses run jitted (eagerly every primitive compiles on its own);
the online and RLOO checks stay eager (RLOO's zero gradient is exact there)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from alignax.algorithms import small_direct
from alignax.algorithms.small_pg import rl_batch
from alignax.losses.direct import ipo_loss
from alignax.models import sequence_table as st
from alignax.train.small import fit_small

SPACE = st.SequenceSpace(3, 2)


def _data(**extra):
    z = np.array([[1.0, 0.0], [0.0, 1.0]], np.float32)
    ref = st.init_table(SPACE, 2)
    ref_logp = np.asarray(st.sequence_log_probs(SPACE, ref, jnp.asarray(z)))
    score = np.tile(np.arange(SPACE.num_sequences, dtype=np.float32), (2, 1))  # last is best
    return ref, {"z": z, "ref_logp": ref_logp, "score": score, "beta": np.float32(0.5),
                 **extra}


def test_offline_loss_is_the_pair_loss_on_the_dataset():
    ref, d = _data(prompt=np.array([1], np.int32), chosen=np.array([4], np.int32),
                   rejected=np.array([2], np.int32))
    loss_fn = small_direct.offline_pair_loss(SPACE, ipo_loss, num_pairs=3)

    @jax.jit
    def run(d):
        params = st.init_table(SPACE, 2, key=jax.random.key(0), scale=0.5)
        loss, m = loss_fn(params, {"rng": jax.random.key(1), "data": d})
        lp = st.sequence_log_probs(SPACE, params, d["z"][1])
        want, _ = ipo_loss(lp[4:5], lp[2:3], d["ref_logp"][1, 4:5], d["ref_logp"][1, 2:3],
                           beta=0.5)
        return loss, m, want

    loss, m, want = run(d)
    assert float(loss) == pytest.approx(float(want[0]), rel=1e-5)
    assert float(m["same_response"]) == 0.0


def test_online_loss_labels_by_score_and_moves_mass_to_the_best():
    ref, d = _data()
    loss_fn = small_direct.online_pair_loss(SPACE, ipo_loss, num_pairs=32)
    _, m = loss_fn(ref, {"rng": jax.random.key(0), "data": d})
    assert float(m["score_gap"]) > 0 and np.isfinite(float(m["margin"]))
    grads = jax.grad(lambda p: loss_fn(p, {"rng": jax.random.key(0), "data": d})[0])(ref)
    assert float(jnp.abs(grads["bias"]).sum()) > 0


@pytest.mark.slow  # an end-to-end training run: the system tier (make test-slow)
def test_online_and_best_of_k_training_raise_the_score(tmp_path):
    ref, d = _data()
    before = float(st.expectation(SPACE, ref, d["score"], jnp.asarray(d["z"])).mean())
    for name, loss_fn in (
            ("online", small_direct.online_pair_loss(SPACE, ipo_loss, num_pairs=32)),
            ("sft", small_direct.best_of_k_sft_loss(SPACE, num_prompts=16, k=4))):
        fit = fit_small(str(tmp_path / name), loss_fn=loss_fn, init_params=ref,
                        tx=optax.adam(0.1), num_steps=40, data=d, batch_fn=rl_batch,
                        has_aux=True, steps_per_log=20)
        p = jax.tree.map(lambda x: x[0], fit.params)
        after = float(st.expectation(SPACE, p, d["score"], jnp.asarray(d["z"])).mean())
        assert after > before + 1.0, (name, before, after)


def test_best_of_k_sft_is_the_nll_of_the_best_draw():
    ref, d = _data()
    loss_fn = small_direct.best_of_k_sft_loss(SPACE, num_prompts=4, k=SPACE.num_sequences * 8)
    # with many draws the best of each prompt is almost surely the best sequence (index 8)
    loss, m = jax.jit(loss_fn)(ref, {"rng": jax.random.key(0), "data": d})
    assert float(loss) == pytest.approx(np.log(SPACE.num_sequences), rel=1e-5)
    assert float(m["best_score"]) == SPACE.num_sequences - 1


def test_sft_loss_is_the_mean_nll_of_the_examples():
    ref, d = _data(prompt=np.array([0, 1], np.int32), response=np.array([3, 3], np.int32))
    loss_fn = small_direct.sft_loss(SPACE, num_examples=8)
    loss, _ = jax.jit(loss_fn)(ref, {"rng": jax.random.key(0), "data": d})
    assert float(loss) == pytest.approx(np.log(SPACE.num_sequences), rel=1e-5)


def test_rloo_loss_baseline_and_training(tmp_path):
    ref, d = _data(kl_coef=np.float32(0.0))
    loss_fn = small_direct.rloo_loss(SPACE, num_prompts=8, k=4)
    # a constant score gives zero advantages: zero gradient
    flat = dict(d, score=np.ones_like(d["score"]))
    g = jax.grad(lambda p: loss_fn(p, {"rng": jax.random.key(0), "data": flat})[0])(ref)
    assert float(jnp.abs(g["bias"]).max()) == 0.0
    with pytest.raises(ValueError):
        small_direct.rloo_loss(SPACE, num_prompts=8, k=1)
    before = float(st.expectation(SPACE, ref, d["score"], jnp.asarray(d["z"])).mean())
    fits = {}
    for coef in (0.0, 5.0):  # kl_coef read from the data: both fits run one compiled program
        fit = fit_small(str(tmp_path / str(coef)), loss_fn=loss_fn, init_params=ref,
                        tx=optax.adam(0.1), num_steps=60, data=dict(d, kl_coef=np.float32(coef)),
                        batch_fn=rl_batch, has_aux=True, steps_per_log=30)
        fits[coef] = jax.tree.map(lambda x: x[0], fit.params)
    z = jnp.asarray(d["z"])
    after = float(st.expectation(SPACE, fits[0.0], d["score"], z).mean())
    assert after > before + 1.0
    kls = {c: float(st.sequence_kl(SPACE, p, ref, z).mean()) for c, p in fits.items()}
    assert kls[5.0] < kls[0.0]  # the KL penalty keeps the policy closer to the reference


def test_best_of_n_probs_matches_brute_force():
    import itertools
    v = np.array([0.0, 2.0, 1.0, 2.0, -1.0], np.float32)  # a tie at the top
    p = np.array([0.1, 0.2, 0.3, 0.15, 0.25])
    lp = np.log(p)
    for n in (1, 2, 3):
        want = np.zeros(5)
        for draw in itertools.product(range(5), repeat=n):
            w = np.prod(p[list(draw)])
            best = max(v[list(draw)])
            tied = [y for y in draw if v[y] == best]
            for y in tied:  # ties shared uniformly among the tied draws ~ in proportion to p
                want[y] += w / len(tied)
        got = np.asarray(small_direct.best_of_n_probs(v, lp, n))
        np.testing.assert_allclose(got.sum(), 1.0, atol=1e-6)
        # the tie class's total and every untied response are exact
        np.testing.assert_allclose(got[[0, 2, 4]], want[[0, 2, 4]], atol=1e-6)
        np.testing.assert_allclose(got[1] + got[3], want[1] + want[3], atol=1e-6)
    np.testing.assert_allclose(small_direct.best_of_n_probs(v, lp, 1), p, atol=1e-6)
    two = np.asarray(small_direct.best_of_n_probs(np.stack([v, -v]), np.stack([lp, lp]), 4))
    assert two.shape == (2, 5) and two[1].argmax() == 4
