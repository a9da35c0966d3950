"""asymptotics' `:real` config: best-of-N against the tilt fitted on the same RM-scored
samples of the tiny random checkpoint (tests/experiments write_real_world); plus the per-prompt
computation on hand-made rewards and the config's one-line errors."""

import math
import os

import numpy as np
import pytest

from alignax.experiment import load_module
from tests.experiments import REPO, run_real, write_real_world

datasets = pytest.importorskip("datasets")


def _module():
    return load_module(os.path.join(REPO, "experiments", "asymptotics.py"))


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return write_real_world(tmp_path_factory.mktemp("real_asymptotics"))


def test_bon_vs_tilt_on_hand_made_rewards():
    mod = _module()
    rewards = np.array([[0.0, 1.0, 2.0, 3.0], [1.0, 1.0, 1.0, 5.0]])
    out = mod.bon_vs_tilt(rewards, [1, 2, 4])
    np.testing.assert_allclose(out["ref_reward"], [1.5, 2.0])
    # N = 1 is the reference: KL 0, and the tilt at KL 0 is the reference too
    np.testing.assert_allclose(out["bon_reward_N1"], out["ref_reward"])
    np.testing.assert_allclose(out["bon_kl_N1"], 0.0, atol=1e-14)
    np.testing.assert_allclose(out["tilted_reward_N1"], out["ref_reward"])
    # best of 2 draws with replacement from {0, 1, 2, 3}: E max = sum_v v (F(v)^2 - F(v-)^2)
    f = np.arange(1, 5) / 4
    want = np.dot(np.arange(4), f ** 2 - np.concatenate([[0], f[:-1]]) ** 2)
    assert out["bon_reward_N2"][0] == pytest.approx(want)
    assert out["kl_bound_N4"][0] == pytest.approx(math.log(4) - 0.75)
    for n in (2, 4):
        # the tilt is the best law at its KL: it is at least BoN at BoN's (empirical) KL
        assert np.all(out[f"reward_gap_N{n}"] >= -1e-9)
        assert np.all(out[f"bon_kl_N{n}"] <= out[f"kl_bound_N{n}"] + 1e-12)


def test_real_config_errors():
    mod = _module()
    config = mod.get_config("real")
    with pytest.raises(ValueError, match="model.path"):
        mod.validate(config)
    with config.unlocked():
        config.model.path, config.data.path = "/lm", "/data"
    with pytest.raises(ValueError, match="reward.path"):
        mod.validate(config)
    config.reward.path = "/rm"
    config.ns = [1, 32]
    with pytest.raises(ValueError, match="sampling.num_samples"):
        mod.validate(config)


def test_toy_config_errors():
    mod = _module()
    config = mod.get_config("smoke")
    config.ns = [8, 4]
    with pytest.raises(ValueError, match="ns="):
        mod.validate(config)


@pytest.mark.slow  # an end-to-end :real run (system tier)
def test_real_asymptotics_runs(world, tmp_path):
    summary = run_real(
        "asymptotics", world, tmp_path, "prompts", f"--config.reward.path={world['rm']}",
        "--config.data.max_length=12", "--config.sampling.num_samples=4",
        "--config.sampling.max_new_tokens=4", "--config.ns=[1, 2, 4]")
    assert summary["claims"] == []
    m = {k: v["mean"] for k, v in summary["results"]["default"]["metrics"].items()}
    for split in ("val", "test"):
        assert m[f"{split}_bon_reward_N1"] == pytest.approx(m[f"{split}_ref_reward"], rel=1e-9)
        for n in (1, 2, 4):
            for key in ("bon_reward", "tilted_reward", "tilted_reward_bound", "bon_kl"):
                assert np.isfinite(m[f"{split}_{key}_N{n}"]), (split, key, n)
            assert m[f"{split}_bon_kl_N{n}"] <= m[f"kl_bound_N{n}"] + 1e-12
            assert m[f"{split}_reward_gap_N{n}"] >= -1e-9
        assert m[f"{split}_bon_reward_N4"] >= m[f"{split}_bon_reward_N2"] - 1e-9
    assert (tmp_path / "asymptotics" / "default" / "seed_0" / "metrics.jsonl").exists()
