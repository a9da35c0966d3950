"""Readers: the accepted formats, and bad input named by file, line and field."""

import json
import re

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from alignax.data import (
    ByteTokenizer,
    DataError,
    PreferenceRecord,
    RatingRecord,
    ReadResult,
    read_preferences,
    render_chat,
)

GOOD = {"prompt": "What is 2+2?", "chosen": "4", "rejected": "5"}
USER = {"role": "user", "content": "Hi"}


def _assistant(text):
    return {"role": "assistant", "content": text}


def _write_jsonl(tmp_path, rows, name="prefs.jsonl"):
    """Rows are dicts (JSON-encoded) or raw bytes (written as they are, one line each)."""
    path = tmp_path / name
    with open(path, "wb") as f:
        for row in rows:
            f.write(row if isinstance(row, bytes) else (json.dumps(row) + "\n").encode())
    return str(path)


# --- formats -------------------------------------------------------------------------------


def test_string_pairs_keep_extra_keys_in_extras(tmp_path):
    rows = [{**GOOD, "id": 7, "subset": "math", "margin": 0.5}, {**GOOD, "chosen": "four"}]
    res = read_preferences(_write_jsonl(tmp_path, rows))
    assert isinstance(res, ReadResult)
    assert res.records == [
        PreferenceRecord("What is 2+2?", "4", "5", {"id": 7, "subset": "math", "margin": 0.5}),
        PreferenceRecord("What is 2+2?", "four", "5", {}),
    ]
    assert (res.num_skipped, res.skipped) == (0, [])


def test_chat_pairs_with_implicit_prompt(tmp_path):
    # HH / TRL implicit-prompt style: a multi-turn conversation that differs in the last turn.
    shared = [{"role": "system", "content": "Be brief."}, USER, _assistant("Hello!"),
              {"role": "user", "content": "2+2?"}]
    row = {"chosen": shared + [_assistant("4")], "rejected": shared + [_assistant("5")], "id": 3}
    (rec,) = read_preferences(_write_jsonl(tmp_path, [row])).records
    assert rec.prompt == ("<|system|>\nBe brief.\n<|user|>\nHi\n<|assistant|>\nHello!\n"
                          "<|user|>\n2+2?\n<|assistant|>\n")
    assert (rec.chosen, rec.rejected) == ("4", "5")
    assert rec.extras == {"id": 3, "messages": {"prompt": shared, "chosen": row["chosen"],
                                                "rejected": row["rejected"]}}


def test_chat_pairs_with_explicit_prompt(tmp_path):
    row = {"prompt": [USER], "chosen": [_assistant("Hello!")], "rejected": [_assistant("Go.")]}
    (rec,) = read_preferences(_write_jsonl(tmp_path, [row])).records
    assert rec == PreferenceRecord("<|user|>\nHi\n<|assistant|>\n", "Hello!", "Go.",
                                   {"messages": row})
    assert rec.prompt == render_chat([USER])


def test_ratings_single_and_multi_attribute(tmp_path):
    rows = [{"prompt": "p", "response": "r", "rating": 4, "id": "a"},
            {"prompt": "p", "response": "r2", "ratings": {"helpfulness": 3.5, "verbosity": 1}}]
    res = read_preferences(_write_jsonl(tmp_path, rows))
    assert res.records == [RatingRecord("p", "r", {"rating": 4.0}, {"id": "a"}),
                           RatingRecord("p", "r2", {"helpfulness": 3.5, "verbosity": 1.0}, {})]
    assert (res.num_preferences, res.num_ratings) == (0, 2)


def test_blank_lines_and_bom_are_tolerated_and_lines_still_counted(tmp_path):
    rows = [b"\xef\xbb\xbf" + json.dumps(GOOD).encode() + b"\r\n", b"\n", b"   \n",
            json.dumps({**GOOD, "chosen": 4}).encode() + b"\n"]
    path = _write_jsonl(tmp_path, rows, "bom.json")
    with pytest.raises(DataError, match=r"bom\.json:4: field 'chosen'"):
        read_preferences(path)
    assert len(read_preferences(path, skip_invalid=True).records) == 1


