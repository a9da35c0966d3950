"""Weak-to-strong deception toy: the weak model's noisy view and capacity masking."""

import importlib.util
import os

import jax
import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _module():
    path = os.path.join(REPO, "experiments", "weak_to_strong_deception.py")
    spec = importlib.util.spec_from_file_location("w2s_toy", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_data_splits_and_noisy_view():
    mod = _module()
    config = mod.get_config("smoke")
    data = mod.make_data(config, 0)
    k = config.weak.features
    for split in ("weak", "strong", "test"):
        d = data[split]
        assert d["weak_view"].shape == (len(d["x"]), k)
        noise = d["weak_view"] - d["x"][:, :k]
        assert abs(noise.std() - config.weak.noise) < 0.05
        assert 0.3 < d["y"].mean() < 0.7 and 0.4 < d["conflict"].mean() < 0.6


def test_a_student_sees_only_its_features_and_the_flag_and_learns(tmp_path):
    mod = _module()
    rng = np.random.default_rng(0)
    split = {"x": rng.standard_normal((200, 5)).astype(np.float32),
             "conflict": (rng.uniform(size=200) < 0.5).astype(np.float32)}
    y = (split["x"][:, 0] > 0).astype(np.float32)
    inputs = mod.student_inputs(split, 2)
    np.testing.assert_array_equal(inputs, np.concatenate([split["x"][:, :2],
                                                          split["conflict"][:, None]], 1))
    zeros = np.zeros(200, np.float32)
    config = mod.get_config("smoke")
    config.train.steps = 200
    config.train.learning_rate = 1e-2
    model, fit = mod.fit_classifier(
        config, str(tmp_path), {"inputs": inputs[None], "targets": y[None],
                                "conflict": zeros[None], "conflict_targets": zeros[None]},
        [0], jax.random.key(0)[None], width=3, conflict_weight=0.0)
    # a feature the student does not see does not change its prediction
    moved = {**split, "x": split["x"].copy()}
    moved["x"][:, 2] += 5.0
    p = mod.predict(model, fit.params, inputs[None])[0]
    np.testing.assert_allclose(p, mod.predict(model, fit.params,
                                              mod.student_inputs(moved, 2)[None])[0])
    assert np.mean((p > 0.5) == y) > 0.8
    assert os.path.exists(tmp_path / "metrics.jsonl")
