"""experiments/b2_diffurl.py:real on points written by the test: the reader, the one-line config
errors, and DDPO vs B^2-DiffuRL end to end on a user's points and targets."""

import json
import os

import numpy as np
import pytest

from alignax import cli, experiment
from tests.experiments import REPO

SPEC = os.path.join(REPO, "experiments", "b2_diffurl.py:real")
TINY = ("--config.pretrain.steps=4", "--config.pretrain.steps_per_log=2",
        "--config.pretrain.batch_size=8", "--config.rl.updates=2", "--config.rl.steps_per_log=1",
        "--config.rl.trunks=2", "--config.rl.branches=2", "--config.rl.lr_grid=(0.001,)",
        "--config.eval.num_samples=8", "--config.model.hidden=8", "--config.model.n_blocks=1",
        "--config.model.time_dim=8", "--config.diffusion.num_steps=4")
TARGETS = "--config.reward.targets=((10.0, 0.0), (-10.0, 0.0))"


@pytest.fixture(scope="module")
def module():
    return experiment.load_module(os.path.join(REPO, "experiments", "b2_diffurl.py"))


def write_points(folder, n=40, seed=0):
    """Two clusters at (+-10, 0) (std 1): points in the user's units, far from unit scale."""
    rng = np.random.default_rng(seed)
    centres = np.array([[10.0, 0.0], [-10.0, 0.0]])
    x = centres[rng.integers(0, 2, n)] + rng.normal(0, 1, (n, 2))
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, "points.npy")
    np.save(path, x.astype(np.float32))
    return path


def test_points_reader(module, tmp_path):
    path = write_points(str(tmp_path / "d"))
    a, b = module.load_points(path), module.load_points(str(tmp_path / "d"))
    assert a.shape == (40, 2) and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    np.save(str(tmp_path / "bad.npy"), np.zeros((4,), np.float32))
    with pytest.raises(ValueError, match=r"\[N >= 3, D\]"):
        module.load_points(str(tmp_path / "bad.npy"))
    with pytest.raises(ValueError, match="not a .npy"):
        module.load_points(str(tmp_path / "missing.npy"))


def test_real_config_errors_are_one_line(tmp_path, capsys):
    assert cli.main(["run", SPEC, "--workdir", str(tmp_path / "a")]) != 0
    err = capsys.readouterr().err
    assert "data.path is required" in err and len(err.strip().splitlines()) == 1
    path = write_points(str(tmp_path / "d"))
    assert cli.main(["run", SPEC, "--workdir", str(tmp_path / "b"),
                     f"--config.data.path={path}", *TINY]) != 0
    err = capsys.readouterr().err
    assert "reward.targets is required" in err and len(err.strip().splitlines()) == 1
    assert cli.main(["run", SPEC, "--workdir", str(tmp_path / "c"), f"--config.data.path={path}",
                     "--config.reward.targets=((1.0, 2.0, 3.0),)", *TINY]) != 0
    err = capsys.readouterr().err
    assert "reward.targets must be points of dimension 2" in err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.slow  # pretraining and both RL variants end to end (about 10-20 s)
def test_real_runs_ddpo_and_b2_on_user_points(tmp_path):
    path = write_points(str(tmp_path / "d"))
    argv = ["run", SPEC, "--workdir", str(tmp_path / "run"), f"--config.data.path={path}",
            TARGETS, "--config.reward.radius=3.0", *TINY]
    assert cli.main(argv) == 0
    with open(tmp_path / "run" / "summary.json") as f:
        summary = json.load(f)
    assert summary["claims"] == []
    for variant in ("b2", "ddpo"):
        m = summary["results"][variant]["per_seed"]["0"]
        for key in ("test_reward", "test_minority_share", "val_reward", "initial_test_reward"):
            assert 0.0 <= m[key] <= 1.0, (variant, key, m[key])
        assert m["train_points"] == 32 and m["budget_samples"] == 2 * 4
        assert m["test_samples_to_target"] <= m["budget_samples"]
    assert (summary["results"]["b2"]["per_seed"]["0"]["nfe_per_sample"]
            < summary["results"]["ddpo"]["per_seed"]["0"]["nfe_per_sample"])
