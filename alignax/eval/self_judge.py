r"""A policy as its own process reward model: step scores from its token log-probs, first-error
localisation, and the ProcessBench metrics.

Self-PRM (Feng et al. 2025, "Is PRM Necessary? Problem-Solving RL Implicitly Induces PRM
Capability in LLMs", arXiv 2505.11227): the policy that wrote N solutions judges them itself,
and the solutions are re-ranked (argmax of the self-score) or weighted-voted with it
(`alignax.eval.voting`). Here the judgment is read off the policy's own token log-probs: step k
of a solution scores

    mean:  s_k = (1 / |T_k|) sum_{t in T_k} log pi(y_t | y_<t, x)      (sum: without 1 / |T_k|)

over the tokens T_k of the step that count (e.g. the tokens the policy generated), and a
solution scores min_k s_k (its weakest step, the PRM convention of Lightman et al. 2023), or
another `voting.AGGREGATIONS` of the step probabilities exp(s_k).

Process judgment is measured as in ProcessBench (Zheng et al. 2024, "ProcessBench: Identifying
Process Errors in Mathematical Reasoning", arXiv 2412.06559): the judge names the earliest
erroneous step of a solution, or says that every step is correct; with a threshold tau the
predicted first error is the first step whose score is below tau ("no error" = the number of
steps k when none is). The metric is the F1 of two accuracies,

    acc_err     = mean over erroneous solutions of 1[predicted first error == gold first error]
    acc_correct = mean over correct solutions   of 1[predicted "no error"]
    F1          = 2 acc_err acc_correct / (acc_err + acc_correct)     (0 when both are 0),

the harmonic mean ProcessBench reports. The paper's solution-level analysis of Self-PRM reports
its precision, low (< 10%) on hard problems: among the solutions the judge accepts (solution
score >= tau), the fraction that are truly correct (`judge_precision_recall`).

Every function is a pure jnp function of fixed-shape arrays with masks: jit-able and vmap-able
over any leading axis (seeds, thresholds). Shapes: B rows (solutions, or any leading dims ...),
T tokens, K step slots (slots past a row's k steps are masked), C candidate thresholds.
"""

from __future__ import annotations

from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp

from alignax._src import checks
from alignax.eval import voting


class StepScores(NamedTuple):
    """Per-step self-judgment scores.

    Attributes:
      mean: [..., K] float32 mean token log-prob of each step (0 where the step is masked).
      total: [..., K] float32 summed token log-prob of each step (0 where masked).
      count: [..., K] int32 tokens counted in each step.
      mask: [..., K] bool: the step has at least one counted token.
    """

    mean: jax.Array
    total: jax.Array
    count: jax.Array
    mask: jax.Array


def step_ids_from_spans(start, end, length: int) -> jax.Array:
    """The step of each token from step spans: token t belongs to step k when
    start_k <= t < end_k.

    Args:
      start: [..., K] int first token of each step (-1: no step in this slot).
      end: [..., K] int one past its last token (-1: no step).
      length: T (static).

    Returns:
      [..., T] int32 step id of each token, -1 for tokens outside every step (spans do not
      overlap; if they did, the later step wins).
    """
    start, end = jnp.asarray(start, jnp.int32), jnp.asarray(end, jnp.int32)
    chex.assert_equal_shape([start, end], custom_message="start, end")
    t = jnp.arange(int(length), dtype=jnp.int32)
    inside = (t >= start[..., :, None]) & (t < end[..., :, None]) & (start[..., :, None] >= 0)
    k = jnp.arange(start.shape[-1], dtype=jnp.int32)[:, None]
    return jnp.max(jnp.where(inside, k, -1), axis=-2)


