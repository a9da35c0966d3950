"""Models as pure (init, apply) pairs: decoder LMs, reward heads, MLPs, Hugging Face interop, and
Gaussian diffusion (`alignax.models.diffusion`: schedules, denoisers, DDPM / DDIM samplers with
per-step log-probs)."""

from alignax.models import diffusion
from alignax.models.heads import (
    gpm_score,
    make_gaussian_reward_model,
    make_multi_objective_reward_model,
    make_preference_embedding_model,
    make_token_reward_model,
    yes_token_score,
)
from alignax.models.lora import LoraConfig, init_adapters, make_lora_apply, make_lora_loss
from alignax.models.mlp import MLPConfig, make_mlp
from alignax.models.transformer import (
    Model,
    TransformerConfig,
    init_cache,
    make_lm,
    make_reward_model,
    stack_layers,
    unstack_layers,
)

__all__ = [
    "diffusion",
    "LoraConfig",
    "MLPConfig",
    "Model",
    "TransformerConfig",
    "gpm_score",
    "init_adapters",
    "init_cache",
    "make_gaussian_reward_model",
    "make_lm",
    "make_lora_apply",
    "make_lora_loss",
    "make_mlp",
    "make_multi_objective_reward_model",
    "make_preference_embedding_model",
    "make_reward_model",
    "make_token_reward_model",
    "stack_layers",
    "unstack_layers",
    "yes_token_score",
]
