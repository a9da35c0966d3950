"""Gold-evaluation metrics: win rate, preference accuracy, calibration (ECE).

All are jax-traceable functions of arrays, usable inside a jitted evaluation.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp


def win_rate(rewards: jax.Array, baseline_rewards: jax.Array) -> jax.Array:
    """Fraction of paired samples where `rewards` beats `baseline_rewards`, ties count 1/2.

    [N] x2 (e.g. gold rewards of the policy's and the reference's responses to the same prompts)
    -> scalar float32.
    """
    chex.assert_equal_shape([rewards, baseline_rewards],
                            custom_message="rewards, baseline_rewards")
    a = jnp.asarray(rewards, jnp.float32)
    b = jnp.asarray(baseline_rewards, jnp.float32)
    return jnp.mean(jnp.where(a > b, 1.0, jnp.where(a == b, 0.5, 0.0)))


def preference_accuracy(predicted_margins: jax.Array, gold_margins: jax.Array) -> jax.Array:
    """Agreement of a model's preference with the gold one on held-out pairs.

    1 where sign(predicted) == sign(gold) != 0, 1/2 where the model ties, and pairs with a gold
    tie are left out (they have no correct answer). [N] x2 -> scalar (NaN if every pair is a gold
    tie).
    """
    chex.assert_equal_shape([predicted_margins, gold_margins],
                            custom_message="predicted_margins, gold_margins")
    p = jnp.sign(jnp.asarray(predicted_margins, jnp.float32))
    g = jnp.sign(jnp.asarray(gold_margins, jnp.float32))
    score = jnp.where(p == 0, 0.5, (p == g).astype(jnp.float32))
    counted = g != 0
    return jnp.sum(jnp.where(counted, score, 0.0)) / jnp.sum(counted)


def expected_calibration_error(probs: jax.Array, labels: jax.Array, *,
                               num_bins: int = 10) -> jax.Array:
    """ECE of binary predictions: sum_b (n_b / N) |mean(label in b) - mean(prob in b)|.

    Equal-width bins on [0, 1] (the last one closed); empty bins count 0. `probs` are predicted
    probabilities of the positive class (e.g. sigmoid of a reward margin), `labels` in {0, 1} (or
    soft). Guo et al. 2017, "On Calibration of Modern Neural Networks" (arXiv 1706.04599).
    [N] x2 -> scalar.
    """
    chex.assert_equal_shape([probs, labels], custom_message="probs, labels")
    if num_bins < 1:
        raise ValueError(f"num_bins must be >= 1, got {num_bins}")
    p = jnp.asarray(probs, jnp.float32)
    y = jnp.asarray(labels, jnp.float32)
    bins = jnp.clip(jnp.floor(p * num_bins).astype(jnp.int32), 0, num_bins - 1)
    conf = jnp.zeros(num_bins).at[bins].add(p)
    acc = jnp.zeros(num_bins).at[bins].add(y)
    gap = jnp.abs(acc - conf)  # = n_b |mean label - mean prob|
    return jnp.sum(gap) / p.shape[0]
