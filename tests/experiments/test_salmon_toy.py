"""SALMON toy: principle sets, their encoding, the judge and the KL-optimal policy."""

import importlib.util
import os

import jax.numpy as jnp
import numpy as np

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
    pairs = mod.make_pairs(config, 0, train, 2000, 0)
    assert 0.8 < pairs["judge_agrees"].mean() < 1.0  # noisy but mostly follows the judge


def test_kl_optimal_policy_golden():
    mod = _module()
    r = jnp.array([[0.0, 1.0, 2.0]])
    ref = jnp.log(jnp.array([[0.5, 0.25, 0.25]]))
    pi = np.asarray(mod.kl_optimal_policy(r, ref, 0.5))
    expected = np.array([0.5, 0.25 * np.e ** 2, 0.25 * np.e ** 4])
    np.testing.assert_allclose(pi[0], expected / expected.sum(), rtol=1e-5)
