"""Image reward models for the diffusion stack: a small CNN scorer of images, its noise-aware
variant conditioned on the diffusion timestep, and their training objectives as `fit_small`
losses.

- `make_image_rm(ImageRMConfig)`: a pure (init, apply) pair. The CNN is conv3x3 (stride 1) ->
  conv3x3 (stride 2) ... -> global mean pool -> dense -> dense -> one score per image.
  `apply(params, x [B, H, W, C], t=None) -> [B]`.
- Noise-aware (`time_conditioned=True`): the same CNN plus a sinusoidal embedding of the
  timestep t (t = -1 is the clean level) that adds a per-channel shift after every conv and a
  shift to the hidden layer. Every shift comes out of a zero-initialised projection, so
  `noise_aware_from_clean(clean_params, key, cfg)` gives a noise-aware RM equal to the clean RM
  at every t: distillation starts from the clean RM, as TTSnap fine-tunes the clean RM.
- `bt_pair_loss`: the clean RM's Bradley-Terry loss on preference pairs of images (the pairs
  are simulated from a gold score by the experiment, `alignax.tasks.simulators.bradley_terry`).
- `distill_loss`: TTSnap's self-distillation (Yu et al. 2025, "TTSnap: Test-Time Scaling of
  Diffusion Models via Noise-Aware Pruning", arXiv 2511.22242; their reward_train/loss.py):
  the noise-aware RM's score of a trajectory's Tweedie estimate x0_hat(x_t, t) regresses onto
  the frozen clean RM's score of the same trajectory's final image,

      L = mean_b (s(r_phi(x0_hat_b, t_b)) - s(r(x0_b)))^2 + w_pref L_pref,

  with s the batch standardisation (their `bn_before_loss`; identity when off) and L_pref the
  optional Bradley-Terry term on consecutive pairs of the batch ordered by the target, with
  temperature tau.
- The curriculum (`curriculum_batch_fn`): the data is a stack of L noise levels, level 0 the
  clean finals, then the sampler's steps from the last (least noisy) to the first (pure noise);
  training moves through them from clean to noisy in L equal stages of updates (the paper:
  one epoch per noise level, clean to noisy). Every batch holds one level (as the paper's
  batches share one timestep), so the standardisation is per level. "sequential" trains
  stage j on level j only (the paper, which keeps one checkpoint per level); "cumulative"
  (default) draws the batch's level uniformly among the unlocked levels 0..j, so the single
  time-conditioned model still serves the clean levels at the end; "uniform" is the ablation
  without a curriculum (every level from the first update).

Shapes: B batch, L noise levels, N images, H W C an image (NHWC), E time embedding width.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from alignax.losses import bradley_terry_loss
from alignax.models.diffusion import timestep_embedding
from alignax.ops.rank import spearman

Params = dict[str, Any]
CURRICULA = ("cumulative", "sequential", "uniform")


@dataclasses.dataclass(frozen=True)
class ImageRMConfig:
    """A small CNN reward model of images.

    Attributes:
      data_shape: (H, W, C) of one image; H and W divisible by 2^(len(channels) - 1).
      channels: conv widths; the first conv has stride 1, every later one stride 2.
      hidden: width of the dense layer after the global mean pool.
      time_conditioned: the noise-aware variant (apply needs t).
      time_dim: E, the width of the timestep embedding (even).
      max_period: the sinusoidal embedding's longest period.
      activation: a jax.nn function name.
    """

    data_shape: tuple = (8, 8, 1)
    channels: tuple = (8, 16)
    hidden: int = 32
    time_conditioned: bool = False
    time_dim: int = 16
    max_period: float = 1000.0
    activation: str = "silu"

    def __post_init__(self):
        object.__setattr__(self, "data_shape", tuple(int(d) for d in self.data_shape))
        object.__setattr__(self, "channels", tuple(int(c) for c in self.channels))
        if len(self.data_shape) != 3:
            raise ValueError(f"data_shape must be (H, W, C), got {self.data_shape}")
        if not self.channels or min(self.channels) < 1 or self.hidden < 1:
            raise ValueError(f"channels {self.channels} and hidden {self.hidden} must be >= 1")
        factor = 2 ** (len(self.channels) - 1)
        if self.data_shape[0] % factor or self.data_shape[1] % factor:
            raise ValueError(f"data_shape {self.data_shape} must have H, W divisible by "
                             f"{factor} for channels={self.channels}")
        if self.time_dim < 2 or self.time_dim % 2:
            raise ValueError(f"time_dim must be an even int >= 2, got {self.time_dim}")
        if not hasattr(jax.nn, self.activation):
            raise ValueError(f"activation must be a jax.nn function, got {self.activation!r}")


class ImageRM(NamedTuple):
    """`params = init(rng)`; `scores = apply(params, x [B, H, W, C], t=None) -> [B]`."""

    init: Callable[[jax.Array], Params]
    apply: Callable[..., jax.Array]
    config: ImageRMConfig


def _dense(key, fan_in, fan_out, zero=False):
    w = (jnp.zeros((fan_in, fan_out)) if zero else
         jax.random.normal(key, (fan_in, fan_out)) / math.sqrt(fan_in))
    return {"kernel": w.astype(jnp.float32), "bias": jnp.zeros((fan_out,), jnp.float32)}


def _time_params(key, cfg: ImageRMConfig) -> Params:
    """The noise-aware layers: the embedding MLP and zero-initialised shift projections."""
    e = cfg.time_dim
    return {"time_fc": _dense(key, e, e),
            "time_conv": [_dense(None, e, c, zero=True) for c in cfg.channels],
            "time_hidden": _dense(None, e, cfg.hidden, zero=True)}


def _clean_params(key, cfg: ImageRMConfig) -> Params:
    keys = jax.random.split(key, len(cfg.channels) + 2)
    convs, cin = [], cfg.data_shape[-1]
    for k, c in zip(keys, cfg.channels):
        w = jax.random.normal(k, (3, 3, cin, c)) / math.sqrt(9 * cin)
        convs.append({"kernel": w.astype(jnp.float32), "bias": jnp.zeros((c,), jnp.float32)})
        cin = c
    return {"conv": convs, "fc1": _dense(keys[-2], cin, cfg.hidden),
            "fc2": _dense(keys[-1], cfg.hidden, 1)}


def noise_aware_from_clean(clean_params: Params, key: jax.Array, cfg: ImageRMConfig) -> Params:
    """Noise-aware params that equal the clean RM at every t: the clean params plus the time
    layers with zero-initialised shift projections (the time MLP itself drawn from `key`).

    Args:
      clean_params: params of `make_image_rm(cfg with time_conditioned=False)`.
      key: PRNG key of the time-embedding MLP. cfg: the noise-aware config.
    """
    if not cfg.time_conditioned:
        raise ValueError("noise_aware_from_clean needs cfg.time_conditioned=True")
    return {**clean_params, **_time_params(key, cfg)}


def make_image_rm(cfg: ImageRMConfig) -> ImageRM:
    """The pure (init, apply) pair of an `ImageRMConfig`.

    apply(params, x [B, H, W, C], t=None) -> [B] float32 scores. With `time_conditioned`, t is
    [B] or a scalar int timestep (-1: clean); the embedding e = act(W_t emb(t + 1) + b_t) adds
    e W_j to the channels after conv j and e W_h to the hidden layer (W_j, W_h zero at init).
    Initialisation: kernels N(0, 1 / fan_in), biases 0.
    """
    act = getattr(jax.nn, cfg.activation)

    def init(rng):
        k_clean, k_time = jax.random.split(rng)
        params = _clean_params(k_clean, cfg)
        return noise_aware_from_clean(params, k_time, cfg) if cfg.time_conditioned else params

    def apply(params, x, t=None):
        if x.ndim != 4 or tuple(x.shape[1:]) != cfg.data_shape:
            raise ValueError(f"expected images [B, *{cfg.data_shape}], got {x.shape}")
        batch = x.shape[0]
        emb = None
        if cfg.time_conditioned:
            if t is None:
                raise ValueError("a time-conditioned image RM needs t (-1 for clean images)")
            t = jnp.broadcast_to(jnp.asarray(t, jnp.float32), (batch,))
            emb = timestep_embedding(t + 1.0, cfg.time_dim, cfg.max_period)
            emb = act(emb @ params["time_fc"]["kernel"] + params["time_fc"]["bias"])
        elif t is not None:
            raise ValueError("t given to an image RM that is not time-conditioned")
        h = jnp.asarray(x, jnp.float32)
        for j, conv in enumerate(params["conv"]):
            stride = 1 if j == 0 else 2
            h = jax.lax.conv_general_dilated(h, conv["kernel"], (stride, stride), "SAME",
                                             dimension_numbers=("NHWC", "HWIO", "NHWC"))
            h = h + conv["bias"]
            if emb is not None:
                shift = emb @ params["time_conv"][j]["kernel"] + params["time_conv"][j]["bias"]
                h = h + shift[:, None, None, :]
            h = act(h)
        h = h.mean(axis=(1, 2))
        h = h @ params["fc1"]["kernel"] + params["fc1"]["bias"]
        if emb is not None:
            h = h + emb @ params["time_hidden"]["kernel"] + params["time_hidden"]["bias"]
        h = act(h)
        return (h @ params["fc2"]["kernel"] + params["fc2"]["bias"])[:, 0]

    return ImageRM(init=init, apply=apply, config=cfg)


# ----------------------------------------------------------------------------------------------
# Objectives


def bt_pair_loss(apply: Callable[..., jax.Array]) -> Callable[..., jax.Array]:
    """`loss_fn(params, batch) -> loss` of a clean image RM on preference pairs, for `fit_small`.

    batch: {"chosen": [B, H, W, C], "rejected": [B, H, W, C]} (the preferred image first).
    loss = mean_b -log sigmoid(r(chosen_b) - r(rejected_b)) (`bradley_terry_loss`).
    """
    def loss_fn(params, batch):
        return bradley_terry_loss(apply(params, batch["chosen"]),
                                  apply(params, batch["rejected"])).mean()

    return loss_fn


def standardize(x: jax.Array, eps: float = 1e-10) -> jax.Array:
    """(x - mean(x)) / (std(x) + eps) over the batch: [B] -> [B] (TTSnap's bn_before_loss)."""
    x = jnp.asarray(x, jnp.float32)
    return (x - x.mean()) / (x.std() + eps)


def ordered_pair_bt(pred: jax.Array, target: jax.Array, *, temperature: float) -> jax.Array:
    """The BT term of the distillation on consecutive pairs (2i, 2i+1) of the batch, each
    ordered by the target: mean_i -log sigmoid((p_hi - p_lo) / temperature), [B] -> [] (B even).

    TTSnap's preference_loss_fn takes softmax cross-entropy of the pair's two scores / tau with
    the better one as the class, which is this logistic loss.
    """
    if pred.shape[0] % 2:
        raise ValueError(f"ordered_pair_bt needs an even batch, got {pred.shape[0]}")
    p, g = pred.reshape(-1, 2), target.reshape(-1, 2)
    sign = jnp.where(g[:, 0] >= g[:, 1], 1.0, -1.0)
    return bradley_terry_loss(sign * p[:, 0] / temperature, sign * p[:, 1] / temperature).mean()


def distill_loss(apply: Callable[..., jax.Array], *, standardized: bool = True,
                 pref_weight: float = 0.0, pref_temperature: float = 0.1
                 ) -> Callable[..., Any]:
    """`loss_fn(params, batch) -> (loss, metrics)` of TTSnap's self-distillation (module doc).

    batch: {"x": [B, H, W, C] inputs (Tweedie estimates x0_hat, or the clean finals at t = -1),
    "t": [B] int timesteps, "target": [B] the frozen clean RM's score of each row's final image}.
    loss = mean_b (s(r_phi(x_b, t_b)) - s(target_b))^2 + pref_weight * `ordered_pair_bt`,
    s = `standardize` if `standardized` else the identity. Metrics: mse (the first term) and
    corr, the batch's Pearson correlation of prediction and target.
    """
    if pref_weight < 0 or pref_temperature <= 0:
        raise ValueError(f"need pref_weight >= 0 and pref_temperature > 0, got {pref_weight}, "
                         f"{pref_temperature}")

    def loss_fn(params, batch):
        pred = apply(params, batch["x"], batch["t"])
        target = jnp.asarray(batch["target"], jnp.float32)
        sp, st = (standardize(pred), standardize(target)) if standardized else (pred, target)
        mse = jnp.mean(jnp.square(sp - st))
        loss = mse
        if pref_weight > 0:
            loss = loss + pref_weight * ordered_pair_bt(pred, target,
                                                        temperature=pref_temperature)
        corr = jnp.mean(standardize(pred) * standardize(target))
        return loss, {"mse": mse, "corr": corr}

    return loss_fn


# ----------------------------------------------------------------------------------------------
# The curriculum over noise levels


def curriculum_data(finals: jax.Array, x0_hats: jax.Array, timesteps: jax.Array,
                    targets: jax.Array) -> dict[str, jax.Array]:
    """The distillation data of N sampled trajectories, levels ordered clean to noisy.

    Args:
      finals: [N, H, W, C] the trajectories' final images (`DiffusionSample.final`).
      x0_hats: [K, N, H, W, C] the Tweedie estimates at every step's input
        (`DiffusionSample.x0_hats`; step 0 is the noisiest).
      timesteps: [K] the input timestep of every step.
      targets: [N] the clean RM's scores of `finals`.

    Returns:
      {"x": [L = K + 1, N, H, W, C] (level 0: the finals; level l >= 1: step K - l),
       "t": [L] int32 (-1, tau_K, ..., tau_1), "target": [N]}.
    """
    if x0_hats.shape[1:] != finals.shape or timesteps.shape != x0_hats.shape[:1]:
        raise ValueError(f"x0_hats [K, N, ...] {x0_hats.shape}, finals [N, ...] {finals.shape}"
                         f" and timesteps [K] {timesteps.shape} disagree")
    x = jnp.concatenate([finals[None], x0_hats[::-1]], axis=0)
    t = jnp.concatenate([jnp.array([-1], jnp.int32), jnp.asarray(timesteps, jnp.int32)[::-1]])
    return {"x": x, "t": t, "target": jnp.asarray(targets, jnp.float32)}


def curriculum_level(step: jax.Array, num_steps: int, num_levels: int) -> jax.Array:
    """The curriculum's current stage: floor(step L / num_steps), capped at L - 1 (int32 []).

    The num_steps updates are split into L equal stages; stage j unlocks level j (clean first).
    """
    stage = (jnp.asarray(step, jnp.int32) * int(num_levels)) // max(int(num_steps), 1)
    return jnp.minimum(stage, int(num_levels) - 1)


def curriculum_batch_fn(batch_size: int, num_steps: int, mode: str = "cumulative"
                        ) -> Callable[..., dict]:
    """`batch_fn(data, rng, step) -> batch` for `fit_small(with_step=True)`: one noise level
    per batch, chosen by the curriculum `mode` (module docstring), and `batch_size` rows of it
    drawn with replacement.

    data: `curriculum_data(...)` ({"x": [L, N, ...], "t": [L], "target": [N]}).
    batch: {"x": [B, ...], "t": [B], "target": [B], "level": [] int32}.
    """
    if mode not in CURRICULA:
        raise ValueError(f"curriculum mode must be one of {CURRICULA}, got {mode!r}")
    batch_size = int(batch_size)

    def batch_fn(data, rng, step):
        num_levels, n = data["x"].shape[0], data["x"].shape[1]
        k_level, k_rows = jax.random.split(rng)
        stage = curriculum_level(step, num_steps, num_levels)
        if mode == "sequential":
            level = stage
        elif mode == "cumulative":
            level = jax.random.randint(k_level, (), 0, stage + 1)
        else:
            level = jax.random.randint(k_level, (), 0, num_levels)
        rows = jax.random.randint(k_rows, (batch_size,), 0, n)
        return {"x": data["x"][level][rows], "t": jnp.full((batch_size,), data["t"][level]),
                "target": data["target"][rows], "level": level}

    return batch_fn


def level_spearman(apply: Callable[..., jax.Array], params: Params,
                   data: dict[str, jax.Array]) -> jax.Array:
    """Spearman's rho between the RM's score of every level's inputs and the targets: [L].

    data: `curriculum_data(...)`; rho_l = spearman(apply(params, x_l, t_l), target).
    """
    def one(x, t):
        return spearman(apply(params, x, jnp.full((x.shape[0],), t)), data["target"])

    return jax.lax.map(lambda a: one(*a), (data["x"], data["t"]))
