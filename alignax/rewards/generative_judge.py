"""A generative yes/no judge as a reward model: P("yes" | criteria, generated sample, reference).

RewardDance (Wu et al. 2025, "RewardDance: Reward Scaling in Visual Generation", arXiv
2509.08826) scores a generated image by a vision-language model's probability of answering
"yes" to "does the generated image beat the reference image under these criteria?":

    r(x_gen; x_ref, c) = P_theta("yes" | c, x_gen, x_ref)
                       = softmax(logits_theta(c, x_gen, x_ref))["yes"],

trained by next-token cross-entropy on the yes/no answer of comparative judgements (instead of
a Bradley-Terry loss on scalar scores), so the reward objective is the language model's own
objective and the judge scales with the model. Larger judges are reported to resist reward
hacking: the reward's variance across samples stays high during RL fine-tuning instead of
collapsing.

This module is that mechanism for samples of any shape, without a language model:

- `make_judge(JudgeConfig)`: a pure (init, apply) pair. The judge reads the flattened generated
  sample, the flattened reference and an optional one-hot criteria id, runs an MLP of `depth`
  hidden layers of `width` units, and returns logits over a two-token answer vocabulary
  `ANSWERS` = ("yes", "no"): `apply(params, x_gen [B, ...], x_ref [B, ...], criteria=None [B])
  -> [B, 2]`. Points [B, D] and images [B, H, W, C] alike (flattened).
- `widen(params, width)`: the same judge embedded in a wider one (zero rows and columns): its
  logits are unchanged, and training it in the wide shapes changes only the original entries
  (the padded units get exactly zero gradient, since every activation here has f(0) = 0). Judges
  of several widths can then share one compiled program (stacked along a leading axis).
- `answer_loss` / `judge_loss`: the cross-entropy of the answer token, -log P(label token), for
  labels 1 = "yes" (the generated sample wins) and 0 = "no"; `judge_loss` is the `fit_small`
  loss on pairwise-vs-reference data {"x_gen", "x_ref", "label"[, "criteria"]}.
- `simulate_labels`: yes/no labels from a gold score by Bradley-Terry,
  label ~ Bernoulli(sigmoid((gold(x_gen) - gold(x_ref)) / temperature)).
- `yes_probability`: P("yes") from the logits; `reference_reward`: the reward of each sample
  against a set of K reference samples, the mean over the references of P("yes").
- `reward_spread`, `RewardTrace` (`trace_init`, `trace_update`, `trace_summary`): the
  reward-hacking diagnostic, the std of the rewards across the samples of each RL update (with
  their mean and, when a gold score is known, the mean gold), recorded update by update in a
  fixed-size state that a jitted RL loop carries (e.g. `fit_small(loss_state=...)`).

Shapes: B samples (pairs), K references, U RL updates, C criteria, W width.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

Params = dict[str, Any]
ANSWERS = ("yes", "no")  # the answer vocabulary; logits[..., YES] is the "yes" token's
YES, NO = 0, 1
ACTIVATIONS = ("relu", "gelu", "silu", "tanh")  # all with f(0) = 0 (`widen` relies on it)


@dataclasses.dataclass(frozen=True)
class JudgeConfig:
    """A yes/no judge of (generated sample, reference sample[, criteria]).

    Attributes:
      data_shape: the shape of one sample: (D,) for points, (H, W, C) for images.
      width: W, units of every hidden layer (the judge's size knob).
      depth: number of hidden layers (>= 1).
      num_criteria: C, the number of criteria ids the judge reads as a one-hot (0: none).
      activation: one of `ACTIVATIONS`.
    """

    data_shape: tuple = (2,)
    width: int = 64
    depth: int = 2
    num_criteria: int = 0
    activation: str = "relu"

    def __post_init__(self):
        object.__setattr__(self, "data_shape", tuple(int(d) for d in self.data_shape))
        if not self.data_shape or min(self.data_shape) < 1:
            raise ValueError(f"data_shape must be positive dims, got {self.data_shape}")
        if int(self.width) < 1 or int(self.depth) < 1:
            raise ValueError(f"width={self.width} and depth={self.depth} must be >= 1")
        if int(self.num_criteria) < 0:
            raise ValueError(f"num_criteria must be >= 0, got {self.num_criteria}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}, got "
                             f"{self.activation!r}")

    @property
    def input_dim(self) -> int:
        """Features the first layer reads: 2 prod(data_shape) + num_criteria."""
        return 2 * math.prod(self.data_shape) + int(self.num_criteria)


class Judge(NamedTuple):
    """`params = init(rng)`; `logits = apply(params, x_gen, x_ref, criteria=None) -> [B, 2]`."""

    init: Callable[[jax.Array], Params]
    apply: Callable[..., jax.Array]
    config: JudgeConfig


def _dense(key, fan_in: int, fan_out: int, gain: float) -> Params:
    w = jax.random.normal(key, (fan_in, fan_out), jnp.float32) * (gain / math.sqrt(fan_in))
    return {"kernel": w, "bias": jnp.zeros((fan_out,), jnp.float32)}


def make_judge(cfg: JudgeConfig) -> Judge:
    """The pure (init, apply) pair of a `JudgeConfig`.

    apply(params, x_gen [B, *data_shape], x_ref [B, *data_shape], criteria None | [B] int in
    [0, C)) -> [B, 2] float32 logits over `ANSWERS`:

        h_0 = [flat(x_gen), flat(x_ref), onehot(criteria)],
        h_l = act(h_{l-1} W_l + b_l), l = 1..depth,     logits = h_depth W_o + b_o.

    Initialisation: hidden kernels N(0, g^2 / fan_in) (g = sqrt 2 for relu, 1 otherwise), the
    answer head N(0, 1 / fan_in), biases 0.
    """
    act = getattr(jax.nn, cfg.activation)
    gain = math.sqrt(2.0) if cfg.activation == "relu" else 1.0
    width, depth = int(cfg.width), int(cfg.depth)

    def init(rng):
        keys = jax.random.split(rng, depth + 1)
        dims = [cfg.input_dim] + [width] * depth
        hidden = [_dense(keys[i], dims[i], dims[i + 1], gain) for i in range(depth)]
        return {"hidden": hidden, "head": _dense(keys[-1], width, len(ANSWERS), 1.0)}

    def apply(params, x_gen, x_ref, criteria=None):
        for name, x in (("x_gen", x_gen), ("x_ref", x_ref)):
            if tuple(x.shape[1:]) != cfg.data_shape:
                raise ValueError(f"{name} must be [B, *{cfg.data_shape}], got {x.shape}")
        if x_gen.shape[0] != x_ref.shape[0]:
            raise ValueError(f"x_gen and x_ref need the same batch, got {x_gen.shape[0]} and "
                             f"{x_ref.shape[0]}")
        batch = x_gen.shape[0]
        parts = [jnp.asarray(x_gen, jnp.float32).reshape(batch, -1),
                 jnp.asarray(x_ref, jnp.float32).reshape(batch, -1)]
        if cfg.num_criteria:
            if criteria is None:
                raise ValueError(f"this judge reads criteria ids in [0, {cfg.num_criteria}); "
                                 "got none")
            ids = jnp.broadcast_to(jnp.asarray(criteria, jnp.int32), (batch,))
            parts.append(jax.nn.one_hot(ids, cfg.num_criteria, dtype=jnp.float32))
        elif criteria is not None:
            raise ValueError("criteria given to a judge with num_criteria=0")
        h = jnp.concatenate(parts, axis=-1)
        for layer in params["hidden"]:
            h = act(h @ layer["kernel"] + layer["bias"])
        return h @ params["head"]["kernel"] + params["head"]["bias"]

    return Judge(init=init, apply=apply, config=cfg)


def num_params(params: Params) -> int:
    """The number of scalars in a params tree (a judge's size)."""
    return int(sum(math.prod(jnp.shape(x)) for x in jax.tree.leaves(params)))


def widen(params: Params, width: int) -> Params:
    """A judge's params embedded in a judge of `width` >= its width, with the same logits.

    Every hidden layer gets `width - w` extra units whose incoming kernel columns, biases and
    outgoing kernel rows are zero. Such a unit's pre-activation is 0 and its output act(0) = 0
    (every activation in `ACTIVATIONS`), so the logits are unchanged; and the gradient of any
    loss with respect to the padded entries is exactly 0 (outgoing rows: d/dW = act(0) * ... =
    0; incoming columns and biases: the backpropagated signal goes through the zero outgoing
    rows), so a gradient method without weight decay toward nonzero values (Adam, SGD) leaves
    them at 0: training the wide copy trains the narrow judge.

    Args:
      params: `make_judge(JudgeConfig(width=w, ...)).init(...)` params (or trained ones).
      width: the target width W >= w.

    Returns:
      params of `make_judge(JudgeConfig(width=W, ...))` with the same depth and inputs.
    """
    w = params["head"]["kernel"].shape[0]
    if int(width) < w:
        raise ValueError(f"widen: width={width} is below the judge's width {w}")
    extra = int(width) - w
    hidden = []
    for i, layer in enumerate(params["hidden"]):
        rows = 0 if i == 0 else extra  # the first layer reads the inputs, not hidden units
        hidden.append({"kernel": jnp.pad(layer["kernel"], ((0, rows), (0, extra))),
                       "bias": jnp.pad(layer["bias"], (0, extra))})
    head = {"kernel": jnp.pad(params["head"]["kernel"], ((0, extra), (0, 0))),
            "bias": params["head"]["bias"]}
    return {"hidden": hidden, "head": head}


def yes_probability(logits: jax.Array) -> jax.Array:
    """P("yes") = softmax(logits)[YES] = sigmoid(l_yes - l_no): [..., 2] -> [...] float32."""
    logits = jnp.asarray(logits, jnp.float32)
    if logits.shape[-1] != len(ANSWERS):
        raise ValueError(f"logits must end in {len(ANSWERS)} answers, got {logits.shape}")
    return jax.nn.sigmoid(logits[..., YES] - logits[..., NO])


def answer_loss(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Cross-entropy of the answer token, per pair: -log softmax(logits)[token(label)].

    The judge's training objective in RewardDance (next-token prediction of "yes"/"no"):
    label 1 means the generated sample beats the reference (token "yes"), 0 that it does not
    ("no"). Equal to the logistic loss softplus(-(2 label - 1)(l_yes - l_no)).

    Args:
      logits: [B, 2] over `ANSWERS`. labels: [B] in {0, 1} (bool or int; floats in [0, 1]
        are soft labels: the cross-entropy with (label, 1 - label)).

    Returns:
      [B] float32.
    """
    logp = jax.nn.log_softmax(jnp.asarray(logits, jnp.float32), axis=-1)
    y = jnp.asarray(labels, jnp.float32)
    if y.shape != logp.shape[:-1]:
        raise ValueError(f"labels must have shape {logp.shape[:-1]}, got {y.shape}")
    return -(y * logp[..., YES] + (1.0 - y) * logp[..., NO])


def judge_loss(apply: Callable[..., jax.Array]) -> Callable[..., Any]:
    """`loss_fn(params, batch) -> (loss, metrics)` of a judge for `fit_small(has_aux=True)`.

    batch: {"x_gen": [B, ...], "x_ref": [B, ...], "label": [B] (1 = "yes": x_gen beats x_ref),
    optional "criteria": [B] ids}. loss = mean_b `answer_loss`; metrics: "accuracy" (the argmax
    answer equals the label) and "yes_rate" (mean P("yes")).
    """
    def loss_fn(params, batch):
        logits = apply(params, batch["x_gen"], batch["x_ref"], batch.get("criteria"))
        label = jnp.asarray(batch["label"], jnp.float32)
        p_yes = yes_probability(logits)
        accuracy = jnp.mean(((p_yes > 0.5) == (label > 0.5)).astype(jnp.float32))
        return answer_loss(logits, label).mean(), {"accuracy": accuracy,
                                                   "yes_rate": p_yes.mean()}

    return loss_fn


def simulate_labels(key: jax.Array, gold_gen: jax.Array, gold_ref: jax.Array, *,
                    temperature: float) -> jax.Array:
    """Yes/no labels of pairwise-vs-reference judgements simulated from a gold score.

    label ~ Bernoulli(sigmoid((gold_gen - gold_ref) / temperature)) (Bradley-Terry); temperature
    0 gives 1[gold_gen > gold_ref] (ties: "no").

    Args:
      key: PRNG key. gold_gen, gold_ref: [N] gold scores of the generated and reference sample.
      temperature: >= 0.

    Returns:
      [N] int32 in {0, 1} (1 = "yes").
    """
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    diff = jnp.asarray(gold_gen, jnp.float32) - jnp.asarray(gold_ref, jnp.float32)
    if temperature == 0:
        return (diff > 0).astype(jnp.int32)
    u = jax.random.uniform(key, diff.shape)
    return (u < jax.nn.sigmoid(diff / temperature)).astype(jnp.int32)


def reference_reward(apply: Callable[..., jax.Array], params: Params, x: jax.Array,
                     refs: jax.Array, criteria: jax.Array | None = None) -> jax.Array:
    """The reward of each sample against a set of references: the mean P("yes") over them,

        r(x_b) = (1 / K) sum_k P_theta("yes" | c_b, x_b, ref_k).

    Args:
      apply: the judge's apply. params: its params.
      x: [B, ...] generated samples. refs: [K, ...] reference samples.
      criteria: None, a scalar id, or [B] ids (sample b is judged under c_b against every ref).

    Returns:
      [B] float32 in (0, 1).
    """
    b, k = x.shape[0], refs.shape[0]
    if tuple(x.shape[1:]) != tuple(refs.shape[1:]):
        raise ValueError(f"x {x.shape} and refs {refs.shape} must share the sample shape")
    x_gen = jnp.repeat(x, k, axis=0)                      # [B K, ...]: b-major
    x_ref = jnp.tile(refs, (b,) + (1,) * (refs.ndim - 1))  # [B K, ...]
    if criteria is not None:
        criteria = jnp.repeat(jnp.broadcast_to(jnp.asarray(criteria, jnp.int32), (b,)), k)
    p_yes = yes_probability(apply(params, x_gen, x_ref, criteria))
    return p_yes.reshape(b, k).mean(-1)


# ----------------------------------------------------------------------------------------------
# The reward-hacking diagnostic: the spread of rewards across samples, update by update


def reward_spread(rewards: jax.Array) -> dict[str, jax.Array]:
    """Mean, std and variance of rewards across samples (the last axis): [..., B] -> [...].

    RewardDance's hacking diagnostic is this variance during RL: a hacked reward model gives
    every sample of the collapsed policy nearly the same (high) reward.
    """
    r = jnp.asarray(rewards, jnp.float32)
    return {"reward_mean": r.mean(-1), "reward_std": r.std(-1), "reward_var": r.var(-1)}


class RewardTrace(NamedTuple):
    """Per-update reward statistics of an RL run, in a fixed-size state (a pytree of arrays).

    Attributes:
      mean: [U] the mean reward of each update's samples.
      std: [U] their std across samples (`reward_spread`).
      gold: [U] the mean gold reward of the same samples (NaN where none was given).
      count: [] int32, the number of updates written (entries >= count are NaN).
    """

    mean: jax.Array
    std: jax.Array
    gold: jax.Array
    count: jax.Array


def trace_init(num_updates: int) -> RewardTrace:
    """An empty `RewardTrace` for `num_updates` updates (NaN entries, count 0)."""
    if int(num_updates) < 1:
        raise ValueError(f"num_updates must be >= 1, got {num_updates}")
    nan = jnp.full((int(num_updates),), jnp.nan, jnp.float32)
    return RewardTrace(nan, nan, nan, jnp.zeros((), jnp.int32))


def trace_update(trace: RewardTrace, rewards: jax.Array,
                 gold: jax.Array | None = None) -> RewardTrace:
    """Writes one update's statistics at position `count` (jittable; beyond U: dropped).

    Args:
      trace: the state. rewards: [B] the update's proxy rewards. gold: None or [B] gold rewards
        of the same samples.

    Returns:
      the new state, count + 1.
    """
    spread = reward_spread(rewards)
    i = trace.count
    gold_mean = (jnp.asarray(jnp.nan, jnp.float32) if gold is None
                 else jnp.asarray(gold, jnp.float32).mean())
    put = lambda a, v: a.at[i].set(v, mode="drop")  # noqa: E731
    return RewardTrace(put(trace.mean, spread["reward_mean"]), put(trace.std, spread["reward_std"]),
                       put(trace.gold, gold_mean), i + 1)


def trace_summary(trace: RewardTrace, window: int = 1) -> dict[str, jax.Array]:
    """The first and last `window` written updates of a trace, averaged: `{initial,final}_std`,
    `{initial,final}_mean`, `{initial,final}_gold` and `std_ratio` = final_std / initial_std
    (how much of the initial spread RL kept). Leading batch axes of the trace broadcast."""
    u = trace.mean.shape[-1]
    idx = jnp.arange(u)
    n = jnp.minimum(trace.count, u)[..., None]
    w = jnp.minimum(jnp.asarray(window), n)
    first = (idx < w).astype(jnp.float32)
    last = ((idx >= n - w) & (idx < n)).astype(jnp.float32)

    def avg(a, m):
        return jnp.where(m > 0, a, 0.0).sum(-1) / jnp.maximum(m.sum(-1), 1.0)

    out = {}
    for name, a in (("std", trace.std), ("mean", trace.mean), ("gold", trace.gold)):
        out[f"initial_{name}"], out[f"final_{name}"] = avg(a, first), avg(a, last)
    out["std_ratio"] = out["final_std"] / jnp.maximum(out["initial_std"], 1e-12)
    return out
