"""Relevance reward (bag-of-token cosine), distinct-token ratio, capped length, R^3 mixture."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from alignax.rewards import relevance


def test_bag_of_tokens_and_relevance():
    table = jnp.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    tokens = jnp.array([[1, 2, 0], [1, 1, 1], [0, 0, 0]])
    mask = jnp.array([[1, 1, 0], [1, 1, 1], [0, 0, 0]])
    np.testing.assert_allclose(relevance.bag_of_tokens_embedding(tokens, mask, table),
                               [[0.5, 0.5], [1.0, 0.0], [0.0, 0.0]])
    rel = jax.jit(relevance.relevance_reward)(jnp.array([1]), jnp.array([1]), tokens, mask,
                                              table)
    # repeating the query token is the most relevant response: the hack the regularisers check
    np.testing.assert_allclose(rel, [np.sqrt(0.5), 1.0, 0.0], atol=1e-6)


def test_distinct_ratio_and_length():
    tokens = jnp.array([[3, 3, 3, 3], [1, 2, 3, 9], [1, 2, 1, 5], [4, 4, 4, 4]])
    mask = jnp.array([[1, 1, 1, 1], [1, 1, 1, 1], [1, 1, 1, 0], [0, 0, 0, 0]])
    # the last row's second token is masked: equal to a valid one, it is not a repeat
    tokens = jnp.concatenate([tokens, jnp.array([[5, 5, 0, 0]])])
    mask = jnp.concatenate([mask, jnp.array([[1, 0, 0, 0]])])

    @jax.jit
    def both(t, m):
        return (relevance.distinct_token_ratio(t, m),
                relevance.capped_length_reward(m, target=3.0))

    ratio, length = both(tokens, mask)
    np.testing.assert_allclose(ratio, [0.25, 1.0, 2 / 3, 0.0, 1.0], atol=1e-6)
    np.testing.assert_allclose(length, [1.0, 1.0, 1.0, 0.0, 1 / 3], atol=1e-6)
    with pytest.raises(ValueError, match="target"):
        relevance.capped_length_reward(mask, target=0.0)


def test_r3_mixture():
    rel = jnp.array([[1.0, 0.5]])
    dist = jnp.array([[0.25, 1.0]])
    length = jnp.array([[1.0, 1.0]])
    out = relevance.r3_reward(rel, dist, length, weights=(1.0, 2.0, 0.5))
    np.testing.assert_allclose(out, [[1.0 + 0.5 + 0.5, 0.5 + 2.0 + 0.5]])
    assert out.shape == (1, 2)


def test_r3_product():
    out = relevance.r3_product_reward(jnp.array([1.0, 0.5]), jnp.array([0.25, 1.0]),
                                      jnp.array([[1.0], [0.4]]))
    np.testing.assert_allclose(out, [[0.25, 0.5], [0.1, 0.2]], atol=1e-6)
