"""experiments/easy_to_hard.py:real on the tiny world of the `:real` tests: a PRM head on a tiny
random checkpoint trained 2 steps on stepwise-supervision rows (TRL's prompt / completions /
labels), its held-out step metrics and its weighted voting over the checkpoint's sampled
solutions at the step chosen on validation; the PRM rows by hand; the one-line config errors."""

import json
import os

import numpy as np
import pytest

from alignax import cli, experiment
from tests.experiments import REPO, run_real, write_real_world

datasets = pytest.importorskip("datasets")

SPEC = os.path.join(REPO, "experiments", "easy_to_hard.py:real")


def _words(rng, n):
    return " ".join(f"w{i}" for i in rng.integers(10, 26, n))


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("real")
    out = write_real_world(root)
    rng = np.random.default_rng(0)
    rows = []
    for i in range(16):
        k = int(rng.integers(1, 4))
        rows.append({"prompt": [{"role": "user", "content": _words(rng, 3)}],
                     "completions": [_words(rng, 2) for _ in range(k)],
                     "labels": [bool(x) for x in rng.random(k) < 0.6],
                     "answer": f"w{int(rng.integers(10, 26))}"})
    datasets.Dataset.from_list(rows).save_to_disk(str(root / "steps"))
    out["steps"] = str(root / "steps")
    return out


@pytest.mark.slow  # an end-to-end :real run (system tier)
def test_real_trains_a_prm_and_reports_weighted_voting(world, tmp_path):
    summary = run_real("easy_to_hard", world, tmp_path, "steps", "--config.data.max_length=24",
                       "--config.data.max_steps=3", "--config.data.step_separator= w0",
                       "--config.prm.train.steps=2", "--config.prm.train.batch_size=4",
                       "--config.prm.train.eval_every=1", "--config.prm.train.progress=False",
                       "--config.vote.num_samples=2", "--config.vote.max_new_tokens=4",
                       "--config.vote.max_prompt_length=12", "--config.vote.answer_marker=w9")
    assert summary["claims"] == []
    m = {k: v["mean"] for k, v in summary["results"]["default"]["metrics"].items()}
    for split in ("val", "test"):
        assert np.isfinite(m[f"{split}_loss"]) and m[f"{split}_loss"] > 0
        for key in ("step_accuracy", "majority_accuracy", "prm_vote_accuracy",
                    "prm_best_of_n_accuracy", "coverage_accuracy", "sample_accuracy"):
            assert 0.0 <= m[f"{split}_{key}"] <= 1.0, (split, key)
        assert m[f"{split}_prm_vote_accuracy"] <= m[f"{split}_coverage_accuracy"]
    assert m["prm_chosen_step"] in (1.0, 2.0) and np.isfinite(m["test_loss_last_step"])
    run = tmp_path / "easy_to_hard" / "default" / "seed_0"
    with open(run / "selection.json") as f:
        selection = json.load(f)
    assert selection["metric"] == "eval/val_loss" and not selection["maximize"]
    assert set(selection["scores"]) == {"step=1", "step=2"}


def test_step_rows_by_hand(world):
    from alignax.algorithms import real
    from alignax.data.hf_datasets import PromptRecord

    module = experiment.load_module(SPEC.rsplit(":", 1)[0])
    config = module.get_config("real")
    with config.unlocked():
        config.model.path = world["lm"]
    tok = real.tokenizer(config)
    record = PromptRecord("w1", {"completions": ["w3 w4", "w5", "w6 w7 w8"],
                                 "labels": [True, False, True]})
    row = module.step_rows(record, tok, max_length=9, max_steps=4, separator=" w0")
    # no chat messages: bos (none in this tokenizer) + "w1", then each step + " w0"
    ids = [tok.encode(w)[0] for w in "w1 w3 w4 w0 w5 w0".split()]
    assert row["ids"][:6].tolist() == ids and row["mask"].tolist() == [True] * 6 + [False] * 3
    # the third step (4 tokens) does not fit in 9: dropped, unlabelled
    assert row["pos"].tolist() == [3, 5, -1, -1] and row["labels"].tolist() == [1, 0, 0, 0]
    assert row["lmask"].tolist() == [1, 1, 0, 0]
    with pytest.raises(Exception, match="one 0/1 label per step"):
        module.step_rows(PromptRecord("w1", {"completions": ["w2"], "labels": [1, 0]}), tok,
                         max_length=9, max_steps=4, separator=" w0")


@pytest.mark.parametrize("override, message", [
    ("--config.vote.aggregation=max", "vote.aggregation='max' must be one of"),
    ("--config.data.max_steps=0", "data.max_steps=0 must be >= 1"),
    ("--config.prm.optimizer.name=adamz", "prm config"),
])
def test_real_config_errors_are_one_line(world, tmp_path, capsys, override, message):
    argv = ["run", SPEC, "--workdir", str(tmp_path / "x"), f"--config.model.path={world['lm']}",
            f"--config.data.path={world['steps']}", override]
    assert cli.main(argv) != 0
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert cli.main(["run", SPEC, "--workdir", str(tmp_path / "y")]) != 0
    assert "model.path is required by the :real config" in capsys.readouterr().err
