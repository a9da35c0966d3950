"""Objectives on the denoising chain: the eps-prediction loss (optionally reward-weighted) and the
DDPO / PPO clipped per-step policy loss with a timestep mask.

The per-step log-probs come from `alignax.models.diffusion` (`sample(...).logps` for the behaviour
policy, `step_logprob` / `chain_logprobs` recomputed by the update); these functions only see
arrays. Shapes: B samples, K denoising steps of a trajectory, data dims [...].
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp


def epsilon_loss(eps_pred: jax.Array, noise: jax.Array, *,
                 weights: jax.Array | None = None) -> jax.Array:
    """The denoising loss of an eps-predictor, per sample (Ho et al. 2020, arXiv 2006.11239,
    L_simple):

        l_b = w_b * mean_i (eps_theta(x_t, t)_{b,i} - eps_{b,i})^2

    With `weights` w = `reward_weights(rewards)` this is reward-weighted fine-tuning (Lee et al.
    2023, "Aligning Text-to-Image Models using Human Feedback", arXiv 2302.12192; RWR).

    Args:
      eps_pred: [B, ...] the prediction. noise: [B, ...] the noise that made x_t.
      weights: None or [B] per-sample weights.

    Returns:
      [B] float32 (the caller reduces, e.g. the mean).
    """
    chex.assert_equal_shape([eps_pred, noise], custom_message="eps_pred, noise")
    err = jnp.square(jnp.asarray(eps_pred, jnp.float32) - jnp.asarray(noise, jnp.float32))
    per_sample = err.reshape(err.shape[0], -1).mean(-1)
    if weights is None:
        return per_sample
    chex.assert_shape(weights, (err.shape[0],), custom_message="weights")
    return jnp.asarray(weights, jnp.float32) * per_sample


def reward_weights(rewards: jax.Array, *, temperature: float) -> jax.Array:
    """Exponentiated-reward weights normalised to mean 1: w = B softmax(r / temperature).

    The weights of reward-weighted regression (Peters & Schaal 2007) for `epsilon_loss`; a
    small temperature concentrates the loss on the best samples, a large one tends to uniform.

    Args:
      rewards: [B]. temperature: > 0.

    Returns:
      [B] float32 non-negative weights with mean 1 (constants: no gradient flows to rewards).
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    r = jax.lax.stop_gradient(jnp.asarray(rewards, jnp.float32))
    return r.shape[0] * jax.nn.softmax(r / temperature)


def ddpo_clip_loss(logps: jax.Array, old_logps: jax.Array, advantages: jax.Array,
                   step_mask: jax.Array, *, clip: float = 1e-4,
                   advantage_clip: float | None = None
                   ) -> tuple[jax.Array, dict[str, jax.Array]]:
    """DDPO's clipped importance-sampling policy loss on the denoising MDP, per sample.

    For step k of sample b, with rho = exp(logps - old_logps) and A_b the advantage of the
    sample's final reward (clipped to [-advantage_clip, advantage_clip] if given):

        L_{k,b} = max(-A_b rho_{k,b}, -A_b clip(rho_{k,b}, 1 - clip, 1 + clip))
        l_b = sum_k m_{k,b} L_{k,b} / max(sum_k m_{k,b}, 1)

    Black et al. 2023, "Training Diffusion Models with Reinforcement Learning" (arXiv
    2305.13301; their defaults clip 1e-4, advantage clip 5). The step mask selects the timesteps
    that are trained: all stochastic steps for DDPO, a moving interval for backward-progressive
    training (B^2-DiffuRL), never a deterministic step (log-prob 0). Off-mask entries may hold
    anything (even inf): they are ignored.

    Args:
      logps: [K, B] log p_theta(x_{k+1} | x_k) recomputed by the update (`chain_logprobs`).
      old_logps: [K, B] the behaviour policy's (`DiffusionSample.logps`).
      advantages: [B] per-sample advantages (e.g. per-prompt normalised rewards).
      step_mask: [K] or [K, B] bool / {0, 1}.
      clip: epsilon of the ratio clip. advantage_clip: None or c > 0.

    Returns:
      (per-sample losses [B] float32, metrics {"approx_kl", "clip_frac", "ratio_mean"} over the
      masked entries; approx_kl = mean 0.5 (logps - old_logps)^2 as DDPO logs it).
    """
    chex.assert_equal_shape([logps, old_logps], custom_message="logps, old_logps")
    chex.assert_rank(logps, 2)
    k, b = logps.shape
    chex.assert_shape(advantages, (b,), custom_message="advantages")
    mask = jnp.broadcast_to(jnp.asarray(step_mask, jnp.float32).reshape(
        (k, -1) if jnp.ndim(step_mask) == 1 else (k, b)), (k, b))
    on = mask > 0
    diff = jnp.where(on, jnp.asarray(logps, jnp.float32) - jnp.asarray(old_logps, jnp.float32),
                     0.0)
    ratio = jnp.exp(diff)
    adv = jnp.asarray(advantages, jnp.float32)
    if advantage_clip is not None:
        adv = jnp.clip(adv, -advantage_clip, advantage_clip)
    unclipped = -adv[None] * ratio
    clipped = -adv[None] * jnp.clip(ratio, 1.0 - clip, 1.0 + clip)
    per_step = jnp.where(on, jnp.maximum(unclipped, clipped), 0.0)
    per_sample = (per_step * mask).sum(0) / jnp.maximum(mask.sum(0), 1.0)
    count = jnp.maximum(on.sum(), 1)
    metrics = {
        "approx_kl": jnp.where(on, 0.5 * jnp.square(diff), 0.0).sum() / count,
        "clip_frac": jnp.where(on & (jnp.abs(ratio - 1.0) > clip), 1.0, 0.0).sum() / count,
        "ratio_mean": jnp.where(on, ratio, 0.0).sum() / count,
    }
    return per_sample, metrics
