"""HF `datasets` -> records and grain sources: TRL's formats, every local layout, exact resume."""

import functools

import numpy as np
import pytest

from alignax.data import ByteTokenizer, DataError, PreferenceRecord, RatingRecord
from alignax.data.hf_datasets import (
    HFSource,
    PromptRecord,
    SFTRecord,
    UnpairedRecord,
    load_hf_dataset,
    parse_hf_row,
    read_hf_dataset,
    user_ids,
)
from alignax.data.pipeline import make_batch_iterator
from alignax.data.readers import render_chat
from alignax.data.tokenize import tokenize_pair

datasets = pytest.importorskip("datasets")
datasets.disable_progress_bars()

USER = [{"role": "user", "content": "Capital of France?"}]
PARIS = [{"role": "assistant", "content": "Paris."}]
ROME = [{"role": "assistant", "content": "Rome."}]
PAIRS = {"prompt": [f"q{i} " for i in range(10)],
         "chosen": [f"good answer {i}" for i in range(10)],
         "rejected": [f"bad {i}" for i in range(10)], "id": list(range(10))}


def _save(tmp_path, name, columns):
    path = tmp_path / name
    datasets.Dataset.from_dict(columns).save_to_disk(str(path))
    return str(path)


def test_trl_formats_become_records(tmp_path):
    rows = {
        "standard_explicit": ({"prompt": ["The sky is"], "chosen": [" blue."],
                               "rejected": [" green."]}, PreferenceRecord),
        "standard_implicit": ({"chosen": ["The sky is blue."], "rejected": ["The sky is green."]},
                              PreferenceRecord),
        "conv_explicit": ({"prompt": [USER], "chosen": [PARIS], "rejected": [ROME]},
                          PreferenceRecord),
        "conv_implicit": ({"chosen": [USER + PARIS], "rejected": [USER + ROME]},
                          PreferenceRecord),
        "kto_standard": ({"prompt": ["The sky is"], "completion": [" blue."], "label": [True]},
                         UnpairedRecord),
        "kto_conv": ({"prompt": [USER], "completion": [ROME], "label": [False]}, UnpairedRecord),
        "prompt_standard": ({"prompt": ["The sky is"]}, PromptRecord),
        "prompt_conv": ({"prompt": [USER]}, PromptRecord),
        # a label without a completion is an extra, not KTO's unpaired preference
        "prompt_labelled": ({"prompt": ["How do I ...?"], "label": [True]}, PromptRecord),
        "text_labelled": ({"text": ["some text"], "label": [3]}, SFTRecord),
        "rating": ({"prompt": ["p"], "response": ["r"], "rating": [0.5]}, RatingRecord),
        "ratings": ({"prompt": ["p"], "response": ["r"],
                     "ratings": [{"helpful": 1.0, "safe": 0.0}]}, RatingRecord),
    }
    got = {}
    for name, (columns, kind) in rows.items():
        result = read_hf_dataset(_save(tmp_path, name, columns))
        assert result.path == name and result.lines == [0]
        (record,) = result.records
        assert isinstance(record, kind), name
        got[name] = record
    # TRL's extract_prompt on strings: the common prefix, the space stays with the responses
    implicit = got["standard_implicit"]
    assert (implicit.prompt, implicit.chosen, implicit.rejected) == ("The sky is", " blue.",
                                                                     " green.")
    for name in ("conv_explicit", "conv_implicit"):
        assert got[name].prompt == render_chat(USER) and got[name].chosen == "Paris."
    assert got["conv_implicit"].extras["messages"]["chosen"] == USER + PARIS
    kto = got["kto_conv"]
    assert (kto.completion, kto.label) == ("Rome.", False)
    assert kto.extras["messages"] == {"prompt": USER, "completion": ROME}
    assert got["kto_standard"].label is True
    assert got["prompt_conv"].prompt == render_chat(USER)
    assert got["prompt_conv"].extras["messages"] == {"prompt": USER}
    assert got["ratings"].ratings == {"helpful": 1.0, "safe": 0.0}
    assert got["prompt_labelled"].extras == {"label": True}
    assert got["text_labelled"].extras == {"label": 3}
    # same records whatever the layout: Dataset / DatasetDict objects, save_to_disk, parquet
    # and json files and folders
    ds = datasets.Dataset.from_dict(PAIRS)
    folder = tmp_path / "files"
    folder.mkdir()
    ds.to_parquet(str(folder / "train-00000.parquet"))
    ds.select(range(3)).to_parquet(str(folder / "test-00000.parquet"))
    ds.to_json(str(tmp_path / "pairs.jsonl"))
    datasets.DatasetDict({"train": ds, "test": ds.select(range(2))}).save_to_disk(
        str(tmp_path / "dict"))
    cache = str(tmp_path / "cache")
    want = read_hf_dataset(ds).records
    for source, split, n in ((ds, "train", 10), (str(tmp_path / "dict"), "test", 2),
                             (datasets.DatasetDict({"train": ds}), "train", 10),
                             (str(folder), "train", 10), (str(folder), "test", 3),
                             (str(tmp_path / "pairs.jsonl"), "train", 10)):
        records = read_hf_dataset(source, split=split, cache_dir=cache).records
        assert records == want[:n], (source, split)


