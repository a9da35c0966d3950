"""A linear reward model on frozen features fitted by ridge regression, its confidence width,
and the two ways of regularising RL with that width: PrefPaint's trust weights and a
lower confidence bound.

PrefPaint (Liu, Zhu, Li, Liu, Zeng, Hou, "PrefPaint: Aligning Image Inpainting Diffusion Model
with Human Preference", NeurIPS 2024, arXiv 2410.21966) scores an inpainting by a linear head
on frozen image features, r_hat(x) = theta^T phi(x), fitted on human scores, and bounds its
error by the self-normalised width of the ridge estimate:

    V = lambda I + sum_i phi(x_i) phi(x_i)^T,    theta = V^-1 sum_i phi(x_i) y_i,
    |r_hat(x) - r(x)| <~ alpha ||phi(x)||_{V^-1},   ||phi||_{V^-1} = sqrt(phi^T V^-1 phi)

(the bound of linear bandits: Abbasi-Yadkori, Pal, Szepesvari 2011, "Improved Algorithms for
Linear Stochastic Bandits", Theorem 2; `oful_radius` is its alpha). The RL stage ("reward
trustiness-aware alignment") multiplies each sample's DDPO loss by a weight that is large where
the bound is small; the reference code (github.com/Kenkenzaii/PrefPaint,
train_inpainting_model.py and configs/config.yaml) computes

    gamma(x) = clip(exp(-k * width(x) + b), 1, 2.21),   k = 0.05, b = 0.7,

so trusted samples count up to 2.2 times more in the policy gradient and untrusted ones count
once (`trust_weights`). Note: that code takes the width as ||V_inv phi||_2 with its stored
inverse; `confidence_width` is the paper's (and the bandit bound's) ||phi||_{V^-1}. The other
common reading of "confidence-regularised reward", the pessimistic lower confidence bound
r_hat - alpha * width (`lcb_reward`), is here as an option.

Features: random Fourier features (Rahimi & Recht 2007, "Random Features for Large-Scale Kernel
Machines"), phi(x) = sqrt(2 / D) cos(x W + c), W ~ N(0, 1 / l^2), c ~ U[0, 2 pi), so that
phi(x)^T phi(y) ~ exp(-|x - y|^2 / (2 l^2)) (the Gaussian kernel of bandwidth l); any frozen
embedding (e.g. `alignax.eval.embeddings.sequence_embeddings`) works in their place.

Everything is a pure jit-able function of arrays; vmap over seeds for several RMs at once.
Shapes: N points, d input dims, D features.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import jax.scipy.linalg as jsl

# PrefPaint's reference code (configs/config.yaml: boundary_alpha, boundary_beta; the clamp)
PAPER_TRUST = {"k": 0.05, "b": 0.7, "w_min": 1.0, "w_max": 2.21}


class RandomFeatures(NamedTuple):
    """Random Fourier features of a Gaussian kernel: phi(x) = sqrt(2 / D) cos(x W + c).

    Attributes:
      omega: [d, D] frequencies W ~ N(0, 1 / bandwidth^2).
      phase: [D] phases c ~ U[0, 2 pi).
    """

    omega: jax.Array
    phase: jax.Array


class RidgeRM(NamedTuple):
    """A ridge-regression reward head: theta and the Cholesky factor of V.

    Attributes:
      theta: [D] V^-1 sum_i phi_i y_i.
      chol: [D, D] lower-triangular L with L L^T = V = lambda I + sum_i phi_i phi_i^T.
    """

    theta: jax.Array
    chol: jax.Array


def random_fourier_features(key: jax.Array, in_dim: int, num_features: int,
                            bandwidth: float | jax.Array) -> RandomFeatures:
    """Draws `RandomFeatures` for inputs of `in_dim` dims (Rahimi & Recht 2007).

    Args:
      key: a PRNG key. in_dim: d. num_features: D. bandwidth: l > 0 (traced is fine).

    Returns:
      RandomFeatures(omega [d, D], phase [D]) float32.
    """
    if in_dim < 1 or num_features < 1:
        raise ValueError(f"in_dim and num_features must be >= 1, got {in_dim}, {num_features}")
    k_w, k_c = jax.random.split(key)
    omega = jax.random.normal(k_w, (in_dim, num_features), jnp.float32) / bandwidth
    phase = jax.random.uniform(k_c, (num_features,), jnp.float32, 0.0, 2 * math.pi)
    return RandomFeatures(omega, phase)


def featurize(features: RandomFeatures, x: jax.Array) -> jax.Array:
    """phi(x) = sqrt(2 / D) cos(x W + c): x [N, d] -> [N, D] float32."""
    x = jnp.asarray(x, jnp.float32)
    if x.ndim != 2 or x.shape[1] != features.omega.shape[0]:
        raise ValueError(f"expected x [N, {features.omega.shape[0]}], got {x.shape}")
    num = features.omega.shape[1]
    return math.sqrt(2.0 / num) * jnp.cos(x @ features.omega + features.phase)


def ridge_fit(phi: jax.Array, y: jax.Array, lam: float | jax.Array,
              mask: jax.Array | None = None) -> RidgeRM:
    """Ridge regression of scores on features, with the design matrix kept for the width.

        V = lambda I + sum_i m_i phi_i phi_i^T,   theta = V^-1 sum_i m_i phi_i y_i

    (m the mask: rows with m = 0 are left out, as if sliced away). Solved through the Cholesky
    factor of V (symmetric positive definite for lambda > 0).

    Args:
      phi: [N, D] features. y: [N] scores. lam: lambda > 0. mask: None or [N] {0, 1}.

    Returns:
      RidgeRM(theta [D], chol [D, D]).
    """
    phi = jnp.asarray(phi, jnp.float32)
    y = jnp.asarray(y, jnp.float32)
    if phi.ndim != 2 or y.shape != phi.shape[:1]:
        raise ValueError(f"expected phi [N, D] and y [N], got {phi.shape} and {y.shape}")
    m = jnp.ones_like(y) if mask is None else jnp.asarray(mask, jnp.float32)
    weighted = phi * m[:, None]
    v = lam * jnp.eye(phi.shape[1], dtype=jnp.float32) + weighted.T @ phi
    chol = jnp.linalg.cholesky(v)
    theta = jsl.cho_solve((chol, True), weighted.T @ y)
    return RidgeRM(theta, chol)


def ridge_predict(rm: RidgeRM, phi: jax.Array) -> jax.Array:
    """r_hat = phi theta: [N, D] -> [N]."""
    return jnp.asarray(phi, jnp.float32) @ rm.theta


def confidence_width(rm: RidgeRM, phi: jax.Array) -> jax.Array:
    """||phi||_{V^-1} = sqrt(phi^T V^-1 phi) = ||L^-1 phi||_2 per row: [N, D] -> [N].

    At most ||phi|| / sqrt(lambda) (no data), and smaller where the fitted data cover phi.
    """
    z = jsl.solve_triangular(rm.chol, jnp.asarray(phi, jnp.float32).T, lower=True)
    return jnp.sqrt(jnp.sum(jnp.square(z), axis=0))


def inverse_design(rm: RidgeRM) -> jax.Array:
    """V^-1 [D, D] (for export; `confidence_width` never forms it)."""
    eye = jnp.eye(rm.chol.shape[0], dtype=rm.chol.dtype)
    return jsl.cho_solve((rm.chol, True), eye)


def oful_radius(rm: RidgeRM, lam: float, *, noise_std: float, norm_bound: float,
                delta: float = 0.05) -> jax.Array:
    """alpha of the self-normalised bound: with probability >= 1 - delta, for every x,
    |phi(x)^T theta_hat - phi(x)^T theta*| <= alpha ||phi(x)||_{V^-1}, where

        alpha = noise_std sqrt(2 log(det(V)^{1/2} det(lambda I)^{-1/2} / delta))
                + sqrt(lambda) norm_bound

    for sub-Gaussian noise of scale `noise_std` and ||theta*|| <= norm_bound
    (Abbasi-Yadkori et al. 2011, Theorem 2; the bound behind PrefPaint's reward error bound).

    Returns:
      [] float32.
    """
    num = rm.chol.shape[0]
    half_logdet = jnp.sum(jnp.log(jnp.diagonal(rm.chol)))  # log det(V)^{1/2}
    log_ratio = half_logdet - 0.5 * num * jnp.log(jnp.asarray(lam, jnp.float32))
    return (noise_std * jnp.sqrt(2.0 * (log_ratio - math.log(delta)))
            + math.sqrt(lam) * norm_bound)


def lcb_reward(r_hat: jax.Array, width: jax.Array, alpha: float | jax.Array) -> jax.Array:
    """The pessimistic reward r_hat - alpha ||phi||_{V^-1} (the lower confidence bound): [N]."""
    return jnp.asarray(r_hat, jnp.float32) - alpha * jnp.asarray(width, jnp.float32)


def trust_weights(width: jax.Array, *, k: float | jax.Array = PAPER_TRUST["k"],
                  b: float | jax.Array = PAPER_TRUST["b"],
                  w_min: float | jax.Array = PAPER_TRUST["w_min"],
                  w_max: float | jax.Array = PAPER_TRUST["w_max"]) -> jax.Array:
    """PrefPaint's reward-trustiness weights gamma = clip(exp(-k width + b), w_min, w_max): [N].

    Defaults are the reference code's (k 0.05, b 0.7, clamp [1, 2.21]). k = 0 and b = 0 give
    weight 1 everywhere (the plain objective). Constants: no gradient flows through them.
    """
    w = jnp.exp(-k * jnp.asarray(width, jnp.float32) + b)
    return jax.lax.stop_gradient(jnp.clip(w, w_min, w_max))


def normalized_advantages(rewards: jax.Array, group_size: int = 0, *,
                          advantage_clip: float | None = None, eps: float = 1e-6) -> jax.Array:
    """(r - mean) / (std + eps) over the batch (group_size 0) or within consecutive groups of
    `group_size`, clipped to [-c, c] when `advantage_clip` = c is given: [B] -> [B].

    The same normalisation as `alignax.algorithms.diffusion.group_advantages`.
    """
    r = jnp.asarray(rewards, jnp.float32)
    if group_size:
        if r.shape[0] % group_size:
            raise ValueError(f"batch {r.shape[0]} is not a multiple of group_size {group_size}")
        g = r.reshape(-1, group_size)
        adv = ((g - g.mean(-1, keepdims=True)) / (g.std(-1, keepdims=True) + eps)).reshape(-1)
    else:
        adv = (r - r.mean()) / (r.std() + eps)
    return adv if advantage_clip is None else jnp.clip(adv, -advantage_clip, advantage_clip)


def trust_weighted_advantages(r_hat: jax.Array, width: jax.Array, group_size: int = 0, *,
                              k: float | jax.Array = PAPER_TRUST["k"],
                              b: float | jax.Array = PAPER_TRUST["b"],
                              w_min: float | jax.Array = PAPER_TRUST["w_min"],
                              w_max: float | jax.Array = PAPER_TRUST["w_max"],
                              advantage_clip: float | None = 10.0) -> jax.Array:
    """gamma(x_b) A_b: PrefPaint's per-sample weight folded into the advantage: [B] -> [B].

    A_b is the normalised, clipped advantage of r_hat (`normalized_advantages`; the reference
    code clips at 10), gamma the `trust_weights` of the widths. Since gamma > 0, gamma_b
    max(-A_b rho, -A_b clip(rho)) = max(-(gamma_b A_b) rho, -(gamma_b A_b) clip(rho)): the
    paper's weighted DDPO loss is DDPO's clipped loss with advantages gamma A.
    """
    adv = normalized_advantages(r_hat, group_size, advantage_clip=advantage_clip)
    return trust_weights(width, k=k, b=b, w_min=w_min, w_max=w_max) * adv
