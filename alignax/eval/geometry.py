"""Spectral metrics of a model's representations: RankMe and alpha-ReQ.

`H` is an [N, D] matrix of representations (e.g. a language model's final-layer hidden states
at N token positions, `alignax.models.transformer` with `return_hidden=True`).

- RankMe (Garrido et al. 2023, arXiv 2210.02885), the effective rank of H: with the singular
  values sigma_k of H and p_k = sigma_k / sum_j sigma_j + eps,

      RankMe(H) = exp(-sum_k p_k log p_k),

  between 1 (rank one) and min(N, D) (every singular value equal).
- alpha-ReQ (Agrawal et al. 2022, "alpha-ReQ: Assessing representation quality by measuring
  eigenspectrum decay"): the eigenvalues lambda_1 >= lambda_2 >= ... of the covariance of H
  follow a power law lambda_i ~ c i^-alpha; alpha is the least-squares slope of
  log lambda_i = log c - alpha log i. A larger alpha is a faster decay: a more anisotropic,
  compressed representation.

Li et al. 2025 ("Tracing the representation geometry of language models from pretraining to
post-training") track both over training (experiments/representation_geometry.py).

All functions are jax (jit- and vmap-able) and work in float32.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

RANKME_EPS = 1e-7  # Garrido et al.'s epsilon in p_k


def singular_values(h: jax.Array) -> jax.Array:
    """Singular values of H [N, D], descending: [min(N, D)]."""
    return jnp.linalg.svd(jnp.asarray(h, jnp.float32), compute_uv=False)


def rankme(h: jax.Array, *, eps: float = RANKME_EPS) -> jax.Array:
    """RankMe of H [N, D] (not centred, as in Garrido et al.): exp of the entropy of the
    normalised singular values. A scalar in [1, min(N, D)] (up to eps)."""
    return _rankme_of(singular_values(h), eps)


def covariance_eigenvalues(h: jax.Array) -> jax.Array:
    """Eigenvalues of the (column-centred) covariance of H [N, D], descending: [D]."""
    h = jnp.asarray(h, jnp.float32)
    centred = h - jnp.mean(h, axis=0, keepdims=True)
    cov = centred.T @ centred / jnp.maximum(h.shape[0] - 1, 1)
    return jnp.linalg.eigvalsh(cov)[::-1]


def power_law_fit(eigenvalues: jax.Array, *, start: int = 1, stop: int | None = None,
                  rel_floor: float = 1e-6) -> tuple[jax.Array, jax.Array]:
    """Least-squares fit of log lambda_i = c - alpha log i over the ranks i in [start, stop]
    (1-based, inclusive; default all) of descending eigenvalues; eigenvalues below
    `rel_floor * lambda_1` (numerically zero: a rank-deficient H) are left out of the fit.
    Returns (alpha, c); NaN when fewer than two eigenvalues remain."""
    lam = jnp.asarray(eigenvalues, jnp.float32)
    n = lam.shape[0]
    stop = n if stop is None else min(int(stop), n)
    ranks = jnp.arange(1, n + 1, dtype=jnp.float32)
    keep = (ranks >= start) & (ranks <= stop) & (lam > rel_floor * jnp.max(lam))
    w = keep.astype(jnp.float32)
    x = jnp.log(ranks)
    y = jnp.log(jnp.where(keep, lam, 1.0))
    count = jnp.sum(w)
    xm = jnp.sum(w * x) / jnp.maximum(count, 1.0)
    ym = jnp.sum(w * y) / jnp.maximum(count, 1.0)
    sxx = jnp.sum(w * (x - xm) ** 2)
    sxy = jnp.sum(w * (x - xm) * (y - ym))
    slope = sxy / jnp.maximum(sxx, 1e-30)
    valid = count >= 2
    alpha = jnp.where(valid, -slope, jnp.nan)
    c = jnp.where(valid, ym - slope * xm, jnp.nan)
    return alpha, c


def alpha_req(h: jax.Array, *, start: int = 1, stop: int | None = None,
              rel_floor: float = 1e-6) -> jax.Array:
    """alpha-ReQ of H [N, D]: the power-law decay exponent of its covariance eigenvalues
    (`power_law_fit` of `covariance_eigenvalues`)."""
    return power_law_fit(covariance_eigenvalues(h), start=start, stop=stop,
                         rel_floor=rel_floor)[0]


def _rankme_of(s: jax.Array, eps: float) -> jax.Array:
    p = s / jnp.maximum(jnp.sum(s), 1e-30) + eps
    return jnp.exp(-jnp.sum(p * jnp.log(p)))


def geometry_metrics(h: jax.Array, *, eps: float = RANKME_EPS) -> dict[str, jax.Array]:
    """{"rankme", "alpha_req"} of H [N, D] (or of [..., D], flattened to rows).

    Both come from ONE batched SVD of [H, H - mean(H)] (the covariance eigenvalues are the
    centred singular values squared over N - 1), so a program holds a single LAPACK call per
    evaluation. On a 2-core CPU, jaxlib runs a batched (e.g. vmapped over seeds) LAPACK call as
    a `ParallelBatchMap` that blocks a thread of the intra-op pool until its sub-tasks finish;
    two such calls that XLA schedules concurrently (an SVD for RankMe and an eigh for alpha-ReQ,
    independent ops) can block both pool threads and deadlock the program (seen with jax 0.10.2).
    """
    h = jnp.reshape(jnp.asarray(h, jnp.float32), (-1, jnp.shape(h)[-1]))
    n = h.shape[0]
    both = jnp.stack([h, h - jnp.mean(h, axis=0, keepdims=True)])
    s = jnp.linalg.svd(both, compute_uv=False)  # [2, min(N, D)]
    lam = jnp.square(s[1]) / max(n - 1, 1)
    if lam.shape[0] < h.shape[1]:  # N < D: the other covariance eigenvalues are 0
        lam = jnp.concatenate([lam, jnp.zeros((h.shape[1] - lam.shape[0],), lam.dtype)])
    return {"rankme": _rankme_of(s[0], eps), "alpha_req": power_law_fit(lam)[0]}
