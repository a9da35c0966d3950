"""Pieces shared by the algorithm recipes: models, data iterators and meshes from config.

Tokenized record formats the recipes read (dicts of fixed-shape numpy arrays):

- sequences (SFT): `input_ids` [T] int32, optional `mask` [T] (valid tokens, default all) and
  `loss_mask` [T] (tokens that are targets, default all valid tokens but the first).
- preference pairs: `chosen_ids`, `rejected_ids` [T] int32, `chosen_mask`, `rejected_mask` [T]
  (valid tokens), `chosen_response_mask`, `rejected_response_mask` [T] (response tokens, the ones
  whose log-probs count), plus any extra fields (gold rewards, labels) the recipes ignore.
"""

from __future__ import annotations

import functools
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from alignax._src.config import recipe_config
from alignax.data.pipeline import make_batch_iterator
from alignax.models.transformer import Model, TransformerConfig, make_lm, make_reward_model
from alignax.train import sharding as shd
from alignax.train.loop import Frozen, fit
from alignax.train.optim import check_optimizer_config, make_optimizer

MODEL_KINDS = {"lm": make_lm, "reward": make_reward_model}

# The keys every offline recipe (sft, reward_model, direct) shares; `model` holds
# TransformerConfig fields (checked by TransformerConfig itself).
OFFLINE_DEFAULTS = dict(
    model={},
    optimizer=dict(name="adamw", learning_rate=1e-3, warmup_steps=0, schedule="constant",
                   clip_norm=1.0, kwargs={}, moment_dtype="float32"),
    train=dict(steps=100, batch_size=16, grad_accum_steps=1, checkpoint_every=100, eval_every=0,
               log_every=1, progress=True),
    mesh=None,
    lora=None,
)


def offline_defaults(**extra) -> dict:
    """OFFLINE_DEFAULTS plus a recipe's own keys (e.g. loss, loss_kwargs)."""
    return {**OFFLINE_DEFAULTS, **extra}


def offline_config(defaults: Mapping[str, Any], overrides: Mapping[str, Any], label: str):
    """The locked config of an offline recipe (see `alignax._src.config.recipe_config`)."""
    return recipe_config(defaults, overrides, label)


def check_common(config: Mapping[str, Any], label: str) -> None:
    """The checks every recipe shares, on a resolved config: its optimizer
    (`check_optimizer_config`), train.grad_accum_steps (a positive divisor of the batch size),
    the LoRA config if any, and its mesh against the devices of this process's jax (a mesh of
    4 on 2 devices fails here, before any work); `model.path` if set (its config.json against
    the other model keys, `alignax.algorithms.pretrained`). Raises ValueError naming `label`."""
    check_optimizer_config(config["optimizer"], f"{label}: optimizer")
    train = config.get("train") or {}
    if "grad_accum_steps" in train:
        k, b = train["grad_accum_steps"], train.get("batch_size")
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"{label}: train.grad_accum_steps must be a positive int, got {k!r}")
        if isinstance(b, int) and b % k:
            raise ValueError(f"{label}: train.batch_size={b} is not divisible by "
                             f"train.grad_accum_steps={k}")
    if config.get("lora"):
        from alignax.models.lora import LoraConfig

        try:
            LoraConfig.from_mapping(config["lora"])
        except (TypeError, ValueError) as e:
            raise ValueError(f"{label}: lora: {e}") from None
    if isinstance(config.get("model"), Mapping) and config["model"].get("path") is not None:
        from alignax.algorithms import pretrained  # model.path: an HF checkpoint folder

        pretrained.check_model_config(config["model"], label)
    if config.get("mesh") is not None:
        try:
            shd.mesh_from_config(config["mesh"])
        except ValueError as e:
            raise ValueError(f"{label}: mesh {dict(config['mesh'])}: {e}") from None


def check_name(value: str, valid, label: str, key: str) -> None:
    """Raises ValueError if `value` is not one of `valid`, naming the closest ones."""
    import difflib

    valid = sorted(valid)
    if value not in valid:
        close = difflib.get_close_matches(str(value), valid, n=3, cutoff=0.5)
        hint = f"did you mean {', '.join(map(repr, close))}?" if close else f"valid: {valid}"
        raise ValueError(f"{label}: unknown {key} {value!r}; {hint}")


def validate_offline(defaults: Mapping[str, Any], config: Mapping[str, Any] | None, label: str,
                     losses: Mapping[str, Any] | None = None, positional: int = 0) -> dict:
    """An offline recipe's resolved config, checked before any work: known keys, value types and
    ranges (`resolve_config`), the optimizer and mesh (`check_common`) and, with `losses`, the
    loss name (one of `losses`, closest ones suggested) and its loss_kwargs (against the loss
    function's signature after its first `positional` arguments). ValueError names `label`."""
    from alignax._src.config import check_kwargs, resolve_config

    config = resolve_config(defaults, config, label)
    check_common(config, label)
    if losses is not None:
        check_name(config["loss"], losses, label, "loss")
        check_kwargs(losses[config["loss"]], config["loss_kwargs"], f"{label}: loss_kwargs",
                     positional=positional)
    return config


