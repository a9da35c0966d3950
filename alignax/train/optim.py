"""Optimizer from config: an optax chain, looked up by name (`getattr(optax, name)`), with its
state (Adam's moments) stored in a chosen dtype.

Moment dtype. In optax 0.2.8 the adam family (`scale_by_adam`, hence adam, adamw, nadam...)
takes `mu_dtype` for the first moment only: `mu` is created in `mu_dtype` and cast back to it
after every update. The second moment `nu` is created as `optax.tree.zeros_like(params)` and
cast back with `optax.tree.cast_like(nu, state.nu)` after every update, so it always has the
params' dtype: no argument changes it. With bf16 params that makes both moments bf16 (and,
with mu_dtype None, the update arithmetic bf16 too); with fp32 params `nu` cannot be bf16.
`with_state_dtype` decouples the two: a composable transformation (like `optax.masked`) that
stores the inner transformation's state tensors in one dtype and runs the inner update in
float32.
"""

from __future__ import annotations

import inspect
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import optax


SCHEDULES = ("constant", "cosine")
MOMENT_DTYPES = ("float32", "bfloat16")


def _is_float(x) -> bool:
    return hasattr(x, "dtype") and jnp.issubdtype(x.dtype, jnp.floating)


def with_state_dtype(inner: optax.GradientTransformation, state_dtype: Any = jnp.float32,
                     compute_dtype: Any = jnp.float32) -> optax.GradientTransformation:
    """`inner` with its state tensors stored in `state_dtype` and its update run in
    `compute_dtype`.

    init: `inner.init(params)`, then the floating leaves of every state subtree that mirrors
    the params (same tree structure: Adam's mu and nu, momentum traces) are cast to
    `state_dtype`; other leaves (step counts, injected hyperparameters) keep their dtype.
    update: the updates (gradients), the state's floating leaves and the params are cast to
    `compute_dtype`, `inner.update` runs on them, the new state is cast back leaf by leaf to
    the stored dtypes (so the state's dtypes never change and a jitted step compiles once),
    and the updates are cast to the params' dtype (to the incoming updates' dtype without
    params), ready for `optax.apply_updates`.

    With float32 everything (fp32 params and `state_dtype` float32) every cast is the
    identity: the transformation is `inner` exactly. Uses:

    - bf16 params, fp32 moments (`state_dtype` float32): Adam's arithmetic and state in fp32,
      the update rounded once to bf16;
    - bf16 moments (`state_dtype` bfloat16) with fp32 or bf16 params: half the optimizer
      memory (Adam: 4 bytes per parameter instead of 8); the update is still computed in fp32
      from the rounded moments. bf16 keeps fp32's exponent range but 8 significant bits:
      every store rounds a moment by a relative error up to 2^-8, and an EMA step
      (1 - b) (x - moment) smaller than half a bf16 ulp (2^-9 to 2^-8 of the moment) is
      rounded away. With Adam's b2 = 0.999 that is |g^2 - nu| < 2-4 nu: the stored nu cannot
      decay and grows only for g^2 > 3-5 nu (b2 = 0.99: |g^2 - nu| < 0.2-0.4 nu). Prefer fp32
      moments when memory allows, or a smaller b2 with bf16 moments.

    Args:
      inner: any optax transformation (e.g. a chain ending in `optax.adamw`).
      state_dtype: dtype of the stored state tensors.
      compute_dtype: dtype of the inner update's arithmetic.

    Returns:
      An `optax.GradientTransformationExtraArgs` (extra arguments go to `inner`).
    """
    state_dtype, compute_dtype = jnp.dtype(state_dtype), jnp.dtype(compute_dtype)
    inner = optax.with_extra_args_support(inner)

    def up(tree):
        return jax.tree.map(lambda x: x.astype(compute_dtype) if _is_float(x) else x, tree)

    def init(params):
        mirrors = jax.tree.structure(params)

        def cast(subtree):
            if jax.tree.structure(subtree) != mirrors:
                return subtree
            return jax.tree.map(lambda x: x.astype(state_dtype) if _is_float(x) else x, subtree)

        return jax.tree.map(cast, inner.init(params),
                            is_leaf=lambda x: jax.tree.structure(x) == mirrors)

    def update(updates, state, params=None, **extra_args):
        new_updates, new_state = inner.update(
            up(updates), up(state), None if params is None else up(params), **extra_args)
        new_state = optax.tree.cast_like(new_state, state)
        like = updates if params is None else params
        new_updates = jax.tree.map(
            lambda u, p: None if u is None else u.astype(p.dtype), new_updates, like,
            is_leaf=lambda x: x is None)
        return new_updates, new_state

    return optax.GradientTransformationExtraArgs(init, update)


