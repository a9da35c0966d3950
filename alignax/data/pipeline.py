"""grain pipelines: shuffled, repeated batches, split over processes, that resume exactly.

The stream of global batches depends only on `(len(source), global_batch_size, seed, shuffle,
num_epochs, drop_remainder)`, never on the number of processes:

1. indices `grain.MapDataset.range(N).seed(seed).shuffle()` (grain reshuffles every epoch with a
   seed derived from `seed` and the epoch), repeated `num_epochs` times (None: forever);
2. epochs are concatenated and cut into global batches of `global_batch_size` indices (a batch
   may straddle two epochs when N is not a multiple of the batch size);
3. process p keeps rows `[p * L, (p + 1) * L)` of each global batch, L = global_batch_size //
   process_count, and only then reads those L records from `source`, stacks them and applies
   `transform`.

Concatenating the local batches of processes 0..P-1 therefore gives the single-process batch,
so a run's numbers do not depend on how it is spread over hosts, and each process reads only
its own rows.

The iterator is a `grain.DatasetIterator`: `get_state()` / `set_state()` resume exactly (the
state counts global batches, so it is even valid for another process count), and it can be
saved in an orbax checkpoint with `grain.checkpoint.CheckpointSave(it)` /
`grain.checkpoint.CheckpointRestore(it)` inside `ocp.args.Composite`. The state also records
the stream's parameters, and `set_state` refuses a state written by a different stream (other
batch size, seed, source length, ...), which would otherwise resume silently on other data.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import grain
import numpy as np

_STATE_INNER = "pipeline_iterator"
_STATE_STREAM = "stream"


def _stack(records: Sequence[Any]) -> Any:
    """Stacks a list of (nested) dicts of arrays along a new leading axis."""
    first = records[0]
    if isinstance(first, Mapping):
        keys = set(first)
        for r in records[1:]:
            if set(r) != keys:
                raise ValueError(f"records have different keys: {sorted(keys)} vs {sorted(r)}")
        return {k: _stack([r[k] for r in records]) for k in first}
    return np.stack([np.asarray(r) for r in records])


class _LocalBatchReader:
    """Global batch of indices -> this process's stacked (and transformed) rows."""

    def __init__(self, source, start: int, size: int, transform):
        self._source = source
        self._start = start
        self._size = size
        self._transform = transform
        self._batched = callable(getattr(source, "__getitems__", None))

    def __call__(self, indices: np.ndarray) -> Any:
        rows = [int(i) for i in np.asarray(indices)[self._start:self._start + self._size]]
        if self._batched:
            records = list(self._source.__getitems__(rows))
        else:
            records = [self._source[i] for i in rows]
        batch = _stack(records)
        return self._transform(batch) if self._transform is not None else batch


class _StreamIterator(grain.DatasetIterator):
    """Delegates to grain's iterator; its state also carries the stream's parameters."""

    def __init__(self, parent: grain.DatasetIterator, stream: dict[str, Any]):
        super().__init__(parent)
        self._stream = stream

    def __next__(self):
        return next(self._parent)

    def get_state(self) -> dict[str, Any]:
        return {_STATE_INNER: self._parent.get_state(), _STATE_STREAM: dict(self._stream)}

    def set_state(self, state: dict[str, Any]) -> None:
        if _STATE_INNER not in state or _STATE_STREAM not in state:
            raise ValueError(f"not a state of make_batch_iterator: keys {sorted(state)}")
        saved = dict(state[_STATE_STREAM])
        if saved != self._stream:
            diff = {k: (saved.get(k), self._stream.get(k))
                    for k in sorted(set(saved) | set(self._stream))
                    if saved.get(k) != self._stream.get(k)}
            raise ValueError(f"iterator state belongs to another data stream; (saved, current) "
                             f"differ in {diff}")
        self._parent.set_state(state[_STATE_INNER])

    def __str__(self) -> str:
        return f"BatchIterator({self._stream})"


