"""daa_overoptimization and tdpo toys: the worlds, the pairs, and the per-seed claim values."""

import importlib.util
import os

import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _module(name):
    spec = importlib.util.spec_from_file_location(f"{name}_toy",
                                                  os.path.join(REPO, "experiments", f"{name}.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_daa_pairs_cover_a_subset_of_the_leaves_and_split_seeds_differ():
    mod = _module("daa_overoptimization")
    config = mod.get_config(None)
    world = mod.make_world(config, 3)
    assert world["support"].sum() == config.task.support_size
    np.testing.assert_allclose(world["ref_probs"].sum(), 1.0)
    data = mod.make_data(config, 3)
    seen = data["seen"]
    # the training pairs only use covered leaves, two distinct ones each
    assert np.all(world["support"][seen]) and seen.sum() <= config.task.support_size
    assert np.all(data["chosen"] != data["rejected"])
    # train / validation / test pairs are different draws (split_seeds)
    assert not np.array_equal(data["chosen"], data["val_chosen"][:len(data["chosen"])])
    # BT labels: the chosen leaf has the higher gold more often than not
    gold = data["gold"]
    assert np.mean(gold[data["val_chosen"]] > gold[data["val_rejected"]]) > 0.5


def test_daa_worst_over_small_betas():
    mod = _module("daa_overoptimization")
    results = {mod.variant_name("dpo", b): {"per_seed": {0: {"m": v0}, 1: {"m": v1}}}
               for b, v0, v1 in [(0.01, 0.3, 0.1), (0.05, 0.2, 0.4), (0.5, -9.0, -9.0)]}
    assert mod._worst(results, "dpo", "m") == {0: 0.2, 1: 0.1}  # beta 0.5 is not small
    assert mod._worst(results, "ipo", "m") == {}
    assert mod.variant_name("slic", 0.05, "shared") == "slic_b0p05_shared"


def test_tdpo_gold_counts_positive_tokens_and_matched_gold_interpolates():
    mod = _module("tdpo")
    config = mod.get_config(None)
    gold = mod.gold_reward(config)
    seqs = mod.space_of(config).sequences
    assert gold[mod.space_of(config).index([0, 1, 2, 3])] == 2
    assert gold.max() == config.task.length and gold.min() == 0
    assert np.array_equal(gold, (seqs < 2).sum(-1))
    traj = {"gold": np.array([[1.0, 2.0, 3.0]]), "kl": np.array([[0.0, 1.0, 4.0]]),
            "seq_kl": np.array([[0.0, 2.0, 2.0]]), "entropy": np.array([[1.0, 0.8, 0.4]])}
    at = mod.at_matched_gold(traj, 0, 2.5)
    assert at["kl"] == pytest.approx(2.5) and at["entropy"] == pytest.approx(0.6)
    assert mod.at_matched_gold(traj, 0, 5.0)["kl"] == np.inf
    assert mod._second_smallest([0.9, 0.5, 0.7, 2.0]) == 0.7
