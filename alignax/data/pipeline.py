"""grain pipelines: shuffled, repeated, per-process batches that resume exactly.

The global batch is the same whatever the number of processes: indices are shuffled and batched
globally, then each process reads only its contiguous slice of rows. Concatenating the local
batches of processes 0..P-1 gives the single-process batch, so a run's numbers do not depend on
how it is spread over hosts.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import grain
import numpy as np


def _stack(records: list[Mapping[str, Any]]) -> dict[str, np.ndarray]:
    return {k: np.stack([np.asarray(r[k]) for r in records]) for k in records[0]}


def make_batch_iterator(
    source,
    *,
    global_batch_size: int,
    seed: int,
    shuffle: bool = True,
    num_epochs: int | None = None,
    process_index: int = 0,
    process_count: int = 1,
    transform: Callable[[dict[str, np.ndarray]], Any] | None = None,
    drop_remainder: bool = True,
    prefetch: int = 8,
    num_threads: int = 2,
) -> grain.DatasetIterator:
    """This process's batches of `source` (dicts of stacked numpy arrays).

    Args:
      source: random-access source: `len(source)`, `source[i]` -> dict of numpy arrays.
      global_batch_size: rows of a global batch; must be divisible by `process_count`.
      seed: shuffle seed (each epoch is reshuffled).
      shuffle: shuffle indices (else epochs repeat the source order).
      num_epochs: epochs to iterate; None repeats forever.
      process_index: this process (jax.process_index()).
      process_count: number of processes (jax.process_count()).
      transform: optional function of the stacked local batch.
      drop_remainder: drop a last incomplete global batch at the end of the stream. Epochs are
        concatenated before batching, so a batch may straddle two epochs.

    Returns:
      A checkpointable grain DatasetIterator (`get_state`/`set_state`, orbax via
      `grain.checkpoint.CheckpointSave/CheckpointRestore`).
    """
    if global_batch_size <= 0 or global_batch_size % process_count:
        raise ValueError(
            f"global_batch_size={global_batch_size} must be positive and divisible by "
            f"process_count={process_count}")
    if not 0 <= process_index < process_count:
        raise ValueError(f"process_index={process_index} not in [0, {process_count})")
    n = len(source)
    if n < global_batch_size and drop_remainder:
        raise ValueError(f"source has {n} records, fewer than one batch of {global_batch_size}")
    local = global_batch_size // process_count
    lo = process_index * local

    ds = grain.MapDataset.range(n)
    if shuffle:
        ds = ds.seed(seed).shuffle()
    ds = ds.repeat(num_epochs)
    ds = ds.batch(global_batch_size, drop_remainder=drop_remainder)

    def load(indices: np.ndarray) -> dict[str, np.ndarray]:
        mine = np.asarray(indices)[lo:lo + local]
        batch = _stack([source[int(i)] for i in mine])
        return transform(batch) if transform is not None else batch

    options = grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=prefetch)
    return iter(ds.map(load).to_iter_dataset(options))
