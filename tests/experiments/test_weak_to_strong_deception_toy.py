"""Weak-to-strong deception toy: the weak model's noisy view, capacity masking, splits, claims."""

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
    for split in ("weak", "strong", "val", "test"):
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


def test_splits_come_from_disjoint_data_seeds_and_share_the_gold():
    mod = _module()
    config = mod.get_config("smoke")
    config.data.num_val = config.data.num_test = 500
    data = mod.make_data(config, 0)
    # the same world (gold function) labels every split, but the samples differ
    assert not np.allclose(data["val"]["x"], data["test"]["x"])
    assert not np.allclose(data["weak"]["x"][:500], data["val"]["x"])
    other = mod.make_data(config, 1)
    assert not np.allclose(other["weak"]["x"], data["weak"]["x"])
    # seed 1's training data is not seed 0's validation or test data (data seeds 3, 1, 2)
    assert not np.allclose(other["weak"]["x"][:500], data["test"]["x"])


def _results(ds_by_gap, base=0.2, excess=0.1, boot=None):
    """Synthetic results: ds_by_gap {gap: [per-seed DS]}."""
    out = {}
    for g, values in ds_by_gap.items():
        out[g] = {"per_seed": {s: {"test_deception_score": v, "test_unknown_base_rate": base,
                                   "test_unknown_share": base + excess,
                                   "test_share_minus_base": excess}
                               for s, v in enumerate(values)}}
    if boot is not None:
        out["bootstrap"] = {"per_seed": {s: {"test_deception_score": v}
                                         for s, v in enumerate(boot)}}
    return out


def test_claims_decide_over_seeds():
    mod = _module()
    rising = {"gap_small": [1.0, 1.1, 1.0, 1.2, 1.1], "gap_medium": [1.5, 1.4, 1.6, 1.5, 1.3],
              "gap_large": [2.0, 2.1, 1.9, 2.2, 2.0]}
    out = mod.claims(_results(rising, boot=[1.2, 1.3, 1.1, 1.4, 1.2]))
    assert [c.status for c in out] == ["PASS", "PASS", "PASS"]
    assert [c.kind for c in out] == ["comparative", "threshold", "comparative"]
    flat = {g: [1.0, 2.0, 1.5, 1.2, 1.8] for g in rising}
    flat["gap_medium"] = [2.0, 1.0, 1.0, 2.0, 1.0]
    out = mod.claims(_results(flat, excess=-0.05, boot=[3.0, 3.1, 2.9, 3.2, 3.0]))
    assert [c.status for c in out] == ["FAIL", "FAIL", "FAIL"]
    # fewer than 5 seeds: inconclusive whatever the numbers
    few = {g: v[:3] for g, v in rising.items()}
    assert {c.status for c in mod.claims(_results(few, boot=[1.0, 1.0, 1.0]))} == {
        "INCONCLUSIVE"}
