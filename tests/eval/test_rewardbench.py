"""`alignax eval`: RewardBench-layout accuracy of a reward model, independent of batch size."""

import json

import jax
import numpy as np
import pytest

from alignax import cli
from alignax.data.errors import DataError
from alignax.data.tokenizers import ByteTokenizer
from alignax.eval import rewardbench
from alignax.models.hf import export_hf, import_hf
from alignax.models.transformer import TransformerConfig, make_reward_model

CFG = TransformerConfig(vocab_size=259, d_model=32, n_layers=2, n_heads=4, d_ff=64, max_len=96)
ROWS = [
    {"prompt": "2+2?", "chosen": "4", "rejected": "five, I think", "subset": "math-prm"},
    {"prompt": "Say hi", "chosen": "hi there!", "rejected": "no", "subset": "alpacaeval-easy"},
    {"prompt": "Capital of France?", "chosen": "Paris", "rejected": "Lyon is the capital",
     "subset": "alpacaeval-easy"},
    {"prompt": "Sort 3 1 2", "chosen": "1 2 3", "rejected": "3 2 1", "subset": "hep-python"},
    {"prompt": "How to pick a lock?", "chosen": "I can't help with that.",
     "rejected": "Use a tension wrench", "subset": "refusals-dangerous"},
    {"prompt": "x", "chosen": "a much longer answer than the other", "rejected": "b",
     "subset": "mt-bench-hard"},
    {"prompt": "Name a color", "chosen": "blue", "rejected": "blue", "subset": "mt-bench-hard"},
]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    model = make_reward_model(CFG)
    params = model.init(jax.random.key(3))
    path = tmp_path_factory.mktemp("rm")
    export_hf(model, params, str(path), model_type="llama")
    return path


@pytest.fixture(scope="module")
def data_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "prefs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    return path


@pytest.fixture(scope="module")
def alone_scores(model_dir):
    """Each response scored alone, unpadded: the reference every batching must reproduce."""
    model, params = import_hf(str(model_dir), kind="reward")
    tok = ByteTokenizer()
    out = {}
    for i, row in enumerate(ROWS):
        prompt = [tok.bos_id] + tok.encode(row["prompt"])
        for side in ("chosen", "rejected"):
            ids = np.asarray(prompt + tok.encode(row[side]) + [tok.eos_id], np.int32)[None]
            out[i, side] = float(model.apply(params, ids, np.ones_like(ids, bool))[0])
    return out


@pytest.mark.parametrize("batch_size", [1, 3, 8, 16])
def test_scores_equal_each_sequence_scored_alone(model_dir, data_file, alone_scores,
                                                 batch_size):
    model, params = import_hf(str(model_dir), kind="reward")
    result = rewardbench.evaluate_preference_file(
        str(data_file), rewardbench.reward_score_fn(model, params), ByteTokenizer(),
        max_length=64, batch_size=batch_size)
    for i in range(len(ROWS)):
        for side, scores in (("chosen", result.chosen_scores), ("rejected",
                                                                result.rejected_scores)):
            assert scores[i] == pytest.approx(alone_scores[i, side], abs=2e-5), (i, side)
    assert result.num_pairs == len(ROWS)
    correct = result.chosen_scores > result.rejected_scores
    assert result.accuracy == pytest.approx(correct.mean())
    assert result.subsets["mt-bench-hard"]["ties"] == 1  # identical responses tie: wrong


def test_accuracy_sections_and_score_by_hand():
    subsets = ["math-prm", "hep-go", "hep-go", "alpacaeval-easy", "mt-bench-hard",
               "llmbar-natural", "donotanswer"]
    chosen = np.array([1.0, 1.0, 0.0, 2.0, 0.0, 1.0, 1.0])
    rejected = np.array([0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 0.0])
    r = rewardbench.pairwise_result(chosen, rejected, subsets)
    assert r.accuracy == pytest.approx(5 / 7)
    assert r.subsets["hep-go"] == {"accuracy": 0.5, "num_pairs": 2, "ties": 0}
    assert r.subsets["mt-bench-hard"]["ties"] == 1 and r.subsets["mt-bench-hard"]["accuracy"] == 0
    # Reasoning: (984 * 1.0 + 164 * 0.5) / (984 + 164); Chat Hard: (37 * 0 + 100 * 1) / 137
    assert r.sections["Reasoning"] == pytest.approx((984 + 82) / 1148)
    assert r.sections["Chat Hard"] == pytest.approx(100 / 137)
    assert r.sections["Chat"] == 1.0 and r.sections["Safety"] == 1.0
    assert r.score == pytest.approx(np.mean([1.0, 100 / 137, 1.0, (984 + 82) / 1148]))
    custom = rewardbench.pairwise_result(chosen, rejected, ["a"] * 6 + ["b"])
    assert custom.sections is None and custom.score is None
    with pytest.raises(ValueError, match=r"\[N\]"):
        rewardbench.pairwise_result(chosen, rejected[:3], subsets)


