"""Preference/rating readers: formats, and bad input named by file, line and field."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from alignax.data import ByteTokenizer, DataError, PreferenceRecord, RatingRecord, read_preferences

GOOD = {"prompt": "What is 2+2?", "chosen": "4", "rejected": "5", "id": 7}


def _jsonl(tmp_path, rows, name="prefs.jsonl"):
    path = tmp_path / name
    with open(path, "wb") as f:
        for row in rows:
            f.write(row if isinstance(row, bytes) else (json.dumps(row) + "\n").encode())
    return str(path)


def test_string_pairs_and_extras(tmp_path):
    res = read_preferences(_jsonl(tmp_path, [GOOD, {**GOOD, "chosen": "four"}]))
    assert res.records == [PreferenceRecord("What is 2+2?", "4", "5", {"id": 7}),
                           PreferenceRecord("What is 2+2?", "four", "5", {"id": 7})]
    assert res.num_skipped == 0


def test_chat_pairs_implicit_and_explicit_prompt(tmp_path):
    user = {"role": "user", "content": "hi"}
    implicit = {"chosen": [user, {"role": "assistant", "content": "hello!"}],
                "rejected": [user, {"role": "assistant", "content": "go away"}]}
    explicit = {"prompt": [user], "chosen": [{"role": "assistant", "content": "hello!"}],
                "rejected": [{"role": "assistant", "content": "go away"}]}
    res = read_preferences(_jsonl(tmp_path, [implicit, explicit]))
    for rec in res.records:
        assert rec.prompt == "<|user|>\nhi\n<|assistant|>\n"
        assert (rec.chosen, rec.rejected) == ("hello!", "go away")
        assert rec.extras["messages"]["prompt"] == [user]


def test_ratings_single_and_multi_attribute(tmp_path):
    rows = [{"prompt": "p", "response": "r", "rating": 4},
            {"prompt": "p", "response": "r2", "ratings": {"helpfulness": 3.5, "verbosity": 1}}]
    res = read_preferences(_jsonl(tmp_path, rows))
    assert res.records == [RatingRecord("p", "r", {"rating": 4.0}),
                           RatingRecord("p", "r2", {"helpfulness": 3.5, "verbosity": 1.0})]


def test_parquet(tmp_path):
    path = str(tmp_path / "prefs.parquet")
    pq.write_table(pa.Table.from_pylist([GOOD, {**GOOD, "rejected": ""}]), path)
    with pytest.raises(DataError, match=r"prefs.parquet:2: field 'rejected': empty"):
        read_preferences(path)
    res = read_preferences(path, skip_invalid=True)
    assert len(res.records) == 1 and res.num_skipped == 1


@pytest.mark.parametrize("row, message", [
    (b'{"prompt": "p", "chosen": "a", "rejected": \n', r"prefs.jsonl:2: invalid JSON"),
    ({"prompt": "p", "chosen": "a"}, r"prefs.jsonl:2: field 'rejected': missing"),
    ({"prompt": "p", "chosen": 3, "rejected": "b"}, r"prefs.jsonl:2: field 'chosen': expected a "
                                                     r"string, got int"),
    ({"prompt": "p", "chosen": "a", "rejected": "   "}, r"prefs.jsonl:2: field 'rejected': empty"),
    (b'{"prompt": "p", "chosen": "\xff\xfe", "rejected": "b"}\n', r"prefs.jsonl:2: not valid UTF-8"),
    ({"prompt": "p", "chosen": {"x": 1}, "rejected": "b"}, r"field 'chosen': expected a string"),
    ({"prompt": "p", "response": "r", "rating": "high"}, r"field 'rating': expected a number, "
                                                         r"got str"),
    ([1, 2], r"prefs.jsonl:2: expected a JSON object, got list"),
    ({"chosen": [{"role": "user", "content": "q"}, {"role": "assistant", "content": ""}],
      "rejected": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "b"}]},
     r"field 'chosen': empty response"),
])
def test_bad_rows_name_file_line_and_field(tmp_path, row, message):
    path = _jsonl(tmp_path, [GOOD, row, GOOD])
    with pytest.raises(DataError, match=message):
        read_preferences(path)
    res = read_preferences(path, skip_invalid=True)
    assert len(res.records) == 2 and res.num_skipped == 1
    assert res.summary() == "prefs.jsonl: 2 valid rows, 1 skipped"


def test_over_long_sequences_in_characters_and_tokens(tmp_path):
    long = {**GOOD, "chosen": "x" * 50}
    path = _jsonl(tmp_path, [GOOD, long])
    with pytest.raises(DataError, match=r"prefs.jsonl:2: field 'chosen': too long: 62 characters"):
        read_preferences(path, max_length=40)
    tok = ByteTokenizer()
    with pytest.raises(DataError, match=r"too long: 62 tokens"):
        read_preferences(path, max_length=40, tokenize=tok.encode)
    res = read_preferences(path, max_length=40, skip_invalid=True)
    assert res.num_skipped == 1 and len(res.records) == 1


def test_empty_or_all_bad_file_is_an_error(tmp_path):
    with pytest.raises(DataError, match="no valid rows"):
        read_preferences(_jsonl(tmp_path, []))
    with pytest.raises(DataError, match=r"no valid rows .*\(2 skipped\)"):
        read_preferences(_jsonl(tmp_path, [{"x": 1}, {"y": 2}], "bad.jsonl"), skip_invalid=True)
    with pytest.raises(DataError, match="unsupported file type"):
        read_preferences(_jsonl(tmp_path, [GOOD], "prefs.csv"))


def test_byte_tokenizer_round_trip():
    tok = ByteTokenizer()
    ids = tok.encode("héllo ✓", add_bos=True, add_eos=True)
    assert ids[0] == tok.bos_id and ids[-1] == tok.eos_id
    assert max(ids) < tok.vocab_size
    assert tok.decode(ids) == "héllo ✓"
