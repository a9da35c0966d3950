"""An evolving rubric reward: interpretable rubric items whose weights a meta step revises.

MPO (Kim et al. 2025, "Toward Evaluative Thinking: Meta Policy Optimization with Evolving Reward
Models", arXiv 2504.20157): the reward model of RLAIF is an LLM judge that scores a response with
an evaluation rubric P_t (its prompt). Every K policy updates a meta reward model reads the
training context (the task, sampled generations with their scores, the current rubric) and
writes P_{t+1} in three moves: meta-analysis (find where the scores and the intended quality
disagree, i.e. what the policy exploits), meta-refinement (tighten or add criteria) and
meta-merging (combine the refined rubric with the accumulated one). The reward the policy
optimises therefore changes along training and resists exploitation.

Here a rubric is the numeric analogue of that prompt: F interpretable items (features of a
response, e.g. keyword counts, repetitions, length) with weights, stored as an
`alignax.rewards.rubrics.Rubric` (principle weights over the items, optional hard-rule gates),
so the judge is `rubrics.rubric_score`:

    r(y) = sum_a w_a phi_a(y) - lambda sum_a h_a (1 - phi_a(y)).

The meta reward model sees the A top-scored samples of the current policy (where exploitation
shows first) with a trusted score g (a gold judge, a human, a stronger model: the audit):

- `audit_indices`: the A samples with the highest rubric score;
- `meta_analysis`: per item, the covariance over the audited samples between the item and the
  score residual g - r; a negative value flags an item the rubric over-rewards (or a missing
  penalty) relative to the audit;
- `refine_weights`: the refined weights w', by ridge least squares anchored at the current
  weights (intercept free, so only differences of scores matter, as for group-normalised
  policy gradients) or by one fixed gradient step on the squared residual. An item whose weight
  was 0 and becomes non-zero is an added rubric item;
- `merge_weights`: meta-merging as averaging, w_{t+1} = (1 - m) w_t + m w';
- `meta_step`: the three in order, with diagnostics.

MPO's refinement edits text with an LLM; the rubric-weight version keeps its structure (audit
the policy's best-scored samples, correct the rubric where the audit disagrees, merge) with
pure, jit-able functions. Shapes: A audited samples, F rubric items.
"""

from __future__ import annotations

from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp

from alignax._src import checks
from alignax.rewards.rubrics import Rubric, rubric_score

REFINE_METHODS = ("least_squares", "step")


def linear_rubric(weights: jax.typing.ArrayLike) -> Rubric:
    """A rubric of weighted items without hard rules: `Rubric(zeros, weights)`, [F] -> leaves [F].

    Its score is the weighted sum r = phi . w (`rubric_score` with no gate).
    """
    w = checks.as_float(weights, "weights")
    chex.assert_rank(w, 1, custom_message="weights must be [F]")
    return Rubric(jnp.zeros_like(w), w)


def audit_indices(scores: jax.typing.ArrayLike, num_audits: int) -> jax.Array:
    """The `num_audits` samples with the highest rubric score (ties: the lower index first).

    Args:
      scores: [N] rubric scores of the policy's samples.
      num_audits: A, 1 <= A <= N (static).

    Returns:
      [A] int32 indices, highest score first.
    """
    s = checks.as_float(scores, "scores")
    chex.assert_rank(s, 1, custom_message="scores must be [N]")
    if not 1 <= int(num_audits) <= s.shape[0]:
        raise ValueError(f"num_audits must be in [1, {s.shape[0]}], got {num_audits}")
    return jax.lax.top_k(s, int(num_audits))[1].astype(jnp.int32)


def _centred(x: jax.Array) -> jax.Array:
    return x - jnp.mean(x, axis=0, keepdims=True)


def meta_analysis(features: jax.typing.ArrayLike, rubric_scores: jax.typing.ArrayLike,
                  gold: jax.typing.ArrayLike) -> jax.Array:
    """Per-item covariance between the item and the audit residual on the audited samples.

    .. math:: c_a = \\frac{1}{A} \\sum_i (\\phi_{ia} - \\bar\\phi_a)\\,(e_i - \\bar e),
              \\qquad e_i = g_i - r_i

    c_a < 0: the more of item a a sample has, the more the rubric over-scores it relative to
    the audit (the item is exploited, or a penalty on it is missing); c_a > 0: under-rewarded.
    MPO's meta-analysis step (arXiv 2504.20157), as a statistic of the audited samples.

    Args:
      features: [A, F] the audited samples' rubric items phi.
      rubric_scores: [A] their rubric scores r.
      gold: [A] their audit scores g.

    Returns:
      [F] covariances.
    """
    phi = checks.as_float(features, "features")
    chex.assert_rank(phi, 2, custom_message="features must be [A, F]")
    r = checks.as_float(rubric_scores, "rubric_scores")
    g = checks.as_float(gold, "gold")
    chex.assert_shape([r, g], (phi.shape[0],), custom_message="rubric_scores, gold must be [A]")
    e = g - r
    return _centred(phi).T @ (e - e.mean()) / phi.shape[0]


