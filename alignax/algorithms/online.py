"""Shared pieces of the online algorithms: rollouts, advantages, KL control, the update loss.

An iteration of every critic-free method (GRPO and variants, RLOO, REINFORCE++, BNPO, BRPO) is

    rollout = make_rollout(...)              # jitted sampler: n samples per prompt
    rewards = reward_fn(rollout)             # [N] (rules, verifiers, reward models, ...)
    advantages = compute_advantages(name, rewards, n)
    batch = training_batch(rollout, advantages, ref_logps=reference_logps(...))
    state = step(state, minibatch) ...       # make_train_step(make_policy_loss(...)), E epochs

Shapes: P prompt tokens (left-padded), R generated tokens, N = prompts x n rows (prompt-major).
The training forward runs on `ids = [prompt, response]` with `mask = [prompt_mask,
response_mask]`; the log-prob of response token j is read from the logits at position P - 1 + j.
The sampler reports the same log-probs (fp32, <= 1e-5), so the behaviour policy's log-probs
(`old_logps`) come from the rollout for free.

Every recipe's config has `mesh`: None runs on one device; {"data": d, "fsdp": f, "tensor": t}
shards the rollout, the reference forward and the update over a device mesh (`Placement`):
params by their logical axes, rows over data x fsdp. The results match the one-device run
(tests/algorithms/test_online_mesh.py).
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Any, Callable, Mapping, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from alignax import ops
from alignax.losses import aggregate, gspo_loss, ppo_clip_loss
from alignax.train import sharding as shd


class Rollout(NamedTuple):
    """Samples of the behaviour policy, ready for scoring and training.

    ids: [N, P + R] prompt (left-padded) then response tokens; mask: [N, P + R] attention mask;
    response_mask: [N, R] generated, valid tokens (False after a stop token); old_logps: [N, R]
    behaviour-policy log-probs (0 off the mask); prompt_index: [N] row of the prompt batch
    (the recipes remap it to the row of their prompt pool before calling `reward_fn`, so a
    reward can look up each sample's problem, answer or references).
    """

    ids: jax.Array
    mask: jax.Array
    response_mask: jax.Array
    old_logps: jax.Array
    prompt_index: jax.Array

    @property
    def response_len(self) -> int:
        return self.response_mask.shape[1]

    @property
    def responses(self) -> jax.Array:
        return self.ids[:, -self.response_len:]

    @property
    def prompts(self) -> jax.Array:
        return self.ids[:, :-self.response_len]

    @property
    def lengths(self) -> jax.Array:
        return self.response_mask.sum(-1)


def make_rollout(model, *, num_samples: int, max_new_tokens: int, temperature: float = 1.0,
                 top_k: int = 0, top_p: float = 1.0, stop_tokens=(), pad_id: int = 0
                 ) -> Callable[..., Rollout]:
    """`rollout(params, prompt_ids, prompt_mask, rng) -> Rollout` with the jitted KV sampler."""
    from alignax.sampling import sample

    stop_tokens = tuple(int(t) for t in stop_tokens)

    def rollout(params, prompt_ids, prompt_mask, rng) -> Rollout:
        out = sample(model, params, jnp.asarray(prompt_ids), jnp.asarray(prompt_mask), rng,
                     max_new_tokens=max_new_tokens, num_samples=num_samples,
                     temperature=temperature, top_k=top_k, top_p=top_p,
                     stop_tokens=stop_tokens, pad_id=pad_id)
        return Rollout(ids=jnp.concatenate([out.prompt_ids, out.tokens], axis=1),
                       mask=jnp.concatenate([out.prompt_mask, out.mask], axis=1),
                       response_mask=out.mask, old_logps=jnp.where(out.mask, out.logps, 0.0),
                       prompt_index=out.prompt_index)

    return rollout


def response_logits(apply_fn, params, ids, mask, response_len: int) -> jax.Array:
    """Logits that predict the R response tokens: [N, R, V].

    `apply_fn` is an alignax causal LM's apply (it takes `logits_range`, so the LM head runs
    on the R predicting positions only).
    """
    t = ids.shape[1]
    return apply_fn(params, ids, mask, logits_range=(t - response_len - 1, t - 1))


def response_logps(apply_fn, params, ids, mask, response_len: int) -> jax.Array:
    """Log-probs of the R response tokens under `params`: [N, R] float32."""
    logits = response_logits(apply_fn, params, ids, mask, response_len)
    return ops.token_logprobs(logits, ids[:, -response_len:])


def make_reference_logps(apply_fn, response_len: int) -> Callable:
    """Jitted `(ref_params, ids, mask) -> [N, R]` log-probs of the frozen reference."""
    return jax.jit(lambda p, ids, mask: response_logps(apply_fn, p, ids, mask, response_len))


ADVANTAGES = ("grpo", "dr_grpo", "rloo", "reinforce_pp", "bnpo", "reinforce")


def compute_advantages(name: str, rewards, num_samples: int, **kwargs) -> jax.Array:
    """Sequence-level advantages [N] from rewards [N] (rows prompt-major, n per prompt).

    - "grpo": (r - group mean) / (group std + eps) (Shao et al. 2024, arXiv 2402.03300);
    - "dr_grpo": r - group mean (Liu et al. 2025, arXiv 2503.20783);
    - "rloo": r - mean of the group's other samples (Ahmadian et al. 2024, arXiv 2402.14740);
    - "reinforce_pp": batch-normalised r (Hu 2025, arXiv 2501.03262);
    - "bnpo": (r - group mean) / Beta density, alpha/beta fitted on the batch (arXiv 2506.02864);
    - "reinforce": r itself (no baseline).
    """
    r = jnp.asarray(rewards, jnp.float32)
    if name == "grpo":
        return ops.group_normalized_advantages(r, num_samples, **kwargs)
    if name == "dr_grpo":
        return ops.group_normalized_advantages(r, num_samples, scale_by_std=False)
    if name == "rloo":
        return ops.leave_one_out_advantages(r, num_samples)
    if name == "reinforce_pp":
        return ops.batch_normalized_advantages(r, **kwargs)
    if name == "bnpo":
        rates = r.reshape(-1, num_samples).mean(axis=1)
        alpha, beta = ops.beta_normalization_parameters(rates)
        return ops.beta_normalized_advantages(r, num_samples, alpha=alpha, beta=beta)
    if name == "reinforce":
        return r
    raise ValueError(f"unknown advantage estimator {name!r}; valid: {ADVANTAGES}")


def bootstrap_reference_rows(rng: np.random.Generator, num_groups: int,
                             num_samples: int) -> tuple[np.ndarray, np.ndarray]:
    """BRPO's bootstrapped references: one random sample per group, as (index within the group
    [G], row of each sample's group reference [G * n])."""
    index = rng.integers(0, num_samples, size=num_groups)
    rows = np.repeat(index + np.arange(num_groups) * num_samples, num_samples)
    return index, rows


