"""Two agents trained together for safety: WaltzRL's rewards and two-agent rollouts.

Paper: Zhang et al. 2025, "The Alignment Waltz: Jointly Training Agents to Collaborate for
Safety" (arXiv 2510.08240). A conversation agent pi_c answers a prompt p; a feedback agent pi_f
reads (p, c_t) and returns an alignment label in {none, unsafe, overrefuse} with feedback text;
when it flags (label != none) the conversation agent revises, c_{t+1} ~ pi_c(. | p, c_t, f_t).
The paper trains with at most one feedback round (T_max = 1), which is what the rollouts here
do: c_0, f_0 and, if flagged, c_1. At inference the feedback agent engages only when it flags
(the feedback trigger rate is the share of prompts it flags).

Rewards (judge-labelled; `unsafe`, `overrefuse` are the judge's verdicts on a response):
  - conversation: R_c(p, c) = 1[not unsafe(c) and not overrefuse(c)];
  - the alignment label of c_0: unsafe if unsafe(c_0), else overrefuse if overrefuse(c_0),
    else none; R_label = 1[the feedback agent's label = that label];
  - Dynamic Improvement Reward: DIR = R_c(p, c_1) - R_c(p, c_0) when the feedback agent
    flagged (and so c_1 exists), 0 otherwise; "dynamic" because it depends on how the current
    pi_c uses the feedback;
  - format: R_format = 1[the feedback parses: exactly one label];
  - the feedback agent's total: R_f = w_format R_format + w_label R_label
    + w_dir g DIR, with the gate g = R_label (the DIR counts only when the label is right;
    `gate_dir=False`: g = 1). The gate by label correctness and the two-stage schedule (first
    the feedback agent with the conversation agent frozen, then both jointly) are as the
    paper's method section is summarised in public descriptions of it (its "label accuracy
    conditioning"); the weights default to 1.

Two kinds of agents:

- Small log-linear agents (the toy testbeds), all jnp, jit / vmap-able, for
  `alignax.train.small.fit_small`: `init_agents`, `agent_log_probs`, `two_agent_rollout`
  (sample c_0, f, c_1 with their log-probs and the revision mask), `trajectory_log_probs`
  (the same log-probs recomputed, differentiable), `trajectory_kl` (exact KL of each agent to
  its reference at the sampled contexts), `final_action_probs` (exact inference-time
  distributions: the final response, the trigger rate) and `two_agent_pg_loss` (REINFORCE with
  group baselines for BOTH agents, each with its reward and its KL, with the two-stage
  schedule). Params: {"conv": [A, D], "revise": [F - 1, A, D], "feedback": [A, F, D]} for A
  conversation actions, F feedback actions (0 = none, the rest flag) and D prompt features
  (include a constant column for a bias); the revision policy is the conversation agent's,
  conditioned on the feedback it received.

- Language models (`:real` configs): `make_waltz_rollout` / `waltz_rollout_from_config`, with
  the contract of `online.make_rollout` for `policy_gradient.train(rollout_fn=)`. One
  checkpoint plays both roles through role prompts (the paper trains two models; one model
  with two role prompts is the cheaper variant). A trajectory is one multi-turn transcript
  (`alignax.algorithms.tool_rollout`: the role prompts are appended as observation tokens,
  attended to and masked out of the loss):

      [prompt | c_0 | feedback instruction | f | revision instruction | c_1]

  and the rollout returns it three times, as a conversation row (response mask on c_0), a
  feedback row (on f) and a revision row (on c_1; empty when f did not flag), role-major
  within each prompt: rows [b, role, i] of shape [B * 3 * n]. So each role's rows get their
  own reward (`waltz_text_rewards`, `rows_from_roles`) and their own group-relative advantage
  (groups of n consecutive rows are one prompt's samples of one role), in one update of the
  one model. Why this design: two models would need two alternating recipe runs whose rollouts
  call each other; one model with role rows is one `policy_gradient.train`, and its per-role
  rows keep the per-role credit assignment. `role_advantage` zeroes the advantages of roles not
  trained (stage 1: the feedback role only). The judge is a parameter (`rule_judge`, a
  refusal-marker stand-in, is to be replaced by an LLM judge callable).
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from alignax.algorithms import tool_rollout
from alignax.algorithms.online import compute_advantages
from alignax.types import Rollout

LABELS = ("none", "unsafe", "overrefuse")
NONE, UNSAFE, OVERREFUSE = 0, 1, 2
ROLES = ("conversation", "feedback", "revision")

__all__ = [
    "LABELS", "ROLES", "agent_log_probs", "alignment_label", "conversation_reward",
    "dynamic_improvement_reward", "feedback_reward", "final_action_probs", "format_reward",
    "init_agents", "label_reward", "make_waltz_rollout", "parse_label", "role_advantage",
    "row_roles", "rows_from_roles", "rule_judge", "split_roles", "trajectory_kl",
    "trajectory_log_probs", "trajectory_texts", "two_agent_pg_loss", "two_agent_rollout",
    "waltz_rollout_from_config", "waltz_text_rewards",
]


# ---------------------------------------------------------------------------------------------
# Rewards (pure jnp)


def conversation_reward(unsafe, overrefuse) -> jax.Array:
    """R_c = 1[not unsafe and not overrefuse] (float32, the shape of the inputs)."""
    unsafe, overrefuse = jnp.asarray(unsafe, bool), jnp.asarray(overrefuse, bool)
    return (~unsafe & ~overrefuse).astype(jnp.float32)


def alignment_label(unsafe, overrefuse) -> jax.Array:
    """The judge's label of a response (int32): UNSAFE (1) if unsafe, else OVERREFUSE (2) if
    it over-refuses, else NONE (0)."""
    unsafe, overrefuse = jnp.asarray(unsafe, bool), jnp.asarray(overrefuse, bool)
    return jnp.where(unsafe, UNSAFE, jnp.where(overrefuse, OVERREFUSE, NONE)).astype(jnp.int32)


def label_reward(predicted, truth) -> jax.Array:
    """R_label = 1[predicted label = the judge's label] (float32); an invalid prediction (-1)
    is wrong."""
    return (jnp.asarray(predicted) == jnp.asarray(truth)).astype(jnp.float32)


def format_reward(valid) -> jax.Array:
    """R_format = 1[the feedback is well formed] (float32)."""
    return jnp.asarray(valid, bool).astype(jnp.float32)


def dynamic_improvement_reward(reward_before, reward_after, revised) -> jax.Array:
    """DIR = revised * (R_c(p, c_{t+1}) - R_c(p, c_t)): the change of the conversation reward
    that the feedback caused; 0 where the feedback agent did not flag (no revision)."""
    diff = jnp.asarray(reward_after, jnp.float32) - jnp.asarray(reward_before, jnp.float32)
    return jnp.where(jnp.asarray(revised, bool), diff, 0.0)


def feedback_reward(dir_reward, label_r, format_r, *, gate_dir: bool = True,
                    dir_weight: float = 1.0, label_weight: float = 1.0,
                    format_weight: float = 1.0) -> jax.Array:
    """The feedback agent's reward

        R_f = w_format R_format + w_label R_label + w_dir g DIR,   g = R_label if gate_dir else 1,

    elementwise over equal-shaped inputs (module docstring; the gate makes an improvement count
    only when the feedback agent's label is right)."""
    label_r = jnp.asarray(label_r, jnp.float32)
    gate = label_r if gate_dir else 1.0
    return (format_weight * jnp.asarray(format_r, jnp.float32) + label_weight * label_r
            + dir_weight * gate * jnp.asarray(dir_reward, jnp.float32))


# ---------------------------------------------------------------------------------------------
# Small log-linear agents


def init_agents(num_features: int, num_actions: int = 3, num_feedback: int = 3,
                biases: Mapping[str, Any] | None = None) -> dict:
    """Agents' params, zero weights: {"conv": [A, D], "revise": [F - 1, A, D],
    "feedback": [A, F, D]}. `biases` optionally sets the weights of the last feature (use a
    constant-1 last column): {"conv": [A], "revise": [F - 1, A], "feedback": [A, F]}."""
    d, a, f = int(num_features), int(num_actions), int(num_feedback)
    params = {"conv": jnp.zeros((a, d)), "revise": jnp.zeros((f - 1, a, d)),
              "feedback": jnp.zeros((a, f, d))}
    for name, value in (biases or {}).items():
        params[name] = params[name].at[..., -1].set(jnp.asarray(value, jnp.float32))
    return params


def agent_log_probs(params: Mapping[str, jax.Array], features: jax.Array) -> dict:
    """Log-softmax policies of every context for prompts `features` [M, D]:
    {"conv": [M, A] log pi_c(c_0 | p), "feedback": [M, A, F] log pi_f(f | p, c_0),
    "revise": [M, F - 1, A] log pi_c(c_1 | p, f) for each flag f = 1..F-1}."""
    x = jnp.asarray(features, jnp.float32)
    return {"conv": jax.nn.log_softmax(x @ params["conv"].T, -1),
            "feedback": jax.nn.log_softmax(jnp.einsum("md,afd->maf", x, params["feedback"]), -1),
            "revise": jax.nn.log_softmax(jnp.einsum("md,gad->mga", x, params["revise"]), -1)}


def _take(logp: jax.Array, index: jax.Array) -> jax.Array:
    """logp [M, K, ...] indexed per row by index [M, G] -> [M, G, ...]."""
    return jax.vmap(lambda lp, i: lp[i])(logp, index)


def _pick(logp: jax.Array, action: jax.Array) -> jax.Array:
    """logp [M, G, K] at action [M, G] -> [M, G]."""
    return jnp.take_along_axis(logp, action[..., None], -1)[..., 0]


def two_agent_rollout(params: Mapping[str, jax.Array], features: jax.Array, key: jax.Array,
                      group_size: int, *, feedback: bool = True) -> dict:
    """G two-agent trajectories per prompt: c_0 ~ pi_c(.|p); f ~ pi_f(.|p, c_0); if f flags
    (f > 0), c_1 ~ pi_c(.|p, f) (one feedback round, the paper's T_max = 1).

    Args:
      params: the agents (`init_agents`).
      features: [M, D] prompt features.
      key: PRNG key.
      group_size: G.
      feedback: False: the conversation agent alone (f = 0, no revision; single-agent RL).

    Returns:
      {"c0", "f", "c1", "final" [M, G] int32 (final = c_1 where revised, else c_0),
      "revised" [M, G] bool, "logp_c0", "logp_f", "logp_c1" [M, G] (logp_f and logp_c1 are 0
      where the turn did not happen)}. No gradient is meant to flow through the samples.
    """
    lp = agent_log_probs(params, features)
    m, g = lp["conv"].shape[0], int(group_size)
    k0, kf, k1 = jax.random.split(key, 3)
    conv = jnp.broadcast_to(lp["conv"][:, None], (m, g, lp["conv"].shape[-1]))
    c0 = jax.random.categorical(k0, conv).astype(jnp.int32)
    if feedback:
        f_logp = _take(lp["feedback"], c0)  # [M, G, F]
        f = jax.random.categorical(kf, f_logp).astype(jnp.int32)
    else:
        f = jnp.zeros((m, g), jnp.int32)
    revised = f > 0
    r_logp = _take(lp["revise"], jnp.maximum(f - 1, 0))  # [M, G, A]
    c1 = jax.random.categorical(k1, r_logp).astype(jnp.int32)
    out = {"c0": c0, "f": f, "c1": c1, "revised": revised,
           "final": jnp.where(revised, c1, c0).astype(jnp.int32),
           "logp_c0": _pick(conv, c0),
           "logp_f": _pick(f_logp, f) if feedback else jnp.zeros((m, g)),
           "logp_c1": jnp.where(revised, _pick(r_logp, c1), 0.0)}
    return out


def trajectory_log_probs(params: Mapping[str, jax.Array], features: jax.Array,
                         traj: Mapping[str, jax.Array]) -> dict:
    """The log-probs of a rollout's actions under `params` (differentiable): {"logp_c0",
    "logp_f", "logp_c1"} [M, G], logp_c1 = 0 where not revised (equal to the rollout's own
    under the params that sampled it)."""
    lp = agent_log_probs(params, features)
    c0, f = traj["c0"], traj["f"]
    return {"logp_c0": jnp.take_along_axis(lp["conv"], c0, -1),
            "logp_f": _pick(_take(lp["feedback"], c0), f),
            "logp_c1": jnp.where(traj["revised"],
                                 _pick(_take(lp["revise"], jnp.maximum(f - 1, 0)), traj["c1"]),
                                 0.0)}


def _categorical_kl(logp: jax.Array, ref_logp: jax.Array) -> jax.Array:
    return jnp.sum(jnp.exp(logp) * (logp - ref_logp), -1)


def trajectory_kl(params: Mapping[str, jax.Array], ref_params: Mapping[str, jax.Array],
                  features: jax.Array, traj: Mapping[str, jax.Array]) -> tuple[jax.Array,
                                                                              jax.Array]:
    """Exact KL of each agent to its reference at the rollout's contexts (differentiable in
    `params`): (conversation [M, G] = KL(pi_c(.|p) || ref) + revised * KL(pi_c(.|p, f) || ref),
    feedback [M, G] = KL(pi_f(.|p, c_0) || ref))."""
    lp = agent_log_probs(params, features)
    ref = jax.tree.map(jax.lax.stop_gradient, agent_log_probs(ref_params, features))
    kl_c0 = _categorical_kl(lp["conv"], ref["conv"])[:, None]  # [M, 1]
    c0, fi = traj["c0"], jnp.maximum(traj["f"] - 1, 0)
    kl_f = _categorical_kl(_take(lp["feedback"], c0), _take(ref["feedback"], c0))
    kl_c1 = _categorical_kl(_take(lp["revise"], fi), _take(ref["revise"], fi))
    return kl_c0 + jnp.where(traj["revised"], kl_c1, 0.0), kl_f


def final_action_probs(params: Mapping[str, jax.Array], features: jax.Array, *,
                       feedback: bool = True) -> dict:
    """Exact inference-time distributions of the two-agent system for prompts [M, D]:
    {"initial" [M, A] pi_c(c_0 | p), "final" [M, A] P(final response = a | p) =
    sum_c0 pi_c(c_0) (pi_f(none | c_0) 1[a = c_0] + sum_{f > 0} pi_f(f | c_0) pi_c(a | p, f)),
    "trigger" [M] P(f > 0 | p), "feedback" [M, A, F] pi_f(f | p, c_0)}; `feedback=False`: the
    conversation agent alone (final = initial, trigger 0)."""
    lp = agent_log_probs(params, features)
    p0 = jnp.exp(lp["conv"])
    pf = jnp.exp(lp["feedback"])
    if not feedback:
        return {"initial": p0, "final": p0, "trigger": jnp.zeros(p0.shape[0]), "feedback": pf}
    pr = jnp.exp(lp["revise"])  # [M, F - 1, A]
    keep = p0 * pf[..., 0]  # [M, A] not flagged: the final response is c_0
    revised = jnp.einsum("ma,maf,mfb->mb", p0, pf[..., 1:], pr)
    return {"initial": p0, "final": keep + revised, "trigger": 1.0 - keep.sum(-1),
            "feedback": pf}


def _group_advantages(rewards: jax.Array, name: str) -> jax.Array:
    """[M, G] rewards -> [M, G] advantages of the named estimator within each prompt's group."""
    m, g = rewards.shape
    return compute_advantages(name, rewards.reshape(-1), g).reshape(m, g)


def two_agent_pg_loss(judge_fn: Callable[[Any, jax.Array], tuple[jax.Array, jax.Array]], *,
                      group_size: int, ref_params: Mapping[str, jax.Array],
                      prompt_fn: Callable[[jax.Array, Any], Any], kl_coef: float = 0.0,
                      advantage: str = "rloo", feedback: bool = True, use_dir: bool = True,
                      gate_dir: bool = True, dir_weight: float = 1.0, label_weight: float = 1.0,
                      format_weight: float = 1.0, stage1_steps: int = 0
                      ) -> Callable[[Any, dict], tuple[jax.Array, dict]]:
    """WaltzRL's policy gradient for both small agents (`fit_small(has_aux=True,
    batch_fn=<rl batch with step>, with_step=True)`; the batch is {"rng", "data", "step"}).

    Each update: prompts `prompt_fn(key, data)` (a dict with "features" [M, D] and what
    `judge_fn` reads), G trajectories each (`two_agent_rollout`), the judge's verdicts
    `judge_fn(prompts, actions [M, G]) -> (unsafe, overrefuse)` on c_0 and on the final
    response, and

        L = s_c [-mean(A_c0 log pi_c(c_0) + A_c1 log pi_c(c_1)) + kl_coef mean KL_c]
            + s_f [-mean(A_f log pi_f(f)) + kl_coef mean KL_f],

    with A_c0 the group advantage of R_c(c_0), A_c1 of R_c(final) (on revised rows), A_f of
    R_f (`feedback_reward`, with DIR when `use_dir`); s_f = 1 with `feedback`, else 0 (and
    no feedback round: single-agent RL on R_c); s_c = 1[step >= stage1_steps] (stage 1 trains
    the feedback agent against the frozen conversation agent; Adam leaves params with zero
    gradients where they are).

    Returns:
      `loss_fn(params, batch) -> (loss, metrics)`; metrics: "reward" (mean R_c of the final
      response), "reward_initial" (of c_0), "feedback_reward", "dir", "label_accuracy",
      "trigger", "kl_conversation", "kl_feedback".
    """
    g = int(group_size)
    if g < 2:
        raise ValueError(f"group_size must be >= 2 (group baseline), got {group_size}")

    def loss_fn(params, batch):
        k_prompt, k_roll = jax.random.split(batch["rng"])
        prompts = prompt_fn(k_prompt, batch["data"])
        x = prompts["features"]
        traj = jax.lax.stop_gradient(two_agent_rollout(
            jax.lax.stop_gradient(params), x, k_roll, g, feedback=feedback))
        unsafe0, over0 = judge_fn(prompts, traj["c0"])
        unsafe1, over1 = judge_fn(prompts, traj["final"])
        r0, r_final = conversation_reward(unsafe0, over0), conversation_reward(unsafe1, over1)
        r_label = label_reward(traj["f"], alignment_label(unsafe0, over0))
        r_dir = dynamic_improvement_reward(r0, r_final, traj["revised"])
        r_f = feedback_reward(r_dir if use_dir else jnp.zeros_like(r_dir), r_label,
                              format_reward(jnp.ones_like(r_label, bool)), gate_dir=gate_dir,
                              dir_weight=dir_weight, label_weight=label_weight,
                              format_weight=format_weight)
        adv_c0 = _group_advantages(r0, advantage)
        adv_c1 = jnp.where(traj["revised"], _group_advantages(r_final, advantage), 0.0)
        adv_f = _group_advantages(r_f, advantage)
        logp = trajectory_log_probs(params, x, traj)
        kl_c, kl_f = trajectory_kl(params, ref_params, x, traj)
        conv = (-jnp.mean(adv_c0 * logp["logp_c0"] + adv_c1 * logp["logp_c1"])
                + kl_coef * kl_c.mean())
        fb = -jnp.mean(adv_f * logp["logp_f"]) + kl_coef * kl_f.mean()
        s_c = (jnp.asarray(batch.get("step", stage1_steps)) >= stage1_steps).astype(jnp.float32)
        loss = s_c * conv + (fb if feedback else 0.0)
        metrics = {"reward": r_final.mean(), "reward_initial": r0.mean(),
                   "feedback_reward": r_f.mean(), "dir": r_dir.mean(),
                   "label_accuracy": r_label.mean(),
                   "trigger": traj["revised"].astype(jnp.float32).mean(),
                   "kl_conversation": jax.lax.stop_gradient(kl_c.mean()),
                   "kl_feedback": jax.lax.stop_gradient(kl_f.mean())}
        return loss, metrics

    return loss_fn


# ---------------------------------------------------------------------------------------------
# Language models: one checkpoint, two roles


def rule_judge(harmful: bool, text: str, refusal_markers: Sequence[str]) -> tuple[bool, bool]:
    """A stand-in judge from the data's labels: refused = the text contains one of
    `refusal_markers` (case-insensitive); (unsafe, overrefuse) = (harmful and not refused,
    not harmful and refused). Replace it by an LLM judge callable with the same signature."""
    low = str(text).lower()
    refused = any(str(m).lower() in low for m in refusal_markers if str(m))
    return bool(harmful and not refused), bool((not harmful) and refused)


def parse_label(text: str, markers: Mapping[str, str]) -> int:
    """The feedback's label: the index in LABELS of the one marker (`markers[label]`, matched
    case-insensitively) the text contains; -1 (malformed) when it holds none or several
    different ones."""
    low = str(text).lower()
    found = [i for i, name in enumerate(LABELS) if str(markers[name]).lower() in low]
    return found[0] if len(found) == 1 else -1


def row_roles(num_rows: int, num_samples: int) -> np.ndarray:
    """[3 B n] role of each row of a waltz rollout (0 conversation, 1 feedback, 2 revision):
    rows are [b, role, i] (module docstring)."""
    return (np.arange(int(num_rows)) // int(num_samples)) % 3


def split_roles(rollout: Rollout, num_samples: int) -> Rollout:
    """A two-turn tool rollout [B n rows: c_0, obs, f, obs, c_1] -> its three role rows per
    trajectory, [B, 3, n] flattened: the same ids / mask, the response mask (and old_logps) of
    the conversation row on c_0, of the feedback row on f, of the revision row on c_1 (the
    policy tokens after 0, 1 and 2 observations)."""
    n = int(num_samples)
    obs = tool_rollout.observation_mask(rollout)
    before = jnp.pad(obs, ((0, 0), (1, 0)))[:, :-1]
    segment = jnp.cumsum(obs & ~before, axis=1)  # observations started at or before column
    resp = jnp.asarray(rollout.response_mask).astype(bool)
    masks = jnp.stack([resp & (segment == k) for k in range(3)], 1)  # [N, 3, R]
    rows, r = resp.shape
    b = rows // n

    def per_role(x):  # [N, ...] -> [B, 3, n, ...] -> [3N, ...]
        x = jnp.asarray(x).reshape(b, 1, n, *x.shape[1:])
        return jnp.broadcast_to(x, (b, 3, n, *x.shape[3:])).reshape(3 * rows, *x.shape[3:])

    role_masks = jnp.moveaxis(masks.reshape(b, n, 3, r), 2, 1).reshape(3 * rows, r)
    old = per_role(rollout.old_logps)
    return Rollout(ids=per_role(rollout.ids), mask=per_role(rollout.mask),
                   response_mask=role_masks.astype(jnp.asarray(rollout.response_mask).dtype),
                   old_logps=jnp.where(role_masks, old, 0.0),
                   prompt_index=per_role(rollout.prompt_index))


def make_waltz_rollout(model, tokenizer, *, num_samples: int, turn_tokens: int,
                       feedback_instruction: str, revision_instruction: str,
                       label_markers: Mapping[str, str], **sampler) -> Callable[..., Rollout]:
    """`rollout(params, prompt_ids [B, P], prompt_mask [B, P], rng) -> Rollout` of n two-agent
    trajectories per prompt, returned as B * 3 * n role rows (module docstring).

    The conversation turn c_0 is sampled from the prompt; the feedback instruction (the feedback
    role's prompt) is appended and the feedback f sampled; if f's label (`parse_label` with
    `label_markers`) is unsafe or overrefuse, the revision instruction is appended and c_1
    sampled. Each turn is at most `turn_tokens` tokens (`tool_rollout.make_tool_rollout` with
    2 calls; `sampler`: its temperature, top_k, top_p, min_p, repetition_penalty, stop_tokens,
    stop_strings, pad_id). Response length R = 3 turn_tokens + 2 T_obs, T_obs the longer
    instruction's token count (attribute `response_len`).
    """
    encode = tokenizer.encode
    t_obs = max(len(encode(str(feedback_instruction))), len(encode(str(revision_instruction))))
    if min(len(encode(str(feedback_instruction))), len(encode(str(revision_instruction)))) < 1:
        raise ValueError("feedback_instruction and revision_instruction must encode to >= 1 "
                         "token")
    calls: dict[int, int] = {}

    def env_fn(row: int, text: str) -> str | None:
        k = calls.get(row, 0)
        calls[row] = k + 1
        if k == 0:  # after c_0: the feedback role speaks
            return str(feedback_instruction)
        return (str(revision_instruction) if parse_label(text, label_markers) in
                (UNSAFE, OVERREFUSE) else None)

    inner = tool_rollout.make_tool_rollout(
        model, env_fn, tokenizer, num_samples=int(num_samples), max_tool_calls=2,
        turn_tokens=int(turn_tokens), max_observation_tokens=t_obs, **sampler)

    def rollout(params, prompt_ids, prompt_mask, rng) -> Rollout:
        calls.clear()  # the environment's state is this rollout's (a function of its inputs)
        return split_roles(inner(params, prompt_ids, prompt_mask, rng), int(num_samples))

    rollout.response_len = inner.response_len
    rollout.num_samples = int(num_samples)
    return rollout


def waltz_rollout_from_config(tokenizer, *, turn_tokens: int, feedback_instruction: str,
                              revision_instruction: str, label_markers: Mapping[str, str],
                              stop_strings: Sequence[str] = (), pad_id: int | None = None
                              ) -> Callable:
    """A rollout builder for `policy_gradient.train(rollout_fn=)`: `(model, cfg, n) ->
    make_waltz_rollout(...)` with the recipe config's sampler options. The recipe's
    `max_new_tokens` must be the rollout's R (attribute `response_len` of the builder)."""
    pad = int(getattr(tokenizer, "pad_id", 0) or 0) if pad_id is None else int(pad_id)
    t_obs = max(len(tokenizer.encode(str(feedback_instruction))),
                len(tokenizer.encode(str(revision_instruction))))
    r_total = tool_rollout.tool_response_length(max_tool_calls=2, turn_tokens=int(turn_tokens),
                                                max_observation_tokens=t_obs)

    def build(model, cfg: Mapping[str, Any], num_samples: int):
        if int(cfg["max_new_tokens"]) != r_total:
            raise ValueError(f"max_new_tokens={cfg['max_new_tokens']} must be the waltz "
                             f"rollout's response length {r_total} (3 * turn_tokens + 2 * the "
                             "longer instruction's tokens)")
        return make_waltz_rollout(
            model, tokenizer, num_samples=num_samples, turn_tokens=turn_tokens,
            feedback_instruction=feedback_instruction, revision_instruction=revision_instruction,
            label_markers=label_markers, temperature=float(cfg["temperature"]),
            top_k=int(cfg["top_k"]), top_p=float(cfg["top_p"]),
            min_p=float(cfg.get("min_p", 0.0)),
            repetition_penalty=float(cfg.get("repetition_penalty", 1.0)),
            stop_tokens=tuple(cfg["stop_tokens"]), stop_strings=tuple(stop_strings),
            pad_id=pad)

    build.response_len = r_total
    return build


def trajectory_texts(tokenizer, rollout: Rollout, num_samples: int) -> dict[str, list[str]]:
    """The decoded turns of a waltz rollout's trajectories, in trajectory order (b, i):
    {"conversation": c_0, "feedback": f, "revision": c_1 ("" where not revised)}, and
    "prompt_index" [B n] (each trajectory's prompt row)."""
    n = int(num_samples)
    responses = np.asarray(rollout.responses)
    masks = np.asarray(rollout.response_mask, bool)
    index = np.asarray(rollout.prompt_index)
    rows, r = masks.shape
    b = rows // (3 * n)
    out: dict[str, Any] = {}
    for k, role in enumerate(ROLES):
        sel = (np.arange(b)[:, None] * 3 * n + k * n + np.arange(n)[None, :]).reshape(-1)
        out[role] = [tokenizer.decode([int(t) for t in responses[i][masks[i]]]) for i in sel]
        if k == 0:
            out["prompt_index"] = index[sel]
    return out


def waltz_text_rewards(texts: Mapping[str, Sequence[str]], harmful: Sequence[bool],
                       judge: Callable[[bool, str], tuple[bool, bool]],
                       label_markers: Mapping[str, str], *, gate_dir: bool = True,
                       dir_weight: float = 1.0, label_weight: float = 1.0,
                       format_weight: float = 1.0) -> dict[str, np.ndarray]:
    """Per-trajectory rewards and diagnostics of LM trajectories (`trajectory_texts`), with
    `harmful` [T] each trajectory's prompt label and `judge(harmful, text) -> (unsafe,
    overrefuse)`: {"conversation": R_c(c_0), "revision": R_c(final) (final = c_1 where
    revised, else c_0), "feedback": R_f, "flagged", "label", "label_correct", "format",
    "dir", "unsafe", "overrefuse" (of the final response), "unsafe_initial",
    "overrefuse_initial"}, each [T]."""
    labels = np.array([parse_label(t, label_markers) for t in texts["feedback"]], np.int32)
    flagged = (labels == UNSAFE) | (labels == OVERREFUSE)
    first = np.array([judge(bool(h), t) for h, t in zip(harmful, texts["conversation"])],
                     bool).reshape(-1, 2)
    final_texts = [r if f else c for r, f, c in zip(texts["revision"], flagged,
                                                    texts["conversation"])]
    final = np.array([judge(bool(h), t) for h, t in zip(harmful, final_texts)],
                     bool).reshape(-1, 2)
    r0 = np.asarray(conversation_reward(first[:, 0], first[:, 1]))
    r1 = np.asarray(conversation_reward(final[:, 0], final[:, 1]))
    r_label = np.asarray(label_reward(labels, alignment_label(first[:, 0], first[:, 1])))
    r_fmt = np.asarray(format_reward(labels >= 0))
    r_dir = np.asarray(dynamic_improvement_reward(r0, r1, flagged))
    r_f = np.asarray(feedback_reward(r_dir, r_label, r_fmt, gate_dir=gate_dir,
                                     dir_weight=dir_weight, label_weight=label_weight,
                                     format_weight=format_weight))
    return {"conversation": r0, "revision": r1, "feedback": r_f, "flagged": flagged,
            "label": labels, "label_correct": r_label, "format": r_fmt, "dir": r_dir,
            "unsafe": final[:, 0], "overrefuse": final[:, 1], "unsafe_initial": first[:, 0],
            "overrefuse_initial": first[:, 1]}


def rows_from_roles(conversation, feedback, revision, num_samples: int) -> np.ndarray:
    """Per-trajectory values [B n] of the three roles -> [B 3 n] in the waltz rollout's row
    order ([b, role, i])."""
    n = int(num_samples)
    parts = [np.asarray(v, np.float32).reshape(-1, n) for v in (conversation, feedback,
                                                                revision)]
    return np.stack(parts, 1).reshape(-1)


def role_advantage(name: str, num_samples: int, roles: Sequence[str] = ROLES) -> Callable:
    """A `policy_gradient.train(advantage_fn=)`: the named group advantage (groups of n rows:
    one prompt's samples of one role), zero on the rows of roles not in `roles` (e.g. stage 1
    trains ("feedback",) only; the KL term still holds the other rows near the reference)."""
    unknown = sorted(set(roles) - set(ROLES))
    if unknown:
        raise ValueError(f"unknown roles {unknown}; valid: {list(ROLES)}")
    on = np.array([r in roles for r in ROLES], np.float32)

    def advantage_fn(rewards, rollout, rng):
        del rng
        adv = compute_advantages(name, rewards, int(num_samples))
        weight = jnp.asarray(on[row_roles(adv.shape[0], num_samples)])
        return adv * weight, {}

    return advantage_fn
