"""Reward models learned by inverse RL from demonstrations, with the policy's own samples as
negatives, co-trained with a GRPO policy (DR-IRL).

Paper: "Inverse Reinforcement Learning with Dynamic Reward Scaling for LLM Alignment" (DR-IRL,
2025). Category-specific reward models r_c are learned from safe demonstrations y_demo with the
current policy's samples y ~ pi(.|x) as negatives, adversarial-IRL style:

    L_RM = E_x E_{y ~ pi(.|x)} [ -log sigma(r_c(x, y_demo) - r_c(x, y)) ]      (`irl_reward_loss`)

and the policy is optimised by GRPO (or GRPO-S, `alignax.algorithms.grpo_s`) on r_c. The
negatives must come from the current policy, so the reward model and the policy are trained
together: `irl_grpo_loss` is ONE `fit_small` loss over params {"policy": ..., "rm": ...} that,
every update, draws prompts and G responses each from the policy, takes the GRPO surrogate of
the policy with rewards from the stop-gradient RM (`small_pg.group_pg_loss`) and adds the RM's
IRL loss on the same rollouts (or on a batch of a separate demonstration set with fresh samples
of the current policy as negatives), so both models are updated every step and checkpointed
and resumed together.

Per-category routing (`route_by_category`): the RM params carry a leading [C] axis, one RM per
category, and each prompt is scored by its category's RM. `bilinear_reward` is a small RM
r(x, y) = phi(y) . (w + W^T e(x)) on response features phi(y) and prompt features e(x).
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp

from alignax.algorithms import grpo_s
from alignax.algorithms.small_pg import group_pg_loss


def irl_reward_loss(demo_rewards, policy_rewards) -> tuple[jax.Array, dict]:
    """IRL reward loss with on-policy negatives: -log sigma(r(x, y_demo) - r(x, y_i)).

    Args:
      demo_rewards: [M] r(x_m, y_demo_m).
      policy_rewards: [M, G] r(x_m, y_mi) of the policy's samples.

    Returns:
      (per-prompt loss [M] (mean over the G negatives), metrics: "irl_accuracy" (fraction of
      negatives scored below the demonstration), "irl_gap" (mean r_demo - r_policy)).
    """
    demo_rewards = jnp.asarray(demo_rewards, jnp.float32)
    policy_rewards = jnp.asarray(policy_rewards, jnp.float32)
    margin = demo_rewards[:, None] - policy_rewards
    loss = jnp.mean(jax.nn.softplus(-margin), axis=1)
    return loss, {"irl_accuracy": jnp.mean(margin > 0), "irl_gap": jnp.mean(margin)}


def route_by_category(params: Any, category) -> Any:
    """Each prompt's own reward-model params: leaves [C, ...] -> [M, ...] gathered at
    category [M] (int)."""
    category = jnp.asarray(category, jnp.int32)
    return jax.tree.map(lambda a: a[category], params)


def init_bilinear(num_categories: int, prompt_dim: int, response_dim: int) -> dict:
    """Zero params {"w": [C, H], "W": [C, D, H]} of C category-specific `bilinear_reward`s."""
    return {"w": jnp.zeros((num_categories, response_dim), jnp.float32),
            "W": jnp.zeros((num_categories, prompt_dim, response_dim), jnp.float32)}


def bilinear_reward(params: dict, prompt_features, response_features) -> jax.Array:
    """r(x, y) = phi(y) . (w + W^T e(x)) with per-prompt params (after `route_by_category`):
    w [M, H], W [M, D, H], prompt_features [M, D], response_features [M, K, H] -> [M, K]."""
    weight = params["w"] + jnp.einsum("md,mdh->mh", prompt_features, params["W"])
    return jnp.einsum("mkh,mh->mk", response_features, weight)


def _pick_demo(key, demos):
    """One demonstration [M, 1] of each prompt's demos [M, K], drawn uniformly."""
    pick = jax.random.randint(key, (demos.shape[0],), 0, demos.shape[1])
    return jnp.take_along_axis(demos, pick[:, None], axis=1)


