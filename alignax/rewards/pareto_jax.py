"""Hypervolumes in pure jax, for use inside a jitted (vmapped, scanned) loss.

`alignax.rewards.aggregate.hypervolume` is exact inclusion-exclusion on the host (numpy); a
loss that reweights its rewards by hypervolume contributions at every update (the
hypervolume-guided dynamic reward weighting of multi-objective GRPO) needs the same quantity
traced. Here the volume is computed on the grid spanned by the points' coordinates: with P
points in K dimensions, each axis is cut at the reference and the P coordinates, giving P^K
cells; a cell is dominated when some point is >= its upper corner in every coordinate, and the
volume is the sum of the dominated cells' volumes. Exact, fixed-shape (masked points allowed)
and cheap for the small buffers of experiments (P^K * P * K work: P = 9, K = 3 is 20k).
"""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np


def hypervolume_jax(points, reference, valid=None) -> jax.Array:
    """Volume dominated by the valid rows of `points` [P, K] above `reference` [K]
    (maximisation), exactly; a scalar. Rows with `valid` False (default: all valid) and the
    parts of points below the reference add nothing. Equals `aggregate.hypervolume`."""
    p = jnp.asarray(points, jnp.float32)
    ref = jnp.asarray(reference, jnp.float32)
    num, dim = p.shape
    if dim > 4:
        raise ValueError(f"the grid hypervolume is for K <= 4 objectives, got {dim}")
    q = jnp.maximum(p, ref)
    if valid is not None:
        q = jnp.where(jnp.asarray(valid, bool)[:, None], q, ref)
    cuts = jnp.sort(jnp.concatenate([ref[None], q], axis=0), axis=0)  # [P + 1, K]
    lower, upper = cuts[:-1], cuts[1:]  # [P, K] per axis: cell bounds
    idx = np.array(list(itertools.product(range(num), repeat=dim)), np.int32)  # [P^K, K]
    axes = np.arange(dim)
    hi = upper[idx, axes]  # [C, K] upper corners
    width = hi - lower[idx, axes]
    covered = jnp.any(jnp.all(q[None, :, :] >= hi[:, None, :], axis=-1), axis=-1)  # [C]
    return jnp.sum(jnp.where(covered, jnp.prod(width, axis=-1), 0.0))


def hypervolume_gains(front, candidates, reference, valid=None) -> jax.Array:
    """HV(front u {c}) - HV(front) for each candidate row c of `candidates` [N, K]: the volume
    each one would add to the valid rows of `front` [P, K] above `reference`. [N]."""
    front = jnp.asarray(front, jnp.float32)
    valid = jnp.ones(front.shape[0], bool) if valid is None else jnp.asarray(valid, bool)
    base = hypervolume_jax(front, reference, valid)

    def with_one(c):
        pts = jnp.concatenate([front, c[None]], axis=0)
        return hypervolume_jax(pts, reference, jnp.concatenate([valid, jnp.ones(1, bool)]))

    return jax.vmap(with_one)(jnp.asarray(candidates, jnp.float32)) - base


def hypervolume_multipliers(front, candidates, reference, valid=None, *, scale: float = 1.0
                            ) -> jax.Array:
    """Reward multipliers m = 0.5 + 1.5 tanh(gain / scale) of each candidate [N, K] from its
    hypervolume gain over `front` (`hypervolume_gains`; the traced counterpart of
    `aggregate.hypervolume_multiplier`, which is scale = 1): 0.5 for a candidate that adds
    nothing, up to 2 for one that extends the front a lot. [N]."""
    gains = hypervolume_gains(front, candidates, reference, valid)
    return 0.5 + 1.5 * jnp.tanh(gains / scale)
