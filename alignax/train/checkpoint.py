"""Checkpoints of (train state, data iterator) with orbax; restore falls back past corrupt steps.

Layout: `<workdir>/checkpoints/<step>/{state,data_iter}`. The RNG is part of the train state.
orbax writes each step to a temporary folder and renames it when complete, so a run killed
mid-save leaves the previous steps intact; a step that is present but unreadable (a disk error, a
partial copy) is skipped with a warning and the previous one is used. Once an older step has been
restored, the unreadable newer ones are moved aside to `<checkpoints>/corrupt-<step>` (kept as
evidence, invisible to orbax), so the resumed run saves those steps again and `max_to_keep` counts
only readable checkpoints. When no step can be restored nothing is moved: `CheckpointError` says
which folder to move or delete to start afresh.

A full disk, a quota or a file-size limit while orbax writes in its background threads reaches
the caller (from the next `save`, `wait` or `close`) as a ValueError of tensorstore holding
`[os_error_code='28']` and the path, logged twice with tracebacks on the way. `Checkpointer`
raises it as `OSError(errno, strerror, path)` instead (what the CLI reports in one line, exit 74)
and drops orbax's error logs of such a failure (see `disk_error`), so the user reads the error
once. The half-written step stays in orbax's temporary folder, which a resumed run ignores.

Only grain iterators (`grain.DatasetIterator`, `grain.DataLoaderIterator`) carry a checkpointable
state; `is_checkpointable_iterator` tells them apart from plain Python iterators.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import warnings
from typing import Any

import grain
import jax
import orbax.checkpoint as ocp

from alignax._src import faults

log = logging.getLogger(__name__)


class CheckpointFallbackWarning(UserWarning):
    """A checkpoint step could not be restored and an older one was used."""


class CheckpointError(RuntimeError):
    """Checkpoints exist but none can be restored (one line naming the folder to move away).

    Attributes:
      directory: the checkpoints folder.
      errors: one "step <s>: <ExceptionType>: <message>" string per step tried, newest first.
    """

    def __init__(self, message: str, directory: str, errors: list[str]):
        super().__init__(message)
        self.directory = directory
        self.errors = errors


CORRUPT_PREFIX = "corrupt-"

# a full disk, a quota, a file-size limit: the run can resume once there is space
DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
_TS_ERRNO = re.compile(r"os_error_code='?(\d+)")  # tensorstore's status payload
_TS_PATH = re.compile(r'"(/[^"]+)"')


def disk_error(e: BaseException | None, default_path: str) -> OSError | None:
    """The OSError `(errno, strerror, path)` of a full disk behind `e`, or None if it is not one.

    Looks through `e`'s chain of causes for an OSError with errno ENOSPC, EDQUOT or EFBIG, or
    for a tensorstore error whose message holds `[os_error_code='<errno>']` (orbax writes
    arrays with tensorstore, whose errors arrive as ValueError); the path is the OSError's
    filename, else the last quoted absolute path before the code (the file tensorstore failed
    to write), else `default_path`.
    """
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno in DISK_ERRNOS:
            return OSError(e.errno, os.strerror(e.errno), e.filename or default_path)
        text = str(e)
        for m in _TS_ERRNO.finditer(text):
            code = int(m.group(1))
            if code in DISK_ERRNOS:
                paths = _TS_PATH.findall(text, 0, m.start())
                return OSError(code, os.strerror(code), paths[-1] if paths else default_path)
        e = e.__cause__ or e.__context__
    return None


class _DropDiskErrorLogs(logging.Filter):
    """Drops orbax's ERROR logs (with tracebacks) of a write that failed for a full disk:
    `Checkpointer` raises that error to the caller as one OSError naming the file."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.ERROR or "orbax" not in record.pathname:
            return True
        exc = record.exc_info[1] if record.exc_info else None
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a malformed record is not ours to judge
            return True
        return disk_error(exc, "") is None and disk_error(ValueError(message), "") is None


logging.getLogger("absl").addFilter(_DropDiskErrorLogs())  # orbax logs through absl


def is_checkpointable_iterator(data_iter: Any) -> bool:
    """Whether `data_iter` is a grain iterator whose position orbax can save and restore."""
    return isinstance(data_iter, (grain.DatasetIterator, grain.DataLoaderIterator))


def _check_iterator(data_iter: Any) -> None:
    if data_iter is not None and not is_checkpointable_iterator(data_iter):
        raise TypeError(
            f"data_iter of type {type(data_iter).__name__} cannot be checkpointed: only grain "
            "iterators (grain.DatasetIterator, grain.DataLoaderIterator) can; pass None for others"
        )


