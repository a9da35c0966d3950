"""experiments/prefpaint.py:real on points and scored completions written by the test: the
readers, the one-line config errors, and the three RL methods end to end on a user's data."""

import json
import os

import numpy as np
import pytest

from alignax import cli, experiment
from tests.experiments import REPO

SPEC = os.path.join(REPO, "experiments", "prefpaint.py:real")
TINY = ("--config.pretrain.steps=4", "--config.pretrain.steps_per_log=2",
        "--config.pretrain.batch_size=8", "--config.rl.updates=2", "--config.rl.steps_per_log=1",
        "--config.rl.conditions=2", "--config.rl.group_size=2", "--config.rl.lr_grid=(0.001,)",
        "--config.reg.trust_k_grid=(1.0,)", "--config.reg.lcb_alpha_grid=(1.0,)",
        "--config.eval.num_samples=8", "--config.model.hidden=8", "--config.model.n_blocks=1",
        "--config.model.time_dim=8", "--config.diffusion.num_steps=3",
        "--config.rm.num_features=16")


@pytest.fixture(scope="module")
def module():
    return experiment.load_module(os.path.join(REPO, "experiments", "prefpaint.py"))


def write_world(folder, n=40, m=30, seed=0):
    """Points of two clusters at (+-10, 0) in the user's units, and m scored completions
    (score = the second coordinate, as if raters preferred higher completions)."""
    rng = np.random.default_rng(seed)
    centres = np.array([[10.0, 0.0], [-10.0, 0.0]])
    x = centres[rng.integers(0, 2, n)] + rng.normal(0, 1, (n, 2))
    os.makedirs(folder, exist_ok=True)
    points = os.path.join(folder, "points.npy")
    np.save(points, x.astype(np.float32))
    sx = centres[rng.integers(0, 2, m)] + rng.normal(0, 1, (m, 2))
    scores = os.path.join(folder, "scored.npz")
    np.savez(scores, x=sx.astype(np.float32), score=sx[:, 1].astype(np.float32))
    return points, scores


def test_readers(module, tmp_path):
    points, scores = write_world(str(tmp_path / "d"))
    a, b = module.load_points(points), module.load_points(str(tmp_path / "d"))
    assert a.shape == (40, 2) and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    x, s = module.load_scores(scores, 2)
    assert x.shape == (30, 2) and s.shape == (30,)
    np.testing.assert_allclose(s, x[:, 1])
    with pytest.raises(ValueError, match=r"x \[M >= 3, 3\]"):
        module.load_scores(scores, 3)
    np.savez(str(tmp_path / "bad.npz"), x=x)
    with pytest.raises(ValueError, match="needs arrays 'x'"):
        module.load_scores(str(tmp_path / "bad.npz"), 2)
    np.save(str(tmp_path / "flat.npy"), np.zeros((4,), np.float32))
    with pytest.raises(ValueError, match=r"\[N >= 3, D >= 2\]"):
        module.load_points(str(tmp_path / "flat.npy"))


def test_real_config_errors_are_one_line(tmp_path, capsys):
    assert cli.main(["run", SPEC, "--workdir", str(tmp_path / "a")]) != 0
    err = capsys.readouterr().err
    assert "data.path is required" in err and len(err.strip().splitlines()) == 1
    points, scores = write_world(str(tmp_path / "d"))
    assert cli.main(["run", SPEC, "--workdir", str(tmp_path / "b"),
                     f"--config.data.path={points}", *TINY]) != 0
    err = capsys.readouterr().err
    assert "data.scores_path is required" in err and len(err.strip().splitlines()) == 1
    assert cli.main(["run", SPEC, "--workdir", str(tmp_path / "c"), f"--config.data.path={points}",
                     f"--config.data.scores_path={scores}", "--config.data.cond_columns=(0, 1)",
                     *TINY]) != 0
    err = capsys.readouterr().err
    assert "data.cond_columns=(0, 1) must name 1..1 columns" in err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.slow  # pretraining and the three RL methods end to end (about 15-30 s)
def test_real_runs_the_three_methods_on_user_data(tmp_path):
    points, scores = write_world(str(tmp_path / "d"))
    argv = ["run", SPEC, "--workdir", str(tmp_path / "run"), f"--config.data.path={points}",
            f"--config.data.scores_path={scores}", *TINY]
    assert cli.main(argv) == 0
    with open(tmp_path / "run" / "summary.json") as f:
        summary = json.load(f)
    assert summary["claims"] == []
    m = summary["results"]["default"]["per_seed"]["0"]
    for key in ("initial_test_proxy", "initial_test_width", "rm_heldout_rmse"):
        assert np.isfinite(m[key]), key
    for method in ("plain", "trust", "lcb"):
        for key in ("test_proxy", "test_width", "test_lcb", "val_proxy", "learning_rate"):
            assert np.isfinite(m[f"{method}_{key}"]), (method, key)
        assert m[f"{method}_test_width"] > 0
    assert m["scored_points"] == 27  # 3 of the 30 scored rows held out
    assert m["samples"] == 2 * 2 * 2 and m["nfe_per_sample"] == 3
    assert m["trust_reg_coef"] == 1.0 and m["lcb_reg_coef"] == 1.0 and m["plain_reg_coef"] == 0
    with open(tmp_path / "run" / "default" / "selection.json") as f:
        assert set(json.load(f)) == {"plain", "trust", "lcb"}
