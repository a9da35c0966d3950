"""experiments/armorm.py:real on the tiny world: a random Qwen2-style checkpoint, the 16
conversational pairs of `write_real_world` and 24 string rating rows (three attributes, one of
them the verbosity, one row without a rating of one attribute), through `alignax run`."""

import json
import os

import numpy as np
import pytest

from alignax import cli
from tests.experiments import REPO, run_real, write_real_world

datasets = pytest.importorskip("datasets")

ATTRIBUTES = ("helpfulness", "correctness", "verbosity")
L2S = (0.1, 10.0)
MISSING_ROW = 5  # its `correctness` is absent (Arrow stores a null there)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("real")
    out = write_real_world(root)
    rng = np.random.default_rng(1)
    rows = []
    for i in range(24):
        n = int(rng.integers(1, 7))  # response words: the verbosity is about the length
        ratings = {"helpfulness": float(rng.integers(0, 5)),
                   "correctness": float(rng.integers(0, 5)),
                   "verbosity": float(min(4, n - 1))}
        if i == MISSING_ROW:
            del ratings["correctness"]
        rows.append({"prompt": " ".join(f"w{j}" for j in rng.integers(0, 26, 3)),
                     "response": " ".join(f"w{j}" for j in rng.integers(0, 26, n)),
                     "ratings": ratings})
    datasets.Dataset.from_list(rows).save_to_disk(str(root / "ratings"))
    out["ratings"] = str(root / "ratings")
    return out


def _flags(world, *extra):
    return [f"--config.data.pairs_path={world['pairs']}", "--config.data.max_length=24",
            f"--config.armorm.ridge_l2s=({L2S[0]},{L2S[1]})", "--config.armorm.gate_hidden=(8,)",
            "--config.train.steps=4", "--config.train.steps_per_log=2",
            "--config.train.learning_rates=(0.01,)", *extra]


@pytest.mark.slow  # an end-to-end :real run (system tier)
def test_armorm_real_reports_both_stages_on_test(world, tmp_path):
    summary = run_real("armorm", world, tmp_path, "ratings", *_flags(world))
    assert summary["claims"] == [] and summary["plots"] == []
    m = {k: v["mean"] for k, v in summary["results"]["default"]["metrics"].items()}
    assert m["decorrelated"] == 1.0
    # the row without a correctness rating is a training row (24 rows: 18 / 3 / 3)
    assert m["num_rated_train_correctness"] == 17 and m["num_rated_train_helpfulness"] == 18
    for name in ATTRIBUTES:
        assert m[f"chosen_l2_{name}"] in L2S
        assert m[f"test_rmse_{name}"] >= 0 and np.isfinite(m[f"val_mse_{name}"])
        corr = m[f"test_corr_{name}"]
        assert np.isnan(corr) or -1 <= corr <= 1
        assert 0 <= m[f"test_gate_weight_{name}"] <= 1
    assert sum(m[f"test_gate_weight_{n}"] for n in ATTRIBUTES) == pytest.approx(1, abs=1e-5)
    assert m["decorrelation_lambda_verbosity"] == pytest.approx(1.0, abs=1e-4)
    for name in ATTRIBUTES[:2]:
        assert -1 <= m[f"test_corr_verbosity_before_{name}"] <= 1
        # lambda is fitted on the training pairs' responses; measured here on the test ones
        assert -1 <= m[f"test_corr_verbosity_after_{name}"] <= 1
        assert 0 <= m[f"test_accuracy_head_{name}"] <= 1
    for key in ("test_accuracy_armorm", "test_accuracy_mean_objectives",
                "test_accuracy_best_single", "test_accuracy_verbosity_head",
                "val_label_accuracy"):
        assert 0 <= m[key] <= 1, key
    assert m["best_single_index"] in (0.0, 1.0)  # the decorrelated verbosity is no candidate
    assert m["test_accuracy_best_single"] == m[
        f"test_accuracy_head_{ATTRIBUTES[int(m['best_single_index'])]}"]
    assert m["chosen_learning_rate"] == 0.01 and m["chosen_steps"] in (2.0, 4.0)
    assert m["beta"] > 0 and np.isfinite(m["final_train_loss"])
    assert m["num_pairs_train"] == 12 and m["num_pairs_test"] == 2
    with open(os.path.join(tmp_path, "armorm", "default", "selection.json")) as f:
        selection = json.load(f)
    assert selection["attributes"] == list(ATTRIBUTES)
    for name in ATTRIBUTES:  # the l2 of lowest validation MSE
        scores = selection[f"ridge_l2_{name}"]["scores"]
        assert float(min(scores, key=scores.get)[len("l2="):]) == m[f"chosen_l2_{name}"]
        assert min(scores.values()) == pytest.approx(m[f"val_mse_{name}"])


@pytest.mark.slow  # an end-to-end :real run (system tier)
def test_armorm_real_errors_and_a_run_without_verbosity(world, tmp_path, capsys):
    spec = os.path.join(REPO, "experiments", "armorm.py:real")
    base = ["run", spec, f"--config.model.path={world['lm']}",
            f"--config.data.path={world['ratings']}"]
    assert cli.main([*base, "--workdir", str(tmp_path / "a")]) != 0
    err = capsys.readouterr().err
    assert "data.pairs_path is required by the :real config" in err
    assert len(err.strip().splitlines()) == 1
    with pytest.raises(ValueError, match="armorm.verbosity_attribute='length' is not an "
                                         "attribute of data.path"):
        cli.main([*base, "--workdir", str(tmp_path / "b"), *_flags(world),
                  "--config.armorm.verbosity_attribute=length"])
    assert cli.main([*base, "--workdir", str(tmp_path / "c"), *_flags(world),
                     "--config.armorm.ridge_l2s=(0.0,)"]) != 0
    assert "armorm.ridge_l2s=[0.0] must be" in capsys.readouterr().err
    # no verbosity attribute: no decorrelation, every head a candidate, and the metrics say so
    summary = run_real("armorm", world, tmp_path, "ratings", *_flags(world),
                       "--config.armorm.verbosity_attribute=")
    m = {k: v["mean"] for k, v in summary["results"]["default"]["metrics"].items()}
    assert m["decorrelated"] == 0.0 and summary["claims"] == []
    assert not any(k.startswith(("decorrelation_lambda_", "test_corr_verbosity_"))
                   for k in m)
    assert "test_accuracy_verbosity_head" not in m
    assert {f"test_accuracy_head_{n}" for n in ATTRIBUTES} <= set(m)
    assert 0 <= m["test_accuracy_armorm"] <= 1 and m["best_single_index"] in (0.0, 1.0, 2.0)