def refine_weights(features: jax.typing.ArrayLike, rubric_scores: jax.typing.ArrayLike,
                   gold: jax.typing.ArrayLike, weights: jax.typing.ArrayLike, *,
                   method: str = "least_squares", ridge: float = 1.0,
                   step_size: float = 0.1) -> jax.Array:
    """Meta-refinement: item weights that bring the rubric's scores toward the audit's.

    "least_squares": ridge regression of the audit score on the items, anchored at the current
    weights w, with a free intercept b:

    .. math::
        w' = \\arg\\min_{v, b} \\sum_i (g_i - b - \\phi_i \\cdot v - q_i)^2
             + \\lambda \\lVert v - w \\rVert^2
           = w + (\\tilde\\Phi^\\top \\tilde\\Phi + \\lambda I)^{-1} \\tilde\\Phi^\\top \\tilde e

    with q_i = r_i - phi_i . w the part of the score that is not the weighted items (the hard
    rules' gate; 0 for a `linear_rubric`), e = g - r the residual and tildes centring over the
    audited samples. The ridge keeps items the audit cannot tell apart (collinear on the
    audited samples) near their current weights and splits the correction between them.

    "step": one gradient step of size eta on half the mean squared centred residual,
    w' = w + eta * `meta_analysis`(phi, r, g).

    Args:
      features: [A, F] the audited samples' items.
      rubric_scores: [A] their scores under the current rubric (weights w).
      gold: [A] their audit scores.
      weights: [F] the current weights w.
      method: "least_squares" | "step".
      ridge: lambda > 0 (least squares).
      step_size: eta >= 0 (step).

    Returns:
      [F] refined weights w'.
    """
    if method not in REFINE_METHODS:
        raise ValueError(f"method must be one of {REFINE_METHODS}, got {method!r}")
    w = checks.as_float(weights, "weights")
    phi = checks.as_float(features, "features").astype(w.dtype)
    chex.assert_rank(phi, 2, custom_message="features must be [A, F]")
    chex.assert_shape(w, (phi.shape[1],), custom_message="weights must be [F]")
    if method == "step":
        checks.check_in_range(step_size, "step_size", 0.0, float("inf"))
        return w + step_size * meta_analysis(phi, rubric_scores, gold)
    if not ridge > 0:
        raise ValueError(f"ridge must be > 0, got {ridge}")
    r = checks.as_float(rubric_scores, "rubric_scores").astype(w.dtype)
    g = checks.as_float(gold, "gold").astype(w.dtype)
    chex.assert_shape([r, g], (phi.shape[0],), custom_message="rubric_scores, gold must be [A]")
    pc = _centred(phi)
    e = g - r
    gram = pc.T @ pc + ridge * jnp.eye(phi.shape[1], dtype=w.dtype)
    return w + jnp.linalg.solve(gram, pc.T @ (e - e.mean()))


def merge_weights(old: jax.typing.ArrayLike, new: jax.typing.ArrayLike, *,
                  mix: float = 0.5) -> jax.Array:
    """Meta-merging by averaging: (1 - m) w_old + m w_new ([F] x2 -> [F]); m = 1/2 is the plain
    average, m = 1 keeps only the refined rubric, m = 0 never changes it."""
    checks.check_in_range(mix, "mix", 0.0, 1.0)
    a, b = checks.as_float(old, "old"), checks.as_float(new, "new")
    chex.assert_equal_shape([a, b], custom_message="old, new")
    return (1.0 - mix) * a + mix * b


class MetaStep(NamedTuple):
    """What `meta_step` returns: the merged rubric and diagnostics of the audit.

    Attributes:
      rubric: the new `Rubric` (hard rules unchanged, merged weights [F]).
      analysis: [F] `meta_analysis` covariances on the audited samples.
      residual_before: mean squared centred residual g - r under the old rubric (scalar).
      residual_after: the same under the new rubric (scalar).
    """

    rubric: Rubric
    analysis: jax.Array
    residual_before: jax.Array
    residual_after: jax.Array


def meta_step(rubric: Rubric, features: jax.typing.ArrayLike, gold: jax.typing.ArrayLike, *,
              method: str = "least_squares", ridge: float = 1.0, step_size: float = 0.1,
              mix: float = 0.5, gate_penalty: float = 10.0) -> MetaStep:
    """One MPO meta step on audited samples: meta-analysis, refinement, merging.

    r = `rubric_score`(phi, rubric); c = `meta_analysis`(phi, r, g);
    w' = `refine_weights`(phi, r, g, w); w_{t+1} = `merge_weights`(w, w', mix). The hard rules
    pass through unchanged. Kim et al. 2025 (arXiv 2504.20157), section on the meta reward
    model; the rubric is numeric here (module docstring).

    Args:
      rubric: the current Rubric, leaves [F].
      features: [A, F] items of the audited samples (e.g. the `audit_indices` rows).
      gold: [A] their audit scores.
      method, ridge, step_size: see `refine_weights`.
      mix: see `merge_weights`.
      gate_penalty: the rubric judge's penalty per violated hard rule (`rubric_score`).

    Returns:
      MetaStep.
    """
    phi = checks.as_float(features, "features")
    g = checks.as_float(gold, "gold")
    chex.assert_rank(phi, 2, custom_message="features must be [A, F]")
    w = checks.as_float(rubric.principle_weights, "rubric.principle_weights")
    chex.assert_shape(w, (phi.shape[1],), custom_message="rubric.principle_weights must be [F]")
    r = rubric_score(phi, rubric, gate_penalty=gate_penalty)
    refined = refine_weights(phi, r, g, w, method=method, ridge=ridge, step_size=step_size)
    merged = merge_weights(w, refined, mix=mix)
    new = Rubric(jnp.asarray(rubric.hard_rules, merged.dtype) * jnp.ones_like(merged), merged)
    r_new = rubric_score(phi, new, gate_penalty=gate_penalty)

    def msr(e):
        return jnp.mean(jnp.square(e - e.mean()))

    return MetaStep(new, meta_analysis(phi, r, g), msr(g - r), msr(g - r_new))
