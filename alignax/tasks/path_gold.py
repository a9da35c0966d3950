"""A gold reward that is not additive over tokens: consecutive segments of a response interact.

The additive gold of the language testbed (`token_score_reward`, a mean token score) gives every
token the same credit whatever surrounds it, so when two responses share a prefix the shared
part cancels out of their comparison. Qiu et al. 2024 ("Reward Generalization in RLHF: A
Topological Perspective", arXiv 2402.10184) argue that comparing responses which share prefixes
(tree-structured preference data) helps a reward model because the comparison isolates how a
continuation is judged *in its context*. Under an additive gold there is no context effect to
isolate. `SegmentInteractionReward` is a gold in which there is one and nothing else:

    u_k = (1 / L) sum_{t in segment k} E[y_t]              (segment k of L tokens, E [V, m])
    gold(y) = scale / (K - 1) * sum_{k=1}^{K-1} u_{k-1}^T M u_k       (M [m, m])

The response of R = K L tokens is cut into K segments (the segments of a depth-K response
tree); each segment is summarised by the mean of random token embeddings, and the reward is a
bilinear interaction of every segment with the one before it. With E and M drawn with zero
mean, a token has no credit of its own on average: whether a continuation is good depends on
the segment it follows. The reward is still linear in the features
`phi(y) = 1 / (K - 1) sum_k vec(c_{k-1} c_k^T)` (c_k the token frequencies of segment k), with
weights vec(E M E^T) * scale, so a bag-of-token-pairs linear model is its well-specified ideal
learner (`features`, `pair_weights`).

Special ids (< `num_special`) have zero embeddings.
"""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class SegmentInteractionReward:
    """gold(y) = scale / (K - 1) sum_k u_{k-1}^T M u_k over the K segments of the response.

    Attributes:
      vocab_size: V.
      response_len: R, a multiple of `num_segments`.
      num_segments: K >= 2.
      dim: m, the width of the token embeddings E [V, m].
      seed: draws E ~ N(0, 1) and M ~ N(0, 1 / m) (`np.random.default_rng([seed, 181])`).
      scale: multiplies the reward (e.g. to match another gold's spread).
      num_special: ids below it get zero embeddings.
    """

    vocab_size: int
    response_len: int
    num_segments: int
    dim: int = 4
    seed: int = 0
    scale: float = 1.0
    num_special: int = 0

    def __post_init__(self):
        if self.num_segments < 2:
            raise ValueError(f"num_segments must be >= 2, got {self.num_segments}")
        if self.response_len % self.num_segments:
            raise ValueError(f"response_len {self.response_len} is not a multiple of "
                             f"num_segments {self.num_segments}")
        if self.dim < 1:
            raise ValueError(f"dim must be >= 1, got {self.dim}")

    @property
    def segment_len(self) -> int:
        return self.response_len // self.num_segments

    def params(self) -> tuple[np.ndarray, np.ndarray]:
        """(E [V, m], M [m, m]) in float64."""
        rng = np.random.default_rng([self.seed, 181])
        emb = rng.standard_normal((self.vocab_size, self.dim))
        emb[:self.num_special] = 0.0
        inter = rng.standard_normal((self.dim, self.dim)) / np.sqrt(self.dim)
        return emb, inter

    def _check(self, responses) -> np.ndarray:
        r = np.asarray(responses)
        if r.shape[-1] != self.response_len:
            raise ValueError(f"responses have {r.shape[-1]} tokens, expected "
                             f"{self.response_len}")
        return r

    def __call__(self, responses) -> np.ndarray:
        """[..., R] response ids -> [...] float32 rewards."""
        r = self._check(responses)
        emb, inter = self.params()
        u = emb[r].reshape(*r.shape[:-1], self.num_segments, self.segment_len,
                           self.dim).mean(-2)  # [..., K, m]
        terms = np.einsum("...ka,ab,...kb->...k", u[..., :-1, :], inter, u[..., 1:, :])
        return (self.scale * terms.mean(-1)).astype(np.float32)

    def pair_weights(self) -> np.ndarray:
        """vec(E M E^T) * scale [V * V]: the weights of `features` that give the reward."""
        emb, inter = self.params()
        return (self.scale * emb @ inter @ emb.T).reshape(-1)

    def features(self, responses) -> np.ndarray:
        """phi(y) = 1 / (K - 1) sum_k vec(c_{k-1} c_k^T) [..., V * V], c_k the token frequencies
        of segment k: gold(y) = phi(y) . pair_weights()."""
        r = self._check(responses)
        flat = r.reshape(-1, self.num_segments, self.segment_len)
        counts = np.zeros((len(flat), self.num_segments, self.vocab_size))
        rows = np.arange(len(flat))[:, None, None]
        segs = np.arange(self.num_segments)[None, :, None]
        np.add.at(counts, (rows, segs, flat), 1.0 / self.segment_len)
        pairs = np.einsum("nka,nkb->nab", counts[:, :-1], counts[:, 1:]) / (self.num_segments
                                                                            - 1)
        return pairs.reshape(*r.shape[:-1], self.vocab_size * self.vocab_size)
