"""The `:real` config of experiments/rag_rewardbench.py: the world's tiny reward checkpoint
scores a small RAG pair dataset (documents rendered into the prompt, ChatML template); the
per-subset accuracies are checked against the checkpoint's own scores computed here."""

import json
import os

import numpy as np
import pytest

from alignax import cli
from alignax.algorithms import pretrained
from alignax.data.readers import PreferenceRecord
from alignax.data.tokenize import as_conversation, tokenize_pair
from alignax.eval import rag_bench
from alignax.eval.rewardbench import reward_score_fn
from tests.experiments import REPO, write_real_world

datasets = pytest.importorskip("datasets")

SPEC = os.path.join(REPO, "experiments", "rag_rewardbench.py:real")
TEMPLATE = "{documents} {query}"


def _words(rng, n):
    return " ".join(f"w{i}" for i in rng.integers(0, 26, n))


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("rag")
    out = write_real_world(root)
    rng = np.random.default_rng(7)
    rows = [{"question": _words(rng, 3), "documents": [_words(rng, 2) for _ in range(1 + i % 3)],
             "chosen": _words(rng, 2), "rejected": _words(rng, 2),
             "subset": rag_bench.SUBSETS[i % 4]} for i in range(12)]
    datasets.Dataset.from_list(rows).save_to_disk(str(root / "rag"))
    out["rag"] = str(root / "rag")
    return out


def _args(world, tmp_path, *extra):
    return ["run", SPEC, "--workdir", str(tmp_path / "run"), f"--config.model.path={world['rm']}",
            f"--config.data.path={world['rag']}", "--config.fields.query=question",
            f"--config.render.template={TEMPLATE}", "--config.render.document_template={document}",
            "--config.data.max_length=32", "--config.eval.num_resamples=100", *extra]


def _direct_correct(world):
    """1[score(chosen) > score(rejected)] per row and the subsets, from the checkpoint itself."""
    from alignax.data import HFTokenizer

    tok = HFTokenizer.from_file(world["rm"])
    model, params = pretrained.load_pretrained({"path": world["rm"]}, "reward")
    score = reward_score_fn(model, params)
    correct, subsets = [], []
    for row in datasets.load_from_disk(world["rag"]):
        prompt = " ".join(row["documents"]) + " " + row["question"]
        record = as_conversation(PreferenceRecord(prompt, row["chosen"], row["rejected"]))
        pair = tokenize_pair(record, tok, max_length=32)
        ids = np.stack([pair["chosen_ids"], pair["rejected_ids"]])
        mask = np.stack([pair["chosen_mask"], pair["rejected_mask"]])
        s = np.asarray(score(ids, mask))
        correct.append(bool(s[0] > s[1]))
        subsets.append(row["subset"])
    return np.array(correct), np.array(subsets)


@pytest.mark.slow  # an end-to-end :real run (system tier)
def test_rag_rewardbench_real(world, tmp_path):
    assert cli.main(_args(world, tmp_path, "--config.data.eval_batch_size=3")) == 0
    with open(tmp_path / "run" / "summary.json") as f:
        summary = json.load(f)
    assert summary["claims"] == []
    m = {k: v["mean"] for k, v in summary["results"]["default"]["metrics"].items()}
    correct, subsets = _direct_correct(world)
    assert 0 < correct.mean() < 1  # the tiny random RM is neither always right nor wrong
    assert m["test_accuracy"] == pytest.approx(correct.mean())
    for name in rag_bench.SUBSETS:
        assert m[f"test_acc_{name}"] == pytest.approx(correct[subsets == name].mean()), name
        assert m[f"test_acc_{name}_pairs"] == 3.0
        assert m[f"test_acc_{name}_ci_low"] <= m[f"test_acc_{name}"] <= m[
            f"test_acc_{name}_ci_high"]
    assert m["test_subset_mean"] == pytest.approx(np.mean(
        [correct[subsets == s].mean() for s in rag_bench.SUBSETS]))
    with open(tmp_path / "run" / "default" / "seed_0" / "rag_bench.json") as f:
        assert json.load(f)["num_pairs"] == 12
    assert "mean over subsets" in (tmp_path / "run" / "default" / "seed_0" /
                                   "rag_bench.txt").read_text()


def test_rag_rewardbench_real_errors(world, tmp_path, capsys):
    base = ["run", SPEC, "--workdir", str(tmp_path / "a"), f"--config.model.path={world['rm']}"]
    assert cli.main(base) != 0
    err = capsys.readouterr().err
    assert "data.path is required by the :real config" in err and len(err.splitlines()) == 1
    assert cli.main(_args(world, tmp_path, "--config.render.chat=maybe")) != 0
    err = capsys.readouterr().err
    assert "render.chat='maybe'" in err and len(err.splitlines()) == 1
    assert cli.main(_args(world, tmp_path, "--config.render.template={documents}")) != 0
    assert "must contain {query}" in capsys.readouterr().err