def test_bad_rows_name_dataset_index_and_field(tmp_path):
    path = _save(tmp_path, "prefs", {"prompt": ["a", "b", "c"], "chosen": ["x", "", "zzzz"],
                                     "rejected": ["y", "y", "w"]})
    with pytest.raises(DataError) as e:
        read_hf_dataset(path)
    assert str(e.value) == "prefs:1: field 'chosen': empty (or whitespace-only) string"
    assert (e.value.path, e.value.line, e.value.field) == ("prefs", 1, "chosen")
    result = read_hf_dataset(path, skip_invalid=True)
    assert result.lines == [0, 2] and result.num_skipped == 1
    kto = _save(tmp_path, "kto", {"prompt": ["a"], "completion": ["b"], "label": [1]})
    with pytest.raises(DataError, match=r"^kto:0: field 'label': expected a bool"):
        read_hf_dataset(kto)
    conv = _save(tmp_path, "conv", {"prompt": [USER], "completion": [USER], "label": [True]})
    with pytest.raises(DataError, match=r"^conv:0: field 'completion\[0\]\.role': the response "
                                        r"must be an assistant message"):
        read_hf_dataset(conv)
    with pytest.raises(DataError, match=r"^odd:0: field 'prompt': missing: no TRL format"):
        read_hf_dataset(_save(tmp_path, "odd", {"title": ["x"]}))
    with pytest.raises(DataError, match=r"^prefs:0: field 'chosen': too long"):
        read_hf_dataset(path, max_length=1, skip_invalid=False)
    # HFSource: rows validated when read, tokenizer errors too, with the same contract
    source = HFSource(datasets.load_from_disk(path),
                      functools.partial(tokenize_pair, tokenizer=ByteTokenizer(), max_length=5))
    with pytest.raises(DataError, match=r"^prefs:1: field 'chosen': empty"):
        source[1]
    with pytest.raises(DataError, match=r"^prefs:2: field 'chosen': 7 tokens with bos/eos "
                                        r"exceed max_length=5$"):
        source[2]
    with pytest.raises(DataError, match=r"^prefs:0: a RatingRecord row; this source takes "
                                        r"PreferenceRecord"):
        HFSource(datasets.Dataset.from_dict({"prompt": ["p"], "response": ["r"], "rating": [1.0]}),
                 lambda r: r, name="prefs", kinds=(PreferenceRecord,))[0]


def test_layout_and_hub_errors(tmp_path, monkeypatch):
    path = _save(tmp_path, "prefs", PAIRS)
    with pytest.raises(DataError, match=r"has no split 'test' \(splits: \['train'\]\)"):
        load_hf_dataset(datasets.DatasetDict({"train": datasets.load_from_disk(path)}),
                        split="test")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no dataset here"):
        load_hf_dataset(str(tmp_path / "empty"))
    with pytest.raises(DataError, match="unsupported file type '.txt'"):
        (tmp_path / "x.txt").write_text("hi")
        load_hf_dataset(str(tmp_path / "x.txt"))
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    with pytest.raises(DataError, match=r"^'org/prefs' is not a local path, and the Hub is "
                                        r"offline"):
        load_hf_dataset("org/prefs")