def test_parquet_pairs_chat_and_ratings(tmp_path):
    path = str(tmp_path / "prefs.parquet")
    pq.write_table(pa.Table.from_pylist([{**GOOD, "id": 1}, {**GOOD, "id": 2, "rejected": " "}]),
                   path)
    with pytest.raises(DataError, match=r"prefs\.parquet:2: field 'rejected': empty") as e:
        read_preferences(path)
    assert (e.value.line, e.value.field) == (2, "rejected")
    res = read_preferences(path, skip_invalid=True)
    assert res.records == [PreferenceRecord("What is 2+2?", "4", "5", {"id": 1})]
    assert res.num_skipped == 1

    chat = str(tmp_path / "chat.parquet")
    pq.write_table(pa.Table.from_pylist(
        [{"chosen": [USER, _assistant("a")], "rejected": [USER, _assistant("b")]}]), chat)
    assert read_preferences(chat).records[0].chosen == "a"

    # Mixed formats: the schema has every column, nulls count as absent keys.
    mixed = str(tmp_path / "mixed.parquet")
    schema = pa.schema([(k, pa.string()) for k in ("prompt", "chosen", "rejected", "response")]
                       + [("ratings", pa.struct([("a", pa.float64()), ("b", pa.float64())]))])
    pq.write_table(pa.Table.from_pylist(
        [{"prompt": "p", "response": "r", "ratings": {"a": 1.0, "b": 2.0}}, GOOD,
         {"prompt": "p", "chosen": "c"}], schema=schema), mixed)
    with pytest.raises(DataError, match=r"mixed\.parquet:3: field 'rejected': missing"):
        read_preferences(mixed)
    res = read_preferences(mixed, skip_invalid=True)
    assert res.records == [RatingRecord("p", "r", {"a": 1.0, "b": 2.0}),
                           PreferenceRecord(**GOOD)]


# --- validation: each case raises naming file/line/field, and skip_invalid counts it ---------

BAD_ROWS = [
    pytest.param(b'{"prompt": "p", "chosen": "a", "rejected": \n',
                 r"prefs\.jsonl:2: invalid JSON: Expecting value", id="invalid-json"),
    pytest.param({"prompt": "p", "chosen": "a"},
                 r"prefs\.jsonl:2: field 'rejected': missing", id="missing-rejected"),
    pytest.param({"chosen": "a", "rejected": "b"},
                 r"prefs\.jsonl:2: field 'prompt': missing", id="missing-prompt"),
    pytest.param({"prompt": "p", "text": "t"},
                 r"prefs\.jsonl:2: field 'chosen': missing", id="unknown-format"),
    pytest.param({"prompt": "p", "chosen": 3, "rejected": "b"},
                 r"prefs\.jsonl:2: field 'chosen': expected a string or a list of messages, "
                 r"got int", id="wrong-type"),
    pytest.param({"prompt": 1.5, "chosen": "a", "rejected": "b"},
                 r"prefs\.jsonl:2: field 'prompt': expected a string, got float",
                 id="wrong-type-prompt"),
    pytest.param([1, 2], r"prefs\.jsonl:2: expected a JSON object per line, got list",
                 id="not-an-object"),
    pytest.param({"prompt": "p", "chosen": "", "rejected": "b"},
                 r"prefs\.jsonl:2: field 'chosen': empty", id="empty-response"),
    pytest.param({"prompt": "p", "chosen": "a", "rejected": " \t\n"},
                 r"prefs\.jsonl:2: field 'rejected': empty", id="whitespace-response"),
    pytest.param({"chosen": [USER, _assistant("")], "rejected": [USER, _assistant("b")]},
                 r"prefs\.jsonl:2: field 'chosen\[1\]\.content': empty response",
                 id="empty-message-content"),
    pytest.param({"prompt": [USER], "chosen": [_assistant("a")], "rejected": [_assistant("  ")]},
                 r"prefs\.jsonl:2: field 'rejected\[0\]\.content': empty response",
                 id="empty-message-content-explicit-prompt"),
    pytest.param({"chosen": [USER, {"role": "assistant"}], "rejected": [USER, _assistant("b")]},
                 r"field 'chosen\[1\]\.content': missing", id="message-without-content"),
    pytest.param({"chosen": [USER, _assistant("a")], "rejected": [USER, USER]},
                 r"field 'rejected\[1\]\.role': the response must be an assistant message",
                 id="response-not-assistant"),
    pytest.param({"chosen": [_assistant("a")], "rejected": [_assistant("b")]},
                 r"field 'chosen': chosen and rejected share no prompt messages",
                 id="no-common-prompt"),
    pytest.param(b'{"prompt": "p", "chosen": "\xff\xfe", "rejected": "b"}\n',
                 r"prefs\.jsonl:2: invalid UTF-8: byte 0xff", id="non-utf8"),
    pytest.param({"prompt": "p", "response": "r", "rating": "high"},
                 r"prefs\.jsonl:2: field 'rating': expected a number, got str",
                 id="rating-not-a-number"),
    pytest.param(b'{"prompt": "p", "response": "r", "rating": NaN}\n',
                 r"field 'rating': expected a finite number, got nan", id="rating-nan"),
    pytest.param({"prompt": "p", "response": "r", "ratings": {"help": True}},
                 r"field 'ratings\.help': expected a number, got bool", id="rating-bool"),
    pytest.param({"prompt": "p", "response": "r"},
                 r"field 'rating': missing", id="rating-missing"),
]


