"""Segment preference losses for rewards with per-step uncertainty."""

from __future__ import annotations

import chex
import jax.numpy as jnp

from alignax.losses.reward import gaussian_ranking_loss


def gaussian_segment_preference_loss(chosen_means, chosen_log_vars, rejected_means,
                                     rejected_log_vars, chosen_mask, rejected_mask, labels=None,
                                     *, kl_weight: float = 0.0):
    """Robust reward learning: a probit preference on Gaussian segment returns, plus a KL prior.

    Each step's reward is Gaussian, r_t ~ N(mu_t, sigma_t^2), independently, so a segment's return
    is G ~ N(M, V) with M = sum_t mu_t and V = sum_t sigma_t^2 over its valid steps, and

    .. math::
        P(\\sigma_1 \\succ \\sigma_2) = \\Phi\\Big(\\frac{M_1 - M_2}{\\sqrt{V_1 + V_2}}\\Big),
        \\quad L = -y \\log P - (1 - y) \\log(1 - P)
            + \\lambda \\, \\overline{\\mathrm{KL}}
              \\big(N(\\mu_t, \\sigma_t^2) \\,\\|\\, N(0, 1)\\big)

    with a (soft) label y = P(chosen preferred) and the KL averaged over the valid steps of both
    segments, KL = (mu^2 + sigma^2 - 1 - log sigma^2) / 2. A large predicted variance makes P
    approach 1/2 and so absorbs inconsistent labels; the KL keeps variances from growing without
    bound and shrinks the means. The probit terms are `gaussian_ranking_loss` on the returns.

    Args:
      chosen_means: [B, L] per-step reward means of the first ("chosen") segments.
      chosen_log_vars: [B, L] per-step log variances log sigma^2 of the same steps.
      rejected_means: [B, L2] per-step means of the second segments.
      rejected_log_vars: [B, L2] their log variances.
      chosen_mask: [B, L] valid steps of the first segments (> 0 = valid).
      rejected_mask: [B, L2] valid steps of the second segments.
      labels: optional [B] soft labels y in [0, 1] (default 1: the first segment is preferred).
      kl_weight: lambda >= 0.

    Returns:
      [B] float32 losses.

    Reference: Liu et al. 2023, "PEARL: Zero-shot Cross-task Preference Alignment and Robust
    Reward Learning for Robotic Manipulation" (robust reward learning).
    """
    chex.assert_rank([chosen_means, rejected_means], 2,
                     custom_message="chosen_means, rejected_means")
    chex.assert_equal_shape([chosen_means, chosen_log_vars, chosen_mask],
                            custom_message="chosen_means, chosen_log_vars, chosen_mask")
    chex.assert_equal_shape([rejected_means, rejected_log_vars, rejected_mask],
                            custom_message="rejected_means, rejected_log_vars, rejected_mask")
    chex.assert_equal_shape([chosen_means, rejected_means], dims=0,
                            custom_message="chosen and rejected batch sizes")
    batch = jnp.shape(chosen_means)[0]
    if kl_weight < 0:
        raise ValueError(f"kl_weight must be >= 0, got {kl_weight}")
    y = jnp.ones((batch,), jnp.float32) if labels is None else jnp.asarray(labels, jnp.float32)
    chex.assert_shape(y, (batch,), custom_message="labels")

    def moments(mean, log_var, mask):
        m = jnp.asarray(mask) > 0
        mean = jnp.asarray(mean, jnp.float32)
        log_var = jnp.asarray(log_var, jnp.float32)
        total_mean = jnp.sum(jnp.where(m, mean, 0.0), axis=-1)
        # log sum_t exp(log_var_t) over valid steps; an all-invalid segment has V = 0 -> tiny.
        big = jnp.max(jnp.where(m, log_var, -jnp.inf), axis=-1, keepdims=True)
        big = jnp.where(jnp.isfinite(big), big, 0.0)
        total = jnp.sum(jnp.where(m, jnp.exp(log_var - big), 0.0), axis=-1)
        log_total = jnp.log(jnp.maximum(total, 1e-30)) + big[:, 0]
        kl = 0.5 * (jnp.square(mean) + jnp.exp(log_var) - 1.0 - log_var)
        return total_mean, log_total, jnp.sum(jnp.where(m, kl, 0.0), axis=-1), jnp.sum(m, -1)

    mc, vc, klc, nc = moments(chosen_means, chosen_log_vars, chosen_mask)
    mr, vr, klr, nr = moments(rejected_means, rejected_log_vars, rejected_mask)
    nll = y * gaussian_ranking_loss(mc, vc, mr, vr) + (1.0 - y) * gaussian_ranking_loss(
        mr, vr, mc, vc)
    kl = (klc + klr) / jnp.maximum(nc + nr, 1)
    return nll + kl_weight * kl
