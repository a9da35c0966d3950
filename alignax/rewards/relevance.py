"""Preference-free relevance rewards and the R^3 regularised mixture.

R^3 (Kim and Seo 2024, "Preference-free Alignment Learning with Regularized Relevance Reward",
arXiv 2402.03469) rewards a response by its relevance to the prompt as a retriever scores it,
rel(x, y) = cos(E_q(x), E_d(y)), with no preference data. Alone it is hackable (repeating the
query's own tokens maximises the similarity), so R^3 mixes it with regulariser rewards that
check each other. For open-ended queries the paper's reward is, as a review of it reports
(the paper itself not read here), the product r_x * LI(y) * RP(y) of the relevance, a length
incentive LI = #words / 100 and a repetition penalty RP = unique trigrams / trigrams (closed
queries use a reference-answer relevance instead): `r3_product_reward`. `r3_reward` is the
reproduction notes' additive toy version: relevance + distinct-token ratio + a capped length
incentive.

Token arrays are `[..., T]` ids with a `[..., T]` mask of valid tokens; every function is pure
jax, vectorised over the leading shape, and returns float32 `[...]`.

- `bag_of_tokens_embedding`: the mean of a fixed embedding table's rows over the valid tokens
  (the toy "retriever"; zero for an empty sequence).
- `relevance_reward`: cosine of the bag-of-token embeddings of prompt and response (0 when
  either is empty).
- `distinct_token_ratio`: distinct valid tokens / valid tokens (1 for no repeats, 0 when
  empty).
- `capped_length_reward`: min(n, target) / target.
- `r3_reward`: w_rel rel + w_distinct distinct + w_len length (`aggregate.weighted_sum`).
- `r3_product_reward`: rel * length * distinct (the paper's open-ended form, with the toy's
  distinct-token ratio for RP and a length incentive for LI).
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp

from alignax.rewards.aggregate import weighted_sum
from alignax.rewards.rules import cosine_reward


def bag_of_tokens_embedding(tokens, mask, table) -> jax.Array:
    """Mean embedding of the valid tokens: tokens, mask [..., T], table [V, D] -> [..., D]."""
    m = jnp.asarray(mask, jnp.float32)[..., None]
    e = jnp.asarray(table, jnp.float32)[jnp.asarray(tokens)]
    return (e * m).sum(-2) / jnp.maximum(m.sum(-2), 1.0)


def relevance_reward(query_tokens, query_mask, tokens, mask, table) -> jax.Array:
    """rel(x, y) = cos(E(x), E(y)) of the bag-of-token embeddings (`table` [V, D]); the query
    arrays broadcast against the response's leading shape. 0 when either side is empty."""
    q = bag_of_tokens_embedding(query_tokens, query_mask, table)
    r = bag_of_tokens_embedding(tokens, mask, table)
    q, r = jnp.broadcast_arrays(q, r)
    return cosine_reward(q, r)


def distinct_token_ratio(tokens, mask) -> jax.Array:
    """#distinct valid tokens / #valid tokens (distinct-1); 0 for an empty response."""
    t = jnp.asarray(tokens)
    m = jnp.asarray(mask, bool)
    length = t.shape[-1]
    same = (t[..., :, None] == t[..., None, :]) & m[..., None, :]  # [..., T, T]: s matches t
    earlier = jnp.tril(jnp.ones((length, length), bool), k=-1)  # s < t
    seen = jnp.any(same & earlier, axis=-1)
    first = m & ~seen
    n = m.sum(-1)
    return jnp.where(n > 0, first.sum(-1) / jnp.maximum(n, 1), 0.0).astype(jnp.float32)


def capped_length_reward(mask, *, target: float) -> jax.Array:
    """min(n, target) / target for the number n of valid tokens (a length incentive that stops
    paying beyond `target`)."""
    if target <= 0:
        raise ValueError(f"target must be > 0, got {target}")
    n = jnp.asarray(mask, jnp.float32).sum(-1)
    return jnp.minimum(n, target) / target


def r3_reward(relevance, distinct, length, weights: Sequence[float] = (1.0, 1.0, 1.0)
              ) -> jax.Array:
    """The regularised relevance mixture w_rel rel + w_distinct distinct + w_len length, each
    [...] (e.g. from `relevance_reward`, `distinct_token_ratio`, `capped_length_reward`)."""
    parts = jnp.stack(jnp.broadcast_arrays(*(jnp.asarray(x, jnp.float32)
                                             for x in (relevance, distinct, length))))
    shape = parts.shape[1:]
    return weighted_sum(parts.reshape(3, -1), weights).reshape(shape)


def r3_product_reward(relevance, distinct, length) -> jax.Array:
    """R^3's open-ended form r_x * LI * RP: relevance times a length incentive times a
    repetition penalty (e.g. `relevance_reward`, `capped_length_reward` with target = the
    longest response, `distinct_token_ratio`), elementwise."""
    parts = jnp.broadcast_arrays(*(jnp.asarray(x, jnp.float32)
                                   for x in (relevance, distinct, length)))
    return parts[0] * parts[1] * parts[2]