@pytest.mark.parametrize("row, message", BAD_ROWS)
def test_bad_row_raises_naming_file_line_and_field_or_is_skipped(tmp_path, row, message):
    path = _write_jsonl(tmp_path, [GOOD, row, GOOD])
    with pytest.raises(DataError, match=message) as e:
        read_preferences(path)
    assert str(e.value).startswith("prefs.jsonl:2:")
    assert e.value.path == path and e.value.line == 2
    res = read_preferences(path, skip_invalid=True)
    assert len(res.records) == 2 and res.num_skipped == 1
    assert len(res.skipped) == 1 and res.skipped[0] == str(e.value)


def test_error_message_format_of_the_brief(tmp_path):
    rows = [GOOD] * 6 + [{"prompt": "p", "chosen": 1, "rejected": "b"}]
    path = _write_jsonl(tmp_path, rows)
    with pytest.raises(DataError) as e:
        read_preferences(path)
    assert str(e.value) == ("prefs.jsonl:7: field 'chosen': expected a string or a list of "
                            "messages, got int")
    assert isinstance(e.value, ValueError)


def test_skip_invalid_counts_exactly_and_summarizes(tmp_path):
    rows = [GOOD,
            b"{not json}\n",
            {"prompt": "p", "chosen": "a"},
            b'{"prompt": "\xc3\x28", "chosen": "a", "rejected": "b"}\n',
            {"prompt": "p", "response": "r", "rating": 2},
            {"prompt": "p", "chosen": "", "rejected": "b"},
            {**GOOD, "id": 9}]
    res = read_preferences(_write_jsonl(tmp_path, rows), skip_invalid=True)
    assert res.num_skipped == 4
    assert [m.split(":")[1] for m in res.skipped] == ["2", "3", "4", "6"]
    assert (res.num_preferences, res.num_ratings) == (2, 1)
    assert res.summary() == ("prefs.jsonl: 3 valid rows, 4 skipped (2 preference pairs, "
                             "1 ratings; first skipped: prefs.jsonl:2: invalid JSON: Expecting "
                             "property name enclosed in double quotes (column 2))")


def test_over_long_sequences_in_characters_and_tokens(tmp_path):
    # prompt "What is 2+2?" is 12 characters; 12 + 30 = 42 > 40.
    path = _write_jsonl(tmp_path, [GOOD, {**GOOD, "rejected": "x" * 30}, GOOD])
    with pytest.raises(DataError, match=r"prefs\.jsonl:2: field 'rejected': too long: prompt \+ "
                                        r"response is 42 characters > max_length=40"):
        read_preferences(path, max_length=40)
    assert len(read_preferences(path, max_length=42).records) == 3
    tok = ByteTokenizer()
    # In tokens: "é" is two bytes, so the same strings are longer in byte tokens.
    path = _write_jsonl(tmp_path, [GOOD, {**GOOD, "chosen": "é" * 14}], "tok.jsonl")
    assert len(read_preferences(path, max_length=40).records) == 2  # 12 + 14 characters
    with pytest.raises(DataError, match=r"tok\.jsonl:2: field 'chosen': too long: prompt \+ "
                                        r"response is 40 tokens > max_length=39"):
        read_preferences(path, max_length=39, tokenize=tok.encode)
    res = read_preferences(path, max_length=39, tokenize=tok.encode, skip_invalid=True)
    assert (len(res.records), res.num_skipped) == (1, 1)
    ratings = _write_jsonl(tmp_path, [{"prompt": "p", "response": "r" * 10, "rating": 1}],
                           "r.jsonl")
    with pytest.raises(DataError, match=r"field 'response': too long"):
        read_preferences(ratings, max_length=10)


def test_empty_file_or_only_bad_rows_is_an_error(tmp_path):
    empty = _write_jsonl(tmp_path, [], "empty.jsonl")
    with pytest.raises(DataError, match=r"no valid rows in .*empty\.jsonl \(the file is empty\)"):
        read_preferences(empty)
    with pytest.raises(DataError, match="no valid rows"):
        read_preferences(empty, skip_invalid=True)
    bad = _write_jsonl(tmp_path, [{"x": 1}, b"[\n"], "bad.jsonl")
    with pytest.raises(DataError, match=r"no valid rows in .*bad\.jsonl: all 2 rows are invalid, "
                                        r"the first: .*bad\.jsonl:1: field 'chosen': missing"):
        read_preferences(bad, skip_invalid=True)
    empty_parquet = str(tmp_path / "empty.parquet")
    pq.write_table(pa.table({"prompt": pa.array([], pa.string())}), empty_parquet)
    with pytest.raises(DataError, match="no valid rows"):
        read_preferences(empty_parquet)


