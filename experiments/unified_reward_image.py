"""UnifiedReward, image side: one image reward model for two tasks and two label formats, and
Diffusion-DPO of a class-conditional digit generator on rank-then-sift pairs.

Paper: Wang et al. 2025, "Unified Reward Model for Multimodal Understanding and Generation"
(arXiv 2503.05236). The feature-vector toy is experiments/unified_reward.py; this module runs the
same mechanism on the diffusion stack, as the paper applies its judge to image generation and
trains the generator with Diffusion-DPO (Wallace et al. 2023, arXiv 2311.12908,
`alignax.algorithms.diffusion_dpo`).

Setting (8x8 digits, `alignax.tasks.diffusion_data.digit_splits(s)`):
- generator: a class-conditional eps-predicting MLP on the flattened 64-d image (the prompt is
  the digit class), linear schedule T = 100, deterministic DDIM (eta = 0) on K =
  `sampler.num_steps` steps with x0_hat clipped to [-1, 1]; pretrained by L_simple on the seed's
  training digits (`alignax.algorithms.diffusion.pretrain`, seeds vmapped, cached with
  `cached_run`). All sampling (label pools, candidates, evaluation) goes through one
  program (`make_sampler`: seeds and pools vmapped, classes and temperatures traced).
- pools (`pool_plan`): every pool (the RM's training, validation and test images, the
  curation candidates) holds N = `curation.num_candidates` samples for each of P =
  `curation.num_prompts` prompts (classes in turn); a sample is generated for another class
  with probability `data.other_class_fraction` (0.25) and from a hotter sampler, x_T scaled by
  a temperature ~ U[1, `sampler.pool_temperature` = 1.5]; it is judged against its prompt.
  This spread makes the labels informative (see History).
- two related tasks judged on (image, prompt class c), golds sharing the class evidence
  l_c(x) = log p(c | x) of a fixed nearest-class-mean Gaussian classifier (p(k | x) =
  softmax_k(-||x - mu_k||^2 / (2 s v)), mu_k the mean digit of class k over all 1,797 digits, v
  their mean within-class pixel variance, s = `gold.scale`):
    "understanding" (does the image show the prompted class): g_U = l_c(x);
    "generation" (a prompted image's quality): g_G = l_c(x) + lambda q(x), q(x) = mean_i |x_i|
    the crispness of the strokes (pixels at -1 or +1 rather than grey), lambda =
    `gold.quality_weight`.
- labels (few per task, on the generator's samples for their prompts, every task its own
  images): `data.num_pairs` (300) Bradley-Terry pairs of two samples of one prompt
  (temperature `data.label_temperature` = 0.2) and `data.num_points` (200) pointwise ratings
  z(g) + N(0, noise^2), z the gold's z-score over the training pool (a fixed rating scale),
  noise = `data.score_noise` = 0.3; 200 validation pairs per task; 2,000 test pairs per task
  ordered by the gold.
- the image RM: `alignax.rewards.image_rm`'s CNN on the image with the prompt class as ten
  class-gated copies of the image and the task flag as one-hot constant input planes (1 + 10 +
  2 channels, `unified_rm`), with two
  outputs from one trunk: a pairwise reward u (BT loss on pairs) and a pointwise score s
  (squared error on the scores); the CNN is used unchanged, its last layer has two columns.
  RMs: `task_specific`, one per task trained on that task's pairs and scores; `unified`, one
  trained on both tasks and both formats. Same steps, optimiser, minibatch and weight decay;
  all RMs of all seeds in one `fit_small` program (the task weights are data).
- curation and Diffusion-DPO (the generation task): `curation.num_prompts` prompts (classes
  in turn) with N = `curation.num_candidates` samples each (training stream). The unified RM's
  generation head judges every candidate pair (l_ij = u_i - u_j) and scores every candidate
  (s_i). Pair sets: `curated` = `alignax.data.curation.rank_then_sift` (the `list_size` most-
  winning candidates form the chosen list, the fewest-winning the rejected list, then the best-
  scored chosen and the worst-scored rejected), `rank_only` (lists of one: the judge's top vs
  bottom, no pointwise sifting) and `random` (two random candidates ordered by the judge). The
  generator is fine-tuned from the pretrained model (the frozen reference) by Diffusion-DPO on
  each pair set with the same steps, batch and (beta, learning rate).

Splits (`split_seeds`): seed s uses `digit_splits(s)` for the generator's training digits; the
generator's samples for the RM's training labels and for the curation candidates come from the
data seed 3s, the RM's validation pairs and the DPO validation samples from 3s + 1, the RM's
test pairs (ordered by the gold) and the DPO test samples from 3s + 2.

Selection on validation: every RM is early-stopped on the mean validation pair accuracy over
the tasks it is trained on (`fit_small(select=...)`, a check every `rm.eval_every` steps; the
same for every RM). Diffusion-DPO's (beta, learning rate) is chosen per seed from the grid
`dpo.betas` (0.1, 0.3, 3) x `dpo.learning_rates` (3e-5, 1e-4, 3e-4, 1e-3) by the validation
gold averaged over the three pair sets
(`choose_on_validation`; every pair set then uses the same choice, steps and batch). The grid is
one `fit_small` program per learning rate with the pair sets, betas and seeds vmapped; the
final generators are evaluated by the shared sampler program.

Metrics (per seed): `test_{task}_accuracy_{rm}` (gold-pair accuracy of u on the test pairs;
`_point_` for s), `val_accuracy_{rm}`, `chosen_step_{rm}` for rm in unified / task_specific;
`test_dpo_gold_{pair set}` the mean generation gold of the fine-tuned generator's test samples
(`dpo.eval_per_class` per class from each of two draws, temperature 1, prompted class),
`test_dpo_understanding_{set}` and `test_dpo_quality_{set}` its parts, `test_ref_gold` the
pretrained generator's, `{set}_chosen_gold` / `{set}_pair_gold_correct` the curated pairs'
gold, `dpo_beta` / `dpo_learning_rate` chosen,
`label_pair_gold_agreement` (training label pairs whose label agrees with the gold),
`candidate_gold` / `candidate_gold_prompted_class` (all candidates / those generated for their
prompt).
NFE: every generated image costs K denoiser calls (candidates, labels' images and evaluation
alike); a Diffusion-DPO update costs 2 B policy and 2 B reference calls, the same for every
pair set.

Claims (5 seeds, paired 95% t intervals, `alignax.protocol`): (1, 2: comparative) the unified
RM is >= 2 points more accurate than the task-specific RM on the understanding and on the
generation task (notes (d)); (3: comparative) Diffusion-DPO on rank-then-sift pairs reaches a
higher test gold than on random pairs (not by construction here: the generator is trained on
pairs, not a table of the candidates, and must generalise to fresh samples); (4: comparative)
... than on rank-only pairs (the pointwise sifting step helps). Sanity (not counted): the
unified RM ranks test pairs of both tasks above chance.

History (the claims and thresholds above were fixed before any run and never changed): the
first full run (seeds 0-4) was not a valid test. Its pools held only samples of the prompted
class at temperature 1, 150 pairs and 100 scores per task at label temperature 0.5, raw-gold
scores, and the class as constant one-hot planes: the generator gives the prompted class p ~
0.73, two samples of one prompt barely differ in gold, so the labels were near coin flips;
every RM stayed at chance (unified 0.498 / 0.529, task-specific 0.501 / 0.594 on understanding
/ generation; the sanity check failed), the curated pairs were random (chosen beats rejected on
gold 0.53-0.56), and Diffusion-DPO lowered the gold for every pair set (reference 2.48 ->
1.85-2.04) at the smallest learning rate 3e-4. Because the sanity check failed, the world was
changed, decided on development seeds 100-104 only: pools mixing other-class and hotter
samples, label temperature 0.2, 300 pairs and 200 ratings per task (still low data: a few
hundred labels per task against 2,000 test pairs), ratings as z-scores (on the mixed pools the
raw golds' mean square was about 30 and the squared error swamped the shared trunk), the class
as class-gated image planes (with constant planes the RM stayed at chance on the development
seeds too), the RMs' steps 400 -> 800 (on the development seeds the validation accuracy still
rose at step 400), and a DPO grid with smaller learning rates (3e-5, 1e-4) and beta (0.1).
The claims are then evaluated on the same test seeds 0-4 once.

    alignax run experiments/unified_reward_image.py            # full setting, 5 seeds
    alignax run experiments/unified_reward_image.py:smoke      # seconds, for the tests

No `:real` config: the paper's unified judge is a vision-language model trained on large image
and video preference sets; a small honest version would need a user's class-labelled images,
their preference pairs and pointwise ratings for two tasks and a gold to score the fine-tuned
generator, which no standard file layout provides, so `:real` refuses with that reason.
"""

