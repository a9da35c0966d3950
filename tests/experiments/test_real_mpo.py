"""experiments/mpo.py:real on the tiny world of the `:real` tests: GRPO with the evolving text
rubric as the recipe's reward state, audited by a reward checkpoint (or a gold rubric); the text
items; the one-line config errors."""

import json

import numpy as np
import pytest

from alignax.experiment import load_module
from tests.experiments import REPO, run_real, write_real_world

datasets = pytest.importorskip("datasets")

SMALL = ("--config.data.max_length=16", "--config.rl.iterations=2",
         "--config.rl.prompts_per_iteration=2", "--config.rl.num_samples=4",
         "--config.rl.max_new_tokens=6", "--config.rl.progress=False",
         "--config.rl.optimizer.learning_rate=0.01", "--config.meta.every=1",
         "--config.meta.audits=4", "--config.rubric.keywords=('w1','w2')",
         "--config.rl.checkpoint_every=1")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return write_real_world(tmp_path_factory.mktemp("real"))


def test_text_items_by_hand():
    mpo = load_module(f"{REPO}/experiments/mpo.py")
    assert mpo.real_items(("a", "b")) == ("count_a", "count_b", "repeats_a", "repeats_b",
                                          "length", "distinct")
    items = mpo.text_items(["A a, b c", "", "c c c c"], ("a", "b"), max_words=8)
    np.testing.assert_allclose(items, [[2, 1, 1, 0, 0.5, 0.75], [0, 0, 0, 0, 0, 0],
                                       [0, 0, 0, 0, 0.5, 0.25]])


@pytest.mark.slow  # an end-to-end :real run (system tier)
def test_mpo_real_audits_with_a_reward_checkpoint(world, tmp_path):
    summary = run_real("mpo", world, tmp_path, "prompts", f"--config.gold.path={world['rm']}",
                       *SMALL)
    assert summary["claims"] == []
    m = {k: v["mean"] for k, v in summary["results"]["default"]["metrics"].items()}
    # one meta step per iteration, 4 audited samples each
    assert m["gold_audits"] == 8.0 and m["meta_steps"] == 2.0
    names = ("count_w1", "count_w2", "repeats_w1", "repeats_w2", "length", "distinct")
    assert [m[f"weight_{n}_start"] for n in names] == [1.0, 1.0, 0.0, 0.0, 0.0, 0.0]
    assert all(np.isfinite(m[f"weight_{n}"]) for n in names)
    for split in ("val", "test"):
        for tag in ("before", "after"):
            assert np.isfinite(m[f"{split}_gold_{tag}"]) and m[f"{split}_proxy_{tag}"] >= 0
    # the rubric is the recipe's reward state, checkpointed with the run
    run = tmp_path / "mpo" / "default" / "seed_0" / "rl"
    assert (run / "checkpoints" / "2").is_dir()
    rows = [json.loads(line) for line in open(run / "metrics.jsonl")]
    assert len([r for r in rows if "reward" in r]) == 2


@pytest.mark.slow
def test_mpo_real_with_a_gold_rubric_moves_the_weights_toward_it(world, tmp_path):
    # the gold rubric pays only for the share of distinct words; one meta step (iteration 2)
    # auditing all 8 samples of the iteration
    summary = run_real("mpo", world, tmp_path, "prompts",
                       "--config.gold.weights=(0.0,0.0,0.0,0.0,0.0,2.0)", *SMALL,
                       "--config.meta.every=2", "--config.meta.audits=8",
                       "--config.rubric.weights=(0.0,0.0,0.0,0.0,0.0,0.0)")
    m = {k: v["mean"] for k, v in summary["results"]["default"]["metrics"].items()}
    assert m["gold_audits"] == 8.0 and m["meta_steps"] == 1.0
    # the residual gold - proxy is 2 distinct: the ridge correction (G + lambda I)^-1 G d with
    # d = 2 e_distinct has a positive distinct component (G PSD, the audited samples' shares
    # of distinct words vary), halved by the merge: the item is added with a positive weight
    assert m["weight_distinct_start"] == 0.0 and m["weight_distinct"] > 0.0


def _err(world, tmp_path, capsys, *overrides):
    from alignax import cli

    code = cli.main(["run", f"{REPO}/experiments/mpo.py:real", "--workdir",
                     str(tmp_path / "bad"), f"--config.model.path={world['lm']}",
                     f"--config.data.path={world['prompts']}", *overrides])
    err = capsys.readouterr().err.strip()
    assert code != 0
    return err


def test_mpo_real_config_errors_are_one_line(world, tmp_path, capsys):
    err = _err(world, tmp_path, capsys)
    assert "gold.path or gold.weights is required by the :real config" in err
    assert len(err.splitlines()) == 1
    err = _err(world, tmp_path, capsys, "--config.gold.weights=(1.0,2.0)")
    assert "gold.weights has 2 weights for the 4 items" in err and len(err.splitlines()) == 1
    err = _err(world, tmp_path, capsys, f"--config.gold.path={world['rm']}",
               "--config.meta.audits=1000")
    assert "meta.audits=1000 must be in [1, 64]" in err and len(err.splitlines()) == 1
