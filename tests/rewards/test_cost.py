"""Utility-cost rewards of a search planner and the utility-cost front of an alpha sweep."""

import jax
import numpy as np
import pytest

from alignax.rewards import (cost_reward, outcome_reward, plan_rationality,
                             utility_cost_front, utility_cost_reward)


def test_cost_modes():
    t = np.array([0, 1, 4])
    np.testing.assert_allclose(cost_reward(t), [0, -1, -4])
    np.testing.assert_allclose(cost_reward(t, 4, mode="fraction"), [1, 0.75, 0])
    # the two forms differ by a scale and a constant: the same order of trajectories
    assert np.all(np.diff(cost_reward(t)) < 0)
    assert np.all(np.diff(cost_reward(t, 4, mode="fraction")) < 0)
    with pytest.raises(ValueError, match="max_turns"):
        cost_reward(t, mode="fraction")
    with pytest.raises(ValueError, match="unknown"):
        cost_reward(t, 4, mode="calls")


def test_outcome_process_and_total():
    np.testing.assert_allclose(outcome_reward([1, 0, 1], [1, 0, 0]), [0, 0, 1])
    np.testing.assert_allclose(outcome_reward([1, 0]), [1, 0])
    # exact plan 1; one wasted call of two; an unfinished chain; nothing needed and nothing done
    np.testing.assert_allclose(plan_rationality([2, 1, 1, 0], [2, 2, 1, 0], [2, 1, 3, 0]),
                               [1, 0.5, 1 / 3, 1])
    r = utility_cost_reward(np.array([1, 1, 0]), np.array([1, 3, 0]), alpha=0.1)
    np.testing.assert_allclose(r, [0.9, 0.7, 0.0], rtol=1e-6)
    r = utility_cost_reward(np.array([1, 0]), np.array([2, 4]), alpha=0.2, max_turns=4,
                            cost="fraction", baseline_correct=np.array([1, 0]),
                            process=np.array([1.0, 0.0]), process_weight=0.5)
    np.testing.assert_allclose(r, [0 + 0.5 + 0.2 * 0.5, 0.0], rtol=1e-6)
    # usable inside jit
    out = jax.jit(lambda c, t: utility_cost_reward(c, t, alpha=0.05))(np.ones(3), np.arange(3))
    np.testing.assert_allclose(out, [1.0, 0.95, 0.9], rtol=1e-6)
    with pytest.raises(ValueError, match="alpha"):
        utility_cost_reward(np.ones(1), np.ones(1), alpha=-0.1)
    with pytest.raises(ValueError, match="process"):
        utility_cost_reward(np.ones(1), np.ones(1), alpha=0.1, process_weight=1.0)


def test_utility_cost_front():
    # (accuracy, turns): the third is dominated by the second (less accurate, more calls)
    out = utility_cost_front([1.0, 0.95, 0.9, 0.5], [3.5, 2.0, 2.5, 1.0], reference=(0.0, 4.0))
    np.testing.assert_array_equal(out["on_front"], [True, True, False, True])
    assert out["num_front"] == 3
    # the staircase area in (accuracy, 4 - turns): sorted by cost 1.0 -> 0.5 * 3, then the
    # increments 0.45 * 2 and 0.05 * 0.5
    assert out["hypervolume"] == pytest.approx(0.5 * 3 + 0.45 * 2 + 0.05 * 0.5)
    with pytest.raises(ValueError):
        utility_cost_front([1.0], [1.0, 2.0], reference=(0, 4))