def test_grain_pipeline_over_a_dataset_resumes_exactly(tmp_path):
    tok = ByteTokenizer()
    dataset = load_hf_dataset(_save(tmp_path, "prefs", PAIRS))
    transform = functools.partial(tokenize_pair, tokenizer=tok, max_length=24)
    source = HFSource(dataset, transform)
    records = read_hf_dataset(dataset).records
    assert len(source) == 10 and source.record(3) == records[3]
    for key, value in source[3].items():  # lazily tokenised row == the in-memory path
        np.testing.assert_array_equal(value, tokenize_pair(records[3], tok, max_length=24)[key])

    def stream():
        return make_batch_iterator(source, global_batch_size=4, seed=7, num_threads=0)

    it = stream()
    for _ in range(3):  # crosses an epoch boundary (10 rows, batches of 4)
        next(it)
    state = it.get_state()
    expected = [next(it) for _ in range(3)]
    resumed = stream()
    resumed.set_state(state)
    for want in expected:
        got = next(resumed)
        for key in want:
            np.testing.assert_array_equal(got[key], want[key], err_msg=key)
    # only the valid rows: indices from a skip_invalid scan
    bad = datasets.Dataset.from_dict({**PAIRS, "chosen": ["", *PAIRS["chosen"][1:]]})
    valid = read_hf_dataset(bad, skip_invalid=True, name="bad").lines
    subset = HFSource(bad, transform, indices=valid, name="bad")
    assert len(subset) == 9
    np.testing.assert_array_equal(subset[0]["chosen_ids"], source[1]["chosen_ids"])
    batch = next(make_batch_iterator(subset, global_batch_size=9, seed=0, num_threads=0))
    assert batch["chosen_ids"].shape == (9, 24)
    with pytest.raises(ValueError, match=r"indices must lie in \[0, 10\)"):
        HFSource(bad, transform, indices=[10])


def test_parse_hf_row_treats_null_as_absent():
    # a column another row uses is null here (Arrow fills it): the row is still a pair
    record = parse_hf_row({"prompt": "p", "chosen": "c", "rejected": "r", "rating": None})
    assert isinstance(record, PreferenceRecord) and "rating" not in record.extras


def test_user_id_column_reaches_the_records_of_every_pair_format(tmp_path):
    formats = {
        "standard_explicit": {"prompt": ["The sky is"] * 3, "chosen": [" blue."] * 3,
                              "rejected": [" green."] * 3},
        "standard_implicit": {"chosen": ["The sky is blue."] * 3,
                              "rejected": ["The sky is green."] * 3},
        "conv_explicit": {"prompt": [USER] * 3, "chosen": [PARIS] * 3, "rejected": [ROME] * 3},
        "conv_implicit": {"chosen": [USER + PARIS] * 3, "rejected": [USER + ROME] * 3},
    }
    for name, columns in formats.items():
        for users, names in ((["bob", "al", "bob"], ["bob", "al"]), ([7, 3, 7], [7, 3])):
            records = read_hf_dataset(_save(tmp_path, f"{name}_{users[0]}",
                                            {**columns, "user_id": users})).records
            assert [r.extras["user_id"] for r in records] == users, name
            index, got = user_ids(records)
            assert index.dtype == np.int32 and index.tolist() == [0, 1, 0], name
            assert got == names and [got[i] for i in index] == users, name
    # the lazy source parses the same column
    source = HFSource(load_hf_dataset(_save(tmp_path, "lazy", {**formats["conv_explicit"],
                                                               "user_id": ["a", "b", "c"]})),
                      lambda r: r)
    assert user_ids([source.record(i) for i in range(3)])[0].tolist() == [0, 1, 2]


def test_user_ids_name_the_row_without_a_user(tmp_path):
    # Arrow fills a missing value with null: the row has no user
    path = _save(tmp_path, "prefs", {**{k: PAIRS[k][:3] for k in ("prompt", "chosen",
                                                                   "rejected")},
                                     "user_id": ["u1", None, "u2"]})
    result = read_hf_dataset(path)
    assert "user_id" not in result.records[1].extras
    with pytest.raises(DataError) as e:
        user_ids(result.records, name="prefs", indices=[4, 5, 6])
    assert str(e.value) == ("prefs:5: field 'user_id': missing (every comparison needs its user "
                            "here)")
    assert (e.value.path, e.value.line, e.value.field) == ("prefs", 5, "user_id")
    index, names = user_ids(result.records, required=False)
    assert index.tolist() == [0, -1, 1] and names == ["u1", "u2"]
    no_column = read_hf_dataset(_save(tmp_path, "plain", PAIRS)).records
    with pytest.raises(DataError, match=r"^dataset:0: field 'user_id': missing"):
        user_ids(no_column)
    floats = read_hf_dataset(datasets.Dataset.from_dict(
        {**{k: PAIRS[k][:2] for k in ("prompt", "chosen", "rejected")}, "user_id": [1.0, 2.5]}),
        name="f").records
    with pytest.raises(DataError, match=r"^f:0: field 'user_id': expected a string or an int, "
                                        r"got float$"):
        user_ids(floats, name="f")
    with pytest.raises(ValueError, match="indices has 1 entries for 2 records"):
        user_ids(floats, indices=[0])
