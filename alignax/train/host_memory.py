"""Keeps freed host memory in the process for reuse: the page-fault cost of XLA:CPU steps.

XLA:CPU allocates the temporaries of every execution with `posix_memalign` (2.3 GB for the
reward-model step of `benchmarks/`, about 7 GB for a GRPO update of 64 x 192 tokens) and frees
them when the execution ends. glibc serves requests that large with a fresh `mmap` and returns
them with `munmap`, so every step touches its temporaries for the first time: the kernel takes a
page fault and zero-fills each 4 KB page. That is 0.57M faults and about 0.8 s of kernel time per
reward-model step on a 2-core machine, and 1.7M faults and 4-15 s of kernel time per GRPO
update (more when a rollout ran just before; benchmarks/RESULTS.md).

`reuse_host_memory()` tells glibc to keep such memory instead:

- `M_ARENA_MAX = 1`: every thread allocates from the main arena, which grows with `brk`. A
  thread's own arena is capped at 64 MB and falls back to `mmap` for anything bigger, whatever
  the other settings say; XLA allocates from its worker threads.
- `M_MMAP_MAX = 0`: no allocation is served by `mmap`.
- `M_TRIM_THRESHOLD = -1`: freed memory at the top of the heap is never given back.

After the first few steps the heap holds the largest set of buffers a step needs and later steps
take no page faults. The cost: the process keeps its peak heap until it exits (memory it freed
is reused by the process, not returned to the system), and threads share one arena's lock.
Call it before the first jax computation: threads that already allocated keep their own arenas,
which still map and unmap. The settings are process-wide; the `alignax run` command applies them
on start (set ALIGNAX_REUSE_HOST_MEMORY=0 to opt out). On anything but Linux with glibc it does
nothing.
"""

from __future__ import annotations

import ctypes
import os
import sys
import warnings

# mallopt parameters, from glibc's malloc.h
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_M_ARENA_MAX = -8
_applied = False


def _glibc():
    """The C library, if it is glibc (it has `gnu_get_libc_version` and `mallopt`), else None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version.restype = ctypes.c_char_p
        libc.gnu_get_libc_version()
        libc.mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
        libc.mallopt.restype = ctypes.c_int
        return libc
    except (OSError, AttributeError):
        return None


def reuse_host_memory(*, respect_env: bool = True) -> bool:
    """Makes glibc keep freed memory for reuse (see the module docstring). Idempotent.

    Args:
      respect_env: if True, ALIGNAX_REUSE_HOST_MEMORY=0 in the environment turns this into a
        no-op.

    Returns:
      True if the settings are in effect (now or from an earlier call), False where they do not
      apply (not glibc, or opted out).
    """
    global _applied
    if _applied:
        return True
    if respect_env and os.environ.get("ALIGNAX_REUSE_HOST_MEMORY", "1") == "0":
        return False
    libc = _glibc()
    if libc is None:
        return False
    if _backends_initialized():
        warnings.warn("reuse_host_memory() called after jax created its backend: threads that "
                      "already allocated keep their own arenas and still map and unmap large "
                      "buffers; call it before the first jax computation", stacklevel=2)
    # the arena limit first: it only takes effect for threads that have not allocated yet
    ok = all(libc.mallopt(param, value) == 1 for param, value in (
        (_M_ARENA_MAX, 1), (_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, -1)))
    _applied = ok
    return ok


def _backends_initialized() -> bool:
    if "jax" not in sys.modules:
        return False
    try:
        from jax._src import xla_bridge
    except ImportError:  # pragma: no cover - layout of a future jax
        return False
    return bool(xla_bridge.backends_are_initialized())
