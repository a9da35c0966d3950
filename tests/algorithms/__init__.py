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
