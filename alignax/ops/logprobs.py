"""Token and sequence log-probabilities from logits (float32), and the next-token shift.

Convention: `logits[:, t]` is the distribution of `tokens[:, t]`; `shift_for_next_token` turns the
model's input ids into those targets (logits at position t predict the input token t + 1).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from alignax.ops.masked import masked_sum


def token_logprobs(logits: jax.Array, tokens: jax.Array) -> jax.Array:
    """log softmax(logits)[tokens] in float32: [B, T, V], [B, T] -> [B, T].

    Computed as logits[token] - logsumexp(logits), without materialising the [B, T, V] log-softmax.
    """
    if logits.ndim != tokens.ndim + 1 or logits.shape[:-1] != tokens.shape:
        raise ValueError(f"logits {logits.shape} do not match tokens {tokens.shape}")
    logits = logits.astype(jnp.float32)
    picked = jnp.take_along_axis(logits, tokens[..., None].astype(jnp.int32), axis=-1)[..., 0]
    return picked - jax.nn.logsumexp(logits, axis=-1)


def sequence_logprobs(logits: jax.Array, tokens: jax.Array, mask: jax.Array) -> jax.Array:
    """sum_t m_t log pi(tokens_t): [B, T, V], [B, T], [B, T] -> [B] (float32)."""
    return masked_sum(token_logprobs(logits, tokens), mask.astype(bool), axis=-1)


def shift_for_next_token(input_ids: jax.Array, mask: jax.Array,
                         attention_mask: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    """Next-token targets: targets[:, t] = input_ids[:, t + 1], target_mask[:, t] = mask[:, t + 1].

    `mask` marks the tokens whose log-probs count (e.g. the response). With `attention_mask`
    (the model's mask: boolean, or segment ids of packed rows), a target also needs a predicting
    position t in the same sequence: the first token of a left-padded row (predicted from
    padding) and the first token of each packed sequence (predicted from the previous one) do not
    count. The last position gets target 0 with mask 0. [B, T] -> ([B, T], [B, T]).
    """
    targets = jnp.concatenate([input_ids[:, 1:], jnp.zeros_like(input_ids[:, :1])], axis=1)
    target_mask = jnp.concatenate([mask[:, 1:], jnp.zeros_like(mask[:, :1])], axis=1)
    if attention_mask is not None:
        seg = attention_mask.astype(jnp.int32)
        same = (seg[:, :-1] == seg[:, 1:]) & (seg[:, :-1] > 0)
        same = jnp.concatenate([same, jnp.zeros_like(same[:, :1])], axis=1)
        target_mask = target_mask * same.astype(target_mask.dtype)
    return targets, target_mask


def token_entropy(logits: jax.Array) -> jax.Array:
    """Entropy of softmax(logits) per position in float32: [B, T, V] -> [B, T]."""
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    return -jnp.sum(jnp.exp(logp) * logp, axis=-1)


def sequential_kl(ref_logits: jax.Array, policy_logits: jax.Array, mask: jax.Array) -> jax.Array:
    """sum_t KL(ref(.|y_<t) || pi(.|y_<t)) over the masked positions: [B, T, V] x2, [B, T] -> [B].

    The sequential KL of TDPO (Zeng et al. 2024, arXiv 2404.11999), in float32.
    """
    logq = jax.nn.log_softmax(ref_logits.astype(jnp.float32), axis=-1)
    logp = jax.nn.log_softmax(policy_logits.astype(jnp.float32), axis=-1)
    kl = jnp.sum(jnp.exp(logq) * (logq - logp), axis=-1)
    return jnp.sum(jnp.where(mask.astype(bool), kl, 0.0), axis=-1)
