"""Reward and value heads on the decoder backbone, and scores read from LM logits.

Every model here is a pure pair from `make_*`: `params = model.init(rng)`,
`out = model.apply(params, input_ids [B, T], mask [B, T], **kwargs)`. Head parameters live under
`head/` and are replicated across the mesh (they are small); the backbone is sharded as usual.

Shapes: B batch, T tokens, D width, K objectives, E embedding size (2k for GPM).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from alignax.losses.reward import gpm_score as gpm_score  # the score lives with its loss
from alignax.models.transformer import (
    Decoder,
    Model,
    TransformerConfig,
    make_from_module,
    last_token_index,
)


def _at(hidden, idx):
    """hidden [B, T, D] at per-row positions idx [B] -> [B, D]."""
    return jnp.take_along_axis(hidden, idx[:, None, None], axis=1)[:, 0]


def _dense(d_in, d_out, rngs, scale=0.02):
    return nnx.Linear(d_in, d_out, kernel_init=nnx.initializers.normal(scale), rngs=rngs)


class _Gate(nnx.Module):
    """MLP from a hidden state to K non-negative weights (softmax)."""

    def __init__(self, d: int, hidden: int, k: int, rngs: nnx.Rngs):
        self.fc1 = _dense(d, hidden, rngs)
        self.fc2 = _dense(hidden, k, rngs)

    def __call__(self, x):
        return jax.nn.softmax(self.fc2(jax.nn.relu(self.fc1(x))).astype(jnp.float32), axis=-1)


class _MultiObjectiveHead(nnx.Module):
    def __init__(self, d, k, gate_hidden, rngs):
        self.objectives = _dense(d, k, rngs)
        self.gate = _Gate(d, gate_hidden, k, rngs)


class MultiObjectiveRewardModel(nnx.Module):
    """ArmoRM: K objective rewards from the last token, mixed by a prompt-conditioned gate.

        r_k = w_k^T h_last,   g = softmax(MLP(h_prompt)),   R = sum_k g_k r_k

    Wang et al. 2024, "Interpretable Preferences via Multi-Objective Reward Modeling and
    Mixture-of-Experts" (arXiv 2406.12845). The gate reads the hidden state at the last prompt
    token (`prompt_mask` marks the prompt; without it, the last token).

    Returns {"rewards": [B], "objectives": [B, K], "gates": [B, K]} (float32).
    """

    def __init__(self, cfg: TransformerConfig, rngs: nnx.Rngs, *, num_objectives: int,
                 gate_hidden: int = 64):
        self.decoder = Decoder(cfg, rngs)
        self.head = _MultiObjectiveHead(cfg.d_model, num_objectives, gate_hidden, rngs)

    def __call__(self, input_ids, mask, prompt_mask=None):
        hidden = self.decoder(input_ids, mask)
        last = _at(hidden, last_token_index(mask))
        gate_in = last if prompt_mask is None else _at(hidden, last_token_index(prompt_mask))
        objectives = self.head.objectives(last).astype(jnp.float32)
        gates = self.head.gate(gate_in)
        return {"rewards": jnp.sum(gates * objectives, axis=-1), "objectives": objectives,
                "gates": gates}


class _GaussianHead(nnx.Module):
    def __init__(self, d, rngs):
        self.out = _dense(d, 2, rngs)


class GaussianRewardModel(nnx.Module):
    """A Gaussian reward: mean and log-variance from the last token.

    Returns {"mean": [B], "log_var": [B]} (float32), for probit/uncertainty-aware objectives.
    """

    def __init__(self, cfg: TransformerConfig, rngs: nnx.Rngs):
        self.decoder = Decoder(cfg, rngs)
        self.head = _GaussianHead(cfg.d_model, rngs)

    def __call__(self, input_ids, mask):
        hidden = self.decoder(input_ids, mask)
        out = self.head.out(_at(hidden, last_token_index(mask))).astype(jnp.float32)
        return {"mean": out[:, 0], "log_var": out[:, 1]}


class _EmbeddingHead(nnx.Module):
    def __init__(self, d, dim, k, gate_hidden, rngs):
        self.embed = _dense(d, dim, rngs)
        self.eigen = _Gate(d, gate_hidden, k, rngs)


class PreferenceEmbeddingModel(nnx.Module):
    """GPM: a unit preference embedding v in R^{2k} per response and eigenvalue gates per prompt.

    The preference of y1 over y2 is `gpm_score(v1, v2, eigen)` (skew-symmetric). Zhang et al.
    2024, "General Preference Modeling with Preference Representations" (arXiv 2410.02197).

    Returns {"embedding": [B, 2k] (unit norm), "eigen": [B, k] (non-negative, sum to k)}.
    """

    def __init__(self, cfg: TransformerConfig, rngs: nnx.Rngs, *, embed_dim: int = 8,
                 gate_hidden: int = 64):
        if embed_dim % 2:
            raise ValueError(f"embed_dim must be even (2k), got {embed_dim}")
        self.decoder = Decoder(cfg, rngs)
        self.head = _EmbeddingHead(cfg.d_model, embed_dim, embed_dim // 2, gate_hidden, rngs)

    def __call__(self, input_ids, mask, prompt_mask=None):
        hidden = self.decoder(input_ids, mask)
        last = _at(hidden, last_token_index(mask))
        gate_in = last if prompt_mask is None else _at(hidden, last_token_index(prompt_mask))
        v = self.head.embed(last).astype(jnp.float32)
        v = v / jnp.maximum(jnp.linalg.norm(v, axis=-1, keepdims=True), 1e-6)
        eigen = self.head.eigen(gate_in) * (v.shape[-1] // 2)
        return {"embedding": v, "eigen": eigen}


class _TokenHead(nnx.Module):
    def __init__(self, d, rngs):
        self.out = _dense(d, 1, rngs)


class TokenRewardModel(nnx.Module):
    """A score per token (value head, PRM step scores, autoregressive/token-level reward).

    Returns [B, T] float32, 0 at padding.
    """

    def __init__(self, cfg: TransformerConfig, rngs: nnx.Rngs):
        self.decoder = Decoder(cfg, rngs)
        self.head = _TokenHead(cfg.d_model, rngs)

    def __call__(self, input_ids, mask):
        scores = self.head.out(self.decoder(input_ids, mask))[..., 0].astype(jnp.float32)
        return jnp.where(mask.astype(bool), scores, 0.0)


def yes_token_score(logits: jax.Array, mask: jax.Array, *, yes_id: int,
                    no_id: int | None = None) -> jax.Array:
    """Generative judge score from LM logits at the last valid token: [B, T, V], [B, T] -> [B].

    log p("yes") under the model's next-token distribution, or log p("yes") - log p("no") (the
    logit difference) when `no_id` is given.
    """
    last = _at(logits.astype(jnp.float32), last_token_index(mask))
    logp = jax.nn.log_softmax(last, axis=-1)
    score = logp[:, yes_id]
    if no_id is not None:
        score = score - logp[:, no_id]
    return score


def make_multi_objective_reward_model(cfg: TransformerConfig, *, num_objectives: int,
                                      gate_hidden: int = 64) -> Model:
    return make_from_module(lambda c, rngs: MultiObjectiveRewardModel(
        c, rngs, num_objectives=num_objectives, gate_hidden=gate_hidden), cfg)


def make_gaussian_reward_model(cfg: TransformerConfig) -> Model:
    return make_from_module(GaussianRewardModel, cfg)


def make_preference_embedding_model(cfg: TransformerConfig, *, embed_dim: int = 8,
                                    gate_hidden: int = 64) -> Model:
    return make_from_module(lambda c, rngs: PreferenceEmbeddingModel(
        c, rngs, embed_dim=embed_dim, gate_hidden=gate_hidden), cfg)


def make_token_reward_model(cfg: TransformerConfig) -> Model:
    return make_from_module(TokenRewardModel, cfg)
