"""Checkpointer: unreadable steps moved aside, all-unreadable error, plain iterators in run_loop."""

import os
import warnings

import jax.numpy as jnp
import numpy as np
import pytest

from alignax.data.pipeline import make_batch_iterator
from alignax.train.checkpoint import (CheckpointError, CheckpointFallbackWarning, Checkpointer,
                                      abstract_like)
from alignax.train.loop import InexactResumeWarning, run_loop


def _state(value):
    return {"w": jnp.full((3,), float(value)), "n": jnp.asarray(int(value))}


def _corrupt(step_dir):
    corrupted = 0
    for root, _, files in os.walk(os.path.join(step_dir, "state")):
        for name in files:
            with open(os.path.join(root, name), "wb") as f:
                f.write(b"\x00garbage")
            corrupted += 1
    assert corrupted > 0


def _restore(ckpt):
    return ckpt.restore(abstract_like(_state(0)))


def test_unreadable_step_is_moved_aside_resaved_and_not_counted_by_max_to_keep(tmp_path):
    directory = str(tmp_path / "checkpoints")
    ckpt = Checkpointer(directory, every=2, max_to_keep=2)
    for step in (2, 4, 6):
        assert ckpt.save(step, _state(step))
    ckpt.close()
    _corrupt(os.path.join(directory, "6"))

    ckpt = Checkpointer(directory, every=2, max_to_keep=2)
    moved = "step 6 .*; resumed from step 4 and moved step 6 aside to .*corrupt-6$"
    with pytest.warns(CheckpointFallbackWarning, match=moved):
        state, step = _restore(ckpt)
    assert step == 4 and int(state["n"]) == 4
    assert os.path.isdir(os.path.join(directory, "corrupt-6"))
    assert ckpt.all_steps() == [4]
    # The resumed run saves step 6 again (it used to be skipped as "already saved") ...
    assert ckpt.save(6, _state(6))
    # ... and the next save evicts step 4, not a good checkpoint in favour of the corrupt one.
    assert ckpt.save(8, _state(8))
    ckpt.close()
    assert sorted(os.listdir(directory)) == ["6", "8", "corrupt-6"]

    ckpt = Checkpointer(directory, every=2, max_to_keep=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error", CheckpointFallbackWarning)
        state, step = _restore(ckpt)
    assert step == 8 and int(state["n"]) == 8
    ckpt.close()


def test_a_step_unreadable_twice_keeps_both_copies_aside(tmp_path):
    directory = str(tmp_path / "checkpoints")
    for _ in range(2):
        ckpt = Checkpointer(directory, every=2, max_to_keep=3)
        ckpt.save(2, _state(2))
        ckpt.save(4, _state(4))
        ckpt.wait()
        _corrupt(os.path.join(directory, "4"))
        with pytest.warns(CheckpointFallbackWarning):
            assert _restore(ckpt)[1] == 2
        ckpt.close()
    assert sorted(os.listdir(directory)) == ["2", "corrupt-4", "corrupt-4-2"]


def test_all_steps_unreadable_raises_one_line_naming_the_folder_and_moves_nothing(tmp_path):
    directory = str(tmp_path / "checkpoints")
    ckpt = Checkpointer(directory, every=2, max_to_keep=3)
    for step in (2, 4):
        ckpt.save(step, _state(step))
    ckpt.close()
    for step in ("2", "4"):
        _corrupt(os.path.join(directory, step))
    ckpt = Checkpointer(directory, every=2)
    with pytest.raises(CheckpointError) as info:
        _restore(ckpt)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"none of the 2 checkpoints in {directory} (steps 4, 2) can be "
                              f"restored; move or delete {directory} to start this run afresh")
    assert isinstance(info.value, RuntimeError)
    assert [e.split(":")[0] for e in info.value.errors] == ["step 4", "step 2"]
    assert sorted(os.listdir(directory)) == ["2", "4"]
    ckpt.close()


class DictStateIterator:
    """A plain iterator with its own get_state (not a grain iterator)."""

    def __init__(self, batches):
        self._batches, self._i = batches, 0

    def __iter__(self):
        return self

    def __next__(self):
        self._i += 1
        return self._batches[(self._i - 1) % len(self._batches)]

    def get_state(self):
        return {"i": self._i}


_BATCHES = [{"x": np.full((2,), float(i), np.float32)} for i in range(20)]


def _step(state, batch):
    return {"acc": state["acc"] + jnp.sum(batch["x"])}, {"loss": jnp.sum(batch["x"])}


def _run(workdir, num_steps, data_iter):
    return run_loop(str(workdir), init_state=lambda: {"acc": jnp.zeros(())}, step_fn=_step,
                    num_steps=num_steps, data_iter=data_iter, checkpoint_every=2, max_to_keep=2,
                    progress=False)


@pytest.mark.parametrize("make_iter", [lambda: iter(_BATCHES), lambda: (b for b in _BATCHES),
                                       lambda: DictStateIterator(_BATCHES)],
                         ids=["list_iterator", "generator", "own_get_state"])
def test_plain_iterator_checkpoints_and_resume_warns_once_that_data_restarts(tmp_path,
                                                                             make_iter):
    res = _run(tmp_path, 5, make_iter())  # saves at 2, 4 and 5
    assert res.resumed_from is None
    assert float(res.state["acc"]) == 2 * sum(range(5))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = _run(tmp_path, 9, make_iter())
    inexact = [w for w in caught if issubclass(w.category, InexactResumeWarning)]
    assert len(inexact) == 1
    assert "at step 5" in str(inexact[0].message) and "restarts from the beginning" in str(
        inexact[0].message)
    assert res.resumed_from == 5
    # steps 6..9 read batches 0..3 again: the documented inexact resume
    assert float(res.state["acc"]) == 2 * (sum(range(5)) + sum(range(4)))
    with warnings.catch_warnings():  # a complete run resumed has no data to read: no warning
        warnings.simplefilter("error", InexactResumeWarning)
        assert _run(tmp_path, 9, make_iter()).resumed_from == 9


def test_grain_iterator_resume_is_exact_without_a_warning(tmp_path):
    records = [{"x": np.full((2,), float(i), np.float32)} for i in range(16)]

    def make():
        return make_batch_iterator(records, global_batch_size=2, seed=3)

    full = _run(tmp_path / "full", 9, make())
    _run(tmp_path / "part", 5, make())
    with warnings.catch_warnings():
        warnings.simplefilter("error", InexactResumeWarning)
        part = _run(tmp_path / "part", 9, make())
    assert part.resumed_from == 5
    assert float(part.state["acc"]) == float(full.state["acc"])


def test_checkpointer_refuses_a_non_grain_iterator_in_one_line(tmp_path):
    ckpt = Checkpointer(str(tmp_path / "checkpoints"), every=1)
    with pytest.raises(TypeError, match="^data_iter of type DictStateIterator cannot be "
                                        "checkpointed: only grain iterators"):
        ckpt.save(1, _state(1), DictStateIterator(_BATCHES))
    ckpt.close()