from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from alignax import protocol
from alignax.algorithms.cached import cached_run
from alignax.algorithms.diffusion import pretrain
from alignax.algorithms.diffusion_dpo import diffusion_dpo, pair_batch_fn
from alignax.data.curation import random_pairs, rank_then_sift
from alignax.experiment import is_smoke
from alignax.losses.reward import bradley_terry_loss
from alignax.models.diffusion import (DenoiserConfig, make_denoiser, make_schedule, sample,
                                      timestep_sequence)
from alignax.protocol import seed_mean
from alignax.rewards import image_rm
from alignax.tasks.diffusion_data import DIGIT_SHAPE, digit_splits, load_digits_8x8
from alignax.tasks.splits import split_seeds
from alignax.train.plots import plot_grouped_bars
from alignax.train.small import fit_small

TASKS = ("understanding", "generation")
RMS = ("unified", "task_specific")
PAIR_SETS = ("curated", "rank_only", "random")
NUM_CLASSES = 10
NO_REAL = ("unified_reward_image has no :real config: a unified image judge needs a user's "
           "class-labelled images with pairwise and pointwise labels for two tasks and a gold "
           "for the fine-tuned generator, which no standard data layout provides")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    if arg == "real":
        raise ValueError(NO_REAL)
    smoke = is_smoke(arg)
    c = ml_collections.ConfigDict()
    c.seeds = [0] if smoke else [0, 1, 2, 3, 4]
    c.variants = {"toy": {}}
    c.cache_dir = ""  # "" = <workdir>/../cache: the pretrained generators, shared by reruns
    c.schedule = dict(num_timesteps=50 if smoke else 100)
    c.sampler = dict(num_steps=4 if smoke else 10, clip_x0=1.0, pool_temperature=1.5)
    c.denoiser = dict(hidden=32 if smoke else 128, n_blocks=1 if smoke else 2,
                      time_dim=16 if smoke else 32, steps=20 if smoke else 2000,
                      batch_size=32 if smoke else 128, learning_rate=2e-3,
                      steps_per_log=20 if smoke else 500)
    c.gold = dict(scale=4.0, quality_weight=4.0)
    c.data = dict(num_pairs=32 if smoke else 300, num_points=16 if smoke else 200,
                  num_val_pairs=32 if smoke else 200, num_test_pairs=64 if smoke else 2000,
                  label_temperature=0.2, score_noise=0.3, other_class_fraction=0.25)
    c.rm = dict(channels=(4, 8) if smoke else (8, 16), hidden=8 if smoke else 32,
                steps=10 if smoke else 800, batch_size=16,
                learning_rate=3e-3, weight_decay=1e-2, point_weight=1.0,
                eval_every=5 if smoke else 50)
    c.curation = dict(num_prompts=10 if smoke else 100, num_candidates=8 if smoke else 16,
                      list_size=2 if smoke else 4)
    c.dpo = dict(steps=4 if smoke else 200, batch_size=8 if smoke else 16,
                 betas=(1.0,) if smoke else (0.1, 0.3, 3.0),
                 learning_rates=(1e-3,) if smoke else (3e-5, 1e-4, 3e-4, 1e-3),
                 eval_per_class=8 if smoke else 20)  # smoke: 10 x 8 = the pools' size
    return c


