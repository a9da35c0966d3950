"""CRM toy: planted label noise and the peer-review training loop."""

import importlib.util
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

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


def test_config_variants_and_bad_arg():
    mod = _module()
    config = mod.get_config(None)
    assert len(config.seeds) >= 3
    assert set(config.variants) == {f"{m}_{n}" for m in mod.METHODS for n in ("20", "40")}
    with pytest.raises(ValueError, match="unknown argument"):
        mod.get_config("big")


def test_ensemble_score_per_method():
    mod = _module()
    r = jnp.array([[1.0, 2.0], [3.0, -2.0]])
    score = lambda p, x: r  # noqa: E731
    np.testing.assert_allclose(mod.ensemble_score(score, None, None, mod.METHODS.index("crm")),
                               [2.0, 0.0])
    np.testing.assert_allclose(mod.ensemble_score(score, None, None, mod.METHODS.index("bt")),
                               [1.0, 2.0])


def test_peer_review_keeps_cleaner_pairs_and_learns():
    mod = _module()
    config = mod.get_config("smoke")
    config.flip_rate = 0.4
    config.data.num_pairs = 2000
    data = mod.make_data(config, 3)
    params, curve = mod.train(
        jax.random.key(0), data["chosen"], data["rejected"], data["test_a"], data["test_b"],
        data["test_a_better"], 0.4, mod.METHODS.index("crm"), warmup_steps=50, hidden=(32, 32),
        steps=200, batch_size=128, lr=3e-3, eval_every=100)
    assert curve.shape == (2,)
    assert float(curve[-1]) > 0.6  # well above chance despite 40% flipped labels
    score = mod._score_both
    margins = np.asarray(score(params, data["chosen"]) - score(params, data["rejected"]))
    from alignax.losses.reward import peer_review_masks

    mask_a, mask_b = (np.asarray(m, bool) for m in peer_review_masks(
        jnp.asarray(margins[0]), jnp.asarray(margins[1]), drop_rate=0.4))
    for kept in (mask_a, mask_b):
        assert abs(kept.mean() - 0.6) < 1e-3
        assert data["flipped"][kept].mean() < 0.3  # far below the 40% base rate
