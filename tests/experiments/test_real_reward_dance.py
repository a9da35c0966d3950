"""experiments/reward_dance.py:real on points and pairwise-vs-reference judgements written by the
test: the readers, the one-line config errors, and judges of every width + DDPO end to end."""

import json
import os

import numpy as np
import pytest

from alignax import cli, experiment
from tests.experiments import REPO

SPEC = os.path.join(REPO, "experiments", "reward_dance.py:real")
TINY = ("--config.pretrain.steps=4", "--config.pretrain.steps_per_log=2",
        "--config.pretrain.batch_size=8", "--config.rl.updates=2", "--config.rl.steps_per_log=1",
        "--config.rl.batch_size=4", "--config.rl.num_refs=2", "--config.rl.lr_grid=(0.001,)",
        "--config.eval.num_samples=8", "--config.model.hidden=8", "--config.model.n_blocks=1",
        "--config.model.time_dim=8", "--config.diffusion.num_steps=3",
        "--config.judge.widths=(2, 4)", "--config.judge.steps=4",
        "--config.judge.steps_per_log=2", "--config.judge.batch_size=8")


@pytest.fixture(scope="module")
def module():
    return experiment.load_module(os.path.join(REPO, "experiments", "reward_dance.py"))


def write_data(folder, n=40, pairs=60, seed=0):
    """Points around (+-10, 0) and judgements 'x_gen beats x_ref when it lies further right'."""
    rng = np.random.default_rng(seed)
    centres = np.array([[10.0, 0.0], [-10.0, 0.0]])
    x = centres[rng.integers(0, 2, n)] + rng.normal(0, 1, (n, 2))
    gen = centres[rng.integers(0, 2, pairs)] + rng.normal(0, 1, (pairs, 2))
    ref = centres[rng.integers(0, 2, pairs)] + rng.normal(0, 1, (pairs, 2))
    os.makedirs(folder, exist_ok=True)
    points, judged = os.path.join(folder, "points.npy"), os.path.join(folder, "pairs.npz")
    np.save(points, x.astype(np.float32))
    np.savez(judged, x_gen=gen.astype(np.float32), x_ref=ref.astype(np.float32),
             label=(gen[:, 0] > ref[:, 0]).astype(np.int32))
    return points, judged


def test_readers(module, tmp_path):
    points, judged = write_data(str(tmp_path / "d"))
    assert module.load_points(points).shape == (40, 2)
    pairs = module.load_pairs(judged, 2)
    assert pairs["x_gen"].shape == (60, 2) and set(np.unique(pairs["label"])) <= {0.0, 1.0}
    with pytest.raises(ValueError, match=r"\[P, 3\]"):
        module.load_pairs(judged, 3)
    bad = str(tmp_path / "bad.npz")
    np.savez(bad, x_gen=np.zeros((3, 2)), x_ref=np.zeros((3, 2)), label=np.array([0, 2, 1]))
    with pytest.raises(ValueError, match="0 / 1"):
        module.load_pairs(bad, 2)
    np.savez(bad, x_gen=np.zeros((3, 2)), label=np.array([0, 1, 1]))
    with pytest.raises(ValueError, match="missing arrays"):
        module.load_pairs(bad, 2)


def test_real_config_errors_are_one_line(tmp_path, capsys):
    assert cli.main(["run", SPEC, "--workdir", str(tmp_path / "a")]) != 0
    err = capsys.readouterr().err
    assert "data.path is required" in err and len(err.strip().splitlines()) == 1
    points, _ = write_data(str(tmp_path / "d"))
    assert cli.main(["run", SPEC, "--workdir", str(tmp_path / "b"),
                     f"--config.data.path={points}", *TINY]) != 0
    err = capsys.readouterr().err
    assert "data.pairs_path is required" in err and len(err.strip().splitlines()) == 1
    assert cli.main(["run", SPEC, "--workdir", str(tmp_path / "c"), f"--config.data.path={points}",
                     f"--config.data.pairs_path={points}", *TINY]) != 0
    err = capsys.readouterr().err
    assert "is not a .npz" in err and len(err.strip().splitlines()) == 1


@pytest.mark.slow  # pretraining, two judges and DDPO end to end (about 15-25 s)
def test_real_trains_judges_and_runs_ddpo_on_user_data(tmp_path):
    points, judged = write_data(str(tmp_path / "d"))
    argv = ["run", SPEC, "--workdir", str(tmp_path / "run"), f"--config.data.path={points}",
            f"--config.data.pairs_path={judged}", *TINY]
    assert cli.main(argv) == 0
    with open(tmp_path / "run" / "summary.json") as f:
        summary = json.load(f)
    assert summary["claims"] == []
    m = summary["results"]["toy"]["per_seed"]["0"]
    assert m["train_points"] == 32 and m["train_pairs"] == 48
    for w in (2, 4):
        for key in (f"test_proxy_w{w}", f"val_proxy_w{w}", f"judge_test_accuracy_w{w}"):
            assert 0.0 <= m[key] <= 1.0, (key, m[key])
        assert m[f"test_reward_std_w{w}"] >= 0.0 and m[f"train_final_std_w{w}"] >= 0.0
        assert not any(k.startswith("test_gold") for k in m)
    with open(tmp_path / "run" / "toy" / "rl_trace.json") as f:
        trace = json.load(f)
    assert sorted(trace) == ["w2/seed_0", "w4/seed_0"]
    assert len(trace["w4/seed_0"]["proxy_std"]) == 2
    assert all(v is not None for v in trace["w4/seed_0"]["proxy_std"])
