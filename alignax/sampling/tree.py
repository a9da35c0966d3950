"""Response trees: responses sampled with shared prefixes, and the preference pairs among leaves.

A tree with branching factor b and depth d grows a response in d segments of `segment_len`
tokens: every node (a prompt + prefix) is continued b ways by the KV-cache sampler
(`alignax.sampling.sampler.sample` with `num_samples=b`, one prefill per node), so a prompt gets
L = b^d leaves, each a full response of R = d * segment_len tokens. Leaves are numbered so that
leaf l descends from the level-k node l // b^(d - k); two leaves share their first
s * segment_len tokens, with s the depth of their lowest common ancestor.

Comparing leaves of one tree ("tree-structured preference data") instead of independent
responses ("chain" pairs) is the data-curation method of Qiu et al. 2024, "Reward Generalization
in RLHF: A Topological Perspective" (arXiv 2402.10184).

Shapes: B prompts, P prompt length, b branching, d depth, L = b^d leaves, R response length,
M pairs.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from alignax.sampling.sampler import sample

PAIR_STRATEGIES = ("all", "siblings", "cousins", "root")


class TreeOutput(NamedTuple):
    """Leaves of one response tree per prompt.

    Attributes:
      prompt_ids: [B, P] the prompts, left-aligned as the sampler saw them.
      prompt_mask: [B, P] valid prompt tokens.
      tokens: [B, L, R] int32 leaf responses (leaf l's first k segments are its level-k node's).
      logps: [B, L, R] float32 log-probs of the tokens under the model (temperature 1).
    """

    prompt_ids: jax.Array
    prompt_mask: jax.Array
    tokens: jax.Array
    logps: jax.Array


def sample_tree(model, params, prompt_ids, prompt_mask, rng, *, branching: int, depth: int,
                segment_len: int, **sample_kwargs) -> TreeOutput:
    """Samples a response tree per prompt by forking every node `branching` ways.

    Level k (k = 0..d-1) continues each of the B * b^k nodes (prompt + k segments) with b
    samples of `segment_len` tokens, sharing the node's prefill in the KV cache:

        node_{k+1}[i * b + j] = node_k[i] ++ y_j,   y_j ~ pi(. | node_k[i]),  j < b.

    Args:
      model: causal LM Model (with `apply_cached`).
      params: its parameters.
      prompt_ids: [B, P] int prompts (any padding side).
      prompt_mask: [B, P] valid prompt tokens.
      rng: PRNG key.
      branching: b >= 1.
      depth: d >= 1.
      segment_len: tokens per level; responses have R = d * segment_len tokens.
      **sample_kwargs: temperature, top_k, top_p, min_p, pad_id of `sample` (no stop tokens:
        every segment has exactly `segment_len` tokens).

    Returns:
      TreeOutput with L = b^d leaves per prompt.
    """
    if branching < 1 or depth < 1 or segment_len < 1:
        raise ValueError(f"branching, depth and segment_len must be >= 1, got {branching}, "
                         f"{depth}, {segment_len}")
    if sample_kwargs.get("stop_tokens"):
        raise ValueError("sample_tree needs fixed-length segments: stop_tokens is not supported")
    if prompt_ids.ndim != 2 or prompt_mask.shape != prompt_ids.shape:
        raise ValueError(f"expected prompt_ids [B, P] and a mask of the same shape, got "
                         f"{prompt_ids.shape} and {prompt_mask.shape}")
    b, p = prompt_ids.shape
    ids, mask = jnp.asarray(prompt_ids, jnp.int32), jnp.asarray(prompt_mask, bool)
    logps = jnp.zeros((b, 0), jnp.float32)
    first_ids = first_mask = None
    for level in range(depth):
        rng, key = jax.random.split(rng)
        out = sample(model, params, ids, mask, key, max_new_tokens=segment_len,
                     num_samples=branching, **sample_kwargs)
        if level == 0:
            first_ids, first_mask = out.prompt_ids[::branching], out.prompt_mask[::branching]
        ids = jnp.concatenate([out.prompt_ids, out.tokens], axis=1)
        mask = jnp.concatenate([out.prompt_mask, out.mask], axis=1)
        logps = jnp.concatenate([jnp.repeat(logps, branching, axis=0), out.logps], axis=1)
    leaves = branching ** depth
    r = depth * segment_len
    return TreeOutput(prompt_ids=first_ids, prompt_mask=first_mask,
                      tokens=ids[:, p:].reshape(b, leaves, r),
                      logps=logps.reshape(b, leaves, r))


def shared_depth(branching: int, depth: int) -> np.ndarray:
    """Depth of the lowest common ancestor of every pair of leaves, [L, L] int32.

    s(i, j) = max{k <= d : i // b^(d-k) == j // b^(d-k)}: the leaves share their first s
    segments (s = d on the diagonal, 0 for leaves in different root branches).
    """
    if branching < 2 or depth < 1:
        raise ValueError(f"a tree with pairs needs branching >= 2 and depth >= 1, got "
                         f"{branching}, {depth}")
    leaves = np.arange(branching ** depth)
    out = np.zeros((leaves.size, leaves.size), np.int32)
    for k in range(1, depth + 1):
        node = leaves // branching ** (depth - k)
        out += (node[:, None] == node[None, :]).astype(np.int32)
    return out


def tree_pairs(branching: int, depth: int, strategy: str = "all") -> np.ndarray:
    """Leaf pairs (i < j) of one tree to be compared, [M, 2] int32, in row-major order.

    Strategies (s = shared depth of the pair, see `shared_depth`):
      "all": every pair of distinct leaves, M = L (L - 1) / 2;
      "siblings": same parent (s = d - 1): they differ only in the last segment;
      "cousins": 0 < s < d - 1: a shared prefix, more than the last segment differs;
      "root": s = 0: no shared segment (the closest to independent responses).
    """
    if strategy not in PAIR_STRATEGIES:
        raise ValueError(f"unknown pair strategy {strategy!r}; valid: {PAIR_STRATEGIES}")
    s = shared_depth(branching, depth)
    i, j = np.triu_indices(s.shape[0], k=1)
    keep = {"all": np.ones(i.shape, bool), "siblings": s[i, j] == depth - 1,
            "cousins": (s[i, j] > 0) & (s[i, j] < depth - 1), "root": s[i, j] == 0}[strategy]
    return np.stack([i[keep], j[keep]], axis=1).astype(np.int32)
