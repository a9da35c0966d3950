"""Metric writers: `metrics.jsonl` (one JSON object per line) and TensorBoard event files.

A run writes every logged step twice: as a line `{"step": s, "train/loss": ..., ...}` appended to
`W/metrics.jsonl` (the file experiments, plots and tests read), and as scalar summaries in
`W/tensorboard/events.out.tfevents.*` for live inspection.

TensorBoard event files are written with TensorBoard's own record writer
(`tensorboard.summary.writer.record_writer.RecordWriter`: TFRecord framing, CRC32C) and its
`Event` / `Summary` protocol buffers from `tensorboard.compat.proto`, which need no TensorFlow.
tensorboardX was used before; importing it also imports torch whenever torch is installed (2 s
here, and on a GPU machine torch's CUDA libraries inside the JAX process), which a JAX framework
should not do. Three things are set here:

- resume: `MetricsWriter.truncate_after(step)` appends TensorBoard's restart marker (a
  `SessionLog.START` event at `step + 1`); TensorBoard then drops the events with a larger step
  read before it, so a resumed run shows the same curves as an uninterrupted one;
- writing: each event is written and flushed in the caller's thread, like a metrics.jsonl line
  (TensorBoard's `EventFileWriter` writes from a background thread: a full disk there printed
  the thread's traceback and reached the caller, without the file's name, one event later).
  File names are TensorBoard's (`events.out.tfevents.<second>.<host>.<pid>.<counter>`) plus a
  nanosecond suffix, so writers opened in the same second never share a file;
- errors: a failed write (full disk, quota, file-size limit) raises OSError with `filename` set
  to the file that could not be written (metrics.jsonl, the event file, or the target of
  `atomic_write_text`), so `alignax run` reports it in one line and the run resumes later.

`metrics.jsonl` stays hand-written: it is the project's own format, and the guarantees the rest of
the code relies on live in it: floats round-trip exactly (float64, where event files store float32),
non-finite values are the strings "nan"/"inf"/"-inf" so every line is strict JSON, every line is
flushed as soon as it is written, the reader ignores a trailing partial line (a run may be killed at
any moment), and on resume `MetricsWriter.truncate_after(step)` keeps the lines logged up to the
restored checkpoint byte for byte, so a resumed run's file equals an uninterrupted one's.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import socket
import tempfile
import time
from typing import Any, Mapping

import numpy as np

__all__ = [
    "MetricsWriter",
    "atomic_write_text",
    "read_metrics",
    "with_filename",
]

METRICS_FILE = "metrics.jsonl"
TENSORBOARD_DIR = "tensorboard"


def with_filename(e: OSError, path: str) -> OSError:
    """`e` itself if it names its file, else the same error naming `path` (a failed write() or
    flush() leaves `filename` unset: the caller knows which file it was writing)."""
    if e.filename is not None or e.errno is None:
        return e
    named = OSError(e.errno, e.strerror, os.fspath(path))
    named.__cause__ = e
    return named


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Replaces the file `path` by `text` (UTF-8) all at once.

    The text goes to a temporary file in the same folder, is flushed and fsynced, and is renamed
    over `path` (`os.replace`, atomic on POSIX and Windows), so a reader, or the next run after a
    kill or a full disk, finds either the old file or the complete new one, never a truncated one.
    The folder must exist; the file keeps its mode (a new one gets 0644). On failure the
    temporary file is removed and the error re-raised (an OSError names `path` when the system
    did not name a file, e.g. for a full disk).
    """
    path = os.fspath(path)
    folder, name = os.path.split(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        # mkstemp creates 0600: keep the replaced file's mode, else what open() gives (umask 022)
        os.chmod(tmp, os.stat(path).st_mode & 0o777 if os.path.exists(path) else 0o644)
        os.replace(tmp, path)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        if isinstance(e, OSError) and e.filename is None:
            raise with_filename(e, path)
        raise


# ---------------------------------------------------------------------------------------------
# TensorBoard (its own TF-free record writer)
# ---------------------------------------------------------------------------------------------

_event_files_opened = itertools.count()


class _EventFile:
    """One TensorBoard event file, written and flushed event by event in the caller's thread.

    `path` is the file. A failed write raises OSError naming `path`; the file is then closed
    and later events are dropped, so no record follows a torn one.
    """

    def __init__(self, logdir: str):
        # tensorboard's protos and crc: 0.5 s to import, so only when a writer is opened
        from tensorboard.compat.proto.event_pb2 import Event, SourceMetadata
        from tensorboard.summary.writer.record_writer import RecordWriter

        os.makedirs(logdir, exist_ok=True)
        now = time.time()
        name = (f"events.out.tfevents.{int(now):010d}.{socket.gethostname()}.{os.getpid()}."
                f"{next(_event_files_opened)}.{time.time_ns()}")
        self.path = os.path.join(logdir, name)
        self._file = open(self.path, "wb")
        self._records = RecordWriter(self._file)
        self.add_event(Event(wall_time=now, file_version="brain.Event:2",
                             source_metadata=SourceMetadata(writer="alignax")))

    def add_event(self, event) -> None:
        if self._file is None:
            return
        try:
            self._records.write(event.SerializeToString())
            self._file.flush()
        except OSError as e:
            self._drop()
            raise with_filename(e, self.path)

    def _drop(self) -> None:
        f, self._file = self._file, None
        try:
            f.close()  # closes the descriptor even when flushing the rest fails
        except OSError:
            pass

    def close(self) -> None:
        if self._file is None:
            return
        f, self._file = self._file, None
        try:
            f.close()
        except OSError as e:
            raise with_filename(e, self.path)


def _open_event_file(logdir: str) -> _EventFile:
    """Opens a new event file in `logdir` (created if needed)."""
    return _EventFile(logdir)


def _write_scalars(event_writer, step: int, scalars: Mapping[str, float]) -> None:
    """Appends one event holding `scalars` (tag -> value; stored as float32, overflow is +-inf)."""
    from tensorboard.compat.proto.event_pb2 import Event
    from tensorboard.compat.proto.summary_pb2 import Summary

    values = [Summary.Value(tag=tag, simple_value=value) for tag, value in scalars.items()]
    event_writer.add_event(Event(wall_time=time.time(), step=int(step),
                                 summary=Summary(value=values)))


def _write_restart(event_writer, step: int) -> None:
    """Appends TensorBoard's restart marker: earlier events with step >= `step` are dropped."""
    from tensorboard.compat.proto.event_pb2 import Event, SessionLog

    event_writer.add_event(Event(wall_time=time.time(), step=int(step),
                                 session_log=SessionLog(status=SessionLog.START)))


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
    """The newline-terminated lines of `path` (a trailing partial line is dropped).

    Decoded line by line: a kill may cut the last line inside a multi-byte UTF-8 character.

    Raises:
      ValueError: a complete line is not UTF-8 (names the line number).
    """
    with open(path, "rb") as f:
        data = f.read()
    lines = []
    for lineno, line in enumerate(data.split(b"\n")[:-1], start=1):  # [-1]: b"" or the tail
        try:
            lines.append(line.decode("utf-8") + "\n")
        except UnicodeDecodeError as e:
            raise ValueError(f"{path}, line {lineno}: corrupt metrics line (not UTF-8 at byte "
                             f"{e.start}): {line[:80]!r}") from None
    return lines


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
    `truncate_after` and by the next `write`). The numbers of each `write` also go to TensorBoard
    as one event (see the module docstring for writing and resume). A write that fails (a full
    disk) raises OSError naming the file; a partial line it left is removed on resume. With
    `enabled=False` (the non-zero processes of a multi-process run) every method does nothing
    and no file is created.

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
                self._tb = _open_event_file(os.path.join(self.workdir, TENSORBOARD_DIR))

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

    def _drop_file(self) -> None:
        """Closes metrics.jsonl after a failed write (the descriptor even if flushing fails)."""
        f, self._file = self._file, None
        if f is not None:
            try:
                f.close()
            except OSError:
                pass

    def write(self, step: int, metrics: Mapping[str, Any]) -> None:
        """Appends `{"step": step, **metrics}` as one flushed line; numbers also go to TensorBoard.

        Args:
          step: the global step (int-like).
          metrics: name -> scalar (Python, NumPy or JAX; 0-d or size-1 arrays). Strings are
            written to JSON only; NaN/inf are written as "nan"/"inf"/"-inf".

        Raises:
          ValueError: a metric is named "step", or the writer is closed.
          TypeError: a value is not a scalar.
          OSError: a file could not be written (`filename` names it).
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
        try:
            f = self._open()
            f.write(line + "\n")
            f.flush()
        except OSError as e:
            self._drop_file()
            raise with_filename(e, self.path)
        if self._tb is not None and scalars:
            _write_scalars(self._tb, step, scalars)

    def truncate_after(self, step: int) -> None:
        """Keeps only the lines with `"step" <= step` (used on resume), dropping a partial tail.

        Kept lines are preserved byte for byte; the file is replaced atomically; nothing happens
        to metrics.jsonl if it does not exist yet. The event file gets TensorBoard's restart
        marker at `step + 1`, which hides the events with a larger step from earlier files.

        Args:
          step: the restored checkpoint's step (0 for a fresh start: the file is emptied).

        Raises:
          alignax.data.DataError: (a ValueError) a complete line is corrupt: one line naming
            the file and the line to delete.
        """
        if not self.enabled:
            return
        if self._file is not None:
            self._file.close()
            self._file = None
        if os.path.exists(self.path):
            self._truncate_jsonl(step)
        if self._tb is not None and not self._closed:
            _write_restart(self._tb, step + 1)

    def _truncate_jsonl(self, step: int) -> None:
        kept = []
        try:
            for lineno, line in enumerate(_complete_lines(self.path), start=1):
                if not line.strip():
                    continue
                if _parse_line(line, self.path, lineno)["step"] <= step:
                    kept.append(line)
        except ValueError as e:  # a corrupt line (disk damage, an edit): its metrics are lost
            from alignax.data.errors import DataError  # imports alignax.data (2 s): only here

            raise DataError(f"{e}; delete that line (its metrics are lost) and run again to "
                            "resume", path=self.path) from None
        atomic_write_text(self.path, "".join(kept))

    def close(self) -> None:
        """Flushes and closes both files; further `close` calls do nothing.

        Raises:
          OSError: the rest of a file could not be written (`filename` names it); both files
            are closed anyway.
        """
        if not self.enabled or self._closed:
            return
        self._closed = True
        error = None
        if self._file is not None:
            f, self._file = self._file, None
            try:
                f.close()
            except OSError as e:
                error = with_filename(e, self.path)
        if self._tb is not None:
            try:
                self._tb.close()
            except OSError as e:
                error = error or e
        if error is not None:
            raise error

    def __enter__(self) -> MetricsWriter:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
