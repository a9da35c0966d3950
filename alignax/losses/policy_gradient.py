"""Policy-gradient objectives on per-token log-probs: PPO-clip (and its GRPO/DAPO/Dr. GRPO
aggregations), GSPO, SAPO's soft gates, VESPO's gamma weights, the off-policy sequence mask, the
clipped value loss and the entropy bonus.

Token-level losses return [B, T] values; `aggregate` reduces them with the normalisation each
method uses. Shapes: B sequences, T tokens.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np

AGGREGATIONS = ("token_mean", "seq_mean_token_mean", "seq_mean_token_sum",
                "seq_mean_token_sum_norm")


def aggregate(token_losses: jax.Array, mask: jax.Array, mode: str = "token_mean", *,
              max_length: int | None = None) -> jax.Array:
    """Reduces [B, T] token losses to a scalar.

    - "token_mean": sum over all valid tokens / their count (DAPO's token-level normalisation);
    - "seq_mean_token_mean": mean over each sequence's tokens, then over sequences (GRPO);
    - "seq_mean_token_sum": sum over each sequence, mean over sequences (sequence-level);
    - "seq_mean_token_sum_norm": sum over each sequence / max_length (default T), mean over
      sequences (Dr. GRPO, arXiv 2503.20783).
    """
    chex.assert_equal_shape([token_losses, mask], custom_message="token_losses, mask")
    m = jnp.asarray(mask, jnp.float32)
    x = jnp.where(m > 0, jnp.asarray(token_losses, jnp.float32), 0.0)  # garbage off the mask
    per_seq = x.sum(-1)
    if mode == "token_mean":
        return per_seq.sum() / jnp.maximum(m.sum(), 1.0)
    if mode == "seq_mean_token_mean":
        return (per_seq / jnp.maximum(m.sum(-1), 1.0)).mean()
    if mode == "seq_mean_token_sum":
        return per_seq.mean()
    if mode == "seq_mean_token_sum_norm":
        return (per_seq / float(max_length or x.shape[-1])).mean()
    raise ValueError(f"unknown aggregation {mode!r}; valid: {AGGREGATIONS}")


def ppo_clip_loss(logps: jax.Array, old_logps: jax.Array, advantages: jax.Array,
                  mask: jax.Array, *, clip_low: float = 0.2, clip_high: float | None = None,
                  dual_clip: float | None = None, delta: float | None = None
                  ) -> tuple[jax.Array, dict[str, jax.Array]]:
    """PPO clipped surrogate per token (negated, to minimise).

    .. math::
        \\rho = e^{\\log\\pi - \\log\\pi_{old}}, \\quad
        L = -\\min(\\rho A, \\mathrm{clip}(\\rho, 1 - \\epsilon_{low}, 1 + \\epsilon_{high}) A)

    Off-mask entries are ignored (they may hold anything, even -inf). Schulman et al. 2017
    (arXiv 1707.06347); `clip_high` > `clip_low` is DAPO's clip-higher (Yu
    et al. 2025, arXiv 2503.14476); `dual_clip` c > 1 bounds the loss of negative advantages by
    -c A (Ye et al. 2020); `delta` > 1 + clip_high caps the unclipped ratio at delta
    (two-sided clipping, so a negative advantage cannot push an already-large ratio without
    bound: INTELLECT-2, arXiv 2505.07291; TRL's GRPOConfig.delta).

    Args:
      logps, old_logps: [B, T] log-probs of the sampled tokens under the current and behaviour
        policy.
      advantages: [B, T], or [B] broadcast over tokens (sequence-level advantages).
      mask: [B, T] valid tokens.

    Returns:
      ([B, T] token losses, 0 off the mask; metrics of [B, T] arrays: ratio, clipped (1 where the
      clipped branch is active)).
    """
    chex.assert_equal_shape([logps, old_logps, mask], custom_message="logps, old_logps, mask")
    adv = jnp.asarray(advantages, jnp.float32)
    if adv.ndim == 1:
        adv = adv[:, None]
    clip_high = clip_low if clip_high is None else clip_high
    valid = jnp.asarray(mask) > 0
    log_ratio = jnp.where(valid, jnp.asarray(logps, jnp.float32)
                          - jnp.asarray(old_logps, jnp.float32), 0.0)
    # |log ratio| > 20 is far outside any clip range: clamping keeps exp finite (zero gradient
    # there, as the clipped branch has anyway for the advantage's sign that would use it)
    ratio = jnp.exp(jnp.clip(log_ratio, -20.0, 20.0))
    unclipped = -adv * (ratio if delta is None else jnp.minimum(ratio, delta))
    clipped = -adv * jnp.clip(ratio, 1.0 - clip_low, 1.0 + clip_high)
    loss = jnp.maximum(unclipped, clipped)
    if dual_clip is not None:
        loss = jnp.where(adv < 0, jnp.minimum(loss, -dual_clip * adv), loss)
    m = valid.astype(jnp.float32)
    return jnp.where(valid, loss, 0.0), {"ratio": ratio * m,
                                         "clipped": (clipped > unclipped).astype(jnp.float32) * m}


def gspo_loss(logps: jax.Array, old_logps: jax.Array, advantages: jax.Array, mask: jax.Array,
              *, clip_low: float = 3e-4, clip_high: float = 4e-4
              ) -> tuple[jax.Array, dict[str, jax.Array]]:
    """GSPO: PPO clipping on the length-normalised sequence ratio.

    .. math::
        s = \\exp\\left(\\frac{1}{|y|}\\sum_t (\\log\\pi_t - \\log\\pi_{old,t})\\right), \\quad
        L = -\\min(s A, \\mathrm{clip}(s, 1-\\epsilon_{low}, 1+\\epsilon_{high}) A)

    Zheng et al. 2025, "Group Sequence Policy Optimization" (arXiv 2507.18071). [B, T] x2, [B],
    [B, T] -> ([B] losses, metrics).
    """
    chex.assert_equal_shape([logps, old_logps, mask], custom_message="logps, old_logps, mask")
    valid = jnp.asarray(mask) > 0
    lengths = jnp.maximum(valid.sum(-1).astype(jnp.float32), 1.0)
    diff = jnp.where(valid, jnp.asarray(logps, jnp.float32) - jnp.asarray(old_logps, jnp.float32),
                     0.0)
    s = jnp.exp(jnp.clip(diff.sum(-1) / lengths, -20.0, 20.0))
    adv = jnp.asarray(advantages, jnp.float32)
    unclipped = -adv * s
    clipped = -adv * jnp.clip(s, 1.0 - clip_low, 1.0 + clip_high)
    loss = jnp.maximum(unclipped, clipped)
    return loss, {"ratio": s, "clipped": (clipped > unclipped).astype(jnp.float32)}


def _log_ratio(logps, old_logps, mask) -> tuple[jax.Array, jax.Array]:
    """(log pi - log pi_old with 0 off the mask, the valid mask as bool), [B, T] float32."""
    chex.assert_equal_shape([logps, old_logps, mask], custom_message="logps, old_logps, mask")
    valid = jnp.asarray(mask) > 0
    return jnp.where(valid, jnp.asarray(logps, jnp.float32)
                     - jnp.asarray(old_logps, jnp.float32), 0.0), valid


def _token_advantages(advantages) -> jax.Array:
    adv = jnp.asarray(advantages, jnp.float32)
    return adv[:, None] if adv.ndim == 1 else adv


def sapo_loss(logps: jax.Array, old_logps: jax.Array, advantages: jax.Array, mask: jax.Array,
              *, temperature_pos: float = 1.0, temperature_neg: float = 1.05
              ) -> tuple[jax.Array, dict[str, jax.Array]]:
    r"""SAPO: a smooth, temperature-controlled gate on the token ratio instead of a hard clip.

    .. math::
        \rho_t = e^{\log\pi_t - \log\pi_{old,t}}, \quad
        f(\rho) = \frac{4}{\tau}\,\sigma(\tau(\rho - 1)), \quad
        L_t = -f(\rho_t)\,A, \quad \tau = \tau_{pos} \text{ if } A > 0 \text{ else } \tau_{neg}

    The gradient is A * 4 sigma'(tau (rho - 1)) rho grad log pi: at rho = 1 exactly the policy
    gradient A grad log pi, decaying smoothly (rather than vanishing at 1 +- eps) as the ratio
    drifts; a larger tau_neg damps negative-advantage tokens faster (their updates raise the
    probability of many other tokens). "Soft Adaptive Policy Optimization" (Qwen team, 2025,
    arXiv 2511.20347); TRL's GRPOConfig loss_type="sapo" with sapo_temperature_pos/neg (TRL
    1.16: A > 0 takes tau_pos, A <= 0 tau_neg).

    Args:
      logps, old_logps: [B, T] log-probs of the sampled tokens under the current and behaviour
        policy.
      advantages: [B, T], or [B] broadcast over tokens.
      mask: [B, T] valid tokens.
      temperature_pos, temperature_neg: tau for A > 0 and for A <= 0 (> 0).

    Returns:
      ([B, T] token losses, 0 off the mask; metrics of [B, T] arrays: ratio, gate = sigma(tau
      (rho - 1)), 0 off the mask).
    """
    if temperature_pos <= 0 or temperature_neg <= 0:
        raise ValueError(f"sapo temperatures must be > 0, got {temperature_pos}, "
                         f"{temperature_neg}")
    log_ratio, valid = _log_ratio(logps, old_logps, mask)
    adv = _token_advantages(advantages)
    # |log ratio| > 20: the gate is saturated (0 or 1, zero gradient) long before; clamping keeps
    # exp finite
    ratio = jnp.exp(jnp.clip(log_ratio, -20.0, 20.0))
    tau = jnp.where(adv > 0, jnp.float32(temperature_pos), jnp.float32(temperature_neg))
    gate = jax.nn.sigmoid(tau * (ratio - 1.0))
    loss = -(4.0 / tau) * gate * adv
    m = valid.astype(jnp.float32)
    return jnp.where(valid, loss, 0.0), {"ratio": ratio * m, "gate": gate * m}


def vespo_loss(logps: jax.Array, old_logps: jax.Array, advantages: jax.Array, mask: jax.Array,
               *, k_pos: float = 2.0, lambda_pos: float = 3.0, k_neg: float = 3.0,
               lambda_neg: float = 2.0) -> tuple[jax.Array, dict[str, jax.Array]]:
    r"""VESPO: the policy gradient weighted by a gamma function of the sequence ratio.

    .. math::
        \log w = \mathrm{clip}\Big(\sum_t \mathrm{clip}(\log\pi_t - \log\pi_{old,t},
                  -20, 20),\ \log 10^{-8},\ 20\Big), \quad
        \phi(w) = e^{\lambda}\, w^{k}\, e^{-\lambda w}, \quad
        L_t = -\,\mathrm{sg}[\phi(w)]\, A \log\pi_t

    with (k, lambda) = (k_pos, lambda_pos) where A >= 0, else (k_neg, lambda_neg), lambda
    clamped at >= 1e-4. phi(1) = 1 (on-policy: the plain policy gradient A grad log pi); w^k
    down-weights sequences the current policy finds much less likely than the behaviour one,
    e^{-lambda w} those it finds much more likely, smoothly instead of by a hard clip. phi is
    computed in log space and is a constant of the gradient (stop_gradient), so the gradient
    is phi A grad log pi and the loss value is -phi A log pi (not a surrogate of the return).
    "VESPO: Variational Sequence-Level Soft Policy Optimization" (2026, arXiv 2602.10693);
    TRL's GRPOConfig loss_type="vespo" (GRPOTrainer.get_gamma_weights, TRL 1.16, without
    vLLM's importance-sampling factor: alignax samples with the training model). TRL
    aggregates it as "token_mean" over the batch (loss_type "dapo"'s normaliser).

    Args:
      logps, old_logps: [B, T] log-probs of the sampled tokens under the current and behaviour
        policy.
      advantages: [B] (one per sequence), or [B, T].
      mask: [B, T] valid tokens.
      k_pos, lambda_pos, k_neg, lambda_neg: the gamma weights' exponent and decay by the sign of
        the advantage.

    Returns:
      ([B, T] token losses, 0 off the mask; metrics: ratio [B] (w), phi (the weight, [B] for
      [B] advantages, else [B, T] with 0 off the mask)).
    """
    log_ratio, valid = _log_ratio(logps, old_logps, mask)
    adv = _token_advantages(advantages)
    log_w = jax.lax.stop_gradient(jnp.clip(jnp.clip(log_ratio, -20.0, 20.0).sum(-1),
                                           float(np.log(1e-8)), 20.0))[:, None]  # [B, 1]
    w = jnp.exp(log_w)
    nonneg = adv >= 0
    k = jnp.where(nonneg, jnp.float32(k_pos), jnp.float32(k_neg))
    lam = jnp.maximum(jnp.where(nonneg, jnp.float32(lambda_pos), jnp.float32(lambda_neg)), 1e-4)
    phi = jax.lax.stop_gradient(jnp.exp(lam + k * log_w - lam * w))  # [B, 1] or [B, T]
    loss = -phi * adv * jnp.asarray(logps, jnp.float32)
    phi_out = phi[:, 0] if jnp.ndim(advantages) == 1 else phi * valid
    return jnp.where(valid, loss, 0.0), {"ratio": w[:, 0], "phi": phi_out}


def off_policy_sequence_mask(logps: jax.Array, behaviour_logps: jax.Array,
                             advantages: jax.Array, mask: jax.Array, *, threshold: float
                             ) -> jax.Array:
    r"""DeepSeek-V3.2's off-policy sequence mask: drop a sequence with a negative advantage whose
    behaviour policy has drifted too far from the current one.

    .. math::
        M_i = 0 \text{ if } A_i < 0 \text{ and }
        \frac{1}{|y_i|}\sum_t \big(\log\pi_{old}(y_{i,t}) - \mathrm{sg}[\log\pi_\theta
        (y_{i,t})]\big) > \delta, \text{ else } 1

    (the sequence mean of the k1 estimate of KL(pi_old || pi_theta)). Multiply the policy
    term's token (or sequence) losses by it. DeepSeek-AI 2025, "DeepSeek-V3.2" (arXiv
    2512.02556), eq. 9; TRL's GRPOConfig.off_policy_mask_threshold (GRPOTrainer.
    get_off_policy_mask: kept when A >= 0 or the mean KL <= delta).

    Args:
      logps: [B, T] current log-probs (used without gradient).
      behaviour_logps: [B, T] log-probs of the policy that sampled the tokens.
      advantages: [B], or [B, T] (then the mask is [B, T], by each token's advantage).
      mask: [B, T] valid tokens.
      threshold: delta >= 0.

    Returns:
      float32 1 (keep) / 0 (drop), the shape of `advantages`.
    """
    if threshold < 0:
        raise ValueError(f"off_policy_mask_threshold must be >= 0, got {threshold}")
    log_ratio, valid = _log_ratio(jax.lax.stop_gradient(jnp.asarray(logps, jnp.float32)),
                                  behaviour_logps, mask)
    seq_kl = -log_ratio.sum(-1) / jnp.maximum(valid.sum(-1).astype(jnp.float32), 1.0)  # [B]
    adv = jnp.asarray(advantages, jnp.float32)
    if adv.ndim == 2:
        seq_kl = seq_kl[:, None]
    return ((adv >= 0) | (seq_kl <= threshold)).astype(jnp.float32)


def clipped_value_loss(values: jax.Array, old_values: jax.Array, returns: jax.Array,
                       mask: jax.Array, *, clip: float = 0.2) -> jax.Array:
    """PPO value loss: 0.5 max((V - R)^2, (clip(V, V_old - c, V_old + c) - R)^2). [B, T] -> [B, T].
    """
    chex.assert_equal_shape([values, old_values, returns, mask],
                            custom_message="values, old_values, returns, mask")
    v = jnp.asarray(values, jnp.float32)
    v_old = jnp.asarray(old_values, jnp.float32)
    ret = jnp.asarray(returns, jnp.float32)
    v_clipped = v_old + jnp.clip(v - v_old, -clip, clip)
    loss = 0.5 * jnp.maximum(jnp.square(v - ret), jnp.square(v_clipped - ret))
    return loss * jnp.asarray(mask, jnp.float32)


def entropy_bonus(logits: jax.Array, mask: jax.Array) -> jax.Array:
    """Negative entropy per token (add `coef * aggregate(entropy_bonus(...))` to a loss to reward
    exploration). [B, T, V], [B, T] -> [B, T]."""
    logp = jax.nn.log_softmax(jnp.asarray(logits, jnp.float32), axis=-1)
    entropy = -jnp.sum(jnp.exp(logp) * logp, axis=-1)
    return -entropy * jnp.asarray(mask, jnp.float32)


def gpo_loss(policy_logps: jax.Array, behaviour_logps: jax.Array,
             preference_scores: jax.Array, *, eta: float = 1.0,
             baseline: jax.Array | float = 0.0) -> tuple[jax.Array, dict[str, jax.Array]]:
    """General Preference Optimization: regress the log-ratio to pi_t on the preference score.

    .. math::
        L = \\Big(\\log\\frac{\\pi_\\theta(y)}{\\pi_t(y)}
                  - \\eta\\,\\big(s(y \\succ \\pi_t) - b\\big)\\Big)^2, \\quad
        s(y \\succ \\pi_t) = \\mathbb{E}_{y' \\sim \\pi_t}\\, s(y \\succ y')

    with s the (skew-symmetric) general preference score of a GPM head, estimated by the other
    samples of the group. Zhang et al. 2024, "General Preference Modeling with Preference
    Representations" (arXiv 2410.02197); the SPPO-style square loss of Wu et al. 2024.
    [B] sequence log-probs under the policy and the sampling policy pi_t, [B] scores -> ([B], {}).
    """
    chex.assert_equal_shape([policy_logps, behaviour_logps, preference_scores],
                            custom_message="policy_logps, behaviour_logps, preference_scores")
    log_ratio = jnp.asarray(policy_logps, jnp.float32) - jnp.asarray(behaviour_logps, jnp.float32)
    target = eta * (jnp.asarray(preference_scores, jnp.float32)
                    - jnp.asarray(baseline, jnp.float32))
    return jnp.square(log_ratio - target), {"log_ratio": log_ratio}
