"""experiments/clitssa.py:real on the tiny world: a random Qwen2-style checkpoint as the frozen
encoder and 16 cross-lingual (query, candidate, similarity) rows, through `alignax run`."""

import json
import os

import numpy as np
import pytest

from alignax import cli
from tests.experiments import REPO, run_real, write_real_world

datasets = pytest.importorskip("datasets")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("real")
    out = write_real_world(root)
    rng = np.random.default_rng(2)
    rows = []
    for i in range(16):
        words = [f"w{j}" for j in rng.integers(0, 26, 3)]
        # the last four rows (validation and test) pair a query with two candidates each
        rows.append({"query": "q " + " ".join(words),
                     "candidate": " ".join(words[::-1]) if i % 2 else f"w{i} w{i + 1}",
                     "similarity": 0.9 if i % 2 else float(rng.uniform(-0.2, 0.3))})
    for i in (13, 15):
        rows[i]["query"] = rows[i - 1]["query"]
    datasets.Dataset.from_list(rows).save_to_disk(str(root / "xpairs"))
    out["xpairs"] = str(root / "xpairs")
    return out


FLAGS = ("--config.data.max_length=16", "--config.train.steps=4",
         "--config.train.steps_per_log=2", "--config.train.batch_size=4",
         "--config.train.learning_rates=(0.01,)", "--config.retrieval.k=2")


@pytest.mark.slow  # an end-to-end :real run (system tier)
def test_clitssa_real_before_and_after(world, tmp_path):
    summary = run_real("clitssa", world, tmp_path, "xpairs", *FLAGS)
    assert summary["claims"] == []
    m = {k: v["mean"] for k, v in summary["results"]["default"]["metrics"].items()}
    assert (m["num_train"], m["num_val"], m["num_test"]) == (12, 2, 2)
    assert m["chosen_step"] in (2.0, 4.0) and m["chosen_learning_rate"] == 0.01
    # validation / test: one query paired with a 0.9 candidate and a low one: one retrieval query
    assert m["num_test_retrieval_queries"] == 1 and m["num_val_retrieval_queries"] == 1
    for split in ("val", "test"):
        for stage in ("before", "after"):
            assert m[f"{split}_{stage}_mse"] >= 0
            for key in ("precision_at_k", "recall_at_k", "mrr"):
                assert 0 <= m[f"{split}_{stage}_{key}"] <= 1, (split, stage, key)
            # one relevant candidate among two, k = 2: precision 1/2 and recall 1 whatever the
            # ranking
            assert m[f"{split}_{stage}_precision_at_k"] == 0.5
            assert m[f"{split}_{stage}_recall_at_k"] == 1.0
    with open(os.path.join(tmp_path, "clitssa", "default", "selection.json")) as f:
        selection = json.load(f)
    assert list(selection["candidates"]) == ["lr=0.01"]
    # the reported head is the chosen one: its validation MSE is the selected (lowest) score
    assert selection["chosen_step"] == [m["chosen_step"]]
    assert m["val_after_mse"] == pytest.approx(selection["candidates"]["lr=0.01"]["val_score"][0],
                                               rel=1e-4)


def test_clitssa_real_config_errors(world, tmp_path, capsys):
    spec = os.path.join(REPO, "experiments", "clitssa.py:real")
    base = ["run", spec, "--workdir", str(tmp_path / "a")]
    assert cli.main([*base, f"--config.model.path={world['lm']}"]) != 0
    assert "data.path is required by the :real config" in capsys.readouterr().err
    assert cli.main([*base, f"--config.model.path={world['lm']}",
                     f"--config.data.path={world['xpairs']}",
                     "--config.retrieval.relevance_threshold=0.0"]) != 0
    assert "retrieval.relevance_threshold=0.0 must be in (0, 1]" in capsys.readouterr().err
