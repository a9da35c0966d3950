"""Hybrid multi-aspect rewards: a model reward, rule rewards and a generalised length penalty.

Paper: "Beyond Monolithic Rewards: A Hybrid and Multi-Aspect Reward Optimization for MLLM
Alignment" (2025; the ## 30 notes). The reward of a response y to a prompt x combines

    R = w_m r_model(x, y) + w_r c 1[rule-verified correct] + w_i r_instr(x, y) + r_len(y)

(`hybrid_reward`): a learned reward model's score (scalar or, averaged, a vector), a verifier's
pass/fail with its confidence c where a verifier exists for the prompt (0 elsewhere), a
format / instruction-adherence rule and a generalised length penalty
(`generalized_length_penalty`). All functions are pure jax and vectorised (usable inside a
jitted GRPO loss, e.g. the `reward_fn` of `alignax.algorithms.small_pg.group_pg_loss`).

`eos_lengths` gives the length of fixed-length token rows that stop at an end token (the
`alignax.models.sequence_table` toys: the tokens after the first end token are ignored).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def eos_lengths(tokens, eos: int = 0) -> jax.Array:
    """[...] the number of tokens before the first `eos` of rows tokens [..., L] (L if none)."""
    tokens = jnp.asarray(tokens)
    is_eos = tokens == eos
    first = jnp.argmax(is_eos, axis=-1)
    return jnp.where(jnp.any(is_eos, axis=-1), first, tokens.shape[-1]).astype(jnp.int32)


def generalized_length_penalty(length, target, *, scale: float = 1.0, tolerance: float = 0.0,
                               power: float = 1.0, two_sided: bool = False) -> jax.Array:
    """r_len = -scale * max(0, d - tolerance)^power, d the relative deviation from `target`.

    d = (L - target) / target (one-sided: only responses longer than the target are penalised;
    shorter ones get 0) or |L - target| / target (`two_sided`). `tolerance` is a free band
    (e.g. 0.2: up to 20% over the target costs nothing) and `power` shapes the penalty (1:
    linear, 2: quadratic). power = 1, tolerance = 0, two_sided gives
    `alignax.rewards.rules.length_penalty`'s -scale |L - target| / target.

    Args:
      length: [...] response lengths.
      target: scalar or [...] the target length (e.g. the SFT policy's mean length), > 0.
    """
    length = jnp.asarray(length, jnp.float32)
    target = jnp.asarray(target, jnp.float32)
    d = (length - target) / target
    d = jnp.abs(d) if two_sided else d
    return -scale * jnp.maximum(d - tolerance, 0.0) ** power


def hybrid_reward(model_reward, verified, instruction, length_penalty=None, *,
                  w_model: float = 1.0, w_rule: float = 1.0, w_instr: float = 1.0,
                  confidence=1.0, has_verifier=None) -> tuple[jax.Array, dict]:
    """R = w_m r_model + w_r c 1[verified] + w_i r_instr + r_len, elementwise.

    Args:
      model_reward: [...] the reward model's score, or [..., K] a vector RM (averaged over K).
      verified: [...] bool / {0, 1}: the rule verifier accepts the response.
      instruction: [...] the format / instruction-adherence reward.
      length_penalty: [...] r_len (`generalized_length_penalty`), or None for none.
      w_model, w_rule, w_instr: the weights.
      confidence: scalar or [...] the verifier's confidence c in [0, 1].
      has_verifier: [...] bool, where a verifier exists (the rule term is 0 elsewhere); None:
        everywhere.

    Returns:
      (R [...], components {"model", "rule", "instr", "length"} each [...], unweighted but
      with the rule term c 1[verified] masked by has_verifier).
    """
    model = jnp.asarray(model_reward, jnp.float32)
    verified = jnp.asarray(verified, jnp.float32)
    if model.ndim == verified.ndim + 1:
        model = model.mean(-1)
    rule = jnp.asarray(confidence, jnp.float32) * verified
    if has_verifier is not None:
        rule = jnp.where(jnp.asarray(has_verifier, bool), rule, 0.0)
    instr = jnp.asarray(instruction, jnp.float32)
    length = (jnp.zeros_like(model) if length_penalty is None
              else jnp.asarray(length_penalty, jnp.float32))
    total = w_model * model + w_rule * rule + w_instr * instr + length
    return total, {"model": model, "rule": rule, "instr": instr, "length": length}
