"""The online recipes' shared pieces: rollouts, advantages, the iteration state, the loop.

An iteration of every critic-free method (GRPO and variants, RLOO, REINFORCE++, BNPO, BRPO) is

    rollout = make_rollout(...)              # jitted sampler: n samples per prompt
    rewards = reward_fn(rollout)             # [N] (rules, verifiers, reward models, ...)
    advantages = advantage_fn(rewards, ...)  # e.g. ADVANTAGES["grpo"](rewards, n)
    batch = training_batch(rollout, advantages, ref_logps=reference_logps(...))
    state = step(state, minibatch) ...       # make_train_step(policy loss), E epochs

and it runs as one step of the one training loop (`alignax.train.loop.run_loop`, through
`run_online`): the loop passes the iteration index, checkpoints the whole `OnlineState` (train
state, evolving controllers, a refreshed reference), logs, halts on NaN/inf, checkpoints on
SIGTERM and resumes exactly. Prompts and sampling keys are functions of (seed, iteration).

Shapes: P prompt tokens (left-padded), R generated tokens, N = prompts x n rows (prompt-major).
The training forward runs on `ids = [prompt, response]` with `mask = [prompt_mask,
response_mask]`; the log-prob of response token j is read from the logits at position P - 1 + j.
The sampler reports the same log-probs (fp32, <= 1e-5), so the behaviour policy's log-probs
(`old_logps`) come from the rollout for free.

Every recipe's config has `mesh`: None runs on one device; {"data": d, "fsdp": f, "tensor": t}
shards the rollout, the reference forward and the update over a device mesh
(`alignax.train.sharding.Placement`): params by their logical axes, rows over data x fsdp.
The results match the one-device run (tests/algorithms/test_online_mesh.py). On several
processes (`jax.distributed.initialize`; a mesh is then required) the mesh spans every process's
devices: each process places and samples only its rows of the iteration's prompts (whole prompt
groups), scores its own rollouts (`rewards_where_sampled`), and the advantages, the reference
forward, the update and the logged metrics are computed on the global arrays (process 0 writes
them); checkpoints are collective. The results equal one process's on the same mesh
(tests/test_distributed_online.py).
"""

from __future__ import annotations

import time
from typing import Any, Callable, Mapping, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from alignax import ops
from alignax.sampling import sample
from alignax.train import sharding as shd
from alignax.train.checkpoint import abstract_like
from alignax.train.loop import run_loop
from alignax.train.state import TrainState
from alignax.train.step import make_train_step
from alignax.types import Rollout

__all__ = [
    "ADVANTAGES", "OnlineState", "Rollout", "compute_advantages", "global_reward",
    "initial_state", "iteration_rollout", "make_reference_logps", "make_rollout",
    "make_update_step", "mean_metrics", "mean_response_length", "minibatches", "prompt_pool",
    "response_logits", "response_logps", "rewards_where_sampled", "rollout_from_config",
    "run_online", "run_updates", "training_batch", "uses_token_logps",
]


def make_rollout(model, *, num_samples: int, max_new_tokens: int, temperature: float = 1.0,
                 top_k: int = 0, top_p: float = 1.0, min_p: float = 0.0,
                 repetition_penalty: float = 1.0, stop_tokens=(), pad_id: int = 0
                 ) -> Callable[..., Rollout]:
    """`rollout(params, prompt_ids, prompt_mask, rng) -> Rollout` with the jitted KV sampler
    (`alignax.sampling.sample`; `old_logps` are the policy's own log-probs of the sampled tokens,
    also with min_p or a repetition penalty processing the sampling distribution)."""
    stop_tokens = tuple(int(t) for t in stop_tokens)

    def rollout(params, prompt_ids, prompt_mask, rng) -> Rollout:
        out = sample(model, params, jnp.asarray(prompt_ids), jnp.asarray(prompt_mask), rng,
                     max_new_tokens=max_new_tokens, num_samples=num_samples,
                     temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p,
                     repetition_penalty=repetition_penalty, stop_tokens=stop_tokens,
                     pad_id=pad_id)
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


