"""Masked reductions in float32."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def masked_sum(x: jax.Array, mask: jax.Array, *, axis=-1) -> jax.Array:
    """sum_i m_i x_i over `axis`, in float32. `mask` broadcasts against `x`."""
    x = jnp.asarray(x, jnp.float32)
    return jnp.sum(jnp.where(mask, x, 0.0), axis=axis)


def masked_mean(x: jax.Array, mask: jax.Array, *, axis=-1) -> jax.Array:
    """sum_i m_i x_i / sum_i m_i over `axis` in float32; 0 (zero gradient) if the mask is empty."""
    mask = jnp.broadcast_to(jnp.asarray(mask), jnp.shape(x))
    count = jnp.sum(mask.astype(jnp.float32), axis=axis)
    return masked_sum(x, mask, axis=axis) / jnp.maximum(count, 1.0)
