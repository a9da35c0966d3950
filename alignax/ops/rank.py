"""Rank statistics with ties: average ranks, Spearman's rho and Kendall's tau-b.

All three work along the last axis, [..., N] -> [..., N] or [...], are jit-able and follow
`scipy.stats` (`rankdata(method="average")`, `spearmanr`, `kendalltau(variant="b")`):

- tied values share the average of the ranks they occupy;
- a correlation with a constant input (or with N < 2) is undefined and returns NaN;
- a NaN anywhere in a row makes that row's correlation NaN (scipy's `nan_policy="propagate"`).

Ranks are piecewise constant, so the gradients of these functions are zero.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp


def _real(x: jax.typing.ArrayLike, name: str) -> jax.Array:
    x = jnp.asarray(x)
    if not (jnp.issubdtype(x.dtype, jnp.integer) or jnp.issubdtype(x.dtype, jnp.floating)
            or x.dtype == jnp.bool_):
        raise TypeError(f"{name} must be real-valued, got {x.dtype}")
    chex.assert_shape(x, (..., None), custom_message=f"{name} must have at least one axis")
    return x


def _rank_dtype(*xs: jax.Array):
    return jnp.promote_types(jnp.result_type(*xs), jnp.float32)


def average_ranks(x: jax.typing.ArrayLike) -> jax.Array:
    """1-based ranks along the last axis, ties sharing their average rank: [..., N] -> [..., N].

    .. math:: r_i = \\#\\{j: x_j < x_i\\} + (\\#\\{j: x_j = x_i\\} + 1) / 2

    so [10, 20, 20, 30] -> [1, 2.5, 2.5, 4] (`scipy.stats.rankdata(x, method="average")`).
    O(N log N): one sort and two binary searches per row. NaN entries get rank NaN; the other
    entries are ranked among the non-NaN ones.

    Args:
      x: [..., N] real values (integer inputs are compared exactly, not through float32).

    Returns:
      [..., N] ranks in x's float dtype, at least float32.
    """
    x = _real(x, "x")
    dtype = _rank_dtype(x)
    rows = x.reshape(-1, x.shape[-1])

    def one(row):
        s = jnp.sort(row)
        lo = jnp.searchsorted(s, row, side="left", method="sort")
        hi = jnp.searchsorted(s, row, side="right", method="sort")
        return (lo + hi + 1).astype(dtype) / 2

    ranks = jax.vmap(one)(rows).reshape(x.shape)
    if jnp.issubdtype(x.dtype, jnp.floating):
        ranks = jnp.where(jnp.isnan(x), jnp.nan, ranks)
    return ranks


def spearman(a: jax.typing.ArrayLike, b: jax.typing.ArrayLike) -> jax.Array:
    """Spearman's rho with ties: the Pearson correlation of average ranks, [..., N] x2 -> [...].

    .. math::
        \\rho = \\frac{\\sum_i (r_i - \\bar r)(s_i - \\bar s)}
                     {\\sqrt{\\sum_i (r_i - \\bar r)^2 \\sum_i (s_i - \\bar s)^2}}

    with r = average_ranks(a), s = average_ranks(b). Without ties this equals
    1 - 6 sum_i (r_i - s_i)^2 / (N (N^2 - 1)); with ties it is `scipy.stats.spearmanr`, not that
    shortcut. A constant row (zero rank variance), N < 2, or a NaN in the row gives NaN. The
    result is clipped to [-1, 1] against rounding.

    Args:
      a, b: [..., N] real scores of the same N items (same shape, no broadcasting).

    Returns:
      [...] rho in the inputs' float dtype, at least float32.
    """
    a, b = _real(a, "a"), _real(b, "b")
    chex.assert_equal_shape([a, b], custom_message="a, b")
    ra, rb = average_ranks(a), average_ranks(b)
    ra = ra - ra.mean(axis=-1, keepdims=True)
    rb = rb - rb.mean(axis=-1, keepdims=True)
    num = jnp.sum(ra * rb, axis=-1)
    den = jnp.sqrt(jnp.sum(ra * ra, axis=-1) * jnp.sum(rb * rb, axis=-1))
    return jnp.clip(num / den, -1.0, 1.0)


def kendall_tau(a: jax.typing.ArrayLike, b: jax.typing.ArrayLike) -> jax.Array:
    """Kendall's tau-b (ties in either input corrected), [..., N] x2 -> [...].

    .. math::
        \\tau_b = \\frac{n_c - n_d}{\\sqrt{(n_0 - n_a)(n_0 - n_b)}}

    over the n_0 = N (N - 1) / 2 pairs: n_c concordant, n_d discordant, n_a pairs tied in a,
    n_b pairs tied in b (a pair tied in both counts in both). Without ties this is tau-a,
    (n_c - n_d) / n_0. Equivalently tau_b = <S_a, S_b> / (|S_a| |S_b|) with
    S_a[i, j] = sign(a_i - a_j) (Frobenius inner product and norms), which is how it is computed:
    O(N^2) time and memory per row, pair counts in int32 (exact to N = 46340). A constant row
    (every pair tied), N < 2, or a NaN in the row gives NaN. Matches
    `scipy.stats.kendalltau(a, b, variant="b")`.

    Args:
      a, b: [..., N] real scores of the same N items (same shape, no broadcasting).

    Returns:
      [...] tau_b in the inputs' float dtype, at least float32.
    """
    a, b = _real(a, "a"), _real(b, "b")
    chex.assert_equal_shape([a, b], custom_message="a, b")
    dtype = _rank_dtype(a, b)

    def signs(x):
        xi, xj = x[..., :, None], x[..., None, :]
        return (xi > xj).astype(jnp.int32) - (xi < xj).astype(jnp.int32)

    sa, sb = signs(a), signs(b)
    num = jnp.sum(sa * sb, axis=(-1, -2)).astype(dtype)
    den = jnp.sqrt(jnp.sum(sa * sa, axis=(-1, -2)).astype(dtype)
                   * jnp.sum(sb * sb, axis=(-1, -2)).astype(dtype))
    tau = jnp.clip(num / den, -1.0, 1.0)
    for x in (a, b):
        if jnp.issubdtype(x.dtype, jnp.floating):
            tau = jnp.where(jnp.any(jnp.isnan(x), axis=-1), jnp.nan, tau)
    return tau
