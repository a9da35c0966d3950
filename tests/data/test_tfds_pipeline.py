"""tfds array_record datasets and grain batch iterators (process sharding, exact resume)."""

import glob
import os

import numpy as np
import orbax.checkpoint as ocp
import grain
import pytest

from alignax.data import load_preference_source, make_batch_iterator, write_preference_dataset

FEATURES = {"ids": ((4,), np.int32), "gold": ((), np.float32)}


def _examples(n, offset=0):
    return [{"ids": np.arange(4, dtype=np.int32) + i + offset, "gold": np.float32(i / 7)}
            for i in range(n)]


def test_tfds_round_trip_in_order_and_two_datasets_coexist(tmp_path):
    d = str(tmp_path)
    path = write_preference_dataset(d, name="toy_prefs", splits={"train": _examples(10),
                                                                 "eval": _examples(3, 100)},
                                    features=FEATURES)
    write_preference_dataset(d, name="other", splits={"train": _examples(5, 50)},
                             features=FEATURES)
    assert glob.glob(os.path.join(path, "*.array_record*"))
    src = load_preference_source(d, name="toy_prefs", split="train")
    assert len(src) == 10
    for i in range(10):
        np.testing.assert_array_equal(src[i]["ids"], np.arange(4) + i)
        assert src[i]["ids"].dtype == np.int32
        assert np.float32(src[i]["gold"]) == np.float32(i / 7)
    assert len(load_preference_source(d, name="toy_prefs", split="eval")) == 3
    assert int(load_preference_source(d, name="other")[0]["ids"][0]) == 50
    with pytest.raises(FileNotFoundError, match="no dataset 'missing'"):
        load_preference_source(d, name="missing")


class CountingSource:
    def __init__(self, n):
        self.n, self.reads = n, []

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        self.reads.append(i)
        return {"x": np.array([i], np.int64)}


def _take(it, k):
    return [next(it)["x"][:, 0].tolist() for _ in range(k)]


@pytest.mark.parametrize("processes", [2, 4])
def test_local_batches_concatenate_to_the_global_batch(processes):
    ref = _take(make_batch_iterator(CountingSource(20), global_batch_size=8, seed=3), 40)
    sources = [CountingSource(20) for _ in range(processes)]
    its = [make_batch_iterator(s, global_batch_size=8, seed=3, process_index=p,
                               process_count=processes) for p, s in enumerate(sources)]
    local = [_take(it, 10) for it in its]  # 10 batches of 8 from 20 records: 4 epochs
    for b in range(10):
        assert sum((local[p][b] for p in range(processes)), []) == ref[b]
    # Each process read only its own rows (the iterator prefetches up to 8 batches ahead, so the
    # reads are the process's slices of the first k global batches, 10 <= k <= 18).
    local_size = 8 // processes
    for p, s in enumerate(sources):
        k = len(s.reads) // local_size
        assert 10 <= k <= 18 and len(s.reads) == k * local_size
        own = [i for b in ref[:k] for i in b[p * local_size:(p + 1) * local_size]]
        assert sorted(s.reads) == sorted(own)


def test_epochs_are_reshuffled():
    it = make_batch_iterator(CountingSource(16), global_batch_size=16, seed=0)
    e1, e2 = next(it)["x"][:, 0], next(it)["x"][:, 0]
    assert sorted(e1) == sorted(e2) == list(range(16))
    assert e1.tolist() != e2.tolist()


def test_resume_with_get_and_set_state():
    it = make_batch_iterator(CountingSource(20), global_batch_size=4, seed=1)
    _take(it, 7)
    state = it.get_state()
    expected = _take(it, 5)
    fresh = make_batch_iterator(CountingSource(20), global_batch_size=4, seed=1)
    fresh.set_state(state)
    assert _take(fresh, 5) == expected


def test_resume_through_orbax(tmp_path):
    it = make_batch_iterator(CountingSource(20), global_batch_size=4, seed=1)
    _take(it, 6)
    mngr = ocp.CheckpointManager(str(tmp_path), item_names=("data_iter",),
                                 options=ocp.CheckpointManagerOptions(create=True))
    mngr.save(6, args=ocp.args.Composite(data_iter=grain.checkpoint.CheckpointSave(it)))
    mngr.wait_until_finished()
    expected = _take(it, 5)
    fresh = make_batch_iterator(CountingSource(20), global_batch_size=4, seed=1)
    mngr.restore(6, args=ocp.args.Composite(data_iter=grain.checkpoint.CheckpointRestore(fresh)))
    assert _take(fresh, 5) == expected


def test_bad_arguments():
    with pytest.raises(ValueError, match="divisible by process_count"):
        make_batch_iterator(CountingSource(20), global_batch_size=6, seed=0, process_count=4)
    with pytest.raises(ValueError, match="fewer than one batch"):
        make_batch_iterator(CountingSource(3), global_batch_size=4, seed=0)
    with pytest.raises(ValueError, match="process_index"):
        make_batch_iterator(CountingSource(20), global_batch_size=4, seed=0, process_index=2,
                            process_count=2)


def test_transform_is_applied_to_the_local_batch():
    it = make_batch_iterator(CountingSource(8), global_batch_size=4, seed=0, shuffle=False,
                             transform=lambda b: {"x2": b["x"] * 2})
    np.testing.assert_array_equal(next(it)["x2"][:, 0], [0, 2, 4, 6])
