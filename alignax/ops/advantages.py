"""Advantages and KL estimators for policy-gradient methods.

Shapes: B sequences, T tokens, G groups of n samples (B = G * n, rows prompt-major).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from alignax._src import checks


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
    checks.check_same_shape([rewards, values, mask], ["rewards", "values", "mask"])
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
    checks.check_rank(rewards, 1, "rewards")
    if rewards.shape[0] % num_samples:
        raise ValueError(f"{rewards.shape[0]} rewards are not groups of {num_samples}")
    return jnp.asarray(rewards, jnp.float32).reshape(-1, num_samples)


def group_normalized_advantages(rewards: jax.Array, num_samples: int, *,
                                scale_by_std: bool = True, eps: float = 1e-6) -> jax.Array:
    """GRPO: A_i = (r_i - mean_group) / (std_group + eps); Dr. GRPO: scale_by_std=False.

    Shao et al. 2024 (DeepSeekMath, arXiv 2402.03300); Liu et al. 2025 (Dr. GRPO,
    arXiv 2503.20783) drop the std. The std is the population std of the group. [B] -> [B].
    """
    g = _groups(rewards, num_samples)
    centred = g - g.mean(axis=1, keepdims=True)
    if scale_by_std:
        centred = centred / (g.std(axis=1, keepdims=True) + eps)
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
    checks.check_same_shape([logps, ref_logps], ["logps", "ref_logps"])
    log_rho = jnp.asarray(ref_logps, jnp.float32) - jnp.asarray(logps, jnp.float32)
    if kind == "k1":
        return -log_rho
    if kind == "k2":
        return 0.5 * jnp.square(log_rho)
    if kind == "k3":
        return jnp.expm1(log_rho) - log_rho
    raise ValueError(f"unknown KL estimator {kind!r}; use k1, k2 or k3")
