"""A persistent XLA compilation cache, so a restarted or resumed run does not compile again.

Every process that runs an experiment compiles the same programs: the train step of each stage,
the sampler, the evaluations. A run resumed after a preemption, a second seed in a new process,
or the next stage of a pipeline pays that again (on this 2-core CPU the smoke run of
bt_dpo_synthetic takes 30 s cold and 12.5 s with a warm cache; on accelerators an 8B step can
take minutes to compile). jax ships a persistent cache keyed by the program, the compile
options, the backend and the jax/XLA versions (`jax_compilation_cache_dir`); this module only
chooses where it lives and turns it on for every program, not just the ones that take more than
a second to compile (jax's default), since a run compiles many small ones.

`alignax run` calls `enable_compilation_cache()` unless ALIGNAX_COMPILATION_CACHE=0. The folder
is, in order: the `path` argument, $ALIGNAX_COMPILATION_CACHE_DIR, $JAX_COMPILATION_CACHE_DIR,
`$ALIGNAX_CACHE/jax`, `~/.cache/alignax/jax`. It grows without bound unless `max_size_bytes` is
given; then jax evicts the least recently used entries, keeping an access-time file per entry
under a file lock. Every process sharing a folder must then use the same setting: a process
without eviction writes entries without access-time files, and an evicting one fails on them
(jax warns "Error writing persistent compilation cache entry"). Executables loaded from the
cache are the ones a fresh compilation produces, so results do not depend on whether the cache
was warm (tests/faults/ compares resumed runs, which hit the cache, byte for byte with fresh ones).

jax writes an entry in place, not through a temporary file: a process killed (or a disk
filling up) in the middle of writing one leaves it truncated, and every later run then warns
"Error reading persistent compilation cache entry" for that program and compiles it again. The
results are unaffected; delete the file the warning names (or the whole folder) to silence it.
"""

from __future__ import annotations

import os

def default_cache_dir() -> str:
    """The folder `enable_compilation_cache()` uses without a `path` (see the module doc)."""
    for var in ("ALIGNAX_COMPILATION_CACHE_DIR", "JAX_COMPILATION_CACHE_DIR"):
        if os.environ.get(var):
            return os.environ[var]
    base = os.environ.get("ALIGNAX_CACHE") or os.path.join(
        os.path.expanduser("~"), ".cache", "alignax")
    return os.path.join(base, "jax")


def enable_compilation_cache(path: str | None = None, *,
                             max_size_bytes: int | None = None) -> str:
    """Turns on jax's persistent compilation cache in `path` for all programs. Returns the
    folder. Call it before the programs are compiled (it applies to later compilations).
    `max_size_bytes` turns on jax's LRU eviction (see the module docstring); None leaves jax's
    setting (no eviction unless JAX_COMPILATION_CACHE_MAX_SIZE says otherwise)."""
    import jax

    path = os.path.abspath(path or default_cache_dir())
    os.makedirs(path, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    if max_size_bytes is not None:
        jax.config.update("jax_compilation_cache_max_size", int(max_size_bytes))
    return path