def check_optimizer_config(cfg: Mapping[str, Any], label: str = "optimizer") -> None:
    """Raises ValueError (one line) for an unknown key, an optax name that is not an optimizer,
    an unknown schedule or moment dtype, or kwargs the optax alias does not take."""
    from alignax._src.config import check_kwargs

    cfg = dict(cfg)
    unknown = sorted(set(cfg) - {"name", "learning_rate", "warmup_steps", "schedule",
                                 "clip_norm", "kwargs", "moment_dtype"})
    if unknown:
        raise ValueError(f"unknown {label} config keys {unknown}")
    name = cfg.get("name", "adamw")
    fn = getattr(optax, name, None) if isinstance(name, str) else None
    if not callable(fn) or "learning_rate" not in inspect.signature(fn).parameters:
        raise ValueError(f"{label}: optax has no optimizer {name!r} (an optax alias taking "
                         "learning_rate, e.g. 'adamw', 'sgd', 'lion')")
    if cfg.get("schedule", "constant") not in SCHEDULES:
        raise ValueError(f"{label}: unknown schedule {cfg['schedule']!r}; valid: {SCHEDULES}")
    if cfg.get("moment_dtype", "float32") not in MOMENT_DTYPES:
        raise ValueError(f"{label}: unknown moment_dtype {cfg['moment_dtype']!r}; valid: "
                         f"{MOMENT_DTYPES}")
    if "mu_dtype" in (cfg.get("kwargs") or {}):
        raise ValueError(f"{label}: set moment_dtype (the dtype of every moment) instead of "
                         "kwargs.mu_dtype (the first moment's only)")
    check_kwargs(fn, cfg.get("kwargs"), f"{label}.kwargs")


def make_optimizer(cfg: Mapping[str, Any], num_steps: int) -> optax.GradientTransformation:
    """`with_state_dtype(clip_by_global_norm -> optax.<name>(learning_rate=schedule, **kwargs),
    moment_dtype)`.

    Config keys: name (an optax alias, e.g. "adamw"), learning_rate, warmup_steps,
    schedule ("constant" or "cosine", decaying to 0 at `num_steps`), clip_norm (0 disables),
    kwargs (extra keyword arguments of the optax alias, e.g. weight_decay, b2), moment_dtype
    ("float32", the default, or "bfloat16"): the dtype the optimizer's state tensors (Adam's
    mu and nu) are stored in; the update is computed in float32 and cast to the params' dtype
    (see `with_state_dtype`). "bfloat16" halves the optimizer memory (for an 8B model, 64 GB
    of fp32 Adam moments become 32 GB) at the cost of rounding the moments to 8 significant
    bits; with float32 and fp32 params the optimizer is the plain optax chain, bit for bit.
    """
    check_optimizer_config(cfg)
    cfg = dict(cfg)
    name = cfg.pop("name", "adamw")
    lr = float(cfg.pop("learning_rate", 1e-3))
    warmup = int(cfg.pop("warmup_steps", 0))
    schedule_name = cfg.pop("schedule", "constant")
    clip = float(cfg.pop("clip_norm", 1.0))
    kwargs = dict(cfg.pop("kwargs", {}) or {})
    moment_dtype = cfg.pop("moment_dtype", "float32")
    if cfg:
        raise ValueError(f"unknown optimizer config keys {sorted(cfg)}")
    if not hasattr(optax, name):
        raise ValueError(f"optax has no optimizer {name!r}")
    if schedule_name == "constant":
        schedule = (
            optax.linear_schedule(0.0, lr, warmup) if warmup else optax.constant_schedule(lr)
        )
        if warmup:
            schedule = optax.join_schedules([schedule, optax.constant_schedule(lr)], [warmup])
    elif schedule_name == "cosine":
        schedule = optax.warmup_cosine_decay_schedule(0.0, lr, max(warmup, 1), max(num_steps, 2))
    else:
        raise ValueError(f"unknown schedule {schedule_name!r}; use 'constant' or 'cosine'")
    parts = [optax.clip_by_global_norm(clip)] if clip > 0 else []
    parts.append(getattr(optax, name)(learning_rate=schedule, **kwargs))
    return with_state_dtype(optax.chain(*parts), moment_dtype)