def validate(config) -> None:
    if int(config.sampler.num_steps) > int(config.schedule.num_timesteps):
        raise ValueError(f"sampler.num_steps={config.sampler.num_steps} must be <= "
                         f"schedule.num_timesteps={config.schedule.num_timesteps}")
    cu = config.curation
    if 2 * int(cu.list_size) > int(cu.num_candidates):
        raise ValueError(f"curation.list_size={cu.list_size} must be <= num_candidates / 2")
    if int(cu.num_prompts) < NUM_CLASSES or int(cu.num_prompts) % NUM_CLASSES:
        raise ValueError(f"curation.num_prompts={cu.num_prompts} must be a multiple of "
                         f"{NUM_CLASSES} (the prompts are the classes in turn)")
    if not config.dpo.betas or min(float(b) for b in config.dpo.betas) <= 0:
        raise ValueError(f"dpo.betas={tuple(config.dpo.betas)} must be positive")
    if not config.dpo.learning_rates or min(float(x) for x in config.dpo.learning_rates) <= 0:
        raise ValueError(f"dpo.learning_rates={tuple(config.dpo.learning_rates)} must be "
                         "positive")


# ---------------------------------------------------------------------------------------------
# The golds


def classifier_constants(scale: float) -> tuple[np.ndarray, float]:
    """The fixed classifier's class means mu [10, 64] and its temperature 2 s v (module doc)."""
    d = load_digits_8x8()
    x = d.images.reshape(len(d.images), -1).astype(np.float64)
    mu = np.stack([x[d.labels == k].mean(0) for k in range(NUM_CLASSES)])
    var = float(np.mean([(x[d.labels == k] - mu[k]).var(0).mean() for k in range(NUM_CLASSES)]))
    return mu.astype(np.float32), 2.0 * var * float(scale)


def golds(images, classes, mu, temp: float, quality_weight: float, xp=np):
    """(g_U, g_G, q) of images [..., 8, 8, 1] prompted with classes [...] (numpy or jnp `xp`):
    g_U = log p(c | x), q = mean |x|, g_G = g_U + quality_weight q. Each [...]."""
    flat = images.reshape(images.shape[:-3] + (-1,))
    sq = ((flat[..., None, :] - mu) ** 2).sum(-1) / temp  # [..., 10]
    logits = -sq
    top = logits.max(-1, keepdims=True)
    logz = (top + xp.log(xp.exp(logits - top).sum(-1, keepdims=True)))[..., 0]
    onehot = (classes[..., None] == xp.arange(NUM_CLASSES)).astype(logits.dtype)
    g_u = (logits * onehot).sum(-1) - logz
    q = xp.abs(flat).mean(-1)
    return g_u, g_u + quality_weight * q, q


# ---------------------------------------------------------------------------------------------
# The generator


def denoiser_of(config):
    d = config.denoiser
    return make_denoiser(DenoiserConfig(kind="mlp", data_shape=DIGIT_SHAPE,
                                        hidden=int(d.hidden), n_blocks=int(d.n_blocks),
                                        time_dim=int(d.time_dim), cond_kind="class",
                                        cond_vocab=NUM_CLASSES))


def pretrained_generators(config, workdir: str):
    """Per-seed class-conditional denoisers ([S, ...] leaves) on the seeds' training digits,
    one vmapped `pretrain`, cached by config."""
    seeds = [int(s) for s in config.seeds]
    splits = [digit_splits(s) for s in seeds]
    n = min(len(sp.train.images) for sp in splits)
    x0 = np.stack([sp.train.images[:n] for sp in splits])
    cond = np.stack([sp.train.labels[:n] for sp in splits])
    den, sched = denoiser_of(config), make_schedule("linear", int(config.schedule.num_timesteps))
    d = config.denoiser
    key = {"denoiser": d.to_dict(), "schedule": config.schedule.to_dict(), "seeds": seeds,
           "data_sum": float(np.asarray(x0, np.float64).sum()), "n": n}

    def train(_, run_dir):
        fit = pretrain(run_dir, den, sched, {"x0": jnp.asarray(x0), "cond": jnp.asarray(cond)},
                       num_steps=int(d.steps), batch_size=int(d.batch_size),
                       learning_rate=float(d.learning_rate), seeds=seeds, per_seed_data=True,
                       fields=("x0", "cond"), steps_per_log=int(d.steps_per_log),
                       checkpoint_every=100, plots=False)
        return {"params": fit.params}

    cache = config.cache_dir or os.path.join(os.path.dirname(os.path.abspath(workdir)), "cache")
    return den, sched, cached_run("unified_reward_image_generator", key, train,
                                  cache_dir=cache)["params"]


