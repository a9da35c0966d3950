"""Closed-form multi-output regression on frozen features, and reward decorrelation.

Shapes: N examples, D features, K objectives (output columns).
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp

from alignax._src import checks


def masked_ridge_regression(
    features: jax.Array,
    targets: jax.Array,
    mask: jax.Array | None = None,
    *,
    l2: float = 1.0,
    fit_intercept: bool = True,
) -> tuple[jax.Array, jax.Array]:
    """Ridge regression of K objectives with missing labels, one closed form per objective.

    For objective k with label mask m_k (1 = rated) the fit minimises

    .. math::
        \\sum_i m_{ik} (y_{ik} - x_i^\\top w_k - b_k)^2 + \\lambda \\lVert w_k \\rVert^2,

    whose solution is w_k = (X_c^T M_k X_c + lambda I)^{-1} X_c^T M_k (y_k - ybar_k), with
    X_c = X - xbar_k centred by the masked means xbar_k, ybar_k of the rated rows and
    b_k = ybar_k - xbar_k^T w_k (the intercept is not penalised). Without `fit_intercept`,
    xbar = ybar = 0 and b = 0. Unrated entries of `targets` are never read (they may be NaN).
    An objective with no rated rows gets w_k = 0, b_k = 0.

    This is stage 1 of ArmoRM: linear heads on a frozen embedding, fitted to absolute ratings
    of many objectives where each example is rated on only some of them. Wang et al. 2024,
    "Interpretable Preferences via Multi-Objective Reward Modeling and Mixture-of-Experts"
    (arXiv 2406.12845).

    Args:
      features: [N, D] float features (e.g. frozen embeddings of prompt + response).
      targets: [N, K] ratings; only the entries where `mask` is 1 are used.
      mask: optional [N, K] (bool or 0/1) of rated entries; None = all rated.
      l2: ridge strength lambda > 0 (keeps every solve well posed).
      fit_intercept: fit an unpenalised bias per objective.

    Returns:
      (weights [D, K], bias [K]), float32 (or float64 with x64 inputs).
    """
    chex.assert_rank([features, targets], 2, custom_message="features, targets")
    chex.assert_equal_shape([features, targets], dims=0,
                            custom_message="features, targets: same number of rows N")
    if mask is not None:
        chex.assert_equal_shape([targets, mask], custom_message="targets, mask")
    d = jnp.shape(features)[1]
    if not l2 > 0:
        raise ValueError(f"l2 must be > 0, got {l2}")
    x = checks.as_float(features, "features")
    y = checks.as_float(targets, "targets").astype(x.dtype)
    m = (jnp.ones(jnp.shape(y), x.dtype) if mask is None
         else jnp.asarray(mask).astype(x.dtype))
    y = jnp.where(m > 0, y, 0.0)
    eye = jnp.eye(d, dtype=x.dtype)

    def fit_one(y_k, m_k):  # [N], [N] -> [D], []
        count = jnp.maximum(jnp.sum(m_k), 1.0)
        if fit_intercept:
            x_mean = (m_k @ x) / count
            y_mean = jnp.sum(m_k * y_k) / count
        else:
            x_mean = jnp.zeros((d,), x.dtype)
            y_mean = jnp.zeros((), x.dtype)
        xc = (x - x_mean) * m_k[:, None]
        gram = xc.T @ xc + l2 * eye
        w = jax.scipy.linalg.solve(gram, xc.T @ (y_k - y_mean), assume_a="pos")
        return w, y_mean - x_mean @ w

    weights, bias = jax.vmap(fit_one, in_axes=(1, 1), out_axes=(1, 0))(y, m)
    return weights, bias


def decorrelation_coefficients(
    rewards: jax.Array, reference: jax.Array, mask: jax.Array | None = None
) -> jax.Array:
    """Coefficients lambda_k that make r_k - lambda_k v uncorrelated with v on a reference set.

    .. math::
        \\lambda_k = \\frac{\\mathrm{Cov}(r_k, v)}{\\mathrm{Var}(v)}
        \\;\\Rightarrow\\; \\mathrm{Corr}(r_k - \\lambda_k v, v) = 0,

    with (masked) moments over the N reference examples; lambda_k = 0 when Var(v) = 0. With v
    the verbosity objective this is ArmoRM's verbosity penalty r_k' = r_k - lambda_k r_verb
    (Wang et al. 2024, "Interpretable Preferences via Multi-Objective Reward Modeling and
    Mixture-of-Experts", arXiv 2406.12845); the verbosity column itself gets lambda = 1.

    Args:
      rewards: [N, K] objective rewards on the reference set.
      reference: [N] the reward to decorrelate from (e.g. the verbosity objective).
      mask: optional [N] of reference examples to use.

    Returns:
      [K] coefficients lambda.
    """
    chex.assert_rank([rewards, reference], [2, 1], custom_message="rewards, reference")
    chex.assert_equal_shape([rewards, reference], dims=0,
                            custom_message="rewards, reference: same number of rows N")
    if mask is not None:
        chex.assert_equal_shape([reference, mask], custom_message="reference, mask")
    r = checks.as_float(rewards, "rewards")
    v = checks.as_float(reference, "reference").astype(r.dtype)
    m = jnp.ones_like(v) if mask is None else jnp.asarray(mask).astype(r.dtype)
    count = jnp.maximum(jnp.sum(m), 1.0)
    vc = v - jnp.sum(m * v) / count
    rc = r - (m @ r) / count
    var = jnp.sum(m * vc * vc) / count
    cov = (m * vc) @ rc / count
    safe = jnp.where(var > 0, var, 1.0)
    return jnp.where(var > 0, cov / safe, 0.0)


def decorrelate(rewards: jax.Array, reference: jax.Array, coefficients: jax.Array) -> jax.Array:
    """r_k' = r_k - lambda_k v: [N, K], [N], [K] -> [N, K] (see `decorrelation_coefficients`)."""
    chex.assert_rank([rewards, reference], [2, 1], custom_message="rewards, reference")
    chex.assert_shape(coefficients, (jnp.shape(rewards)[1],), custom_message="coefficients")
    chex.assert_equal_shape([rewards, reference], dims=0,
                            custom_message="rewards, reference: same number of rows N")
    return rewards - reference[:, None] * coefficients[None, :]