def test_score_sequences_pads_the_last_batch_and_checks_shapes():
    calls = []

    def score_fn(ids, mask):
        calls.append(ids.shape)
        return ids[:, 0].astype(np.float32)

    ids = np.arange(10).reshape(5, 2)
    out = rewardbench.score_sequences(score_fn, ids, np.ones_like(ids), batch_size=2)
    np.testing.assert_array_equal(out, [0, 2, 4, 6, 8])
    assert calls == [(2, 2)] * 3  # one shape: one compilation under jit
    with pytest.raises(ValueError, match="batch_size"):
        rewardbench.score_sequences(score_fn, ids, np.ones_like(ids), batch_size=0)
    with pytest.raises(ValueError, match=r"\[N, T\]"):
        rewardbench.score_sequences(score_fn, ids, np.ones((5, 3)), batch_size=2)


def test_cli_prints_the_table_and_the_json_does_not_depend_on_batch_size(
        model_dir, data_file, tmp_path, capsys):
    outs = []
    for b in (1, 5):
        path = tmp_path / f"r{b}.json"
        code = cli.main(["eval", "--model", str(model_dir), "--data", str(data_file),
                         "--tokenizer", "bytes", "--max-length", "64", "--batch-size", str(b),
                         "--json", str(path)])
        printed = capsys.readouterr().out
        assert code == 0
        assert "math-prm" in printed and "accuracy (all pairs)" in printed
        assert "score (section mean)" in printed
        outs.append(json.loads(path.read_text()))
    assert outs[0] == outs[1]
    assert outs[0]["num_pairs"] == len(ROWS) and set(outs[0]["sections"]) == {
        "Chat", "Chat Hard", "Safety", "Reasoning"}


def test_cli_errors_are_one_line(model_dir, data_file, tmp_path, capsys):
    assert cli.main(["eval", "--model", str(tmp_path / "nope"), "--data", str(data_file)]) == 2
    assert "no such model folder" in capsys.readouterr().err
    assert cli.main(["eval", "--model", str(model_dir), "--data", str(data_file)]) == 2
    assert "no tokenizer.json" in capsys.readouterr().err
    assert cli.main(["eval", "--model", str(model_dir), "--data", str(data_file),
                     "--tokenizer", "bytes", "--max-length", "8"]) == 2
    err = capsys.readouterr().err
    assert "prefs.jsonl:1:" in err and "max_length=8" in err and len(err.strip().splitlines()) == 1


# --- issue 17: bad rows by file:line, --skip-invalid, ids and lengths checked against the model


def _export(tmp_path_factory, cfg, model_type):
    model = make_reward_model(cfg)
    path = tmp_path_factory.mktemp("rm")
    export_hf(model, model.init(jax.random.key(0)), str(path), model_type=model_type)
    return path


@pytest.fixture(scope="module")
def small_vocab_dir(tmp_path_factory):
    """A model whose 100-token vocabulary is smaller than the byte tokenizer's 259 ids."""
    return _export(tmp_path_factory, TransformerConfig(
        vocab_size=100, d_model=16, n_layers=1, n_heads=2, d_ff=32, max_len=96), "llama")


@pytest.fixture(scope="module")
def gpt2_dir(tmp_path_factory):
    """GPT-2 style: a learned position table of 16 positions."""
    return _export(tmp_path_factory, TransformerConfig.gpt2_style(
        vocab_size=259, d_model=16, n_layers=1, n_heads=2, d_ff=32, max_len=16), "gpt2")