class Checkpointer:
    """Saves and restores `state` (+ optionally a grain iterator) every `every` steps.

    Args:
      directory: folder of the checkpoints (created).
      every: save when `step % every == 0` (and whenever `save(..., force=True)`).
      max_to_keep: number of most recent steps kept on disk.
    """

    def __init__(self, directory: str, *, every: int, max_to_keep: int = 3):
        if every <= 0:
            raise ValueError(f"checkpoint every must be positive, got {every}")
        self.directory = os.path.abspath(directory)
        self.every = every
        self._manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True),
            item_names=("state", "data_iter"),
        )

    def all_steps(self) -> list[int]:
        return sorted(self._manager.all_steps())

    def latest_step(self) -> int | None:
        steps = self.all_steps()
        return steps[-1] if steps else None

    def should_save(self, step: int) -> bool:
        return step % self.every == 0

    def save(self, step: int, state: Any, data_iter: Any = None, *, force: bool = False) -> bool:
        """Saves at `step` if due (or forced) and not already saved. Returns whether it saved."""
        _check_iterator(data_iter)
        if not (force or self.should_save(step)) or step in self._manager.all_steps():
            return False
        items = {"state": ocp.args.StandardSave(state)}
        if data_iter is not None:
            items["data_iter"] = grain.checkpoint.CheckpointSave(data_iter)
        with self._disk_errors():  # also raises the previous (asynchronous) save's error
            self._manager.save(step, args=ocp.args.Composite(**items), force=True)
        faults.point("checkpoint_write", self.directory, step)  # orbax may still be writing
        return True

    def restore(self, abstract_state: Any, data_iter: Any = None) -> tuple[Any, int] | None:
        """Restores the newest readable step into `abstract_state` (and `data_iter`, in place).

        Steps newer than the one restored could not be read: each gets a
        CheckpointFallbackWarning and is moved to `<directory>/corrupt-<step>`.

        Args:
          abstract_state: tree of jax.ShapeDtypeStruct with shardings, like the saved state.
          data_iter: a fresh grain iterator of the same pipeline, or None.

        Returns:
          (state, step), or None when there is no checkpoint at all.

        Raises:
          CheckpointError: checkpoints exist but none can be restored (nothing is moved).
          TypeError: `data_iter` is not a grain iterator.
        """
        _check_iterator(data_iter)
        steps = self.all_steps()
        failed: list[tuple[int, str]] = []
        for step in reversed(steps):
            items = {"state": ocp.args.StandardRestore(abstract_state)}
            if data_iter is not None:
                items["data_iter"] = grain.checkpoint.CheckpointRestore(data_iter)
            try:
                restored = self._manager.restore(step, args=ocp.args.Composite(**items))
            except Exception as e:  # noqa: BLE001 - any failure means "this step is unusable"
                first_line = (str(e).splitlines() or [""])[0][:200]
                failed.append((step, f"{type(e).__name__}: {first_line}"))
                continue
            if failed:
                moved = self._move_aside([s for s, _ in failed])
                for (bad, reason), path in zip(failed, moved):
                    warnings.warn(
                        f"checkpoint at step {bad} in {self.directory} could not be restored "
                        f"({reason}); resumed from step {step} and moved step {bad} aside to "
                        f"{path}",
                        CheckpointFallbackWarning,
                        stacklevel=2,
                    )
            return restored.state, step
        if steps:
            errors = [f"step {s}: {reason}" for s, reason in failed]
            raise CheckpointError(
                f"none of the {len(steps)} checkpoints in {self.directory} (steps "
                f"{', '.join(str(s) for s in reversed(steps))}) can be restored; move or delete "
                f"{self.directory} to start this run afresh (newest: {errors[0]})",
                self.directory, errors)
        return None

    def _move_aside(self, steps: list[int]) -> list[str]:
        """Renames step folders to `corrupt-<step>` (process 0) and reloads orbax's step list."""
        self._manager.wait_until_finished()
        paths = []
        for step in steps:
            path = os.path.join(self.directory, f"{CORRUPT_PREFIX}{step}")
            n = 1
            while os.path.exists(path):  # the same step was unreadable before
                n += 1
                path = os.path.join(self.directory, f"{CORRUPT_PREFIX}{step}-{n}")
            paths.append(path)
        if jax.process_index() == 0:
            for step, path in zip(steps, paths):
                os.rename(os.path.join(self.directory, str(step)), path)
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils

            multihost_utils.sync_global_devices(f"alignax checkpoint moved aside {steps}")
        self._manager.reload()
        return paths

    @contextlib.contextmanager
    def _disk_errors(self):
        """Re-raises a full disk (however orbax wraps it) as OSError(errno, strerror, path)."""
        try:
            yield
        except Exception as e:
            converted = disk_error(e, self.directory)
            if converted is None:
                raise
            raise converted from e

    def wait(self) -> None:
        """Waits for the asynchronous save in flight; raises its error (OSError for a full disk)."""
        with self._disk_errors():
            self._manager.wait_until_finished()

    def close(self) -> None:
        """Waits for the save in flight and closes; raises its error (OSError for a full disk)."""
        with self._disk_errors():
            self._manager.wait_until_finished()
            self._manager.close()


def abstract_like(tree: Any, shardings: Any = None) -> Any:
    """ShapeDtypeStruct tree (with shardings) of `tree`, e.g. for `Checkpointer.restore`."""
    if shardings is None:
        return jax.tree.map(
            lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None)),
            tree)
    return jax.tree.map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings
    )
