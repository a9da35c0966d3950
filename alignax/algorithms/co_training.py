"""A policy and a reward model trained together in one loop (Cooper, arXiv 2508.05613).

The params are one dict {"policy": ..., "rm": ...} and one loss adds

- the GRPO surrogate of the policy (`alignax.algorithms.small_pg.group_pg_loss`) with rewards
  from the reward model's current params, under `stop_gradient` (the RM is not trained to
  please the policy), and
- the reward model's own loss on the same rollouts,

so `alignax.train.small.fit_small` updates both every step, in one program, checkpointed and
resumed together. Cooper's RM loss is `verified_contrastive_rm_loss`: positives are the
rollouts a high-precision rule verifier marks correct, negatives are corruptions of those
correct solutions into incorrect ones (`corrupt_answer_token`, the toy's stand-in for the
assistant LLM that rewrites a correct solution into a wrong one), and the loss is
-log sigma(r(y+) - r(y-)). With `rm_loss_fn=None` the RM is frozen (static-RM GRPO), and a
`reward_fn` that ignores the RM gives rule-only GRPO, so all three arms run through one loss.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp

from alignax.algorithms.small_pg import group_pg_loss


def contrastive_rm_loss(pos_scores, neg_scores, mask) -> tuple[jax.Array, dict]:
    """Masked mean of -log sigma(r(y+) - r(y-)) over the pairs where `mask` is true.

    pos_scores, neg_scores, mask: [...] (broadcast). Returns (loss, metrics) with the loss 0
    (and no gradient) where no pair is available; metrics: "pairs" (how many), "pair_accuracy"
    (fraction of available pairs with r(y+) > r(y-), 0 without pairs).
    """
    mask = jnp.asarray(mask, jnp.float32)
    margin = jnp.asarray(pos_scores, jnp.float32) - jnp.asarray(neg_scores, jnp.float32)
    count = mask.sum()
    denom = jnp.maximum(count, 1.0)
    loss = jnp.sum(mask * -jax.nn.log_sigmoid(margin)) / denom
    acc = jnp.sum(mask * (margin > 0)) / denom
    return loss, {"pairs": count, "pair_accuracy": jax.lax.stop_gradient(acc)}


def corrupt_answer_token(key: jax.Array, tokens, position: int, answer, vocab_size: int
                         ) -> jax.Array:
    """Rewrites correct solutions into incorrect ones: token `position` of `tokens` [..., L]
    (holding the correct `answer` [...]) is replaced by a token drawn uniformly from the
    other V - 1 tokens. Returns the corrupted tokens [..., L] (int32)."""
    tokens = jnp.asarray(tokens, jnp.int32)
    answer = jnp.asarray(answer, jnp.int32)
    shift = jax.random.randint(key, answer.shape, 1, vocab_size)  # never 0: never the answer
    wrong = (answer + shift) % vocab_size
    return tokens.at[..., position].set(wrong)


def verified_contrastive_rm_loss(score_fn: Callable[[Any, Any, jax.Array, Any], jax.Array],
                                 verifier_fn: Callable[[Any, jax.Array, Any], jax.Array],
                                 negative_fn: Callable[[jax.Array, Any, jax.Array, Any],
                                                       jax.Array]):
    """Cooper's RM update as an `rm_loss_fn` of `co_trained_grpo_loss`.

    Args:
      score_fn: `(rm_params, prompts, responses, data) -> [M, G]` the RM's scores (logits).
      verifier_fn: `(prompts, responses, data) -> [M, G]` bool, the high-precision rule
        verifier (positives are the rollouts it accepts).
      negative_fn: `(key, prompts, responses, data) -> responses [M, G]`: an incorrect
        rewrite of each response (only those of the positives are used).

    Returns:
      `rm_loss_fn(rm_params, key, prompts, responses, data) -> (loss, metrics)`: the masked
      mean of -log sigma(r(y+) - r(y-)) over the verified rollouts (`contrastive_rm_loss`).
    """

    def rm_loss_fn(rm_params, key, prompts, responses, data):
        positive = jax.lax.stop_gradient(verifier_fn(prompts, responses, data))
        negatives = jax.lax.stop_gradient(negative_fn(key, prompts, responses, data))
        pos = score_fn(rm_params, prompts, responses, data)
        neg = score_fn(rm_params, prompts, negatives, data)
        return contrastive_rm_loss(pos, neg, positive)

    return rm_loss_fn


def co_trained_grpo_loss(sample_fn: Callable[[Any, jax.Array, Any, int], jax.Array],
                         log_prob_fn: Callable[[Any, Any, jax.Array], jax.Array],
                         reward_fn: Callable[[Any, Any, jax.Array, Any], Any],
                         rm_loss_fn: Callable[..., tuple[jax.Array, dict]] | None, *,
                         group_size: int, advantage: Any = "grpo", kl_coef: float = 0.0,
                         kl_fn: Callable[[Any, Any, jax.Array, Any], jax.Array] | None = None,
                         prompt_fn: Callable[[jax.Array, Any], Any] | None = None,
                         rm_coef: float = 1.0,
                         ) -> Callable[[Any, dict], tuple[jax.Array, dict]]:
    """GRPO on a policy rewarded by a reward model, and the reward model's loss on the same
    rollouts, as one loss over params {"policy": ..., "rm": ...}.

    Each update draws prompts (`prompt_fn(key, data)`, default `data["prompts"]`) and G
    responses per prompt from the current policy, scores them with `reward_fn` under the RM's
    current params (stop_gradient), and returns

        L = L_GRPO(policy) + rm_coef * L_RM(rm; the same prompts and responses).

    Args:
      sample_fn, log_prob_fn, kl_fn, group_size, advantage, kl_coef: as in
        `alignax.algorithms.small_pg.group_pg_loss`, for the policy's params.
      reward_fn: `(rm_params, prompts, responses, data) -> [M, G]` or `(rewards, metrics)`:
        the policy's reward (a reward model's score, or a rule that ignores rm_params).
      rm_loss_fn: `(rm_params, key, prompts, responses, data) -> (loss, metrics)`, e.g.
        `verified_contrastive_rm_loss(...)`; None freezes the RM (it gets no gradient).
      prompt_fn: `(key, data) -> prompts`.
      rm_coef: weight of the RM's loss.

    Returns:
      `loss_fn(params, batch) -> (loss, metrics)` for `fit_small(has_aux=True,
      batch_fn=small_pg.rl_batch)`; metrics: the policy's ("reward", "kl", "reward_std", the
      reward function's "reward_*"), "pg_loss", and the RM's prefixed "rm_" ("rm_loss", ...).
    """

    def loss_fn(params, batch):
        data = batch.get("data")
        k_prompt, k_sample, k_rm = jax.random.split(batch["rng"], 3)
        prompts = data["prompts"] if prompt_fn is None else prompt_fn(k_prompt, data)
        responses = jax.lax.stop_gradient(
            sample_fn(jax.lax.stop_gradient(params["policy"]), k_sample, prompts, group_size))
        frozen_rm = jax.lax.stop_gradient(params["rm"])
        # the update's rollouts ride in the "prompts" pytree, so the GRPO loss scores exactly
        # the responses the RM is trained on
        drawn = {"prompts": prompts, "responses": responses}
        pg = group_pg_loss(
            lambda p, key, x, n: x["responses"],
            lambda p, x, y: log_prob_fn(p, x["prompts"], y),
            lambda x, y, d: reward_fn(frozen_rm, x["prompts"], y, d),
            group_size=group_size, advantage=advantage, kl_coef=kl_coef,
            kl_fn=None if kl_fn is None else (lambda p, x, y, d: kl_fn(p, x["prompts"], y, d)),
            prompt_fn=lambda key, d: drawn)
        pg_loss, metrics = pg(params["policy"], {"rng": k_rm, "data": data})
        metrics = dict(metrics, pg_loss=jax.lax.stop_gradient(pg_loss))
        loss = pg_loss
        if rm_loss_fn is not None:
            rm_loss, rm_metrics = rm_loss_fn(params["rm"], k_rm, prompts, responses, data)
            loss = loss + rm_coef * rm_loss
            metrics["rm_loss"] = jax.lax.stop_gradient(rm_loss)
            metrics.update({f"rm_{k}": jax.lax.stop_gradient(v) for k, v in rm_metrics.items()})
        return loss, metrics

    return loss_fn


def self_judged_grpo_loss(sample_fn: Callable[[Any, jax.Array, Any, int], jax.Array],
                          log_prob_fn: Callable[[Any, Any, jax.Array], jax.Array],
                          reward_fn: Callable[[Any, Any, jax.Array, Any], Any], *,
                          group_size: int,
                          prompt_fn: Callable[[jax.Array, Any, Any], Any],
                          advantage: Any = "grpo", kl_coef: float = 0.0,
                          kl_fn: Callable[[Any, Any, jax.Array, Any], jax.Array] | None = None,
                          ) -> Callable[[Any, dict], tuple[jax.Array, dict]]:
    """GRPO for one model in two roles, player and referee (URPO, arXiv 2507.17515).

    Like `small_pg.group_pg_loss`, but the update's prompts and the rewards may use the model's
    own current params (under `stop_gradient`): `prompt_fn(key, params, data)` can build
    judging prompts from pairs the model itself generates, and `reward_fn(params, prompts,
    responses, data)` can score a group of open-ended responses with the model's referee role.
    Every prompt type (verifiable, judging, open-ended) goes through the same GRPO surrogate of
    the same params: the referee is trained by the GRPO rewards of its verdicts, the player by
    those of its answers.

    Args:
      sample_fn, log_prob_fn, group_size, advantage, kl_coef, kl_fn: as in `group_pg_loss`.
      reward_fn: `(params, prompts, responses, data) -> [M, G]` or `(rewards, metrics)`;
        params are the detached current params.
      prompt_fn: `(key, params, data) -> prompts`.

    Returns:
      `loss_fn(params, batch) -> (loss, metrics)` for `fit_small(has_aux=True,
      batch_fn=small_pg.rl_batch)`, with `group_pg_loss`'s metrics.
    """

    def loss_fn(params, batch):
        data = batch.get("data")
        k_prompt, k_rest = jax.random.split(batch["rng"])
        frozen = jax.lax.stop_gradient(params)
        prompts = prompt_fn(k_prompt, frozen, data)
        pg = group_pg_loss(sample_fn, log_prob_fn,
                           lambda x, y, d: reward_fn(frozen, x, y, d),
                           group_size=group_size, advantage=advantage, kl_coef=kl_coef,
                           kl_fn=kl_fn, prompt_fn=lambda key, d: prompts)
        return pg(params, {"rng": k_rest, "data": data})

    return loss_fn
