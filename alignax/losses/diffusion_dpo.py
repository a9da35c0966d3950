"""Diffusion-DPO: DPO for diffusion models on the denoising errors of a preference pair.

Wallace et al. 2023, "Diffusion Model Alignment Using Direct Preference Optimization" (arXiv
2311.12908), eq. 14. For a pair (x^w_0 preferred to x^l_0) under one condition, one timestep
t ~ U{0..T-1} and noises eps^w, eps^l, with x^*_t = q_sample(x^*_0, t, eps^*),

    e^*_theta = ||eps^* - eps_theta(x^*_t, t)||^2,   e^*_ref = ||eps^* - eps_ref(x^*_t, t)||^2,
    h = (e^w_theta - e^w_ref) - (e^l_theta - e^l_ref),
    L = -log sigmoid(-beta T omega(lambda_t) h).

The preferred image's denoising error must fall (relative to the frozen reference) more than the
rejected one's. The implicit reward of an image is r = -beta T omega(lambda_t) (e_theta - e_ref)
(the DPO reward of the chain, bounded by the ELBO, up to constants), so the logit is
r^w - r^l; the implicit-reward accuracy is the fraction of pairs with r^w > r^l.

The paper's practice (and its reference code, `train.py` of SalesforceAIResearch/DiffusionDPO)
is a constant omega(lambda_t) and one t and one noise shared by the two images of a pair; their
code takes the mean over pixels instead of the squared norm and writes the factor as
`0.5 * beta_dpo`, i.e. `reduction="mean"` with beta = 0.5 beta_dpo here (beta_dpo = 5000 for
SD 1.5). `weights` carries T omega(lambda_t) per pair when it is not constant.

Shapes: B pairs, data dims [...].
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp

REDUCTIONS = ("sum", "mean")


def denoising_errors(eps_pred: jax.Array, noise: jax.Array, *, reduction: str = "sum"
                     ) -> jax.Array:
    """The per-sample error ||noise - eps_pred||^2 ("sum") or its mean over dims ("mean").

    Args:
      eps_pred, noise: [B, ...].
      reduction: "sum" (the paper's squared norm) or "mean" (the reference code's).

    Returns:
      [B] float32.
    """
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    chex.assert_equal_shape([eps_pred, noise], custom_message="eps_pred, noise")
    err = jnp.square(jnp.asarray(eps_pred, jnp.float32) - jnp.asarray(noise, jnp.float32))
    err = err.reshape(err.shape[0], -1)
    return err.sum(-1) if reduction == "sum" else err.mean(-1)


def diffusion_dpo_loss(
    policy_chosen_eps: jax.Array,
    policy_rejected_eps: jax.Array,
    ref_chosen_eps: jax.Array,
    ref_rejected_eps: jax.Array,
    chosen_noise: jax.Array,
    rejected_noise: jax.Array | None = None,
    *,
    beta: float | jax.Array,
    weights: jax.Array | None = None,
    reduction: str = "sum",
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """The Diffusion-DPO loss of B pairs from the eps predictions of policy and reference.

    .. math::
        h = (e^w_\\theta - e^w_{ref}) - (e^l_\\theta - e^l_{ref}), \\quad
        L = -\\log \\sigma(-\\beta\\, w\\, h),

    e^*_m = ||eps^* - eps_m(x^*_t, t)||^2 (`denoising_errors`), w = T omega(lambda_t) (`weights`,
    default 1). Wallace et al. 2023 (arXiv 2311.12908), eq. 14 (module docstring).

    Args:
      policy_chosen_eps, policy_rejected_eps: [B, ...] eps_theta at (x^w_t, t) and (x^l_t, t).
      ref_chosen_eps, ref_rejected_eps: [B, ...] the frozen reference's predictions there.
      chosen_noise: [B, ...] the noise that made x^w_t. rejected_noise: the one of x^l_t
        (default: the same noise, as the paper's code shares it within a pair).
      beta: > 0, the KL-regularisation strength (a float or a traced scalar).
      weights: None or [B] per-pair factors T omega(lambda_t).
      reduction: "sum" or "mean" over data dims (`denoising_errors`).

    Returns:
      (losses [B] float32, metrics of [B] arrays: "chosen_rewards" r^w = -beta w (e^w_theta -
      e^w_ref), "rejected_rewards" r^l, "reward_margins" r^w - r^l (the logit),
      "reward_accuracies" 1[r^w > r^l] (the implicit-reward accuracy), "policy_chosen_error",
      "policy_rejected_error", "ref_chosen_error", "ref_rejected_error").
    """
    rejected_noise = chosen_noise if rejected_noise is None else rejected_noise
    chex.assert_equal_shape([policy_chosen_eps, policy_rejected_eps, ref_chosen_eps,
                             ref_rejected_eps, chosen_noise, rejected_noise],
                            custom_message="eps predictions and noises")
    err = lambda e, n: denoising_errors(e, n, reduction=reduction)  # noqa: E731
    pw, pl = err(policy_chosen_eps, chosen_noise), err(policy_rejected_eps, rejected_noise)
    rw = jax.lax.stop_gradient(err(ref_chosen_eps, chosen_noise))
    rl = jax.lax.stop_gradient(err(ref_rejected_eps, rejected_noise))
    scale = jnp.asarray(beta, jnp.float32)
    if weights is not None:
        chex.assert_shape(weights, (pw.shape[0],), custom_message="weights")
        scale = scale * jnp.asarray(weights, jnp.float32)
    chosen_rewards = -scale * (pw - rw)
    rejected_rewards = -scale * (pl - rl)
    margins = chosen_rewards - rejected_rewards
    return -jax.nn.log_sigmoid(margins), {
        "chosen_rewards": chosen_rewards,
        "rejected_rewards": rejected_rewards,
        "reward_margins": margins,
        "reward_accuracies": (margins > 0).astype(jnp.float32),
        "policy_chosen_error": pw,
        "policy_rejected_error": pl,
        "ref_chosen_error": rw,
        "ref_rejected_error": rl,
    }


__all__ = ["REDUCTIONS", "denoising_errors", "diffusion_dpo_loss"]
