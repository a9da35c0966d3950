"""GRPO-S difficulty scaling: hardness, the scale, and where it acts on the advantages."""

import jax.numpy as jnp
import numpy as np
import pytest

from alignax.algorithms import grpo_s
from alignax.algorithms.online import compute_advantages


def test_centroids_and_hardness():
    e = jnp.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [-1.0, 0.0]])
    cat = jnp.array([0, 0, 1, 1])
    cent = grpo_s.category_centroids(e, cat, 3)
    np.testing.assert_allclose(cent, [[0.5, 0.5], [0.0, 0.5], [0.0, 0.0]])
    h = np.asarray(grpo_s.prompt_hardness(e, cat, cent))
    cos = [1 / np.sqrt(2), 1 / np.sqrt(2), 1 / np.sqrt(2), 0.0]
    np.testing.assert_allclose(h, 1 - np.asarray(cos), atol=1e-6)
    # a prompt on its centroid's direction is not hard; the opposite direction is maximal
    h2 = grpo_s.prompt_hardness(jnp.array([[2.0, 2.0], [-1.0, -1.0]]), jnp.array([0, 0]), cent)
    np.testing.assert_allclose(h2, [0.0, 2.0], atol=1e-6)


def test_difficulty_scale_rises_with_hardness_and_gap():
    h = jnp.array([0.0, 1.0, 0.0, 1.0])
    gap = jnp.array([-1.0, -1.0, 2.0, 6.0])  # positive parts 0, 0, 2, 6: mean 2
    s = np.asarray(grpo_s.difficulty_scale(h, gap, alpha=1.0, beta=1.0, normalize=False))
    np.testing.assert_allclose(s, [1.0, 2.0, 2.0, 5.0], rtol=1e-6)
    sn = np.asarray(grpo_s.difficulty_scale(h, gap, hardness_mean=2.0))
    raw = np.array([1.0, 1.5, 2.0, 4.5])
    np.testing.assert_allclose(sn, raw / raw.mean(), rtol=1e-6)
    assert sn.mean() == pytest.approx(1.0)
    # the gap term is scale-free: the same relative gaps give the same scale
    np.testing.assert_allclose(grpo_s.difficulty_scale(h, 10 * gap, hardness_mean=2.0), sn,
                               rtol=1e-6)
    # alpha = beta = 0 is plain GRPO; no positive gap gives no gap term
    np.testing.assert_allclose(grpo_s.difficulty_scale(h, gap, alpha=0.0, beta=0.0), 1.0)
    np.testing.assert_allclose(
        grpo_s.difficulty_scale(h, -jnp.ones(4), normalize=False), 1.0 + h)


def test_scaled_advantages_and_why_the_scale_acts_after_normalisation():
    rng = np.random.default_rng(0)
    r = jnp.asarray(rng.standard_normal((3, 5)), jnp.float32)
    s = jnp.array([0.5, 1.0, 2.0])
    plain = compute_advantages("grpo", r.reshape(-1), 5).reshape(3, 5)
    np.testing.assert_allclose(grpo_s.scaled_advantages(r, s), s[:, None] * plain, rtol=1e-5)
    # scaling the rewards before GRPO's per-group std normalisation cancels ...
    pre = compute_advantages("grpo", (s[:, None] * r).reshape(-1), 5).reshape(3, 5)
    np.testing.assert_allclose(pre, plain, atol=1e-4)
    # ... with a mean-only baseline, scaling the rewards equals scaling the advantages
    dr = compute_advantages("dr_grpo", (s[:, None] * r).reshape(-1), 5).reshape(3, 5)
    np.testing.assert_allclose(grpo_s.scaled_advantages(r, s, base="dr_grpo"), dr, atol=1e-5)
    adv = grpo_s.grpo_s_advantage(lambda rewards, data: data["s"])
    np.testing.assert_allclose(adv(r, {"s": s}), s[:, None] * plain, rtol=1e-5)
