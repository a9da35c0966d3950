"""Selecting one answer from N sampled solutions: majority vote, reward-weighted vote, best-of-n,
and the aggregation of a process reward model's step scores into a solution score.

Self-consistency (Wang et al. 2022, arXiv 2203.11171) answers with the most frequent final
answer; weighted voting (Li et al. 2023, "Making Large Language Models Better Reasoners with
Step-Aware Verifier", arXiv 2206.02336; Sun et al. 2024, "Easy-to-Hard Generalization",
arXiv 2403.09472) sums a reward model's scores per answer,

    a* = argmax_a  sum_{i: ans_i = a} score_i,

and best-of-n answers with the single highest-scored solution. A process reward model (PRM)
scores each step; its solution score is the min, the product or the last of the step
probabilities (Lightman et al. 2023, "Let's Verify Step by Step", arXiv 2305.20050, use the
product; Sun et al. report min, product and last).

Every function is a pure jnp function of fixed-shape arrays with masks (no data-dependent
shapes): jit-able, and vmap-able over any leading axis (seeds, problems). Shapes: P problems,
N samples per problem, S steps, A possible answers (answers are ints in [0, A)).
Ties go to the smallest answer (votes) or the first sample (best-of-n); -1 means no answer
(no valid sample).
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp

from alignax._src import checks

AGGREGATIONS = ("min", "product", "last", "mean")


def _valid(answers, mask, num_answers: int):
    a = jnp.asarray(answers)
    ok = (a >= 0) & (a < num_answers)
    return ok if mask is None else ok & jnp.asarray(mask, bool)


def answer_totals(answers, scores, mask=None, *, num_answers: int) -> tuple[jax.Array, jax.Array]:
    """Per-answer score totals and presence: sum_{i: ans_i = a, mask_i} score_i.

    Args:
      answers: [..., N] int final answers; values outside [0, A) never vote.
      scores: [..., N] real scores (a weight per sample).
      mask: optional [..., N] bool, False = the sample does not vote.
      num_answers: A (static).

    Returns:
      (totals [..., A] float32, present [..., A] bool: some valid sample gave answer a).
    """
    chex.assert_equal_shape([answers, scores], custom_message="answers, scores")
    valid = _valid(answers, mask, num_answers)
    onehot = jax.nn.one_hot(jnp.where(valid, answers, -1), num_answers, dtype=jnp.float32)
    s = checks.as_float(scores, "scores").astype(jnp.float32)
    totals = jnp.einsum("...na,...n->...a", onehot, jnp.where(valid, s, 0.0))
    return totals, onehot.sum(-2) > 0


def weighted_vote(answers, scores, mask=None, *, num_answers: int) -> jax.Array:
    """The answer with the largest summed score among the answers some valid sample gave.

    .. math::
        a^* = \\arg\\max_{a \\in \\{ans_i : mask_i\\}} \\sum_{i: ans_i = a, mask_i} score_i

    Scores are used as they are (give probabilities, e.g. sigmoid of a reward model's logit,
    or aggregated PRM step probabilities; a zero-score answer that was given still beats one
    that was not). Ties go to the smallest answer.

    Args:
      answers: [..., N] int final answers (outside [0, A): no vote).
      scores: [..., N] scores.
      mask: optional [..., N] bool valid samples.
      num_answers: A (static).

    Returns:
      [...] int32 chosen answer, -1 where no sample is valid.
    """
    totals, present = answer_totals(answers, scores, mask, num_answers=num_answers)
    best = jnp.argmax(jnp.where(present, totals, -jnp.inf), axis=-1).astype(jnp.int32)
    return jnp.where(present.any(-1), best, -1)


def majority_vote(answers, mask=None, *, num_answers: int) -> jax.Array:
    """Self-consistency: the most frequent answer among the valid samples, [..., N] ->
    [...] int32 (ties to the smallest answer, -1 when no sample is valid); `weighted_vote`
    with every score 1."""
    return weighted_vote(answers, jnp.ones(jnp.shape(answers), jnp.float32), mask,
                         num_answers=num_answers)


def best_of_n(scores, mask=None) -> jax.Array:
    """Index of the highest-scored valid sample: [..., N] -> [...] int32 (ties: the first;
    -1 when no sample is valid)."""
    s = checks.as_float(scores, "scores")
    valid = jnp.ones(s.shape, bool) if mask is None else jnp.asarray(mask, bool)
    chex.assert_equal_shape([s, valid], custom_message="scores, mask")
    best = jnp.argmax(jnp.where(valid, s, -jnp.inf), axis=-1).astype(jnp.int32)
    return jnp.where(valid.any(-1), best, -1)


def best_of_n_answer(answers, scores, mask=None) -> jax.Array:
    """The answer of the highest-scored valid sample: [..., N] x2 -> [...] int32 (-1 when no
    sample is valid; the answer itself is returned as is)."""
    chex.assert_equal_shape([answers, scores], custom_message="answers, scores")
    i = best_of_n(scores, mask)
    picked = jnp.take_along_axis(jnp.asarray(answers), jnp.maximum(i, 0)[..., None], -1)[..., 0]
    return jnp.where(i >= 0, picked, -1).astype(jnp.int32)


def aggregate_step_scores(step_probs, step_mask, method: str = "min") -> jax.Array:
    """A solution's score from its steps' probabilities of being correct.

    .. math::
        \\text{min}: \\min_{k} p_k, \\quad \\text{product}: \\prod_k p_k, \\quad
        \\text{last}: p_{K'}, \\quad \\text{mean}: \\tfrac{1}{K'} \\sum_k p_k

    over the valid steps k (K' = the last valid one). A solution without a valid step scores 1
    (min, product: the empty min / product), its "last" and "mean" 0.

    Args:
      step_probs: [..., S] probabilities in [0, 1] (e.g. sigmoid of a PRM's step logits).
      step_mask: [..., S] bool / {0, 1}, the real steps.
      method: "min", "product", "last" or "mean" (static).

    Returns:
      [...] float32.
    """
    if method not in AGGREGATIONS:
        raise ValueError(f"method must be one of {AGGREGATIONS}, got {method!r}")
    p = checks.as_float(step_probs, "step_probs").astype(jnp.float32)
    m = jnp.asarray(step_mask).astype(bool)
    chex.assert_equal_shape([p, m], custom_message="step_probs, step_mask")
    if method == "min":
        return jnp.min(jnp.where(m, p, 1.0), axis=-1)
    if method == "product":
        return jnp.prod(jnp.where(m, p, 1.0), axis=-1)
    if method == "mean":
        return jnp.sum(jnp.where(m, p, 0.0), -1) / jnp.maximum(m.sum(-1), 1)
    s = m.shape[-1]
    last = s - 1 - jnp.argmax(m[..., ::-1], axis=-1)
    out = jnp.take_along_axis(p, last[..., None], -1)[..., 0]
    return jnp.where(m.any(-1), out, 0.0)


def coverage(correct, mask=None) -> jax.Array:
    """pass@N: whether any valid sample is correct, [..., N] -> [...] float32 (the ceiling of
    every selection rule that answers with a sampled answer)."""
    c = jnp.asarray(correct).astype(bool)
    if mask is not None:
        chex.assert_equal_shape([c, mask], custom_message="correct, mask")
        c = c & jnp.asarray(mask, bool)
    return c.any(-1).astype(jnp.float32)
