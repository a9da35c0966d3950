"""Hierarchical comparator (HERON): golden labels, a naive loop reference, symmetry, shapes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from alignax.tasks.hierarchical import hierarchical_preference

compare = jax.jit(hierarchical_preference)


def naive(a, b, margins):
    labels, levels = [], []
    for row_a, row_b in zip(a, b):
        for i, (x, y, m) in enumerate(zip(row_a, row_b, margins)):
            if abs(x - y) > m:
                labels.append(1.0 if x > y else 0.0)
                levels.append(i)
                break
        else:
            labels.append(0.5)
            levels.append(len(margins))
    return np.array(labels), np.array(levels)


def test_golden_values():
    # factors: (reached goal, -lava contacts, -steps), margins (0, 0, 2)
    a = np.array([[1, 0, -20], [1, -1, -10], [0, 0, -5], [1, -1, -12], [1, -1, -12]], np.float32)
    b = np.array([[0, 0, -5], [1, 0, -30], [1, -3, -40], [1, -1, -10], [1, -1, -15]], np.float32)
    labels, levels = compare(a, b, np.array([0.0, 0.0, 2.0]))
    np.testing.assert_array_equal(labels, [1.0, 0.0, 0.0, 0.5, 1.0])
    np.testing.assert_array_equal(levels, [0, 1, 0, 3, 2])
    assert labels.dtype == jnp.float32 and levels.dtype == jnp.int32


def test_matches_naive_loop_on_random_inputs():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 4, (500, 3)).astype(np.float32)
    b = rng.integers(0, 4, (500, 3)).astype(np.float32)
    margins = np.array([0.5, 1.0, 1.5])
    labels, levels = compare(a, b, margins)
    want_labels, want_levels = naive(a, b, margins)
    np.testing.assert_array_equal(labels, want_labels)
    np.testing.assert_array_equal(levels, want_levels)
    assert 0 < np.mean(want_levels == 3) < 1  # both decided and undecided pairs occur


def test_zero_margins_is_lexicographic_order():
    rng = np.random.default_rng(1)
    a = rng.integers(0, 3, (300, 4)).astype(np.float32)
    b = rng.integers(0, 3, (300, 4)).astype(np.float32)
    labels, _ = compare(a, b, 0.0)
    for la, ra, rb in zip(np.asarray(labels), a, b):
        ta, tb = tuple(ra), tuple(rb)
        assert la == (1.0 if ta > tb else 0.0 if ta < tb else 0.5)


def test_swap_symmetry():
    rng = np.random.default_rng(2)
    a = rng.normal(size=(200, 3)).astype(np.float32)
    b = rng.normal(size=(200, 3)).astype(np.float32)
    margins = np.array([0.5, 0.8, 3.0])
    la, lev_a = compare(a, b, margins)
    lb, lev_b = compare(b, a, margins)
    np.testing.assert_array_equal(la, 1.0 - lb)
    np.testing.assert_array_equal(lev_a, lev_b)


def test_random_tie_break_only_touches_undecided_pairs():
    rng = np.random.default_rng(3)
    a = rng.integers(0, 2, (2000, 2)).astype(np.float32)
    b = rng.integers(0, 2, (2000, 2)).astype(np.float32)
    labels, levels = compare(a, b, 0.0)
    broken, levels2 = jax.jit(hierarchical_preference)(a, b, 0.0, key=jax.random.key(0))
    decided = np.asarray(levels) < 2
    np.testing.assert_array_equal(np.asarray(broken)[decided], np.asarray(labels)[decided])
    np.testing.assert_array_equal(levels, levels2)
    ties = np.asarray(broken)[~decided]
    assert set(np.unique(ties)) <= {0.0, 1.0}
    assert 0.4 < ties.mean() < 0.6


def test_shape_errors():
    # shape checks are chex asserts (trace-time): AssertionError naming the arguments
    with pytest.raises(AssertionError, match=r"rank 1 .* but expected 2\. \[factors_a\]"):
        hierarchical_preference(np.zeros(3), np.zeros(3), 0.0)
    with pytest.raises(AssertionError, match=r"different shapes: \[\(2, 3\), \(2, 2\)\]\. "
                                             r"\[factors_a, factors_b\]"):
        hierarchical_preference(np.zeros((2, 3)), np.zeros((2, 2)), 0.0)
    with pytest.raises(AssertionError, match=r"Shape \(2,\) is not broadcastable to shape "
                                             r"\(3,\)\. \[margins against the factor axis"):
        hierarchical_preference(np.zeros((2, 3)), np.zeros((2, 3)), np.zeros(2))
