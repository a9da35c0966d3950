"""experiments/ttsnap.py:real on a folder of images written by the test: the image and pair
readers, one-line config errors, and (slow) the whole mechanism end to end with a named gold
and with user preference pairs."""

import json
import os

import numpy as np
import pytest

from alignax import cli, experiment
from tests.experiments import REPO

SPEC = os.path.join(REPO, "experiments", "ttsnap.py:real")
TINY = ("--config.denoiser.steps=4", "--config.denoiser.hidden=16",
        "--config.denoiser.n_blocks=1", "--config.denoiser.time_dim=8",
        "--config.denoiser.batch_size=8", "--config.schedule.num_timesteps=50",
        "--config.sampler.num_steps=4", "--config.rm.channels=(4,8)", "--config.rm.hidden=8",
        "--config.rm.time_dim=8", "--config.rm.num_pairs=16", "--config.rm.steps=4",
        "--config.rm.batch_size=4", "--config.rm.steps_per_log=2",
        "--config.distill.num_trajectories=8", "--config.distill.val_trajectories=8",
        "--config.distill.steps=4", "--config.distill.batch_size=4",
        "--config.distill.steps_per_log=2", "--config.search.bon_n=2",
        "--config.search.prune_steps=(1,)", "--config.search.keep_fractions=(0.5,)",
        "--config.search.val_queries=2", "--config.search.test_queries=2",
        "--config.search.rank_trajectories=8", "--config.data.eval_fraction=0.25")


@pytest.fixture(scope="module")
def module():
    return experiment.load_module(os.path.join(REPO, "experiments", "ttsnap.py"))


def write_images(folder, n=32, seed=0):
    """n 8x8 one-channel images in [-1, 1] of varied brightness, and pairs (brighter first)."""
    rng = np.random.default_rng(seed)
    level = rng.uniform(-0.8, 0.8, (n, 1, 1, 1))
    images = np.clip(level + 0.2 * rng.standard_normal((n, 8, 8, 1)), -1, 1).astype(np.float32)
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, "images.npy")
    np.save(path, images)
    a, b = rng.integers(0, n, 200), rng.integers(0, n, 200)
    bright = images.reshape(n, -1).mean(1)
    pairs = np.stack([np.where(bright[a] > bright[b], a, b),
                      np.where(bright[a] > bright[b], b, a)], 1)
    pairs_path = os.path.join(folder, "pairs.npy")
    np.save(pairs_path, pairs[a != b].astype(np.int64))
    return path, pairs_path


def test_image_reader(module, tmp_path):
    path, _ = write_images(str(tmp_path))
    assert module.load_images(path).shape == (32, 8, 8, 1)
    bad = str(tmp_path / "bad.npy")
    np.save(bad, np.full((10, 8, 8, 1), 3.0, np.float32))
    with pytest.raises(ValueError, match=r"in \[-1, 1\]"):
        module.load_images(bad)
    np.save(bad, np.zeros((10, 8, 8), np.float32))
    with pytest.raises(ValueError, match="expected float images"):
        module.load_images(bad)


def test_real_config_errors_are_one_line(tmp_path, capsys):
    assert cli.main(["run", SPEC, "--workdir", str(tmp_path / "a")]) != 0
    err = capsys.readouterr().err
    assert "data.path is required" in err and len(err.strip().splitlines()) == 1
    path, _ = write_images(str(tmp_path))
    assert cli.main(["run", SPEC, "--workdir", str(tmp_path / "b"), f"--config.data.path={path}",
                     "--config.reward.gold=sharpness"]) != 0
    err = capsys.readouterr().err
    assert "reward.gold must be one of" in err and len(err.strip().splitlines()) == 1


@pytest.mark.slow
@pytest.mark.parametrize("with_pairs", [False, True])
def test_real_end_to_end(tmp_path, with_pairs):
    path, pairs = write_images(str(tmp_path / "data"))
    extra = (f"--config.data.pairs_path={pairs}",) if with_pairs else ()
    workdir = tmp_path / "run"
    argv = ["run", SPEC, "--workdir", str(workdir), f"--config.data.path={path}",
            f"--config.model.path={tmp_path / 'den'}", *TINY, *extra]
    assert cli.main(argv) == 0
    with open(workdir / "summary.json") as f:
        summary = json.load(f)
    assert summary["claims"] == []
    metrics = summary["results"]["toy"]["per_seed"]["0"]
    name = "clean_rm" if with_pairs else "brightness"
    for method in ("bon", "prune_clean", "prune_narf"):
        assert np.isfinite(metrics[f"test_{name}_{method}"])
        assert metrics[f"nfe_{method}"] <= metrics["budget"]
    assert np.isfinite(metrics["test_spearman_rm_narf_mid"])
    # the denoiser's run folder is reused: a second run restores it instead of training
    assert os.path.isdir(tmp_path / "den" / "checkpoints")
