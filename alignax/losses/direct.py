"""Direct alignment objectives on sequence log-probs of policy and reference.

Each loss takes `(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps)`
([B] each: whatever log-probs the caller chooses, usually summed over response tokens) and returns
`(losses [B], metrics)` with per-example metric arrays:
`chosen_rewards` = beta (pi_c - ref_c), `rejected_rewards`, `reward_margins`, `reward_accuracies`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from alignax._src import checks

_NAMES = ["policy_chosen_logps", "policy_rejected_logps", "ref_chosen_logps", "ref_rejected_logps"]


def _log_ratios(pc, pr, rc, rr):
    checks.check_rank(pc, 1, _NAMES[0])
    checks.check_same_shape([pc, pr, rc, rr], _NAMES)
    f = lambda x: jnp.asarray(x, jnp.float32)  # noqa: E731
    chosen = f(pc) - f(rc)
    rejected = f(pr) - f(rr)
    return chosen, rejected


def _metrics(beta, chosen, rejected):
    margins = beta * (chosen - rejected)
    return {
        "chosen_rewards": beta * chosen,
        "rejected_rewards": beta * rejected,
        "reward_margins": margins,
        "reward_accuracies": (margins > 0).astype(jnp.float32),
    }


def dpo_loss(
    policy_chosen_logps: jax.Array,
    policy_rejected_logps: jax.Array,
    ref_chosen_logps: jax.Array,
    ref_rejected_logps: jax.Array,
    *,
    beta: float = 0.1,
    label_smoothing: float = 0.0,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Direct Preference Optimization (sigmoid loss), with cDPO label smoothing.

    .. math::
        h = (\\log\\pi(y_c) - \\log\\pi_{ref}(y_c))
          - (\\log\\pi(y_r) - \\log\\pi_{ref}(y_r)), \\quad
        L = -(1 - \\epsilon) \\log \\sigma(\\beta h) - \\epsilon \\log \\sigma(-\\beta h)

    Rafailov et al. 2023, arXiv 2305.18290 (epsilon = 0); cDPO: labels flipped with probability
    epsilon (Mitchell 2023, "A note on DPO with noisy preferences").

    Args:
      policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps: [B].
      beta: KL-regularisation strength.
      label_smoothing: epsilon in [0, 0.5).

    Returns:
      ([B] float32 losses, metrics of [B] arrays).
    """
    chosen, rejected = _log_ratios(
        policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps)
    z = beta * (chosen - rejected)
    loss = -jax.nn.log_sigmoid(z)
    if label_smoothing:
        loss = (1.0 - label_smoothing) * loss - label_smoothing * jax.nn.log_sigmoid(-z)
    return loss, _metrics(beta, chosen, rejected)


def ipo_loss(
    policy_chosen_logps: jax.Array,
    policy_rejected_logps: jax.Array,
    ref_chosen_logps: jax.Array,
    ref_rejected_logps: jax.Array,
    *,
    beta: float = 0.1,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Identity Preference Optimization: squared regression of the log-ratio gap onto 1/(2 tau).

    .. math::
        L = \\left(h - \\frac{1}{2\\tau}\\right)^2, \\quad \\tau = \\beta

    with h as in `dpo_loss`. Azar et al. 2023, arXiv 2310.12036, eq. (17). TRL feeds IPO
    per-token *average* log-probs; pass whichever log-probs you intend.

    Returns:
      ([B] float32 losses, metrics of [B] arrays).
    """
    chosen, rejected = _log_ratios(
        policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps)
    h = chosen - rejected
    return (h - 1.0 / (2.0 * beta)) ** 2, _metrics(beta, chosen, rejected)
