"""Config helpers shared by the recipes and testbeds.

A recipe has one config: `default_config(**overrides)` returns a locked
`ml_collections.ConfigDict` of every key with its default, and the recipe's `train(config, ...)`
reads its section through `resolve_config`, which rejects any key the recipe does not know,
naming the closest valid ones (a misspelt `kl_coeff` fails instead of silently training with
the default). Free-form mappings (`kwargs`, `*_kwargs`, `mesh`, `model`) are taken whole.

Values are checked too, before any work: a value must have its default's type (an int field
takes an int, never a bool; a float field takes an int or a float; a None default takes
anything), and the fields named in `VALUE_RULES` (by their last dotted component, in every
recipe and experiment config) must be in range: `steps` and `batch_size` positive, `eval_every`
non-negative, `top_p` in (0, 1], and so on. `check_values` raises one ValueError naming the
key, the value and what is allowed.
"""

from __future__ import annotations

import difflib
import math
from typing import Any, Callable, Mapping

import ml_collections
import numpy as np


def with_overrides(defaults: dict, overrides: Mapping[str, Any], label: str = "keys") -> dict:
    """`defaults` updated by `overrides`; an unknown key raises a ValueError naming it and
    the valid ones (the message starts "unknown <label> [...]")."""
    unknown = set(overrides) - set(defaults)
    if unknown:
        raise ValueError(f"unknown {label} {sorted(unknown)}; valid: {sorted(defaults)}")
    defaults.update(overrides)
    return defaults


def _free_form(key: str) -> bool:
    # kwargs of a function, a mesh shape, a model's fields (checked by the model config itself)
    return key in ("kwargs", "mesh", "model") or key.endswith("_kwargs")


def _plain(x):
    if isinstance(x, ml_collections.ConfigDict):
        return x.to_dict()
    if isinstance(x, Mapping):
        return {k: _plain(v) for k, v in x.items()}
    return x


def _positive_int(v):
    return _is_int(v) and v > 0


def _nonneg_int(v):
    return _is_int(v) and v >= 0


def _is_int(v):
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def _is_number(v):
    return _is_int(v) or isinstance(v, (float, np.floating))


def _nonneg_number(v):
    return _is_number(v) and math.isfinite(float(v)) and v >= 0


def _positive_number(v):
    return _is_number(v) and math.isfinite(float(v)) and v > 0


# field name (last dotted component) -> (check, what is allowed); a None value is not checked
VALUE_RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    **{k: (_positive_int, "a positive int") for k in (
        "steps", "num_steps", "batch_size", "iterations", "epochs", "minibatches",
        "prompts_per_iteration", "num_samples", "max_new_tokens", "checkpoint_every",
        "log_every", "max_len", "d_model", "n_layers", "n_heads", "d_ff", "vocab_size")},
    **{k: (_nonneg_int, "an int >= 0") for k in ("eval_every", "warmup_steps", "top_k")},
    **{k: (_nonneg_number, "a finite number >= 0") for k in (
        "learning_rate", "clip_norm", "kl_coef", "entropy_coef", "weight_decay")},
    "temperature": (_positive_number, "a finite number > 0"),
    "top_p": (lambda v: _is_number(v) and 0 < v <= 1, "a number in (0, 1]"),
    "seeds": (lambda v: isinstance(v, (list, tuple)) and len(v) > 0 and all(
        _nonneg_int(s) for s in v) and len(set(int(s) for s in v)) == len(v),
        "a non-empty list of distinct ints >= 0"),
}


def _type_ok(default, value) -> bool:
    """Whether `value` may replace `default` (see the module docstring)."""
    if default is None or value is None:
        return True
    if isinstance(default, (bool, np.bool_)):
        return isinstance(value, (bool, np.bool_))
    if _is_int(default):
        return _is_int(value)
    if isinstance(default, (float, np.floating)):
        return _is_number(value)
    if isinstance(default, str):
        return isinstance(value, str)
    if isinstance(default, (list, tuple)):
        return isinstance(value, (list, tuple))
    return True


def check_values(config: Mapping[str, Any], label: str, prefix: str = "") -> None:
    """Checks every field named in VALUE_RULES (recursively); raises ValueError naming the
    first bad one ("<label>: <key>=<value> must be <allowed>")."""
    for key, value in _plain(config).items():
        full = f"{prefix}{key}"
        if isinstance(value, Mapping):
            check_values(value, label, full + ".")
            continue
        rule = VALUE_RULES.get(key)
        if rule is not None and value is not None and not rule[0](value):
            raise ValueError(f"{label}: {full}={value!r} must be {rule[1]}")


def _merge(defaults: dict, config: Mapping[str, Any], label: str, prefix: str = "") -> dict:
    out = dict(defaults)
    for key, value in _plain(config).items():
        full = f"{prefix}{key}"
        if key not in defaults:
            close = difflib.get_close_matches(key, list(defaults), n=3, cutoff=0.6)
            hint = f"; did you mean {', '.join(repr(prefix + c) for c in close)}?" if close \
                else f"; valid: {sorted(prefix + k for k in defaults)}"
            raise ValueError(f"unknown {label} key {full!r}{hint}")
        default = defaults[key]
        if isinstance(default, dict) and isinstance(value, Mapping) and not _free_form(key):
            out[key] = _merge(default, value, label, full + ".")
            continue
        if not _type_ok(default, value):
            kind = type(default).__name__
            article = "an" if kind[0] in "aeiou" else "a"
            raise ValueError(f"{label}: {full}={value!r} must be {article} {kind} like its "
                             f"default {default!r}")
        out[key] = value
    return out


def recipe_config(defaults: Mapping[str, Any], overrides: Mapping[str, Any],
                  label: str) -> ml_collections.ConfigDict:
    """The locked ConfigDict of `defaults` updated by `overrides` (checked by key, nested)."""
    merged = _merge(_plain(defaults), overrides, label)
    check_values(merged, label)
    config = ml_collections.ConfigDict(merged)
    config.lock()
    return config


def resolve_config(defaults: Mapping[str, Any], config: Mapping[str, Any] | None,
                   label: str) -> dict:
    """A recipe's section as a plain dict: `defaults` updated by `config`, whose keys must all
    be known (nested mappings are checked key by key; the error names the closest keys) and
    its values of the right type and range (`check_values`)."""
    merged = _merge(_plain(defaults), config or {}, label)
    check_values(merged, label)
    return merged


def check_kwargs(fn: Callable, kwargs: Mapping[str, Any] | None, label: str,
                 positional: int = 0) -> None:
    """Raises ValueError if `fn` does not accept every key of `kwargs` as a keyword (after its
    first `positional` arguments, which the caller passes), naming the accepted ones."""
    import inspect

    params = list(inspect.signature(fn).parameters.values())
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return
    named = [p for p in params[positional:] if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    unknown = sorted(set(kwargs or {}) - {p.name for p in named})
    if unknown:
        # the hyperparameters (with defaults) are what a config sets; the arrays come first
        shown = [p.name for p in named if p.default is not p.empty] or [p.name for p in named]
        raise ValueError(f"{label}: {getattr(fn, '__name__', fn)} takes no {unknown}; "
                         f"its options are {shown}")