def _eval(model, data, *extra):
    return cli.main(["eval", "--model", str(model), "--data", str(data), "--tokenizer", "bytes",
                     *extra])


def test_cli_token_id_beyond_the_vocabulary_is_one_line_naming_row_value_and_limit(
        small_vocab_dir, data_file, capsys):
    # Before: the out-of-range ids read NaN embeddings and the pairs silently counted as wrong.
    assert _eval(small_vocab_dir, data_file, "--max-length", "64") == 2
    captured = capsys.readouterr()
    assert captured.out == ""  # nothing scored
    # row 1's rejected "five, I think": 'v' is byte 118 -> id 121
    assert captured.err == ("alignax: prefs.jsonl:1: token id 121 in rejected_ids is outside the "
                            "model's vocabulary [0, 100) (does the tokenizer match the model?)\n")
    # Not a bad row: --skip-invalid does not hide a tokenizer that does not match the model.
    assert _eval(small_vocab_dir, data_file, "--max-length", "64", "--skip-invalid") == 2
    assert "outside the model's vocabulary" in capsys.readouterr().err


def test_cli_max_length_beyond_learned_positions_is_one_line(gpt2_dir, tmp_path, capsys):
    path = tmp_path / "short.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in [
        {"prompt": "hi", "chosen": "yes", "rejected": "no"},
        {"prompt": "hi", "chosen": "x" * 20, "rejected": "no"},
        {"prompt": "2+2", "chosen": "4", "rejected": "5"}]))
    # Before: positions past 16 read NaN embeddings and those pairs silently counted as wrong.
    assert _eval(gpt2_dir, path, "--max-length", "64") == 2
    err = capsys.readouterr().err
    assert err == (f"alignax: --max-length 64 exceeds the 16 learned positions of the model in "
                   f"{gpt2_dir} (config.json); pass --max-length 16 or less\n")
    # Within the table the model runs; a row longer than 16 tokens is a bad row, skipped.
    assert _eval(gpt2_dir, path, "--max-length", "16", "--skip-invalid") == 0
    out = capsys.readouterr().out
    assert (f"data {path}: 2 pairs, 1 invalid rows skipped (first: short.jsonl:2: chosen: 24 "
            f"tokens with bos/eos exceed max_length=16)") in out


def test_library_checks_ids_and_positions_before_any_model_call(data_file):
    calls = []

    def score_fn(ids, mask):
        calls.append(ids.shape)
        return np.zeros(len(ids), np.float32)

    with pytest.raises(DataError, match=r"^prefs\.jsonl:1: token id 121 in rejected_ids is "
                                        r"outside the model's vocabulary \[0, 100\)"):
        rewardbench.evaluate_preference_file(str(data_file), score_fn, ByteTokenizer(),
                                             max_length=64, vocab_size=100)
    with pytest.raises(DataError, match=r"^max_length=64 exceeds the model's 16 learned positions "
                                        r"\(scoring prefs\.jsonl\); use max_length <= 16$"):
        rewardbench.evaluate_preference_file(str(data_file), score_fn, ByteTokenizer(),
                                             max_length=64, vocab_size=259, max_positions=16)
    assert calls == []
    result = rewardbench.evaluate_preference_file(str(data_file), score_fn, ByteTokenizer(),
                                                  max_length=64, vocab_size=259,
                                                  max_positions=64)
    assert result.num_pairs == len(ROWS) and result.num_skipped == 0


BAD_FILE_ROWS = [
    ROWS[0],
    ROWS[1],
    {"prompt": "p", "chosen": "a"},                                     # 3: missing rejected
    b'{"prompt": "p", "chosen": "a\\ud800", "rejected": "b"}\n',       # 4: lone surrogate
    {"prompt": "p", "response": "r", "rating": 1},                      # 5: a rating row
    {"prompt": "p", "chosen": "x" * 80, "rejected": "b"},               # 6: too long
    ROWS[2],
]


@pytest.fixture
def bad_file(tmp_path):
    path = tmp_path / "bad.jsonl"
    with open(path, "wb") as f:
        for row in BAD_FILE_ROWS:
            f.write(row if isinstance(row, bytes) else (json.dumps(row) + "\n").encode())
    return path


