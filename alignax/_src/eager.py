"""One compiled program for a model call made outside any trace.

Called eagerly (a notebook cell, an experiment's evaluation code, a test), a JAX function runs
op by op, and every primitive is lowered and compiled on its own, once per shape: a one-layer
transformer forward compiles a few hundred small programs the first time it is called, which
costs more than compiling the whole forward once. `jit_when_concrete(fn)` returns a function
that, outside any trace, runs `fn` as one jitted program (compiled once per input shapes and
per static keyword values), and inside a trace (under an outer `jax.jit`, `grad`, `vmap`,
`scan`) calls `fn` directly, so an enclosing program is exactly what it was.

Keyword arguments whose leaves are arrays (jax or numpy) are traced; every other keyword value
(bools, ints, floats, strings, tuples, None) is static, as a Python value branching the
function's code would have to be. The values computed are those of the same function under
`jax.jit`: equal to the op-by-op results up to XLA's fusion (which on CPU keeps elementwise
results and may change the rounding of reductions at the last ulp).
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import jax
import numpy as np


def _is_array(x: Any) -> bool:
    return isinstance(x, (jax.Array, np.ndarray, np.generic))


def _traced(tree: Any) -> bool:
    return any(isinstance(x, jax.core.Tracer) for x in jax.tree.leaves(tree))


def jit_when_concrete(fn: Callable) -> Callable:
    """`fn(*args, **kwargs)` as one jitted program when no argument is a tracer, else `fn`.

    Positional arguments are always traced (pytrees of arrays); a keyword argument is traced when
    it has leaves and all of them are arrays, and is static otherwise (it must then be hashable).
    """
    jitted: dict[tuple[str, ...], Callable] = {}

    @functools.wraps(fn)
    def call(*args, **kwargs):
        if _traced((args, kwargs)):
            return fn(*args, **kwargs)
        static = tuple(sorted(
            k for k, v in kwargs.items()
            if not (jax.tree.leaves(v) and all(_is_array(x) for x in jax.tree.leaves(v)))))
        compiled = jitted.get(static)
        if compiled is None:
            compiled = jitted[static] = jax.jit(fn, static_argnames=static)
        return compiled(*args, **kwargs)

    return call
