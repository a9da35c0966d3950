"""A synthetic corpus with Zipfian token frequencies and a verifiable continuation task.

The testbed of the representation-geometry toy (Li et al. 2025; experiments/
representation_geometry.py): a vocabulary much larger than the model width, with the heavy-
tailed unigram statistics of natural text, plus context that a model must read to do better
than the unigram.

Text is a first-order Markov chain over all `vocab_size` ids (no reserved ids): from token u the
next token is drawn from

    T[u] = (1 - mix) * zipf + mix * sum_j w_uj * onehot(succ_uj),

a mixture of the global Zipf law zipf_v ~ 1 / rank(v)^exponent (ranks a random permutation of
the ids) and `successors` favourite successors of u (drawn from the Zipf law without
replacement, weights w_u ~ Dirichlet(1)). The first token of a sequence is drawn from the Zipf
law, so frequent tokens are frequent everywhere and the token frequencies stay Zipf-like.

Verifiable reward (`mode_following_reward`): a response y_1..y_K to a prompt x_1..x_P earns the
fraction of its tokens that are the chain's most likely next token (`top_successor`) after the
token before them (x_P for y_1): exact, checkable, a "correct answer" per step.

Everything is a deterministic function of `seed`; samples use the caller's numpy Generator.
"""

from __future__ import annotations

import dataclasses
import functools

import jax.numpy as jnp
import numpy as np


@dataclasses.dataclass(frozen=True)
class ZipfMarkovCorpus:
    """Zipf-Markov text over `vocab_size` ids.

    Attributes:
      vocab_size: V (every id is a token).
      exponent: s of the Zipf law 1 / rank^s.
      mix: weight of a token's favourite successors in its transition row (0: i.i.d. Zipf).
      successors: favourite successors per token.
      seed: seed of the ranking, the successors and their weights.
    """

    vocab_size: int = 512
    exponent: float = 1.1
    mix: float = 0.7
    successors: int = 4
    seed: int = 0

    def __post_init__(self):
        if self.vocab_size < 2:
            raise ValueError(f"vocab_size must be >= 2, got {self.vocab_size}")
        if not 0.0 <= self.mix <= 1.0:
            raise ValueError(f"mix must be in [0, 1], got {self.mix}")
        if not 1 <= self.successors <= self.vocab_size:
            raise ValueError(f"successors must be in [1, vocab_size], got {self.successors}")

    @functools.cached_property
    def _tables(self) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng([self.seed, 104729])
        v = self.vocab_size
        zipf = np.zeros(v)
        zipf[rng.permutation(v)] = 1.0 / np.arange(1, v + 1) ** self.exponent
        zipf /= zipf.sum()
        transition = np.tile((1.0 - self.mix) * zipf, (v, 1))
        for u in range(v):
            succ = rng.choice(v, size=self.successors, replace=False, p=zipf)
            transition[u, succ] += self.mix * rng.dirichlet(np.ones(self.successors))
        return zipf, transition

    def unigram(self) -> np.ndarray:
        """The Zipf law of first tokens, [V] (sums to 1)."""
        return self._tables[0].copy()

    def transition(self) -> np.ndarray:
        """Next-token distributions, [V, V] (rows sum to 1)."""
        return self._tables[1].copy()

    def top_successor(self) -> np.ndarray:
        """The most likely next token after each token, [V] int32."""
        return np.argmax(self._tables[1], axis=1).astype(np.int32)

    def sample(self, rng: np.random.Generator, n: int, length: int) -> np.ndarray:
        """n sequences of `length` tokens, [n, length] int32."""
        zipf, transition = self._tables
        cum = np.cumsum(transition, axis=1)
        out = np.empty((n, length), np.int32)
        cur = rng.choice(self.vocab_size, size=n, p=zipf)
        out[:, 0] = cur
        for t in range(1, length):
            u = rng.random(n) * cum[cur, -1]
            cur = np.minimum((cum[cur] < u[:, None]).sum(axis=1), self.vocab_size - 1)
            out[:, t] = cur
        return out

    def entropy_rate(self) -> float:
        """Mean next-token entropy (nats) under the unigram weighting of the previous token:
        a reference for a model's per-token loss."""
        zipf, transition = self._tables
        h = -np.sum(transition * np.log(np.maximum(transition, 1e-30)), axis=1)
        return float(np.sum(zipf * h))


def mode_following_reward(top_successor, prompts, responses):
    """Fraction of response tokens equal to the top successor of the token before them.

    Args:
      top_successor: [V] int (`ZipfMarkovCorpus.top_successor`).
      prompts: [N, P] int.
      responses: [N, K] int.

    Returns:
      [N] float32 in {0, 1/K, ..., 1} (jax; jit- and vmap-able).
    """
    top = jnp.asarray(top_successor)
    prev = jnp.concatenate([prompts[:, -1:], responses[:, :-1]], axis=1)
    return jnp.mean((responses == top[prev]).astype(jnp.float32), axis=1)
