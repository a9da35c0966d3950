"""Density ratios from a probabilistic classifier, and BCO's underlying-distribution matching.

A logistic classifier p(+|x) trained to tell samples of a distribution P (label 1) from samples
of Q (label 0), with the two classes weighted equally (each class's examples carry total weight
1/2), estimates the density ratio

    p(x) / q(x) = p(+|x) / (1 - p(+|x)).

BCO (Jung et al. 2024, "Binary Classifier Optimization for Large Language Model Alignment",
arXiv 2404.04656, "underlying distribution matching") fits such a classifier on prompt
embeddings, thumbs-up prompts against thumbs-down prompts, and weights each rejected (thumbs-down)
example's loss by w(x) = clip(p(+|x) / (1 - p(+|x)), w_min, w_max), so that the weighted rejected
prompts follow the thumbs-up prompts' distribution. TRL's BCOTrainer fits the classifier with
class-balanced weights and clips at [0.5, 10] by default (`min_density_ratio`,
`max_density_ratio`).

The classifier here is L2-regularised logistic regression fitted by Newton's method (IRLS) in
closed form: a handful of [D + 1, D + 1] solves, pure jax, jittable and vmappable over seeds.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp


def logistic_regression(features: jax.Array, labels: jax.Array, *,
                        sample_weights: jax.Array | None = None, l2: float = 1e-2,
                        balanced: bool = True, num_iters: int = 30) -> tuple[jax.Array, jax.Array]:
    """L2-regularised logistic regression by Newton's method (IRLS).

    Minimises, over w [D] and the (unpenalised) intercept b,

    .. math::
        -\\sum_i s_i [y_i \\log\\sigma(z_i) + (1 - y_i) \\log\\sigma(-z_i)]
        + \\frac{\\lambda}{2} \\lVert w \\rVert^2, \\quad z_i = x_i^\\top w + b

    where the example weights s_i sum to 1: with `balanced`, each class's examples share total
    weight 1/2 (so p/(1 - p) estimates the ratio of the two classes' densities, not scaled by
    their counts); otherwise s_i = 1/N. `sample_weights` multiply them (before normalising).

    Args:
      features: [N, D].
      labels: [N] in {0, 1} (bool or numbers).
      sample_weights: optional [N] non-negative weights.
      l2: lambda > 0 (keeps the Hessian invertible, also on separable data).
      balanced: weight the two classes equally.
      num_iters: Newton steps (quadratic convergence: 30 is plenty on standardised features).

    Returns:
      (w [D], b []) float32.
    """
    x = jnp.asarray(features, jnp.float32)
    chex.assert_rank(x, 2)
    y = jnp.asarray(labels, jnp.float32)
    chex.assert_shape(y, (x.shape[0],))
    if l2 <= 0:
        raise ValueError(f"l2 must be > 0, got {l2}")
    s = jnp.ones_like(y) if sample_weights is None else jnp.asarray(sample_weights, jnp.float32)
    if balanced:
        pos = jnp.sum(s * y)
        neg = jnp.sum(s * (1.0 - y))
        s = s * jnp.where(y > 0.5, 0.5 / jnp.maximum(pos, 1e-12), 0.5 / jnp.maximum(neg, 1e-12))
    else:
        s = s / jnp.maximum(jnp.sum(s), 1e-12)
    n, d = x.shape
    xa = jnp.concatenate([x, jnp.ones((n, 1), jnp.float32)], axis=1)  # intercept column last
    reg = l2 * jnp.diag(jnp.concatenate([jnp.ones(d), jnp.zeros(1)]).astype(jnp.float32))

    def newton(_, theta):
        z = xa @ theta
        p = jax.nn.sigmoid(z)
        grad = xa.T @ (s * (p - y)) + reg @ theta
        hess = (xa * (s * p * (1.0 - p))[:, None]).T @ xa + reg
        # a tiny ridge on the intercept too, for a class that is empty or separable
        hess = hess + 1e-8 * jnp.eye(d + 1, dtype=jnp.float32)
        return theta - jnp.linalg.solve(hess, grad)

    theta = jax.lax.fori_loop(0, int(num_iters), newton, jnp.zeros(d + 1, jnp.float32))
    return theta[:d], theta[d]


def positive_probability(w: jax.Array, b: jax.Array, features: jax.Array) -> jax.Array:
    """p(+|x) = sigmoid(x w + b), [...] for features [..., D]."""
    return jax.nn.sigmoid(jnp.asarray(features, jnp.float32) @ w + b)


def udm_weights(prob_positive: jax.Array, *, w_min: float = 0.5, w_max: float = 10.0
                ) -> jax.Array:
    """BCO's underlying-distribution-matching weights clip(p / (1 - p), w_min, w_max) of the
    classifier's p(+|x) at rejected examples' prompts (TRL's defaults 0.5 and 10)."""
    if not 0 < w_min <= w_max:
        raise ValueError(f"need 0 < w_min <= w_max, got {w_min}, {w_max}")
    p = jnp.asarray(prob_positive, jnp.float32)
    ratio = jnp.exp(jnp.log(p) - jnp.log1p(-p))  # p / (1 - p), inf at p = 1 (then clipped)
    return jnp.clip(ratio, w_min, w_max)


def matching_weights(positive_features: jax.Array, negative_features: jax.Array,
                     query_features: jax.Array | None = None, *, l2: float = 1e-2,
                     w_min: float = 0.5, w_max: float = 10.0, num_iters: int = 30
                     ) -> jax.Array:
    """UDM weights of BCO: a class-balanced logistic classifier separating the thumbs-up prompts'
    features [P, D] from the thumbs-down prompts' features [Q, D], evaluated at
    `query_features` [..., D] (default: the thumbs-down prompts themselves) and turned into
    clipped density ratios p(+|x) / (1 - p(+|x)) (`udm_weights`)."""
    pos = jnp.asarray(positive_features, jnp.float32)
    neg = jnp.asarray(negative_features, jnp.float32)
    x = jnp.concatenate([pos, neg], axis=0)
    y = jnp.concatenate([jnp.ones(pos.shape[0]), jnp.zeros(neg.shape[0])])
    w, b = logistic_regression(x, y, l2=l2, balanced=True, num_iters=num_iters)
    query = neg if query_features is None else query_features
    return udm_weights(positive_probability(w, b, query), w_min=w_min, w_max=w_max)
