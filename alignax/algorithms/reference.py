"""Reference log-probs computed once over a pair dataset and stored with it (TRL's
`precompute_ref_log_probs`).

A DPO-family step with a frozen reference runs two models forward per batch; the reference's
summed response log-probs

    ref_chosen_logps[n]   = sum_t m^c_{n,t} log pi_ref(y^c_{n,t+1} | y^c_{n,<=t})
    ref_rejected_logps[n] = sum_t m^r_{n,t} log pi_ref(y^r_{n,t+1} | y^r_{n,<=t})

(`alignax.algorithms.direct.pair_logps`, m the response masks) do not change during training,
so `precompute_ref_logps` computes them in one pass over the dataset and returns a source whose
records also hold them. The training step then needs neither the reference's forward nor its
activations; with `with_ref_logps` (or a direct loss that reads the per-pair fields) the
reference params need not even be on the device during training.

Storage: `workdir/ref_logps/<fingerprint>/`, NumPy .npy files (read with allow_pickle=False;
no pickle), the fingerprint a SHA-256 of (number of records, a hash of every record's six
input fields, the reference's params hash or a caller-given key). The pass writes one file per
`chunk_batches` batches as it goes (atomically: a temporary file renamed into place), so an
interrupted pass continues from its last complete chunk, and a finished pass leaves one
`ref_logps.npy` [N, 2] (chosen, rejected) that a second call, or a resumed run, loads without
running the model.

`precompute_row_logps` is the same store for any K reference values per record, computed by a
given jitted `forward(params, batch) -> [B, K]` (KTO: the summed completion log-probs of each
row and of its fixed KL row, `alignax.algorithms.kto`); its fingerprint also names the K output
fields and hashes the fields `forward` reads.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import tempfile
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from alignax.algorithms.direct import pair_logps
from alignax.train import sharding as shd

PAIR_FIELDS = ("chosen_ids", "rejected_ids", "chosen_mask", "rejected_mask",
               "chosen_response_mask", "rejected_response_mask")
REF_FIELDS = ("ref_chosen_logps", "ref_rejected_logps")
FINAL_FILE = "ref_logps.npy"
META_FILE = "meta.json"


def stack_ref_logps(batch: Mapping[str, Any]) -> dict:
    """`ref_logps` [2B] (chosen rows, then rejected rows: the layout
    `alignax.algorithms.direct.make_direct_loss` reads) from a batch's `ref_chosen_logps` and
    `ref_rejected_logps` [B]. Works on numpy or jax arrays, inside jit."""
    xp = jnp if any(isinstance(batch[k], jax.Array) for k in REF_FIELDS) else np
    return {**batch, "ref_logps": xp.concatenate([batch[REF_FIELDS[0]], batch[REF_FIELDS[1]]])}


def with_ref_logps(loss_fn: Callable) -> Callable:
    """`loss_fn` fed `stack_ref_logps(batch)`: a direct loss reading `ref_logps` [2B] then trains
    on batches of a `RefLogpsSource` (whose per-pair fields are [B]).

    The stacking happens inside the loss, on the global (micro-)batch, so it is right on any
    mesh, with several processes (each holding some rows) and with gradient accumulation;
    stacking in the data pipeline instead would put each process's chosen rows before its own
    rejected rows only.
    """

    def wrapped(params, batch, rng, *args, **kwargs):
        return loss_fn(params, stack_ref_logps(batch), rng, *args, **kwargs)

    return wrapped


def _hash_array(h, name: str, x) -> None:
    x = np.ascontiguousarray(np.asarray(x))
    h.update(f"{name}|{x.dtype.str}|{x.shape}|".encode())
    h.update(x.tobytes())


def records_hash(source) -> str:
    """SHA-256 of the six pair fields of every record, in order (reads the whole source)."""
    h = hashlib.sha256()
    for i in range(len(source)):
        record = source[i]
        missing = [k for k in PAIR_FIELDS if k not in record]
        if missing:
            raise ValueError(f"record {i} has no {missing}; a pair record needs {PAIR_FIELDS}")
        for k in PAIR_FIELDS:
            _hash_array(h, k, record[k])
    return h.hexdigest()


def params_hash(params) -> str:
    """SHA-256 of a params tree (paths, dtypes, shapes and values; copies it to the host)."""
    h = hashlib.sha256()
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:
            raise ValueError("the reference params are not all on this process: pass `key` "
                             "(a name of the reference) to precompute_ref_logps")
        _hash_array(h, jax.tree_util.keystr(path), jax.device_get(leaf))
    return h.hexdigest()


def _atomic_save(path: str, array: np.ndarray) -> None:
    folder, name = os.path.split(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            np.save(f, array, allow_pickle=False)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def _load(path: str, shape: tuple[int, ...]) -> np.ndarray | None:
    """The float32 array stored at `path`, or None if it is missing, unreadable or another
    shape (then it is recomputed)."""
    try:
        x = np.load(path, allow_pickle=False)
    except (OSError, ValueError):
        return None
    return x if x.shape == shape and x.dtype == np.float32 else None


def _chunk_path(directory: str, start: int, end: int) -> str:
    return os.path.join(directory, f"rows-{start:09d}-{end:09d}.npy")


def precompute_ref_logps(
    apply_fn: Callable,
    ref_params: Any,
    source,
    *,
    batch_size: int,
    workdir: str | None = None,
    key: str | None = None,
    chunk_batches: int = 64,
    mesh: jax.sharding.Mesh | None = None,
    token_logps: bool = False,
) -> RefLogpsSource:
    """The reference's summed response log-probs of every pair of `source`, computed once.

    Runs `pair_logps(apply_fn, ref_params, batch)` (one jitted forward over the 2 x batch_size
    stacked rows) over `source` in order, in batches of `batch_size` records; the last, partial
    batch is padded with copies of the last record to `batch_size` (one compiled shape) and the
    padded rows' outputs are dropped. With `workdir` the values are stored there (see the
    module docstring) under a fingerprint of (len(source), `records_hash(source)`, `key` or
    `params_hash(ref_params)`): a call whose fingerprint is already complete loads them
    without running the model; an interrupted pass continues after its last complete chunk.

    Args:
      apply_fn: the LM's `apply(params, input_ids [B, T], mask [B, T]) -> logits [B, T, V]`.
      ref_params: the frozen reference's params (on the device or mesh they run on).
      source: random-access pair source: `len(source)`, `source[i]` -> a record with
        chosen_ids, rejected_ids, chosen_mask, rejected_mask, chosen_response_mask,
        rejected_response_mask [T] (see alignax.algorithms.common), all of one shape.
      batch_size: records per forward (with `mesh`, divisible by its data x fsdp shards).
      workdir: folder to store the values in (None: compute in memory, store nothing).
      key: names the reference (weights, architecture, compute dtype) instead of hashing
        `ref_params`, which copies them to the host; required for params spread over several
        processes. The same key with other weights would load stale values.
      chunk_batches: batches per stored chunk: how much work an interruption can lose.
      mesh: with a mesh, every batch is split by rows over its data x fsdp axes.
      token_logps: `apply_fn` takes `targets=` and returns token log-probs instead of logits
        (a model with chunked log-probs; see `alignax.algorithms.direct.pair_logps`).

    Returns:
      A `RefLogpsSource`: the records of `source` plus `ref_chosen_logps` and
      `ref_rejected_logps` (float32 scalars).

    Raises:
      ValueError: a non-positive batch_size or chunk_batches, an empty source, a record without
        the pair fields, or a batch_size the mesh's shards do not divide.
      NotImplementedError: the values are not stored yet and this job has several processes
        (run the pass in one process first; every process then loads them).
    """
    for name, value in (("batch_size", batch_size), ("chunk_batches", chunk_batches)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    n = len(source)
    if n == 0:
        raise ValueError("source is empty")
    missing = [k for k in PAIR_FIELDS if k not in source[0]]
    if missing:
        raise ValueError(f"record 0 has no {missing}; a pair record needs {PAIR_FIELDS}")
    sharding = _batch_sharding(mesh, batch_size)
    directory, done = None, None
    if workdir is not None:
        records = records_hash(source)
        reference = f"key:{key}" if key is not None else f"params:{params_hash(ref_params)}"
        fingerprint = hashlib.sha256(f"{n}|{records}|{reference}".encode()).hexdigest()[:24]
        directory, done = _open_store(workdir, fingerprint, (n, 2), {
            "records": n, "records_sha256": records, "reference": reference,
            "fields": list(REF_FIELDS)})
    if done is None:
        forward = jax.jit(lambda params, batch: jnp.stack(
            pair_logps(apply_fn, params, batch, token_logps=token_logps), -1))
        done, computed = _compute_rows(forward, ref_params, source, PAIR_FIELDS, 2,
                                       batch_size=batch_size, chunk_batches=chunk_batches,
                                       directory=directory, sharding=sharding,
                                       name="precompute_ref_logps")
    else:
        computed = 0
    return RefLogpsSource(source, done, directory, computed=computed)


def _batch_sharding(mesh, batch_size: int):
    """Rows over the mesh's data x fsdp axes (None without a mesh); ValueError when
    `batch_size` does not split over them."""
    if mesh is None:
        return None
    shards = int(mesh.shape["data"]) * int(mesh.shape["fsdp"])
    if batch_size % shards:
        raise ValueError(f"batch_size={batch_size} does not split over the mesh's "
                         f"data x fsdp = {shards} shards")
    return shd.batch_sharding(mesh)


def _open_store(workdir: str, fingerprint: str, shape: tuple[int, int], meta: dict):
    """(directory, the finished [N, K] values or None) of the store `workdir/ref_logps/
    <fingerprint>/`; a store without its final file gets `meta.json` (again)."""
    directory = os.path.join(workdir, "ref_logps", fingerprint)
    done = _load(os.path.join(directory, FINAL_FILE), shape)
    if done is None:
        os.makedirs(directory, exist_ok=True)
        with open(os.path.join(directory, META_FILE), "w") as f:
            json.dump(meta, f, indent=1)
    return directory, done


def _compute_rows(jitted, ref_params, source, input_fields, k: int, *, batch_size: int,
                  chunk_batches: int, directory: str | None, sharding, name: str):
    """[N, K] float32 `jitted(ref_params, batch)` over `source` in order and the number of
    records computed: batches of `batch_size` records (the last padded with copies of its last
    record, whose outputs are dropped) stacked over `input_fields`; with `directory`, chunks of
    `chunk_batches` batches are written atomically as the pass goes (an interrupted pass
    continues after its last complete chunk), then the final file, and the chunks removed."""
    if jax.process_count() > 1:
        raise NotImplementedError(
            f"{name} computes in one process; run it once in a single process with the same "
            f"workdir, then every process of this job loads the stored values")
    n = len(source)

    def compute(start: int, end: int) -> np.ndarray:
        out = []
        for lo in range(start, end, batch_size):
            rows = list(range(lo, min(lo + batch_size, end)))
            rows += [rows[-1]] * (batch_size - len(rows))  # pad the last batch, dropped below
            records = [source[i] for i in rows]
            batch = {f: np.stack([np.asarray(r[f]) for r in records]) for f in input_fields}
            if sharding is not None:
                batch = jax.device_put(batch, sharding)
            values = np.asarray(jitted(ref_params, batch), np.float32)
            if values.shape != (batch_size, k):
                raise ValueError(f"forward returned {values.shape}, expected "
                                 f"({batch_size}, {k})")
            out.append(values)
        return np.concatenate(out)[: end - start]

    chunk = batch_size * chunk_batches
    parts, computed = [], 0
    for start in range(0, n, chunk):
        end = min(start + chunk, n)
        path = None if directory is None else _chunk_path(directory, start, end)
        values = None if path is None else _load(path, (end - start, k))
        if values is None:
            values = compute(start, end)
            computed += end - start
            if path is not None:
                _atomic_save(path, values)
        parts.append(values)
    logps = np.concatenate(parts)
    if directory is not None:
        _atomic_save(os.path.join(directory, FINAL_FILE), logps)
        for path in glob.glob(os.path.join(directory, "rows-*.npy")):
            os.remove(path)
    return logps, computed


class RowLogpsSource:
    """A random-access source whose records also hold K precomputed float32 scalars, named by
    `fields` (the row-wise generalisation of `RefLogpsSource`, e.g. KTO's `ref_logps` and
    `kl_ref_logps`).

    Attributes:
      source: the wrapped source (`len`, `source[i]` -> dict of arrays).
      logps: [N, K] float32, column k is `fields[k]`.
      fields: the K names.
      directory: where they are stored (None: computed in memory only).
      computed: how many records this call ran the reference on (0 when loaded).
    """

    def __init__(self, source, logps: np.ndarray, fields, directory: str | None = None,
                 computed: int = 0):
        fields = tuple(fields)
        if logps.shape != (len(source), len(fields)):
            raise ValueError(f"logps {logps.shape} do not match a source of {len(source)} "
                             f"records and the fields {fields}")
        self.source, self.logps, self.fields = source, logps, fields
        self.directory, self.computed = directory, computed

    def __len__(self) -> int:
        return len(self.source)

    def _with_logps(self, record: Mapping[str, Any], i) -> dict:
        row = self.logps[i]
        return {**record, **{k: np.float32(row[j]) for j, k in enumerate(self.fields)}}

    def __getitem__(self, i):
        return self._with_logps(self.source[i], i)

    def __getitems__(self, indices):
        indices = list(indices)
        getitems = getattr(self.source, "__getitems__", None)
        records = getitems(indices) if callable(getitems) else [self.source[i] for i in indices]
        return [self._with_logps(r, i) for r, i in zip(records, indices)]


class RefLogpsSource(RowLogpsSource):
    """A random-access pair source whose records also hold `ref_chosen_logps` and
    `ref_rejected_logps` (float32 scalars): a `RowLogpsSource` with those two fields.

    Attributes:
      source: the wrapped source (`len`, `source[i]` -> dict of arrays).
      logps: [N, 2] float32, column 0 chosen, column 1 rejected.
      directory: where they are stored (None: computed in memory only).
      computed: how many records this call ran the reference on (0 when loaded).
    """

    def __init__(self, source, logps: np.ndarray, directory: str | None = None,
                 computed: int = 0):
        super().__init__(source, logps, REF_FIELDS, directory, computed)


def rows_hash(source, fields) -> str:
    """SHA-256 of the given fields of every record, in order (reads the whole source)."""
    h = hashlib.sha256()
    for i in range(len(source)):
        record = source[i]
        missing = [k for k in fields if k not in record]
        if missing:
            raise ValueError(f"record {i} has no {missing}; the reference pass reads {fields}")
        for k in fields:
            _hash_array(h, k, record[k])
    return h.hexdigest()


def precompute_row_logps(
    forward: Callable,
    ref_params: Any,
    source,
    *,
    input_fields,
    output_fields,
    batch_size: int,
    workdir: str | None = None,
    key: str | None = None,
    chunk_batches: int = 64,
    mesh: jax.sharding.Mesh | None = None,
) -> RowLogpsSource:
    """K reference values of every record of `source`, computed once by `forward` (the
    store of `precompute_ref_logps` for any row-wise reference quantity, e.g. KTO's summed
    completion log-probs of a row and of its fixed KL row, `alignax.algorithms.kto`).

    Runs `jax.jit(forward)(ref_params, batch)` over `source` in order, in batches of
    `batch_size` records (the `input_fields` of each record stacked to [batch_size, ...]); the
    last, partial batch is padded with copies of the last record and the padded rows' outputs
    are dropped. With `workdir` the values are stored under
    `workdir/ref_logps/<fingerprint>/` as `precompute_ref_logps` stores them (chunks of
    `chunk_batches` batches written atomically as the pass goes, then one `ref_logps.npy`
    [N, K]; `meta.json` names the fields), the fingerprint a SHA-256 of (N, `rows_hash(source,
    input_fields)`, `key` or `params_hash(ref_params)`, the output field names): a call whose
    fingerprint is complete loads them without running the model (a resumed run), an
    interrupted pass continues after its last complete chunk.

    Args:
      forward: `forward(params, batch) -> [B, K]` float, row b of the output a function of
        row b of the batch only (dict of `input_fields`, each [B, ...]).
      ref_params: the frozen reference's params.
      source: random-access source: `len(source)`, `source[i]` -> a record with the
        `input_fields`, each of one shape over the records.
      input_fields: the record fields `forward` reads (and the fingerprint hashes).
      output_fields: the K names the values get in the returned source's records.
      batch_size: records per forward (with `mesh`, divisible by its data x fsdp shards).
      workdir, key, chunk_batches, mesh: as for `precompute_ref_logps`.

    Returns:
      A `RowLogpsSource`: the records of `source` plus the K `output_fields` (float32 scalars).

    Raises:
      ValueError: a non-positive batch_size or chunk_batches, an empty source, a record without
        the input fields, no output fields, or a batch_size the mesh's shards do not divide.
      NotImplementedError: the values are not stored yet and this job has several processes.
    """
    input_fields, output_fields = tuple(input_fields), tuple(output_fields)
    for name, value in (("batch_size", batch_size), ("chunk_batches", chunk_batches)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    if not output_fields:
        raise ValueError("output_fields is empty")
    n, k = len(source), len(output_fields)
    if n == 0:
        raise ValueError("source is empty")
    missing = [f for f in input_fields if f not in source[0]]
    if missing:
        raise ValueError(f"record 0 has no {missing}; the reference pass reads {input_fields}")
    sharding = _batch_sharding(mesh, batch_size)
    directory, done = None, None
    if workdir is not None:
        records = rows_hash(source, input_fields)
        reference = f"key:{key}" if key is not None else f"params:{params_hash(ref_params)}"
        fingerprint = hashlib.sha256(
            f"{n}|{records}|{reference}|{','.join(output_fields)}".encode()).hexdigest()[:24]
        directory, done = _open_store(workdir, fingerprint, (n, k), {
            "records": n, "records_sha256": records, "reference": reference,
            "inputs": list(input_fields), "fields": list(output_fields)})
    computed = 0
    if done is None:
        done, computed = _compute_rows(jax.jit(forward), ref_params, source, input_fields, k,
                                       batch_size=batch_size, chunk_batches=chunk_batches,
                                       directory=directory, sharding=sharding,
                                       name="precompute_row_logps")
    return RowLogpsSource(source, done, output_fields, directory, computed=computed)
