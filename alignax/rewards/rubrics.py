"""Rubric rewards: hard rules as gates, principles as weighted criteria over checkable attributes.

OpenRubrics (Liu et al. 2025, "OpenRubrics: Towards Scalable Synthetic Rubric Generation for Reward
Modeling and LLM Alignment", arXiv 2510.07743): a rubric R(x) for a prompt holds hard rules
(constraints a response must meet) and principles (weighted qualities). Rubrics are generated
contrastively from a preference pair (what separates the chosen response from the rejected one),
kept only if a judge that follows the rubric recovers the pair's label (the consistency filter), and
a rubric-conditioned judge then scores responses.

Responses are represented by A checkable binary attributes a in {0, 1}^A (e.g. "cites a source",
"stays under the length limit"). A rubric is a pair of arrays over the same A attributes:
`hard_rules` in [0, 1] (1: the attribute is required; fractional after averaging rubrics) and
`principle_weights` in R (the value of having the attribute). Everything is a jax pytree, so
rubrics batch ([B, A] leaves), vmap and jit.
"""

from __future__ import annotations

from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp

from alignax._src import checks


class Rubric(NamedTuple):
    """Hard rules and principle weights over A attributes: leaves [..., A] float32."""

    hard_rules: jax.Array
    principle_weights: jax.Array


def _check_attrs(attributes, rubric: Rubric, name: str = "attributes"):
    chex.assert_shape(attributes, (..., None), custom_message=f"{name}: rank >= 1 ([..., A])")
    for leaf, lname in zip(rubric, ("hard_rules", "principle_weights")):
        chex.assert_is_broadcastable(jnp.shape(leaf), jnp.shape(attributes),
                                     custom_message=f"rubric.{lname} against {name}")


def rubric_features(attributes: jax.Array, rubric: Rubric) -> jax.Array:
    """Rubric-satisfaction features of responses: (hard-rule violations, principle score).

    .. math::
        v = \\sum_a h_a (1 - x_a), \\qquad s = \\sum_a w_a x_a

    with h the hard rules and w the principle weights.

    Args:
      attributes: [..., A] binary (or [0, 1]) attributes of the responses.
      rubric: a `Rubric` whose leaves broadcast to [..., A] (one per response, or shared).

    Returns:
      [..., 2] float32: violations v and principle score s.
    """
    _check_attrs(attributes, rubric)
    x = jnp.asarray(attributes, jnp.float32)
    h = jnp.asarray(rubric.hard_rules, jnp.float32)
    w = jnp.asarray(rubric.principle_weights, jnp.float32)
    violations = jnp.sum(h * (1.0 - x), -1)
    score = jnp.sum(w * x, -1)
    return jnp.stack([violations, score], -1)


def rubric_score(attributes: jax.Array, rubric: Rubric, *, gate_penalty: float = 10.0
                 ) -> jax.Array:
    """A rubric judge's score: principle score minus `gate_penalty` per violated hard rule.

    .. math:: r = s - \\lambda v

    With lambda larger than the total principle weight, any violation outweighs every principle:
    the hard rules act as gates. [..., A] -> [...] float32.
    """
    f = rubric_features(attributes, rubric)
    return f[..., 1] - gate_penalty * f[..., 0]


def contrastive_rubrics(chosen: jax.Array, rejected: jax.Array, stated_rules: jax.Array,
                        key: jax.Array, *, miss_rate: float = 0.0, spurious_rate: float = 0.0,
                        corrupt_rate: float = 0.0, explain_by_rules: bool = True,
                        stated_principles: jax.Array | None = None,
                        positive_only: bool = False) -> tuple[Rubric, jax.Array]:
    r"""Contrastive rubric generation from (chosen, rejected) pairs, with generator noise.

    For pair i, the hard rules are the rules the prompt states (`stated_rules`), each missed with
    probability `miss_rate`, plus each unstated attribute with probability `spurious_rate`; the
    principles are the attributes (outside the hard rules) that separate the two responses,
    weighted +1 where the chosen response has the attribute and -1 where only the rejected one
    has it:

    .. math:: w_a = (x^c_a - x^r_a) (1 - h_a) [v^c = v^r] \, p_a

    p is 1, or, given `stated_principles`, the qualities the prompt asks for (each missed with
    `miss_rate`, unstated ones added with `spurious_rate`): principles are then only written
    for what the prompt makes relevant. The factor [v^c = v^r] applies with `explain_by_rules`:
    when the rubric's own hard rules already separate the pair (different violation counts v),
    the difference is explained by a rule and no principle is read off the pair. With
    probability `corrupt_rate` the generator confuses the two responses and builds the rubric
    from (rejected, chosen) instead: such rubrics contradict the label, which is what the
    consistency filter is for.

    Args:
      chosen: [B, A] binary attributes of the chosen responses.
      rejected: [B, A] of the rejected responses.
      stated_rules: [B, A] binary, the hard constraints each pair's prompt states.
      key: PRNG key of the generator noise.
      miss_rate, spurious_rate, corrupt_rate: noise probabilities in [0, 1].
      explain_by_rules: read principles only off pairs the hard rules do not separate.
      stated_principles: optional [B, A] binary, the qualities each pair's prompt asks for.
      positive_only: write only positive criteria (qualities the chosen response has and the
        rejected one lacks, w_a = max(w_a, 0)), as rubric items are usually phrased.

    Returns:
      (Rubric with [B, A] leaves, corrupted [B] bool).
    """
    chex.assert_rank(chosen, 2, custom_message="chosen")
    chex.assert_equal_shape([chosen, rejected, stated_rules],
                            custom_message="chosen, rejected, stated_rules")
    for name, p in (("miss_rate", miss_rate), ("spurious_rate", spurious_rate),
                    ("corrupt_rate", corrupt_rate)):
        checks.check_in_range(p, name, 0.0, 1.0)
    c = jnp.asarray(chosen, jnp.float32)
    r = jnp.asarray(rejected, jnp.float32)
    stated = jnp.asarray(stated_rules, jnp.float32)
    k_miss, k_spur, k_corr, k_pmiss, k_pspur = jax.random.split(key, 5)
    missed = jax.random.uniform(k_miss, c.shape) < miss_rate
    spurious = jax.random.uniform(k_spur, c.shape) < spurious_rate
    hard = jnp.where(stated > 0, jnp.where(missed, 0.0, 1.0), jnp.where(spurious, 1.0, 0.0))
    corrupted = jax.random.uniform(k_corr, c.shape[:1]) < corrupt_rate
    sign = jnp.where(corrupted, -1.0, 1.0)[:, None]
    weights = sign * (c - r) * (1.0 - hard)
    if positive_only:
        weights = jnp.maximum(weights, 0.0)
    if explain_by_rules:
        same = jnp.sum(hard * (1.0 - c), -1) == jnp.sum(hard * (1.0 - r), -1)
        weights = weights * same[:, None]
    if stated_principles is not None:
        chex.assert_equal_shape([chosen, stated_principles],
                                custom_message="chosen, stated_principles")
        asked = jnp.asarray(stated_principles, jnp.float32) > 0
        p_missed = jax.random.uniform(k_pmiss, c.shape) < miss_rate
        p_spurious = jax.random.uniform(k_pspur, c.shape) < spurious_rate
        weights = weights * jnp.where(asked, ~p_missed, p_spurious)
    return Rubric(hard, weights), corrupted


