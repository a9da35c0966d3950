"""alignax.algorithms.prm: the PRM rows by hand, the step loss against the BCE formula, the
selection rules on hand-made problems, `with_steps`, and the config checks."""

import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from alignax.algorithms import prm
from alignax.data.hf_datasets import PromptRecord


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    from alignax.data import HFTokenizer
    from tests.test_utils import write_tiny_tokenizer

    path = tmp_path_factory.mktemp("tok")
    write_tiny_tokenizer(str(path))
    return HFTokenizer.from_file(str(path))


def test_step_rows_and_with_steps_by_hand(tok):
    record = PromptRecord("w1", {"completions": ["w3 w4", "w5"], "labels": [True, False]})
    row = prm.step_rows(record, tok, max_length=8, max_steps=3, separator=" w0")
    ids = [tok.encode(w)[0] for w in "w1 w3 w4 w0 w5 w0".split()]
    assert row["ids"][:6].tolist() == ids and row["mask"].tolist() == [True] * 6 + [False] * 2
    assert row["pos"].tolist() == [3, 5, -1] and row["labels"].tolist() == [1, 0, 0]
    assert row["lmask"].tolist() == [1, 1, 0]
    # new steps: labels 0 by default, or the given ones; the prompt and other fields kept
    other = prm.with_steps(PromptRecord("w1", {"completions": ["w2"], "labels": [1],
                                               "answer": "w9"}), ["w6", "w7 w8"])
    assert other.extras == {"completions": ["w6", "w7 w8"], "labels": [0, 0], "answer": "w9"}
    assert prm.with_steps(other, ["w6"], [True]).extras["labels"] == [1]
    row = prm.step_rows(other, tok, max_length=8, max_steps=3, separator=" w0")
    assert row["pos"].tolist() == [2, 5, -1] and row["labels"].tolist() == [0, 0, 0]
    with pytest.raises(Exception, match="one 0/1 label per step"):
        prm.step_rows(PromptRecord("w1", {"completions": ["w2"], "labels": [2]}), tok,
                      max_length=8, max_steps=3, separator=" w0")


def test_step_loss_is_the_mean_masked_bce():
    logits = np.array([[[0.5, -1.0, 3.0]], [[2.0, 0.0, 0.0]]], np.float32)  # [B=2, 1, S=3]

    def apply_fn(params, ids, mask, reward_positions):
        del ids, mask
        return params * jnp.asarray(logits[:, 0])[:, :reward_positions.shape[1]]

    rows = {"ids": np.zeros((2, 4), np.int32), "mask": np.ones((2, 4), bool),
            "pos": np.zeros((2, 3), np.int32), "labels": np.array([[1, 0, 1], [0, 1, 1]]),
            "lmask": np.array([[1, 1, 0], [1, 0, 0]])}
    got = float(prm.step_loss_fn(apply_fn)(1.0, rows))
    sp = lambda x: np.log1p(np.exp(x))  # noqa: E731  softplus: -log sigmoid(-x)
    row0 = (sp(-0.5) + sp(-1.0)) / 2  # label 1 at 0.5, label 0 at -1.0
    row1 = sp(2.0)  # label 0 at 2.0
    np.testing.assert_allclose(got, (row0 + row1) / 2, rtol=1e-6)


def test_vote_accuracies_and_judge_by_hand():
    # two problems, N = 3 samples; answers ids, which are correct
    answers = jnp.array([[0, 1, 1], [0, 1, -1]])
    correct = jnp.array([[True, False, False], [False, False, False]])
    # step probabilities [P, N, K=2]; the second step of sample 2 is padding
    probs = jnp.array([[[0.9, 0.8], [0.3, 0.9], [0.4, 0.5]],
                       [[0.6, 0.6], [0.9, 0.9], [1.0, 1.0]]])
    mask = jnp.array([[[1, 1], [1, 1], [1, 0]]] * 2) > 0
    out = prm.vote_accuracies(answers, correct, probs, mask, num_answers=3,
                              aggregation="min")
    # problem 0: majority answer 1 (wrong); min scores 0.8, 0.3, 0.4: vote 0 (0.8 > 0.7),
    # best-of-N sample 0 (right); product 0.72, 0.27, 0.4: vote 0; last 0.8, 0.9, 0.4: vote 1
    # problem 1: no correct sample, nothing is right
    np.testing.assert_array_equal(out["majority"], [0, 0])
    np.testing.assert_array_equal(out["prm_vote"], [1, 0])
    np.testing.assert_array_equal(out["prm_best_of_n"], [1, 0])
    np.testing.assert_array_equal(out["prm_vote_product"], [1, 0])
    np.testing.assert_array_equal(out["prm_vote_last"], [0, 0])
    np.testing.assert_array_equal(out["coverage"], [1, 0])
    np.testing.assert_allclose(out["sample"], [1 / 3, 0])
    np.testing.assert_array_equal(prm.judge(answers, correct)(jnp.array([0, 0])), [1, 0])


def test_validate_names_the_bad_key():
    c = ml_collections.ConfigDict()
    c.seeds = [0]
    prm.add_prm_fields(c)
    with pytest.raises(ValueError, match="model.path"):
        prm.validate(c)
    c.model.path, c.data.path = "/m", "/d"
    c.vote.aggregation = "max"
    with pytest.raises(ValueError, match="vote.aggregation='max'"):
        prm.validate(c)
    c.vote.aggregation, c.data.max_steps = "min", 0
    with pytest.raises(ValueError, match="data.max_steps=0"):
        prm.validate(c)
