"""Over-optimisation diagnostics: gold along a KL trajectory, its hump, and off-support mass.

Gao et al. 2023 ("Scaling Laws for Reward Model Overoptimization", arXiv 2210.10760) and, for
direct alignment algorithms, Rafailov et al. 2024 (arXiv 2406.02900) describe the gold quality R
of a policy as a function of d = sqrt(KL(pi || pi_ref)) by

    R(d) = d (alpha - b log d),

which rises from R(0) = 0, peaks at d* = exp(alpha / b - 1) (b > 0) and then falls. This module
holds the pieces an experiment needs to test that description on exact (enumerated) policies:

- `fit_overoptimization(d, r)`: least squares for alpha, b (the form is linear in them, so the
  fit is exact linear least squares without intercept), with R^2 and the predicted peak;
- `hump(r)`: the peak of a trajectory and how much of the gain over the start it has lost by the
  end (the "drop from peak");
- `exact_win_rate(probs, ref_probs, gold)`: P(gold(y) > gold(y')) + P(tie) / 2 for y ~ pi and
  y' ~ pi_ref, exactly (jax; vmappable);
- `unseen_mass(probs, seen)`: the probability mass on responses the data never showed (jax).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np


@dataclasses.dataclass(frozen=True)
class OverOptFit:
    """The least-squares fit R(d) = d (alpha - b log d).

    Attributes:
      alpha, b: the coefficients.
      r2: the coefficient of determination 1 - SS_res / SS_tot (SS_tot around the mean of r);
        nan when r is constant.
      peak_d: the fitted curve's maximiser exp(alpha / b - 1) when b > 0, else inf (no peak).
      peak_r: the fitted curve's maximum b exp(alpha / b - 1) when b > 0, else nan.
      n: the number of points fitted.
    """

    alpha: float
    b: float
    r2: float
    peak_d: float
    peak_r: float
    n: int

    def predict(self, d) -> np.ndarray:
        """The fitted R at distances d (R(0) = 0)."""
        d = np.asarray(d, np.float64)
        return d * (self.alpha - self.b * _safe_log(d))


def _safe_log(d: np.ndarray) -> np.ndarray:
    """log d, with d log d -> 0 at d = 0 (the value there multiplies d = 0)."""
    return np.log(np.where(d > 0, d, 1.0))


def fit_overoptimization(d, r) -> OverOptFit:
    """Fits R(d) = d (alpha - b log d) to points (d_i, r_i) by least squares.

    Args:
      d: [K] sqrt-KL distances (>= 0), e.g. every logged step of a training run.
      r: [K] the gold quality gained over the reference at those points (R(0) = 0: e.g. the
        gold win rate against pi_ref minus 1/2, or E_pi[gold] - E_ref[gold]).

    Returns:
      OverOptFit. Needs at least two points with d > 0.
    """
    d = np.asarray(d, np.float64).ravel()
    r = np.asarray(r, np.float64).ravel()
    if d.shape != r.shape:
        raise ValueError(f"d and r must have the same length, got {d.shape} and {r.shape}")
    if np.any(d < 0) or not np.all(np.isfinite(d)) or not np.all(np.isfinite(r)):
        raise ValueError("d must be finite and >= 0, and r finite")
    if int(np.sum(d > 0)) < 2:
        raise ValueError("the fit needs at least two points with d > 0")
    x = np.stack([d, -d * _safe_log(d)], axis=1)
    (alpha, b), *_ = np.linalg.lstsq(x, r, rcond=None)
    residual = r - x @ np.array([alpha, b])
    ss_tot = float(np.sum((r - r.mean()) ** 2))
    r2 = 1.0 - float(np.sum(residual ** 2)) / ss_tot if ss_tot > 0 else float("nan")
    if b > 0:
        peak_d = float(np.exp(alpha / b - 1.0))
        peak_r = float(b * peak_d)
    else:
        peak_d, peak_r = float("inf"), float("nan")
    return OverOptFit(alpha=float(alpha), b=float(b), r2=r2, peak_d=peak_d, peak_r=peak_r,
                      n=int(d.size))


@dataclasses.dataclass(frozen=True)
class Hump:
    """The peak of a trajectory and its loss by the end.

    Attributes:
      peak: the largest value; peak_index its (first) position.
      final: the last value.
      baseline: the value the gain is measured from (default the first value).
      drop: (peak - final) / (peak - baseline), the fraction of the peak's gain lost by the end
        (0 when the run ends at its peak, 1 when it is back at the baseline, > 1 below it);
        nan when the run never rises above the baseline (no gain to lose).
    """

    peak: float
    peak_index: int
    final: float
    baseline: float
    drop: float

    def is_hump(self, min_drop: float = 0.1) -> bool:
        """True when the trajectory lost at least `min_drop` of its peak gain by the end."""
        return bool(np.isfinite(self.drop) and self.drop >= min_drop)


def hump(values, baseline: float | None = None) -> Hump:
    """The hump of a trajectory `values` [K] (e.g. gold win rate at every logged step): its
    peak, final value and drop from the peak relative to the gain over `baseline` (default
    values[0], the reference policy's value)."""
    v = np.asarray(values, np.float64).ravel()
    if v.size < 1 or not np.all(np.isfinite(v)):
        raise ValueError("hump needs at least one finite value")
    base = float(v[0]) if baseline is None else float(baseline)
    i = int(np.argmax(v))
    gain = float(v[i]) - base
    drop = (float(v[i]) - float(v[-1])) / gain if gain > 0 else float("nan")
    return Hump(peak=float(v[i]), peak_index=i, final=float(v[-1]), baseline=base, drop=drop)


def exact_win_rate(probs: jax.Array, ref_probs: jax.Array, gold: jax.Array) -> jax.Array:
    """P(gold(y) > gold(y')) + P(gold(y) = gold(y')) / 2 for y ~ probs, y' ~ ref_probs.

    probs, ref_probs: [..., N] distributions over the same N responses; gold: [..., N] (or [N])
    their gold rewards. Returns [...] (the reference against itself gives exactly 1/2).
    """
    probs = jnp.asarray(probs, jnp.float32)
    ref_probs = jnp.asarray(ref_probs, jnp.float32)
    gold = jnp.asarray(gold, jnp.float32)
    diff = gold[..., :, None] - gold[..., None, :]
    score = jnp.where(diff > 0, 1.0, jnp.where(diff == 0, 0.5, 0.0))
    return jnp.einsum("...i,...ij,...j->...", probs, score, ref_probs)


def unseen_mass(probs: jax.Array, seen: jax.Array) -> jax.Array:
    """[...] the mass probs [..., N] puts on responses with seen [..., N] False (never in the
    data)."""
    return jnp.sum(jnp.where(jnp.asarray(seen, bool), 0.0, jnp.asarray(probs, jnp.float32)),
                   axis=-1)


def first_crossing(x, y, target: float) -> float:
    """Where a trajectory first reaches a level: the x at which y [K] (e.g. E_pi[gold] at every
    logged step) first reaches `target`, linearly interpolated between the logged points
    (x [K], e.g. KL(pi || pi_ref) at those steps); y[0] >= target gives x[0]; inf when y
    never reaches it. Compares two methods' KL at matched gold along their runs."""
    x = np.asarray(x, np.float64).ravel()
    y = np.asarray(y, np.float64).ravel()
    if x.shape != y.shape or x.size < 1:
        raise ValueError(f"x and y must be non-empty and of equal length, got {x.shape}, "
                         f"{y.shape}")
    hits = np.nonzero(y >= target)[0]
    if hits.size == 0:
        return float("inf")
    k = int(hits[0])
    if k == 0:
        return float(x[0])
    frac = (target - y[k - 1]) / (y[k] - y[k - 1])
    return float(x[k - 1] + frac * (x[k] - x[k - 1]))


def importance_win_rate(policy_logp_a, policy_logp_b, ref_logp_a, ref_logp_b, a_wins, *,
                        self_normalized: bool = True) -> jax.Array:
    """An offline estimate of the policy's win rate against pi_ref from labelled pairs drawn
    from pi_ref (no gold reward needed: a validation proxy for early stopping).

    For a pair (a, b) ~ pi_ref x pi_ref with label 1[a > b], either response stands for a
    policy sample reweighted by w = pi / pi_ref, and the other for the reference sample:
    P_{y ~ pi, y' ~ pi_ref}(y > y') = E[w(a) 1[a > b]] = E[w(b) 1[b > a]]. The estimate
    averages both, over the pairs; `self_normalized` divides by the mean weight instead of 1
    (lower variance, slightly biased). At pi = pi_ref it is exactly 1/2 (each pair counts
    once, for its winner). All inputs [B] (a_wins bool or 0/1); returns a scalar.
    """
    a_wins = jnp.asarray(a_wins, jnp.float32)
    wa = jnp.exp(jnp.asarray(policy_logp_a, jnp.float32) - jnp.asarray(ref_logp_a, jnp.float32))
    wb = jnp.exp(jnp.asarray(policy_logp_b, jnp.float32) - jnp.asarray(ref_logp_b, jnp.float32))
    total = jnp.sum(wa * a_wins + wb * (1.0 - a_wins))
    if self_normalized:
        return total / jnp.sum(wa + wb)
    return total / (2.0 * a_wins.size)
