"""Combining several rewards: weighted sums, log-taming, hypervolume and gradient weighting,
ensembles. Rewards come as `[K, N]` (K objectives or members, N samples).
"""

from __future__ import annotations

import itertools

import chex
import jax
import jax.numpy as jnp
import numpy as np


def weighted_sum(rewards, weights) -> jax.Array:
    """R = sum_k w_k r_k: [K, N], [K] -> [N]."""
    r = jnp.asarray(rewards, jnp.float32)
    w = jnp.asarray(weights, jnp.float32)
    if w.shape != r.shape[:1]:
        raise ValueError(f"{w.shape[0] if w.ndim else w} weights for {r.shape[0]} rewards")
    return jnp.tensordot(w, r, axes=1)


def log_tamed_sum(rewards, weights, *, eps: float = 1e-8) -> jax.Array:
    """PaCo-RL's log-tamed aggregation: tame the rewards that vary most, then sum.

    h_k = std(r_k) / mean(r_k) over the batch; rewards with h_k above the mean of the h's become
    log(1 + r_k); R = sum_k w_k r~_k. (PaCo-RL, 2025: keeps a high-variance reward from
    dominating the advantage.) Rewards should be non-negative. [K, N], [K] -> [N].
    """
    r = jnp.asarray(rewards, jnp.float32)
    h = r.std(axis=1) / (jnp.abs(r.mean(axis=1)) + eps)
    tame = h > h.mean()
    tamed = jnp.where(tame[:, None], jnp.log1p(jnp.maximum(r, 0.0)), r)
    return weighted_sum(tamed, weights)


def ensemble(rewards, *, mode: str = "mean", lam: float = 1.0) -> jax.Array:
    """Aggregates an ensemble's rewards [M, N] -> [N]: "mean", "min" (worst case) or
    "mean_minus_std" (mean - lam * std over members, uncertainty-weighted).

    Coste et al. 2023, "Reward Model Ensembles Help Mitigate Overoptimization" (arXiv 2310.02743);
    Eisenstein et al. 2023, "Helping or Herding?" (arXiv 2312.09244).
    """
    chex.assert_rank(rewards, 2, custom_message="rewards")
    r = jnp.asarray(rewards, jnp.float32)
    if mode == "mean":
        return r.mean(axis=0)
    if mode == "min":
        return r.min(axis=0)
    if mode == "mean_minus_std":
        return r.mean(axis=0) - lam * r.std(axis=0)
    raise ValueError(f"unknown ensemble mode {mode!r}; use mean, min or mean_minus_std")


def pareto_front(points) -> np.ndarray:
    """The non-dominated rows of [P, K] points (maximisation), in input order."""
    p = np.asarray(points, np.float64)
    keep = []
    for i in range(len(p)):
        dominated = np.any(np.all(p >= p[i], axis=1) & np.any(p > p[i], axis=1))
        if not dominated:
            keep.append(i)
    return p[keep]


def hypervolume(points, reference) -> float:
    """Volume dominated by [P, K] points above `reference` [K] (maximisation), exact.

    Inclusion-exclusion over the front's boxes: fine for the small fronts of experiments
    (P up to ~15); use a dedicated library for more.
    """
    ref = np.asarray(reference, np.float64)
    front = [q for q in pareto_front(points) if np.all(q > ref)]
    if len(front) > 20:
        raise ValueError(f"{len(front)} front points are too many for inclusion-exclusion")
    total = 0.0
    for size in range(1, len(front) + 1):
        for subset in itertools.combinations(front, size):
            corner = np.min(np.stack(subset), axis=0)
            total += (-1) ** (size + 1) * float(np.prod(corner - ref))
    return total


def hypervolume_multiplier(history, point, reference) -> float:
    """Reward multiplier from the hypervolume contribution of a new objective vector:

    m = 0.5 + 1.5 tanh(HV(P u {v}) - HV(P)), with P the vectors of earlier checkpoints and the
    initial model as the reference point (hypervolume-guided weighting of multi-objective GRPO).
    """
    pts = [np.asarray(p) for p in history]
    gain = hypervolume(pts + [np.asarray(point)], reference) - (
        hypervolume(pts, reference) if pts else 0.0)
    return float(0.5 + 1.5 * np.tanh(gain))


def gradient_weight_update(weights, gradients, *, step_size: float, temperature: float = 1.0
                           ) -> jax.Array:
    """Exponentiated-gradient update of objective weights from per-objective policy gradients.

    s_k = sum_j <g_k, g_j> (how much objective k's gradient helps all objectives), then
    w <- softmax(log w + step_size * s / temperature). `gradients`: [K, D] flattened gradients
    (or a list of pytrees). [K] -> [K].
    """
    if isinstance(gradients, (list, tuple)):
        gradients = jnp.stack([jnp.concatenate([jnp.ravel(x) for x in jax.tree.leaves(g)])
                               for g in gradients])
    g = jnp.asarray(gradients, jnp.float32)
    influence = (g @ g.T).sum(axis=1)
    w = jnp.asarray(weights, jnp.float32)
    return jax.nn.softmax(jnp.log(w) + step_size * influence / temperature)