OBJECTIVE_AGGREGATIONS = ("weighted", "log_tamed")
OBJECTIVE_WEIGHTINGS = ("fixed", "gradient", "hypervolume")
MAX_FRONT = 8


class ObjectiveMixer:
    """Several rewards [K, N] -> one reward [N], with fixed or dynamic objective weights.

    - aggregation "weighted": sum_k w_k r_k; "log_tamed": PaCo-RL's log-tamed sum
      (`alignax.rewards.aggregate.log_tamed_sum`).
    - weighting "fixed": w stays; "gradient": after each iteration
      w <- softmax(log w + step_size * sum_j <g_k, g_j>) from the per-objective policy
      gradients g_k (`gradient_weight_update`); "hypervolume": each sample's reward is
      multiplied by m_i = 0.5 + 1.5 tanh(HV gain of its objective vector over the front of the
      earlier iterations' mean vectors), with the first iteration's mean as the reference point
      (`hypervolume_multiplier`).

    The state (weights, reference point and front) is a flat dict of floats, so the recipes
    checkpoint it with the train state and a resumed run repeats an uninterrupted one.
    """

    def __init__(self, weights, *, aggregation: str = "weighted", weighting: str = "fixed",
                 step_size: float = 0.1):
        if aggregation not in OBJECTIVE_AGGREGATIONS:
            raise ValueError(f"unknown objective aggregation {aggregation!r}; valid: "
                             f"{OBJECTIVE_AGGREGATIONS}")
        if weighting not in OBJECTIVE_WEIGHTINGS:
            raise ValueError(f"unknown objective weighting {weighting!r}; valid: "
                             f"{OBJECTIVE_WEIGHTINGS}")
        w = np.asarray(weights, np.float64)
        if w.ndim != 1 or len(w) < 1 or (w < 0).any() or w.sum() <= 0:
            raise ValueError(f"objective weights must be K >= 1 non-negative numbers, got {w}")
        self.num = len(w)
        self.initial = w / w.sum() if weighting == "gradient" else w
        self.aggregation, self.weighting, self.step_size = aggregation, weighting, step_size

    def initial_state(self) -> dict[str, float]:
        """Weights, and for "hypervolume" the reference point and MAX_FRONT front rows (NaN
        while unset: the keys stay fixed so the state restores into the same structure)."""
        state = {f"objective_weight_{k}": float(x) for k, x in enumerate(self.initial)}
        if self.weighting == "hypervolume":
            state.update({f"reference_{k}": float("nan") for k in range(self.num)})
            state.update({f"front_{j}_{k}": float("nan") for j in range(MAX_FRONT)
                          for k in range(self.num)})
        return state

    def reference(self, state: Mapping[str, float]) -> np.ndarray | None:
        ref = np.array([state[f"reference_{k}"] for k in range(self.num)])
        return None if np.isnan(ref).any() else ref

    def weights(self, state: Mapping[str, float]) -> np.ndarray:
        return np.array([state[f"objective_weight_{k}"] for k in range(self.num)], np.float32)

    def front(self, state: Mapping[str, float]) -> list[np.ndarray]:
        rows = [np.array([state[f"front_{j}_{k}"] for k in range(self.num)])
                for j in range(MAX_FRONT)]
        return [q for q in rows if not np.isnan(q).any()]

    def check(self, rewards) -> jax.Array:
        r = jnp.asarray(rewards, jnp.float32)
        if r.ndim != 2 or r.shape[0] != self.num:
            raise ValueError(f"with {self.num} objectives the reward_fn must return [K={self.num},"
                             f" N] rewards, got shape {tuple(r.shape)}")
        return r

    def combine(self, rewards, state: Mapping[str, float]) -> jax.Array:
        """[K, N] -> [N] with the current weights (and hypervolume multipliers)."""
        from alignax.rewards import aggregate as agg

        r = self.check(rewards)
        w = self.weights(state)
        out = agg.weighted_sum(r, w) if self.aggregation == "weighted" else agg.log_tamed_sum(r, w)
        ref = self.reference(state) if self.weighting == "hypervolume" else None
        if ref is not None:
            front = self.front(state)
            points = np.asarray(r, np.float64).T
            mult = np.array([agg.hypervolume_multiplier(front, p, ref) for p in points])
            out = out * jnp.asarray(mult, jnp.float32)
        return out

    def update(self, rewards, state: Mapping[str, float], *, gradients=None
               ) -> dict[str, float]:
        """The state after an iteration with objective rewards [K, N] (and, for "gradient",
        the per-objective policy gradients [K, D])."""
        from alignax.rewards import aggregate as agg

        state = dict(state)
        if self.weighting == "gradient":
            w = agg.gradient_weight_update(self.weights(state), gradients,
                                           step_size=self.step_size)
            state.update({f"objective_weight_{k}": float(x) for k, x in enumerate(w)})
        elif self.weighting == "hypervolume":
            mean = np.asarray(self.check(rewards), np.float64).mean(axis=1)
            ref = self.reference(state)
            if ref is None:
                state.update({f"reference_{k}": float(x) for k, x in enumerate(mean)})
            else:
                front = [q for q in agg.pareto_front(self.front(state) + [mean])
                         if np.all(q > ref)][-MAX_FRONT:]
                for j in range(MAX_FRONT):
                    row = front[j] if j < len(front) else np.full(self.num, np.nan)
                    state.update({f"front_{j}_{k}": float(x) for k, x in enumerate(row)})
        return state


