"""PPO for language models (Ouyang et al. 2022, arXiv 2203.02155; Ziegler et al. 2019): a policy
and a value model trained together, GAE advantages, the score at the last token and a per-token
KL penalty to the reference in the reward (fixed or adaptive coefficient).

Per iteration: rollouts (1 sample per prompt by default), sequence scores from `reward_fn`,
per-token rewards  r_t = -c * (log pi_old(y_t) - log pi_ref(y_t)) (+ score at the last valid
token), values V(s_t) from the value model on the rollout, GAE(gamma, lambda) advantages
(whitened over the batch) and returns, then `epochs` x `minibatches` updates of

    L = PPO-clip(policy) + vf_coef * clipped value loss - entropy_coef * entropy

in one jitted step over params {"policy", "value"}. The value model is a `TokenRewardModel`
(decoder + per-token linear head); V(s_t) is read at the position before token t.

Memory levers: with a policy of `logits_chunk > 0` the update and the reference forward take
token log-probs from the model (`make_ppo_loss(token_logps=True)`) and the entropy from the LM
head in vocabulary chunks (`online.head_entropy_fn`): no [N, R, V] logits. `grad_accum_steps` = k
splits each minibatch into k micro-batches inside the step (one update); with
aggregation="token_mean" the micro-batches are weighed by their response tokens ("tokens"), so
the update equals the whole minibatch's; with a "seq_mean_*" aggregation they weigh equally
(also exact: means over rows), but the token-mean metrics are then micro-batch means.
`lora` = {rank, alpha, targets, dropout, full} (`alignax.models.lora.LoraConfig`) trains
adapters of the policy on the frozen `init_params`, which are also the reference (`ref_params`
is then not used); the value model is trained in full (params {"policy": adapters, "value"});
the rollouts run the adapted policy and the result's "params" are merged.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp

from alignax import ops
from alignax._src.config import recipe_config, resolve_config
from alignax.algorithms import online
from alignax.algorithms.kl_control import adaptive_kl_control
from alignax.losses import aggregate, clipped_value_loss, ppo_clip_loss
from alignax.train import sharding as shd
from alignax.train.optim import make_optimizer
from alignax.types import Rollout

DEFAULTS = dict(
    iterations=20, prompts_per_iteration=16, num_samples=1, max_new_tokens=16,
    temperature=1.0, top_k=0, top_p=1.0, stop_tokens=(), clip_low=0.2, clip_high=None,
    value_clip=0.2, vf_coef=0.5, gamma=1.0, lam=0.95, whiten_advantages=True,
    kl_coef=0.05, kl_target=None, kl_horizon=10_000, entropy_coef=0.0,
    aggregation="token_mean", epochs=2, minibatches=2, grad_accum_steps=1,
    optimizer=dict(name="adamw", learning_rate=1e-5, warmup_steps=0, schedule="constant",
                   clip_norm=1.0, kwargs=dict(weight_decay=0.0)),
    checkpoint_every=10, eval_every=0, log_every=1, progress=True, mesh=None, lora=None,
)


def default_config(**overrides):
    """The locked config of the recipe (every key with its default), updated by `overrides`."""
    return recipe_config(DEFAULTS, overrides, "PPO config")


def response_values(value_apply, value_params, ids, mask, response_len: int) -> jax.Array:
    """V(s_t) for each response token t: the value head at the position before t. [N, R]."""
    return value_apply(value_params, ids, mask)[:, -response_len - 1:-1].astype(jnp.float32)


def token_rewards(scores, old_logps, ref_logps, response_mask, *, kl_coef: float) -> jax.Array:
    """r_t = -kl_coef (log pi_old - log pi_ref)_t, plus the sequence score at the last valid
    response token. [N], [N, R] x3 -> [N, R] (0 off the mask)."""
    m = jnp.asarray(response_mask, bool)
    r = -kl_coef * jnp.where(m, old_logps - ref_logps, 0.0)
    last = jnp.maximum(m.sum(-1) - 1, 0)
    at_last = jnp.arange(m.shape[1])[None, :] == last[:, None]
    return r + jnp.where(at_last & m, jnp.asarray(scores, jnp.float32)[:, None], 0.0)


def ppo_advantages(rewards, values, response_mask, *, gamma: float, lam: float,
                   whiten: bool = True) -> tuple[jax.Array, jax.Array]:
    """GAE advantages (optionally whitened over the batch's valid tokens) and returns."""
    adv, returns = ops.gae(rewards, values, response_mask, gamma=gamma, lam=lam)
    if whiten:
        adv = ops.batch_normalized_advantages(adv, response_mask)
    return adv, returns


def make_ppo_loss(policy_apply, value_apply, *, clip_low=0.2, clip_high=None, value_clip=0.2,
                  vf_coef=0.5, entropy_coef=0.0, aggregation="token_mean",
                  token_logps: bool = False, entropy_fn: Callable | None = None) -> Callable:
    """`loss_fn(params, batch, rng)` with params {"policy", "value"} and a batch of ids, mask,
    response_mask, old_logps, old_values, advantages [N, R], returns [N, R].

    `token_logps=True`: the policy's log-probs come from the model
    (`online.response_logps(..., token_logps=True)`, no [N, R, V] logits with
    `logits_chunk > 0`); the entropy then comes from `entropy_fn(policy params, hidden)`
    (`online.head_entropy_fn`, under stop_gradient when `entropy_coef` is 0); without one there
    is no `entropy` metric and `entropy_coef` must be 0 (ValueError).
    Metrics: pg_loss, value_loss, clip_fraction, ratio, entropy, value_mean, tokens (response
    tokens, the normaliser of the token-mean aggregation).
    """
    if token_logps and entropy_coef and entropy_fn is None:
        raise ValueError(f"entropy_coef={entropy_coef} with token_logps needs an entropy_fn "
                         "(online.head_entropy_fn) or the logits (logits_chunk=0)")

    def loss_fn(params, batch, rng):
        del rng
        rmask = batch["response_mask"]
        r = rmask.shape[1]
        entropy = None
        if token_logps and entropy_fn is not None:
            logps, entropy = online.response_logps_entropy(
                policy_apply, params["policy"], batch["ids"], batch["mask"], r, entropy_fn,
                differentiable=bool(entropy_coef))
        elif token_logps:
            logps = online.response_logps(policy_apply, params["policy"], batch["ids"],
                                          batch["mask"], r, token_logps=True)
        else:
            logits = online.response_logits(policy_apply, params["policy"], batch["ids"],
                                            batch["mask"], r)
            logps = ops.token_logprobs(logits, batch["ids"][:, -r:])
            entropy = ops.token_entropy(logits)
        tok, stats = ppo_clip_loss(logps, batch["old_logps"], batch["advantages"], rmask,
                                   clip_low=clip_low, clip_high=clip_high)
        pg = aggregate(tok, rmask, aggregation)
        values = response_values(value_apply, params["value"], batch["ids"], batch["mask"], r)
        vf = aggregate(clipped_value_loss(values, batch["old_values"], batch["returns"], rmask,
                                          clip=value_clip), rmask, aggregation)
        loss = pg + vf_coef * vf
        metrics = {
            "pg_loss": pg, "value_loss": vf,
            "clip_fraction": ops.masked_mean(stats["clipped"], rmask, axis=None),
            "ratio": ops.masked_mean(stats["ratio"], rmask, axis=None),
            "value_mean": ops.masked_mean(values, rmask, axis=None),
            "tokens": jnp.asarray(rmask, jnp.float32).sum(),
        }
        if entropy is not None:
            metrics["entropy"] = ops.masked_mean(entropy, rmask, axis=None)
            loss = loss - entropy_coef * aggregate(entropy, rmask, aggregation)
        return loss, metrics

    return loss_fn


def lora_ppo_loss(loss_fn: Callable, lcfg) -> Callable:
    """`(params {"policy": adapters, "value"}, batch, rng, base) -> loss_fn({"policy": adapted
    params, "value"}, batch, rng)`: LoRA on the policy, whose frozen base is the step's frozen
    argument; the value model's params are trained as they are (its plain kernels take
    nnx.Linear's own path inside `lora.intercept()`)."""
    from alignax.models import lora

    def loss(params, batch, rng, base):
        drop = jax.random.fold_in(rng, 1) if lcfg.dropout > 0 else None
        adapted = {"policy": lora.lora_params(params["policy"], base, lcfg, drop),
                   "value": params["value"]}
        with lora.intercept():
            return loss_fn(adapted, batch, rng)

    return loss


def validate(config: Mapping[str, Any] | None) -> dict:
    """The resolved config (see the module docstring), checked before any work: known keys,
    value types and ranges, the aggregation name, the optimizer, and how the rows split over
    minibatches and the mesh. Raises ValueError naming the bad key."""
    from alignax.algorithms import common
    from alignax.losses import AGGREGATIONS

    label = "PPO config"
    cfg = resolve_config(DEFAULTS, config, label)
    common.check_name(cfg["aggregation"], AGGREGATIONS, label, "aggregation")
    online.check_config(cfg, label, rows_per_prompt=int(cfg["num_samples"]))
    return cfg

def train(config: Mapping[str, Any], workdir: str, *, model, value_model, init_params,
          init_value_params, ref_params, prompt_ids, prompt_mask,
          reward_fn: Callable[[Rollout], Any], eval_fn: Callable | None = None,
          seed: int = 0) -> dict:
    """Runs PPO; returns {"params" (policy), "value_params", "metrics", "eval", "history",
    "state", "resumed_from"}.

    `eval_fn(policy_params) -> metrics`. The KL coefficient (`kl_control`) is checkpointed with
    the train state; resume as in `policy_gradient.train`.
    """
    cfg = validate(config)
    n, per_iter = int(cfg["num_samples"]), int(cfg["prompts_per_iteration"])
    r_len = int(cfg["max_new_tokens"])
    prompt_ids, prompt_mask = online.prompt_pool(prompt_ids, prompt_mask, per_iter)
    place = shd.Placement.from_config(cfg["mesh"])
    reward_fn = online.rewards_where_sampled(reward_fn, place)
    place.check_rows(per_iter, "prompts_per_iteration")
    place.check_rows(per_iter * n // int(cfg["minibatches"]), "minibatch")
    tx = make_optimizer(cfg["optimizer"], int(cfg["iterations"]) * int(cfg["epochs"])
                        * int(cfg["minibatches"]))
    params = {"policy": init_params, "value": init_value_params}
    axes = {"policy": model.logical_axes(init_params),
            "value": value_model.logical_axes(init_value_params)}
    lora = None
    if cfg["lora"]:
        lora = online.online_lora(model, cfg["lora"], place, init_params, axes["policy"], seed)
        ref_params = lora.base
        params["policy"], axes["policy"] = lora.adapters, lora.axes
    else:
        ref_params = place.put_params(ref_params, axes["policy"])
    kl_control = adaptive_kl_control(float(cfg["kl_coef"]), cfg["kl_target"],
                                     int(cfg["kl_horizon"]))
    init_state, abstract, train_sharding = online.initial_state(
        place, params=params, logical_axes=axes, tx=tx, seed=seed,
        controls={"kl": kl_control.init()})
    token_logps = online.uses_token_logps(model)
    loss_fn = make_ppo_loss(
        model.apply, value_model.apply, clip_low=float(cfg["clip_low"]),
        clip_high=None if cfg["clip_high"] is None else float(cfg["clip_high"]),
        value_clip=float(cfg["value_clip"]), vf_coef=float(cfg["vf_coef"]),
        entropy_coef=float(cfg["entropy_coef"]), aggregation=cfg["aggregation"],
        token_logps=token_logps, entropy_fn=online.head_entropy_fn(model))
    if lora is not None:
        loss_fn = lora_ppo_loss(loss_fn, lora.cfg)
    step = online.make_update_step(
        place, loss_fn, tx, train_sharding, num_frozen=int(lora is not None),
        frozen_shardings=None if lora is None or place.mesh is None else [lora.base_shardings],
        accum_steps=int(cfg["grad_accum_steps"]),
        accum_weight="tokens" if cfg["aggregation"] == "token_mean" else None)
    rollout_fn = online.rollout_from_config(model if lora is None else lora.model, cfg, n)
    policy_of = (lambda p: p) if lora is None else lora.policy
    frozen = () if lora is None else (lora.base,)
    ref_logps_fn = online.make_reference_logps(model.apply, r_len, token_logps=token_logps)
    values_fn = jax.jit(lambda p, ids, mask: response_values(value_model.apply, p, ids, mask,
                                                             r_len))

    def iterate(state: online.OnlineState, it: int):
        kl_state = state.controls["kl"]
        t0 = time.perf_counter()
        rollout, rng = online.iteration_rollout(rollout_fn,
                                                policy_of(state.train.params["policy"]),
                                                prompt_ids, prompt_mask, seed=seed, it=it,
                                                per_iteration=per_iter, placement=place)
        scores = jnp.asarray(reward_fn(rollout), jnp.float32)
        jax.block_until_ready(scores)
        t_rollout = time.perf_counter() - t0
        ref_logps = ref_logps_fn(ref_params, rollout.ids, rollout.mask)
        values = values_fn(state.train.params["value"], rollout.ids, rollout.mask)
        rewards = token_rewards(scores, rollout.old_logps, ref_logps, rollout.response_mask,
                                kl_coef=kl_state.coef)
        adv, returns = ppo_advantages(rewards, values, rollout.response_mask,
                                      gamma=float(cfg["gamma"]), lam=float(cfg["lam"]),
                                      whiten=bool(cfg["whiten_advantages"]))
        batch = online.training_batch(rollout, adv)
        batch.update(old_values=values, returns=returns)
        train_state, metrics, t_update = online.run_updates(
            lambda st, mb: step(st, mb, *frozen), state.train, batch, epochs=cfg["epochs"],
            num_minibatches=cfg["minibatches"],
            rng=rng, placement=place)
        seq_kl = ops.masked_sum(rollout.old_logps - ref_logps, rollout.response_mask).mean()
        metrics.update({
            "reward": float(scores.mean()), "reward_std": float(scores.std()),
            "kl_ref_seq": float(seq_kl), "kl_coef": float(kl_state.coef),
            "response_length": online.mean_response_length(rollout),
            "time/rollout_s": t_rollout, "time/update_s": t_update,
        })
        controls = {"kl": kl_control.update(kl_state, seq_kl, per_iter * n)}
        return state._replace(train=train_state, controls=controls), metrics

    out = online.run_online(workdir, init_state=init_state, abstract_state=abstract,
                            iterate=iterate, cfg=cfg, eval_fn=eval_fn,
                            params_of=lambda train: (train.params["policy"] if lora is None
                                                     else lora.merge(train.params["policy"])),
                            desc="ppo")
    out["value_params"] = out["state"].train.params["value"]
    return out
