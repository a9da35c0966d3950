"""Causal-LM objectives as `fit_small` losses: pretraining, sequence DPO and on-policy GRPO.

The LM recipes (`alignax.algorithms.sft`, `direct`, `policy_gradient`) train one model with a
data pipeline, a mesh and a rollout loop. A toy that needs a tiny transformer for many seeds at
once (the representation-geometry experiment: pretraining, then DPO and GRPO from the same
checkpoint) runs instead through `alignax.train.small.fit_small`, which vmaps every seed into one
compiled program. The losses here are `loss_fn(params, batch) -> (loss, metrics)` for
`fit_small(has_aux=True)`, on fixed-length rows without padding; `apply_fn` is an alignax causal
LM's `apply` (`alignax.models.transformer.make_lm`), or anything with its signature.

- `next_token_loss`: mean next-token negative log-likelihood of [B, T] rows.
- `sequence_dpo_loss`: DPO (`alignax.losses.direct.dpo_loss`) on [B, P + R] chosen / rejected
  rows sharing a prompt of P tokens, with the reference's response log-probs precomputed in the
  batch; optional per-pair weights (0 drops a pair, e.g. a tie).
- `grpo_loss`: GRPO (Shao et al. 2024, arXiv 2402.03300) with one update per batch of fresh
  samples: n responses per prompt drawn from the current policy inside the loss
  (`alignax.sampling.naive.sample_continuations`), a verifiable reward, group-normalised
  advantages (`alignax.algorithms.online.ADVANTAGES`), the policy-gradient surrogate
  -mean_i,t A_i log pi(y_it) (on-policy, so the PPO ratio is 1 and its clip is inactive: this
  is the GRPO gradient) and the k3 estimate of KL(pi || ref) per token, weighted by kl_coef.
- `sampled_response_metrics`: the policy's mean verifiable reward and its mean next-token entropy
  along its own samples (the "output entropy").
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp

from alignax import ops
from alignax.algorithms.online import compute_advantages, response_logits
from alignax.losses.direct import dpo_loss
from alignax.sampling.naive import sample_continuations

ApplyFn = Callable[..., jax.Array]
RewardFn = Callable[[jax.Array, jax.Array, Any], jax.Array]


def _ones(ids):
    return jnp.ones(ids.shape, bool)


def next_token_loss(apply_fn: ApplyFn) -> Callable[[Any, jax.Array], tuple[jax.Array, dict]]:
    """`loss_fn(params, ids [B, T]) -> (mean NLL of tokens 2..T, {"nll"})`."""

    def loss_fn(params, ids):
        logits = apply_fn(params, ids, _ones(ids))
        nll = -jnp.mean(ops.token_logprobs(logits[:, :-1], ids[:, 1:]))
        return nll, {"nll": nll}

    return loss_fn


def response_logps(apply_fn: ApplyFn, params, ids: jax.Array, response_len: int) -> jax.Array:
    """Log-probs [N, R] of the last R tokens of unpadded rows ids [N, P + R]."""
    logits = response_logits(apply_fn, params, ids, _ones(ids), response_len)
    return ops.token_logprobs(logits, ids[:, -response_len:])


def sequence_dpo_loss(apply_fn: ApplyFn, *, response_len: int, beta: float = 0.1
                      ) -> Callable[[Any, dict], tuple[jax.Array, dict]]:
    """DPO on token rows.

    The batch: "chosen", "rejected" [B, P + R] (the same prompt, different responses),
    "ref_chosen", "ref_rejected" [B] (the reference's summed response log-probs) and optionally
    "weight" [B] (the loss is the weighted mean; 0 drops a pair). One forward runs both halves.
    Metrics: "accuracy" (implicit reward of chosen > rejected), "margin" (beta * mean margin),
    "pairs" (sum of the weights).
    """

    def loss_fn(params, batch):
        rows = jnp.concatenate([batch["chosen"], batch["rejected"]], axis=0)
        logps = response_logps(apply_fn, params, rows, response_len).sum(-1)
        b = batch["chosen"].shape[0]
        losses, m = dpo_loss(logps[:b], logps[b:], batch["ref_chosen"], batch["ref_rejected"],
                             beta=beta)
        w = batch.get("weight", jnp.ones((b,), jnp.float32)).astype(jnp.float32)
        total = jnp.maximum(jnp.sum(w), 1e-6)
        margin = m["chosen_rewards"] - m["rejected_rewards"]
        return jnp.sum(w * losses) / total, {
            "accuracy": jnp.sum(w * (margin > 0)) / total,
            "margin": jnp.sum(w * margin) / total, "pairs": jnp.sum(w)}

    return loss_fn


def grpo_loss(apply_fn: ApplyFn, reward_fn: RewardFn, *, response_len: int, num_samples: int,
              temperature: float = 1.0, kl_coef: float = 0.0, advantage: str = "grpo"
              ) -> Callable[[Any, dict], tuple[jax.Array, dict]]:
    """On-policy GRPO: sample, score, group-normalise, one policy-gradient step.

    The batch: "rng" (the update's key), "prompts" [M, P], "reward_data" (passed to
    `reward_fn(prompts [N, P], responses [N, R], reward_data) -> [N]`, N = M * num_samples, rows
    prompt-major) and, with kl_coef > 0, "ref_params" (the frozen reference).
    Metrics: "reward" (mean), "entropy" (mean next-token entropy along the samples), "kl" (mean
    k3 estimate per token; 0 without a reference), "solved" (fraction of groups whose rewards
    all equal the maximum 1, where the group advantage vanishes).
    """
    if num_samples < 2:
        raise ValueError(f"num_samples must be >= 2 (group baseline), got {num_samples}")

    def loss_fn(params, batch):
        prompts = jnp.repeat(batch["prompts"], num_samples, axis=0)
        responses, _ = sample_continuations(apply_fn, jax.lax.stop_gradient(params), prompts,
                                            batch["rng"], num_new_tokens=response_len,
                                            temperature=temperature)
        responses = jax.lax.stop_gradient(responses)
        ids = jnp.concatenate([prompts, responses], axis=1)
        rewards = jax.lax.stop_gradient(
            reward_fn(prompts, responses, batch.get("reward_data")).astype(jnp.float32))
        adv = compute_advantages(advantage, rewards, num_samples)
        logits = response_logits(apply_fn, params, ids, _ones(ids), response_len)
        logp = ops.token_logprobs(logits, responses)  # [N, R]
        loss = -jnp.mean(adv[:, None] * logp)
        kl = jnp.float32(0.0)
        if kl_coef:
            ref = jax.lax.stop_gradient(
                response_logps(apply_fn, batch["ref_params"], ids, response_len))
            kl = jnp.mean(ops.kl_estimate(logp, ref, "k3"))
            loss = loss + kl_coef * kl
        groups = rewards.reshape(-1, num_samples)
        return loss, {"reward": rewards.mean(),
                      "entropy": jnp.mean(ops.token_entropy(jax.lax.stop_gradient(logits))),
                      "kl": jax.lax.stop_gradient(kl),
                      "solved": jnp.mean(jnp.all(groups >= 1.0, axis=1))}

    return loss_fn


def sampled_response_metrics(apply_fn: ApplyFn, params, prompts: jax.Array, rng: jax.Array,
                             reward_fn: RewardFn, *, response_len: int, reward_data: Any = None,
                             temperature: float = 1.0) -> dict[str, jax.Array]:
    """One response per prompt [M, P] sampled from the policy: {"reward": mean reward,
    "entropy": mean next-token entropy (nats) of the policy at the response positions along
    its own samples}."""
    responses, _ = sample_continuations(apply_fn, params, prompts, rng,
                                        num_new_tokens=response_len, temperature=temperature)
    ids = jnp.concatenate([prompts, responses], axis=1)
    logits = response_logits(apply_fn, params, ids, _ones(ids), response_len)
    return {"reward": jnp.mean(reward_fn(prompts, responses, reward_data)),
            "entropy": jnp.mean(ops.token_entropy(logits))}
