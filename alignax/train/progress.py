"""A progress bar for the training loop: a thin wrapper over tqdm writing to stderr."""

from __future__ import annotations

import sys
from typing import Any

from tqdm import tqdm

__all__ = ["ProgressBar"]


def _format(value: Any) -> str:
    try:
        return f"{float(value):.4g}"
    except (TypeError, ValueError):
        return str(value)


class ProgressBar:
    """Shows steps done, rate and ETA (`train:  40%|####  | 40/100 [00:02<00:03, 19.9step/s]`).

    With `enabled=False` (non-zero processes, or `progress=False`) nothing is created or written.
    A resumed run passes `initial=restored_step`, so the bar and its ETA start from there.

    Example::

      with ProgressBar(num_steps, initial=start) as bar:
          for step in range(start + 1, num_steps + 1):
              ...
              bar.update(1, loss=loss)
    """

    def __init__(self, total: int, *, initial: int = 0, enabled: bool = True,
                 desc: str = "train"):
        """Creates the bar (on stderr).

        Args:
          total: the number of steps of the whole run.
          initial: steps already done (e.g. the step a run resumed from).
          enabled: False makes every method a no-op.
          desc: the label in front of the bar.
        """
        self.enabled = enabled
        self._bar = None
        if enabled:
            # On a terminal redraw often; in a log file (CI, batch jobs) write a line every 10 s.
            interactive = hasattr(sys.stderr, "isatty") and sys.stderr.isatty()
            self._bar = tqdm(
                mininterval=0.1 if interactive else 10.0,
                total=total,
                initial=initial,
                desc=desc,
                unit="step",
                file=sys.stderr,
                dynamic_ncols=True,
                smoothing=0.1,
            )

    @property
    def n(self) -> int:
        """Steps counted so far (0 when disabled)."""
        return int(self._bar.n) if self._bar is not None else 0

    def update(self, n: int = 1, **postfix_scalars: Any) -> None:
        """Advances the bar by `n` steps and shows `postfix_scalars` (e.g. `loss=0.25`) after it.

        Args:
          n: number of steps done since the last update.
          **postfix_scalars: values shown as `name=value` (numbers with 4 significant digits).
        """
        if self._bar is None:
            return
        if postfix_scalars:
            self._bar.set_postfix(
                {k: _format(v) for k, v in postfix_scalars.items()}, refresh=False
            )
        self._bar.update(n)

    def close(self) -> None:
        """Closes the bar; further calls do nothing."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