@dataclasses.dataclass
class AdaptiveKLController:
    """Adaptive KL coefficient (Ziegler et al. 2019, arXiv 1909.08593):

        e = clip(KL / target - 1, -0.2, 0.2),  coef <- coef (1 + e n / horizon)

    after each batch of n samples; `target=None` keeps the coefficient fixed.
    """

    coef: float
    target: float | None = None
    horizon: int = 10_000

    def update(self, kl: float, num_samples: int) -> float:
        if self.target is not None:
            error = float(np.clip(kl / self.target - 1.0, -0.2, 0.2))
            self.coef *= 1.0 + error * num_samples / self.horizon
        return self.coef


def kl_penalized_rewards(rewards, logps, ref_logps, response_mask, *, coef: float,
                         estimator: str = "k1") -> jax.Array:
    """KL in the reward: r - coef * sum_t kl_t over the response ([N] rewards, [N, R] log-probs).
    """
    kl = ops.kl_estimate(logps, ref_logps, estimator)
    return jnp.asarray(rewards, jnp.float32) - coef * ops.masked_sum(kl, response_mask)


def training_batch(rollout: Rollout, advantages, *, ref_logps=None) -> dict[str, jax.Array]:
    """The update's batch: ids, mask, response_mask, old_logps, advantages [, ref_logps]."""
    batch = {"ids": rollout.ids, "mask": rollout.mask, "response_mask": rollout.response_mask,
             "old_logps": rollout.old_logps,
             "advantages": jnp.asarray(advantages, jnp.float32)}
    if ref_logps is not None:
        batch["ref_logps"] = jnp.asarray(ref_logps, jnp.float32)
    return batch


