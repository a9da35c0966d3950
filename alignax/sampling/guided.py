"""Reward-guided decoding: GenARM's autoregressive-RM guidance and ARGS-style partial scoring.

- `sample_guided` (defined in `alignax.sampling.sampler`, whose scan it shares): every token is
  drawn from pi~ proportional to pi_base prod_i pi_r_i^(alpha_i / beta), with K autoregressive
  reward models (ARMs) beside the base, each with its own KV cache (Xu et al. 2024, "GenARM:
  Reward Guided Generation with Autoregressive Reward Model for Test-time Alignment", arXiv
  2410.08193). The log-prob guarantee of the guided case is in the sampler's module docstring:
  `logps` are pi~'s own (temperature 1, untruncated), `base_logps` the base's, `guide_logps` each
  ARM's (their masked sums are the ARM rewards, `arm_rewards`).
- `make_guided_rollout`: the same as a `Rollout` for the online recipes and evaluators
  (`old_logps` = the guided distribution's log-probs, the behaviour policy of the samples).
- `args_sample`: ARGS-style guidance (Khanov et al. 2024, "ARGS: Alignment as Reward-Guided
  Search", arXiv 2402.01694), the trajectory-RM baseline GenARM is compared with: at every step
  the base's top-k tokens are rescored by log pi_base(v) + w r([x, y_<t, v]), a scalar reward
  model applied to each partial sequence, and the token is drawn from the softmax over them.

Compute per generated token (forward passes of one token position, the unit of the GenARM
paper's cost comparison): `sample` 1 base; `sample_guided` 1 base + K ARMs (each its own
size); `args_sample` one cache-free base forward over the whole prefix plus k reward-model
forwards over whole prefixes; best-of-n n base per token plus n trajectory-RM forwards per
sequence.

Shapes: B prompts, n samples per prompt, P prompt length, N new tokens, K guides, V vocabulary.
"""

from __future__ import annotations

from typing import Callable, Sequence

import jax
import jax.numpy as jnp

from alignax.models.transformer import Model
from alignax.sampling.sampler import (GuidedSampleOutput, categorical, left_align,
                                      sample_guided)
from alignax.types import Rollout

__all__ = ["GuidedSampleOutput", "args_sample", "arm_rewards", "make_guided_rollout",
           "sample_guided"]


def arm_rewards(out: GuidedSampleOutput) -> jax.Array:
    """ARM rewards of guided samples: r_i(x, y) = sum_t log pi_r_i(y_t | x, y_<t) over the
    valid tokens, [K, B*n] float32 (GenARM's reward parametrisation, arXiv 2410.08193)."""
    return jnp.sum(jnp.where(out.mask[None], out.guide_logps, 0.0), axis=-1)


def make_guided_rollout(model: Model, guides: Sequence[Model], *, num_samples: int,
                        max_new_tokens: int, temperature: float = 1.0, top_k: int = 0,
                        top_p: float = 1.0, stop_tokens=(), pad_id: int = 0
                        ) -> Callable[..., tuple[Rollout, jax.Array, jax.Array]]:
    """`rollout(params, guide_params, weights [K], beta, prompt_ids, prompt_mask, rng) ->
    (Rollout, base_logps [B*n, N], arm_rewards [K, B*n])` with `sample_guided`.

    The Rollout's `old_logps` are the guided distribution's own log-probs of the sampled tokens
    (the behaviour policy), `base_logps` the base model's (0 off the response mask)."""
    guides = tuple(guides)
    stop_tokens = tuple(int(t) for t in stop_tokens)

    def rollout(params, guide_params, weights, beta, prompt_ids, prompt_mask, rng):
        out = sample_guided(model, params, guides, tuple(guide_params), weights, beta,
                            jnp.asarray(prompt_ids), jnp.asarray(prompt_mask), rng,
                            max_new_tokens=max_new_tokens, num_samples=num_samples,
                            temperature=temperature, top_k=top_k, top_p=top_p,
                            stop_tokens=stop_tokens, pad_id=pad_id)
        ro = Rollout(ids=jnp.concatenate([out.prompt_ids, out.tokens], axis=1),
                     mask=jnp.concatenate([out.prompt_mask, out.mask], axis=1),
                     response_mask=out.mask, old_logps=jnp.where(out.mask, out.logps, 0.0),
                     prompt_index=out.prompt_index)
        return ro, jnp.where(out.mask, out.base_logps, 0.0), arm_rewards(out)

    return rollout


