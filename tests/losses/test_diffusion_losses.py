"""Diffusion losses by hand on small arrays: eps-prediction (weighted), reward weights, and the
DDPO clipped per-step policy loss with a timestep mask."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from alignax.losses.diffusion import ddpo_clip_loss, epsilon_loss, reward_weights


class TestGoldenValues(chex.TestCase):
    """Hand-computed values, each checked with and without jit."""

    @chex.variants(with_jit=True, without_jit=True)
    def test_epsilon_loss(self):
        pred = jnp.array([[1.0, 2.0], [0.0, -1.0]])
        noise = jnp.array([[0.0, 0.0], [0.0, 1.0]])
        # (1 + 4) / 2 = 2.5 and (0 + 4) / 2 = 2
        np.testing.assert_allclose(self.variant(epsilon_loss)(pred, noise), [2.5, 2.0])
        weighted = self.variant(lambda a, b, w: epsilon_loss(a, b, weights=w))
        np.testing.assert_allclose(weighted(pred, noise, jnp.array([0.5, 2.0])), [1.25, 4.0])
        images = jnp.ones((2, 2, 2, 1))
        np.testing.assert_allclose(self.variant(epsilon_loss)(images, 0 * images), [1.0, 1.0])

    @chex.variants(with_jit=True, without_jit=True)
    def test_reward_weights(self):
        weights = self.variant(lambda r: reward_weights(r, temperature=1.0))
        w = weights(jnp.array([0.0, jnp.log(3.0)]))
        np.testing.assert_allclose(w, [0.5, 1.5], rtol=1e-6)  # 2 * softmax: 2 * (1/4, 3/4)
        flat = reward_weights(jnp.array([1.0, 2.0, 3.0]), temperature=1e6)
        np.testing.assert_allclose(flat, 1.0, rtol=1e-5)

    @chex.variants(with_jit=True, without_jit=True)
    def test_ddpo_clip_loss(self):
        # K = 2 steps, B = 2 samples, clip 0.2
        logps = jnp.array([[jnp.log(1.5), 0.0], [jnp.log(0.9), jnp.log(0.5)]])
        old = jnp.zeros((2, 2))
        adv = jnp.array([1.0, -2.0])
        fn = self.variant(lambda *a: ddpo_clip_loss(*a, clip=0.2))
        per_sample, metrics = fn(logps, old, adv, jnp.array([True, True]))
        # sample 0 (A = 1): step 0 rho 1.5 -> max(-1.5, -1.2) = -1.2; step 1 rho 0.9 -> -0.9
        # sample 1 (A = -2): step 0 rho 1 -> 2; step 1 rho 0.5 -> max(1, 1.6) = 1.6
        np.testing.assert_allclose(per_sample, [(-1.2 - 0.9) / 2, (2.0 + 1.6) / 2], rtol=1e-6)
        np.testing.assert_allclose(metrics["clip_frac"], 2 / 4)
        kl = 0.5 * (np.log(1.5) ** 2 + np.log(0.9) ** 2 + np.log(0.5) ** 2) / 4
        np.testing.assert_allclose(metrics["approx_kl"], kl, rtol=1e-6)
        np.testing.assert_allclose(metrics["ratio_mean"], (1.5 + 1 + 0.9 + 0.5) / 4, rtol=1e-6)
        # timestep mask: only step 1 trained (backward-progressive interval)
        per_sample, metrics = fn(logps, old, adv, jnp.array([0, 1]))
        np.testing.assert_allclose(per_sample, [-0.9, 1.6], rtol=1e-6)
        np.testing.assert_allclose(metrics["clip_frac"], 1 / 2)


def test_ddpo_loss_masked_equals_sliced_and_ignores_garbage():
    rng = np.random.default_rng(0)
    logps = jnp.asarray(rng.normal(size=(5, 4)) * 0.1, jnp.float32)
    old = jnp.asarray(rng.normal(size=(5, 4)) * 0.1, jnp.float32)
    adv = jnp.asarray(rng.normal(size=4), jnp.float32)
    mask = jnp.array([0, 1, 1, 0, 1])
    masked, _ = ddpo_clip_loss(logps.at[0].set(jnp.inf), old, adv, mask, clip=0.05)
    sliced, _ = ddpo_clip_loss(logps[1:3], old[1:3], adv, jnp.ones(2), clip=0.05)
    last, _ = ddpo_clip_loss(logps[4:], old[4:], adv, jnp.ones(1), clip=0.05)
    np.testing.assert_allclose(masked, (2 * sliced + last) / 3, rtol=1e-6)
    # per-sample [K, B] mask and advantage clipping
    m2 = jnp.array([[1, 0, 1, 1]] * 5)
    per, _ = ddpo_clip_loss(logps, old, adv, m2, clip=0.05)
    assert float(per[1]) == 0.0
    clipped, _ = ddpo_clip_loss(logps, old, 10 * adv, mask, clip=0.05, advantage_clip=0.01)
    ref, _ = ddpo_clip_loss(logps, old, jnp.clip(10 * adv, -0.01, 0.01), mask, clip=0.05)
    np.testing.assert_allclose(clipped, ref)


def test_ddpo_gradient_matches_policy_gradient_inside_the_clip():
    # inside the trust region d loss / d logp = -A rho / (number of masked steps)
    logps = jnp.array([[0.01, -0.02], [0.0, 0.03]])
    adv = jnp.array([2.0, -1.0])
    grad = jax.grad(lambda lp: ddpo_clip_loss(lp, jnp.zeros((2, 2)), adv, jnp.ones(2),
                                              clip=0.5)[0].sum())(logps)
    np.testing.assert_allclose(grad, -adv[None] * jnp.exp(logps) / 2, rtol=1e-6)
    # outside it (ratio clipped in the direction of the advantage) the gradient vanishes
    grad = jax.grad(lambda lp: ddpo_clip_loss(lp, jnp.zeros((1, 1)), jnp.array([1.0]),
                                              jnp.ones(1), clip=0.1)[0].sum())(jnp.array([[0.5]]))
    np.testing.assert_array_equal(grad, 0.0)
    check_grads(lambda lp: ddpo_clip_loss(lp, jnp.zeros((2, 2)), adv, jnp.ones(2),
                                                        clip=0.5)[0], (logps,), order=1,
                              modes=["rev"])


def test_bad_shapes_and_temperature():
    with pytest.raises(AssertionError, match="advantages"):
        ddpo_clip_loss(jnp.zeros((2, 3)), jnp.zeros((2, 3)), jnp.zeros(2), jnp.ones(2))
    with pytest.raises(AssertionError, match="eps_pred"):
        epsilon_loss(jnp.zeros((2, 3)), jnp.zeros((2, 2)))
    with pytest.raises(ValueError, match="temperature"):
        reward_weights(jnp.zeros(3), temperature=0.0)