def minibatches(batch: Mapping[str, Any], num_minibatches: int, rng: np.random.Generator):
    """Shuffled equal minibatches of a batch of rows (a list of dicts)."""
    n = next(iter(batch.values())).shape[0]
    if n % num_minibatches:
        raise ValueError(f"{n} rows do not split into {num_minibatches} minibatches")
    order = rng.permutation(n).reshape(num_minibatches, -1)
    return [{k: v[idx] for k, v in batch.items()} for idx in order]


POLICY_LOSSES = ("ppo_clip", "gspo")


def make_policy_loss(apply_fn, *, loss: str = "ppo_clip", clip_low: float = 0.2,
                     clip_high: float | None = None, kl_coef: float = 0.0,
                     kl_estimator: str = "k3", aggregation: str = "token_mean",
                     entropy_coef: float = 0.0, max_length: int | None = None) -> Callable:
    """`loss_fn(params, batch, rng)` of the policy update on a `training_batch`.

    loss = aggregate(PPO-clip token losses) [or the mean of GSPO's sequence losses]
           + kl_coef * aggregate(KL estimate to the reference)   (KL in the loss, GRPO style)
           - entropy_coef * aggregate(entropy)

    Metrics: pg_loss, kl (k3 estimate, token mean), entropy (token mean), clip_fraction,
    ratio (mean over response tokens), advantage mean/std.
    """
    if loss not in POLICY_LOSSES:
        raise ValueError(f"unknown policy loss {loss!r}; valid: {POLICY_LOSSES}")

    def loss_fn(params, batch, rng):
        del rng
        rmask = batch["response_mask"]
        r = rmask.shape[1]
        logits = response_logits(apply_fn, params, batch["ids"], batch["mask"], r)
        logps = ops.token_logprobs(logits, batch["ids"][:, -r:])
        adv = batch["advantages"]
        if loss == "ppo_clip":
            tok, stats = ppo_clip_loss(logps, batch["old_logps"], adv, rmask,
                                       clip_low=clip_low, clip_high=clip_high)
            pg = aggregate(tok, rmask, aggregation, max_length=max_length)
            clip_fraction = ops.masked_mean(stats["clipped"], rmask, axis=None)
            ratio = ops.masked_mean(stats["ratio"], rmask, axis=None)
        else:
            seq, stats = gspo_loss(logps, batch["old_logps"], adv, rmask,
                                   **({} if clip_high is None else {"clip_high": clip_high}),
                                   clip_low=clip_low)
            pg = seq.mean()
            clip_fraction, ratio = stats["clipped"].mean(), stats["ratio"].mean()
        total = pg
        metrics = {"pg_loss": pg, "clip_fraction": clip_fraction, "ratio": ratio,
                   "advantage_mean": adv.mean(), "advantage_std": adv.std()}
        if "ref_logps" in batch:
            kl_tok = ops.kl_estimate(logps, batch["ref_logps"], kl_estimator)
            kl = aggregate(kl_tok, rmask, aggregation, max_length=max_length)
            metrics["kl"] = ops.masked_mean(ops.kl_estimate(logps, batch["ref_logps"], "k3"),
                                            rmask, axis=None)
            if kl_coef:
                total = total + kl_coef * kl
        entropy = ops.token_entropy(logits)
        metrics["entropy"] = ops.masked_mean(entropy, rmask, axis=None)
        if entropy_coef:
            total = total - entropy_coef * aggregate(entropy, rmask, aggregation,
                                                     max_length=max_length)
        return total, metrics

    return loss_fn


