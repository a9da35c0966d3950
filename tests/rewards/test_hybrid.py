"""Hybrid multi-aspect rewards: end-token lengths, the generalised length penalty, the composer."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from alignax.rewards import hybrid, rules


def test_eos_lengths():
    tokens = jnp.array([[0, 1, 2], [1, 0, 0], [1, 2, 0], [3, 1, 2]])
    np.testing.assert_array_equal(hybrid.eos_lengths(tokens), [0, 1, 2, 3])
    np.testing.assert_array_equal(hybrid.eos_lengths(tokens, eos=2), [2, 3, 1, 2])


def test_generalized_length_penalty():
    length = jnp.array([2.0, 4.0, 5.0, 8.0])
    # one-sided, linear: shorter than the target is free
    np.testing.assert_allclose(hybrid.generalized_length_penalty(length, 4.0),
                               [0.0, 0.0, -0.25, -1.0])
    # a 25% free band, quadratic, scale 2
    np.testing.assert_allclose(
        hybrid.generalized_length_penalty(length, 4.0, scale=2.0, tolerance=0.25, power=2.0),
        [0.0, 0.0, 0.0, -2.0 * 0.75 ** 2])
    # two-sided linear without a band is rules.length_penalty
    mask = jnp.array([[1, 1, 0, 0, 0, 0, 0, 0], [1] * 4 + [0] * 4, [1] * 5 + [0] * 3, [1] * 8])
    np.testing.assert_allclose(
        hybrid.generalized_length_penalty(length, 4.0, scale=0.5, two_sided=True),
        rules.length_penalty(mask, target=4.0, scale=0.5), rtol=1e-6)
    # per-row targets, and differentiable in the length
    np.testing.assert_allclose(
        hybrid.generalized_length_penalty(length, jnp.array([1.0, 4.0, 5.0, 4.0])),
        [-1.0, 0.0, 0.0, -1.0])
    g = jax.grad(lambda x: hybrid.generalized_length_penalty(x, 4.0).sum())(
        jnp.array([2.0, 3.0, 5.0, 8.0]))  # away from the kink at the target
    np.testing.assert_allclose(g, [0.0, 0.0, -0.25, -0.25])


def test_hybrid_reward_composes_and_masks_the_rule_term():
    model = jnp.array([0.5, -1.0, 2.0])
    verified = jnp.array([True, True, False])
    instr = jnp.array([1.0, 0.0, 1.0])
    length = jnp.array([0.0, -0.5, -1.0])
    total, parts = hybrid.hybrid_reward(model, verified, instr, length, w_model=2.0,
                                        w_rule=3.0, w_instr=0.5, confidence=0.8,
                                        has_verifier=jnp.array([True, False, True]))
    np.testing.assert_allclose(parts["rule"], [0.8, 0.0, 0.0])
    np.testing.assert_allclose(total, [2 * 0.5 + 3 * 0.8 + 0.5, -2.0 - 0.5, 4.0 + 0.5 - 1.0],
                               rtol=1e-6)
    # a vector RM is averaged; no length penalty and no mask: the plain weighted sum
    total2, parts2 = hybrid.hybrid_reward(jnp.stack([model, model + 2.0], -1), verified, instr)
    np.testing.assert_allclose(parts2["model"], model + 1.0)
    np.testing.assert_allclose(total2, model + 1.0 + verified + instr, rtol=1e-6)
    assert float(jnp.abs(parts2["length"]).sum()) == pytest.approx(0.0)
    # rule-only and RM-only are the composer with the other weights at zero
    rm_only, _ = hybrid.hybrid_reward(model, verified, instr, w_rule=0.0, w_instr=0.0)
    np.testing.assert_allclose(rm_only, model)