def step_scores(token_logps, step_ids, token_mask=None, *, num_steps: int) -> StepScores:
    """Per-step mean and summed log-probs of a solution's tokens.

    .. math::
        \\text{total}_k = \\sum_{t: id_t = k, m_t} \\log \\pi_t, \\quad
        \\text{mean}_k = \\text{total}_k / |\\{t: id_t = k, m_t\\}|

    Args:
      token_logps: [..., T] log pi(y_t | y_<t, x) of each token (any value where not counted).
      step_ids: [..., T] int step of each token (-1 or >= K: in no step; e.g.
        `step_ids_from_spans`).
      token_mask: optional [..., T] bool, the tokens that count (e.g. the generated ones; a
        template token the policy did not choose is no judgment of it).
      num_steps: K (static).

    Returns:
      StepScores with [..., K] fields.
    """
    lp = checks.as_float(token_logps, "token_logps").astype(jnp.float32)
    ids = jnp.asarray(step_ids, jnp.int32)
    chex.assert_equal_shape([lp, ids], custom_message="token_logps, step_ids")
    m = jnp.ones(lp.shape, bool) if token_mask is None else jnp.asarray(token_mask, bool)
    chex.assert_equal_shape([lp, m], custom_message="token_logps, token_mask")
    onehot = jax.nn.one_hot(jnp.where(m, ids, -1), int(num_steps), dtype=jnp.float32)  # [.,T,K]
    total = jnp.einsum("...tk,...t->...k", onehot, jnp.where(m, lp, 0.0))
    count = onehot.sum(-2)
    mean = total / jnp.maximum(count, 1.0)
    return StepScores(mean, total, count.astype(jnp.int32), count > 0)


def solution_scores(step_logps, step_mask, method: str = "min") -> jax.Array:
    """A solution's self-score from its step scores (log-probs): the `method` aggregation of
    the step probabilities exp(s_k) (`voting.aggregate_step_scores`; "min" = exp(min_k s_k),
    the weakest step).

    Args:
      step_logps: [..., K] step scores (log-probs, e.g. `StepScores.mean`).
      step_mask: [..., K] the real steps.
      method: one of `voting.AGGREGATIONS` (static).

    Returns:
      [...] float32 in [0, 1] (a probability-like weight for `voting.weighted_vote`; a row
      without a step scores 1 for min / product, 0 for last / mean).
    """
    s = checks.as_float(step_logps, "step_logps")
    return voting.aggregate_step_scores(jnp.exp(jnp.minimum(s, 0.0)), step_mask, method)


def first_error(step_logps, step_mask, tau) -> jax.Array:
    """The judge's predicted first erroneous step: the first real step whose score is < tau.

    Args:
      step_logps: [..., K] step scores.
      step_mask: [..., K] the real steps (a prefix of the slots, as in `chains`).
      tau: threshold, a scalar or broadcastable to [...].

    Returns:
      [...] int32 index (0-based) of the first real step with score < tau, or the number of
      real steps k (= K for a full row) when there is none ("no error").
    """
    s = checks.as_float(step_logps, "step_logps")
    m = jnp.asarray(step_mask, bool)
    chex.assert_equal_shape([s, m], custom_message="step_logps, step_mask")
    bad = m & (s < jnp.asarray(tau, s.dtype)[..., None])
    k = m.sum(-1).astype(jnp.int32)
    return jnp.where(bad.any(-1), jnp.argmax(bad, axis=-1), k).astype(jnp.int32)


