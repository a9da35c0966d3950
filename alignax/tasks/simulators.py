"""Preference simulators over gold rewards: synthetic labels whose generating process is known.

Every simulator takes gold rewards (or scores) as numpy arrays and returns labels drawn from an
explicit, documented model, so that claims about reward models (robustness to label noise,
mixtures of users, intransitive preferences, ties, calibration, Likert ratings) can be checked
against the truth on a CPU. All randomness comes from an explicit `np.random.Generator` or an int
seed (`rng=`); nothing reads global random state. Everything is vectorised over examples.

Conventions: `r_a`, `r_b` are the gold rewards of responses a and b, shape [N] (or any two
broadcastable shapes); a binary label is 1 when a is preferred and 0 when b is; tie-aware labels
are in {0, 0.5, 1}.

Models:
  Bradley-Terry     P(a > b) = sigmoid((r_a - r_b) / T)
  Thurstone         P(a > b) = Phi((r_a - r_b) / (sqrt(2) sigma))
  Davidson ties     P(a > b) : P(tie) : P(b > a) = e^{r_a/T} : nu e^{(r_a + r_b) / 2T} : e^{r_b/T}
  threshold ties    label = 0.5 if |r_a - r_b| < threshold else 1[r_a > r_b]
  uniform flips     label' = 1 - label with probability `rate`, independently
  mixture of users  k ~ Categorical(w);  P(a > b | k) = sigmoid((r_a^k - r_b^k) / T)
  cyclic            cluster c beats cluster c + d (mod K) with probability `dominance`, for
                    1 <= d <= (K - 1) / 2; within a cluster Bradley-Terry on a scalar score
  Likert            rating = #{cut points c_j < s + sigma eps}  (an ordered-probit model)
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy import special

RngLike = np.random.Generator | int


def as_generator(rng: RngLike) -> np.random.Generator:
    """`rng` itself if it is a Generator, else `np.random.default_rng(rng)` (an int seed)."""
    if isinstance(rng, np.random.Generator):
        return rng
    if isinstance(rng, (int, np.integer)) and not isinstance(rng, bool):
        return np.random.default_rng(int(rng))
    raise TypeError(f"rng must be a np.random.Generator or an int seed, got {type(rng).__name__}")


def _diff(r_a, r_b) -> np.ndarray:
    r_a = np.asarray(r_a, np.float64)
    r_b = np.asarray(r_b, np.float64)
    try:
        shape = np.broadcast_shapes(r_a.shape, r_b.shape)
    except ValueError:
        raise ValueError(f"r_a and r_b shapes differ: {r_a.shape} and {r_b.shape}") from None
    return np.broadcast_to(r_a - r_b, shape)


def _bernoulli(p: np.ndarray, rng: RngLike) -> np.ndarray:
    """1 with probability p (p = 0 or 1 exactly gives a deterministic draw), int32."""
    u = as_generator(rng).random(np.shape(p))
    return (u < p).astype(np.int32)


def sigmoid(x) -> np.ndarray:
    """Numerically stable logistic function 1 / (1 + e^{-x})."""
    return special.expit(np.asarray(x, np.float64))


def _scaled_cdf(diff: np.ndarray, scale: float, cdf) -> np.ndarray:
    """cdf(diff / scale); scale 0 gives the step function 1[diff > 0] with 1/2 at diff == 0."""
    if scale < 0:
        raise ValueError(f"temperature / noise scale must be >= 0, got {scale}")
    if scale == 0:
        return np.where(diff > 0, 1.0, np.where(diff < 0, 0.0, 0.5))
    return cdf(diff / scale)


# ------------------------------------------------------------------------------------------------
# Bradley-Terry and Thurstone


def bt_probability(r_a, r_b, temperature: float = 1.0) -> np.ndarray:
    """Bradley-Terry probability that a is preferred: P = sigmoid((r_a - r_b) / temperature).

    temperature 0 is the noiseless limit: 1 if r_a > r_b, 0 if r_a < r_b, 1/2 if equal.
    """
    return _scaled_cdf(_diff(r_a, r_b), temperature, special.expit)


def bradley_terry(r_a, r_b, *, rng: RngLike, temperature: float = 1.0) -> np.ndarray:
    """Bradley-Terry labels: label ~ Bernoulli(sigmoid((r_a - r_b) / temperature)), int32 [N].

    temperature 0 is deterministic (label = 1[r_a > r_b]) except for exact ties, which are broken
    by a fair coin. The probabilities are `bt_probability(r_a, r_b, temperature)`.
    """
    return _bernoulli(bt_probability(r_a, r_b, temperature), rng)


def thurstone_probability(r_a, r_b, noise_std: float = 1.0) -> np.ndarray:
    """Thurstone (case V) probability: P = Phi((r_a - r_b) / (sqrt(2) noise_std)).

    This is P(r_a + noise_std eps_a > r_b + noise_std eps_b) for independent standard normal
    eps_a, eps_b. noise_std 0 gives the step function (1/2 on exact ties).
    """
    return _scaled_cdf(_diff(r_a, r_b), np.sqrt(2.0) * noise_std, special.ndtr)


def thurstone(r_a, r_b, *, rng: RngLike, noise_std: float = 1.0) -> np.ndarray:
    """Thurstone labels: label ~ Bernoulli(Phi((r_a - r_b) / (sqrt(2) noise_std))), int32 [N].

    Equivalent in distribution to comparing noisy utilities r + noise_std * N(0, 1).
    """
    return _bernoulli(thurstone_probability(r_a, r_b, noise_std), rng)


# ------------------------------------------------------------------------------------------------
# Label noise and multiple annotators


def flip_labels(labels, *, rate: float, rng: RngLike) -> tuple[np.ndarray, np.ndarray]:
    """Uniform (symmetric) label noise: each label is replaced by 1 - label with prob. `rate`.

    Works for binary labels and for labels in {0, 0.5, 1} (a tie stays a tie). Returns
    (noisy labels with the dtype of `labels`, flipped mask [N] bool); noisy == labels exactly
    where the mask is False.
    """
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"rate must be in [0, 1], got {rate}")
    labels = np.asarray(labels)
    flipped = as_generator(rng).random(labels.shape) < rate
    noisy = np.where(flipped, 1 - labels, labels).astype(labels.dtype)
    return noisy, flipped


def annotator_votes(
    r_a,
    r_b,
    *,
    num_annotators: int,
    rng: RngLike,
    temperature: float = 1.0,
    flip_rate: float = 0.0,
) -> np.ndarray:
    """Votes of M independent annotators, int32 [N, M] (1 = a preferred).

    Each vote is an independent Bradley-Terry draw, then flipped with probability `flip_rate`:
        P(vote = 1) = (1 - f) p + f (1 - p),   p = sigmoid((r_a - r_b) / temperature).
    """
    if num_annotators < 1:
        raise ValueError(f"num_annotators must be positive, got {num_annotators}")
    rng = as_generator(rng)
    p = bt_probability(r_a, r_b, temperature)
    votes = _bernoulli(np.broadcast_to(p[..., None], p.shape + (num_annotators,)), rng)
    if flip_rate > 0:
        votes, _ = flip_labels(votes, rate=flip_rate, rng=rng)
    return votes


def soft_labels(votes) -> np.ndarray:
    """Fraction of the votes for a, float [N]: the mean over the last (annotator) axis."""
    return np.asarray(votes, np.float64).mean(axis=-1)


def vote_strength(votes) -> np.ndarray:
    """Agreement of the annotators, float [N] in [0, 1]: |2 * soft_label - 1|.

    0 = an even split, 1 = unanimous (either way).
    """
    return np.abs(2.0 * soft_labels(votes) - 1.0)


def majority_label(votes, *, rng: RngLike) -> np.ndarray:
    """Majority vote, int32 [N]; an even split is broken by a fair coin."""
    frac = soft_labels(votes)
    p = np.where(frac > 0.5, 1.0, np.where(frac < 0.5, 0.0, 0.5))
    return _bernoulli(p, rng)


# ------------------------------------------------------------------------------------------------
# Heterogeneous users


def _check_weights(weights, k: int) -> np.ndarray:
    w = np.asarray(weights, np.float64)
    if w.shape != (k,) or np.any(w < 0) or not np.isclose(w.sum(), 1.0):
        raise ValueError(f"weights must be {k} non-negative numbers summing to 1, got {weights}")
    return w


def mixture_probability(rewards_a, rewards_b, *, weights, temperature: float = 1.0) -> np.ndarray:
    """Population preference of a mixture of users: P(a > b) = sum_k w_k sigmoid(dr_k / T).

    rewards_a, rewards_b: [K, N], the gold reward of each group; weights [K]. Returns [N].
    """
    p = bt_probability(rewards_a, rewards_b, temperature)
    return _check_weights(weights, p.shape[0]) @ p


def mixture_preferences(
    rewards_a,
    rewards_b,
    *,
    weights,
    rng: RngLike,
    temperature: float = 1.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Labels from a mixture of users whose gold rewards differ.

    Each example's annotator comes from a latent group k ~ Categorical(weights), and the label is a
    Bradley-Terry draw from that group's reward:
        label ~ Bernoulli(sigmoid((rewards_a[k] - rewards_b[k]) / temperature)).
    rewards_a, rewards_b: [K, N]. Returns (labels int32 [N], group ids int32 [N]).
    """
    rng = as_generator(rng)
    p_all = bt_probability(rewards_a, rewards_b, temperature)
    if p_all.ndim != 2:
        raise ValueError(f"rewards must be [K, N], got shape {p_all.shape}")
    k, n = p_all.shape
    w = _check_weights(weights, k)
    groups = rng.choice(k, size=n, p=w).astype(np.int32)
    p = p_all[groups, np.arange(n)]
    return _bernoulli(p, rng), groups


