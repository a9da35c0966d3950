"""Checkpoints of (train state, data iterator) with orbax; restore falls back past corrupt steps.

Layout: `<workdir>/checkpoints/<step>/{state,data_iter}`. The RNG is part of the train state.
orbax writes each step to a temporary folder and renames it when complete, so a run killed
mid-save leaves the previous steps intact; a step that is present but unreadable (a disk error, a
partial copy) is skipped with a warning and the previous one is used.
"""

from __future__ import annotations

import logging
import os
import warnings
from typing import Any

import grain
import jax
import orbax.checkpoint as ocp

log = logging.getLogger(__name__)


class CheckpointFallbackWarning(UserWarning):
    """A checkpoint step could not be restored and an older one was used."""


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
        if not (force or self.should_save(step)) or step in self._manager.all_steps():
            return False
        items = {"state": ocp.args.StandardSave(state)}
        if data_iter is not None:
            items["data_iter"] = grain.checkpoint.CheckpointSave(data_iter)
        self._manager.save(step, args=ocp.args.Composite(**items), force=True)
        return True

    def restore(self, abstract_state: Any, data_iter: Any = None) -> tuple[Any, int] | None:
        """Restores the newest readable step into `abstract_state` (and `data_iter`, in place).

        Args:
          abstract_state: tree of jax.ShapeDtypeStruct with shardings, like the saved state.
          data_iter: a fresh grain iterator of the same pipeline, or None.

        Returns:
          (state, step), or None when there is no checkpoint at all.

        Raises:
          RuntimeError: if checkpoints exist but none can be restored.
        """
        steps = self.all_steps()
        errors = []
        for step in reversed(steps):
            items = {"state": ocp.args.StandardRestore(abstract_state)}
            if data_iter is not None:
                items["data_iter"] = grain.checkpoint.CheckpointRestore(data_iter)
            try:
                restored = self._manager.restore(step, args=ocp.args.Composite(**items))
            except Exception as e:  # noqa: BLE001 - any failure means "this step is unusable"
                errors.append(f"step {step}: {type(e).__name__}: {e}")
                warnings.warn(
                    f"checkpoint at step {step} in {self.directory} could not be restored "
                    f"({type(e).__name__}: {str(e).splitlines()[0][:200]}); trying an older one",
                    CheckpointFallbackWarning,
                    stacklevel=2,
                )
                continue
            return restored.state, step
        if steps:
            raise RuntimeError(
                f"no checkpoint in {self.directory} could be restored:\n" + "\n".join(errors)
            )
        return None

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
