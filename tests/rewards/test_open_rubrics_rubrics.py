"""OpenRubrics rubric objects: features, gated score, contrastive generation, filter, merging."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from alignax.losses.reward import bradley_terry_loss
from alignax.rewards.rubrics import (Rubric, aggregate_rubrics, consistency_filter,
                                     contrastive_rubrics, rubric_features, rubric_judge_logits,
                                     rubric_score)

RUBRIC = Rubric(hard_rules=jnp.array([1.0, 1.0, 0.0, 0.0]),
                principle_weights=jnp.array([0.0, 0.0, 2.0, -1.0]))


def test_features_and_gated_score_by_hand():
    x = jnp.array([[1, 1, 1, 0], [0, 1, 1, 0], [0, 0, 0, 1]], jnp.float32)
    f = jax.jit(rubric_features)(x, RUBRIC)
    np.testing.assert_allclose(f, [[0, 2], [1, 2], [2, -1]])
    s = jax.jit(rubric_score, static_argnames="gate_penalty")(x, RUBRIC, gate_penalty=10.0)
    np.testing.assert_allclose(s, [2.0, -8.0, -21.0])
    # gates: a violation outweighs every principle when the penalty exceeds their total weight
    assert s[0] > s[1] > s[2]


def test_features_match_numpy_reference():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 2, (7, 6)).astype(np.float32)
    h = rng.integers(0, 2, (7, 6)).astype(np.float32)
    w = rng.normal(size=(7, 6)).astype(np.float32)
    f = rubric_features(x, Rubric(h, w))
    np.testing.assert_allclose(f[:, 0], (h * (1 - x)).sum(-1), rtol=1e-6)
    np.testing.assert_allclose(f[:, 1], (w * x).sum(-1), rtol=1e-5, atol=1e-6)


def test_judge_logits_antisymmetric_and_grads():
    rng = np.random.default_rng(1)
    a = jnp.asarray(rng.integers(0, 2, (5, 4)), jnp.float32)
    b = jnp.asarray(rng.integers(0, 2, (5, 4)), jnp.float32)
    theta = jnp.array([3.0, 0.7])
    ab = jax.jit(rubric_judge_logits)(theta, a, b, RUBRIC)
    np.testing.assert_allclose(ab, -rubric_judge_logits(theta, b, a, RUBRIC), atol=1e-6)
    fa, fb = rubric_features(a, RUBRIC), rubric_features(b, RUBRIC)
    ref = theta[0] * -(fa[:, 0] - fb[:, 0]) + theta[1] * (fa[:, 1] - fb[:, 1])
    np.testing.assert_allclose(ab, ref, rtol=1e-6)

    def loss(t, w):
        rub = Rubric(RUBRIC.hard_rules, w)
        logits = rubric_judge_logits(t, a, b, rub)
        return jnp.mean(bradley_terry_loss(logits, jnp.zeros_like(logits)))

    check_grads(loss, (theta, RUBRIC.principle_weights), order=2, modes=("rev",))
    g = jax.grad(loss)(jnp.array([1e4, -1e4]), RUBRIC.principle_weights)
    assert np.all(np.isfinite(np.asarray(g)))


def test_contrastive_generation_noiseless():
    c = jnp.array([[1, 1, 1, 0, 1], [1, 0, 1, 1, 0]], jnp.float32)
    r = jnp.array([[1, 1, 0, 1, 1], [1, 1, 0, 0, 1]], jnp.float32)
    stated = jnp.array([[1, 0, 0, 0, 0], [0, 1, 0, 0, 0]], jnp.float32)
    rub, corrupted = jax.jit(contrastive_rubrics)(c, r, stated, jax.random.key(0))
    assert not np.any(corrupted)
    np.testing.assert_array_equal(rub.hard_rules, stated)
    # pair 0: equal violations -> signed differences outside the rules; pair 1: the stated rule
    # separates the pair, so no principle is read off it
    np.testing.assert_array_equal(rub.principle_weights, [[0, 0, 1, -1, 0], [0, 0, 0, 0, 0]])
    rub2, _ = contrastive_rubrics(c, r, stated, jax.random.key(0), explain_by_rules=False)
    np.testing.assert_array_equal(rub2.principle_weights[1], [0, 0, 1, 1, -1])
    pos, _ = contrastive_rubrics(c, r, stated, jax.random.key(0), positive_only=True)
    np.testing.assert_array_equal(pos.principle_weights[0], [0, 0, 1, 0, 0])
    asked = jnp.array([[0, 0, 0, 1, 0], [0, 0, 0, 0, 0]], jnp.float32)
    only, _ = contrastive_rubrics(c, r, stated, jax.random.key(0), stated_principles=asked)
    np.testing.assert_array_equal(only.principle_weights[0], [0, 0, 0, -1, 0])


def test_corruption_swaps_roles_and_filter_catches_it():
    rng = np.random.default_rng(2)
    c = jnp.asarray(rng.integers(0, 2, (400, 6)), jnp.float32)
    r = jnp.asarray(rng.integers(0, 2, (400, 6)), jnp.float32)
    stated = jnp.zeros((400, 6))
    clean, _ = contrastive_rubrics(c, r, stated, jax.random.key(1))
    noisy, corrupted = contrastive_rubrics(c, r, stated, jax.random.key(1), corrupt_rate=0.5)
    corrupted = np.asarray(corrupted)
    assert 0.4 < corrupted.mean() < 0.6
    np.testing.assert_array_equal(np.asarray(noisy.principle_weights)[corrupted],
                                  -np.asarray(clean.principle_weights)[corrupted])
    keep = np.asarray(jax.jit(consistency_filter)(c, r, noisy))
    differ = np.asarray(jnp.any(c != r, -1))
    # a rubric built from the pair always recovers its label; a swapped one never does
    np.testing.assert_array_equal(keep, differ & ~corrupted)
    # swapping chosen and rejected flips every decision of a fixed rubric (ties aside)
    keep_swapped = np.asarray(consistency_filter(r, c, noisy))
    assert not np.any(keep & keep_swapped)


def test_generator_noise_rates():
    n, a = 2000, 10
    stated = jnp.asarray(np.random.default_rng(3).integers(0, 2, (n, a)), jnp.float32)
    ones = jnp.ones((n, a))
    rub, _ = contrastive_rubrics(ones, ones, stated, jax.random.key(2), miss_rate=0.2,
                                 spurious_rate=0.1)
    h, s = np.asarray(rub.hard_rules), np.asarray(stated) > 0
    assert abs(h[s].mean() - 0.8) < 0.02 and abs(h[~s].mean() - 0.1) < 0.02


def test_aggregate_by_hand():
    rubs = Rubric(hard_rules=jnp.array([[1, 0, 0], [1, 1, 0], [0, 0, 0], [0, 1, 0]], jnp.float32),
                  principle_weights=jnp.array([[0, 1, 1], [0, 0, -1], [1, 1, 1], [5, 0, 5]],
                                              jnp.float32))
    groups = jnp.array([0, 0, 1, 2])
    keep = jnp.array([True, True, True, False])
    merged = jax.jit(aggregate_rubrics, static_argnames="num_groups")(rubs, groups, keep,
                                                                      num_groups=3)
    # group 0: rule 0 in 2/2 rubrics, rule 1 in 1/2 (>= 0.5 survives); mean weights off rules
    np.testing.assert_array_equal(merged.hard_rules, [[1, 1, 0], [0, 0, 0], [0, 0, 0]])
    np.testing.assert_allclose(merged.principle_weights, [[0, 0, 0], [1, 1, 1], [0, 0, 0]])
    strict = aggregate_rubrics(rubs, groups, keep, num_groups=3, rule_threshold=0.75)
    np.testing.assert_array_equal(strict.hard_rules[0], [1, 0, 0])
    np.testing.assert_allclose(strict.principle_weights[0], [0, 0.5, 0])


def test_shape_errors():
    # shape and dtype checks are chex asserts (trace-time): AssertionError naming the arguments
    with pytest.raises(AssertionError, match=r"Shape \(4,\) is not broadcastable to shape "
                                             r"\(3, 5\)\. \[rubric\.hard_rules against"):
        rubric_features(jnp.ones((3, 5)), RUBRIC)
    with pytest.raises(AssertionError, match=r"shape \(\) .*\[attributes: rank >= 1"):
        rubric_features(jnp.float32(1.0), RUBRIC)
    with pytest.raises(AssertionError,
                       match=r"different shapes.*\[chosen, rejected, stated_rules\]"):
        contrastive_rubrics(jnp.ones((3, 4)), jnp.ones((3, 4)), jnp.ones((2, 4)),
                            jax.random.key(0))
    with pytest.raises(ValueError, match="corrupt_rate"):
        contrastive_rubrics(jnp.ones((3, 4)), jnp.ones((3, 4)), jnp.ones((3, 4)),
                            jax.random.key(0), corrupt_rate=1.5)
    with pytest.raises(AssertionError, match=r"shape \(3,\) but expected \(2\)\. \[theta\]"):
        rubric_judge_logits(jnp.ones(3), jnp.ones((2, 4)), jnp.ones((2, 4)), RUBRIC)
    with pytest.raises(AssertionError, match=r"shape \(3,\) but expected \(4\)\. \[groups\]"):
        aggregate_rubrics(Rubric(jnp.ones((4, 3)), jnp.ones((4, 3))), jnp.zeros(3, jnp.int32),
                          jnp.ones(3, bool), num_groups=2)
    with pytest.raises(AssertionError, match=r"type float32 but expected .*int.*\[groups\]"):
        aggregate_rubrics(Rubric(jnp.ones((4, 3)), jnp.ones((4, 3))), jnp.zeros(4),
                          jnp.ones(4, bool), num_groups=2)
