"""Objective-mismatch diagnostics (Lambert & Calandra 2023, "The Alignment Ceiling").

RLHF chains three objectives that are assumed to agree: the reward model's fit (its held-out
preference accuracy), the RL objective (the proxy reward it reaches), and the downstream score
(here a gold reward). The mismatch shows as (1) over-optimisation along one RL run: the proxy
keeps rising while the gold peaks and then falls, and (2) across a zoo of reward models: a more
accurate RM does not give a better policy (weak rank correlation between RM accuracy and the
gold gain of the policy trained on it).

- `max_drawdown(curve)`: the largest fall below the running maximum, [..., T] -> [...].
- `rises_monotonically(curve, tol)`: the curve ends above its start and never falls below its
  running maximum by more than `tol` of its range.
- `peak_then_fall(curve, min_drop)`: the maximum is reached before the end, above the start,
  and the end lies below it by at least `min_drop` of the gain (peak - start).
- `overoptimised(proxy, gold, ...)`: both at once, per run.
- `zoo_rank_correlation(accuracy, gain)`: Spearman's rho across the zoo (last axis).
All take numpy-compatible arrays with any leading batch axes (seeds, runs) and the time or zoo
axis last.
"""

from __future__ import annotations

import numpy as np

from alignax.ops.rank import spearman


def max_drawdown(curve) -> np.ndarray:
    """[...] max_t (max_{s <= t} c_s - c_t) of curves [..., T] (>= 0)."""
    c = np.asarray(curve, np.float64)
    return np.max(np.maximum.accumulate(c, axis=-1) - c, axis=-1)


def rises_monotonically(curve, tol: float = 0.05) -> np.ndarray:
    """[...] bool: c_T > c_0 and max_drawdown(c) <= tol (max c - min c).

    `tol` absorbs the small wiggles of a stochastic optimiser (0: strictly non-decreasing)."""
    c = np.asarray(curve, np.float64)
    span = c.max(-1) - c.min(-1)
    return (c[..., -1] > c[..., 0]) & (max_drawdown(c) <= tol * span)


def peak_then_fall(curve, min_drop: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """Whether each curve peaks then falls, and by how much.

    Args:
      curve: [..., T] values along training (T >= 2).
      min_drop: the end must lie below the peak by at least this fraction of the gain
        (peak - start).

    Returns:
      (flag [...] bool, drop [...] float): drop = (peak - end) / (peak - start), NaN where the
      peak does not exceed the start; flag = peak above the start, reached before the last
      point, and drop >= min_drop.
    """
    c = np.asarray(curve, np.float64)
    if c.shape[-1] < 2:
        raise ValueError(f"a curve needs at least 2 points, got {c.shape[-1]}")
    peak_at = np.argmax(c, -1)
    peak = c.max(-1)
    gain = peak - c[..., 0]
    with np.errstate(invalid="ignore", divide="ignore"):
        drop = np.where(gain > 0, (peak - c[..., -1]) / np.where(gain > 0, gain, 1.0), np.nan)
    flag = (gain > 0) & (peak_at < c.shape[-1] - 1) & (np.nan_to_num(drop, nan=-1.0)
                                                         >= min_drop)
    return flag, drop


def overoptimised(proxy, gold, *, tol: float = 0.05, min_drop: float = 0.1) -> np.ndarray:
    """[...] bool: the proxy rises monotonically (`rises_monotonically(proxy, tol)`) while the
    gold peaks then falls (`peak_then_fall(gold, min_drop)`), curves [..., T] of one run."""
    return rises_monotonically(proxy, tol) & peak_then_fall(gold, min_drop)[0]


def zoo_rank_correlation(accuracy, gain) -> np.ndarray:
    """[...] Spearman's rho between the reward models' accuracy and their policies' gold gain,
    across the zoo (the last axis, [..., Z]); NaN for a constant row."""
    return np.asarray(spearman(np.asarray(accuracy, np.float32), np.asarray(gain, np.float32)),
                      np.float64)
