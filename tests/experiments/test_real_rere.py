"""experiments/rere.py:real on the tiny world of the `:real` tests: GRPO with the trie-constrained
beam-search rollout and ReRe's reward from a tiny random checkpoint, on a catalogue of titles and
histories whose target is one of them; held-out HR@K / NDCG@K before and at the iteration chosen
on validation; the one-line config errors."""

import json

import numpy as np
import pytest

from tests.experiments import REPO, run_real, write_real_world

datasets = pytest.importorskip("datasets")

TITLES = ["w1 w2", "w1 w3", "w1 w2 w4", "w5", "w6 w7", "w6", "w8 w9 w10", "w11 w12",
          "w13", "w14 w15", "w16", "w17 w18 w19", "w20 w21", "w22", "w23 w24", "w25 w1"]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("real")
    out = write_real_world(root)
    datasets.Dataset.from_list([{"title": t} for t in TITLES]).save_to_disk(
        str(root / "catalogue"))
    rng = np.random.default_rng(0)
    rows = []
    for _ in range(16):
        history = ", ".join(TITLES[i] for i in rng.integers(0, len(TITLES), 3))
        rows.append({"prompt": [{"role": "user", "content": history}],
                     "target": TITLES[int(rng.integers(0, len(TITLES)))]})
    datasets.Dataset.from_list(rows).save_to_disk(str(root / "histories"))
    out["catalogue"], out["histories"] = str(root / "catalogue"), str(root / "histories")
    return out


SMALL = ("--config.data.max_length=16", "--config.rl.iterations=2",
         "--config.rl.prompts_per_iteration=2", "--config.rl.num_samples=4",
         "--config.rl.eval_every=1", "--config.rl.progress=False", "--config.eval.beams=4",
         "--config.eval.k=2", "--config.rl.optimizer.learning_rate=0.01")


@pytest.mark.slow  # an end-to-end :real run (system tier)
def test_rere_real_reports_held_out_ranking_before_and_after(world, tmp_path):
    summary = run_real("rere", world, tmp_path, "histories",
                       f"--config.data.catalog_path={world['catalogue']}", *SMALL)
    assert summary["claims"] == []
    m = {k: v["mean"] for k, v in summary["results"]["default"]["metrics"].items()}
    for split in ("val", "test"):
        for who in ("ref", "rere"):
            hr, ndcg = m[f"{split}_{who}_hr2"], m[f"{split}_{who}_ndcg2"]
            assert 0.0 <= ndcg <= hr <= 1.0, (split, who)
    assert m["rere_chosen_iteration"] in (1.0, 2.0)
    # title tokens + eos: the longest title has 3 words
    assert m["catalogue_items"] == len(TITLES) and m["item_max_tokens"] == 4
    # ReRe's rewards lie in [-1, 1] (a hit 1, a penalised negative in [-1, 0))
    assert -1.0 <= m["train_reward_first"] <= 1.0
    run = tmp_path / "rere" / "default" / "seed_0"
    with open(run / "selection.json") as f:
        selection = json.load(f)
    assert selection["metric"] == "eval/val_ndcg2"
    assert set(selection["scores"]) == {"iteration=1", "iteration=2"}
    with open(run / "rere" / "metrics.jsonl") as f:
        rows = [json.loads(line) for line in f]
    # every rollout is a group of 4 beams of 4 tokens (the responses: title tokens + eos)
    assert [r["response_length"] for r in rows if "response_length" in r]
    assert all(0 < r["response_length"] <= 4 for r in rows if "response_length" in r)


def _err(world, tmp_path, capsys, *overrides):
    from alignax import cli

    spec = f"{REPO}/experiments/rere.py:real"
    code = cli.main(["run", spec, "--workdir", str(tmp_path / "bad"),
                     f"--config.model.path={world['lm']}", *overrides])
    err = capsys.readouterr().err.strip()
    assert code != 0
    return err


def test_rere_real_config_errors_are_one_line(world, tmp_path, capsys):
    err = _err(world, tmp_path, capsys, f"--config.data.path={world['histories']}")
    assert "data.catalog_path is required by the :real config" in err
    assert len(err.splitlines()) == 1
    err = _err(world, tmp_path, capsys, f"--config.data.path={world['histories']}",
               f"--config.data.catalog_path={world['catalogue']}", "--config.eval.k=30")
    assert "eval.k=30 must be in [1, eval.beams=20]" in err and len(err.splitlines()) == 1
    # the targets of the prompts dataset of the shared world are not catalogue titles
    err = _err(world, tmp_path, capsys, f"--config.data.path={world['prompts']}",
               f"--config.data.catalog_path={world['catalogue']}",
               "--config.data.target_field=answer", *SMALL)
    assert "is not a title of the catalogue" in err and len(err.splitlines()) == 1
