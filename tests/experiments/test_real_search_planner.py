"""search_planner's `:real` config: GRPO through the retrieval environment from the tiny random
Qwen2-style checkpoint (tests/experiments write_real_world), on questions and a corpus written
here; plus its BM25 retriever, the environment's call syntax and the config's one-line
errors."""

import json
import os

import numpy as np
import pytest

from alignax import cli
from alignax.experiment import load_module
from tests.experiments import REPO, run_real, write_real_world

datasets = pytest.importorskip("datasets")

SPEC = os.path.join(REPO, "experiments", "search_planner.py:real")
# the tiny tokenizer knows only w0..w25 (whitespace-split words, decoded joined by spaces): the
# tool syntax is made of words, "w1" (also inside w10..w19) opening a call and "w2" (also inside
# w20..w25) closing it, so that the random planner's turns often hold calls
TOOL = ["--config.tool.call_open=w1", "--config.tool.call_close=w2",
        "--config.tool.result_open=w10", "--config.tool.result_close=w11"]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("real_search")
    out = write_real_world(root)
    rng = np.random.default_rng(1)
    datasets.Dataset.from_list([
        {"prompt": [{"role": "user", "content": " ".join(f"w{i}" for i in rng.integers(0, 8, 3))}],
         "answer": f"w{int(rng.integers(12, 20))}"} for _ in range(16)]
    ).save_to_disk(str(root / "questions"))
    datasets.Dataset.from_list([
        {"text": " ".join(f"w{i}" for i in rng.integers(0, 26, 4))} for _ in range(12)]
    ).save_to_disk(str(root / "corpus"))
    out["questions"], out["corpus"] = str(root / "questions"), str(root / "corpus")
    return out


def _module():
    return load_module(os.path.join(REPO, "experiments", "search_planner.py"))


def test_bm25_and_the_search_environment():
    mod = _module()
    texts = ["the cat sat", "a dog and a cat", "dogs bark loudly", "cat cat cat"]
    bm25 = mod.Bm25(texts)
    # "cat": the shortest, densest document first; no positive score, no document
    assert bm25.search("cat", 2) == [3, 0]
    assert bm25.search("Dog!", 5) == [1] and bm25.search("zebra", 3) == []
    # the scores against a direct transcription of the formula
    k1, b = 1.2, 0.75
    docs = [bm25.tokens(t) for t in texts]
    avg = np.mean([len(d) for d in docs])

    def score(q, d):
        out = 0.0
        for t in bm25.tokens(q):
            df = sum(t in x for x in docs)
            tf = d.count(t)
            if tf:
                idf = np.log(1 + (len(docs) - df + 0.5) / (df + 0.5))
                out += idf * tf * (k1 + 1) / (tf + k1 * (1 - b + b * len(d) / avg))
        return out

    q = "a cat and dogs"
    naive = np.array([score(q, d) for d in docs])
    assert bm25.search(q, 4) == [int(i) for i in np.lexsort((np.arange(4), -naive))
                                 if naive[i] > 0]

    cfg = mod.get_config("real")
    env = mod.search_env(bm25, texts, cfg.tool, 1)
    assert env(0, "I know: 42") is None
    assert env(0, "<search>dog</search>") == "<result>\na dog and a cat\n</result>"
    # the last complete call counts; an unclosed one is no call
    assert env(3, "<search>cat</search> <search>bark</search>") == (
        "<result>\ndogs bark loudly\n</result>")
    assert env(1, "<search>cat") is None
    assert env(1, "<search>zebra</search>") == "<result>\n</result>"


def test_real_config_errors(world, tmp_path, capsys):
    base = ["run", SPEC, "--workdir", str(tmp_path / "a"), f"--config.model.path={world['lm']}",
            f"--config.data.path={world['questions']}"]
    assert cli.main(base) != 0
    err = capsys.readouterr().err
    assert "corpus.path is required by the :real config" in err and len(err.splitlines()) == 1
    assert cli.main(base + [f"--config.corpus.path={world['corpus']}",
                            "--config.tool.max_tool_calls=0"]) != 0
    assert "tool.max_tool_calls=0 must be an int >= 1" in capsys.readouterr().err
    assert cli.main(base + [f"--config.corpus.path={world['corpus']}",
                            "--config.reward.alpha=-1.0"]) != 0
    assert "reward.alpha=-1.0 must be >= 0" in capsys.readouterr().err


@pytest.mark.slow  # an end-to-end :real run (system tier)
def test_search_planner_real(world, tmp_path):
    summary = run_real(
        "search_planner", world, tmp_path, "questions", f"--config.corpus.path={world['corpus']}",
        "--config.corpus.top_k=2", "--config.data.max_length=12", *TOOL,
        "--config.tool.max_tool_calls=2", "--config.tool.turn_tokens=6",
        "--config.tool.max_observation_tokens=6", "--config.reward.alpha=0.1",
        *[f"--config.grpo.{k}" for k in ("iterations=2", "prompts_per_iteration=2",
                                         "num_samples=2", "eval_every=1", "kl_coef=0.04",
                                         "progress=False")])
    assert summary["claims"] == []
    m = {k: v["mean"] for k, v in summary["results"]["default"]["metrics"].items()}
    for split in ("val", "test"):
        assert 0 <= m[f"{split}_accuracy"] <= 1 and 0 <= m[f"{split}_calls"] <= 2
        assert m[f"{split}_reward"] == pytest.approx(
            m[f"{split}_accuracy"] - 0.1 * m[f"{split}_calls"], abs=1e-6)
    assert 0 <= m["test_ref_calls"] <= 2 and m["chosen_iteration"] in (1.0, 2.0)
    run = tmp_path / "search_planner" / "default" / "seed_0"
    with open(run / "selection.json") as f:
        assert json.load(f)["metric"] == "eval/val_reward"
    rows = [json.loads(line) for line in open(run / "grpo" / "metrics.jsonl")]
    assert len(rows) == 2 and all(np.isfinite(r["reward"]) for r in rows)
    # R = 3 turns of 6 tokens and 2 observations of <= 6: at most 18 policy tokens a row
    assert all(0 < r["response_length"] <= 18 for r in rows)
    # the sampled trajectories called the environment: the utility is >= 0, so a negative mean
    # reward needs calls (with these seeds, 1 and 3 calls among the iterations' 4 rows each)
    assert min(r["reward"] for r in rows) < 0
