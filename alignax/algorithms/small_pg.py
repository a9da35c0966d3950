"""Policy gradient for small explicit policies (one-step bandits and tabular MDPs).

The language-model recipes (`alignax.algorithms.policy_gradient`) sample token sequences from a
causal LM. Toy testbeds whose "responses" are vectors or grid-world trajectories need the same
RL mechanism on an explicit policy: sample from the current policy, score the samples with a
(learned) reward, and follow the score-function gradient. The losses here are `loss_fn(params,
batch)` for `alignax.train.small.fit_small` (the one small-model trainer: every seed vmapped,
checkpointed, early stopping on validation with `select=`), with `batch["rng"]` the update's key
(`batch_fn=rl_batch` puts it there).

- `reinforce_loss`: one-step REINFORCE with the leave-one-out baseline over `num_samples`
  samples (RLOO, Ahmadian et al. 2024) and the KL to a reference policy in the reward,
  r(x) - kl_coef * (log pi(x) - log pi_ref(x)), as in RLHF. Its gradient is an unbiased
  estimate of the gradient of E_pi[r] - kl_coef * KL(pi || pi_ref).
- A diagonal Gaussian policy over R^D (`gaussian_init`, `gaussian_sample`,
  `gaussian_log_prob`, `gaussian_kl`).
- `group_pg_loss`: GRPO-style group policy gradient for prompt-conditioned explicit policies:
  M prompts per update, G responses each, rewards scored per group, group-relative advantages
  (any `alignax.algorithms.online.ADVANTAGES` estimator, or a callable for paper-specific
  advantages such as pairwise or difficulty-scaled ones) and a differentiable KL term.
  `sequence_table_policy` gives its sample / log-prob / exact-KL functions for the prefix-tree
  policy of `alignax.models.sequence_table` (the toy LMs of the RL-with-rewards papers).
- `tabular_rollouts` (jax, on-device episodes of a softmax policy in a tabular MDP) and
  `tabular_reinforce_loss`: REINFORCE with discounted reward-to-go and a per-time-step batch
  mean baseline, for a reward given per transition r(s, a, s') [S, A, S].
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp

from alignax.algorithms.online import compute_advantages
from alignax.models import sequence_table as st


def rl_batch(data: Any, rng: jax.Array) -> dict:
    """`fit_small` batch_fn of the RL losses: {"rng": the update's key, "data": data}."""
    return {"rng": rng, "data": data}


# ---------------------------------------------------------------------------------------------
# One-step (bandit) REINFORCE


def reinforce_loss(sample_fn: Callable[[Any, jax.Array, int], jax.Array],
                   log_prob_fn: Callable[[Any, jax.Array], jax.Array],
                   reward_fn: Callable[[jax.Array, Any], jax.Array], *, num_samples: int,
                   kl_coef: float = 0.0,
                   ref_log_prob_fn: Callable[[jax.Array], jax.Array] | None = None,
                   ) -> Callable[[Any, dict], tuple[jax.Array, dict]]:
    """REINFORCE with a leave-one-out baseline and the KL to a reference in the reward.

    Args:
      sample_fn: `(params, key, n) -> x [n, ...]` draws n samples of the policy.
      log_prob_fn: `(params, x) -> [n]` their log-probabilities (differentiable in params).
      reward_fn: `(x, data) -> [n]` rewards (no gradient is taken through it); `data` is the
        batch's "data" (e.g. a reward model's params, per seed).
      num_samples: samples per update (>= 2, the baseline leaves one out).
      kl_coef: beta of the KL penalty; 0 turns it off.
      ref_log_prob_fn: `x -> [n]` log-probabilities under the reference (needed when
        kl_coef > 0).

    Returns:
      `loss_fn(params, batch) -> (loss, metrics)` for `fit_small(has_aux=True,
      batch_fn=rl_batch)`; metrics: "reward" (mean raw reward), "kl" (mean of log pi - log
      pi_ref, an unbiased KL estimate; 0 without a reference), "objective" (reward - kl_coef
      * kl).
    """
    if num_samples < 2:
        raise ValueError(f"num_samples must be >= 2 (leave-one-out baseline), got {num_samples}")
    if kl_coef and ref_log_prob_fn is None:
        raise ValueError("kl_coef > 0 needs ref_log_prob_fn")

    def loss_fn(params, batch):
        x = jax.lax.stop_gradient(sample_fn(params, batch["rng"], num_samples))
        logp = log_prob_fn(params, x)
        reward = jax.lax.stop_gradient(reward_fn(x, batch.get("data")))
        if ref_log_prob_fn is not None:
            kl = jax.lax.stop_gradient(logp) - ref_log_prob_fn(x)
        else:
            kl = jnp.zeros_like(reward)
        shaped = reward - kl_coef * kl
        baseline = (shaped.sum() - shaped) / (num_samples - 1)
        advantage = jax.lax.stop_gradient(shaped - baseline)
        loss = -jnp.mean(advantage * logp)
        return loss, {"reward": reward.mean(), "kl": kl.mean(), "objective": shaped.mean()}

    return loss_fn


# ---------------------------------------------------------------------------------------------
# Group policy gradient (GRPO) for prompt-conditioned explicit policies


def group_pg_loss(sample_fn: Callable[[Any, jax.Array, Any, int], jax.Array],
                  log_prob_fn: Callable[[Any, Any, jax.Array], jax.Array],
                  reward_fn: Callable[[Any, jax.Array, Any], Any], *, group_size: int,
                  advantage: str | Callable[[jax.Array, Any], jax.Array] = "grpo",
                  kl_coef: float = 0.0,
                  kl_fn: Callable[[Any, Any, jax.Array, Any], jax.Array] | None = None,
                  prompt_fn: Callable[[jax.Array, Any], Any] | None = None,
                  reward_key: bool = False,
                  ) -> Callable[[Any, dict], tuple[jax.Array, dict]]:
    """On-policy group policy gradient (GRPO, Shao et al. 2024, arXiv 2402.03300).

    Each update: prompts x_1..x_M (`prompt_fn(key, data)`, default `data["prompts"]`), G
    responses y_m1..y_mG ~ pi(.|x_m) each, rewards r [M, G], advantages A [M, G] computed
    within each prompt's group, and the surrogate

        L = -mean_{m,i} A_mi log pi(y_mi | x_m) + kl_coef * mean(kl_fn(...)).

    With one update per fresh batch the PPO ratio is 1 and its clip is inactive, so this is
    the GRPO gradient (sequence-level log-probs: the toy policies score whole responses).

    Args:
      sample_fn: `(params, key, prompts, G) -> responses [M, G, ...]` (no gradient is taken).
      log_prob_fn: `(params, prompts, responses) -> [M, G]` log pi(y | x), differentiable.
      reward_fn: `(prompts, responses, data) -> rewards [M, G]`, or `(rewards, metrics)` with
        a dict of scalar diagnostics (reported with a "reward_" prefix); no gradient.
      group_size: G >= 2.
      advantage: a name of `alignax.algorithms.online.ADVANTAGES` ("grpo": (r - mean) / std,
        "dr_grpo", "rloo", ...) or `(rewards [M, G], data) -> [M, G]` (e.g. BRPO's pairwise
        advantages or GRPO-S difficulty scaling).
      kl_coef: weight of the KL term; 0 turns it off.
      kl_fn: `(params, prompts, responses, data) -> [M] or [M, G]` a differentiable KL
        estimate to the reference (e.g. the exact `sequence_table.sequence_kl`); needed when
        kl_coef > 0.
      prompt_fn: `(key, data) -> prompts` draws the update's prompts (default:
        `data["prompts"]`, every prompt every update).
      reward_key: call `reward_fn(prompts, responses, data, key)` with a PRNG key of this
        update (independent of the prompt and sampling keys) for stochastic rewards: a noisy
        judge, BRPO's randomly drawn reference (`alignax.rewards.pairwise`).

    Returns:
      `loss_fn(params, batch) -> (loss, metrics)` for `fit_small(has_aux=True,
      batch_fn=rl_batch)`; metrics: "reward" (mean raw reward), "kl" (mean KL term, 0 without
      kl_fn), "reward_std" (mean within-group std: where it is 0 the advantage vanishes),
      plus the reward function's metrics.
    """
    if group_size < 2:
        raise ValueError(f"group_size must be >= 2 (group baseline), got {group_size}")
    if kl_coef and kl_fn is None:
        raise ValueError("kl_coef > 0 needs kl_fn")

    def loss_fn(params, batch):
        data = batch.get("data")
        k_prompt, k_sample = jax.random.split(batch["rng"])
        prompts = data["prompts"] if prompt_fn is None else prompt_fn(k_prompt, data)
        responses = jax.lax.stop_gradient(
            sample_fn(jax.lax.stop_gradient(params), k_sample, prompts, group_size))
        if reward_key:
            out = reward_fn(prompts, responses, data, jax.random.fold_in(k_sample, 1))
        else:
            out = reward_fn(prompts, responses, data)
        rewards, extra = out if isinstance(out, tuple) else (out, {})
        rewards = jax.lax.stop_gradient(jnp.asarray(rewards, jnp.float32))
        if rewards.ndim != 2 or rewards.shape[1] != group_size:
            raise ValueError(f"reward_fn must return [M, {group_size}] rewards, got "
                             f"{rewards.shape}")
        if callable(advantage):
            adv = advantage(rewards, data)
        else:
            adv = compute_advantages(advantage, rewards.reshape(-1), group_size)
        adv = jax.lax.stop_gradient(jnp.reshape(adv, rewards.shape))
        logp = log_prob_fn(params, prompts, responses)
        loss = -jnp.mean(adv * logp)
        kl = jnp.float32(0.0)
        if kl_fn is not None:
            kl = jnp.mean(kl_fn(params, prompts, responses, data))
            loss = loss + kl_coef * kl
        metrics = {"reward": rewards.mean(), "kl": jax.lax.stop_gradient(kl),
                   "reward_std": rewards.std(axis=1).mean()}
        metrics.update({f"reward_{k}": jax.lax.stop_gradient(v) for k, v in extra.items()})
        return loss, metrics

    return loss_fn


def sequence_table_policy(space, ref_params=None, *, temperature: float = 1.0):
    """(sample_fn, log_prob_fn, kl_fn) of `group_pg_loss` for a `sequence_table` policy.

    Prompts are feature rows [M, F] (one-hot for a tabular policy, dense for a log-linear one;
    F = 0 rows for a single shared table); responses are sequence indices [M, G]
    (`space.sequences[y]` gives the tokens). kl_fn is the exact KL(pi(.|x) || pi_ref(.|x)) [M]
    to `ref_params`, or, when it is None, to `data["ref_params"]` (a per-seed reference passed
    through `fit_small`'s data). Sampling uses pi^(1/temperature).
    """
    def sample_fn(params, key, prompts, n):
        return st.sample(space, params, key, n, prompts, temperature=temperature)

    def log_prob_fn(params, prompts, responses):
        return st.gather(st.sequence_log_probs(space, params, prompts), responses)

    def kl_fn(params, prompts, responses, data):
        del responses
        ref = data["ref_params"] if ref_params is None else ref_params
        return st.sequence_kl(space, params, jax.lax.stop_gradient(ref), prompts)

    return sample_fn, log_prob_fn, kl_fn


# ---------------------------------------------------------------------------------------------
# Diagonal Gaussian policy


def gaussian_init(dim: int, mean: float = 0.0, log_std: float = 0.0) -> dict:
    """Params {"mean": [D], "log_std": [D]} of a diagonal Gaussian (default: N(0, I))."""
    return {"mean": jnp.full((dim,), mean, jnp.float32),
            "log_std": jnp.full((dim,), log_std, jnp.float32)}


def gaussian_sample(params: dict, key: jax.Array, n: int) -> jax.Array:
    """n draws [n, D] of N(mean, diag(exp(log_std))^2)."""
    eps = jax.random.normal(key, (n,) + params["mean"].shape, params["mean"].dtype)
    return params["mean"] + jnp.exp(params["log_std"]) * eps


def gaussian_log_prob(params: dict, x: jax.Array) -> jax.Array:
    """log N(x; mean, diag(exp(log_std))^2) over the last axis: [..., D] -> [...]."""
    z = (x - params["mean"]) * jnp.exp(-params["log_std"])
    return jnp.sum(-0.5 * z**2 - params["log_std"] - 0.5 * jnp.log(2 * jnp.pi), axis=-1)


def gaussian_kl(params: dict, ref: dict) -> jax.Array:
    """KL(N(params) || N(ref)) of two diagonal Gaussians, exact (a scalar)."""
    var, ref_var = jnp.exp(2 * params["log_std"]), jnp.exp(2 * ref["log_std"])
    return jnp.sum(ref["log_std"] - params["log_std"]
                   + (var + (params["mean"] - ref["mean"]) ** 2) / (2 * ref_var) - 0.5)


# ---------------------------------------------------------------------------------------------
# Tabular MDPs


def tabular_rollouts(transitions: jax.Array, terminal: jax.Array, start: jax.Array,
                     logits: jax.Array, key: jax.Array, num_episodes: int, horizon: int):
    """Episodes of the softmax policy `logits` [S, A] in a tabular MDP, on device.

    Args:
      transitions: [S, A, S] P(s' | s, a).
      terminal: [S] bool; an episode that reaches a terminal state stays there with
        valid = False.
      start: [S] start distribution.
      logits: [S, A] the policy's logits.
      key: PRNG key.
      num_episodes, horizon: E episodes of at most `horizon` steps.

    Returns:
      (states [E, H + 1] int32, actions [E, H] int32, valid [E, H] bool), as
      `alignax.tasks.mdp.Segments` holds them.
    """
    # inverse-CDF draws: one uniform per choice (cheaper than Gumbel noise over every state)
    num_states = transitions.shape[0]
    u = jax.random.uniform(key, (horizon + 1, num_episodes, 2))
    s0 = jnp.minimum(jnp.sum(u[0, :, 0:1] > jnp.cumsum(start / start.sum())[None], -1),
                     num_states - 1)
    next_cdf = jnp.cumsum(transitions, -1)  # [S, A, S]
    action_cdf = jnp.cumsum(jax.nn.softmax(logits, -1), -1)  # [S, A]

    def step(s, u_t):
        live = ~terminal[s]
        a = jnp.minimum(jnp.sum(u_t[:, 0:1] > action_cdf[s], -1), logits.shape[-1] - 1)
        cdf = next_cdf[s, a]
        nxt = jnp.minimum(jnp.sum(u_t[:, 1:2] * cdf[:, -1:] > cdf, -1), num_states - 1)
        s2 = jnp.where(live, nxt, s)
        return s2, (s2, jnp.where(live, a, 0), live)

    _, (nexts, actions, valid) = jax.lax.scan(step, s0, u[1:])
    states = jnp.concatenate([s0[None], nexts], 0).T.astype(jnp.int32)
    return states, actions.T.astype(jnp.int32), valid.T


def tabular_reinforce_loss(transitions: jax.Array, terminal: jax.Array, start: jax.Array,
                           reward_fn: Callable[[jax.Array, Any], jax.Array], *,
                           num_episodes: int, horizon: int, gamma: float = 1.0,
                           entropy_coef: float = 0.0,
                           ) -> Callable[[Any, dict], tuple[jax.Array, dict]]:
    """REINFORCE for a tabular softmax policy (params {"logits": [S, A]}).

    Each update rolls out `num_episodes` episodes, scores every valid step t with the
    transition reward r(s_t, a_t, s_{t+1}) from `reward_fn(data) -> [S, A, S]`, forms the
    discounted reward-to-go G_t = sum_{k >= t} gamma^(k - t) r_k, subtracts the mean over the
    batch's episodes at the same t (a baseline that does not depend on the episode's own
    actions) and minimises -mean_{episodes} sum_t (G_t - b_t) log pi(a_t | s_t)
    - entropy_coef * mean entropy.

    Returns:
      `loss_fn(params, batch) -> (loss, metrics)` for `fit_small(has_aux=True,
      batch_fn=rl_batch)`; metrics: "return" (mean undiscounted episode return under the
      reward), "entropy" (mean policy entropy over the visited valid steps).
    """

    def loss_fn(params, batch):
        logits = params["logits"]
        states, actions, valid = tabular_rollouts(
            transitions, terminal, start, jax.lax.stop_gradient(logits), batch["rng"],
            num_episodes, horizon)
        r_table = jax.lax.stop_gradient(reward_fn(batch.get("data")))
        s, s2 = states[:, :-1], states[:, 1:]
        r = jnp.where(valid, r_table[s, actions, s2], 0.0)  # [E, H]

        def back(carry, r_t):
            g = r_t + gamma * carry
            return g, g

        _, g = jax.lax.scan(back, jnp.zeros(r.shape[0], r.dtype), r.T, reverse=True)
        g = g.T  # [E, H] reward-to-go
        count = jnp.maximum(valid.sum(0), 1)
        baseline = jnp.sum(jnp.where(valid, g, 0.0), 0) / count
        adv = jnp.where(valid, g - baseline, 0.0)
        logp_all = jax.nn.log_softmax(logits, -1)  # [S, A]
        logp = logp_all[s, actions]
        ent = -jnp.sum(jnp.exp(logp_all) * logp_all, -1)[s]
        n_valid = jnp.maximum(valid.sum(), 1)
        ent_mean = jnp.sum(jnp.where(valid, ent, 0.0)) / n_valid
        loss = -jnp.sum(adv * logp) / r.shape[0] - entropy_coef * ent_mean
        return loss, {"return": r.sum(1).mean(), "entropy": ent_mean}

    return loss_fn
