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

After the first steps the heap holds what a step needs and later steps take no page faults.
The costs: the process keeps its peak heap until it exits (freed memory is reused by the process,
not returned to the system); threads share one arena's lock; and the heap fragments. Small
allocations get carved out of a freed temporary's hole, so the next step's temporaries no longer
fit there and the heap grows: the benchmarks' reward-model step settles at 7.4 GB of resident
memory instead of 3.1 GB (three copies of its 2.3 GB temporaries, reached by the 7th step; the
two steps that grow the heap take 6.7 s instead of 2.9 s), while a GRPO iteration grows only from
7.8 to 8.7 GB. When the machine is busy the heap settles later and larger: XLA frees one call's
temporaries from its own threads while the next call may already be allocating, so with six
processes sharing two cores a function with 200 MB of temporaries still grew the heap in up to
9 of 24 calls and held up to ten copies of them (tests/train/test_host_memory.py). Measure before
relying on it.

The settings are process-wide, affect every library in the process (torch gains the same way:
benchmarks/RESULTS.md), and must come before the first jax computation: threads that already
allocated keep their own arenas, which still map and unmap. `alignax run` applies them when
ALIGNAX_REUSE_HOST_MEMORY=1 is set. On anything but Linux with glibc it does nothing.
"""

from __future__ import annotations

import ctypes
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


def reuse_host_memory() -> bool:
    """Makes glibc keep freed memory for reuse (see the module docstring). Idempotent.

    Returns:
      True if the settings are in effect (now or from an earlier call), False where they do not
      apply (not Linux with glibc).
    """
    global _applied
    if _applied:
        return True
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
