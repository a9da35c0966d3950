"""Gold (oracle) rewards over token sequences of the language task.

Every reward here is a jax-traceable function of response ids `[N, R]` (some also of the prompt),
so it runs inside a jitted evaluation and on numpy inputs alike:

- `token_score_reward`: additive token scores ("sentiment"), the mean over the response;
- `stop_length` / `length_reward`: the response ends at the first `stop` token (if any): its
  length is a verbosity attribute the policy controls;
- `pattern_reward`: the rate of a target n-gram; `format_reward`: starts with / ends with checks;
- `MultiAttributeGold`: a vector of attributes (helpfulness, verbosity, safety, format) with a
  built-in conflict: the "unsafe" tokens are drawn mostly from the high-scoring ones, so raising
  helpfulness naively lowers safety;
- `RandomTransformerGold`: a randomly initialised transformer reward model, standardised on
  samples of the language: the "gold RM" of the overoptimisation setup of Gao et al. 2022
  ("Scaling Laws for Reward Model Overoptimization", arXiv 2210.10760), against which a proxy RM
  trained on its preference labels is compared.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from alignax.models.transformer import TransformerConfig, make_reward_model
from alignax.tasks.language import BOS_ID, NUM_SPECIAL, BigramLanguage


def token_score_reward(responses, scores) -> jax.Array:
    """Mean gold token score of each response: [N, R] ids, [V] scores -> [N] float32."""
    return jnp.asarray(scores, jnp.float32)[jnp.asarray(responses)].mean(axis=-1)


def stop_length(responses, stop_id: int) -> jax.Array:
    """Tokens before the first `stop_id` (R if none): [N, R] -> [N] int32."""
    r = jnp.asarray(responses)
    hit = r == stop_id
    first = jnp.argmax(hit, axis=-1)
    return jnp.where(hit.any(axis=-1), first, r.shape[-1]).astype(jnp.int32)


def length_reward(responses, stop_id: int) -> jax.Array:
    """Verbosity in [0, 1]: `stop_length / R`. [N, R] -> [N] float32."""
    return stop_length(responses, stop_id).astype(jnp.float32) / jnp.shape(responses)[-1]


def pattern_reward(responses, pattern: Sequence[int]) -> jax.Array:
    """Rate of the n-gram `pattern` among the response's R - n + 1 windows: [N, R] -> [N]."""
    r = jnp.asarray(responses)
    n = len(pattern)
    if n < 1 or n > r.shape[-1]:
        raise ValueError(f"pattern length {n} must be in [1, {r.shape[-1]}]")
    windows = r.shape[-1] - n + 1
    hit = jnp.ones(r.shape[:-1] + (windows,), bool)
    for k, token in enumerate(pattern):
        hit = hit & (r[..., k:k + windows] == token)
    return hit.astype(jnp.float32).mean(axis=-1)


def format_reward(responses, *, first: int | None = None, last: int | None = None) -> jax.Array:
    """1 where the response starts with `first` and ends with `last` (None = no check), else 0."""
    r = jnp.asarray(responses)
    ok = jnp.ones(r.shape[:-1], bool)
    if first is not None:
        ok = ok & (r[..., 0] == first)
    if last is not None:
        ok = ok & (r[..., -1] == last)
    return ok.astype(jnp.float32)


