"""The bigram language testbed: the chain, the gold reward and the simulated labels."""

import numpy as np
import pytest

from alignax.tasks.language import BOS_ID, NUM_SPECIAL, BigramLanguage


def test_samples_follow_the_transition_matrix():
    task = BigramLanguage(vocab_size=6, prompt_len=2, response_len=30, concentration=1.0, seed=3)
    _, transition, _ = task._params()
    rng = np.random.default_rng(0)
    prompts = task.sample_prompts(rng, 4000)
    resp = task.sample_responses(rng, prompts)
    seq = np.concatenate([prompts, resp], axis=1) - NUM_SPECIAL
    counts = np.zeros((4, 4))
    np.add.at(counts, (seq[:, :-1].ravel(), seq[:, 1:].ravel()), 1)
    empirical = counts / counts.sum(1, keepdims=True)
    # 120k transitions: the standard error of each frequency is below 0.003
    np.testing.assert_allclose(empirical, transition, atol=0.015)
    assert seq.min() >= 0 and seq.max() < 4


def test_gold_reward_is_the_mean_token_score():
    task = BigramLanguage(vocab_size=8, response_len=3)
    s = task.token_scores()
    assert s[0] == 0 and s[1] == 0
    resp = np.array([[2, 3, 4], [7, 7, 7]])
    np.testing.assert_allclose(task.gold_reward(resp), [(s[2] + s[3] + s[4]) / 3, s[7]], rtol=1e-6)


def test_sequences_and_determinism():
    task = BigramLanguage()
    a = task.preference_examples(16, seed=5)
    b = task.preference_examples(16, seed=5)
    c = task.preference_examples(16, seed=6)
    assert all(np.array_equal(x["chosen"], y["chosen"]) for x, y in zip(a, b))
    assert not all(np.array_equal(x["chosen"], y["chosen"]) for x, y in zip(a, c))
    seq = task.sequences(a[0]["prompt"][None], a[0]["chosen"][None])
    assert seq.shape == (1, task.seq_len) and seq[0, 0] == BOS_ID


@pytest.mark.parametrize("temperature", [0.0, 0.1])
def test_labels_are_bradley_terry_draws_of_the_gold_reward(temperature):
    task = BigramLanguage(label_temperature=temperature)
    ex = task.preference_examples(3000, seed=0)
    gold_c = np.array([e["chosen_gold"] for e in ex])
    gold_r = np.array([e["rejected_gold"] for e in ex])
    np.testing.assert_allclose(gold_c, task.gold_reward(np.stack([e["chosen"] for e in ex])))
    correct = np.array([e["label_correct"] for e in ex])
    if temperature == 0:
        assert np.all(gold_c >= gold_r)
    else:
        # The expected fraction of correct labels is E[sigmoid(|dr| / T)].
        d = np.abs(gold_c - gold_r)
        expected = np.mean(1 / (1 + np.exp(-d / temperature)))
        assert abs(correct.mean() - expected) < 3 * np.sqrt(expected * (1 - expected) / 3000)


def test_eval_prompt_ids_and_correlated_scores():
    from alignax.tasks.language import BOS_ID, BigramLanguage

    task = BigramLanguage()
    ids = task.eval_prompt_ids(5, 3)
    assert ids.dtype == np.int32 and (ids[:, 0] == BOS_ID).all()
    np.testing.assert_array_equal(ids[:, 1:], task.eval_prompts(5, 3))
    a, b = task.correlated_scores(1.0, 7)
    np.testing.assert_array_equal(a, task.token_scores())
    np.testing.assert_allclose(b, a, rtol=1e-6)  # mix 1: B is A
    a, b = task.correlated_scores(0.0, 7)  # mix 0: B is the other task's scores
    other = BigramLanguage(seed=task.seed + 7).token_scores()
    np.testing.assert_allclose(b, other, rtol=1e-6)
    with pytest.raises(ValueError, match="mix"):
        task.correlated_scores(1.5, 7)