def make_model(model_cfg: Mapping[str, Any], kind: str) -> Model:
    """A Model of `kind` ("lm" or "reward") from a model config mapping."""
    if kind not in MODEL_KINDS:
        raise ValueError(f"unknown model kind {kind!r}; valid: {sorted(MODEL_KINDS)}")
    return MODEL_KINDS[kind](TransformerConfig.from_mapping(model_cfg))


def make_iterator(source, *, batch_size: int, seed: int):
    """This process's slice of shuffled global batches of `source` (checkpointable, repeats)."""
    return make_batch_iterator(
        source,
        global_batch_size=batch_size,
        seed=seed,
        shuffle=True,
        num_epochs=None,
        process_index=jax.process_index(),
        process_count=jax.process_count(),
    )


def mesh_from(cfg: Mapping[str, Any] | None):
    return shd.mesh_from_config(cfg)


def fit_recipe(
    config: Mapping[str, Any],
    workdir: str,
    *,
    model: Model,
    loss_fn,
    train_source,
    seed: int,
    init_params=None,
    frozen: Sequence[Any] = (),
    eval_fn=None,
    desc: str = "train",
    grad_accum_weight: str | None = None,
    lora_reference: bool = False,
    synced_reference: tuple[Any, float, int] | None = None,
    with_step: bool = False,
) -> dict:
    """Runs `alignax.train.loop.fit` with the optimizer, data, mesh and schedule of a resolved
    offline config (see OFFLINE_DEFAULTS: optimizer, mesh, train.{steps, batch_size,
    grad_accum_steps, checkpoint_every, eval_every, log_every, progress}). `batch_size` is the
    global batch of one update; with grad_accum_steps = k it is processed as k micro-batches of
    batch_size / k inside the one jitted step (`alignax.train.step.make_train_step`).
    `init_params` None initialises `model` from the seed; otherwise training starts from it.
    A `Frozen` whose logical_axes is None (a copy of the model, e.g. the reference) is sharded
    like the trained params.
    `grad_accum_weight` names the loss's normaliser metric (e.g. SFT's "tokens") so
    accumulated micro-batches weigh as in the whole batch (`alignax.train.step.make_train_step`'s
    accum_weight).

    LoRA (`config["lora"]` = {rank, alpha, targets, dropout, full}, see
    `alignax.models.lora.LoraConfig`): `init_params` is the frozen base; the trained params are
    the adapters (checkpointed with their optimizer state; the base is not), the base is the
    step's one frozen argument, and with `lora_reference=True` it is also the loss's reference
    (DPO: policy = base + adapters, reference = base, one copy of the model). `frozen` must then
    be empty. `eval_fn` sees the merged params.

    `synced_reference=(ref_params, alpha, every)` (TR-DPO, Gorbatovski et al. 2024, "Learn
    Your Reference Model for Real Good Alignment", arXiv 2404.09656; TRL's sync_ref_model):
    the reference lives in the checkpointed train state (`TrainState.extra["ref"]`, sharded
    like the params), the loss gets it as its first frozen argument, and after every
    `every`-th update ref <- alpha * policy + (1 - alpha) * ref (in float32, cast back).
    Not with LoRA (the reference is then the frozen base).

    `with_step=True` gives the loss the update count for schedules inside the loss (e.g. a
    curriculum): `loss_fn(params, batch, rng, *frozen, step=t)`, t the int32 number of updates
    before this one (0 at the first), kept in `TrainState.extra["step"]` so that it is
    checkpointed and a resumed run continues the schedule (`step_counter_fit_args`). Not with
    `synced_reference` (both own the train state's `extra`).

    Returns:
      {"params", "model", "metrics" (last train metrics), "eval" (last eval metrics), "fit"};
      with LoRA "params" are the merged weights W + (alpha/r) A B and "adapters" the adapters.
    """
    train = config["train"]
    steps = int(train["steps"])
    logical_axes = model.logical_axes(jax.eval_shape(model.init, jax.random.key(0)))
    # a frozen copy of the model (a reference policy) given without axes shards like the params
    frozen = [f if f.logical_axes is not None else Frozen(f.params, logical_axes)
              for f in frozen]
    lora_cfg = config.get("lora")
    if lora_cfg:
        from alignax.models import lora

        if init_params is None or callable(init_params):
            raise ValueError("LoRA adapts a given model: pass its params as init_params (e.g. "
                             "the reference policy)")
        if frozen:
            raise ValueError("with LoRA the base is the step's only frozen argument; pass "
                             "frozen=() and lora_reference=True for a reference loss")
        lcfg = lora.LoraConfig.from_mapping(lora_cfg)
        base = init_params
        loss_fn = lora.make_lora_loss(loss_fn, lcfg, reference=lora_reference)
        frozen = [Frozen(base, logical_axes)]
        init_params = functools.partial(lora.init_adapters, base_params=base, cfg=lcfg)
        logical_axes = lora.adapter_logical_axes(
            jax.eval_shape(init_params, jax.random.key(0)), logical_axes)
        if eval_fn is not None:
            plain_eval = eval_fn
            eval_fn = lambda adapters: plain_eval(lora.merge(base, adapters, lcfg))  # noqa: E731
    sync = {}
    if synced_reference is not None:
        if lora_cfg:
            raise ValueError("a synced reference (TR-DPO) moves with the policy; with LoRA the "
                             "reference is the frozen base")
        sync = synced_reference_fit_args(loss_fn, logical_axes, *synced_reference)
        loss_fn = sync.pop("loss_fn")
    if with_step:
        if synced_reference is not None:
            raise ValueError("with_step and synced_reference both keep state in the train "
                             "state's extra; use one")
        sync = step_counter_fit_args(loss_fn)
        loss_fn = sync.pop("loss_fn")
    result = fit(
        workdir=workdir,
        loss_fn=loss_fn,
        tx=make_optimizer(config["optimizer"], steps),
        init_params=model.init if init_params is None else init_params,
        logical_axes=logical_axes,
        rng=jax.random.key(seed),
        data_iter=make_iterator(train_source, batch_size=int(train["batch_size"]), seed=seed),
        num_steps=steps,
        grad_accum_steps=int(train["grad_accum_steps"]),
        grad_accum_weight=grad_accum_weight,
        mesh=mesh_from(config["mesh"]),
        frozen=frozen,
        checkpoint_every=int(train["checkpoint_every"]),
        eval_fn=eval_fn,
        eval_every=int(train["eval_every"]),
        log_every=int(train["log_every"]),
        progress=bool(train["progress"]),
        desc=desc,
        **sync,
    )
    out = {"params": result.state.params, "model": model, "metrics": result.metrics,
           "eval": result.eval_metrics, "fit": result}
    if lora_cfg:
        out["adapters"] = result.state.params
        out["params"] = lora.merge(base, result.state.params, lcfg)
    return out


