"""`alignax eval` scores like RewardBench (rewardbench 0.1.4, `scripts/run_rm.py`).

RewardBench's sequence-classifier path, with transformers as it runs it (rewardbench 0.1.4 pins
transformers 4.51, which cannot be installed next to this venv's transformers 5, so its script is
followed step by step instead of imported): each pair becomes two texts, the conversation
[user: prompt, assistant: response] rendered with the tokenizer's chat template
(`prepare_dialogue_from_tokenizer`, `tokenize=False`); the tokenizer truncates on the left
(`truncation_side = "left"`); a `text-classification` pipeline scores the texts in batches with
`truncation=True, padding=True, max_length=..., function_to_apply="none"` (the raw logit); a pair
is correct when score(chosen) > score(rejected) (a tie is wrong); each subset's accuracy is
correct / total and each section is `calculate_scores_per_section`: the subsets present weighted
by `EXAMPLE_COUNTS` (math-prm counted as 984 = the six code subsets together). The leaderboard's
score is the mean of the four sections. (alignax's EXAMPLE_COUNTS and SECTIONS equal 0.1.4's
constants.py EXAMPLE_COUNTS and SUBSET_MAPPING, checked when this test was written.)

The model is the TRL parity fixtures' tiny random Qwen2ForSequenceClassification with their
word-level tokenizer (Qwen's specials, pad != eos) and Qwen2.5's chat template; the pairs cover
the four sections, with a tie and two pairs longer than max_length (RewardBench keeps their last
tokens: `alignax eval --truncation keep_end`). Per-pair scores agree within 1e-5 (fp32), the
per-subset, per-section and overall scores are equal (==).

Finding (not tested here, the fix is in the model's pooling): RewardBench sets the pad token to
the eos when a tokenizer has none, and transformers' classifier then reads the token before the
trailing eos (the last token that is not the pad id), while `alignax eval` reads the last real
token (see tests/parity/test_trl_reward.py::test_pad_equal_to_eos_pools_like_transformers).
"""

import json

import numpy as np
import pytest

pytest.importorskip("transformers")

import torch  # noqa: E402
import transformers  # noqa: E402

from alignax import cli  # noqa: E402
from alignax.eval.rewardbench import EXAMPLE_COUNTS, SECTIONS  # noqa: E402
from tests.data import QWEN25  # noqa: E402
from tests.parity.trl_fixtures import WORDS, write_checkpoint, write_tokenizer  # noqa: E402

SUBSETS = ("alpacaeval-easy", "mt-bench-med", "mt-bench-hard", "llmbar-adver-neighbor",
           "refusals-dangerous", "xstest-should-respond", "math-prm", "hep-python", "hep-rust")
MAX_LENGTH = 48  # the rendered pairs have 29-44 tokens; the two long ones more


def _rows():
    rng = np.random.default_rng(1)
    sentence = lambda lo, hi: " ".join(rng.choice(WORDS[:-14], int(rng.integers(lo, hi))))  # noqa: E731
    rows = [{"prompt": sentence(2, 7), "chosen": sentence(1, 9), "rejected": sentence(1, 9),
             "subset": s, "id": 10 * i + j} for i, s in enumerate(SUBSETS) for j in range(3)]
    rows[4]["rejected"] = rows[4]["chosen"]  # a tie: wrong in both
    rows[7]["chosen"] = sentence(28, 29)  # longer than max_length: truncated on the left
    rows[13]["rejected"] = sentence(32, 33)
    return rows


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("rewardbench")
    tokenizer = write_tokenizer(root / "tokenizer", chat_template=QWEN25)
    write_checkpoint(root / "rm", tokenizer, seed=0, kind="reward")
    data = root / "rewardbench.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in _rows()))
    return root, data


def _rewardbench(root, rows, *, batch_size):
    """Scores, per-subset accuracies, sections and score, the way run_rm.py computes them."""
    # AutoTokenizer of the tokenizer folder (run_rm.py --tokenizer): transformers 5 builds a
    # Qwen2Tokenizer from the model folder's config.json, which does not fit this word-level one
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(root / "tokenizer"))
    tokenizer.truncation_side = "left"
    model = transformers.AutoModelForSequenceClassification.from_pretrained(
        str(root / "rm"), dtype=torch.float32)
    pipe = transformers.pipeline("text-classification", model=model, tokenizer=tokenizer)
    if pipe.tokenizer.pad_token_id is None:
        pipe.model.config.pad_token_id = pipe.tokenizer.eos_token_id
        pipe.tokenizer.pad_token_id = pipe.tokenizer.eos_token_id
    if pipe.model.config.pad_token_id is None:
        pipe.model.config.pad_token_id = pipe.tokenizer.pad_token_id
    texts = {side: [tokenizer.apply_chat_template(
        [{"role": "user", "content": r["prompt"]}, {"role": "assistant", "content": r[side]}],
        tokenize=False) for r in rows] for side in ("chosen", "rejected")}
    kwargs = {"batch_size": batch_size, "truncation": True, "padding": True,
              "max_length": MAX_LENGTH, "function_to_apply": "none",
              "return_token_type_ids": False}
    rejected = [r["score"] for r in pipe(texts["rejected"], **kwargs)]
    chosen = [r["score"] for r in pipe(texts["chosen"], **kwargs)]
    results = [1 if c > r else 0 for c, r in zip(chosen, rejected)]
    subsets = [r["subset"] for r in rows]
    grouped = {}
    for subset in np.unique(subsets):
        picked = [x for x, s in zip(results, subsets) if s == subset]
        grouped[str(subset)] = sum(picked) / len(picked)
    sections = {}  # calculate_scores_per_section(EXAMPLE_COUNTS, SUBSET_MAPPING, grouped)
    for section, tests in SECTIONS.items():
        total_weighted, total = 0, 0
        for test in tests:
            if test in grouped:
                total_weighted += grouped[test] * EXAMPLE_COUNTS[test]
                total += EXAMPLE_COUNTS[test]
        sections[section] = total_weighted / total if total > 0 else 0
    n_long = sum(len(tokenizer(t)["input_ids"]) > MAX_LENGTH for t in texts["chosen"]
                 + texts["rejected"])
    return {"chosen": chosen, "rejected": rejected, "subsets": grouped, "sections": sections,
            "score": sum(sections.values()) / len(sections), "n_long": n_long}


