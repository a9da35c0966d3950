"""GRPO-S: group-relative advantages scaled by a prompt's difficulty (DR-IRL's GRPO-Scaling).

Paper: "Inverse Reinforcement Learning with Dynamic Reward Scaling for LLM Alignment" (DR-IRL,
2025). GRPO-S scales the reward of a prompt x by a difficulty s(x) that rises with

  - data-level hardness: how atypical the prompt is for its category, 1 - cos(e(x), e_c) with
    e(x) the prompt's embedding (CLIP in the paper) and e_c the category's typical prompt (here
    the mean embedding of the category's training prompts), `prompt_hardness`;
  - model-level responsiveness: the reward gap between the demonstration and the policy's own
    samples under the (IRL) reward model, r(x, y_demo) - mean_i r(x, y_i): large where the
    policy is still far from the demonstrations.

The exact s(x) is not in the abstract; `difficulty_scale` uses

    s(x) = 1 + alpha * h(x) / mean_train(h) + beta * gap+(x) / mean_batch(gap+),
    gap+ = max(gap, 0),

both terms unit-mean (the IRL reward's scale drifts while it is co-trained, so the gap counts
relative to the update's other prompts; a saturating tanh(gap) was flat at the gaps of 2-5 the
co-trained reward models produce), optionally divided by the mean of s over the update's
prompts (`normalize`), so that the method changes the relative weight of the prompts, not the
step size.

Where the scale acts: s(x) is one number per prompt, so multiplying the group's rewards by it
before GRPO's per-group (r - mean) / std cancels exactly. `scaled_advantages` therefore scales
the group-normalised advantage, s(x) * A_i; with the mean-only baseline (`base="dr_grpo"`) this
equals normalising the scaled rewards s(x) r_i, the paper's "scale the reward, then
group-normalise" (tested). `grpo_s_advantage` wraps it as the `advantage=` callable of
`alignax.algorithms.small_pg.group_pg_loss`.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp

from alignax.algorithms.online import compute_advantages


def category_centroids(embeddings, category, num_categories: int) -> jax.Array:
    """[C, D] the mean embedding of each category's prompts (the category's typical prompt);
    embeddings [N, D], category [N] int. A category without prompts gets a zero row."""
    embeddings = jnp.asarray(embeddings, jnp.float32)
    onehot = jax.nn.one_hot(jnp.asarray(category), num_categories, dtype=jnp.float32)  # [N, C]
    total = onehot.T @ embeddings
    return total / jnp.maximum(onehot.sum(0), 1.0)[:, None]


def prompt_hardness(embeddings, category, centroids, *, eps: float = 1e-8) -> jax.Array:
    """[N] data-level hardness 1 - cos(e(x), e_c(x)) of prompts with embeddings [N, D] against
    their category's centroid (`centroids` [C, D], `category` [N]); in [0, 2]."""
    e = jnp.asarray(embeddings, jnp.float32)
    c = jnp.asarray(centroids, jnp.float32)[jnp.asarray(category)]
    cos = jnp.sum(e * c, -1) / (jnp.linalg.norm(e, axis=-1) * jnp.linalg.norm(c, axis=-1) + eps)
    return 1.0 - cos


def difficulty_scale(hardness, gap, *, alpha: float = 1.0, beta: float = 1.0,
                     hardness_mean: float | jax.Array = 1.0, normalize: bool = True,
                     eps: float = 1e-6) -> jax.Array:
    """[M] GRPO-S difficulty s(x) = 1 + alpha h(x) / hardness_mean + beta gap+ / mean(gap+).

    Args:
      hardness: [M] data-level hardness h(x) (`prompt_hardness`).
      gap: [M] model-level responsiveness, the reward gap r(x, y_demo) - mean_i r(x, y_i)
        (no gradient is taken through it); its positive part is divided by its mean over the M
        prompts (a prompt whose policy samples trail the demonstration twice as far as the
        update's average gets gap term 2; all zero gaps give 0).
      alpha, beta: weights of the two terms (0, 0 gives s = 1: plain GRPO).
      hardness_mean: the mean hardness of the training prompts, so that alpha weighs a
        unit-mean quantity.
      normalize: divide by the mean of s over the M prompts (relative weights only).
      eps: guards the division by the mean gap.
    """
    h = jnp.asarray(hardness, jnp.float32) / jnp.asarray(hardness_mean, jnp.float32)
    g = jnp.maximum(jax.lax.stop_gradient(jnp.asarray(gap, jnp.float32)), 0.0)
    g = g / jnp.maximum(jnp.mean(g), eps)
    s = 1.0 + alpha * h + beta * g
    if normalize:
        s = s / jnp.mean(s)
    return jax.lax.stop_gradient(s)


def scaled_advantages(rewards, scale, *, base: str = "grpo") -> jax.Array:
    """[M, G] s(x_m) * A_mi: the group advantages of `base` (an
    `alignax.algorithms.online.ADVANTAGES` name) of rewards [M, G], scaled per prompt by
    scale [M]."""
    rewards = jnp.asarray(rewards, jnp.float32)
    m, g = rewards.shape
    adv = compute_advantages(base, rewards.reshape(-1), g).reshape(m, g)
    return jnp.asarray(scale, jnp.float32)[:, None] * adv


def grpo_s_advantage(scale_fn: Callable[[jax.Array, Any], jax.Array], *, base: str = "grpo"
                     ) -> Callable[[jax.Array, Any], jax.Array]:
    """The `advantage=` callable of `group_pg_loss`: `(rewards [M, G], data) ->
    scale_fn(rewards, data)[:, None] * A_base(rewards)`, with `scale_fn` giving the update's
    per-prompt difficulty [M] (e.g. `difficulty_scale` of the drawn prompts' hardness and of
    the demonstration's reward minus the group's mean reward)."""

    def advantage(rewards, data):
        return scaled_advantages(rewards, scale_fn(rewards, data), base=base)

    return advantage
