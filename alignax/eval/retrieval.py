"""Dense retrieval metrics: cosine top-k, precision@k, recall@k, MRR and k-NN "ICL" accuracy.

A retriever embeds Q queries [Q, D] and K keys (demonstrations, documents) [K, D]; the keys of
query q are ranked by cos(query_q, key_j) (ties to the lower index, as `jax.lax.top_k`). With
a relevance matrix rel [Q, K] (bool):

    precision@k(q) = |top_k(q) & rel_q| / k
    recall@k(q)    = |top_k(q) & rel_q| / |rel_q|          (0 when rel_q is empty)
    RR(q)          = 1 / rank of the first relevant key     (0 when rel_q is empty)

and, with key labels, the k-NN "ICL" prediction of query q is the majority label of its k
retrieved keys (a stand-in for a model that copies its in-context demonstrations' answer; ties
go to the smallest label). CLiTSSA (Bajpai & Chakraborty, AAAI 2025) measures its
demonstration retriever this way. A `key_mask` [K] removes keys from every ranking (padding).
All functions are pure jnp and return per-query values; the caller averages.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from alignax.losses.embedding import cosine_matrix

__all__ = ["cosine_matrix", "cosine_top_k", "knn_accuracy", "knn_predict", "precision_at_k",
           "recall_at_k", "reciprocal_rank", "retrieval_metrics"]


def cosine_top_k(queries, keys, k: int, *, key_mask=None) -> tuple[jax.Array, jax.Array]:
    """The k keys of highest cosine similarity for each query.

    Args:
      queries: [Q, D] query embeddings.
      keys: [K, D] key embeddings.
      k: keys per query (1 <= k <= K).
      key_mask: optional [K] valid keys; invalid keys are never retrieved (with fewer than k
        valid keys the tail holds invalid ones at score -inf).

    Returns:
      (indices [Q, k] int32, scores [Q, k] float32), best first.
    """
    scores = cosine_matrix(queries, keys)
    if not 1 <= k <= scores.shape[1]:
        raise ValueError(f"k must be in [1, {scores.shape[1]}], got {k}")
    if key_mask is not None:
        scores = jnp.where(jnp.asarray(key_mask, bool)[None, :], scores, -jnp.inf)
    top, idx = jax.lax.top_k(scores, k)
    return idx.astype(jnp.int32), top


def _hits(retrieved, relevant) -> jax.Array:
    rel = jnp.asarray(relevant, bool)
    idx = jnp.asarray(retrieved, jnp.int32)
    if idx.ndim != 2 or rel.ndim != 2 or idx.shape[0] != rel.shape[0]:
        raise ValueError(f"retrieved must be [Q, k] and relevant [Q, K], got {idx.shape} and "
                         f"{rel.shape}")
    return jnp.take_along_axis(rel, idx, axis=1)  # [Q, k]


def precision_at_k(retrieved, relevant) -> jax.Array:
    """[Q] fraction of each query's k retrieved keys that are relevant.

    Args:
      retrieved: [Q, k] key indices (`cosine_top_k`).
      relevant: [Q, K] bool relevance.
    """
    return _hits(retrieved, relevant).mean(-1, dtype=jnp.float32)


def recall_at_k(retrieved, relevant) -> jax.Array:
    """[Q] fraction of each query's relevant keys among its k retrieved ones (0 when none is
    relevant). Args as `precision_at_k`."""
    hits = _hits(retrieved, relevant).sum(-1, dtype=jnp.float32)
    total = jnp.asarray(relevant, bool).sum(-1, dtype=jnp.float32)
    return jnp.where(total > 0, hits / jnp.maximum(total, 1.0), 0.0)


def reciprocal_rank(scores, relevant, *, key_mask=None) -> jax.Array:
    """[Q] 1 / (1-based rank of the first relevant key) under `scores` [Q, K] (higher is
    better; ties ranked to the lower index), 0 for a query without a relevant valid key. The
    mean over queries is the MRR."""
    s = jnp.asarray(scores, jnp.float32)
    rel = jnp.asarray(relevant, bool)
    if s.shape != rel.shape or s.ndim != 2:
        raise ValueError(f"scores and relevant must both be [Q, K], got {s.shape} and "
                         f"{rel.shape}")
    if key_mask is not None:
        valid = jnp.asarray(key_mask, bool)[None, :]
        s = jnp.where(valid, s, -jnp.inf)
        rel = rel & valid
    order = jnp.argsort(-s, axis=-1, stable=True)  # [Q, K] best first
    ranked = jnp.take_along_axis(rel, order, axis=1)
    first = jnp.argmax(ranked, axis=-1)
    return jnp.where(ranked.any(-1), 1.0 / (first + 1.0), 0.0)


def knn_predict(retrieved, key_labels, num_classes: int) -> jax.Array:
    """[Q] majority label of each query's retrieved keys (ties to the smallest label).

    Args:
      retrieved: [Q, k] key indices.
      key_labels: [K] int labels in [0, num_classes).
      num_classes: C.
    """
    labels = jnp.asarray(key_labels, jnp.int32)[jnp.asarray(retrieved, jnp.int32)]  # [Q, k]
    counts = jax.nn.one_hot(labels, num_classes, dtype=jnp.float32).sum(1)  # [Q, C]
    return jnp.argmax(counts, axis=-1).astype(jnp.int32)


def knn_accuracy(retrieved, key_labels, query_labels, num_classes: int) -> jax.Array:
    """[Q] 1.0 where the k-NN "ICL" prediction (`knn_predict`) equals the query's label."""
    pred = knn_predict(retrieved, key_labels, num_classes)
    return (pred == jnp.asarray(query_labels, jnp.int32)).astype(jnp.float32)


def retrieval_metrics(queries, keys, relevant, *, k: int, key_mask=None, key_labels=None,
                      query_labels=None, num_classes: int | None = None) -> dict:
    """Means over queries of precision@k, recall@k and MRR (and the k-NN accuracy with labels).

    Args:
      queries: [Q, D]; keys: [K, D]; relevant: [Q, K] bool.
      k: retrieved keys per query.
      key_mask: optional [K] valid keys.
      key_labels, query_labels, num_classes: optional [K], [Q] ints and C for `knn_accuracy`.

    Returns:
      {"precision_at_k", "recall_at_k", "mrr"[, "knn_accuracy"]}: scalar float32 arrays.
    """
    idx, _ = cosine_top_k(queries, keys, k, key_mask=key_mask)
    out = {"precision_at_k": precision_at_k(idx, relevant).mean(),
           "recall_at_k": recall_at_k(idx, relevant).mean(),
           "mrr": reciprocal_rank(cosine_matrix(queries, keys), relevant,
                                  key_mask=key_mask).mean()}
    if key_labels is not None:
        if query_labels is None or num_classes is None:
            raise ValueError("knn accuracy needs key_labels, query_labels and num_classes")
        out["knn_accuracy"] = knn_accuracy(idx, key_labels, query_labels, num_classes).mean()
    return out
