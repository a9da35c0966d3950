"""Named points where a test can kill the process: the fault-injection suite's handle.

The library calls `point(kind, *key)` at the moments a kill is most likely to lose or corrupt
something: a stage starting, a training step logged, a checkpoint being written (orbax is still
writing in the background when the point is reached), a dataset split written, summary.json
about to be written. Each point has a logical id, `kind:key...`, that is the same in every run
of the same config, whatever its workdir (paths are made relative to $ALIGNAX_FAULT_ROOT).

Unless the environment asks for it, a point costs one global lookup. With

- `ALIGNAX_FAULT_TRACE=<file>`: every id reached is appended to the file (one per line), so a
  test learns the points of an uninterrupted run;
- `ALIGNAX_FAULT_KILL=<id>`: the process sends itself SIGKILL at that point (no cleanup, no
  atexit, no flush: what a preemption or an OOM kill does).

tests/faults/ draws kill points from a trace at random and checks that every resumed run ends
byte-identical to the uninterrupted one.
"""

from __future__ import annotations

import os
import signal

_ENABLED = bool(os.environ.get("ALIGNAX_FAULT_TRACE") or os.environ.get("ALIGNAX_FAULT_KILL"))


def _relative(part) -> str:
    text = os.fspath(part) if isinstance(part, os.PathLike) else str(part)
    root = os.environ.get("ALIGNAX_FAULT_ROOT")
    if root and os.path.isabs(text):
        try:
            rel = os.path.relpath(text, root)
        except ValueError:  # another drive
            return text
        return text if rel.startswith("..") else rel
    return text


def point(kind: str, *key) -> None:
    """Marks a fault point (see the module docstring); a no-op unless the environment asks."""
    if not _ENABLED:
        return
    ident = ":".join([kind, *(_relative(k) for k in key)])
    trace = os.environ.get("ALIGNAX_FAULT_TRACE")
    if trace:
        with open(trace, "a", encoding="utf-8") as f:
            f.write(ident + "\n")
    if os.environ.get("ALIGNAX_FAULT_KILL") == ident:
        os.kill(os.getpid(), signal.SIGKILL)