def response_logps(apply_fn, params, ids, mask, response_len: int, *,
                   token_logps: bool = False) -> jax.Array:
    """Log-probs of the R response tokens under `params`: [N, R] float32.

    With `token_logps=True` the model computes them itself: `apply_fn(params, ids, mask,
    logits_range=(T - R - 1, T - 1), targets=ids[:, -R:])` (an alignax causal LM; with
    `logits_chunk > 0` in vocabulary chunks, `alignax.ops.chunked_token_logprobs`), so the
    [N, R, V] logits are never formed, in the forward or the backward. The values and
    gradients equal the logits path's (float32, 1e-5). Recipes set it with
    `uses_token_logps(model)`.
    """
    if token_logps:
        t = ids.shape[1]
        return apply_fn(params, ids, mask, logits_range=(t - response_len - 1, t - 1),
                        targets=ids[:, -response_len:])
    logits = response_logits(apply_fn, params, ids, mask, response_len)
    return ops.token_logprobs(logits, ids[:, -response_len:])


def make_reference_logps(apply_fn, response_len: int, *, token_logps: bool = False
                         ) -> Callable:
    """Jitted `(ref_params, ids, mask) -> [N, R]` log-probs of the frozen reference
    (`token_logps` as in `response_logps`)."""
    return jax.jit(lambda p, ids, mask: response_logps(apply_fn, p, ids, mask, response_len,
                                                       token_logps=token_logps))


def uses_token_logps(model) -> bool:
    """Whether the online losses ask `model` for token log-probs instead of logits: True for a
    causal LM with `config.logits_chunk > 0` (then no [N, R, V] logits exist in the update or
    the reference forward)."""
    return int(getattr(getattr(model, "config", None), "logits_chunk", 0) or 0) > 0


def head_entropy_fn(model) -> Callable | None:
    """`entropy_fn(params, hidden [N, R, D]) -> [N, R]`: the entropy of the policy at the
    positions whose final hidden states are `hidden` (`apply_fn(..., return_hidden=True)`),
    computed from the LM head in vocabulary chunks (`alignax.ops.chunked.chunked_entropy`,
    chunk = `logits_chunk`), so no [N, R, V] logits exist; None when `model` does not take
    token log-probs (`uses_token_logps`). Reads the head from an alignax CausalLM's params: the
    tied embedding table decoder/embed/embedding [V, D] or lm_head/kernel [D, V]."""
    if not uses_token_logps(model):
        return None
    from alignax.ops.chunked import chunked_entropy

    cfg = model.config
    tie, chunk = bool(cfg.tie_embeddings), int(cfg.logits_chunk)

    def entropy_fn(params, hidden):
        weight = params["decoder"]["embed"]["embedding"] if tie else params["lm_head"]["kernel"]
        if not isinstance(weight, jax.Array):
            raise ValueError(f"the chunked entropy needs the LM head as an array, got "
                             f"{type(weight).__name__} (LoRA on the head is not supported)")
        return chunked_entropy(hidden, weight, chunk=chunk, weight_layout="vd" if tie else "dv")

    return entropy_fn


def response_logps_entropy(apply_fn, params, ids, mask, response_len: int, entropy_fn, *,
                           differentiable: bool) -> tuple[jax.Array, jax.Array]:
    """(log-probs, entropies) [N, R] of the response tokens from one forward with token
    log-probs (`apply_fn(..., targets=, return_hidden=True)`) and `entropy_fn` (see
    `head_entropy_fn`) on its hidden states. Without `differentiable` the entropy is a metric
    only: computed under stop_gradient (its backward is skipped)."""
    t = ids.shape[1]
    logps, hidden = apply_fn(params, ids, mask, logits_range=(t - response_len - 1, t - 1),
                             targets=ids[:, -response_len:], return_hidden=True)
    entropy = entropy_fn(params, hidden)
    return logps, entropy if differentiable else jax.lax.stop_gradient(entropy)


