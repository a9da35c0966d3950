"""Input checks that chex does not provide: dtype promotion and hyperparameter value ranges.

Shape, rank and dtype checks use chex directly (`chex.assert_rank`, `chex.assert_shape`,
`chex.assert_equal_shape`, `chex.assert_is_broadcastable`, `chex.assert_type`). They read only
static shapes and dtypes, so under `jax.jit` they run once while tracing and cost nothing per
step; a failure raises `AssertionError` whose message names the arguments (`custom_message`).

What stays here, and why no library call replaces it:

- `as_float` converts as well as checks: bool, integer and half-precision inputs become float32
  while float64 (with `jax_enable_x64`) stays float64, so gradient checks can run in double
  precision; complex and non-numeric inputs raise `TypeError`. `chex.assert_type` only checks,
  and `jnp.asarray(x, jnp.float32)` would drop float64 to float32 and cast complex inputs to
  real with only a warning.
- `check_in_range` checks a hyperparameter's value (a probability in [0, 1], a coefficient
  >= 0) and raises `ValueError`, the Python convention for a bad argument value.
  `chex.assert_scalar_in` accepts only Python int/float (and np.float64, a float subclass): it
  rejects np.float32 and 0-d array hyperparameters, and traced ones, while a hyperparameter here
  may be traced (a schedule under jit); this check runs on concrete values and is skipped for
  traced ones.

The functions under "Legacy" below duplicate chex and raise `ValueError`/`TypeError`. They are
kept only until their remaining callers (alignax/eval, alignax/data/curation.py,
alignax/train/few_shot.py, alignax/tasks/hierarchical.py) move to chex; new code calls chex.
"""

from __future__ import annotations

import numbers
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np


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


# Legacy: duplicates of chex asserts, kept for the callers listed in the module docstring.


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
