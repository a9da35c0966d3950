"""Bradley-Terry loss and pairwise accuracy."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from alignax.losses import bradley_terry_loss, pairwise_accuracy


def naive_bt(c, r, margin=0.0, eps=0.0):
    d = np.asarray(c, np.float64) - np.asarray(r, np.float64) - margin
    nll = lambda z: np.log1p(np.exp(-z))  # noqa: E731  -log sigmoid(z)
    return (1 - eps) * nll(d) + eps * nll(-d)


class TestGoldenValues(chex.TestCase):
    """Hand-computed values, each checked with and without jit."""

    @chex.variants(with_jit=True, without_jit=True)
    def test_golden_values(self):
        f = self.variant(bradley_terry_loss)
        # -log sigmoid(1) = log(1 + e^-1) = 0.3132617; -log sigmoid(0) = log 2;
        # -log sigmoid(-2) = 2.126928
        chex.assert_trees_all_close(f(jnp.array([1.0, 0.0, -1.0]), jnp.array([0.0, 0.0, 1.0])),
                                    np.array([0.3132617, 0.6931472, 2.1269280]), rtol=1e-6)
        # margin 0.5 on d = 1: -log sigmoid(0.5) = 0.4740770
        chex.assert_trees_all_close(f(jnp.array([1.0]), jnp.array([0.0]), margin=0.5),
                                    np.array([0.4740770]), rtol=1e-6)
        # label smoothing 0.1 on d = 1: 0.9 * 0.3132617 + 0.1 * 1.3132617 = 0.4132617
        chex.assert_trees_all_close(f(jnp.array([1.0]), jnp.array([0.0]), label_smoothing=0.1),
                                    np.array([0.4132617]), rtol=1e-6)

    @chex.variants(with_jit=True, without_jit=True)
    def test_pairwise_accuracy(self):
        chex.assert_trees_all_equal(
            self.variant(pairwise_accuracy)(jnp.array([1.0, 0.0, 2.0]), jnp.array([0.0, 0.0, 3.0])),
            np.array([1.0, 0.5, 0.0]))


def test_matches_numpy_reference():
    rng = np.random.default_rng(0)
    c, r = rng.normal(size=(2, 64)) * 5
    m = rng.uniform(0, 1, size=64)
    np.testing.assert_allclose(
        bradley_terry_loss(c.astype(np.float32), r.astype(np.float32), margin=m.astype(np.float32),
                           label_smoothing=0.2),
        naive_bt(c, r, m, 0.2), rtol=2e-5, atol=1e-6)


def test_swap_identity():
    # L(c, r) - L(r, c) = -log sigma(d) + log sigma(-d) = -d
    rng = np.random.default_rng(1)
    c, r = (rng.normal(size=(2, 16)) * 3).astype(np.float32)
    np.testing.assert_allclose(bradley_terry_loss(c, r) - bradley_terry_loss(r, c), -(c - r),
                               rtol=1e-5, atol=1e-5)


def test_gradients_numerical_and_finite_at_extremes():
    c = jnp.array([0.3, -1.2, 2.0])
    r = jnp.array([0.1, 0.4, -0.5])
    check_grads(lambda c, r: bradley_terry_loss(c, r, label_smoothing=0.1).sum(), (c, r),
                order=1, modes=["rev"], atol=1e-2, rtol=1e-2)
    big = jnp.array([1e4, -1e4])
    g = jax.grad(lambda c: bradley_terry_loss(c, -c).sum())(big)
    assert np.isfinite(np.asarray(g)).all()
    np.testing.assert_allclose(g, [0.0, -2.0], atol=1e-6)  # d = 2c: dL/dc = -2 sigma(-d)
    assert np.isfinite(np.asarray(bradley_terry_loss(big, -big))).all()


def test_shape_checks():
    # chex asserts (trace-time): AssertionError naming the arguments
    with pytest.raises(AssertionError, match=r"rank 2 .* but expected 1\. \[chosen_rewards\]"):
        bradley_terry_loss(jnp.zeros((2, 2)), jnp.zeros((2, 2)))
    with pytest.raises(AssertionError,
                       match=r"different shapes.*\[chosen_rewards, rejected_rewards\]"):
        bradley_terry_loss(jnp.zeros(3), jnp.zeros(4))
