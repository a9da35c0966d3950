"""Logical-axis rules: parameter shardings from logical axis names (see alignax.train.sharding).

The bottom layer of the package (imports only jax and numpy), so that alignax.models can place
imported checkpoints on a mesh; `alignax.train.sharding` re-exports every name.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

MESH_AXES = ("data", "fsdp", "tensor")
BATCH_AXES = ("data", "fsdp")

# logical name -> mesh axis (or tuple of axes, or None for replicated)
DEFAULT_RULES: dict[str, Any] = {
    "batch": BATCH_AXES,
    "embed": "fsdp",
    "heads": "tensor",
    "kv_heads": "tensor",
    "mlp": "tensor",
    "vocab": "tensor",
    "norm": None,
    "layers": None,  # the stacked-blocks axis of scan_layers: every device holds all layers
}


def _axis_size(mesh: Mesh, axes) -> int:
    if axes is None:
        return 1
    if isinstance(axes, str):
        axes = (axes,)
    return math.prod(mesh.shape[a] for a in axes)


def logical_to_spec(
    names: Sequence[str | None],
    shape: Sequence[int],
    mesh: Mesh,
    rules: Mapping[str, Any] = DEFAULT_RULES,
    fallbacks: list | None = None,
) -> PartitionSpec:
    """PartitionSpec for one array from its logical axis names.

    A mesh axis is used at most once per array; a dimension not divisible by its mesh axes is
    replicated (recorded in `fallbacks` as (names, shape, dim)).
    """
    used: set[str] = set()
    spec = []
    for dim, (name, size) in enumerate(zip(names, shape)):
        axes = rules.get(name) if name is not None else None
        if isinstance(axes, str):
            axes = (axes,)
        if axes is not None:
            axes = tuple(a for a in axes if a not in used and mesh.shape.get(a, 1) > 1)
            if not axes or size % _axis_size(mesh, axes):
                if axes and fallbacks is not None:
                    fallbacks.append((tuple(names), tuple(shape), dim))
                axes = None
        if axes:
            used.update(axes)
            spec.append(axes[0] if len(axes) == 1 else axes)
        else:
            spec.append(None)
    return PartitionSpec(*spec)


def param_shardings(
    abstract_params: Any,
    axes_tree: Any,
    mesh: Mesh,
    rules: Mapping[str, Any] = DEFAULT_RULES,
    fallbacks: list | None = None,
) -> Any:
    """NamedSharding tree for params from their shapes and logical axis names."""
    return jax.tree.map(
        lambda leaf, names: NamedSharding(
            mesh, logical_to_spec(names, leaf.shape, mesh, rules, fallbacks)
        ),
        abstract_params,
        axes_tree,
        is_leaf=lambda x: isinstance(x, tuple),
    )
