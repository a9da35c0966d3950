"""Sampling by full recomputation: the simple, obviously-correct sampler.

Each new token runs the whole forward pass over the fixed-size buffer (causal attention makes the
not-yet-written positions irrelevant). It costs O(N * T) forwards instead of a KV cache's O(T),
which is fine for the tiny testbed models and is the oracle the KV-cache sampler is tested against.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp


def sample_continuations(
    apply_fn: Callable,
    params,
    prompt_ids: jax.Array,
    rng: jax.Array,
    *,
    num_new_tokens: int,
    temperature: float = 1.0,
) -> tuple[jax.Array, jax.Array]:
    """Samples `num_new_tokens` tokens after each (unpadded, equal-length) prompt.

    Args:
      apply_fn: `(params, input_ids [B,T], mask [B,T]) -> logits [B,T,V]`.
      params: model parameters.
      prompt_ids: [B, P] int prompts (no padding).
      rng: PRNG key.
      num_new_tokens: N.
      temperature: softmax temperature; 0 means greedy.

    Returns:
      tokens [B, N] int32 and their log-probs [B, N] under the temperature-1 model distribution
      (the distribution a training forward computes, whatever `temperature` is).
    """
    b, p = prompt_ids.shape
    total = p + num_new_tokens
    buf = jnp.zeros((b, total), jnp.int32).at[:, :p].set(prompt_ids.astype(jnp.int32))
    mask = jnp.ones((b, total), bool)

    def body(t, carry):
        buf, logps, rng = carry
        rng, key = jax.random.split(rng)
        logits = apply_fn(params, buf, mask)[:, p + t - 1].astype(jnp.float32)  # [B, V]
        logp_all = jax.nn.log_softmax(logits, axis=-1)
        if temperature == 0:
            tok = jnp.argmax(logits, axis=-1)
        else:
            tok = jax.random.categorical(key, logits / temperature, axis=-1)
        buf = buf.at[:, p + t].set(tok.astype(jnp.int32))
        logps = logps.at[:, t].set(jnp.take_along_axis(logp_all, tok[:, None], axis=-1)[:, 0])
        return buf, logps, rng

    logps0 = jnp.zeros((b, num_new_tokens), jnp.float32)
    buf, logps, _ = jax.lax.fori_loop(0, num_new_tokens, body, (buf, logps0, rng))
    return buf[:, p:], logps
