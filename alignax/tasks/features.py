"""Feature-vector preference tasks: responses are vectors x in R^d with a known gold reward.

Responses are drawn x ~ N(0, I_d). The gold rewards are frozen functions of x built from a seed:

  LinearReward           r(x) = w . x,  |w| = 1                  (so r(x) ~ N(0, 1))
  MLPReward              r(x) = (v . act(W x + b) - mu) / sd    (mu, sd standardise r, see class)
  MultiObjectiveReward   r_k(x) = w_k . x, k = 1..K, |w_k| = 1, with
                         corr(r_k, r_l) = w_k . w_l = rho s_k s_l  (k != l),
                         s_k = +1 for the first K - num_conflicting attributes and -1 for the
                         rest: attributes on the same side correlate +rho, across sides -rho.

`FeatureTask` bundles a reward with the simulators of `alignax.tasks.simulators` to sample
labelled pairs. With `context_dim > 0`, each pair has a context (prompt) c ~ N(0, I_m) shared by
both responses and the reward gains a bilinear term:
    r(x, c) = r(x) + context_scale * x^T B c,   B_ij ~ N(0, 1 / (d m)),
so that for typical B the bilinear term has variance about context_scale^2.

Everything is a deterministic function of the seeds and the generator passed in.
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np

from alignax.tasks import simulators as sim


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


def _as_2d(x, dim: int) -> np.ndarray:
    x = np.asarray(x, np.float64)
    if x.ndim != 2 or x.shape[1] != dim:
        raise ValueError(f"expected inputs of shape [N, {dim}], got {x.shape}")
    return x


@dataclasses.dataclass(frozen=True)
class LinearReward:
    """r(x) = w . x with w a random unit vector drawn from `seed`: [N, d] -> [N].

    For x ~ N(0, I) the reward is exactly N(0, 1).
    """

    dim: int
    seed: int = 0

    @functools.cached_property
    def weight(self) -> np.ndarray:
        return _unit(np.random.default_rng([self.seed, 101]).standard_normal(self.dim))

    def __call__(self, x) -> np.ndarray:
        return _as_2d(x, self.dim) @ self.weight


_ACTIVATIONS = {"tanh": np.tanh, "relu": lambda z: np.maximum(z, 0.0)}


@dataclasses.dataclass(frozen=True)
class MLPReward:
    """A random frozen 2-layer MLP: [N, d] -> [N].

        h = act(W x + b),  W_ij ~ N(0, 1/d),  b_i ~ N(0, 0.1^2),  act in {tanh, relu}
        r(x) = (v . h - mu) / sd,  v_i ~ N(0, 1/hidden)
    where mu, sd are the mean and standard deviation of v . h over 4096 reference inputs
    x ~ N(0, I) drawn from the seed, so r(x) is roughly standardised for x ~ N(0, I).
    """

    dim: int
    hidden: int = 32
    activation: str = "tanh"
    seed: int = 0

    def __post_init__(self):
        if self.activation not in _ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(_ACTIVATIONS)}")

    @functools.cached_property
    def params(self) -> dict[str, np.ndarray]:
        rng = np.random.default_rng([self.seed, 202])
        w = rng.standard_normal((self.dim, self.hidden)) / np.sqrt(self.dim)
        b = 0.1 * rng.standard_normal(self.hidden)
        v = rng.standard_normal(self.hidden) / np.sqrt(self.hidden)
        ref = _ACTIVATIONS[self.activation](rng.standard_normal((4096, self.dim)) @ w + b) @ v
        return {"w": w, "b": b, "v": v, "mu": ref.mean(), "sd": ref.std()}

    def __call__(self, x) -> np.ndarray:
        p = self.params
        h = _ACTIVATIONS[self.activation](_as_2d(x, self.dim) @ p["w"] + p["b"])
        return (h @ p["v"] - p["mu"]) / p["sd"]


@dataclasses.dataclass(frozen=True)
class MultiObjectiveReward:
    """K linear attribute rewards with controlled correlations: [N, d] -> [N, K].

    w_k = sqrt(rho) s_k u_0 + sqrt(1 - rho) u_k with u_0..u_K orthonormal (from the seed), so
    |w_k| = 1 and, for x ~ N(0, I), corr(r_k, r_l) = w_k . w_l = rho s_k s_l for k != l, where
    s_k = +1 for k < K - num_conflicting and -1 otherwise. Needs dim >= K + 1, rho in [0, 1].
    """

    dim: int
    num_objectives: int = 3
    correlation: float = 0.5
    num_conflicting: int = 1
    seed: int = 0

    def __post_init__(self):
        if self.num_objectives < 1 or self.dim < self.num_objectives + 1:
            raise ValueError("need num_objectives >= 1 and dim >= num_objectives + 1")
        if not 0.0 <= self.correlation <= 1.0:
            raise ValueError(f"correlation must be in [0, 1], got {self.correlation}")
        if not 0 <= self.num_conflicting <= self.num_objectives:
            raise ValueError("num_conflicting must be in [0, num_objectives]")

    @property
    def signs(self) -> np.ndarray:
        """s_k: +1 for the first K - num_conflicting attributes, -1 for the rest, [K]."""
        k = self.num_objectives
        return np.where(np.arange(k) < k - self.num_conflicting, 1.0, -1.0)

    @functools.cached_property
    def weights(self) -> np.ndarray:
        """[d, K] unit columns w_k."""
        k = self.num_objectives
        g = np.random.default_rng([self.seed, 303]).standard_normal((self.dim, k + 1))
        q, _ = np.linalg.qr(g)
        rho = self.correlation
        return np.sqrt(rho) * q[:, :1] * self.signs + np.sqrt(1.0 - rho) * q[:, 1:]

    def correlation_matrix(self) -> np.ndarray:
        """The population correlation of the attributes for x ~ N(0, I): W^T W, [K, K]."""
        return self.weights.T @ self.weights

    def __call__(self, x) -> np.ndarray:
        return _as_2d(x, self.dim) @ self.weights


SIMULATORS = ("bt", "thurstone", "annotators", "mixture", "ties", "davidson")


@dataclasses.dataclass(frozen=True)
class FeatureTask:
    """A preference task over feature vectors with a known gold reward.

    Attributes:
      dim: d, the dimension of a response.
      reward: "linear", "mlp" or "multi" (see the reward classes).
      hidden, activation: of the "mlp" reward.
      num_objectives, correlation, num_conflicting: of the "multi" reward.
      objective_weights: scalarisation of the "multi" attributes into the gold reward,
        r(x) = sum_k a_k r_k(x) (default: the mean, a_k = 1/K); also the default mixture weights.
      context_dim: m; 0 = no contexts. Else the bilinear term of the module docstring is added
        to the gold reward (and to every attribute of "multi").
      context_scale: scale of the bilinear context term.
      seed: seed of the reward (and of B).
    """

    dim: int = 8
    reward: str = "linear"
    hidden: int = 32
    activation: str = "tanh"
    num_objectives: int = 3
    correlation: float = 0.5
    num_conflicting: int = 1
    objective_weights: tuple[float, ...] | None = None
    context_dim: int = 0
    context_scale: float = 1.0
    seed: int = 0

    def __post_init__(self):
        if self.dim < 1:
            raise ValueError(f"dim must be positive, got {self.dim}")
        if self.reward not in ("linear", "mlp", "multi"):
            raise ValueError(f"reward must be 'linear', 'mlp' or 'multi', got {self.reward!r}")
        if self.objective_weights is not None and len(self.objective_weights) != (
            self.num_objectives
        ):
            raise ValueError("objective_weights must have num_objectives entries")
        if self.context_dim < 0:
            raise ValueError(f"context_dim must be >= 0, got {self.context_dim}")

    @functools.cached_property
    def reward_fn(self):
        """The frozen reward of x alone: [N, d] -> [N] ("multi": [N, K])."""
        if self.reward == "linear":
            return LinearReward(self.dim, self.seed)
        if self.reward == "mlp":
            return MLPReward(self.dim, self.hidden, self.activation, self.seed)
        return MultiObjectiveReward(
            self.dim, self.num_objectives, self.correlation, self.num_conflicting, self.seed
        )

    @property
    def scalarization(self) -> np.ndarray:
        """a_k of the "multi" reward, [K]."""
        if self.objective_weights is None:
            return np.full(self.num_objectives, 1.0 / self.num_objectives)
        return np.asarray(self.objective_weights, np.float64)

    @functools.cached_property
    def context_matrix(self) -> np.ndarray:
        """B, [d, m]: entries N(0, 1 / (d m))."""
        m = max(self.context_dim, 1)
        rng = np.random.default_rng([self.seed, 404])
        return rng.standard_normal((self.dim, m)) / np.sqrt(self.dim * m)

    def _context_term(self, x: np.ndarray, context) -> np.ndarray:
        if self.context_dim == 0:
            if context is not None:
                raise ValueError("this task has no contexts (context_dim == 0)")
            return np.zeros(len(x))
        if context is None:
            raise ValueError(f"this task needs contexts of shape [N, {self.context_dim}]")
        c = _as_2d(context, self.context_dim)
        if len(c) != len(x):
            raise ValueError("x and context must have the same number of rows")
        return self.context_scale * np.einsum("nd,dm,nm->n", x, self.context_matrix, c)

    def attributes(self, x, context=None) -> np.ndarray:
        """The K attribute rewards of a "multi" task (plus the context term), [N, K]."""
        if self.reward != "multi":
            raise ValueError("attributes() needs reward='multi'")
        x = _as_2d(x, self.dim)
        return self.reward_fn(x) + self._context_term(x, context)[:, None]

    def gold_reward(self, x, context=None) -> np.ndarray:
        """The scalar gold reward r(x) (+ the context term), [N, d] -> [N]."""
        x = _as_2d(x, self.dim)
        if self.reward == "multi":
            return self.attributes(x, context) @ self.scalarization
        return self.reward_fn(x) + self._context_term(x, context)

    def sample_responses(self, n: int, rng: sim.RngLike) -> np.ndarray:
        """[n, d] responses x ~ N(0, I)."""
        return sim.as_generator(rng).standard_normal((n, self.dim))

    def sample_contexts(self, n: int, rng: sim.RngLike) -> np.ndarray:
        """[n, context_dim] contexts c ~ N(0, I)."""
        return sim.as_generator(rng).standard_normal((n, self.context_dim))

    def sample_pairs(
        self,
        n: int,
        *,
        rng: sim.RngLike,
        simulator: str = "bt",
        temperature: float = 1.0,
        flip_rate: float = 0.0,
        noise_std: float = 1.0,
        num_annotators: int = 5,
        mixture_weights=None,
        tie_threshold: float = 0.1,
        tie_strength: float = 1.0,
    ) -> dict[str, np.ndarray]:
        """`n` pairs of responses labelled by a simulator of the gold reward.

        simulator:
          "bt":         `sim.bradley_terry(r_a, r_b, temperature=temperature)`
          "thurstone":  `sim.thurstone(r_a, r_b, noise_std=noise_std)`
          "annotators": `num_annotators` BT votes (each flipped at `flip_rate`); label = majority;
                        adds "votes" [n, M], "soft_label" [n], "strength" [n]
          "mixture":    "multi" reward only: user group k ~ Categorical(mixture_weights, default
                        the scalarisation), BT on attribute k; adds "group" [n], "group_margin" [n]
          "ties":       `sim.ties(r_a, r_b, threshold=tie_threshold)` (labels in {0, 0.5, 1})
          "davidson":   `sim.davidson(..., tie_strength, temperature)` (labels in {0, 0.5, 1})
        Then (except for "annotators", whose votes are already noisy) each label is flipped with
        probability `flip_rate` (`sim.flip_labels`).

        Returns a dict of numpy arrays: "x_a", "x_b" [n, d] float32; "r_a", "r_b", "margin"
        (= r_a - r_b, the gold margin) [n] float32; "label" [n] float32 (1 = a preferred);
        "flipped" [n] bool; "context" [n, m] float32 when context_dim > 0; plus the extras above.
        """
        if simulator not in SIMULATORS:
            raise ValueError(f"simulator must be one of {SIMULATORS}, got {simulator!r}")
        rng = sim.as_generator(rng)
        x_a = self.sample_responses(n, rng)
        x_b = self.sample_responses(n, rng)
        ctx = self.sample_contexts(n, rng) if self.context_dim else None
        r_a, r_b = self.gold_reward(x_a, ctx), self.gold_reward(x_b, ctx)
        out: dict[str, np.ndarray] = {}
        flip = flip_rate
        if simulator == "bt":
            label = sim.bradley_terry(r_a, r_b, rng=rng, temperature=temperature)
        elif simulator == "thurstone":
            label = sim.thurstone(r_a, r_b, rng=rng, noise_std=noise_std)
        elif simulator == "annotators":
            votes = sim.annotator_votes(
                r_a, r_b, num_annotators=num_annotators, rng=rng, temperature=temperature,
                flip_rate=flip_rate,
            )
            label = sim.majority_label(votes, rng=rng)
            out.update(
                votes=votes, soft_label=sim.soft_labels(votes).astype(np.float32),
                strength=sim.vote_strength(votes).astype(np.float32),
            )
            flip = 0.0
        elif simulator == "mixture":
            if self.reward != "multi":
                raise ValueError("simulator='mixture' needs reward='multi'")
            att_a, att_b = self.attributes(x_a, ctx), self.attributes(x_b, ctx)
            w = self.scalarization if mixture_weights is None else mixture_weights
            label, group = sim.mixture_preferences(
                att_a.T, att_b.T, weights=w, rng=rng, temperature=temperature
            )
            rows = np.arange(n)
            out.update(
                group=group,
                group_margin=(att_a[rows, group] - att_b[rows, group]).astype(np.float32),
            )
        elif simulator == "ties":
            label = sim.ties(r_a, r_b, threshold=tie_threshold)
        else:
            label = sim.davidson(
                r_a, r_b, rng=rng, tie_strength=tie_strength, temperature=temperature
            )
        if flip > 0:
            label, flipped = sim.flip_labels(label, rate=flip, rng=rng)
        else:
            flipped = np.zeros(n, bool)
        out.update(
            x_a=x_a.astype(np.float32),
            x_b=x_b.astype(np.float32),
            r_a=r_a.astype(np.float32),
            r_b=r_b.astype(np.float32),
            margin=(r_a - r_b).astype(np.float32),
            label=np.asarray(label, np.float32),
            flipped=flipped,
        )
        if ctx is not None:
            out["context"] = ctx.astype(np.float32)
        return out
