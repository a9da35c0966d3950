"""Test-wide settings: one persistent XLA compilation cache for the suite and its subprocesses.

The suite compiles the same programs in many processes (two xdist workers, and every `alignax
run` subprocess of the resume and fault-injection tests); a shared cache compiles each once.
Results do not depend on it (alignax.train.compilation_cache). Set before jax is imported, so
the workers and every subprocess that inherits the environment use it.
"""

import os

_CACHE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), ".cache",
                      "jax-tests")
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", _CACHE)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
# No per-run metric PNGs (alignax.train.plots.run_plots_enabled): hundreds of short runs drew
# about a second of figures each; metrics.jsonl is unchanged, experiments still draw their own
# figures (checked by the smoke tests), and the tests of the per-run plots turn them back on.
os.environ.setdefault("ALIGNAX_RUN_PLOTS", "0")
# No faster-compiling XLA flags here: LLVM -O0 or -O1 without its expensive passes cut a smoke
# run's CPU time by a fifth to a quarter, but changed the numerics the tests check (NaN
# gradients through soft value iteration at -O0; an exact 0 advantage became -7e-8 at -O1), so
# the suite would no longer test what a run computes.
