"""experiments/watermark.py:real on the tiny world of the `:real` tests: unwatermarked, KGW,
Gumbel and randomized-Gumbel samples of the checkpoint, their RM rewards, Alignment Resampling
by the reward checkpoint and detection at thresholds calibrated on validation prompts; the
one-line config errors."""

import os

import pytest

from alignax import experiment
from tests.experiments import REPO, run_real, write_real_world

datasets = pytest.importorskip("datasets")

SCHEMES = ("base", "kgw", "gumbel", "rgumbel")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return write_real_world(tmp_path_factory.mktemp("real"))


@pytest.mark.slow  # an end-to-end :real run (system tier)
def test_watermark_real_reports_rewards_ar_and_detection(world, tmp_path):
    summary = run_real("watermark", world, tmp_path, "prompts",
                       f"--config.reward.path={world['rm']}",
                       "--config.decode.max_prompt_length=12",
                       "--config.decode.max_new_tokens=6", "--config.decode.num_samples=3")
    assert summary["claims"] == []
    m = {k: v["mean"] for k, v in summary["results"]["default"]["metrics"].items()}
    for name in SCHEMES:
        assert 1.0 <= m[f"{name}_length"] <= 6.0, name
        # the AR choice is the RM's best of the 3 samples of a prompt
        assert m[f"{name}_ar_rm"] >= m[f"{name}_rm"] - 1e-6, name
        for key in ("tpr", "ar_tpr"):
            assert 0.0 <= m[f"{name}_{key}"] <= 1.0, (name, key)
        assert 1 / 3 - 1e-6 <= m[f"{name}_distinct"] <= 1.0
    # the vanilla Gumbel watermark is deterministic for a key and context: 3 equal samples
    assert m["gumbel_distinct"] == pytest.approx(1 / 3)
    assert m["gumbel_ar_rm"] == pytest.approx(m["gumbel_rm"], abs=1e-5)


def test_real_config_errors_name_the_key(world):
    module = experiment.load_module(os.path.join(REPO, "experiments", "watermark.py"))
    config = module.get_config("real")
    with pytest.raises(ValueError, match="model.path"):
        module.validate(config)
    with config.unlocked():
        config.model.path, config.data.path = world["lm"], world["prompts"]
    with pytest.raises(ValueError, match="reward.path"):
        module.validate(config)
    with config.unlocked():
        config.reward.path = world["rm"]
    module.validate(config)
    for key, bad, value in (("watermark.gamma", "gamma", 1.5), ("watermark.delta", "delta", -1),
                            ("decode.num_samples", "num_samples", 1),
                            ("decode.temperature", "temperature", 0.0)):
        c = module.get_config("real")
        with c.unlocked():
            c.model.path, c.data.path, c.reward.path = world["lm"], world["prompts"], world["rm"]
            group = c.watermark if key.startswith("watermark") else c.decode
            group[bad] = value
        with pytest.raises(ValueError, match=key):
            module.validate(c)
