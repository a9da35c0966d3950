"""Config helpers shared by the recipes and testbeds.

A recipe has one config: `default_config(**overrides)` returns a locked
`ml_collections.ConfigDict` of every key with its default, and the recipe's `train(config, ...)`
reads its section through `resolve_config`, which rejects any key the recipe does not know,
naming the closest valid ones (a misspelt `kl_coeff` fails instead of silently training with
the default). Free-form mappings (`kwargs`, `*_kwargs`, `mesh`, `model`) are taken whole.
"""

from __future__ import annotations

import difflib
from typing import Any, Mapping

import ml_collections


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
        else:
            out[key] = value
    return out


def recipe_config(defaults: Mapping[str, Any], overrides: Mapping[str, Any],
                  label: str) -> ml_collections.ConfigDict:
    """The locked ConfigDict of `defaults` updated by `overrides` (checked by key, nested)."""
    config = ml_collections.ConfigDict(_merge(_plain(defaults), overrides, label))
    config.lock()
    return config


def resolve_config(defaults: Mapping[str, Any], config: Mapping[str, Any] | None,
                   label: str) -> dict:
    """A recipe's section as a plain dict: `defaults` updated by `config`, whose keys must all
    be known (nested mappings are checked key by key; the error names the closest keys)."""
    return _merge(_plain(defaults), config or {}, label)
