"""Sampling: the jitted KV-cache sampler, best-of-N, rejection sampling, the recompute oracle."""

from alignax.sampling.guidance import guided_logits
from alignax.sampling.naive import sample_continuations
from alignax.sampling.sampler import (
    SampleOutput,
    best_of_n,
    left_align,
    process_logits,
    rejection_sample,
    sample,
)

__all__ = [
    "SampleOutput",
    "best_of_n",
    "guided_logits",
    "left_align",
    "process_logits",
    "rejection_sample",
    "sample",
    "sample_continuations",
]
