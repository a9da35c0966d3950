"""Scaled BT, regression, Gaussian ranking, GPM, PRM step BCE, contrastive term."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
from jax.test_util import check_grads
from scipy.stats import norm

from alignax.losses import (bradley_terry_loss, contrastive_representation_loss,
                            gaussian_ranking_loss, gpm_loss, prm_step_loss, regression_loss,
                            scaled_bradley_terry_loss)

RNG = np.random.default_rng(0)


def test_scaled_bradley_terry():
    c, r = RNG.normal(size=(2, 8)).astype(np.float32)
    m = RNG.integers(1, 4, 8).astype(np.float32)
    np.testing.assert_allclose(scaled_bradley_terry_loss(c, r, strength=m),
                               m * bradley_terry_loss(c, r), rtol=1e-6)


def test_regression_masked_equals_sliced():
    pred = RNG.normal(size=(3, 4)).astype(np.float32)
    target = RNG.normal(size=(3, 4)).astype(np.float32)
    mask = np.array([[1, 1, 0, 0], [1, 1, 1, 1], [0, 1, 0, 0]], np.float32)
    out = regression_loss(pred, target, mask)
    expected = [np.mean((pred[i] - target[i])[mask[i] > 0] ** 2) for i in range(3)]
    np.testing.assert_allclose(out, expected, rtol=1e-6)
    np.testing.assert_allclose(regression_loss(pred[:, 0], target[:, 0]),
                               (pred[:, 0] - target[:, 0]) ** 2, rtol=1e-6)


def test_gaussian_ranking_matches_the_normal_cdf_and_is_stable():
    mc, mr = RNG.normal(size=(2, 6))
    lc, lr = RNG.normal(size=(2, 6)) * 0.5
    out = gaussian_ranking_loss(*(np.float32(x) for x in (mc, lc, mr, lr)))
    expected = -norm.logcdf((mc - mr) / np.sqrt(np.exp(lc) + np.exp(lr)))
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-6)
    z = jnp.zeros(1)
    big = gaussian_ranking_loss(jnp.array([-1e3]), z, jnp.array([1e3]), z)
    assert np.isfinite(np.asarray(big)).all() and float(big[0]) > 1e5
    g = jax.grad(lambda m: gaussian_ranking_loss(m, z, -m, z).sum())(jnp.array([-1e3]))
    assert np.isfinite(np.asarray(g)).all()
    check_grads(lambda a, b: gaussian_ranking_loss(a, b, jnp.zeros(2), jnp.zeros(2)).sum(),
                (jnp.array([0.3, -0.2]), jnp.array([0.1, 0.4])), order=1, modes=["rev"],
                atol=1e-2, rtol=1e-2)


def test_gpm_loss_swap_symmetry():
    v = jnp.asarray(RNG.normal(size=(5, 4)), jnp.float32)
    w = jnp.asarray(RNG.normal(size=(5, 4)), jnp.float32)
    a, b = gpm_loss(v, w), gpm_loss(w, v)
    # skew-symmetric score: L(v, w) - L(w, v) = -s(v, w); and P(v>w) + P(w>v) = 1
    np.testing.assert_allclose(np.exp(-a) + np.exp(-b), 1.0, rtol=1e-5)
    np.testing.assert_allclose(gpm_loss(v, v), np.log(2) * np.ones(5), rtol=1e-6)


def test_contrastive_representation_loss():
    x = jnp.asarray(RNG.normal(size=(4, 8)), jnp.float32)
    assert float(contrastive_representation_loss(x, x).mean()) < float(
        contrastive_representation_loss(x, x[::-1]).mean())


class TestGoldenValues(chex.TestCase):
    """Hand-computed values, each checked with and without jit."""

    @chex.variants(with_jit=True, without_jit=True)
    def test_gaussian_ranking_golden(self):
        # equal means -> -log(1/2)
        z = jnp.zeros(1)
        chex.assert_trees_all_close(self.variant(gaussian_ranking_loss)(z, z, z, z),
                                    np.array([np.log(2)]), rtol=1e-6)

    @chex.variants(with_jit=True, without_jit=True)
    def test_prm_step_loss(self):
        logits = jnp.array([[2.0, -1.0, 0.0], [0.5, 0.5, 0.5]])
        labels = jnp.array([[1.0, 0.0, 1.0], [1.0, 1.0, 1.0]])
        mask = jnp.array([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
        sp = lambda x: np.log1p(np.exp(x))  # noqa: E731  -log sigmoid(-x)
        expected = np.array([(sp(-2.0) + sp(-1.0)) / 2, sp(-0.5)])
        chex.assert_trees_all_close(self.variant(prm_step_loss)(logits, labels, mask), expected,
                                    rtol=1e-6)

    @chex.variants(with_jit=True, without_jit=True)
    def test_contrastive_representation_golden(self):
        a = jnp.eye(3)
        out = self.variant(lambda *x: contrastive_representation_loss(*x, temperature=1.0))(a, a)
        # cos = 1 on the diagonal, 0 elsewhere: -log(e / (e + 2))
        chex.assert_trees_all_close(out, -np.log(np.e / (np.e + 2)) * np.ones(3), rtol=1e-6)
