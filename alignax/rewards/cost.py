"""Utility-cost rewards of a search planner, and the utility-cost front of a sweep over alpha.

AI-SearchPlanner (Mei, Yang, Chen 2025, arXiv 2508.20368) trains a small planner that decides
which searches to run before a frozen generator answers, with

    R = R_utility + alpha * R_cost,      R_utility = R_outcome + R_process,

where R_outcome scores the generator's answer against the answer of a no-planning (naive
retrieval) baseline, R_process is a judge's score of the trajectory's rationality and R_cost
penalises the number of search turns. Sweeping alpha traces the utility-cost (Pareto) front.

- `cost_reward`: R_cost = -T ("turns": each call costs 1, so alpha is the price of one search in
  units of a correct answer) or 1 - T / T_max ("fraction", the normalised form; it differs
  from -T / T_max by the constant 1, which a group baseline removes);
- `outcome_reward`: R_outcome = correct - baseline_correct;
- `plan_rationality`: a rule judge of the trajectory (the toy's stand-in for the LLM judge):
  the needed facts retrieved over max(turns, needed facts), 1 exactly when the planner made
  the needed searches and nothing else, lower for wasted calls or missing hops;
- `utility_cost_reward`: the sum;
- `utility_cost_front`: the front of (utility, cost) points over a sweep (maximise utility,
  minimise cost) through `alignax.rewards.aggregate.pareto_front` / `hypervolume`.

All rewards are pure jax, elementwise over any shape (usable inside a jitted loss).
"""

from __future__ import annotations

from typing import Sequence

import jax.numpy as jnp
import numpy as np

from alignax.rewards.aggregate import hypervolume, pareto_front

COST_MODES = ("turns", "fraction")


def cost_reward(turns, max_turns: int | None = None, *, mode: str = "turns"):
    """R_cost of trajectories with `turns` search calls: -T ("turns") or 1 - T / T_max
    ("fraction", needs max_turns)."""
    t = jnp.asarray(turns, jnp.float32)
    if mode == "turns":
        return -t
    if mode == "fraction":
        if not max_turns or max_turns < 1:
            raise ValueError(f"mode 'fraction' needs max_turns >= 1, got {max_turns}")
        return 1.0 - t / float(max_turns)
    raise ValueError(f"unknown cost mode {mode!r}; one of {COST_MODES}")


def outcome_reward(correct, baseline_correct=None):
    """R_outcome: the generator's correctness with the planner's trajectory minus its
    correctness with the no-planning baseline's (0 when no baseline is given)."""
    c = jnp.asarray(correct, jnp.float32)
    if baseline_correct is None:
        return c
    return c - jnp.asarray(baseline_correct, jnp.float32)


def plan_rationality(retrieved, turns, needed):
    """R_process of the toy: retrieved / max(turns, needed) in [0, 1] (1 for a question that
    needs nothing and gets no call): penalises wasted calls and unfinished chains alike."""
    r = jnp.asarray(retrieved, jnp.float32)
    denom = jnp.maximum(jnp.asarray(turns, jnp.float32), jnp.asarray(needed, jnp.float32))
    return jnp.where(denom > 0, r / jnp.maximum(denom, 1.0), 1.0)


def utility_cost_reward(correct, turns, *, alpha: float, max_turns: int | None = None,
                        cost: str = "turns", baseline_correct=None, process=None,
                        process_weight: float = 0.0):
    """R = R_outcome + process_weight * R_process + alpha * R_cost, elementwise.

    Args:
      correct: the frozen generator's correctness (0/1) with each trajectory.
      turns: each trajectory's number of search calls.
      alpha: the cost weight (>= 0; a float, or an array, e.g. traced per seed).
      max_turns: T_max (for cost="fraction").
      cost: "turns" (-T) or "fraction" (1 - T / T_max).
      baseline_correct: the no-planning baseline's correctness (R_outcome's reference), or None.
      process: R_process of each trajectory (e.g. `plan_rationality`), or None.
      process_weight: its weight (a float or an array; needs `process` unless it is 0).
    """
    if isinstance(alpha, (int, float)) and alpha < 0:
        raise ValueError(f"alpha must be >= 0, got {alpha}")
    r = outcome_reward(correct, baseline_correct) + jnp.asarray(alpha, jnp.float32) * cost_reward(
        turns, max_turns, mode=cost)
    if process is None:
        if not isinstance(process_weight, (int, float)) or process_weight:
            raise ValueError("process_weight > 0 needs process")
        return r
    return r + jnp.asarray(process_weight, jnp.float32) * jnp.asarray(process, jnp.float32)


def utility_cost_front(utility: Sequence[float], cost: Sequence[float], *,
                       reference: tuple[float, float]) -> dict:
    """The utility-cost front of P points (e.g. one per alpha of a sweep).

    Args:
      utility: [P] higher is better (e.g. accuracy).
      cost: [P] lower is better (e.g. mean search calls).
      reference: (utility_ref, cost_ref), a point every useful point beats (e.g. (0, T_max)).

    Returns:
      {"on_front": [P] bool (not dominated by another point), "num_front": int,
       "hypervolume": the area dominated by the points between them and the reference, in
       (utility, -cost) space}.
    """
    u, c = np.asarray(utility, np.float64), np.asarray(cost, np.float64)
    if u.shape != c.shape or u.ndim != 1:
        raise ValueError(f"utility and cost must be equal-length vectors, got {u.shape}, "
                         f"{c.shape}")
    points = np.stack([u, -c], axis=1)
    front = pareto_front(points)
    on_front = np.array([any(np.array_equal(p, q) for q in front) for p in points])
    hv = hypervolume(points, np.array([reference[0], -reference[1]], np.float64))
    return {"on_front": on_front, "num_front": int(on_front.sum()), "hypervolume": float(hv)}
