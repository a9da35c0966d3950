"""The tree-preference toy (experiments/tree_preferences.py): equal budgets, shared prefixes."""

import os
from typing import NamedTuple

import jax
import numpy as np
import pytest

from alignax.experiment import load_module
from alignax.models.transformer import TransformerConfig, make_lm
from alignax.sampling.tree import shared_depth
from alignax.tasks.language import BigramLanguage

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
tp = load_module(os.path.join(REPO, "experiments", "tree_preferences.py"))


class _Policy(NamedTuple):
    model: object
    params: object
    task: BigramLanguage


@pytest.fixture(scope="module")
def policy():
    task = BigramLanguage(vocab_size=12, prompt_len=2, response_len=6)
    model = make_lm(TransformerConfig(vocab_size=12, d_model=16, n_layers=1, n_heads=2, d_ff=16,
                                      max_len=task.seq_len))
    return _Policy(model, model.init(jax.random.key(0)), task)


def test_get_config_rejects_unknown_argument():
    with pytest.raises(ValueError, match="unknown argument"):
        tp.get_config("large")
    assert len(tp.get_config().seeds) >= 5


def test_tree_pairs_of_one_prompt_share_the_tree_prefix(policy):
    rng = np.random.default_rng(0)
    prompts = policy.task.sample_prompts(rng, 3)
    a, b = tp.tree_data(policy, prompts, jax.random.key(1), rng, branching=2, depth=3,
                        pairs_per_tree=4, strategy="siblings")
    assert a.shape == b.shape == (12, policy.task.seq_len)
    p = 1 + policy.task.prompt_len
    # siblings share all but the last 2-token segment, and the prompt
    np.testing.assert_array_equal(a[:, :p + 4], b[:, :p + 4])
    np.testing.assert_array_equal(a[:, 1:p], np.repeat(prompts, 4, axis=0))
    a, b = tp.tree_data(policy, prompts, jax.random.key(1), rng, branching=2, depth=3,
                        pairs_per_tree=28, strategy="all")
    assert len({(x.tobytes(), y.tobytes()) for x, y in zip(a, b)}) <= 28 * 3
    with pytest.raises(ValueError, match="pairs per tree"):
        tp.tree_data(policy, prompts, jax.random.key(1), rng, branching=2, depth=3,
                     pairs_per_tree=5, strategy="siblings")
    with pytest.raises(ValueError, match="multiple of the tree depth"):
        tp.tree_data(policy, prompts, jax.random.key(1), rng, branching=2, depth=4,
                     pairs_per_tree=1, strategy="all")
    assert shared_depth(2, 3)[0, 1] == 2


def test_chain_data_draws_two_independent_responses_per_prompt(policy):
    prompts = policy.task.sample_prompts(np.random.default_rng(1), 64)
    a, b = tp.chain_data(policy, prompts, jax.random.key(2))
    p = 1 + policy.task.prompt_len
    np.testing.assert_array_equal(a[:, :p], b[:, :p])
    assert np.mean(np.all(a[:, p:] == b[:, p:], axis=1)) < 0.5


def test_label_follows_the_gold_at_zero_temperature():
    a = np.array([[1, 2], [3, 4]])
    b = np.array([[5, 6], [7, 8]])
    c, r = tp._label(a, b, np.array([1.0, -1.0]), np.array([0.0, 0.0]),
                     np.random.default_rng(0), 0.0)
    np.testing.assert_array_equal(c, [[1, 2], [7, 8]])
    np.testing.assert_array_equal(r, [[5, 6], [3, 4]])


def test_linear_bt_diagnostic_recovers_an_additive_reward_and_flips_with_the_labels(tmp_path):
    rng = np.random.default_rng(0)
    scores = rng.normal(size=10)

    def seqs(n):
        return np.concatenate([np.ones((n, 2), np.int64), rng.integers(2, 10, (n, 6))], axis=1)

    a, b, ea, eb = seqs(400), seqs(400), seqs(500), seqs(500)
    ga, gb = scores[a[:, 2:]].mean(1), scores[b[:, 2:]].mean(1)
    c, r = tp._label(a, b, ga, gb, rng, 0.0)
    gold_margin = scores[ea[:, 2:]].mean(1) - scores[eb[:, 2:]].mean(1)
    # row 0: the labelled pairs; row 1: every label swapped (both fit in one program)
    acc, swapped = tp.linear_bt_accuracy(
        str(tmp_path), np.stack([c, r]), np.stack([r, c]), np.stack([ea, ea]),
        np.stack([eb, eb]), np.stack([gold_margin, gold_margin]), vocab_size=10, prompt_len=2,
        labels=[0, 1])
    assert acc > 0.9
    # swapping every label negates the fitted weights: accuracy becomes 1 - accuracy
    np.testing.assert_allclose(swapped, 1.0 - acc, atol=1e-6)


def test_token_counts_are_response_token_frequencies():
    seqs = np.array([[[9, 9, 1, 2, 2, 0]]])  # one row, one sequence; prompt of 2 tokens
    np.testing.assert_allclose(tp._token_counts(seqs, 4, 2), [[[0.25, 0.25, 0.5, 0.0]]])


def test_interaction_gold_has_the_additive_golds_spread_and_a_shared_prefix_matters(policy):
    task = policy.task  # response_len 6: three segments of 2 tokens
    config = tp.get_config("smoke")
    gold, phi, _ = tp.make_gold(config, task, seed=4)
    additive, counts, _ = tp.make_gold(_with(config, gold_kind="additive"), task, seed=4)
    rng = np.random.default_rng(5)
    prompts = task.sample_prompts(rng, 2048)
    seqs = task.sequences(prompts, task.sample_responses(rng, prompts))
    assert 0.8 < gold(seqs).std() / additive(seqs).std() < 1.25
    assert phi(seqs[:3]).shape == (3, task.vocab_size ** 2)
    assert counts(seqs[:3]).shape == (3, task.vocab_size)
    # two responses that differ only in the last segment: under the additive gold the margin
    # does not depend on the shared prefix, under the interaction gold it does
    p = 1 + task.prompt_len
    a, b = seqs[:1].copy(), seqs[:1].copy()
    b[0, -2:] = seqs[1, -2:]
    margins = {"add": [], "int": []}
    for other in seqs[2:40]:
        a2, b2 = a.copy(), b.copy()
        a2[0, p:-2] = b2[0, p:-2] = other[p:-2]
        margins["add"].append(float(additive(a2)[0] - additive(b2)[0]))
        margins["int"].append(float(gold(a2)[0] - gold(b2)[0]))
    assert np.ptp(margins["add"]) < 1e-6 and np.ptp(margins["int"]) > 1e-3


def _with(config, **kw):
    config = config.copy_and_resolve_references()
    for k, v in kw.items():
        config[k] = v
    return config
