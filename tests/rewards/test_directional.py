"""Directional rewards (DPA): unit directions, v^T r, angle bins and conditioning tokens, and the
preference-conditioned rejection-sampling selection."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from alignax.rewards.directional import (angle_bins, bin_centers, direction_tokens,
                                         directional_reward, select_by_direction,
                                         unit_directions)


def test_unit_directions_golden_and_unit_norm():
    v = jax.jit(unit_directions)(jnp.array([0.0, math.pi / 2, -math.pi / 4, math.pi]))
    s = math.sqrt(0.5)
    np.testing.assert_allclose(v, [[1, 0], [0, 1], [s, -s], [-1, 0]], atol=1e-6)
    angles = jnp.linspace(-3.0, 3.0, 13)
    np.testing.assert_allclose(jnp.linalg.norm(unit_directions(angles), axis=-1), 1.0, atol=1e-6)


def test_directional_reward_golden_and_numpy_reference():
    r = jnp.array([[2.0, 3.0], [-1.0, 4.0]])
    v = jnp.array([0.6, -0.8])
    np.testing.assert_allclose(jax.jit(directional_reward)(r, v), [1.2 - 2.4, -0.6 - 3.2],
                               rtol=1e-6)
    rng = np.random.default_rng(0)
    rb = rng.normal(size=(4, 5, 3)).astype(np.float32)
    vb = rng.normal(size=(4, 1, 3)).astype(np.float32)
    out = directional_reward(rb, vb, normalize=True)
    ref = np.einsum("bnk,bk->bn", rb, vb[:, 0] / np.linalg.norm(vb[:, 0], axis=-1, keepdims=True))
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-6)
    assert out.shape == (4, 5)


def test_directional_reward_linear_and_symmetric():
    rng = np.random.default_rng(1)
    r = jnp.asarray(rng.normal(size=(6, 2)), jnp.float32)
    v = unit_directions(jnp.array([0.3]))[0]
    # flipping the direction flips the reward; it is linear in the rewards
    np.testing.assert_allclose(directional_reward(r, -v), -directional_reward(r, v), atol=1e-6)
    np.testing.assert_allclose(directional_reward(2 * r + 1, v),
                               2 * directional_reward(r, v) + directional_reward(jnp.ones(2), v),
                               atol=1e-5)
    # swapping the objectives is reflecting theta about pi / 4
    th = 0.3
    np.testing.assert_allclose(
        directional_reward(r[:, ::-1], unit_directions(jnp.array([th]))[0]),
        directional_reward(r, unit_directions(jnp.array([math.pi / 2 - th]))[0]), atol=1e-6)


def test_directional_reward_gradients():
    r = jnp.array([[0.5, -1.0], [2.0, 0.1]])
    v = jnp.array([0.3, 0.7])
    check_grads(lambda a, b: directional_reward(a, b, normalize=True), (r, v), order=2,
                modes=("fwd", "rev"), eps=1e-2, atol=1e-2, rtol=1e-2)
    # exact gradients: d/dr = v, d/dv = r (summed over rows) without normalisation
    gr, gv = jax.grad(lambda a, b: directional_reward(a, b).sum(), argnums=(0, 1))(r, v)
    np.testing.assert_allclose(gr, np.broadcast_to(v, r.shape), rtol=1e-6)
    np.testing.assert_allclose(gv, r.sum(0), rtol=1e-6)
    # extreme inputs: huge rewards and a nearly axis-aligned direction stay finite
    g = jax.grad(lambda v: directional_reward(jnp.full((1, 2), 1e6), v, normalize=True).sum())(
        jnp.array([1e-3, 1e3]))
    assert np.all(np.isfinite(g))


def test_angle_bins_and_tokens():
    centers = bin_centers(8)
    np.testing.assert_allclose(centers, -math.pi / 2 + math.pi / 8 * (np.arange(8) + 0.5),
                               rtol=1e-6)
    np.testing.assert_array_equal(jax.jit(angle_bins, static_argnums=1)(centers, 8), np.arange(8))
    # edges go to the upper bin; out-of-range angles clip to the end bins
    edges = jnp.array([-math.pi / 2, 0.0, -10.0, 10.0])
    np.testing.assert_array_equal(angle_bins(edges, 8), [0, 4, 0, 7])
    np.testing.assert_array_equal(
        direction_tokens(centers, first_token_id=5, num_bins=8), 5 + np.arange(8))
    np.testing.assert_array_equal(angle_bins(jnp.array([0.1, 0.6, 0.9]), 2, 0.0, 1.0), [0, 1, 1])


def test_select_by_direction_golden_and_ties():
    # one group, three samples (helpfulness, verbosity)
    r = jnp.array([[[3.0, 10.0], [2.0, 1.0], [2.0, 1.0]],
                   [[3.0, 10.0], [2.0, 1.0], [2.0, 1.0]]])
    v = unit_directions(jnp.array([-math.pi / 4, math.pi / 4]))
    idx, best = jax.jit(select_by_direction)(r, v)
    s = math.sqrt(0.5)
    np.testing.assert_array_equal(idx, [1, 0])  # concise user: first of the tied short samples
    np.testing.assert_allclose(best, [s * (2 - 1), s * 13], rtol=1e-6)


def test_select_matches_numpy_and_permutation():
    rng = np.random.default_rng(2)
    r = rng.normal(size=(7, 9, 2)).astype(np.float32)
    v = np.asarray(unit_directions(jnp.asarray(rng.uniform(-1.5, 1.5, 7), jnp.float32)))
    idx, best = select_by_direction(r, v)
    ref = np.einsum("bnk,bk->bn", r, v)
    np.testing.assert_array_equal(idx, ref.argmax(1))
    np.testing.assert_allclose(best, ref.max(1), rtol=1e-5)
    perm = rng.permutation(9)
    idx_p, best_p = select_by_direction(r[:, perm], v)
    np.testing.assert_array_equal(perm[np.asarray(idx_p)], idx)  # selection follows the samples
    np.testing.assert_allclose(best_p, best, rtol=1e-6)


def test_shape_errors():
    with pytest.raises(ValueError, match="same K"):
        directional_reward(jnp.ones((3, 2)), jnp.ones(3))
    with pytest.raises(ValueError, match="broadcast"):
        directional_reward(jnp.ones((3, 2)), jnp.ones((4, 2)))
    # shape checks are chex asserts (trace-time): AssertionError naming the argument
    with pytest.raises(AssertionError,
                       match=r"shape \(2, 2\) but expected \(3, 2\)\. \[directions\]"):
        select_by_direction(jnp.ones((3, 4, 2)), jnp.ones((2, 2)))
    with pytest.raises(AssertionError, match=r"rank 2 .* but expected 3\. \[rewards\]"):
        select_by_direction(jnp.ones((4, 2)), jnp.ones((4, 2)))
    with pytest.raises(AssertionError, match=r"rank 2 .* but expected 1\. \[angles\]"):
        unit_directions(jnp.ones((2, 2)))
    with pytest.raises(ValueError, match="num_bins"):
        angle_bins(jnp.ones(3), 0)
