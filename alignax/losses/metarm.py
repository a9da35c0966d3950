"""MetaRM and the pair-contrastive term: the two reward-model regularisers of Secrets of RLHF II.

Secrets of RLHF in Large Language Models Part II: Reward Modeling (Wang et al. 2024,
arXiv 2401.06080), sections 4-5; MetaRM as in Dou et al. 2024, "MetaRM: Shifted Distributions
Alignment via Meta-Learning" (arXiv 2405.00438).

MetaRM keeps a reward model discriminative on the shifted (policy) distribution without new
labels. For a group of k responses s_1..s_k from the shifted distribution the difference loss is

.. math::
    J_\\theta(s) = \\frac{2}{k (k - 1)} \\sum_{i < j} \\sigma(|r_\\theta(s_i) - r_\\theta(s_j)|)

(large when the RM spreads the shifted responses apart). Each training step first takes one
gradient-ascent step on J, theta' = theta + eta grad J(theta), then the preference loss is
evaluated at theta' and theta is updated with the gradient of L(theta') with respect to theta
(MAML style: the gradient flows through the inner step, which adds the dot product of the meta
and the preference gradients; `first_order=True` drops it). `metarm_loss` is that outer
objective, so `jax.grad(metarm_loss)` (or any optimizer loop on it) is the MetaRM update.

The contrastive term (SimCSE style) works on preference representations: the difference
h(y_c) - h(y_r) of the RM's last hidden features of a pair. Two stochastic views of it (e.g. two
dropout masks) are positives, the other pairs of the batch negatives, with the InfoNCE loss of
`alignax.losses.reward.contrastive_representation_loss`, symmetrised over the two views.
"""

from __future__ import annotations

from typing import Any, Callable

import chex
import jax
import jax.numpy as jnp

from alignax.losses.reward import contrastive_representation_loss


def difference_loss(group_rewards: jax.Array) -> jax.Array:
    """MetaRM's difference loss J per group: the mean over pairs i < j of the group's k rewards
    of sigma(|r_i - r_j|). [G, K] (K >= 2) -> [G]; between 0.5 (all rewards equal) and 1."""
    chex.assert_rank(group_rewards, 2, custom_message="group_rewards")
    r = jnp.asarray(group_rewards, jnp.float32)
    k = r.shape[-1]
    if k < 2:
        raise ValueError(f"difference_loss needs >= 2 responses per group, got {k}")
    gaps = jax.nn.sigmoid(jnp.abs(r[:, :, None] - r[:, None, :]))  # [G, K, K]
    upper = jnp.triu(jnp.ones((k, k), jnp.float32), k=1)
    return jnp.sum(gaps * upper, axis=(1, 2)) / (k * (k - 1) / 2)


def meta_adapted_params(params: Any, difference_fn: Callable[[Any], jax.Array], *,
                        inner_lr: float, first_order: bool = False) -> Any:
    """theta' = theta + inner_lr * grad J(theta): one gradient-ascent step on the difference
    objective `difference_fn(params) -> scalar` (e.g. the mean `difference_loss` of the RM's
    rewards on a batch of shifted groups). With `first_order` the step is a constant (no
    gradient flows through it)."""
    grads = jax.grad(difference_fn)(params)
    if first_order:
        grads = jax.lax.stop_gradient(grads)
    return jax.tree.map(lambda p, g: p + inner_lr * g, params, grads)


def metarm_loss(preference_fn: Callable[[Any], jax.Array],
                difference_fn: Callable[[Any], jax.Array], params: Any, *,
                inner_lr: float, first_order: bool = False) -> jax.Array:
    """The MetaRM outer objective L(theta + inner_lr * grad J(theta)).

    Args:
      preference_fn: params -> scalar preference loss on the labelled batch (e.g. mean BT).
      difference_fn: params -> scalar difference objective J on the shifted batch (maximised
        by the inner step).
      params: the RM's params theta.
      inner_lr: eta >= 0, the inner ascent step (0: the plain preference loss).
      first_order: drop the second-order term (the gradient is then grad L at theta').

    Returns:
      The scalar preference loss at the adapted params; its gradient in `params` is the MetaRM
      update direction.
    """
    if inner_lr < 0:
        raise ValueError(f"inner_lr must be >= 0, got {inner_lr}")
    adapted = meta_adapted_params(params, difference_fn, inner_lr=inner_lr,
                                  first_order=first_order)
    return preference_fn(adapted)


def pair_contrastive_loss(chosen_view1: jax.Array, rejected_view1: jax.Array,
                          chosen_view2: jax.Array, rejected_view2: jax.Array, *,
                          temperature: float = 0.1) -> jax.Array:
    """SimCSE-style contrastive loss on preference representations, [B, D] x4 -> [B].

    The representation of pair b is d_b = h(y_c) - h(y_r); views 1 and 2 are two stochastic
    encodings (e.g. dropout masks) of the same pairs. Each d_b^1 must pick d_b^2 out of the
    batch's second views (InfoNCE with cosine similarity / temperature), and vice versa; the
    loss is the mean of the two directions.
    """
    chex.assert_equal_shape([chosen_view1, rejected_view1, chosen_view2, rejected_view2],
                            custom_message="the four views")
    chex.assert_rank(chosen_view1, 2, custom_message="chosen_view1")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    d1 = jnp.asarray(chosen_view1, jnp.float32) - jnp.asarray(rejected_view1, jnp.float32)
    d2 = jnp.asarray(chosen_view2, jnp.float32) - jnp.asarray(rejected_view2, jnp.float32)
    return 0.5 * (contrastive_representation_loss(d1, d2, temperature=temperature)
                  + contrastive_representation_loss(d2, d1, temperature=temperature))


__all__ = ["difference_loss", "meta_adapted_params", "metarm_loss", "pair_contrastive_loss"]
