"""Directional preferences over multi-objective rewards: directions, directional reward,
angle-bin conditioning tokens and the preference-conditioned rejection-sampling selection.

A user preference is a unit vector v in the reward space R^K; the reward of a response under that
preference is the projection R(x, y, v) = v^T r(x, y) of the multi-objective reward r. With K = 2
objectives (e.g. helpfulness and verbosity) v = (cos theta, sin theta). The policy is conditioned
on v through a token naming the angle bin of theta, and preference-conditioned rejection-sampling
fine-tuning (RSF) keeps, for each (prompt, direction), the sample with the largest v^T r.

Wang et al. 2024, "Arithmetic Control of LLMs for Diverse User Preferences: Directional Preference
Alignment with Multi-Objective Rewards" (arXiv 2402.18571).

Shapes: M directions, K objectives, B (prompt, direction) groups, N samples per group.
"""

from __future__ import annotations

import math

import chex
import jax
import jax.numpy as jnp

from alignax._src import checks


def unit_directions(angles) -> jax.Array:
    """Unit vectors of angles in the plane of two objectives.

    .. math::
        v(\\theta) = (\\cos\\theta, \\sin\\theta)

    theta = 0 weighs only the first objective, theta = pi / 2 only the second; a negative theta
    asks for less of the second objective.

    Args:
      angles: [M] angles in radians.

    Returns:
      [M, 2] float32 unit vectors.
    """
    chex.assert_rank(angles, 1, custom_message="angles")
    a = checks.as_float(angles, "angles")
    return jnp.stack([jnp.cos(a), jnp.sin(a)], axis=-1)


def directional_reward(rewards, directions, *, normalize: bool = False) -> jax.Array:
    """The reward of responses under user directions: the projection onto v.

    .. math::
        R(x, y, v) = v^\\top r(x, y) = \\textstyle\\sum_k v_k r_k(x, y)

    Args:
      rewards: [..., K] multi-objective rewards.
      directions: [..., K] directions, broadcastable against `rewards` (e.g. [K] for one user,
        [B, 1, K] against rewards [B, N, K]).
      normalize: divide each direction by its Euclidean norm first (directions are then any
        non-zero vectors); otherwise they are used as given (unit vectors expected).

    Returns:
      [...] float32, the broadcast shape of the leading dims.
    """
    r = checks.as_float(rewards, "rewards")
    v = checks.as_float(directions, "directions")
    if r.ndim < 1 or v.ndim < 1 or r.shape[-1] != v.shape[-1]:
        raise ValueError(f"rewards [..., K] and directions [..., K] need the same K, got shapes "
                         f"{r.shape} and {v.shape}")
    try:
        jnp.broadcast_shapes(r.shape, v.shape)
    except ValueError:
        raise ValueError(f"directions of shape {v.shape} do not broadcast against rewards of "
                         f"shape {r.shape}") from None
    if normalize:
        v = v / jnp.linalg.norm(v, axis=-1, keepdims=True)
    return jnp.sum(r * v, axis=-1)


def bin_centers(num_bins: int, low: float = -math.pi / 2, high: float = math.pi / 2
                ) -> jax.Array:
    """Centres of `num_bins` equal angle bins covering [low, high]: [num_bins] float32.

    The default range is the half circle of directions with a non-negative weight on the first
    objective.
    """
    if num_bins < 1 or not high > low:
        raise ValueError(f"need num_bins >= 1 and high > low, got {num_bins}, [{low}, {high}]")
    width = (high - low) / num_bins
    return low + width * (jnp.arange(num_bins, dtype=jnp.float32) + 0.5)


def angle_bins(angles, num_bins: int, low: float = -math.pi / 2, high: float = math.pi / 2
               ) -> jax.Array:
    """Index of the bin of [low, high] each angle falls in (clipped to the end bins).

    Bin j holds low + j w <= theta < low + (j + 1) w, w = (high - low) / num_bins.

    Args:
      angles: [M] angles in radians.
      num_bins: number of bins.
      low, high: the covered range.

    Returns:
      [M] int32 in [0, num_bins).
    """
    chex.assert_rank(angles, 1, custom_message="angles")
    if num_bins < 1 or not high > low:
        raise ValueError(f"need num_bins >= 1 and high > low, got {num_bins}, [{low}, {high}]")
    a = checks.as_float(angles, "angles")
    idx = jnp.floor((a - low) / ((high - low) / num_bins))
    return jnp.clip(idx, 0, num_bins - 1).astype(jnp.int32)


def direction_tokens(angles, *, first_token_id: int, num_bins: int,
                     low: float = -math.pi / 2, high: float = math.pi / 2) -> jax.Array:
    """Conditioning token of each direction: `first_token_id + angle_bins(angles)`.

    The policy reads the user direction from this token (put in the prompt, like DPA's system
    prompt carrying v). [M] angles -> [M] int32 token ids.
    """
    return first_token_id + angle_bins(angles, num_bins, low, high)


def select_by_direction(rewards, directions) -> tuple[jax.Array, jax.Array]:
    """Preference-conditioned rejection-sampling selection: the best sample of each group
    under its own direction.

    .. math::
        i^*_b = \\arg\\max_{i} v_b^\\top r(x_b, y_{b,i})

    (the first maximiser on ties). Fine-tuning on the kept samples y_{b, i*_b}, conditioned on
    v_b, is one round of DPA's RSF.

    Args:
      rewards: [B, N, K] multi-objective rewards of N samples of each of B (prompt, direction)
        groups.
      directions: [B, K] the direction of each group.

    Returns:
      (indices [B] int32 in [0, N), best directional rewards [B] float32).
    """
    chex.assert_rank(rewards, 3, custom_message="rewards")
    chex.assert_rank(directions, 2, custom_message="directions")
    b, _, k = jnp.shape(rewards)
    chex.assert_shape(directions, (b, k), custom_message="directions")
    scores = directional_reward(rewards, jnp.asarray(directions)[:, None, :])  # [B, N]
    idx = jnp.argmax(scores, axis=1).astype(jnp.int32)
    return idx, jnp.take_along_axis(scores, idx[:, None], axis=1)[:, 0]
