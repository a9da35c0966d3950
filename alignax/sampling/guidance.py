"""Token-level guidance: combine a base model's next-token distribution with reward models'.

The combination is a pure function of logits, so it slots into any decoding loop (one forward per
model per step, each with its own KV cache).
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp


def guided_logits(base_logits: jax.Array, reward_logits: jax.Array | Sequence[jax.Array], *,
                  beta: float = 1.0, weights: Sequence[float] | None = None) -> jax.Array:
    """GenARM decoding: log pi(y_t) = log pi_base(y_t) + sum_i (alpha_i / beta) log pi_r_i(y_t) + c.

    .. math::
        \\tilde\\pi(y_t \\mid x, y_{<t}) \\propto \\pi_{base}(y_t \\mid x, y_{<t})
            \\prod_i \\pi_{r_i}(y_t \\mid x, y_{<t})^{\\alpha_i / \\beta}

    `reward_logits` are the logits of autoregressive reward models (trained with
    `alignax.losses.autoregressive_rm_loss`), one array or a sequence for several objectives with
    `weights` alpha_i (default 1 each). Returns normalised log-probs, shape of `base_logits`
    ([..., V]), in float32; pass them to the sampler as logits. Xu et al. 2025, "GenARM" (arXiv
    2410.08193): with a single ARM this is the KL-regularised optimum pi_base exp(r / beta) / Z.
    """
    if beta <= 0:
        raise ValueError(f"beta must be positive, got {beta}")
    if not isinstance(reward_logits, (list, tuple)):
        reward_logits = [reward_logits]
    weights = [1.0] * len(reward_logits) if weights is None else list(weights)
    if len(weights) != len(reward_logits):
        raise ValueError(f"{len(weights)} weights for {len(reward_logits)} reward models")
    out = jax.nn.log_softmax(jnp.asarray(base_logits, jnp.float32), axis=-1)
    for w, logits in zip(weights, reward_logits):
        if jnp.shape(logits) != jnp.shape(base_logits):
            raise ValueError(f"reward logits {jnp.shape(logits)} do not match the base "
                             f"{jnp.shape(base_logits)}")
        out = out + (w / beta) * jax.nn.log_softmax(jnp.asarray(logits, jnp.float32), axis=-1)
    return jax.nn.log_softmax(out, axis=-1)
