"""DPO (with cDPO smoothing) and IPO."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from alignax.losses import dpo_loss, ipo_loss

RNG = np.random.default_rng(0)
PC, PR, RC, RR = (RNG.normal(size=(4, 32)) * 10).astype(np.float32)


class TestGoldenValues(chex.TestCase):
    """Hand-computed values, each checked with and without jit."""

    @chex.variants(with_jit=True, without_jit=True)
    def test_dpo_golden_values(self):
        # h = (pc - rc) - (pr - rr) = (-1 - -2) - (-3 - -2) = 2; beta 0.5 -> z = 1
        args = (jnp.array([-1.0]), jnp.array([-3.0]), jnp.array([-2.0]), jnp.array([-2.0]))
        loss, m = self.variant(lambda *a: dpo_loss(*a, beta=0.5))(*args)
        chex.assert_trees_all_close(loss, np.array([0.3132617]), rtol=1e-6)
        chex.assert_trees_all_close(m["chosen_rewards"], np.array([0.5]), rtol=1e-6)
        chex.assert_trees_all_close(m["rejected_rewards"], np.array([-0.5]), rtol=1e-6)
        chex.assert_trees_all_close(m["reward_margins"], np.array([1.0]), rtol=1e-6)
        chex.assert_trees_all_equal(m["reward_accuracies"], np.array([1.0]))
        # cDPO eps = 0.25: 0.75 * 0.3132617 + 0.25 * 1.3132617
        loss, _ = self.variant(lambda *a: dpo_loss(*a, beta=0.5, label_smoothing=0.25))(*args)
        chex.assert_trees_all_close(loss, np.array([0.5632617]), rtol=1e-6)
        # policy == reference: log 2 whatever beta
        loss, _ = self.variant(dpo_loss)(jnp.array([-4.0]), jnp.array([-7.0]),
                                         jnp.array([-4.0]), jnp.array([-7.0]))
        chex.assert_trees_all_close(loss, np.array([np.log(2)]), rtol=1e-6)

    @chex.variants(with_jit=True, without_jit=True)
    def test_ipo_golden_values(self):
        # h = 2, tau = 0.5 -> (2 - 1)^2 = 1; tau = 0.25 -> (2 - 2)^2 = 0
        args = (jnp.array([-1.0]), jnp.array([-3.0]), jnp.array([-2.0]), jnp.array([-2.0]))
        chex.assert_trees_all_close(self.variant(lambda *a: ipo_loss(*a, beta=0.5))(*args)[0],
                                    np.array([1.0]), rtol=1e-6)
        chex.assert_trees_all_close(self.variant(lambda *a: ipo_loss(*a, beta=0.25))(*args)[0],
                                    np.array([0.0]), rtol=1e-7, atol=1e-6)


def test_dpo_matches_numpy_reference():
    beta, eps = 0.2, 0.1
    h = (PC.astype(np.float64) - RC) - (PR.astype(np.float64) - RR)
    nll = lambda z: np.logaddexp(0, -z)  # noqa: E731
    expected = (1 - eps) * nll(beta * h) + eps * nll(-beta * h)
    loss, m = dpo_loss(PC, PR, RC, RR, beta=beta, label_smoothing=eps)
    np.testing.assert_allclose(loss, expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(m["reward_margins"], beta * h, rtol=1e-4, atol=1e-4)


def test_ipo_matches_numpy_reference():
    h = (PC.astype(np.float64) - RC) - (PR.astype(np.float64) - RR)
    np.testing.assert_allclose(ipo_loss(PC, PR, RC, RR, beta=0.3)[0], (h - 1 / 0.6) ** 2,
                               rtol=1e-4, atol=1e-3)


def test_swapping_chosen_and_rejected_flips_the_margins():
    _, m = dpo_loss(PC, PR, RC, RR, beta=0.1)
    _, m_swapped = dpo_loss(PR, PC, RR, RC, beta=0.1)
    np.testing.assert_allclose(m_swapped["reward_margins"], -m["reward_margins"], rtol=1e-6)
    # sigmoid DPO: L(h) - L(-h) = -beta h
    loss, _ = dpo_loss(PC, PR, RC, RR, beta=0.1)
    loss_swapped, _ = dpo_loss(PR, PC, RR, RC, beta=0.1)
    np.testing.assert_allclose(loss - loss_swapped, -m["reward_margins"], rtol=1e-4, atol=1e-5)
    # IPO is symmetric around h = 1/(2 tau), not around 0: swapping changes the loss
    assert not np.allclose(ipo_loss(PC, PR, RC, RR)[0], ipo_loss(PR, PC, RR, RC)[0])


@pytest.mark.parametrize("loss_fn", [dpo_loss, ipo_loss])
def test_gradients(loss_fn):
    args = tuple(jnp.asarray(x[:3] / 10) for x in (PC, PR, RC, RR))
    check_grads(lambda pc, pr: loss_fn(pc, pr, args[2], args[3], beta=0.5)[0].sum(), args[:2],
                order=1, modes=["rev"], atol=1e-2, rtol=1e-2)
    big = jnp.array([1e4, -1e4])
    g = jax.grad(lambda pc: loss_fn(pc, -pc, jnp.zeros(2), jnp.zeros(2))[0].sum())(big)
    assert np.isfinite(np.asarray(g)).all()


def test_reference_receives_no_gradient_through_the_loss_when_stopped():
    def f(ref):
        return dpo_loss(jnp.array([1.0]), jnp.array([0.0]), jax.lax.stop_gradient(ref),
                        jnp.array([0.0]))[0].sum()

    assert float(jax.grad(f)(jnp.array([0.5]))[0]) == 0.0
