"""Checkpoints of (train state, data iterator) with orbax; restore falls back past corrupt steps.

Layout: `<workdir>/checkpoints/<step>/{state,data_iter}`. The RNG is part of the train state.
orbax writes each step to a temporary folder and renames it when complete, so a run killed
mid-save leaves the previous steps intact; a step that is present but unreadable (a disk error, a
partial copy) is skipped with a warning and the previous one is used. Once an older step has been
restored, the unreadable newer ones are moved aside to `<checkpoints>/corrupt-<step>` (kept as
evidence, invisible to orbax), so the resumed run saves those steps again and `max_to_keep` counts
only readable checkpoints. When no step can be restored nothing is moved: `CheckpointError` says
which folder to move or delete to start afresh.

Only grain iterators (`grain.DatasetIterator`, `grain.DataLoaderIterator`) carry a checkpointable
state; `is_checkpointable_iterator` tells them apart from plain Python iterators.
"""

from __future__ import annotations

import logging
import os
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

    def wait(self) -> None:
        self._manager.wait_until_finished()

    def close(self) -> None:
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
