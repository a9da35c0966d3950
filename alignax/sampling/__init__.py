"""Sampling: the jitted KV-cache sampler, best-of-N, rejection sampling, response trees, the
recompute oracle."""

from alignax.sampling.guidance import guided_logits
from alignax.sampling.naive import sample_continuations
from alignax.sampling.sampler import (
    SampleOutput,
    best_of_n,
    categorical,
    left_align,
    process_logits,
    rejection_sample,
    repetition_penalty_logits,
    sample,
)
from alignax.sampling.tree import PAIR_STRATEGIES, TreeOutput, sample_tree, shared_depth, tree_pairs

__all__ = [
    "PAIR_STRATEGIES",
    "SampleOutput",
    "TreeOutput",
    "sample_tree",
    "shared_depth",
    "tree_pairs",
    "best_of_n",
    "categorical",
    "guided_logits",
    "left_align",
    "process_logits",
    "rejection_sample",
    "repetition_penalty_logits",
    "sample",
    "sample_continuations",
]
