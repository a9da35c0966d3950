"""grain batch iterators: process-count invariance, per-process reads, reshuffles, exact resume."""

import collections
import json
import threading

import grain
import numpy as np
import orbax.checkpoint as ocp
import pytest

from alignax.data import load_preference_source, make_batch_iterator, write_preference_dataset


class CountingSource:
    """Record i is {"x": [i], "y": [[i, -i]]}; remembers every index read with __getitem__."""

    def __init__(self, n):
        self.n = n
        self.reads = []
        self._lock = threading.Lock()

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        with self._lock:
            self.reads.append(int(i))
        return {"x": np.array([i], np.int64), "y": np.array([[i, -i]], np.float32)}


def _take(it, k):
    """The next k batches as lists of record indices."""
    return [next(it)["x"][:, 0].tolist() for _ in range(k)]


def _own_rows(global_batches, p, local):
    return [i for b in global_batches for i in b[p * local:(p + 1) * local]]


@pytest.mark.parametrize("process_count", [2, 4])
def test_local_batches_concatenate_to_the_global_batch(process_count):
    # 20 records, global batch 8: the first 10 batches span 4 epochs and cut across epochs.
    reference = make_batch_iterator(CountingSource(20), global_batch_size=8, seed=3)
    ref = [next(reference) for _ in range(10)]
    stream = sum((b["x"][:, 0].tolist() for b in ref), [])
    for e in range(4):
        assert sorted(stream[20 * e:20 * (e + 1)]) == list(range(20))  # each epoch once
    its = [make_batch_iterator(CountingSource(20), global_batch_size=8, seed=3, process_index=p,
                               process_count=process_count) for p in range(process_count)]
    for b in range(10):
        local = [next(it) for it in its]
        for key in ("x", "y"):
            assert all(x[key].shape[0] == 8 // process_count for x in local)
            np.testing.assert_array_equal(np.concatenate([x[key] for x in local]), ref[b][key])


@pytest.mark.parametrize("process_count", [2, 4])
def test_each_process_reads_only_its_rows(process_count):
    local = 8 // process_count
    ref = _take(make_batch_iterator(CountingSource(20), global_batch_size=8, seed=5), 30)
    # Synchronous reads: exactly this process's rows of the batches taken, in order.
    for p in range(process_count):
        src = CountingSource(20)
        it = make_batch_iterator(src, global_batch_size=8, seed=5, process_index=p,
                                 process_count=process_count, num_threads=0)
        _take(it, 6)
        assert src.reads == _own_rows(ref[:6], p, local)
    # With reader threads prefetching ahead (reads may still be in flight, so compare multisets):
    # the rows of the batches taken, and otherwise only own rows of the next few global batches.
    # 200 records: the 14 batches checked lie in one epoch, so processes' rows are disjoint.
    ref = _take(make_batch_iterator(CountingSource(200), global_batch_size=8, seed=5), 14)
    for p in range(process_count):
        src = CountingSource(200)
        it = make_batch_iterator(src, global_batch_size=8, seed=5, process_index=p,
                                 process_count=process_count, num_threads=2,
                                 prefetch_buffer_size=4)
        _take(it, 6)
        reads = collections.Counter(src.reads)
        assert not collections.Counter(_own_rows(ref[:6], p, local)) - reads
        assert not reads - collections.Counter(_own_rows(ref[:14], p, local))
        it.close()


def test_epochs_are_reshuffled_and_seeds_differ():
    it = make_batch_iterator(CountingSource(16), global_batch_size=16, seed=0)
    epochs = _take(it, 3)
    assert all(sorted(e) == list(range(16)) for e in epochs)
    assert len({tuple(e) for e in epochs}) == 3
    assert epochs[0] != list(range(16))
    other_seed = _take(make_batch_iterator(CountingSource(16), global_batch_size=16, seed=1), 2)
    assert other_seed[0] not in epochs and other_seed[1] != epochs[0]
    same_seed = _take(make_batch_iterator(CountingSource(16), global_batch_size=16, seed=0), 3)
    assert same_seed == epochs
    ordered = _take(make_batch_iterator(CountingSource(6), global_batch_size=4, seed=None,
                                        shuffle=False), 3)
    assert ordered == [[0, 1, 2, 3], [4, 5, 0, 1], [2, 3, 4, 5]]


def test_finite_epochs_and_remainder():
    it = make_batch_iterator(CountingSource(10), global_batch_size=4, seed=0, num_epochs=2)
    batches = list(it)  # 20 indices -> 5 full batches
    assert len(batches) == 5
    assert sorted(sum((b["x"][:, 0].tolist() for b in batches), [])) == sorted(2 * list(range(10)))
    kept = list(make_batch_iterator(CountingSource(10), global_batch_size=4, seed=0,
                                    num_epochs=1, drop_remainder=False))
    assert [b["x"].shape[0] for b in kept] == [4, 4, 2]
    dropped = list(make_batch_iterator(CountingSource(10), global_batch_size=4, seed=0,
                                       num_epochs=1))
    assert [b["x"].shape[0] for b in dropped] == [4, 4]


def test_resume_with_get_and_set_state():
    it = make_batch_iterator(CountingSource(20), global_batch_size=4, seed=1)
    _take(it, 7)
    state = it.get_state()
    assert json.loads(json.dumps(state)) == state  # JSON, as grain's orbax handler writes it
    expected = _take(it, 5)
    fresh = make_batch_iterator(CountingSource(20), global_batch_size=4, seed=1)
    fresh.set_state(state)
    assert _take(fresh, 5) == expected
    # The state counts global batches: it also resumes a process of a 2-process run.
    half = make_batch_iterator(CountingSource(20), global_batch_size=4, seed=1, process_index=1,
                               process_count=2)
    half.set_state(state)
    assert _take(half, 5) == [b[2:] for b in expected]


def test_state_of_another_stream_is_refused():
    state = make_batch_iterator(CountingSource(20), global_batch_size=4, seed=1).get_state()
    for kwargs in (dict(global_batch_size=8, seed=1), dict(global_batch_size=4, seed=2)):
        other = make_batch_iterator(CountingSource(20), **kwargs)
        with pytest.raises(ValueError, match="another data stream"):
            other.set_state(state)
    with pytest.raises(ValueError, match="another data stream.*num_records"):
        make_batch_iterator(CountingSource(21), global_batch_size=4, seed=1).set_state(state)


def test_resume_through_an_orbax_checkpoint(tmp_path):
    it = make_batch_iterator(CountingSource(20), global_batch_size=4, seed=1)
    _take(it, 7)
    options = ocp.CheckpointManagerOptions(max_to_keep=2, create=True)
    with ocp.CheckpointManager(str(tmp_path), options=options,
                               item_names=("data_iter",)) as mngr:
        mngr.save(7, args=ocp.args.Composite(data_iter=grain.checkpoint.CheckpointSave(it)))
        mngr.wait_until_finished()
    expected = _take(it, 5)
    fresh = make_batch_iterator(CountingSource(20), global_batch_size=4, seed=1)
    with ocp.CheckpointManager(str(tmp_path), options=options,
                               item_names=("data_iter",)) as mngr:
        assert mngr.latest_step() == 7
        restored = mngr.restore(7, args=ocp.args.Composite(
            data_iter=grain.checkpoint.CheckpointRestore(fresh)))
    assert restored["data_iter"] is fresh
    assert _take(fresh, 5) == expected


def test_transform_applies_to_the_stacked_local_batch():
    def transform(batch):
        return {"x2": batch["x"][:, 0] * 2, "n": np.full((batch["x"].shape[0],), len(batch))}

    it = make_batch_iterator(CountingSource(8), global_batch_size=4, seed=None, shuffle=False,
                             process_index=1, process_count=2, transform=transform)
    batch = next(it)
    np.testing.assert_array_equal(batch["x2"], [4, 6])
    np.testing.assert_array_equal(batch["n"], [2, 2])


def test_reads_a_tfds_array_record_source(tmp_path):
    features = {"ids": ((3,), np.int32), "gold": ((), np.float32)}
    examples = [{"ids": np.array([i, i, i], np.int32), "gold": np.float32(i / 3)}
                for i in range(12)]
    write_preference_dataset(str(tmp_path), splits={"train": examples}, features=features)
    src = load_preference_source(str(tmp_path))
    it = make_batch_iterator(src, global_batch_size=6, seed=0, num_epochs=1)
    batches = list(it)
    assert len(batches) == 2
    for b in batches:
        assert b["ids"].shape == (6, 3) and b["ids"].dtype == np.int32
        assert b["gold"].shape == (6,) and b["gold"].dtype == np.float32
        np.testing.assert_array_equal(b["gold"], (b["ids"][:, 0] / 3).astype(np.float32))
    assert sorted(np.concatenate([b["ids"][:, 0] for b in batches])) == list(range(12))


def test_bad_arguments():
    src = CountingSource(20)
    with pytest.raises(ValueError, match="not divisible by process_count=4"):
        make_batch_iterator(src, global_batch_size=6, seed=0, process_count=4)
    with pytest.raises(ValueError, match="process_index=2 is not in"):
        make_batch_iterator(src, global_batch_size=4, seed=0, process_index=2, process_count=2)
    with pytest.raises(ValueError, match="global_batch_size must be a positive int"):
        make_batch_iterator(src, global_batch_size=0, seed=0)
    with pytest.raises(ValueError, match="fewer than one batch"):
        make_batch_iterator(CountingSource(3), global_batch_size=4, seed=0)
    with pytest.raises(ValueError, match="source is empty"):
        make_batch_iterator(CountingSource(0), global_batch_size=4, seed=0)
    with pytest.raises(ValueError, match="drop_remainder=False needs process_count == 1"):
        make_batch_iterator(src, global_batch_size=4, seed=0, process_count=2,
                            drop_remainder=False)
    with pytest.raises(ValueError, match="num_epochs"):
        make_batch_iterator(src, global_batch_size=4, seed=0, num_epochs=0)
    with pytest.raises(ValueError, match="seed"):
        make_batch_iterator(src, global_batch_size=4, seed=-1)
    assert src.reads == []  # nothing read when the arguments are refused
