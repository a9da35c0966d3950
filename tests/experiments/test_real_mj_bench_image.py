"""experiments/mj_bench_image.py:real on image pairs and an image RM checkpoint written by the
test: the .npz reader and its one-line errors, the config errors, and (slow) the harness end to
end with a prompt-reading RM and a bias set."""

import json
import os

import jax
import numpy as np
import pytest

from alignax import cli, experiment
from alignax.eval import image_judges as ij
from alignax.rewards import image_rm
from tests.experiments import REPO

SPEC = os.path.join(REPO, "experiments", "mj_bench_image.py:real")


@pytest.fixture(scope="module")
def module():
    return experiment.load_module(os.path.join(REPO, "experiments", "mj_bench_image.py"))


def write_world(folder, n=12, classes=3, seed=0):
    """An RM reading 3 prompt planes (random weights) and a .npz of n pairs in two categories
    with prompts and a bias set of 2 prompts x 3 variants."""
    rng = np.random.default_rng(seed)
    cfg = image_rm.ImageRMConfig(data_shape=(8, 8, 1 + classes), channels=(4, 8), hidden=8)
    rm = image_rm.make_image_rm(cfg)
    model = ij.save_image_rm(os.path.join(folder, "rm"), cfg, rm.init(jax.random.key(seed)),
                             num_classes=classes)
    images = lambda *s: rng.uniform(-1, 1, (*s, 8, 8, 1)).astype(np.float32)  # noqa: E731
    path = os.path.join(folder, "pairs.npz")
    np.savez(path, chosen=images(n), rejected=images(n),
             category=np.array(["alignment", "safety"] * (n // 2)),
             prompt=rng.integers(0, classes, n), bias_images=images(2, 3),
             bias_prompt=np.array([0, 2]))
    return model, path


def test_pair_reader_and_category_names(module, tmp_path):
    _, path = write_world(str(tmp_path))
    data = module.load_pairs(path)
    assert data["chosen"].shape == (12, 8, 8, 1)
    ids, names = module.category_names(data["category"])
    assert names == ["alignment", "safety"] and list(ids[:2]) == [0, 1]
    ids, names = module.category_names(np.array([2, 0, 2]))
    assert names == ["category_0", "category_2"] and list(ids) == [1, 0, 1]
    bad = str(tmp_path / "bad.npz")
    np.savez(bad, chosen=np.zeros((3, 8, 8, 1), np.float32),
             rejected=np.full((3, 8, 8, 1), 2.0, np.float32), category=np.zeros(3, int))
    with pytest.raises(ValueError, match=r"in \[-1, 1\]"):
        module.load_pairs(bad)
    np.savez(bad, chosen=np.zeros((3, 8, 8, 1), np.float32))
    with pytest.raises(ValueError, match="missing array 'rejected'"):
        module.load_pairs(bad)


def test_real_config_errors_are_one_line(tmp_path, capsys):
    assert cli.main(["run", SPEC, "--workdir", str(tmp_path / "a")]) != 0
    err = capsys.readouterr().err
    assert "model.path is required" in err and len(err.strip().splitlines()) == 1
    model, path = write_world(str(tmp_path))
    np.savez(str(tmp_path / "noprompt.npz"), chosen=np.zeros((2, 8, 8, 1), np.float32),
             rejected=np.zeros((2, 8, 8, 1), np.float32), category=np.array([0, 1]))
    assert cli.main(["run", SPEC, "--workdir", str(tmp_path / "b"),
                     f"--config.model.path={model}",
                     f"--config.data.path={tmp_path / 'noprompt.npz'}"]) != 0
    err = capsys.readouterr().err
    assert "the RM reads prompts" in err and len(err.strip().splitlines()) == 1


@pytest.mark.slow  # an end-to-end :real run (system tier)
def test_real_end_to_end(tmp_path):
    model, path = write_world(str(tmp_path))
    workdir = tmp_path / "run"
    assert cli.main(["run", SPEC, "--workdir", str(workdir), f"--config.model.path={model}",
                     f"--config.data.path={path}"]) == 0
    with open(workdir / "summary.json") as f:
        summary = json.load(f)
    assert summary["claims"] == []
    m = summary["results"]["bench"]["per_seed"]["0"]
    for cat in ("alignment", "safety"):
        assert m[f"num_pairs_{cat}"] == 6
        for policy in ("wrong", "half", "exclude"):
            assert 0 <= m[f"test_acc_{cat}_{policy}"] <= 1
    assert m["test_acc_alignment_wrong"] <= m["test_acc_alignment_half"]
    assert 0 < m["test_ges"] <= 1 and np.isfinite(m["test_nds"])
