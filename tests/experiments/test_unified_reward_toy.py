"""UnifiedReward toy: related gold rewards, few labels, and tabular DPO over candidates."""

import importlib.util
import os

import jax.numpy as jnp
import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _module():
    path = os.path.join(REPO, "experiments", "unified_reward.py")
    spec = importlib.util.spec_from_file_location("unified_reward_toy", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_tasks_share_features():
    mod = _module()
    config = mod.get_config("smoke")
    golds = mod.gold_rewards(config, 0)
    z = np.random.default_rng(0).standard_normal((4000, config.task.dim))
    rho = np.corrcoef(golds[0](z), golds[1](z))[0, 1]
    assert 0.6 < rho < 0.95  # related (shared = 0.8) but not identical


def test_data_shapes_and_labels():
    mod = _module()
    config = mod.get_config("smoke")
    data = mod.make_data(config, 1)
    for task, gold in zip(data["tasks"], data["golds"]):
        assert task["chosen"].shape == (config.data.num_pairs, config.task.dim)
        assert task["scores"].shape == (config.data.num_points,)
        agree = np.mean(gold(task["chosen"]) > gold(task["rejected"]))
        assert 0.7 < agree < 1.0  # BT labels: mostly, not always, the gold ordering
        # validation pairs: the same BT labels, drawn from another data seed than training
        assert task["val_chosen"].shape == (config.data.num_val_pairs, config.task.dim)
        assert not np.allclose(task["val_chosen"], task["chosen"][:config.data.num_val_pairs])
        assert 0.6 < np.mean(gold(task["val_chosen"]) > gold(task["val_rejected"])) < 1.0


def test_tabular_dpo_moves_mass_to_chosen(tmp_path):
    mod = _module()
    chosen = jnp.array([[0, 3]])  # one seed, two prompts
    rejected = jnp.array([[1, 2]])
    pi = mod.dpo_tabular(str(tmp_path), chosen, rejected, 4, [0], steps=50, lr=0.1, beta=0.1)
    assert pi.shape == (1, 2, 4)
    pi = pi[0]
    np.testing.assert_allclose(pi.sum(-1), 1.0, rtol=1e-5)
    assert pi[0, 0] > 0.25 > pi[0, 1] and pi[1, 3] > 0.25 > pi[1, 2]
    # the untouched candidates keep equal probability
    np.testing.assert_allclose(pi[0, 2], pi[0, 3], rtol=1e-5)