def test_unsupported_missing_or_unreadable_files(tmp_path):
    with pytest.raises(DataError, match=r"unsupported file type '\.csv'"):
        read_preferences(_write_jsonl(tmp_path, [GOOD], "prefs.csv"))
    with pytest.raises(DataError, match="no such file"):
        read_preferences(str(tmp_path / "missing.jsonl"))
    fake = tmp_path / "fake.parquet"
    fake.write_bytes(b"not parquet at all")
    with pytest.raises(DataError, match=r"fake\.parquet: not a readable Parquet file"):
        read_preferences(str(fake))
    array = _write_jsonl(tmp_path, [b'[{"prompt": "p",\n', b'"chosen": "a"}]\n'], "array.json")
    with pytest.raises(DataError, match="a JSON array file is not supported"):
        read_preferences(array)


# --- ByteTokenizer ---------------------------------------------------------------------------


def test_byte_tokenizer_round_trip_and_special_ids():
    tok = ByteTokenizer()
    assert (tok.pad_id, tok.bos_id, tok.eos_id, tok.vocab_size) == (0, 1, 2, 259)
    for text in ["", "hello", "héllo ✓ 日本", "\x00\xff", "<|user|>\nhi\n"]:
        ids = tok.encode(text)
        assert all(3 <= i < 259 for i in ids) and len(ids) == len(text.encode("utf-8"))
        assert tok.decode(ids) == text
    assert tok.encode("A") == [ord("A") + 3]
    ids = tok.encode("ok", add_bos=True, add_eos=True)
    assert ids == [1, ord("o") + 3, ord("k") + 3, 2]
    assert tok.decode([0, 0] + ids + [0]) == "ok"  # specials and padding are skipped
    assert tok.decode([0xC3 + 3]) == "\ufffd"  # truncated UTF-8 is replaced
    with pytest.raises(ValueError, match="outside"):
        tok.decode([259])


# --- lone surrogates (issue 17) and record line numbers ---------------------------------------


@pytest.mark.parametrize("row, field", [
    (b'{"prompt": "p", "chosen": "ok \\ud800", "rejected": "b"}\n', "chosen"),
    (b'{"prompt": "\\udfff", "chosen": "a", "rejected": "b"}\n', "prompt"),
    (b'{"chosen": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": '
     b'"a\\ud800"}], "rejected": [{"role": "user", "content": "Hi"}, {"role": "assistant", '
     b'"content": "b"}]}\n', "chosen[1].content"),
    (b'{"prompt": "p", "response": "r\\ud800", "rating": 1}\n', "response"),
])
def test_lone_surrogate_is_a_bad_row_named_by_line_and_field(tmp_path, row, field):
    # Valid JSON, but not Unicode text: a tokenizer would raise UnicodeEncodeError later.
    path = _write_jsonl(tmp_path, [GOOD, row, GOOD])
    with pytest.raises(DataError, match=r"prefs\.jsonl:2: field '" + re.escape(field)
                                        + r"': lone surrogate U\+D[8F]\w\w at character \d+: "
                                          r"not valid Unicode text") as e:
        read_preferences(path)
    assert (e.value.line, e.value.field) == (2, field)
    assert len(str(e.value).splitlines()) == 1
    res = read_preferences(path, skip_invalid=True)
    assert res.num_skipped == 1 and len(res.records) == 2
    for record in res.records:  # what is kept is tokenizable
        ByteTokenizer().encode(record.prompt + record.chosen + record.rejected)


def test_surrogate_message_is_exact_and_paired_surrogates_are_fine(tmp_path):
    path = _write_jsonl(tmp_path, [b'{"prompt": "p", "chosen": "ab\\ud800", "rejected": "b"}\n'])
    with pytest.raises(DataError) as e:
        read_preferences(path)
    assert str(e.value) == ("prefs.jsonl:1: field 'chosen': lone surrogate U+D800 at character 3: "
                            "not valid Unicode text (cannot be encoded as UTF-8)")
    # A surrogate pair in JSON is one character (U+1F600), valid text.
    ok = _write_jsonl(tmp_path, [b'{"prompt": "p", "chosen": "\\ud83d\\ude00", "rejected": "b"}\n'],
                      "ok.jsonl")
    assert read_preferences(ok).records[0].chosen == "\U0001F600"


def test_read_result_lines_give_each_record_its_line(tmp_path):
    rows = [GOOD, b"\n", {"prompt": "p", "chosen": "a"}, {**GOOD, "id": 4}]
    res = read_preferences(_write_jsonl(tmp_path, rows), skip_invalid=True)
    assert res.lines == [1, 4]
    assert [r.extras.get("id") for r in res.records] == [None, 4]
