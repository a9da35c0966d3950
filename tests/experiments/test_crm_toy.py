"""CRM toy: planted label noise and the peer-review training loop."""

import importlib.util
import os

import jax.numpy as jnp
import numpy as np
import pytest

from alignax.train.writers import read_metrics

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _module():
    path = os.path.join(REPO, "experiments", "crm.py")
    spec = importlib.util.spec_from_file_location("crm_toy", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_planted_flips():
    mod = _module()
    config = mod.get_config("smoke")
    config.data.num_pairs = 4000
    config.flip_rate = 0.4
    data = mod.make_data(config, 0)
    assert abs(data["flipped"].mean() - 0.4) < 0.03
    # BT labels at a low temperature: a clean label is rarely gold-wrong, a flipped one usually is
    assert data["label_gold_wrong"][~data["flipped"]].mean() < 0.15
    assert data["label_gold_wrong"][data["flipped"]].mean() > 0.85
    assert data["test_a"].shape == (config.data.num_test_pairs, config.task.dim)
    # validation pairs carry the same label noise; the splits come from disjoint data seeds
    assert data["val_chosen"].shape == (config.data.num_val_pairs, config.task.dim)
    assert abs(data["val_flipped"].mean() - 0.4) < 0.1
    assert not np.allclose(data["val_chosen"], data["chosen"][:config.data.num_val_pairs])
    k = min(config.data.num_val_pairs, config.data.num_test_pairs)
    assert not np.allclose(data["test_a"][:k], data["val_chosen"][:k])
    other = mod.make_data(config, 1)  # another experiment seed: other world, other samples
    assert not np.allclose(other["chosen"], data["chosen"])


def test_config_variants_and_bad_arg():
    mod = _module()
    config = mod.get_config(None)
    assert len(config.seeds) >= 5
    assert set(config.variants) == {f"{m}_{n}" for m in mod.METHODS for n in ("20", "40")}
    with pytest.raises(ValueError, match="unknown argument"):
        mod.get_config("big")


def test_ensemble_score_per_method():
    mod = _module()
    assert (mod.num_models("crm"), mod.num_models("bt"), mod.num_models("small_loss")) == (2, 1, 1)
    r = jnp.array([[1.0, 2.0], [3.0, -2.0]])  # CRM: two models' rewards [M, N]
    np.testing.assert_allclose(mod.ensemble_score(lambda p, x: r, None, None), [2.0, 0.0])
    # bt: the one model's reward
    np.testing.assert_allclose(mod.ensemble_score(lambda p, x: r[:1], None, None), [1.0, 2.0])


def test_peer_review_keeps_cleaner_pairs_and_learns(tmp_path):
    mod = _module()
    config = mod.get_config("smoke")
    config.flip_rate = 0.4
    config.data.num_pairs = 2000
    config.seeds = [3]
    config.model.hidden = (32, 32)
    config.train.update(steps=200, batch_size=128, learning_rate=3e-3, eval_every=100)
    config.crm.warmup_fraction = 0.25  # 50 warmup steps
    d = mod.make_data(config, 3)
    data = {k: jnp.asarray(v[None]) for k, v in d.items()}
    fit, curve = mod.train(config, str(tmp_path), data)
    assert curve.shape == (1, 2)
    # early stopping on validation: the selected step is a logged one, its score the best
    assert int(fit.best_step[0]) in (100, 200)
    assert float(fit.best_score[0]) == pytest.approx(float(curve[0].max()))
    # well above chance on clean test pairs despite 40% flipped labels
    assert float(mod.gold_accuracy(config, fit.best_params, data)[0]) > 0.6
    margins = mod.pair_margins(config, fit.params, data["chosen"], data["rejected"])
    assert margins.shape == (1, 2, 2000)
    masks = np.asarray(mod.training_masks(jnp.asarray(margins[0]), 0.4, "crm"), bool)
    for kept in masks:
        assert abs(kept.mean() - 0.6) < 1e-3
        assert d["flipped"][kept].mean() < 0.3  # far below the 40% base rate
    # the run folder holds the seed's metrics (with the curriculum's drop rate) and checkpoints
    rows = read_metrics(str(tmp_path / "metrics.jsonl"))
    assert [r["updates"] for r in rows] == [100.0, 200.0]
    assert rows[-1]["seed_3/drop_rate"] == pytest.approx(0.4)
    assert os.path.isdir(tmp_path / "checkpoints")
