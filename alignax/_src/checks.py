"""Static (trace-time) shape, dtype and hyperparameter checks.

They read only shapes, dtypes and Python numbers, so under `jax.jit` they run once while tracing and
cost nothing per step; outside jit they turn a silent broadcast into a clear error. Shape problems
raise `ValueError`, dtype problems `TypeError` (the optax convention, `optax/_src/utils.py`).
"""

from __future__ import annotations

import numbers
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np


def check_rank(x: jax.typing.ArrayLike, rank: int, name: str) -> None:
    """Raises ValueError unless `x` has exactly `rank` dimensions."""
    if jnp.ndim(x) != rank:
        raise ValueError(f"{name} must have rank {rank}, got shape {jnp.shape(x)}")


def check_shape(x: jax.typing.ArrayLike, shape: Sequence[int | None], name: str) -> None:
    """Raises ValueError unless `x` has `shape`; a None entry matches any size."""
    actual = jnp.shape(x)
    if len(actual) != len(shape) or any(
            want is not None and want != got for want, got in zip(shape, actual)):
        expected = tuple("?" if s is None else s for s in shape)
        raise ValueError(f"{name} must have shape {expected}, got {actual}")


def check_same_shape(arrays: Sequence[jax.typing.ArrayLike], names: Sequence[str]) -> None:
    """Raises ValueError unless all `arrays` have the same shape (no broadcasting)."""
    shapes = [jnp.shape(a) for a in arrays]
    if len(set(shapes)) > 1:
        desc = ", ".join(f"{n}{s}" for n, s in zip(names, shapes))
        raise ValueError(f"expected equal shapes, got {desc}")


def check_broadcastable(x: jax.typing.ArrayLike, shape: Sequence[int], name: str,
                        target: str = "the input") -> None:
    """Raises ValueError unless `x` broadcasts to `shape` without changing `shape`."""
    try:
        out = np.broadcast_shapes(jnp.shape(x), tuple(shape))
    except ValueError:
        out = None
    if out != tuple(shape):
        raise ValueError(f"{name} of shape {jnp.shape(x)} does not broadcast to {target} of shape "
                         f"{tuple(shape)}")


def check_floating(x: jax.typing.ArrayLike, name: str) -> None:
    """Raises TypeError unless `x` has a floating-point dtype."""
    if not jnp.issubdtype(jnp.result_type(x), jnp.floating):
        raise TypeError(f"{name} must be floating point, got {jnp.result_type(x)}")


def check_integer(x: jax.typing.ArrayLike, name: str) -> None:
    """Raises TypeError unless `x` has an integer dtype."""
    if not jnp.issubdtype(jnp.result_type(x), jnp.integer):
        raise TypeError(f"{name} must have an integer dtype, got {jnp.result_type(x)}")


def as_float(x: jax.typing.ArrayLike, name: str) -> jax.Array:
    """Returns `x` as an array of at least float32 precision.

    bool, integer, float16 and bfloat16 inputs become float32; float32 stays float32 and float64
    (with `jax_enable_x64`) stays float64, so gradient checks can run in double precision.

    Raises:
      TypeError: for complex or non-numeric inputs.
    """
    x = jnp.asarray(x)
    if jnp.issubdtype(x.dtype, jnp.complexfloating) or not (
            jnp.issubdtype(x.dtype, jnp.number) or x.dtype == jnp.bool_):
        raise TypeError(f"{name} must be real-valued, got {x.dtype}")
    return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def _concrete_scalar(value) -> float | None:
    """The value of a Python/NumPy scalar; None for traced or array-valued hyperparameters."""
    if isinstance(value, numbers.Real):
        return float(value)
    if isinstance(value, (np.ndarray, np.generic)) and np.ndim(value) == 0:
        return float(value)
    return None


def check_in_range(value, name: str, low: float, high: float, *, high_inclusive: bool = True
                   ) -> None:
    """Raises ValueError unless low <= value <= high (or < high); skipped for traced values."""
    v = _concrete_scalar(value)
    if v is None:
        return
    ok = low <= v <= high if high_inclusive else low <= v < high
    if not ok:
        bracket = "]" if high_inclusive else ")"
        raise ValueError(f"{name} must lie in [{low}, {high}{bracket}, got {value}")


def check_positive(value, name: str) -> None:
    """Raises ValueError unless value > 0; skipped for traced values."""
    v = _concrete_scalar(value)
    if v is not None and not v > 0:
        raise ValueError(f"{name} must be positive, got {value}")
