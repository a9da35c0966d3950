"""Pairwise judges with position-swap voting, and BRPO's bootstrapped-reference advantages.

Writing-Zero (Jia et al. 2025, "Writing-Zero: Bridge the Gap Between Non-verifiable Tasks
and Verifiable Rewards", arXiv 2506.00103) replaces the pointwise scalar reward model of
non-verifiable tasks by a pairwise generative judge J(x, y_a, y_b), whose verdict is turned
into a verifiable-style win / tie / loss by position-swap voting, and trains with BRPO
(Bootstrapped Relative Policy Optimization): for each prompt, one response of the group of G
rollouts is drawn at random as a temporary reference y_ref, and every other response gets the
advantage A_i = J(x, y_i, y_ref) in {+1, 0, -1}.

- A judge here is any `(key, a, b) -> first-wins` verdict. The toy's judge is a noisy
  comparator of latent scores (`judge_first_prob`): P(first wins) = sigmoid((s_a - s_b) / T + b)
  with a position bias b (a judge's preference for the response shown first).
- `swap_vote`: the two verdicts of J(a, b) and J(b, a) -> +1 when a wins in both orders, -1
  when b wins in both, 0 (a tie) when they disagree, as position bias makes them do.
- `pairwise_judge` (sampled) and `expected_judge_outcome` (exact) of the swap-voted (or
  single-order) comparison of latent scores.
- `bootstrapped_reference_outcomes`: BRPO's rewards of a group: one random reference per
  prompt, every response judged against it, the reference's own slot 0.
- `brpo_advantages`: the advantage callable of `alignax.algorithms.small_pg.group_pg_loss`
  (`advantage=brpo_advantages`): the judged outcomes themselves (the bootstrapped reference is
  the baseline; no group mean or std), optionally scaled.

Everything is pure jax, vectorised over any leading shape.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp


def judge_first_prob(score_a, score_b, *, temperature: float = 1.0,
                     position_bias: float = 0.0) -> jax.Array:
    """P(the judge prefers the first-shown response a over b):
    sigmoid((score_a - score_b) / temperature + position_bias), elementwise."""
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    a = jnp.asarray(score_a, jnp.float32)
    b = jnp.asarray(score_b, jnp.float32)
    return jax.nn.sigmoid((a - b) / temperature + position_bias)


def swap_vote(first_wins_ab, first_wins_ba) -> jax.Array:
    """Position-swap voting of two verdicts: J(a, b) says whether a (shown first) wins, J(b, a)
    whether b (shown first) wins. +1: a wins in both orders; -1: b wins in both; 0: the
    verdicts follow the position, not the responses (a tie). float32, elementwise."""
    ab = jnp.asarray(first_wins_ab, bool)
    ba = jnp.asarray(first_wins_ba, bool)
    return (ab & ~ba).astype(jnp.float32) - (~ab & ba).astype(jnp.float32)


def pairwise_judge(key: jax.Array, score_a, score_b, *, temperature: float = 1.0,
                   position_bias: float = 0.0, swap: bool = True) -> jax.Array:
    """Sampled outcome of the noisy comparator on responses with latent scores a and b.

    swap=True: two independent verdicts, (a, b) and (b, a), combined by `swap_vote` -> {+1, 0,
    -1}. swap=False: one verdict with a shown first -> +1 (a wins) or -1. Elementwise over the
    broadcast shape of the scores.
    """
    a = jnp.asarray(score_a, jnp.float32)
    b = jnp.asarray(score_b, jnp.float32)
    shape = jnp.broadcast_shapes(a.shape, b.shape)
    k1, k2 = jax.random.split(key)
    p_ab = judge_first_prob(a, b, temperature=temperature, position_bias=position_bias)
    first_ab = jax.random.uniform(k1, shape) < p_ab
    if not swap:
        return 2.0 * first_ab.astype(jnp.float32) - 1.0
    p_ba = judge_first_prob(b, a, temperature=temperature, position_bias=position_bias)
    first_ba = jax.random.uniform(k2, shape) < p_ba
    return swap_vote(first_ab, first_ba)


def expected_judge_outcome(score_a, score_b, *, temperature: float = 1.0,
                     position_bias: float = 0.0, swap: bool = True) -> jax.Array:
    """E[`pairwise_judge`] exactly: with swap voting p_ab (1 - p_ba) - (1 - p_ab) p_ba
    = p_ab - p_ba (antisymmetric in a, b: the position bias cancels); without, 2 p_ab - 1."""
    p_ab = judge_first_prob(score_a, score_b, temperature=temperature,
                            position_bias=position_bias)
    if not swap:
        return 2.0 * p_ab - 1.0
    p_ba = judge_first_prob(score_b, score_a, temperature=temperature,
                            position_bias=position_bias)
    return p_ab - p_ba


def bootstrapped_reference_outcomes(key: jax.Array,
                                    judge: Callable[[jax.Array, Any, Any], jax.Array],
                                    responses: Any) -> tuple[jax.Array, jax.Array]:
    """BRPO's judged outcomes of groups against a reference drawn from the group.

    Args:
      key: PRNG key (the reference draw and the judge's own randomness).
      judge: `(key, y_a, y_b) -> outcome` elementwise over [M, G] (e.g. `pairwise_judge` of
        the responses' latent scores): +1 when y_a wins, -1 when it loses, 0 a tie.
      responses: a pytree whose leaves have leading shape [M, G] (G rollouts per prompt):
        whatever the judge reads (token ids, scores, ...).

    Returns:
      (outcomes [M, G] float32: J(x, y_i, y_ref) for i != ref and 0 at the reference's own
      slot; ref [M] int32: the reference's index in each group, uniform over the G slots).
    """
    leaves = jax.tree.leaves(responses)
    m, g = leaves[0].shape[:2]
    k_ref, k_judge = jax.random.split(key)
    ref = jax.random.randint(k_ref, (m,), 0, g).astype(jnp.int32)
    y_ref = jax.tree.map(
        lambda x: jnp.broadcast_to(jnp.take_along_axis(
            x, ref.reshape((m, 1) + (1,) * (x.ndim - 2)), axis=1), x.shape), responses)
    out = jnp.asarray(judge(k_judge, responses, y_ref), jnp.float32)
    is_ref = jnp.arange(g)[None, :] == ref[:, None]
    return jnp.where(is_ref, 0.0, out), ref


def brpo_advantages(outcomes, data: Any = None, *, scale: float = 1.0) -> jax.Array:
    """BRPO's advantages from the outcomes against the bootstrapped reference: A_i = scale *
    outcome_i (the reference's slot holds 0). The signature is `group_pg_loss`'s advantage
    callable `(rewards [M, G], data) -> [M, G]`; `data` is unused. For the language-model
    recipes the same map is `ADVANTAGES`-style `lambda r, n: r` over the flat outcomes."""
    del data
    return scale * jnp.asarray(outcomes, jnp.float32)