def make_generate(config, den, sched):
    """`generate(params, data_seed, tag, classes [n], temps [n]) -> images [n, 8, 8, 1]` of one
    seed's generator: DDIM (eta = 0) from temps * x_T, x_T ~ N(0, I) drawn from
    fold_in(key(data_seed), tag) (temps > 1: a hotter sampler, more varied images);
    traceable."""
    timesteps = timestep_sequence(int(config.schedule.num_timesteps),
                                  int(config.sampler.num_steps))
    clip = float(config.sampler.clip_x0) or None

    def generate(params, data_seed, tag, classes, temps):
        key = jax.random.fold_in(jax.random.key(data_seed), tag)
        k_x, k_noise = jax.random.split(key)
        x_T = jax.random.normal(k_x, (classes.shape[0], *DIGIT_SHAPE), jnp.float32)
        x_T = x_T * temps[:, None, None, None]
        return sample(den.apply, params, sched, k_noise, x_T, timesteps, cond=classes,
                      eta=0.0, clip_x0=clip).final

    return generate


def make_sampler(config, den, sched):
    """The one sampler program: `sampler(params [S, ...], data_seeds [S, Q], tags [S, Q],
    classes [S, Q, n], temps [S, Q, n]) -> images [S, Q, n, 8, 8, 1]` (seeds and pools
    vmapped; every pool, candidate set and evaluation goes through it)."""
    generate = make_generate(config, den, sched)
    return jax.jit(jax.vmap(jax.vmap(generate, in_axes=(None, 0, 0, 0, 0))))


