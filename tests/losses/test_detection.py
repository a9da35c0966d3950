"""Tests of the ReMoDetect objectives (alignax.losses.detection)."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from alignax.losses.detection import ordered_triplet_loss, remodetect_loss, replay_regularizer


def _softplus(x):
    return np.log1p(np.exp(-np.abs(x))) + np.maximum(-x, 0.0)  # -log sigmoid(x)


def _naive_triplet(lm, mix, hu):
    lm, mix, hu = (np.asarray(a, np.float64) for a in (lm, mix, hu))
    return _softplus(lm - mix) + _softplus(mix - hu) + _softplus(lm - hu)


class TestGoldenValues(chex.TestCase):
    """Hand-computed values, each checked with and without jit."""

    @chex.variants(with_jit=True, without_jit=True)
    def test_triplet_golden_values(self):
        loss = self.variant(ordered_triplet_loss)
        # all equal: three terms of log 2
        out = loss(jnp.zeros(2), jnp.zeros(2), jnp.zeros(2))
        chex.assert_trees_all_close(out, 3 * np.log(2.0) * np.ones(2), rtol=1e-6)
        # lm=2, mix=1, hu=0: 2 log(1 + e^-1) + log(1 + e^-2)
        out = loss(jnp.array([2.0]), jnp.array([1.0]), jnp.array([0.0]))
        want = 2 * np.log1p(np.exp(-1.0)) + np.log1p(np.exp(-2.0))
        chex.assert_trees_all_close(out, np.array([want]), rtol=1e-6)

    @chex.variants(with_jit=True, without_jit=True)
    def test_replay_regularizer_golden_values(self):
        r = jnp.array([1.0, -2.0, 0.5])
        r0 = jnp.array([0.0, -1.0, 0.5])
        chex.assert_trees_all_close(self.variant(replay_regularizer)(r, r0),
                                    np.array([1.0, 1.0, 0.0]), rtol=1e-7)


def test_triplet_matches_numpy_reference():
    rng = np.random.default_rng(0)
    lm, mix, hu = (rng.normal(size=16).astype(np.float32) * 3 for _ in range(3))
    np.testing.assert_allclose(jax.jit(ordered_triplet_loss)(lm, mix, hu),
                               _naive_triplet(lm, mix, hu), rtol=1e-5, atol=1e-6)


def test_triplet_order_symmetry():
    """Reversing the order (lm <-> hu, negated scores) leaves the loss unchanged, and the loss is
    lower for the correctly ordered triplet than for its reverse."""
    rng = np.random.default_rng(1)
    lm, mix, hu = (rng.normal(size=8).astype(np.float32) for _ in range(3))
    np.testing.assert_allclose(ordered_triplet_loss(lm, mix, hu),
                               ordered_triplet_loss(-hu, -mix, -lm), rtol=1e-6)
    good = ordered_triplet_loss(jnp.array([3.0]), jnp.array([2.0]), jnp.array([1.0]))
    bad = ordered_triplet_loss(jnp.array([1.0]), jnp.array([2.0]), jnp.array([3.0]))
    assert float(good[0]) < float(bad[0])
    # invariant to a common shift of the three rewards
    np.testing.assert_allclose(ordered_triplet_loss(lm, mix, hu),
                               ordered_triplet_loss(lm + 5, mix + 5, hu + 5), rtol=1e-5)


def test_triplet_gradients():
    rng = np.random.default_rng(2)
    lm, mix, hu = (jnp.asarray(rng.normal(size=4), jnp.float32) for _ in range(3))
    check_grads(lambda a, b, c: ordered_triplet_loss(a, b, c).sum(), (lm, mix, hu), order=2,
                modes=["rev"], atol=1e-2, rtol=1e-2)


def test_extreme_inputs_are_finite():
    big = jnp.array([1e4, -1e4, 0.0], jnp.float32)
    g = jax.grad(lambda a, b, c: ordered_triplet_loss(a, b, c).sum(), argnums=(0, 1, 2))(
        big, -big, big[::-1])
    assert all(np.isfinite(np.asarray(x)).all() for x in g)
    val = ordered_triplet_loss(big, -big, big[::-1])
    assert np.isfinite(np.asarray(val)).all()


def test_replay_regularizer_stop_gradient():
    r = jnp.array([1.0, -2.0, 0.5])
    r0 = jnp.array([0.0, -1.0, 0.5])
    g_r, g_r0 = jax.grad(lambda a, b: replay_regularizer(a, b).sum(), argnums=(0, 1))(r, r0)
    np.testing.assert_allclose(g_r, 2 * (r - r0))
    np.testing.assert_allclose(g_r0, np.zeros(3))
    check_grads(lambda a: replay_regularizer(a, r0).sum(), (r,), order=2, modes=["rev"])


def test_remodetect_loss_combines_terms():
    rng = np.random.default_rng(3)
    lm, mix, hu = (rng.normal(size=5).astype(np.float32) for _ in range(3))
    rep, rep0 = rng.normal(size=7).astype(np.float32), rng.normal(size=7).astype(np.float32)
    fn = jax.jit(lambda *a: remodetect_loss(*a, replay_coef=0.3))
    want = _naive_triplet(lm, mix, hu).mean() + 0.3 * ((rep - rep0) ** 2).mean()
    np.testing.assert_allclose(fn(lm, mix, hu, rep, rep0), want, rtol=1e-5)
    # lambda = 0 ignores the replay batch
    np.testing.assert_allclose(remodetect_loss(lm, mix, hu, rep, rep0 + 100.0, replay_coef=0.0),
                               _naive_triplet(lm, mix, hu).mean(), rtol=1e-5)


def test_no_retrace():
    traces = []

    @jax.jit
    def f(a, b, c):
        traces.append(1)
        return ordered_triplet_loss(a, b, c)

    x = jnp.ones(3)
    f(x, x, x)
    f(x + 1, x, x)
    assert len(traces) == 1


def test_shape_errors():
    # shape checks are chex asserts (trace-time): AssertionError naming the arguments
    with pytest.raises(AssertionError,
                       match=r"different shapes: \[\(3,\), \(4,\), \(3,\)\]\. "
                             r"\[lm_rewards, mix_rewards, human_rewards\]"):
        ordered_triplet_loss(jnp.zeros(3), jnp.zeros(4), jnp.zeros(3))
    with pytest.raises(AssertionError, match=r"rank 2 .* but expected 1\. \[lm_rewards\]"):
        ordered_triplet_loss(jnp.zeros((3, 2)), jnp.zeros((3, 2)), jnp.zeros((3, 2)))
    with pytest.raises(AssertionError, match=r"different shapes.*\[rewards, init_rewards\]"):
        replay_regularizer(jnp.zeros(3), jnp.zeros(2))
    with pytest.raises(ValueError, match="replay_coef"):
        remodetect_loss(jnp.zeros(2), jnp.zeros(2), jnp.zeros(2), jnp.zeros(2), jnp.zeros(2),
                        replay_coef=-1.0)
