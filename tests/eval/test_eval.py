"""Gold-evaluation metrics and the policy evaluator."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from alignax.eval import (expected_calibration_error, make_policy_eval, preference_accuracy,
                          win_rate)
from alignax.models.transformer import TransformerConfig, make_lm
from alignax.tasks.gold import RandomTransformerGold
from alignax.tasks.language import BOS_ID, BigramLanguage


def test_win_rate_counts_ties_as_half():
    assert float(win_rate(jnp.array([1.0, 2.0, 0.0, 3.0]), jnp.array([0.0, 2.0, 1.0, 1.0]))) \
        == pytest.approx((1 + 0.5 + 0 + 1) / 4)


def test_preference_accuracy_ignores_gold_ties_and_halves_model_ties():
    pred = jnp.array([1.0, -2.0, 0.0, 3.0, 5.0])
    gold = jnp.array([0.5, 1.0, 2.0, 0.0, 1.0])
    # counted: 0 (right), 1 (wrong), 2 (model tie), 4 (right); 3 is a gold tie
    assert float(preference_accuracy(pred, gold)) == pytest.approx((1 + 0 + 0.5 + 1) / 4)


def test_ece_matches_a_numpy_reference_and_its_limits():
    rng = np.random.default_rng(0)
    p = rng.random(1000)
    y = (rng.random(1000) < p).astype(np.float32)
    bins = np.minimum((p * 10).astype(int), 9)
    expected = sum(abs(y[bins == b].mean() - p[bins == b].mean()) * (bins == b).mean()
                   for b in range(10) if (bins == b).any())
    np.testing.assert_allclose(expected_calibration_error(p, y), expected, rtol=1e-4)
    # calibrated predictions have a small ECE, overconfident ones a large one
    assert float(expected_calibration_error(p, y)) < 0.05
    over = np.where(p > 0.5, 1.0, 0.0)
    assert float(expected_calibration_error(over, y)) > 0.2
    # p exactly 1 falls in the last bin
    np.testing.assert_allclose(expected_calibration_error(jnp.ones(4), jnp.ones(4)), 0.0)
    with pytest.raises(ValueError, match="num_bins"):
        expected_calibration_error(p, y, num_bins=0)


TASK = BigramLanguage(vocab_size=12, prompt_len=3, response_len=5)
MODEL = make_lm(TransformerConfig(vocab_size=12, d_model=16, n_layers=1, n_heads=2, d_ff=32,
                                  max_len=TASK.seq_len))


def test_policy_eval_of_the_reference_itself():
    ref = MODEL.init(jax.random.key(0))
    prompts = TASK.eval_prompts(16, 0)
    scores = jnp.asarray(TASK.token_scores())
    evaluate = make_policy_eval(MODEL.apply, ref, prompts, lambda r: scores[r].mean(-1),
                                num_new_tokens=TASK.response_len,
                                prefix_ids=np.full((16, 1), BOS_ID, np.int32))
    m = evaluate(ref)
    assert float(m["win_rate"]) == 0.5 and abs(float(m["gold_gain"])) < 1e-6
    assert abs(float(m["kl_ref"])) < 1e-4
    other = evaluate(MODEL.init(jax.random.key(1)))
    assert float(other["kl_ref"]) > 0.01


def test_policy_eval_with_a_gold_rm_that_reads_the_prompt():
    gold = RandomTransformerGold(TASK, d_model=16, n_layers=1, seed=3, num_calibration=256)
    ref = MODEL.init(jax.random.key(0))
    prompts = TASK.eval_prompts(8, 1)
    evaluate = make_policy_eval(MODEL.apply, ref, prompts, gold,
                                num_new_tokens=TASK.response_len, reward_uses_prompts=True,
                                prefix_ids=np.full((8, 1), BOS_ID, np.int32))
    m = evaluate(MODEL.init(jax.random.key(2)))
    assert np.isfinite(float(m["gold_reward"])) and 0.0 <= float(m["win_rate"]) <= 1.0


def test_pairwise_eval_reports_calibration():
    from alignax.algorithms.reward_model import make_pairwise_eval

    # a "reward model" that returns the first token id as its reward
    def apply(params, ids, mask):
        return params * ids[:, 0].astype(jnp.float32)

    pairs = {"chosen_ids": np.array([[3], [2], [5], [1]]), "rejected_ids": np.array([[1], [2],
                                                                                  [4], [3]]),
             "chosen_mask": np.ones((4, 1)), "rejected_mask": np.ones((4, 1))}
    evaluate = make_pairwise_eval(apply, pairs)
    sharp, flat = evaluate(jnp.float32(50.0)), evaluate(jnp.float32(0.0))
    # margins 2, 0, 1, -2: accuracy counts the tie as 1/2
    assert float(sharp["label_accuracy"]) == pytest.approx(2.5 / 4)
    # a scale of 50 is overconfident (probabilities near 0/1 but 1 pair in 4 wrong);
    # scale 0 predicts 1/2 everywhere, which is calibrated on the symmetrised pairs
    assert float(sharp["label_ece"]) > 0.2 and float(flat["label_ece"]) < 1e-6