def processbench_scores(predicted, gold, num_steps, mask=None) -> dict[str, jax.Array]:
    """ProcessBench's accuracies and F1 of first-error predictions.

    A solution is erroneous when its gold first error is < k (its number of steps), correct
    when it is k. acc_err = mean over erroneous solutions of 1[predicted == gold]; acc_correct
    = mean over correct ones of 1[predicted == k]; F1 = 2 acc_err acc_correct / (acc_err +
    acc_correct) (Zheng et al. 2024, arXiv 2412.06559; 0 when both are 0). An empty class has
    accuracy 0.

    Args:
      predicted: [..., B] int predicted first error (k = "no error"; `first_error`).
      gold: [..., B] int gold first error (k = correct; e.g. `chains.first_error`).
      num_steps: [..., B] int k.
      mask: optional [..., B] bool, the solutions that count.

    Returns:
      {"error_accuracy", "correct_accuracy", "f1", "num_erroneous", "num_correct"}: [...]
      float32 each.
    """
    pred, gold = jnp.asarray(predicted, jnp.int32), jnp.asarray(gold, jnp.int32)
    k = jnp.asarray(num_steps, jnp.int32)
    chex.assert_equal_shape([pred, gold, k], custom_message="predicted, gold, num_steps")
    m = jnp.ones(pred.shape, bool) if mask is None else jnp.asarray(mask, bool)
    err, ok = m & (gold < k), m & (gold >= k)
    n_err, n_ok = err.sum(-1).astype(jnp.float32), ok.sum(-1).astype(jnp.float32)
    acc_err = (err & (pred == gold)).sum(-1) / jnp.maximum(n_err, 1.0)
    acc_ok = (ok & (pred >= k)).sum(-1) / jnp.maximum(n_ok, 1.0)
    f1 = 2 * acc_err * acc_ok / jnp.maximum(acc_err + acc_ok, 1e-12)
    return {"error_accuracy": acc_err, "correct_accuracy": acc_ok, "f1": f1,
            "num_erroneous": n_err, "num_correct": n_ok}


def threshold_f1(step_logps, step_mask, gold, candidates, mask=None) -> jax.Array:
    """ProcessBench F1 of `first_error` at each candidate threshold.

    Args:
      step_logps, step_mask: [..., B, K] step scores of B solutions and their real steps.
      gold: [..., B] int gold first errors (k = correct).
      candidates: [C] thresholds.
      mask: optional [..., B] bool, the solutions that count.

    Returns:
      [..., C] float32 F1 per candidate.
    """
    k = jnp.asarray(step_mask, bool).sum(-1)

    def f1_at(tau):
        return processbench_scores(first_error(step_logps, step_mask, tau), gold, k, mask)["f1"]

    return jnp.moveaxis(jax.vmap(f1_at)(jnp.asarray(candidates, jnp.float32)), 0, -1)


def choose_threshold(step_logps, step_mask, gold, candidates, mask=None
                     ) -> tuple[jax.Array, jax.Array]:
    """The candidate threshold with the best ProcessBench F1 (ties: the first candidate), to
    be chosen on validation solutions and applied to test ones.

    Args: as `threshold_f1`.

    Returns:
      (tau [...] float32, its F1 [...] float32).
    """
    f1 = threshold_f1(step_logps, step_mask, gold, candidates, mask)
    best = jnp.argmax(f1, axis=-1)
    c = jnp.asarray(candidates, jnp.float32)
    return c[best], jnp.take_along_axis(f1, best[..., None], -1)[..., 0]


def judge_precision_recall(accepted, truly_correct, mask=None) -> dict[str, jax.Array]:
    """Solution-level precision and recall of a judge that accepts or rejects solutions.

    precision = |accepted & correct| / |accepted| (1 - precision: flawed solutions judged
    valid; the paper's < 10% on hard problems), recall = |accepted & correct| / |correct|.
    An empty denominator gives 0.

    Args:
      accepted: [..., B] bool, the judge accepts the solution (e.g. solution score >= tau).
      truly_correct: [..., B] bool gold correctness.
      mask: optional [..., B] bool, the solutions that count.

    Returns:
      {"precision", "recall", "accept_rate", "num_accepted"}: [...] float32 each.
    """
    a, c = jnp.asarray(accepted, bool), jnp.asarray(truly_correct, bool)
    chex.assert_equal_shape([a, c], custom_message="accepted, truly_correct")
    m = jnp.ones(a.shape, bool) if mask is None else jnp.asarray(mask, bool)
    a, c = a & m, c & m
    tp = (a & c).sum(-1).astype(jnp.float32)
    n_a = a.sum(-1).astype(jnp.float32)
    return {"precision": tp / jnp.maximum(n_a, 1.0),
            "recall": tp / jnp.maximum(c.sum(-1).astype(jnp.float32), 1.0),
            "accept_rate": n_a / jnp.maximum(m.sum(-1).astype(jnp.float32), 1.0),
            "num_accepted": n_a}
