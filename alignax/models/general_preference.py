"""A small general preference model (GPM) with a prompt-dependent eigenvalue gate.

Zhang et al. 2024, "General Preference Modeling with Preference Representations for Aligning
Language Models" (arXiv 2410.02197). A response y to a prompt x gets a preference embedding
v(x, y) in R^{2k}, normalised to the unit sphere, and the prompt gets k eigenvalues
lambda(x) >= 0 from a gate network (the paper's "eigenvalue scale gate"). The preference score is
the skew-symmetric form

    s(y_i > y_j | x) = v_i^T R(x) v_j,  R(x) = diag(lambda_1(x) J, ..., lambda_k(x) J),
    J = [[0, -1], [1, 0]],

and P(y_i > y_j | x) = sigmoid(s / tau). The gate here is softmax(MLP(x)) * k (non-negative,
summing to k, as `alignax.models.heads.PreferenceEmbeddingModel` does for the transformer GPM);
`gate="constant"` gives prompt-independent eigenvalues softmax(theta) * k (the ablation without
the gate). This module is the feature-vector version for the small testbeds: the embedding MLP
reads [prompt features, response features], the gate MLP reads the prompt features only.

    gpm = make_general_preference_model(GPMConfig(prompt_dim=4, response_dim=8, k=2))
    params = gpm.init(jax.random.key(0))
    s = gpm.score(params, x, y1, y2)          # [...]: s(y1 > y2 | x) = -s(y2 > y1 | x)
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp

from alignax.losses.reward import gpm_score
from alignax.models.mlp import MLPConfig, make_mlp


@dataclasses.dataclass(frozen=True)
class GPMConfig:
    """prompt_dim / response_dim: feature sizes; k: number of 2-d blocks (embedding 2k);
    hidden: the embedding MLP's hidden sizes; gate_hidden: the gate MLP's; gate: "prompt"
    (lambda(x) from the gate network) or "constant" (learned prompt-independent lambda)."""

    prompt_dim: int
    response_dim: int
    k: int = 2
    hidden: Sequence[int] = (64, 64)
    gate_hidden: Sequence[int] = (32,)
    gate: str = "prompt"

    def __post_init__(self):
        if self.k < 1:
            raise ValueError(f"k must be >= 1, got {self.k}")
        if self.gate not in ("prompt", "constant"):
            raise ValueError(f"gate must be 'prompt' or 'constant', got {self.gate!r}")


def eigen_gate(logits: jax.Array) -> jax.Array:
    """Eigenvalues from gate logits: softmax(logits) * k, [..., k] -> [..., k] (>= 0, sum k)."""
    k = logits.shape[-1]
    return jax.nn.softmax(logits.astype(jnp.float32), axis=-1) * k


def unit_embedding(v: jax.Array, eps: float = 1e-6) -> jax.Array:
    """v / ||v|| over the last axis (the GPM embedding normalisation)."""
    return v / jnp.maximum(jnp.linalg.norm(v, axis=-1, keepdims=True), eps)


class GeneralPreferenceModel(NamedTuple):
    """init(rng) -> params; embed(params, x, y) -> (v [..., 2k] unit, eigen [..., k]);
    score(params, x, y1, y2) -> s(y1 > y2 | x) [...]; config."""

    init: Callable[[jax.Array], Any]
    embed: Callable[..., tuple[jax.Array, jax.Array]]
    score: Callable[..., jax.Array]
    config: GPMConfig


def make_general_preference_model(cfg: GPMConfig) -> GeneralPreferenceModel:
    """The GPM of `cfg` as pure functions of a params dict {"embed", "gate"}."""
    k = int(cfg.k)
    net = make_mlp(MLPConfig(in_dim=cfg.prompt_dim + cfg.response_dim,
                             hidden=tuple(cfg.hidden), out_dim=2 * k))
    gate = make_mlp(MLPConfig(in_dim=cfg.prompt_dim, hidden=tuple(cfg.gate_hidden), out_dim=k))

    def init(rng):
        k_embed, k_gate = jax.random.split(rng)
        if cfg.gate == "prompt":
            return {"embed": net.init(k_embed), "gate": gate.init(k_gate)}
        return {"embed": net.init(k_embed), "gate": jnp.zeros((k,), jnp.float32)}

    def eigenvalues(params, x):
        if cfg.gate == "prompt":
            return eigen_gate(gate.apply(params["gate"], x))
        return jnp.broadcast_to(eigen_gate(params["gate"]), (*x.shape[:-1], k))

    def embed(params, x, y):
        x = jnp.asarray(x, jnp.float32)
        y = jnp.asarray(y, jnp.float32)
        x_b = jnp.broadcast_to(x, (*y.shape[:-1], x.shape[-1]))
        v = unit_embedding(net.apply(params["embed"], jnp.concatenate([x_b, y], -1)))
        return v, eigenvalues(params, x_b)

    def score(params, x, y1, y2):
        v1, lam = embed(params, x, y1)
        v2, _ = embed(params, x, y2)
        return gpm_score(v1, v2, lam)

    return GeneralPreferenceModel(init=init, embed=embed, score=score, config=cfg)
