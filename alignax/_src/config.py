"""Default-config helpers shared by the recipes and testbeds."""

from __future__ import annotations

from typing import Any, Mapping


def with_overrides(defaults: dict, overrides: Mapping[str, Any], label: str = "keys") -> dict:
    """`defaults` updated by `overrides`; an unknown key raises a ValueError naming it and
    the valid ones (the message starts "unknown <label> [...]")."""
    unknown = set(overrides) - set(defaults)
    if unknown:
        raise ValueError(f"unknown {label} {sorted(unknown)}; valid: {sorted(defaults)}")
    defaults.update(overrides)
    return defaults
