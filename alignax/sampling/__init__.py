"""Sampling: the jitted KV-cache sampler, guided decoding (GenARM: several models, one KV cache
each, in the sampler's scan; VAS: value guides), logits hooks (watermarks:
`alignax.sampling.watermark`), best-of-N, rejection sampling, response trees, the recompute
oracle."""

from alignax.sampling.guidance import guided_logits
from alignax.sampling.guided import (
    GuidedSampleOutput,
    args_sample,
    arm_rewards,
    make_guided_rollout,
    sample_guided,
)
from alignax.sampling.naive import sample_continuations
from alignax.sampling.sampler import (
    LogitsHook,
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
    "GuidedSampleOutput",
    "LogitsHook",
    "PAIR_STRATEGIES",
    "SampleOutput",
    "TreeOutput",
    "sample_tree",
    "shared_depth",
    "tree_pairs",
    "args_sample",
    "arm_rewards",
    "best_of_n",
    "categorical",
    "guided_logits",
    "left_align",
    "make_guided_rollout",
    "process_logits",
    "rejection_sample",
    "repetition_penalty_logits",
    "sample",
    "sample_continuations",
    "sample_guided",
]
