"""Gaussian-reward segment preference loss (PEARL robust reward learning)."""

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from alignax.losses.segment import gaussian_segment_preference_loss

loss_fn = jax.jit(gaussian_segment_preference_loss, static_argnames=("kl_weight",))


def phi(z):
    return 0.5 * (1.0 + math.erf(z / math.sqrt(2.0)))


def naive(mc, lvc, mr, lvr, maskc, maskr, y, kl_weight):
    out = []
    for b in range(len(mc)):
        c, r = maskc[b] > 0, maskr[b] > 0
        m1, m2 = mc[b][c].sum(), mr[b][r].sum()
        v = np.exp(lvc[b][c]).sum() + np.exp(lvr[b][r]).sum()
        p = phi((m1 - m2) / math.sqrt(v))
        kl = [0.5 * (mu**2 + math.exp(lv) - 1 - lv) for mu, lv in
              list(zip(mc[b][c], lvc[b][c])) + list(zip(mr[b][r], lvr[b][r]))]
        out.append(-y[b] * math.log(p) - (1 - y[b]) * math.log(1 - p)
                   + kl_weight * np.mean(kl))
    return np.array(out)


def random_batch(seed, b=6, length=4):
    rng = np.random.default_rng(seed)
    arrays = [rng.normal(size=(b, length)).astype(np.float32) * s for s in (1.0, 0.5, 1.0, 0.5)]
    masks = [(rng.random((b, length)) < 0.8).astype(np.float32) for _ in range(2)]
    for m in masks:
        m[:, 0] = 1.0
    y = rng.random(b).astype(np.float32)
    return arrays, masks, y


class TestGoldenValues(chex.TestCase):
    """Hand-computed values, each checked with and without jit."""

    @chex.variants(with_jit=True, without_jit=True)
    def test_golden_value(self):
        # one step each: means 1 and 0, variances 0.5 + 0.5 -> P = Phi(1), loss = -log Phi(1)
        lv = np.log(np.full((1, 1), 0.5, np.float32))
        one, zero = np.ones((1, 1)), np.zeros((1, 1))
        got = self.variant(gaussian_segment_preference_loss)(one, lv, zero, lv, one, one)
        chex.assert_trees_all_close(got, np.array([-math.log(phi(1.0))]), rtol=1e-6)
        # KL of N(1, 0.5) and N(0, 0.5) to N(0, 1): (1 + 0.5 - 1 - log 0.5) / 2 and (0.5 - 1 -
        # log 0.5) / 2, averaged over the two steps, times kl_weight = 2 (static, closed over)
        kl = 0.5 * ((1 + 0.5 - 1 - math.log(0.5)) + (0.5 - 1 - math.log(0.5))) / 2
        got = self.variant(lambda *a: gaussian_segment_preference_loss(*a, kl_weight=2.0))(
            one, lv, zero, lv, one, one)
        chex.assert_trees_all_close(got, np.array([-math.log(phi(1.0)) + 2 * kl]), rtol=1e-6)


@pytest.mark.parametrize("kl_weight", [0.0, 0.3])
def test_matches_naive_numpy(kl_weight):
    (mc, lvc, mr, lvr), (maskc, maskr), y = random_batch(0)
    got = loss_fn(mc, lvc, mr, lvr, maskc, maskr, y, kl_weight=kl_weight)
    want = naive(mc, lvc, mr, lvr, maskc, maskr, y, kl_weight)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_swap_symmetry_and_half_label():
    (mc, lvc, mr, lvr), (maskc, maskr), y = random_batch(1)
    a = loss_fn(mc, lvc, mr, lvr, maskc, maskr, y, kl_weight=0.1)
    b = loss_fn(mr, lvr, mc, lvc, maskr, maskc, 1.0 - y, kl_weight=0.1)
    np.testing.assert_allclose(a, b, rtol=1e-5)
    # equal returns: P = 1/2 whatever the label
    z = np.zeros((2, 3), np.float32)
    got = loss_fn(z, z, z, z, np.ones((2, 3)), np.ones((2, 3)), np.array([0.0, 1.0]))
    np.testing.assert_allclose(got, [math.log(2.0)] * 2, rtol=1e-6)


def test_masked_equals_sliced():
    (mc, lvc, mr, lvr), _, y = random_batch(2)
    mask = np.ones_like(mc)
    mask[:, 2:] = 0.0
    padded = loss_fn(mc, lvc, mr, lvr, mask, mask, y, kl_weight=0.2)
    padded_garbage = loss_fn(np.where(mask > 0, mc, 1e6), np.where(mask > 0, lvc, 50.0), mr, lvr,
                             mask, mask, y, kl_weight=0.2)
    sliced = loss_fn(mc[:, :2], lvc[:, :2], mr[:, :2], lvr[:, :2], mask[:, :2], mask[:, :2], y,
                     kl_weight=0.2)
    np.testing.assert_allclose(padded, sliced, rtol=1e-6)
    np.testing.assert_allclose(padded_garbage, sliced, rtol=1e-6)


def test_larger_variance_moves_p_towards_half():
    mc, mr, m = np.ones((1, 2)), np.zeros((1, 2)), np.ones((1, 2))
    losses = [float(loss_fn(mc, np.full((1, 2), lv), mr, np.full((1, 2), lv), m, m)[0])
              for lv in (-2.0, 0.0, 2.0, 6.0)]
    assert losses == sorted(losses) and abs(losses[-1] - math.log(2.0)) < 0.05


def test_gradients_and_extremes():
    (mc, lvc, mr, lvr), (maskc, maskr), y = random_batch(3, b=3, length=3)
    f = lambda a, b, c, d: jnp.sum(gaussian_segment_preference_loss(  # noqa: E731
        a, b, c, d, maskc, maskr, y, kl_weight=0.5))
    check_grads(f, tuple(jnp.asarray(x) for x in (mc, lvc, mr, lvr)), order=1, modes=("rev",),
                atol=5e-2, rtol=5e-2)
    big = np.full((2, 2), 1e3, np.float32)
    for means, log_vars in ((big, np.full((2, 2), -30.0, np.float32)),
                            (-big, np.full((2, 2), 30.0, np.float32))):
        grads = jax.grad(lambda a, b: jnp.sum(gaussian_segment_preference_loss(
            a, b, -a, b, np.ones((2, 2)), np.ones((2, 2)), kl_weight=0.1)), argnums=(0, 1))(
                jnp.asarray(means), jnp.asarray(log_vars))
        assert all(np.all(np.isfinite(g)) for g in grads)


def test_shape_errors():
    x = np.zeros((2, 3))
    # chex asserts (trace-time): AssertionError naming the arguments
    with pytest.raises(AssertionError, match=r"input 0 has rank 1 .* but expected 2\. "
                                             r"\[chosen_means, rejected_means\]"):
        gaussian_segment_preference_loss(np.zeros(3), np.zeros(3), x, x, np.ones(3), x)
    with pytest.raises(AssertionError, match=r"different shapes.*"
                                             r"\[chosen_means, chosen_log_vars, chosen_mask\]"):
        gaussian_segment_preference_loss(x, np.zeros((2, 2)), x, x, x, x)
    with pytest.raises(AssertionError, match=r"different shapes at dims 0: \[2, 3\] "
                                             r"\[chosen and rejected batch sizes\]"):
        gaussian_segment_preference_loss(x, x, np.zeros((3, 3)), np.zeros((3, 3)), x,
                                         np.zeros((3, 3)))
    with pytest.raises(AssertionError, match=r"shape \(3,\) but expected \(2\)\. \[labels\]"):
        gaussian_segment_preference_loss(x, x, x, x, x, x, np.ones(3))
