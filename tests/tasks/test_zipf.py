"""Zipf-Markov corpus: distributions, frequencies, determinism and the verifiable reward."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from alignax.tasks.zipf import ZipfMarkovCorpus, mode_following_reward


def test_tables_are_distributions_and_deterministic():
    c = ZipfMarkovCorpus(vocab_size=64, seed=3)
    np.testing.assert_allclose(c.unigram().sum(), 1.0, atol=1e-12)
    np.testing.assert_allclose(c.transition().sum(1), 1.0, atol=1e-12)
    np.testing.assert_array_equal(c.transition(), ZipfMarkovCorpus(vocab_size=64,
                                                                   seed=3).transition())
    assert not np.allclose(c.transition(), ZipfMarkovCorpus(vocab_size=64, seed=4).transition())
    ranks = np.sort(c.unigram())[::-1]
    np.testing.assert_allclose(ranks[0] / ranks[9], 10 ** 1.1, rtol=1e-9)
    top = c.top_successor()
    np.testing.assert_array_equal(top, np.argmax(c.transition(), 1))
    # each row: mix on `successors` favourites plus the Zipf floor
    t = c.transition()
    assert np.all((t > (1 - c.mix) * c.unigram() + 1e-12).sum(1) == c.successors)


def test_samples_follow_the_chain_and_frequencies_are_zipf_like():
    c = ZipfMarkovCorpus(vocab_size=128, seed=0)
    x = c.sample(np.random.default_rng(0), 4000, 16)
    assert x.shape == (4000, 16) and x.dtype == np.int32 and x.min() >= 0 and x.max() < 128
    # first tokens ~ Zipf
    freq = np.bincount(x[:, 0], minlength=128) / 4000
    assert np.abs(freq - c.unigram()).sum() < 0.15
    # transitions: the empirical rate of the top successor matches its probability
    prev, nxt = x[:, :-1].ravel(), x[:, 1:].ravel()
    hit = np.mean(nxt == c.top_successor()[prev])
    expected = np.mean(c.transition()[prev, c.top_successor()[prev]])
    assert hit == pytest.approx(expected, abs=0.01)
    # token frequencies over the whole text are heavy-tailed: log-log slope of rank-frequency
    counts = np.sort(np.bincount(x.ravel(), minlength=128))[::-1][:64]
    slope = np.polyfit(np.log(np.arange(1, 65)), np.log(counts), 1)[0]
    assert slope < -0.7
    assert 0.0 < c.entropy_rate() < np.log(128)


def test_mode_following_reward():
    top = jnp.array([1, 2, 0])
    prompts = jnp.array([[2, 0], [1, 1]])
    responses = jnp.array([[1, 2, 0], [0, 0, 0]])  # row 0: all follow; row 1: none do
    np.testing.assert_allclose(mode_following_reward(top, prompts, responses), [1.0, 0.0])
    r = jax.jit(mode_following_reward)(top, prompts, jnp.array([[1, 0, 1], [2, 0, 1]]))
    np.testing.assert_allclose(r, [2 / 3, 1.0])