def irl_grpo_loss(policy: tuple[Callable, Callable, Callable],
                  reward_model: Callable[[Any, dict, jax.Array], jax.Array], *,
                  num_prompts: int, group_size: int, advantage: str = "grpo",
                  scale_fn: Callable[[dict, jax.Array, Any], jax.Array] | None = None,
                  kl_coef: float = 0.0, rm_coef: float = 1.0, rm_l2: float = 0.0,
                  ) -> Callable[[dict, dict], tuple[jax.Array, dict]]:
    """One loss for a policy and its IRL reward model trained together (DR-IRL).

    Each update draws `num_prompts` rows of `data["prompts"]` uniformly (a pool whose category
    frequencies are the training distribution), one of each prompt's demonstrations, and G
    responses per prompt from the current policy; then

        L = L_GRPO(policy; r = stop_gradient(r_rm)) + rm_coef * L_IRL(rm; demo vs the G
            samples) + rm_l2 * |rm|^2.

    Args:
      policy: (sample_fn, log_prob_fn, kl_fn) of `small_pg.sequence_table_policy` (prompts are
        feature rows [M, F]; kl_fn reads `data["ref_params"]`).
      reward_model: `(rm_params, prompts, responses [M, K]) -> [M, K]`, prompts the dict of
        the drawn prompts' rows of `data["prompts"]` (e.g. route by prompts["category"]).
      num_prompts: M prompts per update.
      group_size: G responses per prompt (>= 2).
      advantage: the base group advantage (`alignax.algorithms.online.ADVANTAGES` name).
      scale_fn: `(prompts, gap [M], data) -> [M]` GRPO-S difficulty of the drawn prompts from
        the reward gap r(x, y_demo) - mean_i r(x, y_i) of the stop-gradient RM (e.g.
        `grpo_s.difficulty_scale`, with weights read from the seed's data so that GRPO,
        alpha = beta = 0, and GRPO-S can train in one vmapped program); None is plain GRPO.
      kl_coef: weight of the exact KL to the reference (0: none).
      rm_coef, rm_l2: weight of the IRL loss and an L2 penalty on the RM params.

    `data` (per seed): {"prompts": {"features": [P, F], "demos": [P, K_demo] int sequence
    indices, ... any other per-prompt leaves the reward model or scale_fn read}, "ref_params":
    the reference policy} and optionally "rm_prompts" (the same leaves): the demonstration set
    the RM learns from (e.g. balanced over categories, as DR-IRL's dataset, while the RL
    prompts keep their natural, imbalanced mix). With it, the RM's batch is `num_prompts`
    rows drawn uniformly from rm_prompts, one demonstration each, with G fresh samples of the
    current policy as negatives; without it, the RM learns on the RL batch's own rollouts.
    Returns `loss_fn(params, batch)` for `fit_small(has_aux=True,
    batch_fn=small_pg.rl_batch)` with params {"policy": ..., "rm": ...}; metrics: the GRPO
    metrics (reward, kl, reward_std), irl_loss, irl_accuracy, irl_gap, scale_max.
    """
    sample_fn, log_prob_fn, kl_fn = policy
    num_prompts = int(num_prompts)
    if scale_fn is None:
        adv = advantage
    else:
        adv = grpo_s.grpo_s_advantage(lambda rewards, d: d["_scale"], base=advantage)
    pg = group_pg_loss(
        lambda params, key, x, n: x["responses"],
        lambda params, x, y: log_prob_fn(params, x["features"], y),
        lambda x, y, d: reward_model(d["_rm"], x, y), group_size=group_size, advantage=adv,
        kl_coef=kl_coef,
        kl_fn=(lambda params, x, y, d: kl_fn(params, x["features"], y, d)) if kl_coef else None,
        prompt_fn=lambda key, d: d["_batch"])

    def loss_fn(params, batch):
        data = batch["data"]
        k_rows, k_demo, k_sample, k_pg, k_rm = jax.random.split(batch["rng"], 5)
        pool = data["prompts"]
        size = pool["features"].shape[0]
        rows = jax.random.randint(k_rows, (num_prompts,), 0, size)
        drawn = jax.tree.map(lambda a: a[rows], pool)
        demo = _pick_demo(k_demo, drawn["demos"])  # [M, 1]
        separate = "rm_prompts" in data
        if separate:  # the RM's batch of the demonstration set
            k_rm_rows, k_rm_demo = jax.random.split(k_rm)
            rm_pool = data["rm_prompts"]
            rm_rows = jax.random.randint(k_rm_rows, (num_prompts,), 0,
                                         rm_pool["features"].shape[0])
            rm_drawn = jax.tree.map(lambda a: a[rm_rows], rm_pool)
            rm_demo = _pick_demo(k_rm_demo, rm_drawn["demos"])
            feats = jnp.concatenate([drawn["features"], rm_drawn["features"]], 0)
        else:
            feats = drawn["features"]
        # one draw of the current policy: the RL rollouts (and the RM's negatives)
        sampled = jax.lax.stop_gradient(sample_fn(jax.lax.stop_gradient(params["policy"]),
                                                  k_sample, feats, group_size))
        responses = sampled[:num_prompts]
        if separate:
            rm_negatives = sampled[num_prompts:]
        else:
            rm_drawn, rm_demo, rm_negatives = drawn, demo, responses
        rm_fixed = jax.lax.stop_gradient(params["rm"])
        extra = {"_batch": {**drawn, "responses": responses}, "_rm": rm_fixed}
        scale_max = jnp.float32(1.0)
        if scale_fn is not None:
            gap = (reward_model(rm_fixed, drawn, demo)[:, 0]
                   - reward_model(rm_fixed, drawn, responses).mean(1))
            scale = jax.lax.stop_gradient(scale_fn(drawn, gap, data))
            extra["_scale"] = scale
            scale_max = jnp.max(scale)
        pg_loss, metrics = pg(params["policy"], {"rng": k_pg, "data": {**data, **extra}})
        r_demo = reward_model(params["rm"], rm_drawn, rm_demo)[:, 0]
        r_policy = reward_model(params["rm"], rm_drawn, rm_negatives)
        irl, irl_metrics = irl_reward_loss(r_demo, r_policy)
        l2 = sum(jnp.sum(jnp.square(a)) for a in jax.tree.leaves(params["rm"]))
        loss = pg_loss + rm_coef * jnp.mean(irl) + rm_l2 * l2
        metrics = {**metrics, **jax.lax.stop_gradient(irl_metrics),
                   "irl_loss": jax.lax.stop_gradient(jnp.mean(irl)), "scale_max": scale_max}
        return loss, metrics

    return loss_fn
