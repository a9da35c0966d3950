"""GPRC: prompt-anchored reference projection and the axis/perpendicular pair loss."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from alignax.losses.rubric import gprc_loss, reference_projection


def naive_projection(x, ref, y):
    x, ref, y = (np.asarray(a, np.float64) for a in (x, ref, y))
    s, p = [], []
    for xi, ri, yi in zip(x, ref, y):
        d = ri - xi
        nd = np.linalg.norm(d)
        u = d / nd
        v = yi - xi
        s.append(v @ u / nd)
        p.append((v - (v @ u) * u) / nd)
    return np.array(s), np.array(p)


class TestGoldenValues(chex.TestCase):
    """Hand-computed values, each checked with and without jit."""

    @chex.variants(with_jit=True, without_jit=True)
    def test_projection_golden(self):
        # x = 0, ref = (2, 0), y = (1, 3): d = (2, 0), |d| = 2, s = 1 / 2, p = (0, 3) / 2
        x = jnp.zeros((1, 2))
        ref = jnp.array([[2.0, 0.0]])
        y = jnp.array([[1.0, 3.0]])
        s, p = self.variant(reference_projection)(x, ref, y)
        chex.assert_trees_all_close(s, np.array([0.5]), rtol=1e-6)
        chex.assert_trees_all_close(p, np.array([[0.0, 1.5]]), rtol=1e-6)

    @chex.variants(with_jit=True, without_jit=True)
    def test_gprc_loss_golden(self):
        # -log sigmoid(1) = 0.3132617; penalty 0.5 * 0.2 * (0.5^2 + 1^2) = 0.125
        f = self.variant(lambda *a: gprc_loss(*a, perpendicular_weight=0.2))
        out = f(jnp.array([1.0]), jnp.array([0.0]), jnp.array([0.5]), jnp.array([1.0]))
        chex.assert_trees_all_close(out, np.array([0.3132617 + 0.125]), rtol=1e-6)
        # temperature 2 on a gap of 2: -log sigmoid(1); no axis scores needed without the penalty
        out = self.variant(lambda *a: gprc_loss(*a, temperature=2.0))(jnp.array([2.0]),
                                                                      jnp.array([0.0]))
        chex.assert_trees_all_close(out, np.array([0.3132617]), rtol=1e-6)


def test_projection_matches_numpy_and_geometry():
    rng = np.random.default_rng(0)
    x, ref, y = (rng.normal(size=(32, 5)).astype(np.float32) for _ in range(3))
    s, p = reference_projection(x, ref, y)
    s_ref, p_ref = naive_projection(x, ref, y)
    np.testing.assert_allclose(s, s_ref, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(p, p_ref, rtol=1e-4, atol=1e-5)
    # y - x = s d + p |d| and p is perpendicular to d
    d = ref - x
    nd = np.linalg.norm(d, axis=-1, keepdims=True)
    np.testing.assert_allclose(np.asarray(s)[:, None] * d + np.asarray(p) * nd, y - x,
                               rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(np.sum(np.asarray(p) * d, -1), 0.0, atol=1e-4)
    # the prompt sits at s = 0, the reference at s = 1, both on the axis
    s0, p0 = reference_projection(x, ref, x)
    s1, p1 = reference_projection(x, ref, ref)
    np.testing.assert_allclose(s0, 0.0, atol=1e-6)
    np.testing.assert_allclose(s1, 1.0, rtol=1e-5)
    np.testing.assert_allclose(p0, 0.0, atol=1e-6)
    np.testing.assert_allclose(p1, 0.0, atol=1e-5)


def test_projection_invariant_to_translation_and_scale():
    rng = np.random.default_rng(1)
    x, ref, y = (rng.normal(size=(8, 4)).astype(np.float32) for _ in range(3))
    shift = rng.normal(size=(1, 4)).astype(np.float32)
    s, p = reference_projection(x, ref, y)
    s2, p2 = reference_projection(3.0 * x + shift, 3.0 * ref + shift, 3.0 * y + shift)
    np.testing.assert_allclose(s2, s, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(p2, p, rtol=1e-4, atol=1e-5)


def test_projection_degenerate_axis_is_finite():
    x = jnp.ones((2, 3))
    s, p = reference_projection(x, x, x + 1.0)
    assert np.isfinite(np.asarray(s)).all() and np.isfinite(np.asarray(p)).all()
    g = jax.grad(lambda y: jnp.sum(reference_projection(x, x, y)[0]))(x + 1.0)
    assert np.isfinite(np.asarray(g)).all()


def naive_gprc(hi, lo, hi_par, lo_par, tau, lam):
    hi, lo, hi_par, lo_par = (np.asarray(a, np.float64) for a in (hi, lo, hi_par, lo_par))
    return np.log1p(np.exp(-(hi - lo) / tau)) + 0.5 * lam * ((hi - hi_par) ** 2
                                                             + (lo - lo_par) ** 2)


def test_gprc_loss_matches_numpy_and_swap_identity():
    rng = np.random.default_rng(2)
    hi, lo, hp, lp = (rng.normal(size=64).astype(np.float32) * 3 for _ in range(4))
    out = gprc_loss(hi, lo, hp, lp, temperature=0.7, perpendicular_weight=0.3)
    np.testing.assert_allclose(out, naive_gprc(hi, lo, hp, lp, 0.7, 0.3), rtol=1e-5, atol=1e-5)
    # swapping the pair changes only the ranking term: L(hi, lo) - L(lo, hi) = -(hi - lo) / tau
    swapped = gprc_loss(lo, hi, lp, hp, temperature=0.7, perpendicular_weight=0.3)
    np.testing.assert_allclose(out - swapped, -(hi - lo) / 0.7, rtol=1e-4, atol=1e-4)
    # scores equal to their on-axis scores: no penalty
    np.testing.assert_allclose(gprc_loss(hi, lo, hi, lo, perpendicular_weight=5.0),
                               gprc_loss(hi, lo), rtol=1e-6)


def test_gprc_gradients_and_extremes():
    rng = np.random.default_rng(3)
    args = tuple(jnp.asarray(rng.normal(size=5)) for _ in range(4))
    check_grads(lambda *a: jnp.sum(gprc_loss(*a, perpendicular_weight=0.5)), args, order=1,
                modes=["rev"], atol=1e-2, rtol=1e-2)
    big = jnp.array([1e4, -1e4])
    g = jax.grad(lambda h: jnp.sum(gprc_loss(h, -h, h, -h, perpendicular_weight=1.0)))(big)
    assert np.isfinite(np.asarray(g)).all()
    np.testing.assert_allclose(g, [0.0, -2.0], atol=1e-6)


def test_shape_and_argument_errors():
    # shape checks are chex asserts (trace-time): AssertionError naming the arguments
    with pytest.raises(AssertionError, match=r"different shapes: \[\(2, 3\), \(2, 3\), \(2, 4\)\]"
                                             r"\. \[prompt_emb, reference_emb, response_emb\]"):
        reference_projection(jnp.ones((2, 3)), jnp.ones((2, 3)), jnp.ones((2, 4)))
    with pytest.raises(AssertionError, match=r"rank 1 .* but expected 2\. \[prompt_emb\]"):
        reference_projection(jnp.ones(3), jnp.ones(3), jnp.ones(3))
    with pytest.raises(AssertionError, match=r"different shapes.*\[higher_scores, lower_scores\]"):
        gprc_loss(jnp.ones(3), jnp.ones(4))
    with pytest.raises(ValueError, match="needs higher_axis_scores"):
        gprc_loss(jnp.ones(3), jnp.ones(3), perpendicular_weight=0.1)
    with pytest.raises(ValueError, match="temperature must be > 0"):
        gprc_loss(jnp.ones(3), jnp.ones(3), temperature=0.0)
