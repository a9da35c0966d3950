"""Metric writers: `metrics.jsonl` (one JSON object per line) and TensorBoard event files.

A run writes every logged step twice: as a line `{"step": s, "train/loss": ..., ...}` appended to
`W/metrics.jsonl` (the file experiments, plots and tests read), and as scalar summaries in
`W/tensorboard/events.out.tfevents.*` for live inspection. The event files are written without
TensorFlow or the `tensorboard` package: an event file is a sequence of TFRecords, each framing
one hand-encoded `Event` protocol buffer.

TFRecord framing (all integers little-endian)::

    uint64 length | uint32 masked_crc32c(length bytes) | payload | uint32 masked_crc32c(payload)

    masked_crc32c(x) = ((crc >> 15) | (crc << 17)) + 0xa282ead8  (mod 2**32),  crc = CRC32C(x)

Event protocol buffer (the subset written here)::

    Event   { double wall_time = 1; int64 step = 2; string file_version = 3; Summary summary = 5; }
    Summary { repeated Value value = 1; }
    Value   { string tag = 1; float simple_value = 2; }

A run may be killed at any moment, so every JSON line is flushed as soon as it is written and the
reader ignores a trailing partial line. On resume, `MetricsWriter.truncate_after(step)` drops the
lines logged after the restored checkpoint, so a resumed run's file equals an uninterrupted one's.
"""

from __future__ import annotations

import json
import math
import os
import socket
import struct
import time
from typing import Any, Mapping

import numpy as np

__all__ = [
    "MetricsWriter",
    "TensorBoardWriter",
    "crc32c",
    "masked_crc32c",
    "read_metrics",
]

METRICS_FILE = "metrics.jsonl"
TENSORBOARD_DIR = "tensorboard"

# ---------------------------------------------------------------------------------------------
# CRC32C (Castagnoli) and TFRecord framing.
# ---------------------------------------------------------------------------------------------

_CRC32C_POLY = 0x82F63B78  # bit-reversed 0x1EDC6F41
_MASK32 = 0xFFFFFFFF
_CRC_MASK_DELTA = 0xA282EAD8


def _make_crc32c_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ _CRC32C_POLY if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_CRC32C_TABLE = _make_crc32c_table()


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli polynomial, reflected, init and final xor 0xFFFFFFFF).

    Args:
      data: the bytes to checksum.

    Returns:
      The checksum as an unsigned 32-bit int (crc32c(b"123456789") == 0xE3069283).
    """
    table = _CRC32C_TABLE
    crc = _MASK32
    for byte in bytes(data):
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ _MASK32


def masked_crc32c(data: bytes) -> int:
    """The masked CRC32C that TFRecord stores: `((c >> 15) | (c << 17)) + 0xa282ead8 mod 2**32`."""
    crc = crc32c(data)
    return ((((crc >> 15) | (crc << 17)) & _MASK32) + _CRC_MASK_DELTA) & _MASK32


def _tfrecord(payload: bytes) -> bytes:
    """Frames one payload as a TFRecord."""
    length = struct.pack("<Q", len(payload))
    return b"".join(
        (
            length,
            struct.pack("<I", masked_crc32c(length)),
            payload,
            struct.pack("<I", masked_crc32c(payload)),
        )
    )


# ---------------------------------------------------------------------------------------------
# Minimal protocol buffer encoding of tensorflow.Event.
# ---------------------------------------------------------------------------------------------

_WIRE_VARINT, _WIRE_FIXED64, _WIRE_BYTES, _WIRE_FIXED32 = 0, 1, 2, 5


def _varint(value: int) -> bytes:
    """Base-128 varint; negative values are encoded as their 64-bit two's complement."""
    if value < 0:
        value += 1 << 64
    out = bytearray()
    while True:
        low = value & 0x7F
        value >>= 7
        if value:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)


def _key(field: int, wire_type: int) -> bytes:
    return _varint((field << 3) | wire_type)


def _bytes_field(field: int, data: bytes) -> bytes:
    return _key(field, _WIRE_BYTES) + _varint(len(data)) + data


def _event(wall_time: float, step: int, *, file_version: str | None = None,
           summary: bytes | None = None) -> bytes:
    """Encodes an Event message (fields wall_time=1, step=2, file_version=3, summary=5)."""
    parts = [_key(1, _WIRE_FIXED64) + struct.pack("<d", wall_time)]
    if step:
        parts.append(_key(2, _WIRE_VARINT) + _varint(int(step)))
    if file_version is not None:
        parts.append(_bytes_field(3, file_version.encode("utf-8")))
    if summary is not None:
        parts.append(_bytes_field(5, summary))
    return b"".join(parts)


