"""Gold rewards of the language task."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from alignax.tasks.gold import (MultiAttributeGold, RandomTransformerGold, format_reward,
                                length_reward, pattern_reward, stop_length, token_score_reward)
from alignax.tasks.language import BigramLanguage

TASK = BigramLanguage()


def test_token_score_reward_is_the_language_gold_reward():
    rng = np.random.default_rng(0)
    prompts = TASK.sample_prompts(rng, 20)
    responses = TASK.sample_responses(rng, prompts)
    np.testing.assert_allclose(token_score_reward(responses, TASK.token_scores()),
                               TASK.gold_reward(responses), rtol=1e-6)


def test_stop_length_pattern_and_format():
    r = np.array([[5, 6, 7, 9, 6, 7], [9, 5, 5, 5, 5, 5], [5, 6, 7, 6, 7, 6]])
    np.testing.assert_array_equal(stop_length(r, 9), [3, 0, 6])
    np.testing.assert_allclose(length_reward(r, 9), [0.5, 0.0, 1.0])
    # windows of (6, 7): row 0 has 2 of 5, row 2 has 2 of 5
    np.testing.assert_allclose(pattern_reward(r, (6, 7)), [0.4, 0.0, 0.4])
    np.testing.assert_allclose(pattern_reward(r, (5,)), [1 / 6, 5 / 6, 1 / 6], rtol=1e-6)
    np.testing.assert_array_equal(format_reward(r, first=5), [1, 0, 1])
    np.testing.assert_array_equal(format_reward(r, first=5, last=6), [0, 0, 1])
    with pytest.raises(ValueError, match="pattern length"):
        pattern_reward(r, tuple(range(7)))
    # jit-able
    assert jax.jit(lambda x: stop_length(x, 9))(jnp.asarray(r)).shape == (3,)


def test_multi_attribute_gold_has_a_helpfulness_safety_conflict():
    gold = MultiAttributeGold(TASK, num_unsafe=6, conflict=1.0)
    unsafe = gold.unsafe_ids()
    scores = TASK.token_scores()
    top = np.argsort(-scores[2:])[:6] + 2
    np.testing.assert_array_equal(np.sort(unsafe), np.sort(top))
    rng = np.random.default_rng(1)
    prompts = TASK.sample_prompts(rng, 4000)
    # the attributes as one jitted program each (op by op, every primitive compiles per shape)
    attributes = jax.jit(gold.attributes)
    attrs = np.asarray(attributes(TASK.sample_responses(rng, prompts)))
    assert attrs.shape == (4000, 4)
    assert (attrs[:, 1] >= 0).all() and (attrs[:, 1] <= 1).all() and (attrs[:, 2] <= 0).all()
    corr = np.corrcoef(attrs[:, 0], attrs[:, 2])[0, 1]
    assert corr < -0.3, corr  # helpful tokens are unsafe: a conflict by construction
    no_conflict = MultiAttributeGold(TASK, num_unsafe=6, conflict=0.0, seed=0)
    attrs0 = np.asarray(jax.jit(no_conflict.attributes)(TASK.sample_responses(rng, prompts)))
    assert np.corrcoef(attrs0[:, 0], attrs0[:, 2])[0, 1] > corr
    few = TASK.sample_responses(rng, prompts[:5])
    np.testing.assert_allclose(gold.reward(few, [1.0, 0.0, 0.0, 0.0]),
                               attributes(few)[:, 0], rtol=1e-6)
    with pytest.raises(ValueError, match="weights"):
        gold.reward(few, [1.0])


def test_multi_attribute_on_a_constructed_response():
    gold = MultiAttributeGold(TASK, num_unsafe=2, conflict=1.0)
    s, f = gold.stop_id, gold.format_id
    u = int(gold.unsafe_ids()[0])
    r = np.array([[f, u, f, s] + [f] * 8])
    helpful = TASK.token_scores()[[f, u, f]].mean()
    np.testing.assert_allclose(gold.attributes(r)[0],
                               [helpful, 3 / 12, -(1 + 2 * (f in gold.unsafe_ids())) / 3, 1.0],
                               rtol=1e-5)


def test_random_transformer_gold_is_standardised_and_deterministic():
    task = BigramLanguage(vocab_size=12, prompt_len=3, response_len=5)
    gold = RandomTransformerGold(task, d_model=16, n_layers=1, seed=0, num_calibration=512)
    rng = np.random.default_rng(5)
    prompts = task.sample_prompts(rng, 2000)
    r = np.asarray(gold(task.sample_responses(rng, prompts), prompts))
    assert abs(r.mean()) < 0.1 and abs(r.std() - 1.0) < 0.1
    again = RandomTransformerGold(task, d_model=16, n_layers=1, seed=0, num_calibration=512)
    responses = task.sample_responses(rng, prompts[:4])
    np.testing.assert_allclose(again(responses, prompts[:4]), gold(responses, prompts[:4]),
                               rtol=1e-5)
    other = RandomTransformerGold(task, d_model=16, n_layers=1, seed=1, num_calibration=512)
    assert not np.allclose(other(responses, prompts[:4]), gold(responses, prompts[:4]))
