"""tfds builders writing array_record, read back without TensorFlow."""

import glob
import os
import sys

import numpy as np
import pytest
from array_record.python import array_record_module

from alignax.data import load_preference_source, write_preference_dataset

FEATURES = {"prompt": ((8,), np.int32), "chosen": ((16,), np.int32),
            "rejected": ((16,), np.int32), "chosen_gold": ((), np.float32),
            "mask": ((2, 3), np.bool_), "step": ((), np.int64)}


def _examples(n, offset=0):
    rng = np.random.default_rng(offset)
    return [{"prompt": np.arange(8, dtype=np.int32) + i + offset,
             "chosen": rng.integers(-2**31, 2**31 - 1, 16, dtype=np.int32),
             "rejected": rng.integers(0, 259, 16).astype(np.int32),
             "chosen_gold": np.float32(rng.normal()),
             "mask": rng.random((2, 3)) < 0.5,
             "step": np.int64(2**40 + i)} for i in range(n)]


def test_round_trip_exact_values_dtypes_and_order(tmp_path):
    train, evals = _examples(23), _examples(3, offset=100)
    path = write_preference_dataset(str(tmp_path), splits={"train": train, "eval": evals},
                                    features=FEATURES, description="toy")
    assert path == os.path.join(str(tmp_path), "synthetic_preferences", "1.0.0")
    assert sorted(os.listdir(tmp_path)) == ["synthetic_preferences"]  # no downloads/ folder
    src = load_preference_source(str(tmp_path), split="train")
    assert len(src) == 23
    for i, expected in enumerate(train):
        got = src[i]
        assert sorted(got) == sorted(FEATURES)
        for key, (shape, dtype) in FEATURES.items():
            assert isinstance(got[key], np.ndarray), key
            assert got[key].dtype == np.dtype(dtype) and got[key].shape == shape, key
            np.testing.assert_array_equal(got[key], expected[key])
    np.testing.assert_array_equal(src[-1]["step"], train[-1]["step"])
    batch = src.__getitems__([5, 0, 5])
    np.testing.assert_array_equal(batch[0]["chosen"], train[5]["chosen"])
    np.testing.assert_array_equal(batch[1]["chosen"], train[0]["chosen"])
    with pytest.raises(IndexError):
        src[23]
    ev = load_preference_source(str(tmp_path), split="eval")
    assert len(ev) == 3
    np.testing.assert_array_equal(ev[2]["prompt"], evals[2]["prompt"])
    assert src.info.description == "toy"
    assert src.features["mask"] == ((2, 3), np.dtype(bool))


def test_files_on_disk_are_array_record(tmp_path):
    path = write_preference_dataset(str(tmp_path), name="toy", splits={"train": _examples(5)},
                                    features=FEATURES)
    shards = glob.glob(os.path.join(path, "toy-train.array_record-*"))
    assert len(shards) == 1 and os.path.isfile(os.path.join(path, "dataset_info.json"))
    reader = array_record_module.ArrayRecordReader(shards[0])
    try:
        assert reader.num_records() == 5
    finally:
        reader.close()
    assert "tensorflow" not in sys.modules


def test_two_datasets_coexist_in_one_process(tmp_path):
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    small = {"x": ((2,), np.float32)}
    # Same name, different features, two data_dirs; and a second name in the first data_dir.
    write_preference_dataset(a, splits={"train": _examples(4)}, features=FEATURES)
    write_preference_dataset(b, splits={"train": [{"x": np.array([i, -i], np.float32)}
                                                  for i in range(6)]}, features=small)
    write_preference_dataset(a, name="other_prefs", version="2.1.0",
                             splits={"train": [{"x": np.ones(2, np.float32)}]}, features=small)
    src_a = load_preference_source(a)
    src_b = load_preference_source(b)
    other = load_preference_source(a, name="other_prefs")
    assert (len(src_a), len(src_b), len(other)) == (4, 6, 1)
    assert sorted(src_a[0]) == sorted(FEATURES) and sorted(src_b[0]) == ["x"]
    np.testing.assert_array_equal(src_b[5]["x"], [5, -5])
    np.testing.assert_array_equal(other[0]["x"], [1, 1])


