"""Policy-gradient objectives on per-token log-probs: PPO-clip (and its GRPO/DAPO/Dr. GRPO
aggregations), GSPO, the clipped value loss and the entropy bonus.

Token-level losses return [B, T] values; `aggregate` reduces them with the normalisation each
method uses. Shapes: B sequences, T tokens.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp

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
