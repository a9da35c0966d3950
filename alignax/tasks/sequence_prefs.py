"""A small preference world over every sequence of a tiny vocabulary: prompts, a gold reward with
token interactions, and a random reference policy (for `alignax.models.sequence_table` toys).

Responses are all N = V^L sequences of `alignax.models.sequence_table.SequenceSpace`. A prompt x
is a feature vector z(x) ~ N(0, I_D). The gold reward has prompt-dependent token utilities and
prompt-independent interactions of adjacent tokens:

    gold(x, y) = sum_t (z(x) @ U[t, :, y_t] + b[t, y_t]) + sum_{t < L-1} C[t, y_t, y_{t+1}],

U ~ N(0, unary_scale^2 / D), b ~ N(0, unary_scale^2 / 4), C ~ N(0, pair_scale^2). A reward model
on token-by-position features (`token_features`) sees the unary part linearly, not the
interactions. The reference policy is a log-linear prefix-tree policy with random logits
(`reference_params`: bias ~ N(0, ref_scale^2), weight ~ N(0, ref_scale^2 / D) at every node), so
it is unrelated to the gold and far from uniform. Everything is seeded by the world's `seed` (the
"world" of an experiment seed); prompts and samples are data and take their own seeds.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from alignax.models import sequence_table as st


@dataclasses.dataclass(frozen=True)
class PreferenceWorld:
    """The gold reward and the reference policy of one world.

    Attributes:
      space: the response space.
      dim: D, prompt features.
      unary_scale: scale of the per-token utilities.
      pair_scale: scale of the adjacent-token interactions.
      ref_scale: scale of the reference policy's random logits.
      seed: the world's seed.
    """

    space: st.SequenceSpace
    dim: int = 4
    unary_scale: float = 1.0
    pair_scale: float = 0.5
    ref_scale: float = 1.0
    seed: int = 0

    def _gold_draws(self):
        rng = np.random.default_rng([self.seed, 4747])
        v, length, d = self.space.vocab_size, self.space.length, self.dim
        unary = self.unary_scale * rng.standard_normal((length, d, v)) / np.sqrt(d)
        bias = 0.5 * self.unary_scale * rng.standard_normal((length, v))
        pair = self.pair_scale * rng.standard_normal((max(length - 1, 0), v, v))
        return unary, bias, pair

    def prompts(self, n: int, seed: int) -> np.ndarray:
        """[n, D] float32 prompt features drawn with `seed` (a data seed)."""
        rng = np.random.default_rng([seed, 4748])
        return rng.standard_normal((n, self.dim)).astype(np.float32)

    def gold(self, z: np.ndarray) -> np.ndarray:
        """[..., N] float32 gold reward of every response for prompts z [..., D]."""
        unary, bias, pair = self._gold_draws()
        seq = self.space.sequences  # [N, L]
        u = np.einsum("...d,tdv->...tv", np.asarray(z, np.float64), unary) + bias  # [..., L, V]
        pos = np.arange(self.space.length)
        s = u[..., pos[None, :], seq].sum(-1)  # [..., N]
        if self.space.length > 1:
            inter = pair[pos[None, :-1], seq[:, :-1], seq[:, 1:]].sum(-1)  # [N]
            s = s + inter
        return s.astype(np.float32)

    def reference_params(self) -> dict:
        """The reference policy: log-linear `sequence_table` params {"bias": [M, V],
        "weight": [M, D, V]} with random N(0, ref_scale^2) biases and N(0, ref_scale^2 / D)
        weights."""
        rng = np.random.default_rng([self.seed, 4749])
        m, v, d = self.space.num_nodes, self.space.vocab_size, self.dim
        return {"bias": (self.ref_scale * rng.standard_normal((m, v))).astype(np.float32),
                "weight": (self.ref_scale * rng.standard_normal((m, d, v))
                           / np.sqrt(d)).astype(np.float32)}

    def token_features(self) -> np.ndarray:
        """[N, L * V] float32 one-hot token-by-position features of every response."""
        return token_features(self.space)


def token_features(space: st.SequenceSpace) -> np.ndarray:
    """[N, L * V] float32: feature t * V + a is 1 when y_t = a."""
    n, length, v = space.num_sequences, space.length, space.vocab_size
    out = np.zeros((n, length * v), np.float32)
    out[np.arange(n)[:, None], np.arange(length)[None, :] * v + space.sequences] = 1.0
    return out


@functools.partial(jax.jit, static_argnums=(0, 3, 5))
def _sample(space, params, key, num, z, temperature):
    return st.sample(space, params, key, num, z, temperature=temperature)


def sample_pairs(space: st.SequenceSpace, params: dict, z: np.ndarray, per_prompt: int,
                 seed: int, *, stream: int = 0, temperature: float = 1.0) -> dict:
    """`per_prompt` response pairs (y, y') drawn i.i.d. from pi(.|x)^(1/temperature) for every
    prompt of z [P, D] (a policy's `sequence_table` params), with `seed` (a data seed) and
    `stream` (independent draws of one data seed: fold_in(key(seed), stream)).

    Returns:
      {"prompt": [P * per_prompt] int32 prompt rows, "a", "b": [P * per_prompt] int32 sequence
      indices}, prompt-major.
    """
    key = jax.random.fold_in(jax.random.key(np.uint32(seed % (1 << 32))), int(stream))
    draws = np.asarray(_sample(space, params, key, 2 * per_prompt, jnp.asarray(z),
                               float(temperature)))  # [P, 2k]
    p = z.shape[0]
    return {"prompt": np.repeat(np.arange(p, dtype=np.int32), per_prompt),
            "a": draws[:, :per_prompt].reshape(-1).astype(np.int32),
            "b": draws[:, per_prompt:].reshape(-1).astype(np.int32)}
