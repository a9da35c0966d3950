"""experiments/vision_r1.py:real: GRPO with the Vision-R1 reward on a tiny random checkpoint and
a prompt-only dataset with a `boxes` column, for 2 iterations through `alignax run`."""

import json
import os

import numpy as np
import pytest

from alignax import cli
from tests.experiments import REPO, run_real, write_real_world

datasets = pytest.importorskip("datasets")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("real_vision_r1")
    out = write_real_world(root)
    rng = np.random.default_rng(0)
    rows = []
    for i in range(16):
        starts = np.sort(rng.choice(np.arange(0, 90, 10), size=1 + i % 3, replace=False))
        boxes = [[float(s), float(s + rng.integers(2, 9))] for s in starts]
        rows.append({"prompt": [{"role": "user", "content": f"w{i} w{i % 5} w{i % 7}"}],
                     "boxes": boxes})
    rows[3]["boxes"] = []  # a negative image
    datasets.Dataset.from_list(rows).save_to_disk(str(root / "boxes"))
    out["boxes"] = str(root / "boxes")
    return out


@pytest.mark.slow  # an end-to-end :real run (system tier)
def test_vision_r1_real(world, tmp_path):
    online = [f"--config.grpo.{k}" for k in (
        "iterations=2", "prompts_per_iteration=2", "num_samples=2", "max_new_tokens=4",
        "kl_coef=0.04", "progress=False", "eval_every=1")]
    summary = run_real("vision_r1", world, tmp_path, "boxes", "--config.data.max_length=12",
                       "--config.reward.upper=100", *online)
    assert summary["claims"] == []
    m = {k: v["mean"] for k, v in summary["results"]["default"]["metrics"].items()}
    for split in ("val", "test"):
        for who in ("ref", "grpo"):
            for key in ("ap50", "ap75", "format"):
                assert 0 <= m[f"{split}_{who}_{key}"] <= 1, (split, who, key)
            assert m[f"{split}_{who}_count_ratio"] >= 0
    assert m["grpo_chosen_iteration"] in (1, 2)
    assert 0 <= m["train_reward_first"] <= 3
    with open(os.path.join(tmp_path, "vision_r1", "default", "seed_0", "selection.json")) as f:
        assert json.load(f)["metric"] == "eval/val_ap75"


def test_vision_r1_real_config_errors(world, tmp_path, capsys):
    spec = os.path.join(REPO, "experiments", "vision_r1.py:real")
    base = ["run", spec, f"--config.model.path={world['lm']}",
            f"--config.data.path={world['boxes']}"]
    assert cli.main(base + ["--workdir", str(tmp_path / "a"), "--config.reward.dim=3"]) != 0
    err = capsys.readouterr().err
    assert "reward.dim=3" in err and len(err.strip().splitlines()) == 1
    assert cli.main(base + ["--workdir", str(tmp_path / "b"),
                            "--config.reward.method=recall"]) != 0
    assert "reward.method='recall'" in capsys.readouterr().err
