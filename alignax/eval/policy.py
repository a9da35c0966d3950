"""Policy evaluation against a gold reward: reward of samples and KL to the reference."""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from alignax.eval.metrics import win_rate
from alignax.sampling.naive import sample_continuations


def sequence_kl(policy_logits, ref_logits, mask) -> jax.Array:
    """Sum over masked positions of KL(pi(.|prefix) || ref(.|prefix)). [B, T, V] x2, [B, T] -> [B].

    Along prefixes sampled from pi this is an unbiased, low-variance estimate of the sequence-level
    KL(pi || ref) (the exact per-token KL replaces the single-sample log-ratio).
    """
    logp = jax.nn.log_softmax(policy_logits.astype(jnp.float32), axis=-1)
    logq = jax.nn.log_softmax(ref_logits.astype(jnp.float32), axis=-1)
    kl_t = jnp.sum(jnp.exp(logp) * (logp - logq), axis=-1)
    return jnp.sum(kl_t * mask, axis=-1)


def make_policy_eval(
    apply_fn: Callable,
    ref_params,
    prompts: jax.Array,
    gold_reward_fn: Callable[[jax.Array], jax.Array],
    *,
    num_new_tokens: int,
    seed: int = 0,
    prefix_ids: jax.Array | None = None,
    reward_uses_prompts: bool = False,
) -> Callable:
    """Jitted `params -> metrics` for a policy on fixed prompts with a fixed sampling key.

    Metrics: `gold_reward` (mean gold reward of the policy's samples), `ref_gold_reward` (the same
    for the reference, same key), `gold_gain` (difference), `win_rate` (fraction of prompts where
    the policy's sample beats the reference's in gold reward, ties 1/2), `kl_ref` (sequence
    KL(pi || ref) along the policy's samples), `logp` (mean summed log-prob of the samples).

    Args:
      apply_fn: LM apply `(params, ids, mask) -> logits`.
      ref_params: reference policy params.
      prompts: [N, P] int prompts.
      gold_reward_fn: responses [N, R] -> [N] gold rewards (jax-traceable); with
        `reward_uses_prompts`, `(responses, prompts [N, P]) -> [N]` (e.g. a gold RM).
      num_new_tokens: R.
      seed: sampling seed (the same for policy and reference).
      prefix_ids: optional [N, Q] ids put before the prompt (e.g. bos).
    """
    # Inputs stay numpy constants and params are arguments, so the jitted functions work on
    # sharded (also multi-process) params without embedding them in the program.
    prompts = raw = np.asarray(prompts, np.int32)
    if prefix_ids is not None:
        prompts = np.concatenate([np.asarray(prefix_ids, np.int32), prompts], axis=1)
    p = prompts.shape[1]

    def gold_of(tokens):
        return gold_reward_fn(tokens, raw) if reward_uses_prompts else gold_reward_fn(tokens)

    def stats(params):
        key = jax.random.key(seed)
        tokens, logps = sample_continuations(
            apply_fn, params, prompts, key, num_new_tokens=num_new_tokens
        )
        return tokens, logps, gold_of(tokens)

    ref_gold = jax.jit(lambda ref: stats(ref)[2])(ref_params)

    @jax.jit
    def _evaluate(params, ref_params, ref_gold):
        tokens, logps, gold = stats(params)
        ids = jnp.concatenate([prompts, tokens], axis=1)
        mask = jnp.ones_like(ids, bool)
        # logits at position t predict token t+1: the response tokens are predicted from p-1 on.
        pos = jnp.arange(ids.shape[1])
        response_pred = ((pos >= p - 1) & (pos < ids.shape[1] - 1))[None, :]
        kl = sequence_kl(apply_fn(params, ids, mask), apply_fn(ref_params, ids, mask),
                         response_pred.astype(jnp.float32))
        return {
            "gold_reward": gold.mean(),
            "ref_gold_reward": ref_gold.mean(),
            "gold_gain": gold.mean() - ref_gold.mean(),
            "win_rate": win_rate(gold, ref_gold),
            "kl_ref": kl.mean(),
            "logp": logps.sum(-1).mean(),
        }

    def evaluate(params):
        return _evaluate(params, ref_params, ref_gold)

    return evaluate