def _scalar_summary(scalars: Mapping[str, float]) -> bytes:
    """Encodes a Summary of `Value{tag, simple_value}`s (float32; overflow becomes +-inf)."""
    values = []
    for tag, value in scalars.items():
        with np.errstate(over="ignore"):
            value32 = np.array(float(value), dtype="<f4").tobytes()
        body = _bytes_field(1, str(tag).encode("utf-8"))
        body += _key(2, _WIRE_FIXED32) + value32
        values.append(_bytes_field(1, body))
    return b"".join(values)


class TensorBoardWriter:
    """Writes scalar summaries to a TensorBoard event file, without TensorFlow.

    The file is `logdir/events.out.tfevents.<int time>.<hostname>.alignax`; if that name already
    exists (two writers started within the same second), `.1`, `.2`, ... is appended. Its first
    record is the `file_version: "brain.Event:2"` event that TensorBoard expects.

    Example::

      tb = TensorBoardWriter("/tmp/run/tensorboard")
      tb.scalars(10, {"train/loss": 0.25})
      tb.close()
    """

    def __init__(self, logdir: str | os.PathLike):
        """Creates `logdir` if needed and opens a new event file in it.

        Args:
          logdir: the folder TensorBoard is pointed at.
        """
        self.logdir = os.fspath(logdir)
        os.makedirs(self.logdir, exist_ok=True)
        now = time.time()
        base = os.path.join(
            self.logdir, f"events.out.tfevents.{int(now)}.{socket.gethostname()}.alignax"
        )
        path, n = base, 0
        while True:
            try:
                self._file = open(path, "xb")
                break
            except FileExistsError:
                n += 1
                path = f"{base}.{n}"
        self.path = path
        self._file.write(_tfrecord(_event(now, 0, file_version="brain.Event:2")))
        self._file.flush()

    def scalars(self, step: int, scalars: Mapping[str, float]) -> None:
        """Appends one event holding `scalars` (tag -> value, stored as float32) at `step`.

        Args:
          step: the global step of the values.
          scalars: tag -> number; bools count as 0/1.
        """
        if self._file is None:
            raise ValueError(f"TensorBoardWriter for {self.path} is closed")
        if not scalars:
            return
        summary = _scalar_summary(scalars)
        self._file.write(_tfrecord(_event(time.time(), int(step), summary=summary)))

    def flush(self) -> None:
        """Pushes buffered records to the operating system."""
        if self._file is not None:
            self._file.flush()

    def close(self) -> None:
        """Flushes and closes the file; further `close` calls do nothing."""
        if self._file is not None:
            self._file.flush()
            self._file.close()
            self._file = None

    def __enter__(self) -> TensorBoardWriter:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


# ---------------------------------------------------------------------------------------------
# metrics.jsonl
# ---------------------------------------------------------------------------------------------

_NONFINITE_STRINGS = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}


def _to_python(name: str, value: Any) -> Any:
    """Converts a scalar (Python, NumPy or JAX) to a Python bool, int, float, str or None.

    Args:
      name: the metric's name, for error messages.
      value: the scalar; arrays must hold exactly one element.

    Returns:
      The Python value (floats keep full precision; non-finite floats are kept as floats).
    """
    if isinstance(value, np.generic) or (
        hasattr(value, "__array__") and not isinstance(value, (str, bool, int, float))
    ):
        array = np.asarray(value)
        if array.size != 1:
            raise TypeError(f"metric {name!r} must be a scalar, got shape {array.shape}")
        value = array.reshape(()).item()
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    raise TypeError(f"metric {name!r} has unsupported type {type(value).__name__}: {value!r}")


