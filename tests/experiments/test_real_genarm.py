"""experiments/genarm.py:real on the tiny world of the `:real` tests: the base checkpoint
fine-tuned by the ARM loss on the pairs (2 steps of the direct recipe), its held-out pair
accuracy, and guided vs unguided samples on the test prompts; the one-line config errors."""

import os

import pytest

from alignax import cli, experiment
from tests.experiments import REPO, run_real, write_real_world

datasets = pytest.importorskip("datasets")

SPEC = os.path.join(REPO, "experiments", "genarm.py:real")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return write_real_world(tmp_path_factory.mktemp("real"))


@pytest.mark.slow  # an end-to-end :real run (system tier)
def test_genarm_real_trains_the_arm_and_reports_guided_vs_unguided(world, tmp_path):
    summary = run_real("genarm", world, tmp_path, "pairs", "--config.data.max_length=16",
                       "--config.arm_train.train.steps=2", "--config.arm_train.train.batch_size=4",
                       "--config.decode.max_prompt_length=12",
                       "--config.decode.max_new_tokens=4", "--config.decode.beta=0.5")
    assert summary["claims"] == []
    m = {k: v["mean"] for k, v in summary["results"]["default"]["metrics"].items()}
    for key in ("arm_validation_pair_accuracy", "arm_test_pair_accuracy"):
        assert 0.0 <= m[key] <= 1.0, key
    for name in ("guided", "unguided"):
        assert 1.0 <= m[f"{name}_length"] <= 4.0
        assert m[f"{name}_base_logp"] < 0 and m[f"{name}_logp"] < 0
        assert m[f"{name}_arm_reward"] < 0
    # weight 0 samples the base itself: its guided log-probs are the base's, KL 0
    assert m["unguided_kl_to_base"] == 0.0 and m["unguided_logp"] == m["unguided_base_logp"]
    assert (tmp_path / "genarm" / "default" / "arm").is_dir()  # the recipe's run folder


def test_real_config_errors_name_the_key(world, tmp_path, capsys):
    module = experiment.load_module(os.path.join(REPO, "experiments", "genarm.py"))
    config = module.get_config("real")
    with pytest.raises(ValueError, match="model.path"):
        module.validate(config)
    with config.unlocked():
        config.model.path, config.data.path = world["lm"], world["pairs"]
        config.decode.beta = 0.0
    with pytest.raises(ValueError, match="decode.beta"):
        module.validate(config)
    with config.unlocked():
        config.decode.beta = 1.0
        config.arm_train.loss = "no_such_loss"
    with pytest.raises(ValueError, match="no_such_loss"):
        module.validate(config)
    argv = ["run", SPEC, "--workdir", str(tmp_path / "w"), f"--config.model.path={world['lm']}",
            f"--config.data.path={world['pairs']}", "--config.arm_train.train.step=2"]
    assert cli.main(argv) != 0
    assert "did you mean arm_train.train.steps" in capsys.readouterr().err
