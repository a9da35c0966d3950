"""experiments/repo.py:real on synthetic logged trajectories written by the test: the readers
(a folder of .npy files, one .npz), the one-line config errors, and both world models trained
end to end with held-out reward prediction and the distractor probe."""

import json
import os

import numpy as np
import pytest

from alignax import cli, experiment
from tests.experiments import REPO

SPEC = os.path.join(REPO, "experiments", "repo.py:real")
TINY = ("--config.train.steps=4", "--config.train.steps_per_log=2",
        "--config.train.batch_episodes=4", "--config.model.hidden=8")


@pytest.fixture(scope="module")
def module():
    return experiment.load_module(os.path.join(REPO, "experiments", "repo.py"))


def write_logs(folder, n=12, t=6, seed=0, npz=False):
    """Episodes of a 1-D point (obs columns 0-1: position, velocity) with a 2-column noise
    distractor (columns 2-3); reward = -|position|."""
    rng = np.random.default_rng(seed)
    actions = rng.uniform(-1, 1, (n, t, 1)).astype(np.float32)
    pos = np.cumsum(0.1 * actions[..., 0], axis=1) + rng.uniform(-1, 1, (n, 1))
    obs = np.stack([pos, np.concatenate([np.zeros((n, 1)), np.diff(pos, axis=1)], 1),
                    *rng.normal(0, 3, (2, n, t))], -1).astype(np.float32)
    rewards = -np.abs(pos).astype(np.float32)
    os.makedirs(folder, exist_ok=True)
    if npz:
        path = os.path.join(folder, "logs.npz")
        np.savez(path, obs=obs, actions=actions, rewards=rewards)
        return path
    for name, x in (("obs", obs), ("actions", actions), ("rewards", rewards)):
        np.save(os.path.join(folder, f"{name}.npy"), x)
    return folder


def test_trajectory_readers(module, tmp_path):
    folder = write_logs(str(tmp_path / "dir"))
    npz = write_logs(str(tmp_path / "z"), npz=True)
    a, b = module.load_trajectories(folder), module.load_trajectories(npz)
    assert a["obs"].shape == (12, 6, 4) and a["actions"].shape == (12, 6, 1)
    np.testing.assert_array_equal(a["rewards"], b["rewards"])
    os.remove(os.path.join(folder, "rewards.npy"))
    with pytest.raises(ValueError, match="missing rewards.npy"):
        module.load_trajectories(folder)
    np.save(os.path.join(folder, "rewards.npy"), np.zeros((12, 5), np.float32))
    with pytest.raises(ValueError, match="disagree"):
        module.load_trajectories(folder)


def test_real_config_errors_are_one_line(tmp_path, capsys):
    assert cli.main(["run", SPEC, "--workdir", str(tmp_path / "a")]) != 0
    err = capsys.readouterr().err
    assert "data.path is required" in err and len(err.strip().splitlines()) == 1
    folder = write_logs(str(tmp_path / "logs"))
    assert cli.main(["run", SPEC, "--workdir", str(tmp_path / "b"), f"--config.data.path={folder}",
                     "--config.data.distractor_columns=(2, 9)", *TINY]) != 0
    err = capsys.readouterr().err
    assert "data.distractor_columns" in err and len(err.strip().splitlines()) == 1


@pytest.mark.slow  # two world models trained and evaluated end to end (about 10-25 s)
def test_real_trains_both_world_models(tmp_path):
    folder = write_logs(str(tmp_path / "logs"), n=16)
    argv = ["run", SPEC, "--workdir", str(tmp_path / "run"), f"--config.data.path={folder}",
            "--config.data.eval_fraction=0.125", "--config.data.distractor_columns=(2, 3)", *TINY]
    assert cli.main(argv) == 0
    with open(tmp_path / "run" / "summary.json") as f:
        summary = json.load(f)
    assert summary["claims"] == []
    for variant in ("repo", "reconstruction"):
        m = summary["results"][variant]["per_seed"]["0"]
        for key in ("test_reward_mse", "test_reward_r2", "test_probe_r2_distractor",
                    "test_probe_r2_rest", "val_reward_mse"):
            assert np.isfinite(m[key]), (variant, key)
        assert m["episodes_train"] == 12 and m["episodes_test"] == 2
    assert "final_beta" in summary["results"]["repo"]["per_seed"]["0"]
    with open(tmp_path / "run" / "repo" / "selection.json") as f:
        assert json.load(f)["chosen"] == "lr=0.001"
