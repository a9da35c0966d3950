"""alignax.eval.embeddings: pooled final hidden states of a causal LM, in chunks."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from alignax.eval.embeddings import pool_hidden, sequence_embeddings
from alignax.models.transformer import TransformerConfig, make_lm


def test_pool_hidden_last_and_mean_by_hand():
    h = jnp.arange(2 * 3 * 2, dtype=jnp.float32).reshape(2, 3, 2)
    mask = jnp.array([[1, 1, 0], [0, 1, 1]])  # right- and left-padded rows
    np.testing.assert_array_equal(pool_hidden(h, mask, "last"), [h[0, 1], h[1, 2]])
    np.testing.assert_allclose(pool_hidden(h, mask, "mean"),
                               [(h[0, 0] + h[0, 1]) / 2, (h[1, 1] + h[1, 2]) / 2])
    with pytest.raises(ValueError, match="pool must be one of"):
        pool_hidden(h, mask, "max")


def test_sequence_embeddings_match_one_forward_pass_whatever_the_chunking():
    model = make_lm(TransformerConfig(vocab_size=17, d_model=16, n_layers=1, n_heads=2,
                                      d_ff=32, max_len=8))
    params = model.init(jax.random.key(0))
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 17, (5, 6)).astype(np.int32)
    mask = np.ones((5, 6), np.int32)
    mask[1, 4:] = 0
    mask[3, :2] = 0
    _, hidden = model.apply(params, jnp.asarray(ids), jnp.asarray(mask), return_hidden=True)
    want = np.asarray(pool_hidden(hidden, mask, "last"))
    for b in (1, 2, 5, 64):  # one chunk, uneven chunks (padded last one), more than N
        got = sequence_embeddings(model, params, ids, mask, batch_size=b)
        assert got.shape == (5, 16) and got.dtype == np.float32
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    # the pooled row really is the last valid token's hidden state, not the last slot's
    assert not np.allclose(want[1], np.asarray(hidden[1, -1]))
    mean = sequence_embeddings(model, params, ids, mask, pool="mean", batch_size=2)
    np.testing.assert_allclose(mean, pool_hidden(hidden, mask, "mean"), rtol=1e-5, atol=1e-6)


def test_sequence_embeddings_errors_and_empty_input():
    model = make_lm(TransformerConfig(vocab_size=11, d_model=8, n_layers=1, n_heads=2,
                                      d_ff=16, max_len=4))
    params = model.init(jax.random.key(0))
    ids = np.zeros((2, 3), np.int32)
    with pytest.raises(ValueError, match=r"must both be \[N, T\]"):
        sequence_embeddings(model, params, ids, np.ones((2, 4)))
    with pytest.raises(ValueError, match="batch_size"):
        sequence_embeddings(model, params, ids, np.ones((2, 3)), batch_size=0)
    assert sequence_embeddings(model, params, ids[:0], np.ones((0, 3))).shape == (0, 8)
