"""The `:real` configs of the experiment modules (issue 22 item 7): each runs its module's
mechanism from a tiny random Qwen2-style checkpoint and small HF datasets written once by the
session fixture (no torch: alignax's export_hf writes the checkpoint), for 1-2 steps through
`alignax run`; plus the one-line errors of a :real config without its paths."""

import os

import jax
import numpy as np
import pytest

from alignax import cli
from alignax.algorithms import real
from tests.experiments import run_real, write_real_world

datasets = pytest.importorskip("datasets")

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return write_real_world(tmp_path_factory.mktemp("real"))


def _run(name, world, tmp_path, data, *overrides):
    return run_real(name, world, tmp_path, data, *overrides)


def _online(group):
    """The same tiny online-recipe settings for every module (2 iterations of 2 prompts x 2
    samples, 4 new tokens, evaluated every iteration, one KL coefficient): identical update
    and rollout programs, compiled once for the file through the persistent cache."""
    return [f"--config.{group}.{k}" for k in (
        "iterations=2", "prompts_per_iteration=2", "num_samples=2", "max_new_tokens=4",
        "kl_coef=0.04", "progress=False")]


def _metrics(summary, variant="default"):
    return {k: v["mean"] for k, v in summary["results"][variant]["metrics"].items()}


@pytest.mark.slow  # an end-to-end :real run (system tier)
def test_bt_dpo_synthetic_real(world, tmp_path):
    stages = [f"--config.{s}.{k}" for s in ("sft", "rm", "dpo") for k in
              ("train.steps=2", "train.batch_size=4", "train.eval_every=1",
               "train.progress=False")]
    summary = _run("bt_dpo_synthetic", world, tmp_path, "pairs", "--config.data.max_length=16",
                   *stages)
    m = _metrics(summary)
    assert summary["claims"] == []
    for key in ("val_rm_label_accuracy", "test_rm_label_accuracy", "test_dpo_pair_accuracy",
                "sft_nll"):
        assert np.isfinite(m[key]), key


@pytest.mark.slow  # an end-to-end :real run (system tier)
def test_grpo_arithmetic_real(world, tmp_path):
    summary = _run("grpo_arithmetic", world, tmp_path, "prompts", "--config.data.max_length=12",
                   "--config.grpo.eval_every=1", *_online("grpo"))
    m = _metrics(summary)
    assert 0 <= m["test_ref_accuracy"] <= 1 and 0 <= m["test_grpo_accuracy"] <= 1
    assert [c["kind"] for c in summary["claims"]] == ["comparative"]


def test_real_helpers_and_missing_paths(world, tmp_path, capsys):
    assert real.config_mode(None) == "" and real.config_mode("real") == "real"
    with pytest.raises(ValueError, match="use nothing, 'smoke' or 'real'"):
        real.config_mode("reel")
    train, val, test = real.held_out_split(10, 0.1)
    assert list(val) == [8] and list(test) == [9] and list(train) == list(range(8))
    with pytest.raises(ValueError, match="too few"):
        real.held_out_split(2, 0.4)
    x = {"a": np.arange(10.0), "b": np.arange(20.0).reshape(10, 2)}
    f = jax.jit(lambda d, c: real.map_in_chunks(
        lambda y: (y["a"] * 2, y["b"].sum(-1)), d, c), static_argnums=1)
    for chunk in (0, 3, 5, 10):  # padded, exact, one chunk
        a, b = f(x, chunk)
        np.testing.assert_array_equal(a, x["a"] * 2)
        np.testing.assert_array_equal(b, x["b"].sum(-1))
    assert real.held_out_split(100, 0.1, 4)[2].tolist() == [96, 97, 98, 99]
    assert real.final_answer("so #### 42 ", "####") == "42"
    assert real.final_answer("42", "####") is None and real.final_answer(" 4 ", "") == "4"
    spec = os.path.join(REPO, "experiments", "grpo_arithmetic.py:real")
    assert cli.main(["run", spec, "--workdir", str(tmp_path / "a")]) != 0
    err = capsys.readouterr().err
    assert "model.path is required by the :real config" in err and len(err.splitlines()) == 1
    assert cli.main(["run", spec, "--workdir", str(tmp_path / "b"),
                     f"--config.model.path={world['lm']}"]) != 0
    assert "data.path is required" in capsys.readouterr().err


@pytest.mark.slow  # an end-to-end :real run (system tier)
def test_rlhf_frontier_real(world, tmp_path):
    summary = _run("rlhf_frontier", world, tmp_path, "prompts", "--config.data.max_length=12",
                   f"--config.proxy.path={world['rm']}", f"--config.gold.path={world['rm']}",
                   "--config.eval_every=1", *_online("grpo"))
    m = _metrics(summary)
    assert summary["claims"] == []
    # the gold RM is the proxy here: both measured on the same samples
    assert m["test_ref_gold"] == pytest.approx(m["test_ref_proxy"], rel=1e-5)
    for key in ("test_gold_at_peak", "test_final_proxy", "test_final_kl", "peak_iteration"):
        assert np.isfinite(m[key]), key


@pytest.mark.slow  # an end-to-end :real run (system tier)
@pytest.mark.parametrize("method", ["brpo_judge", "grpo_rm"])
def test_writing_zero_real(world, tmp_path, method):
    scorer = "judge" if method == "brpo_judge" else "rm"
    summary = _run("writing_zero", world, tmp_path, "prompts", "--config.data.max_length=12",
                   f"--config.method={method}", f"--config.{scorer}.path={world['rm']}",
                   "--config.rl.eval_every=1", *_online("rl"))
    m = _metrics(summary)
    assert summary["claims"] == []
    assert m["test_length"] <= 4 and m["test_ref_length"] <= 4
    if method == "brpo_judge":
        assert -1 <= m["test_judge"] <= 1
    else:
        assert np.isfinite(m["test_rm"])


@pytest.mark.slow  # an end-to-end :real run (system tier)
def test_semantic_rewards_real(world, tmp_path):
    summary = _run("semantic_rewards", world, tmp_path, "prompts", "--config.data.max_length=12",
                   "--config.data.reference_length=4", "--config.rl.eval_every=1",
                   *_online("rl"))
    m = _metrics(summary)
    assert summary["claims"] == []
    assert -1 <= m["test_cosine"] <= 1 and 0 <= m["test_rouge1"] <= 1
    assert m["chosen_iteration"] in (1.0, 2.0)


@pytest.mark.slow  # an end-to-end :real run (system tier)
def test_dpa_real(world, tmp_path):
    summary = _run("dpa", world, tmp_path, "prompts", "--config.data.max_length=24",
                   f"--config.rm.path={world['rm']}", "--config.task.num_bins=2",
                   "--config.rsf.iterations=1", "--config.rsf.prompts_per_iteration=2",
                   "--config.rsf.num_samples=2", "--config.rsf.max_new_tokens=4",
                   "--config.rsf.progress=False")
    m = _metrics(summary)
    assert summary["claims"] == []
    rho = float(m["test_spearman_theta_help"])  # "nan" (a tie over the 2 bins) is allowed
    assert np.isnan(rho) or abs(rho) <= 1
    assert 0 <= m["test_length"] <= 1 and np.isfinite(m["test_directional_reward"])
