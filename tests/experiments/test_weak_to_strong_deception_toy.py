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


def test_masked_units_and_features_are_inert():
    mod = _module()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((200, 5)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.float32)
    fm = np.array([1, 1, 0, 0, 1], np.float32)
    um = (np.arange(8) < 3).astype(np.float32)
    zeros = np.zeros(200, np.float32)
    key = jax.random.key(0)
    p = mod.fit_classifier(key, x, fm, um, y, zeros, zeros, 0.0, steps=200, lr=1e-2)
    p0 = mod.init_mlp(key, 5, 8)
    # switched-off hidden units and hidden features get no gradient: they keep their init
    np.testing.assert_allclose(p["w1"][:, 3:], p0["w1"][:, 3:], atol=1e-6)
    np.testing.assert_allclose(p["w1"][2:4], p0["w1"][2:4], atol=1e-6)
    # and changing a masked feature does not change the prediction
    x2 = x.copy()
    x2[:, 2] += 5.0
    np.testing.assert_allclose(mod.predict(p, x, fm, um), mod.predict(p, x2, fm, um))
    assert np.mean((np.asarray(mod.predict(p, x, fm, um)) > 0.5) == y) > 0.8