def synced_reference_fit_args(loss_fn, logical_axes, ref_params, alpha: float, every: int
                              ) -> dict:
    """`fit` keywords of a reference that follows the policy (TR-DPO soft updates): the loss
    (`loss_fn(params, batch, rng, ref, *frozen)` called with `extra["ref"]`), extra_init,
    extra_logical_axes and extra_post_update (every `every` steps, ref <- alpha pi + (1 -
    alpha) ref)."""
    alpha, every = float(alpha), int(every)
    if not 0.0 < alpha <= 1.0 or every < 1:
        raise ValueError(f"synced reference: alpha must lie in (0, 1] and every >= 1, got "
                         f"{alpha}, {every}")

    def synced_loss(params, batch, rng, *frozen, extra):
        return loss_fn(params, batch, rng, jax.lax.stop_gradient(extra["ref"]), *frozen)

    def mix(ref, params):
        return jax.tree.map(lambda q, p: (alpha * p.astype(jnp.float32) + (1.0 - alpha)
                                          * q.astype(jnp.float32)).astype(q.dtype), ref, params)

    def post_update(extra, params, step):
        ref = jax.lax.cond(step % every == 0, mix, lambda q, p: q, extra["ref"], params)
        return {**extra, "ref": ref}

    return {"loss_fn": synced_loss, "extra_init": {"ref": ref_params},
            "extra_logical_axes": {"ref": logical_axes}, "extra_post_update": post_update}


def step_counter_fit_args(loss_fn) -> dict:
    """`fit` keywords that give the loss the update count: the loss (`loss_fn(params, batch,
    rng, *frozen, step=t)` with t = `extra["step"]`, int32, the updates before this one),
    extra_init ({"step": 0}) and extra_post_update (t <- the new step count)."""

    def counted_loss(params, batch, rng, *frozen, extra):
        return loss_fn(params, batch, rng, *frozen, step=extra["step"])

    def post_update(extra, params, step):
        del params
        return {**extra, "step": jnp.asarray(step, jnp.int32)}

    return {"loss_fn": counted_loss, "extra_init": {"step": jnp.zeros((), jnp.int32)},
            "extra_post_update": post_update}


def stack_records(source, indices=None) -> dict[str, np.ndarray]:
    """All (or some) records of a random-access source stacked into arrays."""
    indices = range(len(source)) if indices is None else indices
    records = [source[i] for i in indices]
    return {k: np.stack([np.asarray(r[k]) for r in records]) for k in records[0]}
