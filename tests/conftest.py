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
# The suite's programs are tiny, so compiling them is most of its time: with LLVM at -O1 and
# without its expensive passes an experiment's smoke run costs about a quarter less CPU time
# (armorm, cold cache: 23.1 -> 16.4 CPU seconds). Level 0 is not used: it changed the numerics
# (NaN gradients through soft value iteration, tests/tasks/test_mdp.py).
os.environ.setdefault("XLA_FLAGS", "--xla_backend_optimization_level=1 "
                                   "--xla_llvm_disable_expensive_passes=true")