def consistency_filter(chosen: jax.Array, rejected: jax.Array, rubrics: Rubric, *,
                       gate_penalty: float = 10.0) -> jax.Array:
    """Label-consistency filter: keep rubric i iff its judge prefers pair i's chosen response.

    .. math:: \\mathrm{keep}_i = [\\, r(x^c_i; R_i) > r(x^r_i; R_i) \\,]

    with r the gated `rubric_score` (a tie is not a recovered label). [B, A] x2, Rubric [B, A]
    -> [B] bool.
    """
    chex.assert_rank(chosen, 2, custom_message="chosen")
    chex.assert_equal_shape([chosen, rejected], custom_message="chosen, rejected")
    return (rubric_score(chosen, rubrics, gate_penalty=gate_penalty)
            > rubric_score(rejected, rubrics, gate_penalty=gate_penalty))


def aggregate_rubrics(rubrics: Rubric, groups: jax.Array, keep: jax.Array, *, num_groups: int,
                      rule_threshold: float = 0.5) -> Rubric:
    """Merges the kept rubrics of each prompt group into one rubric per group.

    A hard rule survives if at least `rule_threshold` of the group's kept rubrics state it;
    principle weights are averaged over the kept rubrics. A group without kept rubrics gets an
    empty rubric (no rules, zero weights).

    Args:
      rubrics: Rubric with [B, A] leaves.
      groups: [B] int prompt-group ids in [0, G).
      keep: [B] bool (e.g. `consistency_filter`), or all True.
      num_groups: G (static).
      rule_threshold: share of kept rubrics that must state a rule.

    Returns:
      Rubric with [G, A] leaves.
    """
    chex.assert_rank(rubrics.hard_rules, 2, custom_message="rubrics.hard_rules")
    chex.assert_equal_shape([rubrics.hard_rules, rubrics.principle_weights],
                            custom_message="rubrics.hard_rules, rubrics.principle_weights")
    chex.assert_shape(groups, (rubrics.hard_rules.shape[0],), custom_message="groups")
    chex.assert_equal_shape([groups, keep], custom_message="groups, keep")
    chex.assert_type(groups, int, custom_message="groups")
    onehot = jax.nn.one_hot(groups, num_groups, dtype=jnp.float32) * jnp.asarray(
        keep, jnp.float32)[:, None]  # [B, G]
    count = onehot.sum(0)[:, None]  # [G, 1]
    denom = jnp.maximum(count, 1.0)
    rule_share = onehot.T @ jnp.asarray(rubrics.hard_rules, jnp.float32) / denom
    weights = onehot.T @ jnp.asarray(rubrics.principle_weights, jnp.float32) / denom
    hard = jnp.where((count > 0) & (rule_share >= rule_threshold), 1.0, 0.0)
    return Rubric(hard, weights * (1.0 - hard))


def rubric_judge_logits(theta: jax.Array, first: jax.Array, second: jax.Array,
                        rubric: Rubric) -> jax.Array:
    """Rubric-conditioned judge: logit of P(first > second | R), logistic in the features.

    .. math:: \\mathrm{logit} = \\theta^\\top (\\phi(x^1; R) - \\phi(x^2; R)), \\quad
              \\phi = (-v, s)

    theta [2] is fitted with the BT loss on labelled pairs (e.g. `bradley_terry_loss(logits,
    0)`); theta_0 >> theta_1 makes the hard rules gates.

    Args:
      theta: [2] weights of (minus the violations, principle score).
      first, second: [B, A] attributes of the two responses.
      rubric: Rubric whose leaves broadcast to [B, A] (each pair's prompt rubric).

    Returns:
      [B] float32 logits.
    """
    chex.assert_shape(theta, (2,), custom_message="theta")
    chex.assert_equal_shape([first, second], custom_message="first, second")
    sign = jnp.array([-1.0, 1.0], jnp.float32)
    diff = rubric_features(first, rubric) - rubric_features(second, rubric)
    return (diff * sign) @ jnp.asarray(theta, jnp.float32)
