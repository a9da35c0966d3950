"""A tiny language world with an exact gold score in [0, 10] and a judge (sequence-table LMs).

Responses are all sequences y of `length` tokens over `vocab_size` tokens
(`alignax.models.sequence_table.SequenceSpace`). A prompt x is a feature vector z(x) in R^D
(standard normal). The gold score is additive over positions with prompt-dependent token
utilities, linear in the prompt features:

    u_t(x, a) = z(x) @ U[t, :, a] + b[t, a],     S(x, y) = sum_t u_t(x, y_t),
    gold(x, y) = 10 (S(x, y) - min_y' S(x, y')) / (max_y' S(x, y') - min_y' S(x, y')),

so the best response of every prompt scores exactly 10 and the worst exactly 0. The reference
(SFT) policy picks each token independently with logits kappa (u_t(x, .) + noise_t(x, .)), the
noise linear in z as well (a reference correlated with, but not equal to, the gold); with a
large kappa most of its samples are good, so most pairs drawn from it hold two good responses.
The reference is a log-linear `sequence_table` policy in the prompt features (every node of
depth t carries position t's weights), so a policy can start from it exactly.

A judge scores a response `judge_scores(gold, noise, rng)`: the gold plus Gaussian noise,
rounded to an integer and clipped to [0, 10] (the 1-10 scores of an LLM judge).
`best_vs_lower_pairs` binarises judged samples as UltraFeedback does: chosen = the highest
score of a prompt's samples, rejected = a random sample with a strictly lower score.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from alignax.models.sequence_table import SequenceSpace

MAX_SCORE = 10.0


@dataclasses.dataclass(frozen=True)
class ScoredSequenceWorld:
    """The gold and the reference policy of one world (seeded by `seed`).

    Attributes:
      space: the response space.
      dim: D, prompt features.
      kappa: the reference's inverse temperature on its (noisy) utilities.
      ref_noise: scale of the reference's utility noise relative to the gold utilities.
      seed: the world's seed.
    """

    space: SequenceSpace
    dim: int = 6
    kappa: float = 1.5
    ref_noise: float = 0.5
    seed: int = 0

    def _draws(self):
        rng = np.random.default_rng([self.seed, 2020])
        v, length, d = self.space.vocab_size, self.space.length, self.dim
        utility = rng.standard_normal((length, d, v)) / np.sqrt(d)
        bias = 0.5 * rng.standard_normal((length, v))
        noise_w = self.ref_noise * rng.standard_normal((length, d, v)) / np.sqrt(d)
        noise_b = self.ref_noise * 0.5 * rng.standard_normal((length, v))
        return utility, bias, noise_w, noise_b

    def prompts(self, n: int, seed: int) -> np.ndarray:
        """[n, D] float32 prompt features drawn with `seed` (a data seed)."""
        rng = np.random.default_rng([seed, 2021])
        return rng.standard_normal((n, self.dim)).astype(np.float32)

    def token_utilities(self, z: np.ndarray) -> np.ndarray:
        """[..., L, V] gold utilities u_t(x, a) of prompts z [..., D]."""
        utility, bias, _, _ = self._draws()
        return np.einsum("...d,tdv->...tv", z, utility) + bias

    def gold(self, z: np.ndarray) -> np.ndarray:
        """[..., N] gold score in [0, 10] of every response for prompts z [..., D]."""
        u = self.token_utilities(z)
        seq = self.space.sequences
        s = np.take_along_axis(u[..., None, :, :],
                               seq.reshape((1,) * (u.ndim - 2) + seq.shape + (1,)),
                               axis=-1)[..., 0].sum(-1)  # [..., N]
        lo, hi = u.min(-1).sum(-1), u.max(-1).sum(-1)
        return (MAX_SCORE * (s - lo[..., None]) / (hi - lo)[..., None]).astype(np.float32)

    def reference_params(self, extra_features: int = 0) -> dict:
        """The reference policy as log-linear `sequence_table` params over features
        [z (D), then `extra_features` features it ignores (zero weights)]:
        {"bias": [M, V], "weight": [M, D + extra, V]}."""
        utility, bias, noise_w, noise_b = self._draws()
        space = self.space
        depth = np.zeros(space.num_nodes, np.int64)
        start = 0
        for t in range(space.length):
            count = space.vocab_size ** t
            depth[start:start + count] = t
            start += count
        w = self.kappa * (utility + noise_w)[depth]  # [M, D, V]
        w = np.concatenate([w, np.zeros((space.num_nodes, extra_features, space.vocab_size))],
                           axis=1)
        return {"bias": (self.kappa * (bias + noise_b)[depth]).astype(np.float32),
                "weight": w.astype(np.float32)}


def judge_scores(gold: np.ndarray, noise: float, rng: np.random.Generator) -> np.ndarray:
    """Integer judge scores in [0, 10]: round(gold + noise * N(0, 1)), clipped."""
    s = np.rint(np.asarray(gold) + noise * rng.standard_normal(np.shape(gold)))
    return np.clip(s, 0.0, MAX_SCORE).astype(np.float32)


def best_vs_lower_pairs(scores: np.ndarray, rng: np.random.Generator):
    """UltraFeedback-style binarisation of K judged samples per prompt.

    Args:
      scores: [P, K] judge scores of each prompt's K samples.
      rng: picks the rejected sample among the strictly lower-scored ones.

    Returns:
      (keep [P] bool: prompts whose samples are not all tied, chosen [P] int, rejected [P] int:
      positions in 0..K-1; chosen is the first sample with the highest score, rejected a
      uniformly random sample with a strictly lower score; both 0 where not kept).
    """
    scores = np.asarray(scores)
    chosen = np.argmax(scores, axis=1)
    best = scores[np.arange(len(scores)), chosen]
    lower = scores < best[:, None]
    keep = lower.any(1)
    # a uniform draw among the lower ones: the argmax of random keys on the allowed positions
    keys = np.where(lower, rng.random(scores.shape), -1.0)
    rejected = np.argmax(keys, axis=1)
    return keep, np.where(keep, chosen, 0), np.where(keep, rejected, 0)
