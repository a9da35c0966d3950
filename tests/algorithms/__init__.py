"""Shared fixtures of the algorithm tests (a Bazel-importable helper module)."""

import numpy as np


def tiny_pairs(vocab: int = 20, seed: int = 0):
    """(RESP [3, 6], BATCH): three preference pairs of 6 tokens whose responses have 3, 2 and
    4 tokens on the chosen side (reversed on the rejected side), every row unpadded."""
    rng = np.random.default_rng(seed)
    resp = np.array([[0, 0, 1, 1, 1, 0], [0, 0, 1, 1, 0, 0], [0, 0, 1, 1, 1, 1]], np.int32)
    batch = {
        "chosen_ids": rng.integers(1, vocab, (3, 6)).astype(np.int32),
        "rejected_ids": rng.integers(1, vocab, (3, 6)).astype(np.int32),
        "chosen_mask": np.ones((3, 6), np.int32), "rejected_mask": np.ones((3, 6), np.int32),
        "chosen_response_mask": resp, "rejected_response_mask": resp[::-1].copy(),
    }
    return resp, batch


def unpaired_rows(n: int, length: int, seed: int = 0, *, index: bool = False) -> list[dict]:
    """n random right-padded KTO rows of `length` tokens (prompt 1-4 tokens, completion 1-6,
    ids in [3, 32), every third row undesirable); with `index`, each row's position too."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        p, c = int(rng.integers(1, 5)), int(rng.integers(1, 7))
        ids = np.zeros(length, np.int32)
        ids[:p + c] = rng.integers(3, 32, p + c)
        mask = (np.arange(length) < p + c).astype(np.int32)
        resp = ((np.arange(length) >= p) & (np.arange(length) < p + c)).astype(np.int32)
        row = {"ids": ids, "mask": mask, "response_mask": resp, "label": np.asarray(i % 3 != 0)}
        if index:
            row["index"] = np.asarray(i, np.int32)
        rows.append(row)
    return rows
