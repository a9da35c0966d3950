"""experiments/barfi.py:real on the tiny world of the `:real` tests: GRPO on a weighted sum of
rule rewards whose weights take zeroth-order outer steps on the validation primary reward; the
rule rewards and the outer step by hand; the one-line config errors."""

import json

import numpy as np
import pytest

from alignax import cli
from alignax.experiment import load_module
from tests.experiments import REPO, run_real, write_real_world

datasets = pytest.importorskip("datasets")

SMALL = ("--config.data.max_length=12", "--config.grpo.iterations=1",
         "--config.grpo.prompts_per_iteration=2", "--config.grpo.num_samples=2",
         "--config.grpo.max_new_tokens=4", "--config.grpo.kl_coef=0.04",
         "--config.grpo.progress=False", "--config.outer.rounds=1",
         "--config.outer.eval_samples=2")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return write_real_world(tmp_path_factory.mktemp("real"))


def _barfi():
    return load_module(f"{REPO}/experiments/barfi.py")


def test_rule_rewards_and_the_outer_step_by_hand():
    barfi = _barfi()
    primary, aux = barfi.rule_rewards(
        ["so #### 42", "no answer", "#### 7 "], [3, 8, 2], ["42", "42", "8"], marker="####",
        auxiliary=("format", "brevity", "length"), max_new_tokens=8)
    np.testing.assert_array_equal(primary, [1.0, 0.0, 0.0])
    np.testing.assert_allclose(aux, [[1, 0, 1], [5 / 8, 0, 6 / 8], [3 / 8, 1, 2 / 8]])
    p2, a2 = barfi.rule_rewards([" 4 ", ""], [1, 0], ["4", "4"], marker="",
                                auxiliary=("format",), max_new_tokens=4)
    np.testing.assert_array_equal(p2, [1.0, 0.0])
    np.testing.assert_array_equal(a2, [[1.0, 0.0]])
    # g = (0.6 - 0.2) / (2 * 0.5) * delta = 0.4 delta; w + 2 g
    w = barfi.zeroth_order_step([1.0, 0.0], [1.0, -1.0], 0.6, 0.2, perturbation=0.5,
                                learning_rate=2.0)
    np.testing.assert_allclose(w, [1.8, -0.8])


def test_real_config_errors_are_one_line(world, tmp_path, capsys):
    spec = f"{REPO}/experiments/barfi.py:real"
    base = ["run", spec, "--workdir", str(tmp_path / "a"), f"--config.model.path={world['lm']}",
            f"--config.data.path={world['prompts']}"]
    assert cli.main([*base, "--config.reward.auxiliary=('format','politeness')"]) != 0
    err = capsys.readouterr().err
    assert "config.reward.auxiliary" in err and len(err.splitlines()) == 1
    assert cli.main([*base, "--config.reward.init_weights=(1.0,)"]) != 0
    assert "config.reward.init_weights" in capsys.readouterr().err
    assert cli.main(["run", spec, "--workdir", str(tmp_path / "b")]) != 0
    assert "model.path is required" in capsys.readouterr().err


@pytest.mark.slow  # an end-to-end :real run (system tier)
def test_barfi_real_runs_an_outer_round(world, tmp_path):
    summary = run_real("barfi", world, tmp_path, "prompts", *SMALL)
    assert summary["claims"] == []
    m = {k: v["mean"] for k, v in summary["results"]["default"]["metrics"].items()}
    assert m["rounds"] == 1.0
    for split in ("val", "test"):
        for tag in ("before", "after"):
            assert 0.0 <= m[f"{split}_primary_{tag}"] <= 1.0
    assert m["weight_format_start"] == 1.0 and m["weight_brevity_start"] == 1.0
    with open(tmp_path / "barfi" / "default" / "outer.json") as f:
        outer = json.load(f)
    (r0,) = outer["rounds"]
    assert r0["round"] == 0 and r0["weights"] == [1.0, 1.0]
    assert all(abs(d) == 1.0 for d in r0["direction"])
    # the final weights are the zeroth-order step of the recorded values (perturbation 0.5,
    # learning rate 1: w + (V+ - V-) delta)
    expect = np.asarray(r0["weights"]) + (r0["val_primary_plus"] - r0["val_primary_minus"]) \
        * np.asarray(r0["direction"])
    np.testing.assert_allclose(outer["final_weights"], expect, rtol=1e-6)
    np.testing.assert_allclose([m["weight_format"], m["weight_brevity"]], expect, rtol=1e-6)
    for branch in ("plus", "minus"):
        assert (tmp_path / "barfi" / "default" / "round_0" / branch / "metrics.jsonl").exists()
