"""SALMON toy: principle sets, their encoding, the correlated attributes and the judge."""

import importlib.util
import os

import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _module():
    path = os.path.join(REPO, "experiments", "salmon.py")
    spec = importlib.util.spec_from_file_location("salmon_toy", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_principle_sets_and_encoding():
    mod = _module()
    sets = mod.all_principle_sets(5, 3)
    assert len(sets) == 10 + 40 + 80
    weights, hot = mod.encode([((0, 1), (4, -1))], 5)
    np.testing.assert_array_equal(weights[0], [1, 0, 0, 0, -1])
    assert hot[0].sum() == 2 and hot[0, 0] == 1 and hot[0, 9] == 1


def test_split_is_disjoint_and_keeps_singles():
    mod = _module()
    config = mod.get_config("smoke")
    train, held = mod.split_principles(config, 0)
    assert not set(train) & set(held)
    assert all(len(p) > 1 for p in held) and held
    assert sum(len(p) == 1 for p in train) == 10


def test_judge_has_verbosity_bias_and_labels_follow_it():
    mod = _module()
    f = np.zeros((2, 5), np.float32)
    f[:, mod.LENGTH] = 1.0
    w = np.zeros((2, 5), np.float32)
    w[1, mod.LENGTH] = -1.0
    np.testing.assert_allclose(mod.judge_scores(f, w, 0.5), [0.5, -0.5])
    config = mod.get_config("smoke")
    train, _ = mod.split_principles(config, 0)
    pairs = mod.make_pairs(config, 0, 0, train, 2000, 0)
    assert 0.8 < pairs["judge_agrees"].mean() < 1.0  # noisy but mostly follows the judge


def test_attributes_have_the_planned_correlations():
    mod = _module()
    a = mod.attribute_matrix(8, 3)
    np.testing.assert_allclose(a @ a.T, mod.correlation_matrix(True), atol=1e-5)
    assert (a @ a.T)[mod.TARGET, mod.LENGTH] == pytest.approx(0.0, abs=1e-5)
    b = mod.attribute_matrix(8, 3, correlated=False)
    np.testing.assert_allclose(b @ b.T, np.eye(5), atol=1e-5)


def test_pairs_come_from_the_data_seed_within_one_world():
    mod = _module()
    config = mod.get_config("smoke")
    train, _ = mod.split_principles(config, 0)
    a = mod.make_pairs(config, 0, 0, train, 50, 0)
    b = mod.make_pairs(config, 0, 1, train, 50, 0)
    assert not np.allclose(a["chosen"], b["chosen"])
