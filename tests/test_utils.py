"""Small test helpers shared across the suite."""

from __future__ import annotations

import contextlib
import logging

import jax
import numpy as np


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


class ListSource:
    """A random-access data source over a list of records (what grain's MapDataset reads)."""

    def __init__(self, records):
        self.records = records

    def __len__(self):
        return len(self.records)

    def __getitem__(self, i):
        return self.records[i]


def pair_source(seed: int = 0, n: int = 22, t: int = 8, vocab: int = 32) -> ListSource:
    """`n` random preference pairs of length `t` (prompt 1-3 tokens, responses of 1 to t - 4,
    right-padded), in the recipes' pair record format, plus an extra `gold` field."""
    rng = np.random.default_rng(seed)
    records = []
    for _ in range(n):
        prompt, lc, lr = rng.integers(1, 4), rng.integers(1, t - 3), rng.integers(1, t - 3)
        rec = {}
        for side, length in (("chosen", lc), ("rejected", lr)):
            valid = prompt + length
            rec[f"{side}_ids"] = np.where(np.arange(t) < valid, rng.integers(1, vocab, t),
                                          0).astype(np.int32)
            rec[f"{side}_mask"] = (np.arange(t) < valid).astype(np.int32)
            rec[f"{side}_response_mask"] = ((np.arange(t) >= prompt) & (np.arange(t) < valid)
                                            ).astype(np.int32)
        rec["gold"] = np.float32(rng.normal())  # an extra field passes through
        records.append(rec)
    return ListSource(records)