def test_alignax_eval_scores_like_rewardbench(setup, tmp_path):
    root, data = setup
    rows = _rows()
    theirs = _rewardbench(root, rows, batch_size=4)
    assert theirs["n_long"] == 2  # the two long pairs are truncated
    code = cli.main(["eval", "--model", str(root / "rm"), "--data", str(data), "--tokenizer",
                     str(root / "tokenizer"), "--max-length", str(MAX_LENGTH), "--batch-size",
                     "6", "--truncation", "keep_end", "--json", str(tmp_path / "r.json"),
                     "--scores", str(tmp_path / "s.json")])
    assert code == 0
    ours = json.loads((tmp_path / "r.json").read_text())
    scores = json.loads((tmp_path / "s.json").read_text())
    np.testing.assert_allclose(scores["chosen_scores"], theirs["chosen"], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(scores["rejected_scores"], theirs["rejected"], rtol=1e-5,
                               atol=1e-5)
    # the pairs are decided alike (no pair closer than the score error, so the accuracies
    # compare exactly)
    margins = np.abs(np.subtract(theirs["chosen"], theirs["rejected"]))
    assert np.sort(margins)[1] > 1e-4  # one tie (margin 0), then clear margins
    assert {s: v["accuracy"] for s, v in ours["subsets"].items()} == theirs["subsets"]
    assert ours["sections"] == theirs["sections"]
    assert ours["score"] == theirs["score"]
    assert ours["subsets"]["mt-bench-med"]["ties"] == 1


def test_pad_equal_to_eos_scores_like_rewardbench_with_pool_last_non_pad(setup, tmp_path):
    """A checkpoint whose pad id is its eos (RewardBench's fallback for a tokenizer without a
    pad token): on the ids `alignax eval` scores (`[bos] + prompt + response + [eos]`, plain
    text), transformers' classifier with pad == eos reads the token before the trailing eos;
    `--pool last_non_pad` reads that token too, the default `--pool last` reads the eos."""
    import shutil

    from alignax.data.readers import PreferenceRecord
    from alignax.data.tokenize import tokenize_pair
    from alignax.data.tokenizers import HFTokenizer

    root, _ = setup
    rm = tmp_path / "rm"
    shutil.copytree(root / "rm", rm)
    config = json.loads((rm / "config.json").read_text())
    ours_tok = HFTokenizer.from_file(str(root / "tokenizer"))
    config["pad_token_id"] = ours_tok.eos_id
    (rm / "config.json").write_text(json.dumps(config))
    rows = _rows()[:6]
    data = tmp_path / "eos.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    model = transformers.AutoModelForSequenceClassification.from_pretrained(str(rm),
                                                                            dtype=torch.float32)
    theirs = {"chosen": [], "rejected": []}
    for r in rows:
        pair = tokenize_pair(PreferenceRecord(prompt=r["prompt"], chosen=r["chosen"],
                                              rejected=r["rejected"]), ours_tok,
                             max_length=MAX_LENGTH, use_chat_template=False)
        for side in ("chosen", "rejected"):
            ids = pair[f"{side}_ids"][pair[f"{side}_mask"].astype(bool)]
            assert ids[-1] == ours_tok.eos_id
            # right-padded with the eos as RewardBench pads when pad == eos
            padded = np.full((1, MAX_LENGTH), ours_tok.eos_id)
            padded[0, :len(ids)] = ids
            mask = np.zeros_like(padded)
            mask[0, :len(ids)] = 1
            with torch.no_grad():
                logit = model(input_ids=torch.tensor(padded),
                              attention_mask=torch.tensor(mask)).logits[0, 0]
            theirs[side].append(float(logit))
    out = {}
    for pool in ("last", "last_non_pad"):
        code = cli.main(["eval", "--model", str(rm), "--data", str(data), "--tokenizer",
                         str(root / "tokenizer"), "--max-length", str(MAX_LENGTH),
                         "--no-chat-template", "--pool", pool, "--scores",
                         str(tmp_path / f"{pool}.json")])
        assert code == 0
        out[pool] = json.loads((tmp_path / f"{pool}.json").read_text())
    for side in ("chosen", "rejected"):
        np.testing.assert_allclose(out["last_non_pad"][f"{side}_scores"], theirs[side],
                                   rtol=1e-5, atol=1e-5)
        assert np.max(np.abs(np.subtract(out["last"][f"{side}_scores"], theirs[side]))) > 1e-3
