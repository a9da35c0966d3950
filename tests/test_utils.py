"""Small test helpers shared across the suite."""

from __future__ import annotations

import contextlib
import logging

import jax


@contextlib.contextmanager
def count_compilations(name: str | None = None):
    """Counts XLA compilations inside the block: `with count_compilations("f") as n: ...; n()`.

    Uses jax's own "Finished XLA compilation of jit(<name>)" log records (jax.log_compiles);
    with `name`, only compilations of functions of that name count (creating inputs such as
    `jnp.ones` compiles small programs of its own).
    """
    records = []

    class Handler(logging.Handler):
        def emit(self, record):
            message = record.getMessage()
            if "Finished XLA compilation" in message and (
                    name is None or f"jit({name})" in message):
                records.append(record.getMessage())

    handler = Handler(level=logging.DEBUG)
    logger = logging.getLogger("jax")
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        with jax.log_compiles(True):
            yield lambda: len(records)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
