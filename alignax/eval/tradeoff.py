"""Matching points of trade-off curves at equal reward (alignment-tax fronts).

Comparing two ways of trading a reward against another ability (model averaging against early
stopping or a KL-coefficient sweep, Lin et al. 2024) needs points of each method at the same
reward. Each method offers an ordered path of candidates (interpolation ratios, checkpoints,
coefficients from weak to strong); at a reward level chosen on validation, the method's matched
candidate is the first one along its path whose validation reward reaches the level
(`first_reaching`); its test metrics are then read once. A grid's coarseness then decides how
far past the level a method lands; `match_level` removes it: the matched policy is the
stochastic mixture of the first candidate that reaches the level and the one before it on the
path, weighted so that the mixture's validation reward equals the level. A mixture's expected
reward and expected accuracy are the same convex combination of its parts' (exactly, for
metrics that are expectations over responses), so `mix` reads its test metrics from the two
candidates' with the weight fixed on validation. `level_from_gain` puts levels at fractions of
a reference gain.
"""

from __future__ import annotations

import numpy as np


def first_reaching(values, level) -> tuple[np.ndarray, np.ndarray]:
    """Index of the first candidate along a path whose value reaches `level`.

    Args:
      values: [..., C] a metric (e.g. validation reward) of C candidates in path order.
      level: [...] (or a scalar) the level to reach.

    Returns:
      (index [...] int, reached [...] bool): the first c with values[..., c] >= level; where no
      candidate reaches the level, the candidate with the highest value (reached False).
      Non-finite values never reach a level.
    """
    v = np.asarray(values, np.float64)
    lv = np.asarray(level, np.float64)[..., None]
    ok = np.isfinite(v) & (v >= lv)
    reached = ok.any(-1)
    first = np.argmax(ok, -1)
    best = np.argmax(np.where(np.isfinite(v), v, -np.inf), -1)
    return np.where(reached, first, best).astype(np.int64), reached


def level_from_gain(start, end, fractions) -> np.ndarray:
    """Levels start + f (end - start) for each fraction f: [..., F] from start, end [...]."""
    start = np.asarray(start, np.float64)[..., None]
    end = np.asarray(end, np.float64)[..., None]
    return start + np.asarray(fractions, np.float64) * (end - start)


def take(values, index) -> np.ndarray:
    """values [..., C] at index [...] -> [...] (the matched candidate's metric)."""
    v = np.asarray(values)
    return np.take_along_axis(v, np.asarray(index)[..., None], -1)[..., 0]


def match_level(values, level) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The mixture of two adjacent candidates whose value equals `level`.

    Args:
      values: [..., C] a metric (validation reward) of C candidates in path order.
      level: [...] (or a scalar).

    Returns:
      (lo [...], hi [...], weight [...], reached [...]): hi = `first_reaching`'s index,
      lo = hi - 1 (hi itself when hi = 0 or the level is not reached), and weight in [0, 1] the
      share of `hi` in the mixture, (level - v[lo]) / (v[hi] - v[lo]) (1 when lo = hi), so that
      (1 - weight) v[lo] + weight v[hi] = level where the level is reached and crossed from
      below.
    """
    v = np.asarray(values, np.float64)
    lv = np.broadcast_to(np.asarray(level, np.float64), v.shape[:-1])
    hi, reached = first_reaching(v, lv)
    lo = np.where(reached & (hi > 0), hi - 1, hi)
    v_hi, v_lo = take(v, hi), take(v, lo)
    gap = v_hi - v_lo
    safe = np.where(gap > 0, gap, 1.0)
    weight = np.where((lo != hi) & (gap > 0), np.clip((lv - v_lo) / safe, 0.0, 1.0), 1.0)
    return lo, hi, weight, reached


def mix(values, lo, hi, weight) -> np.ndarray:
    """(1 - weight) values[..., lo] + weight values[..., hi]: [...] (a mixture's metric)."""
    w = np.asarray(weight, np.float64)
    return (1.0 - w) * take(values, lo) + w * take(values, hi)