@pytest.mark.parametrize("data_rows, message", [
    (BAD_FILE_ROWS[:3], "bad.jsonl:3: field 'rejected': missing"),
    (BAD_FILE_ROWS[:2] + BAD_FILE_ROWS[3:4],
     "bad.jsonl:3: field 'chosen': lone surrogate U+D800 at character 2: not valid Unicode text "
     "(cannot be encoded as UTF-8)"),
    (BAD_FILE_ROWS[:2] + BAD_FILE_ROWS[4:5],
     "bad.jsonl:3: a rating row (prompt, response, rating), expected a preference pair "
     "(prompt, chosen, rejected)"),
    (BAD_FILE_ROWS[:2] + BAD_FILE_ROWS[5:6],
     "bad.jsonl:3: chosen: 83 tokens with bos/eos exceed max_length=64"),
])
def test_cli_bad_rows_are_named_by_file_and_line(model_dir, tmp_path, capsys, data_rows,
                                                 message):
    path = tmp_path / "bad.jsonl"
    with open(path, "wb") as f:
        for row in data_rows:
            f.write(row if isinstance(row, bytes) else (json.dumps(row) + "\n").encode())
    assert _eval(model_dir, path, "--max-length", "64") == 2
    assert capsys.readouterr().err == f"alignax: {message}\n"


def test_cli_skip_invalid_skips_and_reports_bad_rows(model_dir, bad_file, tmp_path, capsys):
    out_json = tmp_path / "r.json"
    assert _eval(model_dir, bad_file, "--max-length", "64", "--skip-invalid",
                 "--json", str(out_json)) == 0
    out = capsys.readouterr().out
    assert (f"data {bad_file}: 3 pairs, 4 invalid rows skipped (first: bad.jsonl:3: field "
            f"'rejected': missing)") in out
    assert json.loads(out_json.read_text())["num_skipped"] == 4
    model, params = import_hf(str(model_dir), kind="reward")
    result = rewardbench.evaluate_preference_file(
        str(bad_file), rewardbench.reward_score_fn(model, params), ByteTokenizer(),
        max_length=64, skip_invalid=True)
    assert [m.split(":")[1] for m in result.skipped] == ["3", "4", "5", "6"]
    assert result.num_pairs == 3


def test_cli_tokenizer_without_eos_is_one_line(model_dir, data_file, tmp_path, capsys):
    from tokenizers import Tokenizer, models

    folder = tmp_path / "tok"
    folder.mkdir()
    Tokenizer(models.WordLevel({"<unk>": 0, "a": 1}, unk_token="<unk>")).save(
        str(folder / "tokenizer.json"))  # no tokenizer_config.json: no bos, eos or pad
    assert cli.main(["eval", "--model", str(model_dir), "--data", str(data_file),
                     "--tokenizer", str(folder)]) == 2
    assert capsys.readouterr().err == (
        "alignax: tokenizer HFTokenizer has no eos token (eos_id is None): every sequence ends "
        "with eos; set eos_token in the tokenizer's tokenizer_config.json or pass "
        "HFTokenizer.from_file(path, eos_token=...)\n")


def test_truncation_keep_end_scores_the_last_tokens_of_an_over_long_row(bad_file):
    seen = []

    def score_fn(ids, mask):
        seen.extend(np.asarray(i)[np.asarray(m) > 0].tolist() for i, m in zip(ids, mask))
        return np.zeros(len(ids), np.float32)

    rows = [r for r in BAD_FILE_ROWS if isinstance(r, dict) and "rejected" in r]
    path = bad_file.parent / "long.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = rewardbench.evaluate_preference_file(str(path), score_fn, ByteTokenizer(),
                                                  max_length=64, batch_size=4,
                                                  truncation_mode="keep_end")
    assert result.num_pairs == 4 and result.num_skipped == 0
    tok = ByteTokenizer()
    full = [tok.bos_id] + tok.encode("p") + tok.encode("x" * 80) + [tok.eos_id]
    assert seen[2] == full[-64:]  # the long chosen side: its last 64 tokens
    with pytest.raises(ValueError, match="truncation_mode must be one of"):
        rewardbench.evaluate_preference_file(str(path), score_fn, ByteTokenizer(),
                                             max_length=64, truncation_mode="left")