def _bnpo(rewards, num_samples: int) -> jax.Array:
    rates = rewards.reshape(-1, num_samples).mean(axis=1)
    alpha, beta = ops.beta_normalization_parameters(rates)
    return ops.beta_normalized_advantages(rewards, num_samples, alpha=alpha, beta=beta)


# Sequence-level advantages [N] from rewards [N] (rows prompt-major, n per prompt):
def check_config(cfg: Mapping[str, Any], label: str, *, rows_per_prompt: int) -> None:
    """The checks every online recipe shares, on a resolved config (ValueError naming `label`):
    the optimizer and mesh (`common.check_common`), that `prompts_per_iteration` and a
    minibatch (`prompts_per_iteration * rows_per_prompt / minibatches` rows; for online DPO,
    rows_per_prompt = 1, pairs) split evenly over the minibatches and the mesh's row shards,
    and that `grad_accum_steps` (if the config has it) is a positive int dividing the minibatch
    into micro-batches that split over the mesh's row shards too."""
    from alignax.algorithms import common

    common.check_common(cfg, label)
    per_iter, mb = int(cfg["prompts_per_iteration"]), int(cfg["minibatches"])
    rows = per_iter * rows_per_prompt
    if rows % mb:
        raise ValueError(f"{label}: {rows} rows per iteration do not split into minibatches="
                         f"{mb}")
    k = cfg.get("grad_accum_steps", 1)
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"{label}: grad_accum_steps must be a positive int, got {k!r}")
    if (rows // mb) % k:
        raise ValueError(f"{label}: a minibatch of {rows // mb} "
                         f"{'pairs' if rows_per_prompt == 1 else 'rows'} does not split into "
                         f"grad_accum_steps={k} micro-batches")
    place = shd.Placement.from_config(cfg["mesh"])
    try:
        place.check_rows(per_iter, "prompts_per_iteration")
        place.check_rows(rows // mb, "minibatch")
        place.check_rows(rows // mb // k, "micro-batch (minibatch / grad_accum_steps)")
    except ValueError as e:
        raise ValueError(f"{label}: {e}") from None


ADVANTAGES: dict[str, Callable[[jax.Array, int], jax.Array]] = {
    # (r - group mean) / (group std + eps) (Shao et al. 2024, arXiv 2402.03300)
    "grpo": lambda r, n: ops.group_normalized_advantages(r, n),
    # r - group mean (Liu et al. 2025, arXiv 2503.20783)
    "dr_grpo": lambda r, n: ops.group_normalized_advantages(r, n, scale_by_std=False),
    # TRL GRPOTrainer's scale_rewards="group" / "batch": group-centred, divided by the
    # Bessel-corrected std of the group / of the whole batch, + 1e-4
    "grpo_unbiased": lambda r, n: ops.group_normalized_advantages(r, n, ddof=1, eps=1e-4),
    "grpo_batch_std": lambda r, n: ops.group_normalized_advantages(
        r, n, ddof=1, eps=1e-4, std_scope="batch"),
    # r - mean of the group's other samples (Ahmadian et al. 2024, arXiv 2402.14740)
    "rloo": ops.leave_one_out_advantages,
    # batch-normalised r (Hu 2025, arXiv 2501.03262)
    "reinforce_pp": lambda r, n: ops.batch_normalized_advantages(r),
    # (r - group mean) / Beta density, alpha/beta fitted on the batch (arXiv 2506.02864)
    "bnpo": _bnpo,
    # r itself (no baseline)
    "reinforce": lambda r, n: r,
}


def compute_advantages(name: str, rewards, num_samples: int) -> jax.Array:
    """`ADVANTAGES[name](rewards, num_samples)` with a clear error for an unknown name."""
    if name not in ADVANTAGES:
        raise ValueError(f"unknown advantage estimator {name!r}; valid: {sorted(ADVANTAGES)}")
    return ADVANTAGES[name](jnp.asarray(rewards, jnp.float32), num_samples)


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


def mean_response_length(rollout: Rollout) -> float:
    """The mean number of valid response tokens per row (on device: the rollout may be a global
    array over several processes)."""
    return float(jnp.mean(jnp.asarray(rollout.response_mask, jnp.float32).sum(-1)))


def mean_metrics(step_metrics: list) -> dict[str, float]:
    """Mean over the update steps of an iteration of each metric."""
    return {k: float(np.mean([float(m[k]) for m in step_metrics])) for k in step_metrics[0]}


def prompt_pool(prompt_ids, prompt_mask, per_iteration: int) -> tuple[np.ndarray, np.ndarray]:
    """The prompt pool as numpy arrays, checked to hold at least one iteration's prompts."""
    prompt_ids, prompt_mask = np.asarray(prompt_ids), np.asarray(prompt_mask)
    if len(prompt_ids) < per_iteration:
        raise ValueError(f"{len(prompt_ids)} prompts < prompts_per_iteration={per_iteration}")
    return prompt_ids, prompt_mask


def rollout_from_config(model, cfg: Mapping[str, Any], num_samples: int) -> Callable:
    """The jitted `make_rollout` of a recipe config (max_new_tokens, temperature, top_k, top_p,
    stop_tokens, and min_p / repetition_penalty where the recipe has them)."""
    return jax.jit(make_rollout(
        model, num_samples=num_samples, max_new_tokens=int(cfg["max_new_tokens"]),
        temperature=float(cfg["temperature"]), top_k=int(cfg["top_k"]),
        top_p=float(cfg["top_p"]), min_p=float(cfg.get("min_p", 0.0)),
        repetition_penalty=float(cfg.get("repetition_penalty", 1.0)),
        stop_tokens=tuple(cfg["stop_tokens"])))


def iteration_rollout(rollout_fn, params, prompt_ids, prompt_mask, *, seed: int, it: int,
                      per_iteration: int, placement: shd.Placement | None = None
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
    return rollout._replace(prompt_index=_take_rows(rows, rollout.prompt_index)), rng


@jax.jit
def _take_rows(rows, index):
    """rows[index] on device (jitted: `index` may be a global array over several processes)."""
    return jnp.asarray(rows)[index]


def global_reward(reward_fn: Callable) -> Callable:
    """`reward_fn` marked as taking the global rollout (jitted code, e.g. a reward model's
    forward on the sharded `rollout.ids`, params on the mesh) rather than this process's rows
    in numpy: see `rewards_where_sampled`. Returns a wrapper that calls `reward_fn`."""

    def reward(*args, **kwargs):
        return reward_fn(*args, **kwargs)

    reward.global_rollout = True
    return reward


def rewards_where_sampled(reward_fn: Callable | None, place: shd.Placement
                          ) -> Callable | None:
    """`reward_fn` on several processes: each process scores the rows it sampled.

    One process (or no mesh): `reward_fn` itself. Several processes: the returned
    `rollout -> rewards` calls `reward_fn` on a Rollout of this process's rows as numpy arrays
    (`Placement.local_rows`: the N / processes rows its devices generated, whole prompt groups
    because prompts split over the row shards before the n samples are drawn; `prompt_index`
    holds pool rows as always), and assembles the global row-sharded rewards [N] (or [K, N]
    for K objectives: rows on the last axis) from every process's [N_local] with
    `Placement.from_local_rows`. So a reward in python/numpy (rules, verifiers, a tokenizer's
    decode) runs on the host that holds the rollouts, with no gather, and the advantages that
    follow are computed on the global array: over whole groups, and over the whole batch for
    batch-normalised estimators. A reward marked with `global_reward` (jitted, on sharded
    arrays) gets the global rollout instead. A stateful reward (extra arguments) is only
    supported in one process (NotImplementedError).
    """
    if reward_fn is None or not place.multiprocess or getattr(reward_fn, "global_rollout",
                                                              False):
        return reward_fn

    def local_reward(rollout: Rollout, *state):
        if state:
            raise NotImplementedError("a stateful reward (reward_state) runs in one process "
                                      "only: its state would differ between processes")
        rows = rollout.ids.shape[0]
        out = np.asarray(reward_fn(place.local_rows(rollout)), np.float32)
        if out.ndim == 2:  # [K, N_local] objectives
            return place.from_local_rows(out.T, rows).T
        return place.from_local_rows(out, rows)

    return local_reward


def run_updates(step, state, batch, *, epochs: int, num_minibatches: int,
                rng: np.random.Generator, split: Callable = None,
                placement: shd.Placement | None = None):
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




class OnlineState(NamedTuple):
    """Everything an online recipe carries from one iteration to the next, checkpointed whole.

    Attributes:
      train: the TrainState of the trained params (policy, or {"policy", "value"}).
      controls: name -> typed state of an evolving controller (e.g. "kl": KLControlState,
        "objectives": ObjectiveState); empty when the recipe has none.
      ref: the reference params when the recipe refreshes them (iterative online DPO), else
        an empty dict (a frozen reference is a step argument, not state).
    """

    train: TrainState
    controls: dict
    ref: Any


def initial_state(place: shd.Placement, *, params, logical_axes, tx, seed: int,
                  controls: Mapping[str, Any] | None = None, ref_axes: Any = None,
                  with_ref: bool = False):
    """(`init() -> OnlineState`, the abstract OnlineState with shardings, the train state's
    shardings or None).

    The train state starts from a copy of `params` (the step donates it; `params` are usually
    also the reference). With `with_ref`, `ref` starts as another copy of `params`, placed by
    `ref_axes` (default `logical_axes`). `controls` are the controllers' initial states.
    Nothing is materialised until `init()` is called, which the loop does only when there is
    no checkpoint to restore.
    """
    controls = dict(controls or {})
    rng = jax.random.key(seed)

    def create(p):
        train = TrainState.create(jax.tree.map(jnp.copy, p), tx, rng)
        ref = jax.tree.map(jnp.copy, p) if with_ref else {}
        return OnlineState(train=train, controls=controls, ref=ref)

    abstract = jax.eval_shape(create, params)
    if place.mesh is None:
        device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
        shardings = jax.tree.map(lambda _: device, abstract)
        train_sharding = None
    else:
        train_sharding = place.state_shardings(abstract.train, logical_axes)
        repl = shd.replicated(place.mesh)
        ref_sh = (place.param_shardings(params, logical_axes if ref_axes is None else ref_axes)
                  if with_ref else {})
        shardings = OnlineState(train=train_sharding,
                                controls=jax.tree.map(lambda _: repl, abstract.controls),
                                ref=ref_sh)
    make = jax.jit(create, out_shardings=shardings)
    return (lambda: make(params)), abstract_like(abstract, shardings), train_sharding


def make_update_step(place: shd.Placement, loss_fn, tx, train_sharding=None, *,
                     num_frozen: int = 0, frozen_shardings=None, accum_steps: int = 1,
                     accum_weight: str | None = None):
    """The jitted, donated update step of the train state (explicit shardings with a mesh).

    `num_frozen` step arguments after the batch (e.g. a KL coefficient) are replicated unless
    `frozen_shardings` says otherwise. `accum_steps` = k > 1 (the recipes' `grad_accum_steps`)
    splits each minibatch into k micro-batches inside the step (`make_train_step`: activations
    for 1/k of the rows at a time, one optimizer update of the mean gradient); `accum_weight`
    names the loss's normaliser metric (e.g. "tokens" for a token-mean loss) so that the
    accumulated gradient equals the whole minibatch's."""
    kwargs = dict(accum_steps=int(accum_steps), accum_weight=accum_weight)
    if place.mesh is None:
        return make_train_step(loss_fn, tx, **kwargs)
    if frozen_shardings is None:
        frozen_shardings = [shd.replicated(place.mesh)] * num_frozen
    return make_train_step(loss_fn, tx, mesh=place.mesh, state_sharding=train_sharding,
                           batch_sharding=shd.batch_sharding(place.mesh),
                           frozen_shardings=frozen_shardings, **kwargs)


class OnlineLora(NamedTuple):
    """LoRA in an online recipe (`online_lora`): the trained params are the adapters, the base
    is one frozen array tree that is the adapted policy's weights and the reference.

    Attributes:
      adapters: the initial adapters (B = 0: the adapted policy starts equal to the base).
      axes: their logical axes (for the mesh).
      base: the frozen base params (placed on the mesh).
      base_shardings: their shardings (None without a mesh), for the step's frozen argument.
      model: `model` whose `apply_cached` runs the adapted projections (for the rollouts, with
        `policy(adapters)` as its params).
      policy: `adapters -> params` of the adapted model (`lora_params`; a valid `params` for
        `model.apply`/`apply_cached` inside `lora.intercept()`).
      merge: `adapters -> ` the merged params W + (alpha/r) A B (the recipe's result, eval).
      cfg: the `LoraConfig`.
    """

    adapters: Any
    axes: Any
    base: Any
    base_shardings: Any
    model: Any
    policy: Callable
    merge: Callable
    cfg: Any


def online_lora(model, lora_cfg: Mapping[str, Any], place: shd.Placement, base_params,
                logical_axes, seed: int) -> OnlineLora:
    """The LoRA pieces of an online recipe whose config has `lora` = {rank, alpha, targets,
    dropout, full} (`alignax.models.lora.LoraConfig`): adapters drawn from key(seed), the base
    placed by `logical_axes`. See `OnlineLora`; the loss is wrapped by `lora_loss`."""
    from alignax.models import lora

    lcfg = lora.LoraConfig.from_mapping(lora_cfg)
    base = place.put_params(base_params, logical_axes)
    adapters = lora.init_adapters(jax.random.key(seed), base, lcfg)
    axes = lora.adapter_logical_axes(adapters, logical_axes)
    shardings = None if place.mesh is None else place.param_shardings(base, logical_axes)
    return OnlineLora(
        adapters=adapters, axes=axes, base=base, base_shardings=shardings,
        model=model._replace(apply_cached=lora.with_adapters(model.apply_cached)),
        policy=lambda a: lora.lora_params(a, base, lcfg),
        merge=lambda a: lora.merge(base, a, lcfg), cfg=lcfg)


def lora_loss(loss_fn: Callable, lcfg) -> Callable:
    """`(adapters, batch, rng, base, *frozen) -> loss_fn(adapted params, batch, rng, *frozen)`:
    the base is the step's first frozen argument (neither donated nor differentiated), the
    other frozen arguments (e.g. the KL coefficient) follow it."""
    from alignax.models import lora

    inner = lora.make_lora_loss(lambda p, b, r, frozen=(): loss_fn(p, b, r, *frozen), lcfg,
                                reference=False)

    def loss(adapters, batch, rng, base, *frozen):
        return inner(adapters, batch, rng, base, frozen=frozen)

    return loss


def run_online(workdir: str, *, init_state: Callable[[], OnlineState], abstract_state,
               iterate: Callable[[OnlineState, int], tuple[OnlineState, Mapping[str, Any]]],
               cfg: Mapping[str, Any], eval_fn: Callable | None = None,
               params_of: Callable = lambda train: train.params, desc: str = "online") -> dict:
    """Runs `cfg["iterations"]` iterations of `iterate(state, it) -> (state, metrics)` in the one
    training loop (`run_loop`) with the recipe config's schedule (eval_every, log_every,
    checkpoint_every, progress).

    Returns {"params", "state" (the final OnlineState), "metrics" (last iteration), "eval"
    (last evaluation), "history" (every logged iteration of the whole run, also the part
    before a resume), "resumed_from"}.
    """
    result = run_loop(
        workdir, init_state=init_state, abstract_state=abstract_state, step_fn=iterate,
        num_steps=int(cfg["iterations"]),
        eval_fn=None if eval_fn is None else (lambda st: eval_fn(params_of(st.train))),
        eval_every=int(cfg["eval_every"]), log_every=int(cfg["log_every"]),
        checkpoint_every=int(cfg["checkpoint_every"]), progress=bool(cfg["progress"]),
        desc=desc)
    return {"params": params_of(result.state.train), "state": result.state,
            "metrics": result.metrics, "eval": result.eval_metrics, "history": result.history,
            "resumed_from": result.resumed_from}
