"""Ranking evaluation: AUROC of scores against binary labels, and majority voting with early
pruning of the samples a prefix score rates low.

Both are jit-friendly (fixed shapes, no data-dependent slicing) and vmap over a leading axis.

Shapes: N scored items, P problems, S samples per problem, A answer values.
"""

from __future__ import annotations

from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp

from alignax._src import checks


def auroc(scores, labels, mask=None) -> jax.Array:
    """Area under the ROC curve: the probability that a positive outranks a negative, ties
    counted half.

    .. math::
        \\mathrm{AUROC} = \\frac{1}{n_+ n_-} \\sum_{i: y_i = 1} \\sum_{j: y_j = 0}
            \\left([s_i > s_j] + \\tfrac12 [s_i = s_j]\\right)

    Computed in O(N log N): the negatives' scores are sorted once and each positive counts the
    negatives below and equal to it by binary search. NaN when either class is empty. Not
    differentiable (piecewise constant in the scores).

    Args:
      scores: [N] finite real scores (higher = more likely positive).
      labels: [N] bool or {0, 1}, 1 = positive.
      mask: optional [N] bool; False items are ignored.

    Returns:
      Scalar float32 in [0, 1] (or NaN).
    """
    chex.assert_rank(scores, 1, custom_message="scores")
    chex.assert_equal_shape([scores, labels], custom_message="scores, labels")
    s = checks.as_float(scores, "scores")
    valid = jnp.ones(s.shape, bool) if mask is None else jnp.asarray(mask, bool)
    if mask is not None:
        chex.assert_equal_shape([scores, mask], custom_message="scores, mask")
    pos = (jnp.asarray(labels) != 0) & valid
    neg = (jnp.asarray(labels) == 0) & valid
    neg_sorted = jnp.sort(jnp.where(neg, s, jnp.inf))  # non-negatives sort last, never "below"
    below = jnp.searchsorted(neg_sorted, s, side="left")
    upto = jnp.searchsorted(neg_sorted, s, side="right")
    n_neg = neg.sum()
    # a finite score never equals the +inf placeholders, so `upto - below` counts negatives only
    equal = jnp.minimum(upto, n_neg) - jnp.minimum(below, n_neg)
    wins = jnp.where(pos, below.astype(s.dtype) + 0.5 * equal.astype(s.dtype), 0.0).sum()
    denom = pos.sum().astype(s.dtype) * n_neg.astype(s.dtype)
    return jnp.where(denom > 0, wins / jnp.where(denom > 0, denom, 1.0), jnp.nan)


class PrunedVote(NamedTuple):
    """Outcome of `pruned_majority_vote` (P problems, S samples each).

    Attributes:
      answer: [P] int32 majority answer of the kept samples (-1 if no kept sample has one).
      full_answer: [P] int32 majority answer of all samples (no pruning).
      kept: [P, S] bool, samples finished after the prefix check.
      tokens_used: [P] float32 tokens generated with pruning (kept samples in full, pruned ones
        up to the prefix).
      tokens_full: [P] float32 tokens generated without pruning.
    """

    answer: jax.Array
    full_answer: jax.Array
    kept: jax.Array
    tokens_used: jax.Array
    tokens_full: jax.Array


def majority_vote(answers, weights, num_answers: int) -> jax.Array:
    """Most frequent answer among weighted samples: [P, S] ints, [P, S] weights -> [P] int32.

    Answers outside [0, num_answers) (e.g. -1 for malformed) do not vote; ties go to the smallest
    answer; -1 where no sample votes.
    """
    chex.assert_rank(answers, 2, custom_message="answers")
    chex.assert_equal_shape([answers, weights], custom_message="answers, weights")
    onehot = jax.nn.one_hot(answers, num_answers, dtype=jnp.float32)  # [P, S, A]; out of range -> 0
    counts = jnp.einsum("psa,ps->pa", onehot, jnp.asarray(weights, jnp.float32))
    best = jnp.argmax(counts, axis=-1).astype(jnp.int32)
    return jnp.where(counts.max(axis=-1) > 0, best, -1)


def pruned_majority_vote(prefix_scores, answers, lengths, prefix_lengths, *,
                         quantile: float, num_answers: int) -> PrunedVote:
    """Majority voting that stops the samples whose prefix score is low.

    Each problem's S samples are scored once their prefix of `prefix_lengths` tokens is written;
    sample s continues only if its score reaches the problem's `quantile` of the S scores,

    .. math::
        \\text{kept}_s = [q_s \\ge \\mathrm{quantile}_\\tau(q_1, \\dots, q_S)],

    (the top-scored sample is always kept) and the answer is the majority of the kept samples'
    final answers. A pruned sample costs only its prefix: tokens saved = sum over pruned samples
    of (length - prefix length). Nath et al. 2024, "Learning Goal-Conditioned Representations for
    Language Reward Models" (arXiv 2407.13887), prune trajectories by their goal-conditioned
    Q-value at a prefix during majority voting.

    Args:
      prefix_scores: [P, S] score of each sample at its prefix (higher = more promising).
      answers: [P, S] int final answers in [0, num_answers); others (e.g. -1) do not vote.
      lengths: [P, S] tokens of each full sample.
      prefix_lengths: [P, S] tokens of each sample's scored prefix (<= lengths).
      quantile: tau in [0, 1]: 0 keeps everything, 0.6 prunes about the lowest 60%.
      num_answers: A.

    Returns:
      PrunedVote (see its docstring).
    """
    chex.assert_rank(prefix_scores, 2, custom_message="prefix_scores")
    chex.assert_equal_shape([prefix_scores, answers, lengths, prefix_lengths],
                            custom_message="prefix_scores, answers, lengths, prefix_lengths")
    checks.check_in_range(quantile, "quantile", 0.0, 1.0)
    q = checks.as_float(prefix_scores, "prefix_scores")
    threshold = jnp.quantile(q, quantile, axis=1, keepdims=True)
    kept = q >= threshold
    full_len = checks.as_float(lengths, "lengths")
    pre_len = jnp.minimum(checks.as_float(prefix_lengths, "prefix_lengths"), full_len)
    ones = jnp.ones(q.shape, jnp.float32)
    return PrunedVote(
        answer=majority_vote(answers, kept.astype(jnp.float32), num_answers),
        full_answer=majority_vote(answers, ones, num_answers),
        kept=kept,
        tokens_used=jnp.where(kept, full_len, pre_len).sum(axis=1),
        tokens_full=full_len.sum(axis=1),
    )
