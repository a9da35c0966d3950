"""Embedding-alignment objectives: cosine-similarity regression and the in-batch contrastive loss.

CLiTSSA (Bajpai & Chakraborty, "Multilingual LLMs Inherently Reward In-Language Time-Sensitive
Semantic Alignment for Low-Resource Languages", AAAI 2025) retrieves English in-context
demonstrations for a low-resource-language query with a multilingual sentence encoder E that
is fine-tuned so that the cosine similarity of a cross-lingual query pair regresses onto the
similarity the two queries have in English (the in-language, time-sensitive similarity s*):

    L_i = (cos(E(q_a,i), E(q_b,i)) - s*_i)^2,      cos(u, v) = u.v / (|u| |v|)

(sentence-transformers' `CosineSimilarityLoss`). The usual cross-lingual alignment baseline is
the in-batch contrastive (InfoNCE, LaBSE / multiple-negatives ranking) loss on translation
pairs: row i of side a has its positive at row i of side b and every other valid row of b as a
negative,

    L_i = -log softmax_j(cos(a_i, b_j) / tau)[i].

Both are functions of embeddings [B, D] (the encoder is the caller's), return per-example
values [B] (0 at masked rows; the caller reduces, e.g. `masked_mean`), and compute in float32.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def cosine_similarity(emb_a, emb_b, *, eps: float = 1e-8) -> jax.Array:
    """Row-wise cosine similarity [..., D] x [..., D] -> [...] float32.

    cos(u, v) = u.v / (max(|u|, eps) max(|v|, eps)); a zero row has similarity 0.
    """
    a = jnp.asarray(emb_a, jnp.float32)
    b = jnp.asarray(emb_b, jnp.float32)
    if a.shape != b.shape:
        raise ValueError(f"emb_a and emb_b must have the same shape, got {a.shape} and {b.shape}")
    na = jnp.maximum(jnp.linalg.norm(a, axis=-1), eps)
    nb = jnp.maximum(jnp.linalg.norm(b, axis=-1), eps)
    return (a * b).sum(-1) / (na * nb)


def cosine_matrix(emb_a, emb_b, *, eps: float = 1e-8) -> jax.Array:
    """All-pairs cosine similarity [A, D] x [B, D] -> [A, B] float32 (see `cosine_similarity`)."""
    a = jnp.asarray(emb_a, jnp.float32)
    b = jnp.asarray(emb_b, jnp.float32)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"emb_a and emb_b must be [A, D] and [B, D], got {a.shape} and "
                         f"{b.shape}")
    a = a / jnp.maximum(jnp.linalg.norm(a, axis=-1, keepdims=True), eps)
    b = b / jnp.maximum(jnp.linalg.norm(b, axis=-1, keepdims=True), eps)
    return a @ b.T


def cosine_regression_loss(emb_a, emb_b, target_similarity, *, mask=None,
                           eps: float = 1e-8) -> jax.Array:
    """CLiTSSA's cosine-similarity regression, per pair.

        L_i = (cos(emb_a_i, emb_b_i) - s*_i)^2

    Args:
      emb_a: [B, D] embeddings of one side (the low-resource queries).
      emb_b: [B, D] embeddings of the other side (the English queries).
      target_similarity: [B] s*, the pair's in-language similarity (in [-1, 1]).
      mask: optional [B] bool/0-1, the valid pairs; masked pairs give 0.
      eps: the norm floor of `cosine_similarity`.

    Returns:
      [B] float32 per-pair losses.
    """
    cos = cosine_similarity(emb_a, emb_b, eps=eps)
    target = jnp.asarray(target_similarity, jnp.float32)
    if target.shape != cos.shape:
        raise ValueError(f"target_similarity must be {cos.shape}, got {target.shape}")
    loss = (cos - target) ** 2
    if mask is None:
        return loss
    return jnp.where(jnp.asarray(mask, bool), loss, 0.0)


def in_batch_contrastive_loss(emb_a, emb_b, *, temperature: float = 0.05, mask=None,
                              symmetric: bool = False, eps: float = 1e-8) -> jax.Array:
    """In-batch contrastive (InfoNCE) loss of aligned pairs (a_i, b_i), per row.

        L_i = -log exp(c_ii / tau) / sum_{j valid} exp(c_ij / tau),   c = cosine_matrix(a, b)

    with `symmetric`, the mean of that and the same loss with a and b swapped (CLIP).

    Args:
      emb_a: [B, D] anchors (e.g. low-resource queries).
      emb_b: [B, D] their positives at the same rows (e.g. their English translations); the
        other valid rows are the negatives.
      temperature: tau > 0.
      mask: optional [B] valid rows; a masked row is neither an anchor (loss 0) nor a negative.
      symmetric: average with the b -> a direction.
      eps: the norm floor of the cosines.

    Returns:
      [B] float32 per-row losses.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    logits = cosine_matrix(emb_a, emb_b, eps=eps) / temperature
    n = logits.shape[0]
    if logits.shape != (n, n):
        raise ValueError(f"emb_a and emb_b need the same number of rows, got {logits.shape}")
    valid = jnp.ones((n,), bool) if mask is None else jnp.asarray(mask, bool)
    neg_inf = jnp.finfo(jnp.float32).min

    def direction(lg):
        lg = jnp.where(valid[None, :], lg, neg_inf)
        loss = jax.nn.logsumexp(lg, axis=-1) - jnp.diagonal(lg)
        return jnp.where(valid, loss, 0.0)

    loss = direction(logits)
    if symmetric:
        loss = 0.5 * (loss + direction(logits.T))
    return loss
