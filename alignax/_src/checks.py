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

Nothing else belongs here: a shape, rank or dtype check that chex provides is a chex call.
"""

from __future__ import annotations

import numbers

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

