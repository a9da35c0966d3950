"""alignax.data.packing: bin plans, packed rows, the random-access source and the streaming
transform with exact resume (pure numpy and grain; no model)."""

import json

import grain
import numpy as np
import pytest

from alignax.data import ByteTokenizer, PreferenceRecord
from alignax.data.packing import (
    PackedSource,
    PACKING_DEFAULTS,
    PackIterDataset,
    PaddedSource,
    pack_pairs,
    pack_sequences,
    pad_example,
    packed_train_source,
    plan_bins,
    unpad_pair,
    unpad_sequence,
)
from alignax.data.pipeline import make_batch_iterator
from alignax.data.tokenize import tokenize_pair


def _check_plan(bins, lengths, capacity, max_items=None):
    flat = sorted(i for b in bins for i in b)
    assert flat == list(range(len(lengths)))  # every example exactly once
    for b in bins:
        assert sum(lengths[i] for i in b) <= capacity
        assert max_items is None or len(b) <= max_items


def test_plan_bins_bfd_and_first_fit():
    lengths = [3, 7, 2, 5, 4, 1, 6]
    bfd = plan_bins(lengths, 8, strategy="bfd")
    # sorted: 7(1) 6(6) 5(3) 4(4) 3(0) 2(2) 1(5); best fit: [7,1], [6,2], [5,3], [4]
    assert bfd == [[1, 5], [6, 2], [3, 0], [4]]
    ff = plan_bins(lengths, 8, strategy="first_fit")
    # 3 -> b0(5 left); 7 -> b1(1); 2 -> b0(3); 5 -> b2(3); 4 -> b3(4); 1 -> b0(2); 6 -> b4
    assert ff == [[0, 2, 5], [1], [3], [4], [6]]
    rng = np.random.default_rng(0)
    many = list(rng.integers(1, 30, size=200))
    for strategy in ("bfd", "first_fit"):
        for window in (7, 1000):
            bins = plan_bins(many, 32, strategy=strategy, window=window, max_items=3)
            _check_plan(bins, many, 32, max_items=3)
            if window == 7:  # bins never span windows
                assert all(len({i // 7 for i in b}) == 1 for b in bins)
    # BFD wastes no more rows than first-fit here
    assert len(plan_bins(many, 32)) <= len(plan_bins(many, 32, strategy="first_fit"))
    assert plan_bins([2, 2], 4, offset=10) == [[10, 11]]


@pytest.mark.parametrize("kwargs, match", [
    (dict(strategy="best"), "unknown packing strategy"),
    (dict(window=0), "window must be a positive int"),
    (dict(max_items=0), "max_items must be a positive int"),
])
def test_plan_bins_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        plan_bins([1, 2], 4, **kwargs)


def test_plan_bins_too_long_example():
    with pytest.raises(ValueError, match="example 1 has length 9"):
        plan_bins([1, 9], 8)


def test_pack_sequences_layout():
    row = pack_sequences([{"input_ids": [5, 6, 7], "loss_mask": [0, 1, 1]},
                          {"input_ids": [8, 9]}], 8, pad_id=3)
    np.testing.assert_array_equal(row["input_ids"], [5, 6, 7, 8, 9, 3, 3, 3])
    np.testing.assert_array_equal(row["mask"], [1, 1, 1, 2, 2, 0, 0, 0])
    np.testing.assert_array_equal(row["loss_mask"], [0, 1, 1, 1, 1, 0, 0, 0])
    assert all(v.dtype == np.int32 for v in row.values())
    with pytest.raises(ValueError, match="more than the row length 4"):
        pack_sequences([{"input_ids": [1, 2, 3]}, {"input_ids": [4, 5]}], 4)


def test_pack_pairs_layout():
    row = pack_pairs([{"chosen_ids": [1, 2], "rejected_ids": [1, 3, 4]},
                      {"chosen_ids": [5], "rejected_ids": [6, 7]}], 10, max_pairs=3)
    np.testing.assert_array_equal(row["input_ids"], [1, 2, 1, 3, 4, 5, 6, 7, 0, 0])
    np.testing.assert_array_equal(row["mask"], [1, 1, 2, 2, 2, 3, 4, 4, 0, 0])
    np.testing.assert_array_equal(row["chosen_end"], [1, 5, -1])
    np.testing.assert_array_equal(row["rejected_end"], [4, 7, -1])
    with pytest.raises(ValueError, match="do not fit max_pairs=1"):
        pack_pairs([{"chosen_ids": [1], "rejected_ids": [2]}] * 2, 10, max_pairs=1)


def test_unpad_pad_round_trip():
    tok = ByteTokenizer()
    row = tokenize_pair(PreferenceRecord("hi", "yes!", "no"), tok, max_length=16)
    example = unpad_pair(row)
    assert example["chosen_ids"].shape == (int(row["chosen_mask"].sum()),)
    back = pad_example(example, 16, pad_id=tok.pad_id)
    assert sorted(back) == sorted(row)
    for k in row:
        np.testing.assert_array_equal(back[k], row[k])
        assert back[k].dtype == row[k].dtype
    sft = {"input_ids": np.array([4, 5, 6, 0, 0], np.int32),
           "mask": np.array([1, 1, 1, 0, 0], np.int32),
           "loss_mask": np.array([0, 1, 1, 0, 0], np.int32)}
    back = pad_example(unpad_sequence(sft), 5, pad_id=0)
    for k in sft:
        np.testing.assert_array_equal(back[k], sft[k])


def _sequences(n=40, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        k = int(rng.integers(1, 12))
        out.append({"input_ids": rng.integers(1, 50, size=k).astype(np.int32),
                    "loss_mask": (rng.random(k) < 0.7).astype(np.int32)})
    return out


def test_packed_source_holds_every_example_once():
    examples = _sequences()
    padded = [pad_example(e, 12, pad_id=0) for e in examples]  # fixed-length rows are cut
    packed = PackedSource(padded, 16, window=16)
    seen = []
    for i in range(len(packed)):
        row = packed[i]
        for s in range(1, row["mask"].max() + 1):
            seen.append(tuple(row["input_ids"][row["mask"] == s]))
    assert sorted(seen) == sorted(tuple(e["input_ids"]) for e in examples)
    assert 0.5 < packed.fill() <= 1.0
    np.testing.assert_array_equal(PaddedSource(examples, 12, pad_id=0)[3]["input_ids"],
                                  padded[3]["input_ids"])


def test_packed_pair_source_max_pairs():
    pairs = [{"chosen_ids": np.arange(1, 2 + i % 3), "rejected_ids": np.arange(1, 3)}
             for i in range(9)]
    packed = PackedSource(pairs, 12, kind="pair")
    assert packed.max_pairs == max(len(b) for b in packed.bins)
    row = packed[0]
    assert row["chosen_end"].shape == (packed.max_pairs,)
    limited = PackedSource(pairs, 12, kind="pair", max_pairs=2)
    assert max(len(b) for b in limited.bins) <= 2 and limited[0]["chosen_end"].shape == (2,)


def _assert_rows_equal(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert sorted(x) == sorted(y)
        for k in x:
            np.testing.assert_array_equal(x[k], y[k])


def test_stream_equals_source_and_resumes_exactly():
    examples = _sequences(50, seed=1)
    ds = PackIterDataset(grain.MapDataset.source(examples).to_iter_dataset(), 16, window=12)
    rows = list(iter(ds))
    source = PackedSource(examples, 16, window=12)
    _assert_rows_equal(rows, [source[i] for i in range(len(source))])
    for k in (0, 1, 3, 7, len(rows) - 1):  # inside and at the ends of windows
        it = iter(ds)
        for _ in range(k):
            next(it)
        state = json.loads(json.dumps(it.get_state()))  # JSON-serialisable (grain checkpoints)
        expected = [next(it) for _ in range(min(3, len(rows) - k))]
        fresh = iter(ds)
        fresh.set_state(state)
        got = [next(fresh) for _ in range(len(expected))]
        _assert_rows_equal(got, expected)
        _assert_rows_equal(got, rows[k:k + len(got)])
    it = iter(ds)
    for _ in range(len(rows)):
        next(it)
    with pytest.raises(StopIteration):
        next(it)


def test_stream_pairs_need_max_pairs():
    parent = grain.MapDataset.source([{"chosen_ids": [1], "rejected_ids": [2]}]).to_iter_dataset()
    with pytest.raises(ValueError, match="needs max_pairs"):
        PackIterDataset(parent, 8, kind="pair")
    rows = list(PackIterDataset(parent, 8, kind="pair", max_pairs=2))
    np.testing.assert_array_equal(rows[0]["chosen_end"], [0, -1])


def test_packed_source_batches_resume_through_the_pipeline():
    source = PackedSource(_sequences(60, seed=2), 16)
    make = lambda: make_batch_iterator(source, global_batch_size=2, seed=3,  # noqa: E731
                                       num_threads=0)
    it = make()
    for _ in range(4):
        next(it)
    state = it.get_state()
    expected = [next(it) for _ in range(3)]
    resumed = make()
    resumed.set_state(state)
    _assert_rows_equal([next(resumed) for _ in range(3)], expected)


def test_packed_train_source_lengths():
    examples = _sequences(12)
    rows = [pad_example(e, 12, pad_id=0) for e in examples]
    cfg = dict(PACKING_DEFAULTS, enabled=True)
    assert packed_train_source(rows, cfg, "sequence")[0]["input_ids"].shape == (12,)
    pairs = [{"chosen_ids": [1, 2], "rejected_ids": [3]}] * 4
    padded_pairs = [pad_example(p, 5, pad_id=0) for p in pairs]
    packed = packed_train_source(padded_pairs, dict(cfg, max_pairs=0), "pair")
    assert packed[0]["input_ids"].shape == (10,) and packed.max_pairs == 3
    with pytest.raises(ValueError, match="examples are unpadded .* set packing.length"):
        packed_train_source(examples, cfg, "sequence")
    assert packed_train_source(examples, dict(cfg, length=20), "sequence")[0]["mask"].max() > 1