class Placement:
    """Where an online recipe's arrays live: one device (`mesh=None`) or sharded over a mesh.

    With a mesh (axes data x fsdp x tensor, `alignax.train.sharding.make_mesh`), the trained
    params and their optimizer state are sharded by their logical axis names, frozen params
    (the reference) likewise, and every row-major array (prompts, rollouts, training
    minibatches) is split by rows over data x fsdp. The jitted sampler and reference forward
    follow their inputs' shardings; the update step is compiled with explicit shardings
    (`make_train_step`). Online recipes run in one process; the mesh spans its devices.
    """

    def __init__(self, mesh=None):
        if mesh is not None and jax.process_count() > 1:
            raise NotImplementedError(
                "online recipes run in one process (a mesh over its local devices); "
                f"this job has {jax.process_count()} processes")
        self.mesh = mesh

    @classmethod
    def from_config(cls, mesh_config: Mapping[str, int] | None) -> "Placement":
        """No mesh for None; otherwise `mesh_from_config` (keys among data/fsdp/tensor)."""
        return cls(None if mesh_config is None else shd.mesh_from_config(mesh_config))

    @property
    def row_shards(self) -> int:
        """How many ways rows are split (data x fsdp; 1 without a mesh)."""
        if self.mesh is None:
            return 1
        return int(self.mesh.shape["data"]) * int(self.mesh.shape["fsdp"])

    def check_rows(self, rows: int, what: str) -> None:
        if rows % self.row_shards:
            raise ValueError(f"{what} = {rows} rows do not split over the mesh's "
                             f"data x fsdp = {self.row_shards} shards")

    def put_rows(self, tree):
        """Row-sharded copies of a tree of [rows, ...] arrays (unchanged without a mesh)."""
        if self.mesh is None:
            return tree
        return jax.device_put(tree, shd.batch_sharding(self.mesh))

    def param_shardings(self, params, logical_axes):
        return shd.param_shardings(jax.eval_shape(lambda: params), logical_axes, self.mesh)

    def put_params(self, params, logical_axes):
        """Frozen params placed by their logical axes (unchanged without a mesh)."""
        if self.mesh is None:
            return params
        return jax.device_put(params, self.param_shardings(params, logical_axes))

    def make_state_and_step(self, params, logical_axes, tx, loss_fn, seed: int):
        """(TrainState of a copy of `params`, its jitted `make_train_step(loss_fn, tx)`).

        The params are copied because the step donates the state and the initial params are
        usually also the reference.
        """
        from alignax.train.state import TrainState
        from alignax.train.step import make_train_step

        if self.mesh is None:
            state = TrainState.create(jax.tree.map(jnp.copy, params), tx, jax.random.key(seed))
            return state, make_train_step(loss_fn, tx)
        p_sh = self.param_shardings(params, logical_axes)
        abstract = jax.eval_shape(lambda: TrainState.create(params, tx, jax.random.key(seed)))
        repl = shd.replicated(self.mesh)
        state_sh = TrainState(
            params=p_sh,
            opt_state=shd.tree_shardings_like(abstract.opt_state, abstract.params, p_sh,
                                              self.mesh),
            step=repl, rng=repl)
        state = jax.jit(lambda p: TrainState.create(p, tx, jax.random.key(seed)),
                        out_shardings=state_sh)(params)
        step = make_train_step(loss_fn, tx, mesh=self.mesh, state_sharding=state_sh,
                               batch_sharding=shd.batch_sharding(self.mesh))
        return state, step