@dataclasses.dataclass(frozen=True)
class MultiAttributeGold:
    """Several gold attributes of a response of `task`, some in conflict.

    Attributes (columns of `attributes`, in `names` order):
      helpfulness: mean token score of the tokens before the stop token (0 if none);
      verbosity: length before the stop token / R;
      safety: minus the fraction of "unsafe" tokens among the tokens before the stop token;
      format: 1 if the response starts with the task's `format_token`.

    The unsafe set has `num_unsafe` tokens; a fraction `conflict` of them is taken from the
    highest-scoring tokens (the rest at random), so helpfulness and safety conflict.

    Args:
      task: the language.
      num_unsafe: size of the unsafe token set.
      conflict: in [0, 1], share of unsafe tokens among the top scorers.
      stop_token: id ending a response (default: the lowest-scoring token, so a short answer
        forgoes helpfulness, a verbosity/helpfulness trade-off).
      format_token: id that a well-formatted response starts with (default the highest-scoring).
      seed: seed of the unsafe set.
    """

    task: BigramLanguage
    num_unsafe: int = 4
    conflict: float = 0.75
    stop_token: int | None = None
    format_token: int | None = None
    seed: int = 0

    names = ("helpfulness", "verbosity", "safety", "format")

    def __post_init__(self):
        if not 0 <= self.num_unsafe <= self.task.num_tokens:
            raise ValueError(f"num_unsafe must be in [0, {self.task.num_tokens}]")
        if not 0.0 <= self.conflict <= 1.0:
            raise ValueError(f"conflict must be in [0, 1], got {self.conflict}")

    def _scores(self):
        return self.task.token_scores()

    @property
    def stop_id(self) -> int:
        if self.stop_token is not None:
            return int(self.stop_token)
        return int(NUM_SPECIAL + np.argmin(self._scores()[NUM_SPECIAL:]))

    @property
    def format_id(self) -> int:
        if self.format_token is not None:
            return int(self.format_token)
        return int(NUM_SPECIAL + np.argmax(self._scores()[NUM_SPECIAL:]))

    def unsafe_ids(self) -> np.ndarray:
        """The unsafe token ids, sorted."""
        scores = self._scores()[NUM_SPECIAL:]
        order = np.argsort(-scores)
        n_top = int(round(self.conflict * self.num_unsafe))
        top = order[:n_top]
        rng = np.random.default_rng([self.task.seed, self.seed, 11])
        rest = rng.permutation(order[n_top:])[:self.num_unsafe - n_top]
        return np.sort(np.concatenate([top, rest]) + NUM_SPECIAL).astype(np.int32)

    def attributes(self, responses) -> jax.Array:
        """[N, R] ids -> [N, 4] float32 attributes in `names` order."""
        r = jnp.asarray(responses)
        length = stop_length(r, self.stop_id)
        valid = jnp.arange(r.shape[-1])[None, :] < length[:, None]
        count = jnp.maximum(length, 1).astype(jnp.float32)
        scores = jnp.asarray(self._scores())[r]
        helpful = jnp.where(valid, scores, 0.0).sum(-1) / count
        unsafe = jnp.zeros(self.task.vocab_size, bool).at[self.unsafe_ids()].set(True)[r]
        safety = -jnp.where(valid, unsafe, False).sum(-1) / count
        return jnp.stack([helpful, length.astype(jnp.float32) / r.shape[-1], safety,
                          format_reward(r, first=self.format_id)], axis=-1)

    def reward(self, responses, weights: Sequence[float]) -> jax.Array:
        """Weighted sum of the attributes: [N, R] -> [N]."""
        w = jnp.asarray(weights, jnp.float32)
        if w.shape != (len(self.names),):
            raise ValueError(f"weights must have {len(self.names)} entries ({self.names})")
        return self.attributes(responses) @ w


class RandomTransformerGold:
    """A random transformer reward model as the gold reward (Gao et al. 2022's setup, in small).

    The reward of a response is the model's scalar output on `[bos] + prompt + response`,
    standardised to mean 0 and std 1 over `num_calibration` prompt/response pairs sampled from the
    language, so rewards are on a known scale.

    Args:
      task: the language.
      d_model, n_layers, n_heads: size of the random model (independent of any policy).
      seed: parameter seed.
      num_calibration: samples used for the standardisation.
    """

    def __init__(self, task: BigramLanguage, *, d_model: int = 32, n_layers: int = 2,
                 n_heads: int = 2, seed: int = 0, num_calibration: int = 1024):
        self.task = task
        cfg = TransformerConfig(vocab_size=task.vocab_size, d_model=d_model, n_layers=n_layers,
                                n_heads=n_heads, d_ff=4 * d_model, max_len=task.seq_len)
        self.model = make_reward_model(cfg)
        self.params = self.model.init(jax.random.key(seed))
        self._shift, self._scale = 0.0, 1.0
        rng = np.random.default_rng([task.seed, seed, 13])
        prompts = task.sample_prompts(rng, num_calibration)
        raw = np.asarray(self(task.sample_responses(rng, prompts), prompts))
        self._shift, self._scale = float(raw.mean()), float(max(raw.std(), 1e-6))

    def __call__(self, responses, prompts) -> jax.Array:
        """[N, R] responses to [N, P] prompts -> [N] standardised gold rewards."""
        prompts = jnp.asarray(prompts, jnp.int32)
        bos = jnp.full((prompts.shape[0], 1), BOS_ID, jnp.int32)
        ids = jnp.concatenate([bos, prompts, jnp.asarray(responses, jnp.int32)], axis=1)
        raw = self.model.apply(self.params, ids, jnp.ones_like(ids, bool))
        return (raw.astype(jnp.float32) - self._shift) / self._scale
