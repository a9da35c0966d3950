"""alignax.data.token_cache: chunked on-disk tokenisation that a second run reads without
tokenising, that resumes after a kill, whose key follows the tokenizer, template and settings,
and that keeps the dataset:index:field error contract."""

import functools
import json
import os

import numpy as np
import pytest

from alignax.data import DataError, HFSource, PreferenceRecord
from alignax.data.packing import PackedSource, PaddedSource, pair_length, unpad_pair
from alignax.data.token_cache import (
    TokenCache,
    build_token_cache,
    cache_key,
    source_fingerprint,
    tokenizer_fingerprint,
)
from alignax.data.tokenize import tokenize_pair
from tests.data import LLAMA3, LLAMA_SPECIALS, QWEN25, QWEN_SPECIALS, templated

datasets = pytest.importorskip("datasets")
T = 128


def _rows(n=10):
    rows = []
    for i in range(n):
        if i % 2:
            rows.append({"prompt": [{"role": "user", "content": f"What is {i} plus {i}?"}],
                         "chosen": [{"role": "assistant", "content": f"It is {2 * i}."}],
                         "rejected": [{"role": "assistant", "content": "No idea" + "!" * i}]})
        else:
            rows.append({"prompt": [{"role": "user", "content": f"Name {i}."}],
                         "chosen": [{"role": "assistant", "content": "Paris"}],
                         "rejected": [{"role": "assistant", "content": f"Lyon {i}"}]})
    return rows


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    path = tmp_path_factory.mktemp("prefs") / "prefs"
    datasets.Dataset.from_list(_rows()).save_to_disk(str(path))
    return datasets.load_from_disk(str(path))


@pytest.fixture(scope="module")
def tok():
    return templated(QWEN25, QWEN_SPECIALS)


def _transform(record, tokenizer):
    return unpad_pair(tokenize_pair(record, tokenizer, max_length=T))


class Spy:
    """A source counting its reads; raises KeyboardInterrupt (a kill) at row `kill_at`."""

    def __init__(self, source, kill_at=None):
        self.source, self.kill_at, self.reads = source, kill_at, []

    def __len__(self):
        return len(self.source)

    def __getitem__(self, i):
        if i == self.kill_at:
            raise KeyboardInterrupt
        self.reads.append(i)
        return self.source[i]


def _source(dataset, tok):
    return HFSource(dataset, functools.partial(_transform, tokenizer=tok),
                    kinds=(PreferenceRecord,))


def _key(dataset, tok, **settings):
    return cache_key(source=dataset, tokenizer=tok, **{"format": "pair", "max_length": T,
                                                       **settings})


def test_cache_reads_back_the_tokens_and_second_run_does_not_tokenise(dataset, tok, tmp_path):
    source = _source(dataset, tok)
    first = Spy(source)
    cache = build_token_cache(first, str(tmp_path), _key(dataset, tok), chunk_size=4)
    assert first.reads == list(range(len(source)))
    assert len(cache) == len(source)
    padded = PaddedSource(cache, T, pad_id=tok.pad_id)
    for i in range(len(source)):
        expected = tokenize_pair(source.record(i), tok, max_length=T)
        for k, v in expected.items():
            np.testing.assert_array_equal(padded[i][k], v)
            assert padded[i][k].dtype == v.dtype
    np.testing.assert_array_equal(cache.lengths("pair"),
                                  [pair_length(cache[i]) for i in range(len(cache))])
    # packing plans from the length tables: no example is read to measure it
    assert len(PackedSource(cache, 2 * T, kind="pair")) >= 1
    second = Spy(source)
    again = build_token_cache(second, str(tmp_path), _key(dataset, tok), chunk_size=4)
    assert second.reads == [] and again.folder == cache.folder
    # no pickle: every file is JSON or a plain .npy
    for name in os.listdir(cache.folder):
        assert name == "index.json" or name.endswith(".npy"), name
        if name.endswith(".npy"):
            np.load(os.path.join(cache.folder, name), allow_pickle=False)


def test_killed_tokenisation_resumes_from_the_last_finished_chunk(dataset, tok, tmp_path):
    source = _source(dataset, tok)
    killed = Spy(source, kill_at=7)
    with pytest.raises(KeyboardInterrupt):
        build_token_cache(killed, str(tmp_path), _key(dataset, tok), chunk_size=3)
    assert killed.reads == list(range(7))  # chunks [0, 3) and [3, 6) finished, 6 was lost
    resumed = Spy(source)
    cache = build_token_cache(resumed, str(tmp_path), _key(dataset, tok), chunk_size=3)
    assert resumed.reads == list(range(6, len(source)))
    clean = build_token_cache(source, str(tmp_path / "clean"), _key(dataset, tok), chunk_size=3)
    for i in range(len(source)):
        for k in clean.fields:
            np.testing.assert_array_equal(cache[i][k], clean[i][k])


def test_key_follows_tokenizer_template_source_and_settings(dataset, tok, tmp_path):
    base = _key(dataset, tok)
    other_template = templated(LLAMA3, LLAMA_SPECIALS)
    assert tokenizer_fingerprint(other_template) != tokenizer_fingerprint(tok)
    same = templated(QWEN25, QWEN_SPECIALS)
    assert tokenizer_fingerprint(same) == tokenizer_fingerprint(tok)
    template_only = templated(QWEN25 + " ", QWEN_SPECIALS)  # same tokenizer.json, new template
    keys = [base, _key(dataset, other_template), _key(dataset, template_only),
            _key(dataset, tok, max_length=T + 1), _key(dataset.select(range(5)), tok)]
    assert len({json.dumps(k, sort_keys=True) for k in keys}) == len(keys)
    assert source_fingerprint(dataset) == source_fingerprint(dataset)
    # a new key is a new folder, tokenised again
    first = build_token_cache(_source(dataset, tok), str(tmp_path), base, chunk_size=5)
    spy = Spy(_source(dataset, other_template))
    second = build_token_cache(spy, str(tmp_path), _key(dataset, other_template), chunk_size=5)
    assert second.folder != first.folder and len(spy.reads) == len(dataset)
    # local files: a rewritten file is another source
    path = tmp_path / "rows.jsonl"
    path.write_text("{}\n")
    before = source_fingerprint(str(path))
    path.write_text("{} \n")
    assert source_fingerprint(str(path)) != before


def test_bad_rows_keep_the_error_contract(tok, tmp_path):
    rows = _rows(6)
    rows[4]["chosen"] = [{"role": "assistant", "content": "x" * 400}]  # too long for T
    data = datasets.Dataset.from_list(rows)
    source = HFSource(data, functools.partial(_transform, tokenizer=tok), name="prefs")
    with pytest.raises(DataError, match=r"^prefs:4: field 'chosen':"):
        build_token_cache(source, str(tmp_path), _key(data, tok), chunk_size=4)
    cache = build_token_cache(source, str(tmp_path), _key(data, tok), chunk_size=4,
                              skip_invalid=True)
    assert len(cache) == 5 and cache.skipped == [4]
    assert [cache.source_index(i) for i in range(5)] == [0, 1, 2, 3, 5]
    np.testing.assert_array_equal(cache[4]["chosen_ids"], source[5]["chosen_ids"])
    assert TokenCache(cache.folder).skipped == [4]


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="chunk_size must be a positive int"):
        build_token_cache([], str(tmp_path), {"a": 1}, chunk_size=0)
    with pytest.raises(TypeError, match="not JSON-able"):
        cache_key(source="x", tokenizer=None, fn=object())
    with pytest.raises(ValueError, match="not a complete token cache"):
        TokenCache(str(tmp_path))