def run_iterations(workdir: str, *, state, iterate: Callable, iterations: int,
                   extra: Mapping[str, float] | None = None, eval_fn: Callable | None = None,
                   eval_every: int = 0, log_every: int = 1, checkpoint_every: int = 10) -> dict:
    """The loop every online recipe shares: resume, iterate, evaluate, log, checkpoint.

    `iterate(state, extra, it) -> (state, extra, metrics)` runs iteration `it` (0-based) and
    must draw its randomness from (seed, it) so a resumed run repeats an uninterrupted one;
    `extra` holds float scalars that evolve (e.g. an adaptive KL coefficient) and are
    checkpointed with the state. `eval_fn(state) -> metrics` runs every `eval_every`
    iterations and after the last; its metrics are logged as eval/*.

    Returns {"state", "extra", "metrics" (last), "eval" (last), "history", "start_iteration"}.
    """
    from alignax.train.checkpoint import Checkpointer, abstract_like
    from alignax.train.writers import MetricsWriter

    extra = {k: float(v) for k, v in (extra or {}).items()}
    ckpt = Checkpointer(os.path.join(workdir, "checkpoints"), every=int(checkpoint_every))
    start = 0
    tree = {"train": state, "extra": {k: jnp.float32(v) for k, v in extra.items()}}
    restored = ckpt.restore(abstract_like(tree))
    if restored is not None:
        tree, start = restored
        state = tree["train"]
        extra = {k: float(v) for k, v in tree["extra"].items()}
    writer = MetricsWriter(workdir, enabled=jax.process_index() == 0)
    writer.truncate_after(start)
    history, metrics, eval_metrics = [], {}, {}
    try:
        for it in range(start, iterations):
            state, extra, metrics = iterate(state, extra, it)
            metrics = {k: float(v) for k, v in metrics.items()}
            done = it + 1
            if eval_fn is not None and (done == iterations or (
                    eval_every and done % int(eval_every) == 0)):
                eval_metrics = {f"eval/{k}": float(v) for k, v in eval_fn(state).items()}
                metrics.update(eval_metrics)
            if done % int(log_every) == 0 or done == iterations:
                writer.write(done, metrics)
            history.append(metrics)
            ckpt.save(done, {"train": state,
                             "extra": {k: jnp.float32(v) for k, v in extra.items()}},
                      force=done == iterations)
    finally:
        ckpt.close()
        writer.close()
    return {"state": state, "extra": extra, "metrics": metrics, "eval": eval_metrics,
            "history": history, "start_iteration": start}


def mean_metrics(step_metrics: list) -> dict[str, float]:
    """Mean over the update steps of an iteration of each metric."""
    return {k: float(np.mean([float(m[k]) for m in step_metrics])) for k in step_metrics[0]}


