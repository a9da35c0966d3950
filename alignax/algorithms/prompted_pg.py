"""REINFORCE with a KL penalty for small explicit policies conditioned on a prompt.

`alignax.algorithms.small_pg.reinforce_loss` is the one-step bandit (no prompt, a reference
shared by every seed). RLHF on a toy language model draws prompts, samples several responses
per prompt from the current policy, and scores them with a reward in which the KL to the
reference policy is subtracted, r(x, y) - beta (log pi(y|x) - log pi_ref(y|x)); the advantage of
each response is its shaped reward minus the leave-one-out mean of the other responses to the
same prompt (RLOO, Ahmadian et al. 2024). Here the reference params, the training prompts, the
reward's own inputs (a gold table, a reward model's params) and, optionally, beta itself come
per seed through `fit_small(per_seed_data=True)`, so one program trains several seeds, several
reward models or a sweep of KL coefficients (one row each).
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp


def prompted_reinforce_loss(
    sample_fn: Callable[[Any, jax.Array, jax.Array, int], jax.Array],
    log_prob_fn: Callable[[Any, jax.Array, jax.Array], jax.Array],
    reward_fn: Callable[[jax.Array, jax.Array, Any], jax.Array],
    *,
    num_prompts: int,
    num_samples: int,
    kl_coef: float = 0.0,
) -> Callable[[Any, dict], tuple[jax.Array, dict]]:
    """RLOO on prompts with the KL to a reference in the reward, for `fit_small`.

    Each update draws `num_prompts` prompts uniformly (with replacement) from
    `data["prompts"]`, `num_samples` responses per prompt from the current policy, and
    minimises -mean_{x, i} A_i(x) log pi(y_i | x) with
    A_i = s_i - mean_{j != i} s_j, s_i = r(x, y_i) - beta (log pi(y_i|x) - log pi_ref(y_i|x))
    (gradients are stopped through s). Its gradient is an unbiased estimate of the gradient of
    E_x [E_pi r - beta KL(pi(.|x) || pi_ref(.|x))].

    Args:
      sample_fn: `(params, prompts [B, ...], key, n) -> y [B, n, ...]` samples.
      log_prob_fn: `(params, prompts [B, ...], y [B, n, ...]) -> [B, n]` log pi(y | x),
        differentiable in params (also called with the reference params).
      reward_fn: `(prompts, y, data) -> [B, n]` rewards (no gradient is taken through it).
      num_prompts: prompts per update (B).
      num_samples: responses per prompt (>= 2, the baseline leaves one out).
      kl_coef: beta; `data["kl_coef"]` (a scalar per seed row) overrides it, e.g. to train a
        sweep of coefficients as rows of one program.

    Returns:
      `loss_fn(params, batch) -> (loss, metrics)` for `fit_small(has_aux=True,
      batch_fn=alignax.algorithms.small_pg.rl_batch)`; `batch["data"]` holds "prompts" [P, ...],
      "ref_params" (needed when beta may be > 0) and what `reward_fn` reads. Metrics: "reward"
      (mean raw reward of the samples), "kl" (mean log pi - log pi_ref of the samples, an
      unbiased estimate of the KL), "objective" (reward - beta kl).
    """
    if num_samples < 2:
        raise ValueError(f"num_samples must be >= 2 (leave-one-out baseline), got {num_samples}")
    if num_prompts < 1:
        raise ValueError(f"num_prompts must be >= 1, got {num_prompts}")

    def loss_fn(params, batch):
        data = batch["data"]
        k_prompt, k_sample = jax.random.split(batch["rng"])
        prompts = data["prompts"]
        idx = jax.random.randint(k_prompt, (num_prompts,), 0, prompts.shape[0])
        x = prompts[idx]
        y = jax.lax.stop_gradient(sample_fn(params, x, k_sample, num_samples))
        logp = log_prob_fn(params, x, y)  # [B, n]
        reward = jax.lax.stop_gradient(reward_fn(x, y, data))
        beta = jnp.asarray(data.get("kl_coef", kl_coef), jnp.float32)
        if "ref_params" in data:
            kl = jax.lax.stop_gradient(logp - log_prob_fn(data["ref_params"], x, y))
        else:
            kl = jnp.zeros_like(reward)
        shaped = reward - beta * kl
        baseline = (shaped.sum(1, keepdims=True) - shaped) / (num_samples - 1)
        advantage = jax.lax.stop_gradient(shaped - baseline)
        loss = -jnp.mean(advantage * logp)
        return loss, {"reward": reward.mean(), "kl": kl.mean(), "objective": shaped.mean()}

    return loss_fn
