r"""Tokenisation cached on disk, streamed in chunks and resumable.

Tokenising a large dataset (chat templates rendered in Python, row by row) can take longer than
the first training steps, and every restart of a run would pay it again. `build_token_cache`
reads a random-access source of tokenised examples (e.g. an `HFSource` whose transform is
`tokenize_pair` followed by `alignax.data.packing.unpad_pair`) chunk by chunk and writes each
chunk to disk; `TokenCache` reads it back as a random-access source of the same examples
(memory-mapped, so nothing is held in host memory), with every example's length available
without reading its tokens (what `alignax.data.packing.PackedSource` plans bins from).

Layout of a cache folder `<root>/<fingerprint[:20]>/` (no pickle: .npy arrays written with
`allow_pickle=False` and a JSON index):

    index.json                 {"format", "version", "key", "fingerprint", "num_rows",
                                "chunk_size", "fields", "chunks": [{"rows", "skipped"}, ...],
                                "complete"}
    000000.rows.npy            [R] int64  the source index of each kept example of chunk 0
    000000.lengths.npy         [R, F] int64  each field's length per example
    000000.<field>.npy         [sum of that field's lengths]  its values, concatenated
    000001. ...

Examples are mappings field -> 1-d array (variable length, e.g. `input_ids` [n]); every
example has the same fields (dtypes are kept: int32 ids, int32 masks).

Keys and fingerprints: the folder is named by the SHA-256 of the JSON of `key`, a mapping of
everything the tokens depend on; `cache_key` builds it from the source's identity
(`source_fingerprint`: a `datasets.Dataset`'s own `_fingerprint`, length and columns; a local
file or folder's names, sizes and modification times), the tokenizer's identity
(`tokenizer_fingerprint`: the SHA-256 of its serialised tokenizer.json, its special tokens and
ids, `add_bos`, and its chat template), and the caller's settings (format, max lengths,
use_chat_template, ...). A changed tokenizer, template, dataset or setting is a new folder;
the old one stays until deleted.

Resume: each chunk's files are written to temporary names and renamed, then the index is
rewritten (also by rename) listing the chunk; so after a kill the index lists only complete
chunks, and `build_token_cache` with the same key continues at the first chunk it does not list
(an unlisted chunk's stray files are overwritten). A complete cache is returned without reading
the source at all.

Errors: the source raises them (an `HFSource` raises `DataError` `<dataset>:<index>: field
'<field>': <problem>` for a bad row, the contract of `alignax.data.hf_datasets`); they propagate
unchanged, or with `skip_invalid=True` the row is skipped, its index recorded in the chunk's
`skipped` list (`TokenCache.skipped`), and the cache holds the valid rows only.

Several processes: each may build the same cache in a shared folder; chunk files and the index
are replaced atomically with identical contents, so concurrent builders do not corrupt it
(build once on process 0 and wait, or give each host its own local `root`, to avoid repeated
work).

Why not array_record: it stores serialised records (one byte string per example), so reading a
length means decoding the example, and every read deserialises; flat .npy arrays with length
tables give O(1) lengths for bin planning and zero-copy memory-mapped slices. array_record's
strength (compressed, sharded records for arbitrary features) is not needed for int token
arrays.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import uuid
from typing import Any, Callable, Mapping

import numpy as np

from alignax.data.errors import DataError

FORMAT = "alignax-token-cache"
VERSION = 1
INDEX = "index.json"


# ----------------------------------------------------------------------------- fingerprints


def fingerprint(key: Mapping[str, Any]) -> str:
    """SHA-256 (hex) of the canonical JSON of `key` (sorted keys); TypeError if not JSON-able."""
    return hashlib.sha256(json.dumps(key, sort_keys=True, separators=(",", ":")).encode()
                          ).hexdigest()


def tokenizer_fingerprint(tokenizer) -> str:
    """What the ids of a tokenizer depend on, hashed (SHA-256 hex).

    An `HFTokenizer`: its serialised tokenizer.json (vocabulary, merges, normaliser,
    pre-tokeniser, added tokens), special tokens and their ids, `add_bos` and chat template. Any
    other tokenizer (e.g. `ByteTokenizer`): its class and its public attributes.
    """
    backend = getattr(tokenizer, "backend", None)
    parts: dict[str, Any] = {"class": f"{type(tokenizer).__module__}.{type(tokenizer).__name__}"}
    if backend is not None and callable(getattr(backend, "to_str", None)):
        parts["tokenizer_json"] = hashlib.sha256(backend.to_str().encode()).hexdigest()
    for name in ("bos_id", "eos_id", "pad_id", "add_bos", "vocab_size", "chat_template",
                 "special_tokens"):
        if hasattr(tokenizer, name):
            parts[name] = getattr(tokenizer, name)
    if backend is None:
        parts["attributes"] = {k: v for k, v in sorted(vars(tokenizer).items())
                               if not k.startswith("_") and _jsonable(v)}
    return fingerprint(parts)


def _jsonable(value) -> bool:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True


def _path_fingerprint(path: str) -> dict[str, Any]:
    path = os.path.abspath(path)
    if os.path.isfile(path):
        st = os.stat(path)
        return {"path": path, "files": [[os.path.basename(path), st.st_size, st.st_mtime_ns]]}
    files = []
    for folder, _, names in sorted(os.walk(path)):
        for name in sorted(names):
            full = os.path.join(folder, name)
            st = os.stat(full)
            files.append([os.path.relpath(full, path), st.st_size, st.st_mtime_ns])
    return {"path": path, "files": files}


def source_fingerprint(source: Any) -> str:
    """The identity of a dataset, hashed (SHA-256 hex).

    Args:
      source: a `datasets.Dataset` (its `_fingerprint`, which `datasets` derives from its files
        and the transforms applied, plus its length and columns), or a local file or folder
        path (every file's relative name, size and modification time: a rewritten file is a new
        source), or a JSON-able value naming the data (e.g. a list of row ids).

    Raises:
      TypeError: a source of another kind.
    """
    if isinstance(source, (str, os.PathLike)) and os.path.exists(source):
        return fingerprint({"local": _path_fingerprint(os.fspath(source))})
    fp = getattr(source, "_fingerprint", None)
    if fp is not None:
        return fingerprint({"dataset": str(fp), "rows": len(source),
                            "columns": list(getattr(source, "column_names", []) or [])})
    if _jsonable(source):
        return fingerprint({"value": source})
    raise TypeError(f"cannot fingerprint a source of type {type(source).__name__}: pass a "
                    f"datasets.Dataset, a local path or a JSON-able identity")


def cache_key(*, source: Any, tokenizer, **settings) -> dict[str, Any]:
    """The key of a cache: `{"source": source_fingerprint(source), "tokenizer":
    tokenizer_fingerprint(tokenizer), **settings}`; `settings` are JSON-able values the tokens
    depend on (format, max_length, use_chat_template, the transform's name, ...)."""
    for name, value in settings.items():
        if not _jsonable(value):
            raise TypeError(f"cache_key setting {name}={value!r} is not JSON-able")
    return {"source": source_fingerprint(source), "tokenizer": tokenizer_fingerprint(tokenizer),
            **settings}


# ----------------------------------------------------------------------------- writing


def _tmp(path: str) -> str:  # unique per writer, also across hosts sharing the folder
    return f"{path}.tmp-{uuid.uuid4().hex}"


def _save(path: str, array: np.ndarray) -> None:
    tmp = _tmp(path)
    with open(tmp, "wb") as f:
        np.save(f, array, allow_pickle=False)
    os.replace(tmp, path)


def _write_json(path: str, value: Any) -> None:
    tmp = _tmp(path)
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(value, f, indent=1, sort_keys=True)
    os.replace(tmp, path)


def _read_index(folder: str) -> dict | None:
    try:
        with open(os.path.join(folder, INDEX), encoding="utf-8") as f:
            index = json.load(f)
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return index if index.get("format") == FORMAT and index.get("version") == VERSION else None


def _write_chunk(folder: str, c: int, rows: list[int], examples: list[Mapping[str, Any]],
                 fields: list[str]) -> None:
    lengths = np.zeros((len(examples), len(fields)), np.int64)
    values = {f: [] for f in fields}
    for r, ex in enumerate(examples):
        for k, f in enumerate(fields):
            x = np.asarray(ex[f])
            if x.ndim != 1:
                raise ValueError(f"field {f!r} of source row {rows[r]} is not 1-d (shape "
                                 f"{x.shape}); the cache stores 1-d token arrays")
            lengths[r, k] = x.shape[0]
            values[f].append(x)
    for f in fields:
        arrays = values[f]
        flat = np.concatenate(arrays) if arrays else np.zeros((0,), np.int32)
        _save(os.path.join(folder, f"{c:06d}.{f}.npy"), flat)
    _save(os.path.join(folder, f"{c:06d}.lengths.npy"), lengths)
    _save(os.path.join(folder, f"{c:06d}.rows.npy"), np.asarray(rows, np.int64))


def build_token_cache(source, root: str, key: Mapping[str, Any], *, chunk_size: int = 1000,
                      skip_invalid: bool = False,
                      on_chunk: Callable[[int, int], None] | None = None) -> "TokenCache":
    """Tokenises `source` into (or reads it from) the cache folder of `key` under `root`.

    Args:
      source: `len(source)` and `source[i]` -> an example (mapping field -> 1-d array), e.g. an
        `HFSource` with a tokenising transform. Not read at all when the cache is complete.
      root: the folder holding caches (one sub-folder per key).
      key: JSON-able identity of the tokens (`cache_key`).
      chunk_size: examples per chunk: the unit written at once and of resume after a kill.
      skip_invalid: skip rows whose reading raises `DataError` (recorded per chunk) instead of
        raising.
      on_chunk: called as on_chunk(chunk, num_chunks) after each chunk is written (progress).

    Returns:
      The `TokenCache`.

    Raises:
      DataError: a bad row (`<dataset>:<index>: ...` from the source) unless `skip_invalid`;
        no valid row at all.
      ValueError: a bad chunk_size; examples with different fields.
    """
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size <= 0:
        raise ValueError(f"chunk_size must be a positive int, got {chunk_size!r}")
    fp = fingerprint(key)
    folder = os.path.join(os.fspath(root), fp[:20])
    index = _read_index(folder)
    if index is not None and index["fingerprint"] == fp and index["complete"]:
        return TokenCache(folder)
    n = len(source)
    if (index is None or index["fingerprint"] != fp or index["num_rows"] != n
            or index["chunk_size"] != chunk_size):
        index = {"format": FORMAT, "version": VERSION, "key": dict(key), "fingerprint": fp,
                 "num_rows": n, "chunk_size": chunk_size, "fields": None, "chunks": [],
                 "complete": False}
    os.makedirs(folder, exist_ok=True)
    num_chunks = -(-n // chunk_size)
    for c in range(len(index["chunks"]), num_chunks):
        rows, examples, skipped = [], [], []
        for i in range(c * chunk_size, min((c + 1) * chunk_size, n)):
            try:
                ex = source[i]
            except DataError:
                if not skip_invalid:
                    raise
                skipped.append(i)
                continue
            if index["fields"] is None:
                index["fields"] = sorted(ex)
            elif sorted(ex) != index["fields"]:
                raise ValueError(f"source row {i} has fields {sorted(ex)}, the others "
                                 f"{index['fields']}")
            rows.append(i)
            examples.append(ex)
        if index["fields"] is not None:
            _write_chunk(folder, c, rows, examples, index["fields"])
        index["chunks"].append({"rows": len(rows), "skipped": skipped})
        index["complete"] = c == num_chunks - 1
        _write_json(os.path.join(folder, INDEX), index)
        if on_chunk is not None:
            on_chunk(c, num_chunks)
    if num_chunks == 0 or not any(ch["rows"] for ch in index["chunks"]):
        raise DataError(f"no valid rows to cache ({n} rows, "
                        f"{sum(len(ch['skipped']) for ch in index['chunks'])} skipped)")
    return TokenCache(folder)


# ----------------------------------------------------------------------------- reading


class TokenCache:
    """A complete cache folder as a random-access source of its examples.

    `cache[i]` is the i-th kept example (source order, invalid rows skipped): a dict field ->
    1-d array, memory-mapped slices of the chunk files. Thread-safe for grain's reader threads.

    Attributes:
      key: the key it was built for; fields: the example fields; skipped: the source indices
        of skipped rows; folder: where it lives.
    """

    def __init__(self, folder: str):
        index = _read_index(folder)
        if index is None or not index["complete"]:
            raise ValueError(f"{folder}: not a complete token cache (no finished index.json)")
        self.folder = folder
        self.key = index["key"]
        self.fields: list[str] = list(index["fields"])
        self.skipped = [i for ch in index["chunks"] for i in ch["skipped"]]
        counts = np.array([ch["rows"] for ch in index["chunks"]], np.int64)
        self._chunks = [c for c, k in enumerate(counts) if k]  # chunks that hold examples
        self._starts = np.concatenate([[0], np.cumsum(counts[counts > 0])])
        self._loaded: dict[int, tuple[np.ndarray, dict[str, np.ndarray], np.ndarray]] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return int(self._starts[-1])

    def _chunk(self, k: int):
        with self._lock:
            if k not in self._loaded:
                c = self._chunks[k]
                path = lambda name: os.path.join(self.folder, f"{c:06d}.{name}.npy")  # noqa: E731
                lengths = np.load(path("lengths"), allow_pickle=False)
                offsets = np.concatenate([np.zeros((1, lengths.shape[1]), np.int64),
                                          np.cumsum(lengths, axis=0)])
                values = {f: np.load(path(f), mmap_mode="r", allow_pickle=False)
                          for f in self.fields}
                rows = np.load(path("rows"), allow_pickle=False)
                self._loaded[k] = (offsets, values, rows)
            return self._loaded[k]

    def _locate(self, i: int) -> tuple[int, int]:
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"index {i} out of range for a cache of {n} examples")
        i %= n
        k = int(np.searchsorted(self._starts, i, side="right")) - 1
        return k, i - int(self._starts[k])

    def __getitem__(self, i: int) -> dict[str, np.ndarray]:
        k, r = self._locate(int(i))
        offsets, values, _ = self._chunk(k)
        return {f: np.asarray(values[f][offsets[r, j]:offsets[r + 1, j]])
                for j, f in enumerate(self.fields)}

    def source_index(self, i: int) -> int:
        """The source (dataset) row of example i."""
        k, r = self._locate(int(i))
        return int(self._chunk(k)[2][r])

    def field_lengths(self, field: str) -> np.ndarray:
        """[N] int64: the length of `field` in every example (read from the length tables)."""
        j = self.fields.index(field)
        return np.concatenate([np.diff(self._chunk(k)[0][:, j]) for k in range(len(self._chunks))])

    def lengths(self, kind: str = "sequence") -> np.ndarray:
        """[N] the examples' packing lengths (`alignax.data.packing`): kind "sequence":
        len(input_ids); "pair": len(chosen_ids) + len(rejected_ids)."""
        if kind == "sequence":
            return self.field_lengths("input_ids")
        if kind == "pair":
            return self.field_lengths("chosen_ids") + self.field_lengths("rejected_ids")
        raise ValueError(f"unknown kind {kind!r}; valid: ['sequence', 'pair']")