def merged_config(defaults: Callable[..., dict], config: Mapping[str, Any]) -> dict:
    """`defaults(**known)` with the keys of `config` that `defaults()` knows (others ignored, so
    a recipe's section may hold extra keys of the experiment)."""
    known = defaults()
    return defaults(**{k: v for k, v in dict(config).items() if k in known})


def prompt_pool(prompt_ids, prompt_mask, per_iteration: int) -> tuple[np.ndarray, np.ndarray]:
    """The prompt pool as numpy arrays, checked to hold at least one iteration's prompts."""
    prompt_ids, prompt_mask = np.asarray(prompt_ids), np.asarray(prompt_mask)
    if len(prompt_ids) < per_iteration:
        raise ValueError(f"{len(prompt_ids)} prompts < prompts_per_iteration={per_iteration}")
    return prompt_ids, prompt_mask


def rollout_from_config(model, cfg: Mapping[str, Any], num_samples: int) -> Callable:
    """The jitted `make_rollout` of a recipe config (max_new_tokens, temperature, top_k, top_p,
    stop_tokens)."""
    return jax.jit(make_rollout(
        model, num_samples=num_samples, max_new_tokens=int(cfg["max_new_tokens"]),
        temperature=float(cfg["temperature"]), top_k=int(cfg["top_k"]),
        top_p=float(cfg["top_p"]), stop_tokens=tuple(cfg["stop_tokens"])))


def iteration_rollout(rollout_fn, params, prompt_ids, prompt_mask, *, seed: int, it: int,
                      per_iteration: int, placement: Placement | None = None
                      ) -> tuple[Rollout, np.random.Generator]:
    """Iteration `it`'s rollout on prompts drawn from the pool with a (seed, it) generator, its
    `prompt_index` remapped to pool rows; returns the generator for the update's shuffles.
    With a `placement`, the drawn prompts are row-sharded over its mesh first."""
    rng = np.random.default_rng([seed, it])
    rows = rng.choice(len(prompt_ids), per_iteration, replace=False)
    ids, mask = prompt_ids[rows], prompt_mask[rows]
    if placement is not None:
        ids, mask = placement.put_rows((ids, mask))
    rollout = rollout_fn(params, ids, mask, jax.random.fold_in(jax.random.key(seed), it))
    return rollout._replace(prompt_index=jnp.asarray(rows)[rollout.prompt_index]), rng


def run_updates(step, state, batch, *, epochs: int, num_minibatches: int,
                rng: np.random.Generator, split: Callable = None,
                placement: Placement | None = None):
    """`epochs` passes of `step` over shuffled minibatches (`split(batch, n, rng)`, default
    `minibatches`, each row-sharded by `placement` if given): returns (state, mean metrics,
    seconds)."""
    split = minibatches if split is None else split
    t0 = time.perf_counter()
    step_metrics = []
    for _ in range(int(epochs)):
        for mb in split(batch, int(num_minibatches), rng):
            if placement is not None:
                mb = placement.put_rows(mb)
            state, m = step(state, mb)
            step_metrics.append(m)
    jax.block_until_ready(state.params)
    return state, mean_metrics(step_metrics), time.perf_counter() - t0


def run_recipe(workdir: str, *, state, iterate: Callable, cfg: Mapping[str, Any],
               eval_fn: Callable | None, params_of: Callable = lambda st: st.params,
               extra: Mapping[str, float] | None = None) -> dict:
    """`run_iterations` with a recipe config's schedule; the result as the recipes return it:
    {"params", "state", "metrics", "eval", "history", "start_iteration"}."""
    out = run_iterations(
        workdir, state=state, iterate=iterate, iterations=int(cfg["iterations"]), extra=extra,
        eval_fn=None if eval_fn is None else (lambda st: eval_fn(params_of(st))),
        eval_every=int(cfg["eval_every"]), log_every=int(cfg["log_every"]),
        checkpoint_every=int(cfg["checkpoint_every"]))
    return {"params": params_of(out["state"]), "state": out["state"], "metrics": out["metrics"],
            "eval": out["eval"], "history": out["history"],
            "start_iteration": out["start_iteration"]}