def pool_plan(config, data_seed: int, tag: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(prompts [P N], generated classes [P N], temps [P N]) of one pool of N samples for each
    of P prompts (classes in turn): a sample is generated for another class (uniform over the
    other nine) with probability `data.other_class_fraction`, from temps ~ U[1,
    `sampler.pool_temperature`]; the golds judge it against its prompt."""
    cu = config.curation
    groups, size = int(cu.num_prompts), int(cu.num_candidates)
    prompts = np.repeat(np.arange(groups) % NUM_CLASSES, size).astype(np.int32)
    rng = np.random.default_rng([data_seed, 5151, tag])
    other = rng.uniform(size=prompts.shape) < float(config.data.other_class_fraction)
    shift = rng.integers(1, NUM_CLASSES, prompts.shape)
    gen = np.where(other, (prompts + shift) % NUM_CLASSES, prompts).astype(np.int32)
    temps = rng.uniform(1.0, float(config.sampler.pool_temperature), prompts.shape)
    return prompts, gen, temps.astype(np.float32)


# ---------------------------------------------------------------------------------------------
# The unified image RM: image_rm's CNN with the prompt and the task as input planes, two heads


def rm_config(config) -> image_rm.ImageRMConfig:
    r = config.rm
    return image_rm.ImageRMConfig(data_shape=(8, 8, 1 + NUM_CLASSES + len(TASKS)),
                                  channels=tuple(r.channels), hidden=int(r.hidden))


def unified_rm(cfg: image_rm.ImageRMConfig):
    """(init(key), apply(params, x [B, 8, 8, 1], classes [B], task [B] or [], head) -> [B]).

    The input of `image_rm.make_image_rm(cfg)` is [x, x * one-hot(class) planes, one-hot(task)
    planes] ([B, 8, 8, 13]): plane 1 + k holds the image when the prompt is class k and zeros
    otherwise, so the first convolution has a kernel per prompt class and can read the class
    evidence l_c(x) (linear in x for each c) directly; the task flag is a constant plane. Its
    last dense layer has two columns, head 0 the pairwise reward u and head 1 the pointwise
    score s (one trunk; the CNN runs once per head asked for).
    """
    cnn = image_rm.make_image_rm(cfg)

    def init(key):
        k1, k2 = jax.random.split(key)
        p, extra = cnn.init(k1), cnn.init(k2)
        p["fc2"] = {"kernel": jnp.concatenate([p["fc2"]["kernel"], extra["fc2"]["kernel"]], 1),
                    "bias": jnp.zeros((2,), jnp.float32)}
        return p

    def apply(params, x, classes, task, head: int):
        b = x.shape[0]
        gated = x * jax.nn.one_hot(classes, NUM_CLASSES, dtype=jnp.float32)[:, None, None, :]
        flag = jax.nn.one_hot(jnp.broadcast_to(task, (b,)), len(TASKS), dtype=jnp.float32)
        inp = jnp.concatenate([x, gated, jnp.broadcast_to(flag[:, None, None, :],
                                                          (b, 8, 8, len(TASKS)))], -1)
        one = {**params, "fc2": {"kernel": params["fc2"]["kernel"][:, head:head + 1],
                                 "bias": params["fc2"]["bias"][head:head + 1]}}
        return cnn.apply(one, inp)

    return init, apply


def train_rms(config, workdir: str, data: dict, weights: np.ndarray, keys):
    """Every RM of every seed in one `fit_small` program: run i trains on the tasks with
    weights[i] = 1 (both: unified; one: task-specific) the loss sum_t w_t [BT(u on pairs_t) +
    point_weight (s - score)^2 on points_t], minibatches of `rm.batch_size` rows per task and
    format; early-stopped on the mean validation pair accuracy over its tasks.

    data: per-run [R, ...] {"chosen", "rejected": [R, 2, P, 8, 8, 1], "pair_class": [R, 2, P],
    "points": [R, 2, M, 8, 8, 1], "point_class": [R, 2, M], "scores": [R, 2, M], "val_chosen",
    "val_rejected": [R, 2, V, ...], "val_class": [R, 2, V]}. weights: [R, 2]. keys: [R] keys.
    """
    r = config.rm
    init, apply = unified_rm(rm_config(config))
    bs, pw = int(r.batch_size), float(r.point_weight)

    def batch_fn(d, rng):
        k1, k2 = jax.random.split(rng)
        rows = jax.random.randint(k1, (len(TASKS), bs), 0, d["chosen"].shape[1])
        pts = jax.random.randint(k2, (len(TASKS), bs), 0, d["points"].shape[1])
        tk = jnp.arange(len(TASKS))[:, None]
        out = {k: d[k][tk, rows] for k in ("chosen", "rejected", "pair_class")}
        out.update({k: d[k][tk, pts] for k in ("points", "point_class", "scores")})
        return {**out, "w": d["w"]}

    def loss_fn(p, b):
        total, metrics = 0.0, {}
        for t, name in enumerate(TASKS):
            u_c = apply(p, b["chosen"][t], b["pair_class"][t], t, 0)
            u_r = apply(p, b["rejected"][t], b["pair_class"][t], t, 0)
            s = apply(p, b["points"][t], b["point_class"][t], t, 1)
            term = (bradley_terry_loss(u_c, u_r).mean()
                    + pw * jnp.mean((s - b["scores"][t]) ** 2))
            total += b["w"][t] * term
            metrics[f"{name}_loss"] = term
        return total, metrics

    def eval_fn(p, v):
        acc = jnp.stack([jnp.mean(apply(p, v["val_chosen"][t], v["val_class"][t], t, 0)
                                  > apply(p, v["val_rejected"][t], v["val_class"][t], t, 0))
                         for t in range(len(TASKS))])
        return {"val_accuracy": (acc * v["w"]).sum() / v["w"].sum()}

    train_keys = ("chosen", "rejected", "pair_class", "points", "point_class", "scores")
    w = jnp.asarray(weights, jnp.float32)
    fit = fit_small(workdir, loss_fn=loss_fn, has_aux=True, init_params=init,
                    tx=optax.adamw(float(r.learning_rate), weight_decay=float(r.weight_decay)),
                    num_steps=int(r.steps), data={**{k: data[k] for k in train_keys}, "w": w},
                    seeds=list(range(len(weights))), seed_keys=keys, per_seed_data=True,
                    batch_fn=batch_fn, eval_fn=eval_fn,
                    eval_data={**{k: data[k] for k in ("val_chosen", "val_rejected",
                                                       "val_class")}, "w": w},
                    steps_per_log=int(r.eval_every), select=("val_accuracy", "max"),
                    checkpoint_every=1000, plots=False)
    return apply, fit


# ---------------------------------------------------------------------------------------------
# Labels from the generator's samples


def _pairs_within(rng, groups: int, size: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """n random pairs (flat indices) of two distinct members of one group of `size`."""
    g = rng.integers(0, groups, n)
    a = rng.integers(0, size, n)
    b = (a + rng.integers(1, size, n)) % size
    return g * size + a, g * size + b


def task_labels(config, pools: dict, gold_pools: dict, seed: int) -> dict:
    """Per task: BT pairs and noisy scores on the training pool (data seed 3s), BT validation
    pairs (3s + 1), gold-ordered test pairs (3s + 2); each [2, ...] over the tasks; and
    "agreement": the fraction of training pairs whose label agrees with the gold."""
    d, cu = config.data, config.curation
    groups, size = int(cu.num_prompts), int(cu.num_candidates)
    st = split_seeds(seed)
    out = {k: [] for k in ("chosen", "rejected", "pair_class", "points", "point_class",
                           "scores", "val_chosen", "val_rejected", "val_class", "test_a",
                           "test_b", "test_class", "test_a_better")}
    temp = float(d.label_temperature)
    agree = []
    for t in range(len(TASKS)):
        rng = np.random.default_rng([st.train, 3636, t])
        val_rng = np.random.default_rng([st.validation, 3636, t])
        test_rng = np.random.default_rng([st.test, 3636, t])
        for split, r, n, key in (("train", rng, int(d.num_pairs), ""),
                                 ("validation", val_rng, int(d.num_val_pairs), "val_")):
            x, cls, g = pools[split], pools["classes"], gold_pools[split][t]
            a, b = _pairs_within(r, groups, size, n)
            logit = np.clip((g[a] - g[b]) / temp, -50.0, 50.0)
            a_pref = r.uniform(size=n) < 1.0 / (1.0 + np.exp(-logit))
            c, rj = np.where(a_pref, a, b), np.where(a_pref, b, a)
            if not key:
                agree.append(np.mean(g[c] > g[rj]))
            out[f"{key}chosen"].append(x[c])
            out[f"{key}rejected"].append(x[rj])
            out["pair_class" if not key else "val_class"].append(cls[c])
        idx = rng.choice(groups * size, int(d.num_points), replace=False)
        out["points"].append(pools["train"][idx])
        out["point_class"].append(pools["classes"][idx])
        # a rating on a standardised scale: the gold's z-score over the training pool + noise
        g = gold_pools["train"][t]
        z = (g[idx] - g.mean()) / max(float(g.std()), 1e-6)
        out["scores"].append((z + float(d.score_noise)
                              * rng.standard_normal(len(idx))).astype(np.float32))
        a, b = _pairs_within(test_rng, groups, size, int(d.num_test_pairs))
        g = gold_pools["test"][t]
        out["test_a"].append(pools["test"][a])
        out["test_b"].append(pools["test"][b])
        out["test_class"].append(pools["classes"][a])
        out["test_a_better"].append(g[a] > g[b])
    return {**{k: np.stack(v) for k, v in out.items()}, "agreement": float(np.mean(agree))}


# ---------------------------------------------------------------------------------------------
# Curation and Diffusion-DPO


def curate(h, key, list_size: int):
    """The (chosen [P], rejected [P]) of each of PAIR_SETS from the generation head's (u, s) =
    h [P, N, 2] (as experiments/unified_reward.py; traced inside the judging program)."""
    u, s = h[..., 0], h[..., 1]
    logits = u[:, :, None] - u[:, None, :]
    return (rank_then_sift(logits, s, num_chosen=list_size),
            rank_then_sift(logits, s, num_chosen=1),
            random_pairs(key, s.shape, pair_logits=logits))


def evaluate_generators(config, sampler, params, seeds: list[int], gold_consts) -> dict:
    """The generation gold (and its parts) of generators params [S, ...] (seed i's at row i):
    `dpo.eval_per_class` samples per class from each of two draws (tags 77, 78) of the
    validation and of the test data seed, temperature 1. Returns {"{split}_{gold |
    understanding | quality}": [S]} for split in val / test."""
    mu, temp = gold_consts
    lam = float(config.gold.quality_weight)
    streams = [split_seeds(s) for s in seeds]
    ds = np.asarray([[st.validation, st.test, st.validation, st.test] for st in streams],
                    np.int32)
    tags = np.tile(np.asarray([77, 77, 78, 78], np.int32), (len(seeds), 1))
    classes = np.tile(np.arange(NUM_CLASSES, dtype=np.int32), int(config.dpo.eval_per_class))
    cls = np.broadcast_to(classes, (len(seeds), 4, len(classes)))
    x = np.asarray(sampler(params, ds, tags, cls, np.ones(cls.shape, np.float32)))
    g_u, g_g, q = golds(x, cls, mu, temp, lam)  # [S, 4, M]
    out = {}
    for split, cols in (("val", [0, 2]), ("test", [1, 3])):
        for name, v in (("gold", g_g), ("understanding", g_u), ("quality", q)):
            out[f"{split}_{name}"] = v[:, cols].mean((1, 2))
    return out


def run_dpo(config, workdir, den, sched, sampler, ref_params, pairs: dict, gold_consts,
            seeds: list[int]) -> dict:
    """Diffusion-DPO on every pair set x beta x seed, one `fit_small` program per learning rate
    (no evaluation inside: the final generators are evaluated by the shared sampler program).

    pairs: {set: (chosen [S, P, ...], rejected [S, P, ...])}, conditions: the prompts' classes.
    Returns {(set, beta, lr): {metric: [S]}} of the final models.
    """
    dc, cu = config.dpo, config.curation
    betas = [float(b) for b in dc.betas]
    cond = np.tile(np.arange(int(cu.num_prompts)) % NUM_CLASSES, (len(seeds), 1)).astype(np.int32)
    runs = [(name, b, i) for name in PAIR_SETS for b in betas for i in range(len(seeds))]
    # host gathers: no indexing program per parameter shape
    take = lambda tree, idx: jax.tree.map(lambda a: np.asarray(a)[np.asarray(idx)], tree)  # noqa: E731
    data = {"chosen": np.stack([pairs[n][0][i] for n, _, i in runs]),
            "rejected": np.stack([pairs[n][1][i] for n, _, i in runs]),
            "cond": cond[[i for _, _, i in runs]],
            "beta": np.asarray([b for _, b, _ in runs], np.float32),
            "ref_params": take(ref_params, [i for _, _, i in runs])}
    keys = jnp.stack([jax.random.fold_in(jax.random.key(seeds[i]), 4242) for _, _, i in runs])
    out = {}
    n = len(seeds)
    for lr in dc.learning_rates:
        fit = fit_small(os.path.join(workdir, f"dpo_lr{float(lr)}"),
                        loss_fn=diffusion_dpo(den, sched), has_aux=True,
                        init_params=data["ref_params"], per_seed_init=True,
                        tx=optax.adam(float(lr)), num_steps=int(dc.steps), data=data,
                        seeds=list(range(len(runs))), seed_keys=keys, per_seed_data=True,
                        batch_fn=pair_batch_fn(int(dc.batch_size)),
                        steps_per_log=int(dc.steps), checkpoint_every=1000, plots=False)
        last = fit.history[-1]
        for g in range(len(runs) // n):  # runs g n .. g n + n - 1: one (set, beta), every seed
            name, b, _ = runs[g * n]
            row = evaluate_generators(config, sampler, take(fit.params, range(g * n, g * n + n)),
                                      seeds, gold_consts)
            for m in ("implicit_accuracy", "reward_margin"):
                row[m] = np.asarray([last[f"seed_{g * n + i}/{m}"] for i in range(n)])
            out[(name, b, float(lr))] = row
    return out


# ---------------------------------------------------------------------------------------------
# The run


def run_seeds(config: ml_collections.ConfigDict, workdir: str) -> dict[int, dict[str, float]]:
    validate(config)
    seeds = [int(s) for s in config.seeds]
    cu = config.curation
    den, sched, gen_params = pretrained_generators(config, workdir)
    # host arrays: every sampler call then has the same (unspecified) argument shardings, so the
    # pools, the reference and the fine-tuned generators share one compiled program
    gen_params = jax.tree.map(np.asarray, gen_params)
    sampler = make_sampler(config, den, sched)
    consts = classifier_constants(float(config.gold.scale))
    lam = float(config.gold.quality_weight)
    groups, size = int(cu.num_prompts), int(cu.num_candidates)

    # the generator's samples: label pools (train / validation / test) and the candidates
    streams = [split_seeds(s) for s in seeds]
    ds = np.asarray([[st.train, st.validation, st.test, st.train] for st in streams], np.int32)
    tags = np.tile(np.asarray([11, 11, 11, 12], np.int32), (len(seeds), 1))
    plans = [[pool_plan(config, int(d), int(t)) for d, t in zip(dr, tr)]
             for dr, tr in zip(ds, tags)]
    classes = plans[0][0][0]  # the prompts [P N], the same in every pool
    images = np.asarray(sampler(gen_params, ds, tags,
                                np.asarray([[p[1] for p in row] for row in plans]),
                                np.asarray([[p[2] for p in row] for row in plans])))
    # images: [S, 4, P N, 8, 8, 1]

    out = {s: {} for s in seeds}
    labels = []
    cand_gold = []
    for i, seed in enumerate(seeds):
        pools = {"train": images[i, 0], "validation": images[i, 1], "test": images[i, 2],
                 "classes": classes}
        gp = {k: golds(pools[k], classes, consts[0], consts[1], lam)[:2]
              for k in ("train", "validation", "test")}
        labels.append(task_labels(config, pools, gp, seed))
        g_u, g_g, q = golds(images[i, 3], classes, consts[0], consts[1], lam)
        cand_gold.append(g_g.reshape(groups, size))
        on = plans[i][3][1] == classes
        out[seed].update({"candidate_gold": float(g_g.mean()),
                          "candidate_gold_prompted_class": float(g_g[on].mean()),
                          "candidate_understanding": float(g_u.mean()),
                          "candidate_quality": float(q.mean()),
                          "label_pair_gold_agreement": float(labels[-1].pop("agreement"))})

    # RMs: run r = (kind, seed); kinds unified (1, 1), understanding-only (1, 0), generation (0, 1)
    kinds = [(1.0, 1.0), (1.0, 0.0), (0.0, 1.0)]
    weights = np.asarray([w for w in kinds for _ in seeds], np.float32)
    run_seed = [i for _ in kinds for i in range(len(seeds))]
    rm_data = {k: np.stack([labels[i][k] for i in run_seed]) for k in labels[0]}
    keys = jnp.stack([jax.random.fold_in(jax.random.key(seeds[i]), 100 + k)
                      for k in range(len(kinds)) for i in range(len(seeds))])
    apply, fit = train_rms(config, os.path.join(workdir, "rm"), rm_data, weights, keys)
    t_gen = TASKS.index("generation")
    list_size = int(cu.list_size)

    @jax.jit
    @jax.vmap
    def judge(p, d, cand, key):
        """One program for every RM run: test accuracies of both heads on both tasks, and the
        pair sets curated by its generation head on the candidates [P N, ...]."""
        def task(t):
            ua = apply(p, d["test_a"][t], d["test_class"][t], t, 0)
            ub = apply(p, d["test_b"][t], d["test_class"][t], t, 0)
            sa = apply(p, d["test_a"][t], d["test_class"][t], t, 1)
            sb = apply(p, d["test_b"][t], d["test_class"][t], t, 1)
            return (jnp.mean((ua > ub) == d["test_a_better"][t]),
                    jnp.mean((sa > sb) == d["test_a_better"][t]))
        acc = jax.tree.map(lambda *a: jnp.stack(a), *[task(t) for t in range(len(TASKS))])
        h = jnp.stack([apply(p, cand, jnp.asarray(classes), t_gen, k) for k in (0, 1)], -1)
        return acc, curate(h.reshape(groups, size, 2), key, list_size)

    tests = {k: rm_data[k] for k in ("test_a", "test_b", "test_class", "test_a_better")}
    (acc, point_acc), sets = judge(fit.best_params, tests, images[run_seed, 3],
                                   jnp.stack([jax.random.fold_in(jax.random.key(seeds[i]), 7)
                                              for i in run_seed]))
    acc, point_acc = np.asarray(acc), np.asarray(point_acc)  # [R, 2]
    for r, (w, i) in enumerate(zip(weights, run_seed)):
        res = out[seeds[i]]
        rm = "unified" if w.sum() == 2 else "task_specific"
        for t, name in enumerate(TASKS):
            if w[t]:
                res[f"test_{name}_accuracy_{rm}"] = float(acc[r, t])
                res[f"test_{name}_point_accuracy_{rm}"] = float(point_acc[r, t])
        tag = rm if rm == "unified" else f"task_specific_{TASKS[int(np.argmax(w))]}"
        res[f"chosen_step_{tag}"] = float(fit.best_step[r])
        res[f"val_accuracy_{tag}"] = float(fit.best_score[r])

    # curation with the unified RM's generation head (runs 0 .. S-1 are the unified RMs)
    pairs = {name: ([], []) for name in PAIR_SETS}
    rows = np.arange(groups)
    for i, seed in enumerate(seeds):
        g = cand_gold[i]
        cand = images[i, 3].reshape(groups, size, *DIGIT_SHAPE)
        for name, (c, r) in zip(PAIR_SETS, sets):
            c, r = np.asarray(c)[i], np.asarray(r)[i]
            pairs[name][0].append(cand[rows, c])
            pairs[name][1].append(cand[rows, r])
            out[seed][f"{name}_chosen_gold"] = float(g[rows, c].mean())
            out[seed][f"{name}_rejected_gold"] = float(g[rows, r].mean())
            out[seed][f"{name}_pair_gold_correct"] = float(np.mean(g[rows, c] > g[rows, r]))
        out[seed]["best_candidate_gold"] = float(g.max(-1).mean())
    pairs = {k: (np.stack(c), np.stack(r)) for k, (c, r) in pairs.items()}

    # Diffusion-DPO on every pair set, (beta, lr) chosen per seed on validation
    grid = run_dpo(config, workdir, den, sched, sampler, gen_params, pairs, consts, seeds)
    ref = evaluate_generators(config, sampler, gen_params, seeds, consts)
    settings = sorted({(b, lr) for _, b, lr in grid})
    records = []
    for i, seed in enumerate(seeds):
        choice, record = protocol.choose_on_validation(
            {f"beta={b}_lr={lr}": (b, lr) for b, lr in settings},
            lambda v, i=i: float(np.mean([grid[(n, *v)]["val_gold"][i] for n in PAIR_SETS])))
        b, lr = dict((f"beta={b}_lr={lr}", (b, lr)) for b, lr in settings)[choice]
        res = out[seed]
        res["dpo_beta"], res["dpo_learning_rate"] = b, lr
        res["test_ref_gold"] = float(ref["test_gold"][i])
        res["val_ref_gold"] = float(ref["val_gold"][i])
        res["test_ref_understanding"] = float(ref["test_understanding"][i])
        res["test_ref_quality"] = float(ref["test_quality"][i])
        for name in PAIR_SETS:
            row = grid[(name, b, lr)]
            res[f"test_dpo_gold_{name}"] = float(row["test_gold"][i])
            res[f"val_dpo_gold_{name}"] = float(row["val_gold"][i])
            res[f"test_dpo_understanding_{name}"] = float(row["test_understanding"][i])
            res[f"test_dpo_quality_{name}"] = float(row["test_quality"][i])
            res[f"dpo_implicit_accuracy_{name}"] = float(row["implicit_accuracy"][i])
        records.append({"seed": seed, **record})
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, "selection.json"), "w") as f:
        json.dump(records, f, indent=1)
    return out


# ---------------------------------------------------------------------------------------------
# Claims


def claims(results) -> list[protocol.Claim]:
    v = "toy"
    per = results[v]["per_seed"]
    out = []
    for t in TASKS:
        diff = {s: m[f"test_{t}_accuracy_unified"] - m[f"test_{t}_accuracy_task_specific"]
                for s, m in per.items()}
        mu = seed_mean(results, v, f"test_{t}_accuracy_unified")
        ts = seed_mean(results, v, f"test_{t}_accuracy_task_specific")
        out.append(protocol.decide(
            f"the unified image RM is >= 2 points more accurate than a task-specific RM on the "
            f"{t} task at low data", diff, kind=protocol.COMPARATIVE, at_least=0.02,
            measured={"unified": mu, "task_specific": ts, "difference": mu - ts},
            detail=f"pairwise head, gold-ordered test pairs; pointwise head: unified "
                   f"{seed_mean(results, v, f'test_{t}_point_accuracy_unified'):.3f} vs "
                   f"task-specific "
                   f"{seed_mean(results, v, f'test_{t}_point_accuracy_task_specific'):.3f}"))
    gold = {n: protocol.per_seed(results, v, f"test_dpo_gold_{n}") for n in PAIR_SETS}
    mean = {n: float(np.mean(list(x.values()))) for n, x in gold.items()}
    detail = (f"test gold of the fine-tuned generator: rank-then-sift {mean['curated']:.3f}, "
              f"rank-only {mean['rank_only']:.3f}, random {mean['random']:.3f}, reference "
              f"{seed_mean(results, v, 'test_ref_gold'):.3f}; chosen candidates' gold "
              f"{seed_mean(results, v, 'curated_chosen_gold'):.3f} / "
              f"{seed_mean(results, v, 'rank_only_chosen_gold'):.3f} / "
              f"{seed_mean(results, v, 'random_chosen_gold'):.3f}")
    for other, what in (("random", "random pairs ordered by the same judge"),
                        ("rank_only", "rank-only pairs (the pointwise sifting step helps)")):
        out.append(protocol.decide(
            f"Diffusion-DPO on rank-then-sift pairs reaches a higher test gold than on {what}",
            {s: gold["curated"][s] - gold[other][s] for s in gold["curated"]},
            kind=protocol.COMPARATIVE, at_least=0.0,
            measured={"curated": mean["curated"], other: mean[other],
                      "difference": mean["curated"] - mean[other]}, detail=detail))
    acc = {t: seed_mean(results, v, f"test_{t}_accuracy_unified") for t in TASKS}
    out.append(protocol.sanity(
        "the unified image RM orders test pairs of both tasks above chance",
        all(a > 0.5 for a in acc.values()), acc, "trained to"))
    return out


def plots(results, workdir: str) -> list[str]:
    """Per-task test accuracy of each RM, and the fine-tuned generator's gold per pair set."""
    m = results.get("toy", {}).get("metrics", {})
    if not m:
        return []
    stat = lambda names: ([m[n]["mean"] for n in names], [m[n]["std"] for n in names])  # noqa: E731
    folder = os.path.join(workdir, "plots")
    acc = plot_grouped_bars(
        TASKS, {rm: stat([f"test_{t}_accuracy_{rm}" for t in TASKS]) for rm in RMS},
        os.path.join(folder, "unified_reward_image_accuracy.png"),
        title="UnifiedReward (images): unified vs task-specific RMs",
        ylabel="test gold-pair accuracy", ylim=(0.4, 1.0))
    names = ["test_ref_gold"] + [f"test_dpo_gold_{n}" for n in ("random", "rank_only",
                                                                 "curated")]
    dpo = plot_grouped_bars(
        ["reference", "DPO random", "DPO rank-only", "DPO rank-sift"],
        {"unified RM": stat(names)}, os.path.join(folder, "unified_reward_image_dpo.png"),
        title="Diffusion-DPO on curated pairs", ylabel="test generation gold")
    return [acc, dpo]
