"""The unified direct-alignment (DAA) loss: one convex link g on the scaled log-ratio margin.

Rafailov et al. 2024, "Scaling Laws for Reward Model Overoptimization in Direct Alignment
Algorithms" (arXiv 2406.02900), write DPO, IPO and SLiC as one objective

.. math::
    L(\\theta) = E_{(x, y_w, y_l)}[g(\\beta (h_\\theta(x, y_w) - h_\\theta(x, y_l)))], \\quad
    h_\\theta(x, y) = \\log \\pi_\\theta(y | x) - \\log \\pi_{ref}(y | x),

with g_DPO(u) = -log sigma(u), g_IPO(u) = (u - 1)^2 and g_SLiC(u) = max(0, 1 - u). The
over-optimisation study varies only g and beta, so this module keeps them in one selector.

Note the scaling: `alignax.losses.direct.ipo_loss` is Azar et al.'s (h - 1/(2 beta))^2, i.e.
g_IPO's target is 1/(2 beta) on h instead of 1/beta, and its value is not multiplied by
beta^2; the minimisers and the direction of the gradient differ only by that constant, but to
reproduce the unified paper's beta grid use `daa_loss(kind="ipo")`. `hinge_loss` and
`dpo_loss` are g_SLiC and g_DPO exactly.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from alignax.losses.direct import _log_ratios, _metrics

DAA_KINDS = ("dpo", "ipo", "slic")


def daa_link(kind: str, u: jax.Array) -> jax.Array:
    """g(u) of the unified DAA objective (Rafailov et al. 2024, arXiv 2406.02900):
    "dpo": -log sigma(u); "ipo": (u - 1)^2; "slic": max(0, 1 - u). Elementwise."""
    u = jnp.asarray(u, jnp.float32)
    if kind == "dpo":
        return -jax.nn.log_sigmoid(u)
    if kind == "ipo":
        return (u - 1.0) ** 2
    if kind == "slic":
        return jax.nn.relu(1.0 - u)
    raise ValueError(f"unknown DAA loss {kind!r}; one of {DAA_KINDS}")


def daa_loss(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps,
             *, kind: str = "dpo", beta: float = 0.1):
    """Unified DAA loss g(beta (h_w - h_l)) with g chosen by `kind` (`daa_link`).

    Rafailov et al. 2024, arXiv 2406.02900, eq. (3): DPO, IPO and SLiC as one objective.

    Args:
      policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps: [B].
      kind: "dpo", "ipo" or "slic".
      beta: the scale of the margin (the KL-regularisation strength).

    Returns:
      ([B] float32 losses, metrics of [B] arrays as in `alignax.losses.direct`).
    """
    chosen, rejected = _log_ratios(policy_chosen_logps, policy_rejected_logps,
                                   ref_chosen_logps, ref_rejected_logps)
    return daa_link(kind, beta * (chosen - rejected)), _metrics(beta, chosen, rejected)