def test_existing_dataset_overwrite_and_errors(tmp_path):
    d = str(tmp_path)
    small = {"x": ((), np.int32)}
    write_preference_dataset(d, splits={"train": [{"x": 1}, {"x": 2}]}, features=small)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        write_preference_dataset(d, splits={"train": [{"x": 3}]}, features=small)
    write_preference_dataset(d, splits={"train": [{"x": 3}]}, features=small, overwrite=True)
    src = load_preference_source(d)
    assert len(src) == 1 and int(src[0]["x"]) == 3
    write_preference_dataset(d, splits={"train": [{"x": 4}]}, features=small, version="1.1.0")
    assert int(load_preference_source(d)[0]["x"]) == 4  # highest version by default
    assert int(load_preference_source(d, version="1.0.0")[0]["x"]) == 3

    with pytest.raises(ValueError, match=r"example 1, feature 'x': shape \(2,\)"):
        write_preference_dataset(d, name="bad", features=small,
                                 splits={"train": [{"x": 1}, {"x": [1, 2]}]})
    with pytest.raises(ValueError, match=r"dtype float64 cannot be stored as int32"):
        write_preference_dataset(d, name="bad", features=small, splits={"train": [{"x": 1.5}]})
    with pytest.raises(ValueError, match=r"missing features \[\], unknown features \['y'\]"):
        write_preference_dataset(d, name="bad", features=small,
                                 splits={"train": [{"x": 1, "y": 2}]})
    with pytest.raises(ValueError, match="snake_case"):
        write_preference_dataset(d, name="Bad-Name", features=small, splits={"train": [{"x": 1}]})
    with pytest.raises(ValueError, match="has no examples"):
        write_preference_dataset(d, name="bad", features=small, splits={"train": []})
    assert not os.path.exists(os.path.join(d, "bad"))  # nothing written for a bad dataset
    with pytest.raises(FileNotFoundError, match="no dataset 'missing'"):
        load_preference_source(d, name="missing")
    with pytest.raises(ValueError, match=r"no split 'test'; splits: \['train'\]"):
        load_preference_source(d, split="test")


def _files(path):
    return {name: os.stat(os.path.join(path, name)).st_mtime_ns for name in os.listdir(path)}


def test_writing_the_same_examples_again_keeps_the_dataset_and_other_examples_fail(tmp_path):
    d = str(tmp_path)
    splits = {"train": _examples(5), "eval": _examples(2, offset=7)}
    path = write_preference_dataset(d, splits=splits, features=FEATURES)
    before = _files(path)
    again = write_preference_dataset(d, splits={"train": _examples(5),
                                                "eval": _examples(2, offset=7)},
                                     features=FEATURES)
    assert again == path and _files(path) == before  # nothing rewritten
    changed = _examples(5)
    changed[4]["chosen_gold"] = np.float32(changed[4]["chosen_gold"] + 1)
    with pytest.raises(FileExistsError) as info:
        write_preference_dataset(d, splits={"train": changed, "eval": _examples(2, offset=7)},
                                 features=FEATURES)
    assert str(info.value) == (
        f"dataset 'synthetic_preferences' version 1.0.0 at {path} holds other examples; pass "
        f"overwrite=True or delete {path} to replace it")
    with pytest.raises(FileExistsError, match="holds other examples"):  # one split fewer
        write_preference_dataset(d, splits={"train": _examples(5)}, features=FEATURES)
    with pytest.raises(FileExistsError, match="holds other examples"):
        write_preference_dataset(d, splits=splits, features=FEATURES, description="other")
    assert _files(path) == before


def test_dataset_without_fingerprint_is_not_taken_for_the_same(tmp_path):
    small = {"x": ((), np.int32)}
    path = write_preference_dataset(str(tmp_path), splits={"train": [{"x": 1}]}, features=small)
    os.remove(os.path.join(path, "metadata.json"))  # as written by an older alignax
    with pytest.raises(FileExistsError, match="holds no fingerprint"):
        write_preference_dataset(str(tmp_path), splits={"train": [{"x": 1}]}, features=small)


def test_a_write_killed_mid_way_leaves_no_dataset_and_is_simply_redone(tmp_path, monkeypatch):
    import tensorflow_datasets as tfds

    small = {"x": ((), np.int32)}
    examples = [{"x": i} for i in range(10)]
    real = tfds.core.GeneratorBasedBuilder._download_and_prepare

    def killed(self, *args, **kwargs):
        real(self, *args, **kwargs)  # every shard written, dataset_info.json not yet
        raise KeyboardInterrupt

    monkeypatch.setattr(tfds.core.GeneratorBasedBuilder, "_download_and_prepare", killed)
    with pytest.raises(KeyboardInterrupt):
        write_preference_dataset(str(tmp_path), splits={"train": examples}, features=small)
    assert not os.path.exists(tmp_path / "synthetic_preferences" / "1.0.0")
    monkeypatch.undo()
    write_preference_dataset(str(tmp_path), splits={"train": examples}, features=small)
    src = load_preference_source(str(tmp_path))
    assert [int(src[i]["x"]) for i in range(len(src))] == list(range(10))
