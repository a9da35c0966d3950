"""Few-shot personalisation: fit a new user's mixture weights over frozen prototypes.

A PAL-style model (Chen et al. 2024, "PAL: Pluralistic Alignment Framework for Learning from
Heterogeneous Preferences", arXiv 2406.08469) represents user u by an ideal point
a_u = P softmax(w_u), a convex mixture of K prototypes P [K, d] in the space of a shared map f.
For a user not seen in training, f and P stay frozen and only the K logits w_u are fitted on the
user's few comparisons, which is a K-parameter problem.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from alignax._src import checks
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
    checks.check_rank(user_logits, 1, "user_logits")
    checks.check_rank(chosen_features, 2, "chosen_features")
    checks.check_rank(prototypes, 2, "prototypes")
    if chosen_features.shape[-1] != prototypes.shape[-1]:
        raise ValueError(f"chosen_features{chosen_features.shape} and prototypes"
                         f"{prototypes.shape} disagree on the feature dimension")
    n = chosen_features.shape[0]
    m = jnp.ones((n,), jnp.float32) if mask is None else jnp.asarray(mask, jnp.float32)
    checks.check_shape(m, (n,), "mask")
    point = ideal_points(user_logits[None], prototypes)[0]
    losses = ideal_point_loss(chosen_features, rejected_features, point)
    w = jnp.asarray(user_logits, jnp.float32)
    return jnp.sum(m * losses) / jnp.maximum(1.0, jnp.sum(m)) + l2 * jnp.sum(w * w)


def fit_user_weights(chosen_features, rejected_features, prototypes, mask=None, *,
                     init_logits=None, steps: int = 200, learning_rate: float = 0.1,
                     l2: float = 0.0):
    """Fits one user's prototype logits on a few comparisons with Adam; f and P stay frozen.

    Minimises `user_weights_loss` over w [K] from `init_logits` (default zeros: the uniform
    mixture, i.e. the centre of the prototypes) for a fixed number of steps. Jit-friendly
    (`steps` must be static under jit); vmap it over users with padded [U, N, d] features and an
    [U, N] mask to fit many users at once.

    Args:
      chosen_features: [N, d] frozen features of the preferred responses.
      rejected_features: [N, d] frozen features of the other responses.
      prototypes: [K, d] frozen prototypes.
      mask: optional [N] weights (0 = padding); all-zero gives the prior (init) logits back
        up to the L2 pull.
      init_logits: optional [K] starting logits.
      steps: number of Adam steps.
      learning_rate: Adam step size.
      l2: weight of the L2 prior on the logits.

    Returns:
      [K] float32 fitted logits (softmax them for the simplex weights).
    """
    checks.check_same_shape([chosen_features, rejected_features],
                            ["chosen_features", "rejected_features"])
    checks.check_rank(prototypes, 2, "prototypes")
    k = prototypes.shape[0]
    w0 = jnp.zeros((k,), jnp.float32) if init_logits is None else jnp.asarray(
        init_logits, jnp.float32)
    checks.check_shape(w0, (k,), "init_logits")
    tx = optax.adam(learning_rate)
    grad_fn = jax.grad(user_weights_loss)

    def step(carry, _):
        w, opt = carry
        g = grad_fn(w, chosen_features, rejected_features, prototypes, mask, l2=l2)
        updates, opt = tx.update(g, opt, w)
        return (optax.apply_updates(w, updates), opt), None

    (w, _), _ = jax.lax.scan(step, (w0, tx.init(w0)), None, length=int(steps))
    return w
