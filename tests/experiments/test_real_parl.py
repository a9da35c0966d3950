"""experiments/parl.py:real on the tiny world of the `:real` tests: one round of a BT reward head
on current-policy pairs labelled by the gold reward checkpoint, then GRPO on the learned
reward; the head loss and the gold labels by hand; the one-line config errors."""

import jax.numpy as jnp
import numpy as np
import pytest

from alignax import cli
from alignax.experiment import load_module
from tests.experiments import REPO, run_real, write_real_world

datasets = pytest.importorskip("datasets")

SMALL = ("--config.data.max_length=12", "--config.grpo.iterations=1",
         "--config.grpo.prompts_per_iteration=2", "--config.grpo.num_samples=2",
         "--config.grpo.max_new_tokens=4", "--config.grpo.kl_coef=0.04",
         "--config.grpo.progress=False", "--config.rounds.count=1",
         "--config.rounds.queries=4", "--config.rounds.head_steps=5",
         "--config.rounds.eval_samples=1")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return write_real_world(tmp_path_factory.mktemp("real"))


def _parl():
    return load_module(f"{REPO}/experiments/parl.py")


def test_head_loss_and_gold_labels_by_hand():
    parl = _parl()
    np.testing.assert_array_equal(parl.gold_pair_labels([[1.0, 0.0], [0.0, 2.0], [3.0, 3.0]]),
                                  [1.0, 0.0, 0.5])
    diff = jnp.array([[1.0, 0.0], [0.0, 2.0]])
    w = jnp.array([0.5, -1.0])
    # margins 0.5 and -2; labels 1 and 1/2; l2 0.1
    expect = -np.mean([np.log(1 / (1 + np.exp(-0.5))),
                       0.5 * np.log(1 / (1 + np.exp(2.0))) + 0.5 * np.log(1 / (1 + np.exp(-2.0)))
                       ]) + 0.05 * 1.25
    got = parl.bt_head_loss(w, diff, jnp.array([1.0, 0.5]), 0.1)
    np.testing.assert_allclose(float(got), expect, rtol=1e-6)


def test_real_config_errors_are_one_line(world, tmp_path, capsys):
    spec = f"{REPO}/experiments/parl.py:real"
    base = ["run", spec, "--workdir", str(tmp_path / "a"), f"--config.model.path={world['lm']}",
            f"--config.data.path={world['prompts']}"]
    assert cli.main(base) != 0
    err = capsys.readouterr().err
    assert "gold.path is required" in err and len(err.splitlines()) == 1
    assert cli.main([*base, f"--config.gold.path={world['rm']}",
                     "--config.parl.data_term=True"]) != 0
    err = capsys.readouterr().err
    assert "config.parl.data_term" in err and len(err.splitlines()) == 1
    assert cli.main([*base, f"--config.gold.path={world['rm']}",
                     "--config.rounds.queries=0"]) != 0
    assert "config.rounds.queries" in capsys.readouterr().err


@pytest.mark.slow  # an end-to-end :real run (system tier)
def test_parl_real_runs_a_round(world, tmp_path):
    summary = run_real("parl", world, tmp_path, "prompts", f"--config.gold.path={world['rm']}",
                       *SMALL)
    assert summary["claims"] == []
    m = {k: v["mean"] for k, v in summary["results"]["default"]["metrics"].items()}
    assert m["rounds"] == 1.0 and m["queries"] == 4.0
    for split in ("val", "test"):
        for tag in ("before", "after"):
            assert np.isfinite(m[f"{split}_gold_{tag}"])
    assert np.isnan(m["head_accuracy"]) or 0.0 <= m["head_accuracy"] <= 1.0
    run = tmp_path / "parl" / "default" / "round_0"
    assert (run / "head" / "metrics.jsonl").exists()
    assert (run / "grpo" / "metrics.jsonl").exists()