def args_sample(model: Model, params, reward_model: Model, reward_params, weight,
                prompt_ids: jax.Array, prompt_mask: jax.Array, rng: jax.Array, *,
                max_new_tokens: int, top_k: int = 8, num_samples: int = 1,
                greedy: bool = False) -> Rollout:
    r"""ARGS-style decoding: the base's top-k tokens rescored by a trajectory RM on prefixes.

    .. math::
        s_t(v) = \log\pi_{base}(v \mid x, y_{<t}) + w\, r([x, y_{<t}, v]), \quad
        v \in \text{top-}k(\pi_{base}(\cdot \mid x, y_{<t})), \quad
        y_t \sim \mathrm{softmax}(s_t) \ (\text{argmax if greedy})

    Khanov et al. 2024, "ARGS: Alignment as Reward-Guided Search" (arXiv 2402.01694), eq. 1
    (their score adds w r to the base logit; the base log-prob differs by a constant per step,
    so the distribution is the same). The reward model is a sequence-level RM applied to
    partial responses (what it was not trained on: the mismatch GenARM's ARM removes). No KV
    cache: every step runs the base over the whole buffer [B*n, P + N] (masked) and the RM over
    B*n*k candidate prefixes, so a step costs about (1 + k) x (P + N) token positions; meant
    for short toy sequences. No stop tokens: every sample has N tokens.

    Args:
      model, params: the base causal LM.
      reward_model, reward_params: a scalar RM `apply(params, ids [M, T], mask) -> [M]` that
        reads the last valid token (padding invariant).
      weight: w >= 0, traced (a sweep reuses one program).
      prompt_ids, prompt_mask: [B, P], padded on either side.
      rng: PRNG key.
      max_new_tokens: N.
      top_k: candidates per step.
      num_samples: n per prompt.
      greedy: take the best-scored candidate instead of sampling.

    Returns:
      Rollout with `old_logps` the base model's own log-probs of the chosen tokens [B*n, N].
    """
    if top_k < 1 or top_k > model.config.vocab_size:
        raise ValueError(f"top_k must lie in [1, vocab_size], got {top_k}")
    ids, mask = left_align(prompt_ids.astype(jnp.int32), prompt_mask.astype(bool))
    ids, mask = jnp.repeat(ids, num_samples, axis=0), jnp.repeat(mask, num_samples, axis=0)
    m, p = ids.shape
    buf = jnp.concatenate([ids, jnp.zeros((m, max_new_tokens), jnp.int32)], axis=1)
    valid = jnp.concatenate([mask, jnp.zeros((m, max_new_tokens), bool)], axis=1)

    def step(carry, i):
        buf, valid, rng = carry
        rng, key = jax.random.split(rng)
        slot = p + i
        logits = model.apply(params, buf, valid)  # [M, S, V]
        logp = jax.nn.log_softmax(
            jax.lax.dynamic_index_in_dim(logits, slot - 1, axis=1, keepdims=False
                                         ).astype(jnp.float32), axis=-1)  # [M, V]
        cand_logp, cand = jax.lax.top_k(logp, top_k)  # [M, k]
        cand_buf = jnp.repeat(buf, top_k, axis=0).at[:, slot].set(cand.reshape(-1))
        cand_valid = jnp.repeat(valid, top_k, axis=0).at[:, slot].set(True)
        r = reward_model.apply(reward_params, cand_buf, cand_valid).reshape(m, top_k)
        score = cand_logp + weight * r.astype(jnp.float32)
        j = (jnp.argmax(score, axis=-1) if greedy else categorical(key, score))
        tok = jnp.take_along_axis(cand, j[:, None], axis=-1)[:, 0]
        tok_logp = jnp.take_along_axis(cand_logp, j[:, None], axis=-1)[:, 0]
        return (buf.at[:, slot].set(tok), valid.at[:, slot].set(True), rng), tok_logp

    (buf, valid, _), logps = jax.lax.scan(step, (buf, valid, rng), jnp.arange(max_new_tokens))
    b = prompt_ids.shape[0]
    return Rollout(ids=buf, mask=valid, response_mask=valid[:, p:], old_logps=logps.T,
                   prompt_index=jnp.repeat(jnp.arange(b, dtype=jnp.int32), num_samples))
