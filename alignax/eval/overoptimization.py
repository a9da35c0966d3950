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