# ------------------------------------------------------------------------------------------------
# Intransitive preferences


@dataclasses.dataclass(frozen=True, eq=False)
class CyclicTournament:
    """An intransitive tournament over `num_items` items (see `cyclic_preferences`).

    Attributes:
      cluster: [n] int, the cluster of each item, in 0..K-1.
      score: [n] float, the within-cluster Bradley-Terry score of each item.
      num_clusters: K (odd).
      dominance: P(i beats j) when i's cluster dominates j's, in (1/2, 1].
      temperature: within-cluster Bradley-Terry temperature.
    """

    cluster: np.ndarray
    score: np.ndarray
    num_clusters: int
    dominance: float
    temperature: float

    @property
    def num_items(self) -> int:
        return len(self.cluster)

    def probability(self, i, j) -> np.ndarray:
        """P(item i beats item j), vectorised over index arrays i, j.

        With d = (cluster_j - cluster_i) mod K:
          d == 0:                 sigmoid((score_i - score_j) / temperature)
          1 <= d <= (K - 1) / 2:  dominance         (i's cluster beats j's)
          otherwise:              1 - dominance
        P(i beats i) = 1/2, and P(i, j) + P(j, i) = 1 for all i, j.
        """
        i, j = np.broadcast_arrays(np.asarray(i), np.asarray(j))
        d = (self.cluster[j] - self.cluster[i]) % self.num_clusters
        within = bt_probability(self.score[i], self.score[j], self.temperature)
        across = np.where(d <= (self.num_clusters - 1) // 2, self.dominance, 1 - self.dominance)
        return np.where(d == 0, within, across)

    def matrix(self) -> np.ndarray:
        """The full table P[i, j] = P(item i beats item j), [n, n]."""
        idx = np.arange(self.num_items)
        return self.probability(idx[:, None], idx[None, :])

    def sample_pairs(self, n: int, *, rng: RngLike) -> dict[str, np.ndarray]:
        """`n` labelled pairs of distinct items drawn uniformly.

        Returns {"i": [n] int, "j": [n] int, "prob": P(i beats j) [n], "label": [n] int32
        (1 = i wins)}.
        """
        rng = as_generator(rng)
        m = self.num_items
        i = rng.integers(0, m, size=n)
        j = (i + rng.integers(1, m, size=n)) % m  # uniform over j != i
        p = self.probability(i, j)
        return {"i": i, "j": j, "prob": p, "label": _bernoulli(p, rng)}


def cyclic_preferences(
    num_items: int,
    *,
    rng: RngLike,
    num_clusters: int = 3,
    dominance: float = 0.9,
    temperature: float = 1.0,
) -> CyclicTournament:
    """A rock-paper-scissors tournament: items in K clusters whose dominance is cyclic.

    Item i is in cluster i mod K (so the cluster sizes differ by at most one; equal when K divides
    num_items), and has a score s_i ~ N(0, 1). Cluster c beats clusters c + 1, ..., c + (K-1)/2
    (mod K) with probability `dominance` each (for K = 3: 0 beats 1 beats 2 beats 0); within a
    cluster, P(i beats j) = sigmoid((s_i - s_j) / temperature).

    With equal cluster sizes and K = 3, every linear order of the items agrees with at most 2/3
    of the cross-cluster edges (each triple with one item per cluster holds a 3-cycle of which an
    order can respect at most two edges), so no scalar reward explains the preferences.
    """
    if num_clusters < 3 or num_clusters % 2 == 0:
        raise ValueError(f"num_clusters must be odd and >= 3, got {num_clusters}")
    if num_items < num_clusters:
        raise ValueError(f"num_items must be >= num_clusters, got {num_items}")
    if not 0.5 < dominance <= 1.0:
        raise ValueError(f"dominance must be in (0.5, 1], got {dominance}")
    rng = as_generator(rng)
    cluster = np.arange(num_items) % num_clusters
    score = rng.standard_normal(num_items)
    return CyclicTournament(cluster, score, num_clusters, float(dominance), float(temperature))


# ------------------------------------------------------------------------------------------------
# Ties


def ties(r_a, r_b, *, threshold: float) -> np.ndarray:
    """Deterministic threshold ties, float32 [N] in {0, 0.5, 1}.

        label = 0.5 if |r_a - r_b| < threshold, else 1[r_a > r_b].
    Compose with `flip_labels` for noise (a tie stays a tie).
    """
    if threshold < 0:
        raise ValueError(f"threshold must be >= 0, got {threshold}")
    d = _diff(r_a, r_b)
    return np.where(np.abs(d) < threshold, 0.5, (d > 0).astype(np.float64)).astype(np.float32)


def davidson_probabilities(
    r_a, r_b, *, tie_strength: float = 1.0, temperature: float = 1.0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Davidson (1970) tie model: (P(a wins), P(tie), P(b wins)), each [N].

    With x = (r_a - r_b) / temperature and nu = tie_strength >= 0:
        P(a) = e^{x/2} / Z,  P(tie) = nu / Z,  P(b) = e^{-x/2} / Z,  Z = e^{x/2} + nu + e^{-x/2}.
    nu = 0 recovers Bradley-Terry; P(tie) peaks at nu / (2 + nu) when r_a = r_b.
    """
    if tie_strength < 0 or temperature <= 0:
        raise ValueError("tie_strength must be >= 0 and temperature > 0")
    half = 0.5 * _diff(r_a, r_b) / temperature
    # Divide through by e^{|half|} for stability.
    m = np.abs(half)
    ea, eb, et = np.exp(half - m), np.exp(-half - m), tie_strength * np.exp(-m)
    z = ea + eb + et
    return ea / z, et / z, eb / z


def davidson(
    r_a, r_b, *, rng: RngLike, tie_strength: float = 1.0, temperature: float = 1.0
) -> np.ndarray:
    """Labels from the Davidson tie model (`davidson_probabilities`), float32 [N] in {0, 0.5, 1}."""
    p_a, p_t, _ = davidson_probabilities(
        r_a, r_b, tie_strength=tie_strength, temperature=temperature
    )
    u = as_generator(rng).random(p_a.shape)
    return np.where(u < p_a, 1.0, np.where(u < p_a + p_t, 0.5, 0.0)).astype(np.float32)


# ------------------------------------------------------------------------------------------------
# Likert ratings


def default_cutpoints(levels: int, noise_std: float = 0.0) -> np.ndarray:
    """Cut points c_j = sqrt(1 + noise_std^2) Phi^{-1}(j / levels), j = 1..levels-1.

    For scores s ~ N(0, 1) the latent s + noise_std eps is N(0, 1 + noise_std^2), so these cut
    points make every rating equally likely.
    """
    if levels < 2:
        raise ValueError(f"levels must be >= 2, got {levels}")
    return np.sqrt(1.0 + noise_std**2) * special.ndtri(np.arange(1, levels) / levels)


def _cutpoints(levels, noise_std, cutpoints) -> np.ndarray:
    if cutpoints is None:
        return default_cutpoints(levels, noise_std)
    c = np.asarray(cutpoints, np.float64)
    if c.shape != (levels - 1,) or np.any(np.diff(c) <= 0):
        raise ValueError(f"cutpoints must be {levels - 1} increasing numbers, got {cutpoints}")
    return c


def likert_probabilities(
    scores, *, levels: int = 5, noise_std: float = 1.0, cutpoints=None
) -> np.ndarray:
    """Ordered-probit rating distribution, [..., levels]:

        P(rating = k) = Phi((c_{k+1} - s) / sigma) - Phi((c_k - s) / sigma),
    with c_0 = -inf, c_levels = +inf, sigma = noise_std > 0.
    """
    if noise_std <= 0:
        raise ValueError("likert_probabilities needs noise_std > 0")
    c = _cutpoints(levels, noise_std, cutpoints)
    s = np.asarray(scores, np.float64)[..., None]
    cdf = special.ndtr((c - s) / noise_std)
    ones = np.ones_like(cdf[..., :1])
    return np.diff(np.concatenate([0 * ones, cdf, ones], axis=-1), axis=-1)


def likert_ratings(
    attribute_scores,
    *,
    rng: RngLike,
    levels: int = 5,
    noise_std: float = 1.0,
    cutpoints=None,
) -> np.ndarray:
    """Integer ratings in [0, levels - 1] of noisy scores (an ordered-probit model), int32.

        rating = #{j : c_j < s + noise_std * eps},  eps ~ N(0, 1),
    elementwise over `attribute_scores` of any shape (e.g. [N, K]: K attributes per response).
    Cut points default to `default_cutpoints(levels, noise_std)` (equiprobable ratings for
    standard normal scores); pass `cutpoints` (levels - 1 increasing numbers) to change them.
    The rating distribution is `likert_probabilities`; E[rating] increases with the score.
    """
    if noise_std < 0:
        raise ValueError(f"noise_std must be >= 0, got {noise_std}")
    c = _cutpoints(levels, noise_std, cutpoints)
    s = np.asarray(attribute_scores, np.float64)
    latent = s + noise_std * as_generator(rng).standard_normal(s.shape)
    return np.searchsorted(c, latent, side="left").astype(np.int32)
