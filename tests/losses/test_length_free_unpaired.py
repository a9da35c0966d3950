"""R-DPO, SimPO, CPO, ORPO and KTO against their published formulas."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from alignax.losses import cpo_loss, dpo_loss, kto_loss, orpo_loss, rdpo_loss, simpo_loss

RNG = np.random.default_rng(1)
B = 12
PC, PR = (-np.abs(RNG.normal(size=(2, B))) * 20 - 0.5).astype(np.float32)  # summed log-probs
RC, RR = (PC + RNG.normal(size=(2, B)).astype(np.float32))
LC, LR = RNG.integers(1, 30, size=(2, B)).astype(np.float32)


def logsig(x):
    return -np.logaddexp(0.0, -np.asarray(x, np.float64))


def test_rdpo():
    loss, _ = rdpo_loss(PC, PR, RC, RR, chosen_lengths=LC, rejected_lengths=LR, beta=0.2,
                        alpha=0.05)
    h = (PC.astype(np.float64) - RC) - (PR - RR)
    np.testing.assert_allclose(loss, -logsig(0.2 * h - 0.05 * (LC - LR)), rtol=1e-4, atol=1e-5)
    same = rdpo_loss(PC, PR, RC, RR, chosen_lengths=LC, rejected_lengths=LC, beta=0.2)[0]
    np.testing.assert_allclose(same, dpo_loss(PC, PR, RC, RR, beta=0.2)[0], rtol=1e-6)


def test_simpo():
    loss, m = jax.jit(lambda *a: simpo_loss(*a, chosen_lengths=LC, rejected_lengths=LR,
                                            beta=2.0, gamma=1.0))(PC, PR)
    expected = -logsig(2.0 * (PC / LC - PR / LR) - 1.0)
    np.testing.assert_allclose(loss, expected, rtol=1e-4, atol=1e-5)
    chex.assert_shape(m["reward_margins"], (B,))


def test_cpo():
    loss, _ = cpo_loss(PC, PR, chosen_lengths=LC, beta=0.1, alpha=0.7)
    expected = -logsig(0.1 * (PC.astype(np.float64) - PR)) + 0.7 * (-PC / LC)
    np.testing.assert_allclose(loss, expected, rtol=1e-4, atol=1e-5)


def test_orpo():
    loss, m = orpo_loss(PC, PR, chosen_lengths=LC, rejected_lengths=LR, lambda_=0.1)
    a_c, a_r = PC.astype(np.float64) / LC, PR.astype(np.float64) / LR
    log_odds = (a_c - a_r) - (np.log1p(-np.exp(a_c)) - np.log1p(-np.exp(a_r)))
    np.testing.assert_allclose(m["log_odds_ratio"], log_odds, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(loss, -a_c - 0.1 * logsig(log_odds), rtol=1e-4, atol=1e-5)
    # a near-zero average log-prob (p close to 1) stays finite, with finite gradients
    g = jax.grad(lambda pc: orpo_loss(pc, jnp.array([-5.0]), chosen_lengths=jnp.ones(1),
                                      rejected_lengths=jnp.ones(1))[0].sum())(jnp.array([-1e-9]))
    assert np.isfinite(np.asarray(g)).all()


class TestGoldenValues(chex.TestCase):
    """Hand-computed values, each checked with and without jit."""

    @chex.variants(with_jit=True, without_jit=True)
    def test_simpo_golden(self):
        # average log-probs -1 and -2, beta 2, gamma 1: -log sigmoid(2 - 1) = 0.3132617
        golden, _ = self.variant(lambda *a, **kw: simpo_loss(*a, **kw, beta=2.0, gamma=1.0))(
            jnp.array([-3.0]), jnp.array([-4.0]), chosen_lengths=jnp.array([3.0]),
            rejected_lengths=jnp.array([2.0]))
        chex.assert_trees_all_close(golden, np.array([0.3132617]), rtol=1e-6)

    @chex.variants(with_jit=True, without_jit=True)
    def test_orpo_golden(self):
        # equal average log-probs -> log odds ratio 0 -> NLL + lambda log 2
        golden, _ = self.variant(lambda *a, **kw: orpo_loss(*a, **kw, lambda_=0.5))(
            jnp.array([-2.0]), jnp.array([-4.0]), chosen_lengths=jnp.array([2.0]),
            rejected_lengths=jnp.array([4.0]))
        chex.assert_trees_all_close(golden, np.array([1.0 + 0.5 * np.log(2)]), rtol=1e-6)


def test_kto():
    desirable = RNG.random(B) < 0.5
    loss, m = kto_loss(PC, RC, desirable, kl=0.4, beta=0.3, desirable_weight=1.2,
                       undesirable_weight=0.8)
    r = PC.astype(np.float64) - RC
    sig = lambda x: 1 / (1 + np.exp(-x))  # noqa: E731
    expected = np.where(desirable, 1.2 * (1 - sig(0.3 * (r - 0.4))),
                        0.8 * (1 - sig(0.3 * (0.4 - r))))
    np.testing.assert_allclose(loss, expected, rtol=1e-4, atol=1e-6)
    # a negative KL estimate is clamped to 0, and the reference point gets no gradient
    np.testing.assert_allclose(kto_loss(PC, RC, desirable, kl=-1.0)[0],
                               kto_loss(PC, RC, desirable, kl=0.0)[0])
    g = jax.grad(lambda kl: kto_loss(PC, RC, desirable, kl=kl)[0].sum())(jnp.float32(0.5))
    assert float(g) == 0.0


@pytest.mark.parametrize("fn,kw", [
    (simpo_loss, dict(chosen_lengths=LC[:3], rejected_lengths=LR[:3])),
    (cpo_loss, dict(chosen_lengths=LC[:3])),
    (orpo_loss, dict(chosen_lengths=LC[:3], rejected_lengths=LR[:3])),
])
def test_reference_free_gradients(fn, kw):
    pc, pr = jnp.asarray(PC[:3]), jnp.asarray(PR[:3])
    check_grads(lambda a, b: fn(a, b, **kw)[0].sum(), (pc, pr), order=1, modes=["rev"],
                atol=2e-2, rtol=2e-2)
    big = jnp.array([-1e4, -1e-3, -3e3])
    g = jax.grad(lambda a: fn(a, big[::-1], **kw)[0].sum())(big)
    assert np.isfinite(np.asarray(g)).all()


def test_rdpo_and_kto_gradients():
    args = tuple(jnp.asarray(a[:3] / 10) for a in (PC, PR, RC, RR))
    check_grads(lambda a, b: rdpo_loss(a, b, args[2], args[3], chosen_lengths=LC[:3],
                                       rejected_lengths=LR[:3])[0].sum(), args[:2], order=1,
                modes=["rev"], atol=2e-2, rtol=2e-2)
    check_grads(lambda a: kto_loss(a, args[2], jnp.array([True, False, True]), kl=0.1)[0].sum(),
                (args[0],), order=1, modes=["rev"], atol=2e-2, rtol=2e-2)
