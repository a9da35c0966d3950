"""Small MLPs for feature-vector tasks (responses as vectors), as pure (init, apply) pairs."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
from flax import nnx


@dataclasses.dataclass(frozen=True)
class MLPConfig:
    """in_dim -> hidden... -> out_dim with `activation` between layers (out_dim 1 is squeezed)."""

    in_dim: int
    hidden: Sequence[int] = (64, 64)
    out_dim: int = 1
    activation: str = "gelu"

    def __post_init__(self):
        if not hasattr(jax.nn, self.activation):
            raise ValueError(f"unknown activation {self.activation!r} (a jax.nn function)")


class MLP(nnx.Module):
    def __init__(self, cfg: MLPConfig, rngs: nnx.Rngs):
        dims = [cfg.in_dim, *cfg.hidden, cfg.out_dim]
        self.layers = nnx.List([nnx.Linear(a, b, rngs=rngs) for a, b in zip(dims[:-1], dims[1:])])
        self.activation = getattr(jax.nn, cfg.activation)
        self.squeeze = cfg.out_dim == 1

    def __call__(self, x):
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = self.activation(x)
        x = x.astype(jnp.float32)
        return x[..., 0] if self.squeeze else x


class MLPModel(NamedTuple):
    """`params = init(rng)`, `apply(params, x [..., in_dim]) -> [...] or [..., out_dim]`."""

    init: Callable[[jax.Array], Any]
    apply: Callable[..., jax.Array]
    logical_axes: Callable[[Any], Any]
    config: MLPConfig


def make_mlp(cfg: MLPConfig) -> MLPModel:
    abstract = nnx.eval_shape(lambda: MLP(cfg, nnx.Rngs(0)))
    graphdef, abstract_state = nnx.split(abstract, nnx.Param)

    def init(rng):
        return nnx.to_pure_dict(nnx.state(MLP(cfg, nnx.Rngs(params=rng)), nnx.Param))

    def apply(params, x):
        if x.shape[-1] != cfg.in_dim:
            raise ValueError(f"expected features [..., {cfg.in_dim}], got {x.shape}")
        state = jax.tree.map(lambda v: v, abstract_state)
        nnx.replace_by_pure_dict(state, params)
        return nnx.merge(graphdef, state)(x)

    def logical_axes(params):  # small: replicated everywhere
        return jax.tree.map(lambda p: (None,) * p.ndim, params)

    return MLPModel(init=init, apply=apply, logical_axes=logical_axes, config=cfg)
