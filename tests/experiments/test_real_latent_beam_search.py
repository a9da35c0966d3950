"""`experiments/latent_beam_search.py:real`: the search on a user's .npy samples with a named
gold reward; a missing or bad data file fails in one line; a denoiser folder of an earlier run
is reused through `model.path` (and a foreign folder is refused)."""

import glob
import json
import os

import numpy as np
import pytest

from alignax import cli, experiment
from tests.experiments import REPO

PATH = os.path.join(REPO, "experiments", "latent_beam_search.py")
TINY = ["--config.pretrain.steps=3", "--config.pretrain.batch_size=16",
        "--config.denoiser.hidden=16", "--config.denoiser.n_blocks=1",
        "--config.denoiser.time_dim=8", "--config.search.num_steps=3",
        "--config.search.budget=24", "--config.search.dlbs_beams=(2,)",
        "--config.search.la_beams=(1,)", "--config.search.lookaheads=(2,)",
        "--config.search.val_runs=2", "--config.search.test_runs=2",
        "--config.fidelity.num_samples=4", "--config.fidelity.continuations=2",
        "--config.fidelity.lookaheads=(1, 2)"]


def _config(**data):
    module = experiment.load_module(PATH)
    config = experiment.load_config(module, "real", PATH)
    with config.unlocked():
        for k, v in data.items():
            config.data[k] = v
    return module, config


def test_real_needs_a_npy_file(tmp_path):
    module, config = _config()
    with pytest.raises(ValueError, match="data.path is required"):
        module.run_seeds(config, str(tmp_path / "run"))
    bad = tmp_path / "x.npy"
    np.save(bad, np.zeros((5,), np.float32))
    module, config = _config(path=str(bad))
    with pytest.raises(ValueError, match=r"shape \[N >= 2, \.\.\.\]"):
        module.run_seeds(config, str(tmp_path / "run"))


def _run(workdir, data, *extra):
    argv = ["run", f"{PATH}:real", "--workdir", str(workdir), f"--config.data.path={data}",
            f"--config.cache_dir={workdir.parent / 'cache'}", *TINY, *extra]
    assert cli.main(argv) == 0
    with open(workdir / "summary.json") as f:
        return json.load(f)


@pytest.mark.slow
def test_real_runs_on_user_points_and_reuses_its_denoiser(tmp_path):
    rng = np.random.default_rng(0)
    angles = rng.uniform(0, 2 * np.pi, 64)
    points = np.stack([np.cos(angles), np.sin(angles)], -1) * 2 + 0.1 * rng.normal(size=(64, 2))
    data = tmp_path / "points.npy"
    np.save(data, points.astype(np.float32))

    summary = _run(tmp_path / "a", data)
    assert summary["claims"] == []
    m = {k: v["mean"] for k, v in summary["results"]["default"]["metrics"].items()}
    assert m["test_nfe"] <= 24 and 0 <= m["test_reward"] <= 1, m
    assert {"test_rho_L1", "test_rho_L2", "chosen_lookahead"} <= set(m)
    with open(tmp_path / "a" / "default" / "selection.json") as f:
        selection = json.load(f)
    assert selection["choices"]["0"]["chosen"] in selection["configurations"]
    assert len(selection["target"]) == 2  # the sample farthest from the mean

    folders = glob.glob(str(tmp_path / "cache" / "lbs_denoiser-*"))
    assert len(folders) == 1
    again = _run(tmp_path / "b", data, f"--config.model.path={folders[0]}")
    assert again["results"] == summary["results"]
    with pytest.raises(ValueError, match="not the denoiser folder"):
        module, config = _config(path=str(data))
        with config.unlocked():
            config.model.path = str(tmp_path / "cache")
        module.run_seeds(config, str(tmp_path / "c"))
