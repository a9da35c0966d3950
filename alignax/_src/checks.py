"""Static (trace-time) shape and dtype checks: free under jit, clear errors outside it."""

from __future__ import annotations

from typing import Sequence

import jax.numpy as jnp


def check_rank(x, rank: int, name: str) -> None:
    if jnp.ndim(x) != rank:
        raise ValueError(f"{name} must have rank {rank}, got shape {jnp.shape(x)}")


def check_same_shape(arrays: Sequence, names: Sequence[str]) -> None:
    shapes = [jnp.shape(a) for a in arrays]
    if len(set(shapes)) > 1:
        desc = ", ".join(f"{n}{s}" for n, s in zip(names, shapes))
        raise ValueError(f"expected equal shapes, got {desc}")


def check_floating(x, name: str) -> None:
    if not jnp.issubdtype(jnp.result_type(x), jnp.floating):
        raise TypeError(f"{name} must be floating point, got {jnp.result_type(x)}")
