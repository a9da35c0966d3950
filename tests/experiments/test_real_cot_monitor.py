"""experiments/cot_monitor.py:real on the tiny world of the `:real` tests: GRPO from a tiny random
checkpoint with the self-monitor cost (the `<monitor>` span's flag word, a rule, or a missing span)
and the Lagrange multiplier as the recipe's checkpointed reward state; plus the span helpers."""

import ml_collections
import numpy as np
import pytest

from alignax import experiment
from tests.experiments import REPO, run_real, write_real_world

datasets = pytest.importorskip("datasets")

SMALL = ("--config.data.max_length=12", "--config.grpo.iterations=2",
         "--config.grpo.prompts_per_iteration=2", "--config.grpo.num_samples=2",
         "--config.grpo.max_new_tokens=4", "--config.grpo.eval_every=1",
         "--config.grpo.progress=False")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return write_real_world(tmp_path_factory.mktemp("real"))


@pytest.fixture(scope="module")
def module():
    return experiment.load_module(f"{REPO}/experiments/cot_monitor.py")


def test_monitor_span_cost_and_strip(module):
    mon = ml_collections.ConfigDict(dict(open="<monitor>", close="</monitor>",
                                         flag_word="UNSAFE", rule="", missing_cost=0.0))
    text = "think <monitor>plan is Unsafe: flatter</monitor> #### 42"
    assert module.monitor_span(text, mon.open, mon.close) == "plan is Unsafe: flatter"
    assert module.response_cost(text, mon) == 1.0  # the flag word, case-insensitive
    assert module.response_cost("<monitor>all fine</monitor> 42", mon) == 0.0
    assert module.response_cost("no span 42", mon) == 0.0  # missing_cost
    assert module.monitor_span("<monitor>never closed", mon.open, mon.close) is None
    assert module.strip_monitor(text, mon).strip() == "think  #### 42"
    mon.missing_cost, mon.rule = 1.0, r"flatter"
    assert module.response_cost("no span 42", mon) == 1.0
    assert module.response_cost("<monitor>fine</monitor> I flatter you", mon) == 1.0


@pytest.mark.slow  # an end-to-end :real run (system tier)
def test_cot_monitor_real_dual_ascent_on_the_cost(world, tmp_path):
    # a random LM writes no monitor span: with missing_cost 1 every response costs 1, so the
    # multiplier after two iterations is exactly 2 * eta * (1 - d)
    summary = run_real("cot_monitor", world, tmp_path, "prompts", *SMALL,
                       "--config.monitor.missing_cost=1.0", "--config.cost.learning_rate=0.5",
                       "--config.cost.threshold=0.05")
    assert summary["claims"] == []
    m = {k: v["mean"] for k, v in summary["results"]["default"]["metrics"].items()}
    assert m["lagrange_multiplier_final"] == pytest.approx(2 * 0.5 * 0.95, rel=1e-5)
    assert m["train_cost_rate_last"] == 1.0
    for split in ("val", "test"):
        assert m[f"{split}_cost_rate"] == 1.0 and m[f"{split}_cost_rate_initial"] == 1.0
        assert 0.0 <= m[f"{split}_accuracy"] <= 1.0
    # iteration 1 used lambda = 0, iteration 2 lambda = 0.475 on rewards r - lambda * 1
    assert 0.0 <= m["train_reward_first"] <= 1.0
    assert -0.475 - 1e-5 <= m["train_reward_last"] <= 1.0 - 0.475 + 1e-5
    assert np.isfinite(m["val_accuracy_initial"])


@pytest.mark.slow  # an end-to-end :real run (system tier)
def test_cot_monitor_real_auxiliary_cost_and_errors(world, tmp_path, capsys):
    summary = run_real("cot_monitor", world, tmp_path, "prompts", *SMALL,
                       "--config.cost.method=auxiliary", "--config.cost.coef=0.5",
                       "--config.monitor.rule=.", "--config.grpo.iterations=1")
    m = {k: v["mean"] for k, v in summary["results"]["default"]["metrics"].items()}
    # the rule "." marks every non-empty response: reward = task - 0.5
    assert m["lagrange_multiplier_final"] == 0.5
    assert -0.5 - 1e-5 <= m["train_reward_last"] <= 0.5 + 1e-5
    from alignax import cli

    spec = f"{REPO}/experiments/cot_monitor.py:real"
    args = ["run", spec, "--workdir", str(tmp_path / "bad"), f"--config.model.path={world['lm']}",
            f"--config.data.path={world['prompts']}"]
    assert cli.main([*args, "--config.cost.method=penalty"]) != 0
    assert "cost.method='penalty'" in capsys.readouterr().err
