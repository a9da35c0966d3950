"""Advantages and KL estimators for policy-gradient methods.

Shapes: B sequences, T tokens, G groups of n samples (B = G * n, rows prompt-major).
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp


def gae(rewards: jax.Array, values: jax.Array, mask: jax.Array, *, gamma: float = 1.0,
        lam: float = 0.95) -> tuple[jax.Array, jax.Array]:
    """Generalised advantage estimation over the valid tokens of each row.

    .. math::
        \\delta_t = r_t + \\gamma V_{t+1} - V_t, \\quad A_t = \\delta_t + \\gamma\\lambda A_{t+1}

    where t+1 is the next *valid* token (V = 0 after the last one). Schulman et al. 2016
    (arXiv 1506.02438).

    Args:
      rewards: [B, T] per-token rewards (e.g. the score on the last token minus a KL penalty).
      values: [B, T] value estimates.
      mask: [B, T] valid (response) tokens, contiguous per row.

    Returns:
      (advantages [B, T], returns [B, T] = advantages + values), 0 at invalid tokens.
    """
    chex.assert_equal_shape([rewards, values, mask], custom_message="rewards, values, mask")
    m = jnp.asarray(mask, jnp.float32)
    r = jnp.asarray(rewards, jnp.float32) * m
    v = jnp.asarray(values, jnp.float32) * m

    def step(carry, x):
        next_value, next_adv = carry
        r_t, v_t, m_t = x
        delta = r_t + gamma * next_value - v_t
        adv = delta + gamma * lam * next_adv
        # invalid tokens pass the carry through untouched
        adv = jnp.where(m_t > 0, adv, next_adv)
        value = jnp.where(m_t > 0, v_t, next_value)
        return (value, adv), adv * m_t

    init = (jnp.zeros(r.shape[0]), jnp.zeros(r.shape[0]))
    _, adv = jax.lax.scan(step, init, (r.T, v.T, m.T), reverse=True)
    adv = adv.T
    return adv, (adv + v) * m


def _groups(rewards, num_samples):
    chex.assert_rank(rewards, 1, custom_message="rewards")
    if rewards.shape[0] % num_samples:
        raise ValueError(f"{rewards.shape[0]} rewards are not groups of {num_samples}")
    return jnp.asarray(rewards, jnp.float32).reshape(-1, num_samples)


def group_normalized_advantages(rewards: jax.Array, num_samples: int, *,
                                scale_by_std: bool = True, eps: float = 1e-6, ddof: int = 0,
                                std_scope: str = "group") -> jax.Array:
    """GRPO: A_i = (r_i - mean_group) / (std + eps); Dr. GRPO: scale_by_std=False.

    Shao et al. 2024 (DeepSeekMath, arXiv 2402.03300); Liu et al. 2025 (Dr. GRPO,
    arXiv 2503.20783) drop the std. The std is the group's (`std_scope="group"`) or the whole
    batch's ("batch"), with `ddof` (0: population std; TRL's GRPOTrainer uses ddof=1 and
    eps=1e-4, `scale_rewards` "group" / "batch"). [B] -> [B].
    """
    if std_scope not in ("group", "batch"):
        raise ValueError(f"std_scope must be 'group' or 'batch', got {std_scope!r}")
    g = _groups(rewards, num_samples)
    centred = g - g.mean(axis=1, keepdims=True)
    if scale_by_std:
        std = (g.std(axis=1, keepdims=True, ddof=ddof) if std_scope == "group"
               else g.std(ddof=ddof))
        centred = centred / (std + eps)
    return centred.reshape(-1)


def leave_one_out_advantages(rewards: jax.Array, num_samples: int) -> jax.Array:
    """RLOO: A_i = r_i - mean_{j != i} r_j (= n/(n-1) (r_i - mean)). [B] -> [B].

    Ahmadian et al. 2024, "Back to Basics: Revisiting REINFORCE Style Optimization"
    (arXiv 2402.14740); Kool et al. 2019.
    """
    if num_samples < 2:
        raise ValueError("leave-one-out needs at least 2 samples per prompt")
    g = _groups(rewards, num_samples)
    others = (g.sum(axis=1, keepdims=True) - g) / (num_samples - 1)
    return (g - others).reshape(-1)


def batch_normalized_advantages(returns: jax.Array, mask: jax.Array | None = None, *,
                                eps: float = 1e-6) -> jax.Array:
    """REINFORCE++: advantages normalised by the mean and std over the whole batch.

    Hu 2025, "REINFORCE++" (arXiv 2501.03262). `returns` is [B] or [B, T] (with `mask`).
    """
    x = jnp.asarray(returns, jnp.float32)
    m = jnp.ones_like(x) if mask is None else jnp.asarray(mask, jnp.float32)
    n = jnp.maximum(m.sum(), 1.0)
    mean = (x * m).sum() / n
    var = (jnp.square(x - mean) * m).sum() / n
    return (x - mean) / (jnp.sqrt(var) + eps) * m


def kl_estimate(logps: jax.Array, ref_logps: jax.Array, kind: str = "k3") -> jax.Array:
    """Per-token estimate of KL(pi || ref) from samples of pi (Schulman, "Approximating KL").

    With log rho = ref_logps - logps: k1 = -log rho (unbiased, high variance), k2 = (log rho)^2 / 2
    (biased, low variance), k3 = (rho - 1) - log rho (unbiased, non-negative). Same shapes in and
    out.
    """
    chex.assert_equal_shape([logps, ref_logps], custom_message="logps, ref_logps")
    log_rho = jnp.asarray(ref_logps, jnp.float32) - jnp.asarray(logps, jnp.float32)
    if kind == "k1":
        return -log_rho
    if kind == "k2":
        return 0.5 * jnp.square(log_rho)
    if kind == "k3":
        return jnp.expm1(log_rho) - log_rho
    raise ValueError(f"unknown KL estimator {kind!r}; use k1, k2 or k3")


def beta_normalization_parameters(success_rates: jax.Array, *, eps: float = 1e-6
                                  ) -> tuple[jax.Array, jax.Array]:
    """BNPO's normalisation parameters from the batch's per-prompt success rates.

    Fits Beta(a, b) to the rates p(q) by the method of moments (sample variance),
    a = mu (mu (1 - mu) / var - 1), b = (1 - mu) (mu (1 - mu) / var - 1), and returns
    (alpha, beta) = (max(1, 1 + a / 3), max(1, 1 + b / 3)), the variance-reducing choice of Xiao
    et al. 2025 ("BNPO: Beta Normalization Policy Optimization", arXiv 2506.02864; the floor at 1
    is the authors' code). [G] with G >= 2 -> two scalars.
    """
    chex.assert_rank(success_rates, 1, custom_message="success_rates")
    if success_rates.shape[0] < 2:
        raise ValueError("beta_normalization_parameters needs the rates of at least 2 prompts")
    p = jnp.asarray(success_rates, jnp.float32)
    mu = p.mean()
    var = jnp.maximum(p.var(ddof=1), eps)
    common = mu * (1.0 - mu) / var - 1.0
    return (jnp.maximum(1.0 + mu * common / 3.0, 1.0),
            jnp.maximum(1.0 + (1.0 - mu) * common / 3.0, 1.0))


def beta_normalized_advantages(rewards: jax.Array, num_samples: int, *, alpha, beta,
                               max_weight: float = 1e6) -> jax.Array:
    """BNPO: A = (R - p(q)) / f(p(q); alpha, beta), with f the Beta(alpha, beta) density.

    p(q) is the group's mean reward; rewards must lie in [0, 1] (rescale others affinely), and
    1 / f is capped at `max_weight` (f vanishes at p = 0 or 1 when alpha or beta > 1, where
    R - p = 0 anyway). alpha = beta = 1 gives REINFORCE with a group
    baseline; alpha = beta = 3/2 gives f proportional to sqrt(p (1 - p)), GRPO's std for binary
    rewards. Xiao et al. 2025, arXiv 2506.02864 (pick alpha, beta with
    `beta_normalization_parameters`). [B] -> [B].
    """
    g = _groups(rewards, num_samples)
    p = g.mean(axis=1, keepdims=True)
    alpha = jnp.asarray(alpha, jnp.float32)
    beta = jnp.asarray(beta, jnp.float32)
    log_density = (jax.scipy.special.xlogy(alpha - 1.0, p)
                   + jax.scipy.special.xlog1py(beta - 1.0, -p)
                   - jax.scipy.special.betaln(alpha, beta))
    weight = jnp.minimum(jnp.exp(-log_density), max_weight)
    return ((g - p) * weight).reshape(-1)


def difficulty_scaled_advantages(advantages: jax.Array, scale: jax.Array,
                                 num_samples: int) -> jax.Array:
    """GRPO-S: each prompt's group advantages times its difficulty scale s(x) >= 0.

    DR-IRL ("Inverse Reinforcement Learning with Dynamic Reward Scaling for LLM Alignment", 2025)
    scales the reward of harder prompts (data-level hardness, model-level reward gap) up. Note
    that scaling the *rewards* by s(x) is undone by GRPO's per-group std normalisation, so the
    scale is applied to the normalised advantages, where it changes the update. [B], [G] -> [B].
    """
    g = _groups(advantages, num_samples)
    chex.assert_shape(scale, (g.shape[0],), custom_message="scale")
    return (g * jnp.asarray(scale, jnp.float32)[:, None]).reshape(-1)


def bootstrapped_reference_advantages(outcomes: jax.Array, reference_index: jax.Array,
                                      num_samples: int) -> jax.Array:
    """BRPO: advantages are pairwise judgements against a bootstrapped reference of the group.

    For each prompt one of its n samples, y_ref (index `reference_index` in [0, n)), is the
    temporary reference, and A_i = J(x, y_i, y_ref) (e.g. +1 win, 0 tie, -1 loss); the reference
    itself gets A = 0. Jia et al. 2025, "Writing-Zero" (arXiv 2506.00103). [B] judge outcomes of
    every sample against its group's reference, [G] int reference indices -> [B].
    """
    g = _groups(outcomes, num_samples)
    chex.assert_shape(reference_index, (g.shape[0],), custom_message="reference_index")
    is_ref = jnp.arange(num_samples)[None, :] == jnp.asarray(reference_index)[:, None]
    return jnp.where(is_ref, 0.0, g).reshape(-1)
