"""Optimizer from config: an optax chain, looked up by name (`getattr(optax, name)`)."""

from __future__ import annotations

import inspect
from typing import Any, Mapping

import optax


SCHEDULES = ("constant", "cosine")


def check_optimizer_config(cfg: Mapping[str, Any], label: str = "optimizer") -> None:
    """Raises ValueError (one line) for an unknown key, an optax name that is not an optimizer,
    an unknown schedule, or kwargs the optax alias does not take."""
    from alignax._src.config import check_kwargs

    cfg = dict(cfg)
    unknown = sorted(set(cfg) - {"name", "learning_rate", "warmup_steps", "schedule",
                                 "clip_norm", "kwargs"})
    if unknown:
        raise ValueError(f"unknown {label} config keys {unknown}")
    name = cfg.get("name", "adamw")
    fn = getattr(optax, name, None) if isinstance(name, str) else None
    if not callable(fn) or "learning_rate" not in inspect.signature(fn).parameters:
        raise ValueError(f"{label}: optax has no optimizer {name!r} (an optax alias taking "
                         "learning_rate, e.g. 'adamw', 'sgd', 'lion')")
    if cfg.get("schedule", "constant") not in SCHEDULES:
        raise ValueError(f"{label}: unknown schedule {cfg['schedule']!r}; valid: {SCHEDULES}")
    check_kwargs(fn, cfg.get("kwargs"), f"{label}.kwargs")


def make_optimizer(cfg: Mapping[str, Any], num_steps: int) -> optax.GradientTransformation:
    """`clip_by_global_norm` -> `optax.<name>(learning_rate=schedule, **kwargs)`.

    Config keys: name (an optax alias, e.g. "adamw"), learning_rate, warmup_steps,
    schedule ("constant" or "cosine", decaying to 0 at `num_steps`), clip_norm (0 disables),
    kwargs (extra keyword arguments of the optax alias, e.g. weight_decay, b2).
    """
    check_optimizer_config(cfg)
    cfg = dict(cfg)
    name = cfg.pop("name", "adamw")
    lr = float(cfg.pop("learning_rate", 1e-3))
    warmup = int(cfg.pop("warmup_steps", 0))
    schedule_name = cfg.pop("schedule", "constant")
    clip = float(cfg.pop("clip_norm", 1.0))
    kwargs = dict(cfg.pop("kwargs", {}) or {})
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
    return optax.chain(*parts)