def _json_value(value: Any) -> Any:
    """NaN and +-inf become "nan", "inf", "-inf" so the line stays valid JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    return value


def _parse_line(line: str, path: str, lineno: int) -> dict:
    try:
        row = json.loads(line)
    except json.JSONDecodeError as e:
        raise ValueError(
            f"{path}, line {lineno}: corrupt metrics line ({e.msg}): {line[:80]!r}"
        ) from e
    if not isinstance(row, dict) or not isinstance(row.get("step"), int):
        raise ValueError(
            f"{path}, line {lineno}: metrics line has no integer 'step': {line[:80]!r}"
        )
    return row


def _complete_lines(path: str) -> list[str]:
    """The newline-terminated lines of `path` (a trailing partial line is dropped)."""
    with open(path, "r", encoding="utf-8", newline="\n") as f:
        text = f.read()
    lines = text.split("\n")
    return [line + "\n" for line in lines[:-1]]  # lines[-1] is "" or the partial tail


def read_metrics(path: str | os.PathLike, *, parse_nonfinite: bool = False) -> list[dict]:
    """Reads a `metrics.jsonl` file written by `MetricsWriter`.

    A trailing line without its newline (the run was killed while writing it) is ignored.

    Args:
      path: the metrics.jsonl file.
      parse_nonfinite: convert the strings "nan", "inf" and "-inf" back to floats; by default
        values are returned exactly as stored.

    Returns:
      One dict per complete line, in file order, each with an int "step".

    Raises:
      ValueError: a complete line is not a JSON object with an integer "step"; the message
        names the file and the 1-based line number.
    """
    path = os.fspath(path)
    rows = []
    for lineno, line in enumerate(_complete_lines(path), start=1):
        if not line.strip():
            continue
        row = _parse_line(line, path, lineno)
        if parse_nonfinite:
            row = {
                k: _NONFINITE_STRINGS.get(v, v) if isinstance(v, str) else v
                for k, v in row.items()
            }
        rows.append(row)
    return rows


class MetricsWriter:
    """Appends metrics to `workdir/metrics.jsonl` and TensorBoard events in `workdir/tensorboard/`.

    Every `write(step, metrics)` appends the line `{"step": step, **metrics}` and flushes it, so a
    killed run leaves at most one partial line at the end (ignored by `read_metrics`, removed by
    `truncate_after` and by the next `write`). With `enabled=False` (the non-zero processes of a
    multi-process run) every method does nothing and no file is created.

    Example::

      writer = MetricsWriter(workdir, enabled=jax.process_index() == 0)
      writer.truncate_after(restored_step)  # or 0 for a fresh run
      writer.write(step, {"train/loss": loss})
      writer.close()
    """

    def __init__(self, workdir: str | os.PathLike, *, enabled: bool = True,
                 tensorboard: bool = True):
        """Prepares the writer; the TensorBoard event file is created here, metrics.jsonl lazily.

        Args:
          workdir: the run folder (created if needed).
          enabled: False makes every method a no-op.
          tensorboard: also write TensorBoard scalars under `workdir/tensorboard/`.
        """
        self.workdir = os.fspath(workdir)
        self.enabled = enabled
        self.path = os.path.join(self.workdir, METRICS_FILE)
        self._file = None
        self._closed = False
        self._tb = None
        if enabled:
            os.makedirs(self.workdir, exist_ok=True)
            if tensorboard:
                self._tb = TensorBoardWriter(os.path.join(self.workdir, TENSORBOARD_DIR))

    def _open(self):
        if self._file is None:
            # A partial last line (a killed run) would corrupt the next line: cut it off.
            if os.path.exists(self.path):
                with open(self.path, "rb+") as f:
                    data = f.read()
                    end = data.rfind(b"\n") + 1
                    if end != len(data):
                        f.truncate(end)
            self._file = open(self.path, "a", encoding="utf-8", newline="\n")
        return self._file

    def write(self, step: int, metrics: Mapping[str, Any]) -> None:
        """Appends `{"step": step, **metrics}` as one flushed line; numbers also go to TensorBoard.

        Args:
          step: the global step (int-like).
          metrics: name -> scalar (Python, NumPy or JAX; 0-d or size-1 arrays). Strings are
            written to JSON only; NaN/inf are written as "nan"/"inf"/"-inf".

        Raises:
          ValueError: a metric is named "step", or the writer is closed.
          TypeError: a value is not a scalar.
        """
        if not self.enabled:
            return
        if self._closed:
            raise ValueError(f"MetricsWriter for {self.workdir} is closed")
        if "step" in metrics:
            raise ValueError("'step' is reserved and cannot be a metric name")
        step = int(_to_python("step", step))
        row: dict[str, Any] = {"step": step}
        scalars: dict[str, float] = {}
        for name, value in metrics.items():
            name = str(name)
            value = _to_python(name, value)
            row[name] = _json_value(value)
            if isinstance(value, (bool, int, float)):
                scalars[name] = float(value)
        line = json.dumps(row, allow_nan=False, ensure_ascii=False)
        f = self._open()
        f.write(line + "\n")
        f.flush()
        if self._tb is not None:
            self._tb.scalars(step, scalars)
            self._tb.flush()

    def truncate_after(self, step: int) -> None:
        """Keeps only the lines with `"step" <= step` (used on resume), dropping a partial tail.

        Kept lines are preserved byte for byte; the file is replaced atomically. Nothing happens
        if metrics.jsonl does not exist yet.

        Args:
          step: the restored checkpoint's step (0 for a fresh start: the file is emptied).

        Raises:
          ValueError: a complete line is corrupt (names the line number).
        """
        if not self.enabled:
            return
        if self._file is not None:
            self._file.close()
            self._file = None
        if not os.path.exists(self.path):
            return
        kept = []
        for lineno, line in enumerate(_complete_lines(self.path), start=1):
            if not line.strip():
                continue
            if _parse_line(line, self.path, lineno)["step"] <= step:
                kept.append(line)
        tmp = self.path + ".tmp"
        with open(tmp, "w", encoding="utf-8", newline="\n") as f:
            f.writelines(kept)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)

    def close(self) -> None:
        """Flushes and closes both files; further `close` calls do nothing."""
        if not self.enabled or self._closed:
            return
        self._closed = True
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._tb is not None:
            self._tb.close()

    def __enter__(self) -> MetricsWriter:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
