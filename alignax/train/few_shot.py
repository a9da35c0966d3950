"""Few-shot personalisation: the objective of a new user's mixture weights over frozen prototypes.

A PAL-style model (Chen et al. 2024, "PAL: Pluralistic Alignment Framework for Learning from
Heterogeneous Preferences", arXiv 2406.08469) represents user u by an ideal point
a_u = P softmax(w_u), a convex mixture of K prototypes P [K, d] in the space of a shared map f.
For a user not seen in training, f and P stay frozen and only the K logits w_u are fitted on the
user's few comparisons, which is a K-parameter problem.

This module holds the objective only. The fit goes through the one trainer: the logits of many
users are one stacked parameter tree, e.g. [U, K], trained by `alignax.train.small.fit_small`
on the sum of the users' `user_weights_loss` (vmapped over users). Each user's gradient is its
own, so Adam, which is elementwise, updates every user exactly as a separate fit
(experiments/pal.py, `fit_unseen_users`).
"""

from __future__ import annotations

import chex
import jax.numpy as jnp

from alignax.losses.reward import ideal_point_loss, ideal_points


def user_weights_loss(user_logits, chosen_features, rejected_features, prototypes, mask=None, *,
                      l2: float = 0.0):
    """Mean PAL ideal-point loss of one user's comparisons, plus an L2 prior on the logits.

    .. math::
        L(w) = \\frac{\\sum_i m_i\\, \\ell_i(w)}{\\max(1, \\sum_i m_i)} + \\lambda \\lVert w
        \\rVert^2, \\quad
        \\ell_i(w) = -\\log\\sigma\\big(\\lVert f_{r,i} - a(w) \\rVert^2 -
                                     \\lVert f_{c,i} - a(w) \\rVert^2\\big), \\quad
        a(w) = P^\\top \\mathrm{softmax}(w)

    Args:
      user_logits: [K] logits w of the user's mixture over prototypes.
      chosen_features: [N, d] frozen features f(y_c) of the preferred responses.
      rejected_features: [N, d] frozen features f(y_r) of the other responses.
      prototypes: [K, d] frozen prototypes P.
      mask: optional [N] weights (1 = a real comparison, 0 = padding).
      l2: lambda, the weight of the L2 prior that pulls w towards the uniform mixture.

    Returns:
      A float32 scalar.
    """
    chex.assert_rank(user_logits, 1, custom_message="user_logits")
    chex.assert_rank([chosen_features, prototypes], 2,
                     custom_message="chosen_features, prototypes")
    if chosen_features.shape[-1] != prototypes.shape[-1]:
        raise ValueError(f"chosen_features{chosen_features.shape} and prototypes"
                         f"{prototypes.shape} disagree on the feature dimension")
    n = chosen_features.shape[0]
    m = jnp.ones((n,), jnp.float32) if mask is None else jnp.asarray(mask, jnp.float32)
    chex.assert_shape(m, (n,), custom_message="mask")
    point = ideal_points(user_logits[None], prototypes)[0]
    losses = ideal_point_loss(chosen_features, rejected_features, point)
    w = jnp.asarray(user_logits, jnp.float32)
    return jnp.sum(m * losses) / jnp.maximum(1.0, jnp.sum(m)) + l2 * jnp.sum(w * w)