def make_batch_iterator(
    source,
    *,
    global_batch_size: int,
    seed: int | None,
    shuffle: bool = True,
    num_epochs: int | None = None,
    process_index: int = 0,
    process_count: int = 1,
    transform: Callable[[Any], Any] | None = None,
    drop_remainder: bool = True,
    num_threads: int = 2,
    prefetch_buffer_size: int = 4,
) -> grain.DatasetIterator:
    """Iterator over this process's local batches of `source` (see the module docstring).

    Args:
      source: random-access source: `len(source)` and `source[i]` -> dict of numpy arrays (all
        records with the same keys and shapes); if it has `__getitems__(indices)` that is used to
        read a batch in one call. It must hold the same records on every process.
      global_batch_size: rows of a global batch; divisible by `process_count`.
      seed: shuffle seed in [0, 2**32); every epoch is reshuffled. Unused (may be None) when
        `shuffle` is False.
      shuffle: shuffle (else every epoch is the source order).
      num_epochs: epochs to iterate, or None to repeat forever.
      process_index: this process, in [0, process_count) (e.g. `jax.process_index()`).
      process_count: number of processes (e.g. `jax.process_count()`).
      transform: function of the stacked local batch (dict of [L, ...] arrays), applied after
        reading. It runs in grain's reader threads: it must be thread-safe, and deterministic
        for exact resume.
      drop_remainder: drop a final incomplete global batch (only reachable with finite
        `num_epochs`). Keeping it requires `process_count == 1`, since the processes' shares
        of a short batch would differ in size.
      num_threads: grain reader threads (0: read synchronously in `next`).
      prefetch_buffer_size: local batches read ahead by those threads.

    Returns:
      A `grain.DatasetIterator` yielding dicts of [L, ...] numpy arrays (after `transform`, its
      output), L = global_batch_size // process_count.

    Raises:
      ValueError: bad sizes or indices, an empty source, or a source smaller than one batch.
    """
    for arg, value in (("global_batch_size", global_batch_size),
                       ("process_count", process_count)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
            raise ValueError(f"{arg} must be a positive int, got {value!r}")
    global_batch_size, process_count = int(global_batch_size), int(process_count)
    process_index = int(process_index)
    if global_batch_size % process_count:
        raise ValueError(f"global_batch_size={global_batch_size} is not divisible by "
                         f"process_count={process_count}")
    if not 0 <= process_index < process_count:
        raise ValueError(f"process_index={process_index} is not in [0, {process_count})")
    if num_epochs is not None:
        if isinstance(num_epochs, bool) or not isinstance(num_epochs, (int, np.integer)) or (
                num_epochs <= 0):
            raise ValueError(f"num_epochs must be a positive int or None, got {num_epochs!r}")
        num_epochs = int(num_epochs)
    if not drop_remainder and process_count > 1:
        raise ValueError("drop_remainder=False needs process_count == 1: the processes' shares "
                         "of a final short batch would differ in size")
    if shuffle:
        seed = int(seed)
        if not 0 <= seed < 2**32:
            raise ValueError(f"seed must be in [0, 2**32), got {seed}")
    num_records = len(source)
    if num_records == 0:
        raise ValueError("source is empty")
    if num_records < global_batch_size:
        raise ValueError(f"source has {num_records} records, fewer than one batch of "
                         f"{global_batch_size}: a batch would repeat records")

    indices = grain.MapDataset.range(num_records)
    if shuffle:
        indices = indices.seed(seed).shuffle()
    if num_epochs != 1:
        indices = indices.repeat(num_epochs)
    batches = indices.batch(global_batch_size, drop_remainder=drop_remainder)
    local_size = global_batch_size // process_count
    reader = _LocalBatchReader(source, process_index * local_size, local_size, transform)
    options = grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=prefetch_buffer_size)
    inner = iter(batches.map(reader).to_iter_dataset(options))
    stream = {"num_records": num_records, "global_batch_size": global_batch_size,
              "seed": seed if shuffle else None, "shuffle": bool(shuffle),
              "num_epochs": num_epochs, "drop_remainder": bool(drop_remainder)}
    return _StreamIterator(inner, stream)
