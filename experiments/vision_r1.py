"""Vision-R1: criterion-driven localisation rewards and progressive rule refinement in GRPO.

Paper: Zhan et al. 2025, "Vision-R1: Evolving Human-Free Alignment in Large Vision-Language
Models via Vision-Guided Reinforcement Learning" (arXiv 2503.18013).

Mechanism (`alignax.rewards.localization`): a completion's boxes are matched one-to-one to the
ground truth by IoU (box-only Hungarian matcher) and rewarded with R = R_DF + R_recall + R_prec:
the dual-format reward (template and valid coordinates), the recall reward (matched boxes with
IoU >= xi_0 over the ground-truth count) and the precision reward (the mean over the predicted
boxes of 1[IoU >= xi_0] IoU, so extra boxes cost). Progressive rule refinement maps recall and
each box's IoU term through f(x) = 1 if x >= xi_2, 0 if x < xi_1, else x ("differentiation"),
and raises (xi_0, xi_1, xi_2) from (0.5, 0.5, 0.75) to (0.75, 0.75, 0.9) at STEP = half of
training ("staged progression", `staged_rule`; the paper's best STEP, Table 5).

Setting (the notes' toy; the paper fine-tunes 7B LVLMs on 49K images): 1-D "images" of G = 16
cells hold 1 to 3 objects, intervals [s, e) of 2 to 4 cells with gaps of at least one cell,
seen as noisy features: each cell's occupancy plus N(0, 0.5^2) noise, quantised to 4 level
tokens (`make_images`). A tiny Llama-style transformer (2 layers, d = 32,
`alignax.models.transformer`) reads the 16 level tokens and writes boxes in a fixed format:
coordinate tokens s_1 e_1 s_2 e_2 ... (ids 0..G) then STOP to the end, at most K = 6 boxes
(R = 13 tokens, `localization.parse_box_tokens`; the template holds when a STOP ends a whole
number of boxes and only STOPs follow). The starting policy stands for a pretrained LVLM that
localises imprecisely: supervised fine-tuning (`sft.steps` updates, response-token NLL) on
annotations that miss each object with probability 0.2 and widen each boundary outward by one
cell with probability 0.6 (loose boxes: an LVLM's typical errors per the paper's Sec. 3.1,
missed objects and inaccurate boxes). It is trained once per seed and shared by every variant
(`cached_run`). GRPO then runs from it on exact annotations: `small_lm.grpo_loss` (8 images x 8
sampled completions per update, group-normalised advantages, k3 KL to the start policy,
coefficient 0.04) in `fit_small`, every seed in one vmapped program; the reward rule is data of
the program (`reward_data`), so the three variants compile once.

Variants (equal budgets: the same start, updates, samples, learning rate and KL):
  - `fixed`: R_DF + R_recall + R_prec with xi_0 = 0.5 throughout and no differentiation;
  - `progressive`: the same terms with differentiation and staged progression (the paper);
  - `recall_only`: R_recall alone (xi_0 = 0.5), the hackable reward the paper warns of.

Design history, on validation only: a first pilot with noise 0.3 gave a start policy that
already found most objects (validation recall at IoU 0.5 about 0.9), and recall-only GRPO raised
its greedy validation box count by 3% in 200 updates: with one-to-one matching an extra box earns
recall only where an object was missed. The noise was raised to 0.5 (start validation AP@0.5
about 0.74; the paper's base models are far from saturated, Qwen2.5-VL-7B has COCO AP50 27.3)
before any test number was computed; nothing else was changed.

Splits (`split_seeds`): experiment seed s draws the SFT images and then the GRPO training
images from data seed 3s (one stream), the validation images from 3s + 1 and the test images
from 3s + 2. Model initialisation, minibatches and sampling use s.

Selection on validation, the same for every variant: every `grpo.log_every` updates the greedy
completions of the validation images are scored, and each seed keeps the params of the logged
step with the best validation AP@0.75 (`fit_small(select=("val_ap75", "max"))`; ties to the
earliest). AP is detection AP at an IoU threshold (`localization.average_precision`): greedy
boxes ranked by the policy's probability of their two coordinate tokens, each matched to the
unmatched ground truth of highest IoU >= the threshold, all-point interpolation. Test
metrics of the chosen params are `test_*`; those of the final params (the end of the equal
training budget) are `test_*_final`; the start policy's are `test_start_*`. `count_ratio` is the
number of valid predicted boxes over the number of ground-truth boxes (greedy completions;
`count_ratio_sampled`: one completion sampled at temperature 1 per image, reported only).

Claims (5 seeds, paired 95% Student t intervals; the notes' pass criteria):
  (1, comparative) progressive rules beat the fixed threshold: test AP@0.75 (chosen on
      validation) of `progressive` minus `fixed` >= 0.05;
  (2, comparative, `decide` on the per-seed ratio) the recall-only reward inflates the box
      count: test count of `recall_only` / count of `progressive` >= 2, both at the end of
      training (the inflation is what the reward optimises; selection on AP@0.75 could hide it
      behind an early checkpoint, so the claim reads the final policies; the chosen ones are in
      `test_count_ratio`);
  (3, threshold) the full reward does not inflate: `progressive`'s final test count ratio
      (predicted / ground-truth boxes) <= 1.25.
Sanity (shown, not counted): the start policy's boxes are loose by construction, its test
AP@0.5 exceeds its AP@0.75 by >= 0.1.

Reading the full run (5 seeds): GRPO lifts test AP@0.75 from 0.20 (start) to 0.27 (fixed) and
0.28 (progressive) and AP@0.5 from 0.67 to 0.78 for both: progressive rules add 0.011 AP@0.75
(interval -0.015 to 0.036), not 0.05 (claim 1 fails). The recall-only policy ends with 2.28
boxes per image against 1.80 for progressive (ratio 1.27, interval 1.22 to 1.32: it inflates,
but not 2x; claim 2 fails) and has the lowest AP@0.75 (0.22); the full reward ends at 0.91
predicted boxes per ground-truth box (claim 3 passes). In 200 updates with a KL to the start
the recall-only count grows slowly: an extra box only earns recall where an object was missed.

    alignax run experiments/vision_r1.py            # full setting, 5 seeds
    alignax run experiments/vision_r1.py:smoke      # seconds, for the tests

`:real` runs the same reward on a Hugging Face checkpoint and a prompt-only dataset (TRL's
format) whose `data.boxes_field` column (default "boxes") holds each row's ground truth as a
list of boxes, each a list of 2D numbers (lo..., hi...; D = `reward.dim`, 1 for intervals, 2
for [x1, y1, x2, y2]), in the coordinates the prompt asks for, within [`reward.lower`,
`reward.upper`]. The model must answer with a JSON list of such boxes ("[[12, 40], [55, 70]]",
"[]" for none; `localization.parse_boxes_text`: the template holds when the whole completion
parses so, otherwise boxes are still extracted leniently and R_DF is 0). GRPO runs through
`policy_gradient.train` from the checkpoint (also the reference) with `reward.method` (one of
the variants; progressive by default, STEP = `reward.switch_fraction` of the iterations, the
iteration counted in the checkpointed reward state). The last `data.eval_fraction` of the rows
are test and as many before them validation; greedy completions are scored before training
and every `grpo.eval_every` iterations (boxes matched greedily by default, `reward.matcher`:
the exact matcher enumerates assignments, fine for a few boxes only; AP@0.5, AP@0.75, count
ratio, format rate; a box's
score is its completion's mean token log-probability, earlier boxes first), and the iteration
with the best validation AP@0.75 is chosen (selection.json). A `:real` run reports metrics; the
toy claims are not evaluated on it (summary "claims" == []). The iteration that staged
progression reads is counted in the reward state (`policy_gradient.train(reward_state=)`),
which runs in one process (any number of local devices); several processes need a stateless
schedule.

    alignax run experiments/vision_r1.py:real --workdir runs/vision_r1_real \\
        --config.model.path=/ckpt/Qwen2.5-0.5B-Instruct --config.data.path=/data/boxes \\
        --config.reward.dim=2 --config.reward.upper=1000 --config.model.dtype=bfloat16 \\
        --config.lora.rank=16
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from alignax import protocol
from alignax.algorithms import online, policy_gradient, pretrained, real, small_lm
from alignax.algorithms.cached import cached_run
from alignax.models.transformer import TransformerConfig, make_lm
from alignax.rewards import localization as loc
from alignax.sampling.naive import sample_continuations
from alignax.tasks.splits import check_disjoint, split_seeds
from alignax.train.plots import plot_curves
from alignax.train.small import fit_small, stack_seeds
from alignax.train.writers import read_metrics

METHODS = ("fixed", "progressive", "recall_only")
# level thresholds of the quantised noisy occupancy (4 level tokens)
LEVEL_EDGES = (0.25, 0.5, 0.75)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    mode = real.config_mode(arg)
    if mode == "real":
        return _real_config()
    smoke = mode == "smoke"
    c = ml_collections.ConfigDict()
    c.seeds = [0] if smoke else [0, 1, 2, 3, 4]
    c.plots = not smoke  # fit_small's per-stage PNGs
    c.method = "progressive"
    c.variants = {m: {"method": m} for m in METHODS}
    c.cache_dir = ""  # "" -> <workdir>/cache (the shared SFT start)
    c.world = dict(grid=16, min_objects=1, max_objects=3, min_length=2, max_length=4,
                   noise=0.5, max_boxes=6)
    # the start policy's imperfect annotations: objects missed, boundaries widened by a cell
    c.annotation = dict(drop=0.2, loose=0.6)
    c.data = dict(num_sft=64 if smoke else 3000, num_train=32 if smoke else 2000,
                  num_val=16 if smoke else 128, num_test=16 if smoke else 256)
    c.model = dict(d_model=16 if smoke else 32, n_layers=1 if smoke else 2,
                   n_heads=2 if smoke else 4, d_ff=32 if smoke else 64)
    c.sft = dict(steps=8 if smoke else 600, batch_size=8 if smoke else 64, learning_rate=3e-3,
                 log_every=4 if smoke else 100)
    c.grpo = dict(steps=4 if smoke else 200, prompts_per_step=2 if smoke else 8,
                  samples=2 if smoke else 8, learning_rate=5e-4, kl_coef=0.04, temperature=1.0,
                  log_every=2 if smoke else 10)
    c.reward = dict(stages=loc.PAPER_STAGES, switch_fraction=0.5, fixed_xi=0.5,
                    matcher="hungarian")
    return c


def _real_config() -> ml_collections.ConfigDict:
    """`:real` (module docstring): GRPO with the Vision-R1 reward from `model.path`."""
    c = ml_collections.ConfigDict()
    c.seeds = [0]
    real.add_real_fields(c, max_length=512, boxes_field="boxes")  # max_length: the prompt's
    c.reward = dict(method="progressive", stages=loc.PAPER_STAGES, switch_fraction=0.5,
                    fixed_xi=0.5, dim=1, lower=0.0, upper=1000.0, max_boxes=16,
                    matcher="greedy")
    c.grpo = policy_gradient.default_config(
        iterations=200, prompts_per_iteration=16, num_samples=8, max_new_tokens=256,
        temperature=1.0, advantage="grpo", kl_coef=0.04, epochs=1, minibatches=1,
        checkpoint_every=20, log_every=1, eval_every=20, optimizer=real.optimizer(1e-6))
    c.grpo.stop_tokens = (-1,)  # -1: the tokenizer's eos
    return c


def validate(config: ml_collections.ConfigDict) -> None:
    if real.is_real(config):
        real.require(config, "model.path", "data.path")
        r = config.reward
        if r.method not in METHODS:
            raise ValueError(f"reward.method={r.method!r} must be one of {METHODS}")
        if int(r.dim) not in (1, 2):
            raise ValueError(f"reward.dim={r.dim} must be 1 (intervals) or 2 (boxes)")
        if not float(r.lower) < float(r.upper):
            raise ValueError(f"reward.lower={r.lower} must be below reward.upper={r.upper}")
        if int(r.max_boxes) < 1:
            raise ValueError(f"reward.max_boxes={r.max_boxes} must be >= 1")
        policy_gradient.validate(real.online_config(config, "grpo"))
    else:
        if config.method not in METHODS:
            raise ValueError(f"method={config.method!r} must be one of {METHODS}")
        w = config.world
        if not 1 <= w.min_objects <= w.max_objects <= w.max_boxes:
            raise ValueError("world.min_objects, max_objects, max_boxes: need 1 <= min_objects "
                             "<= max_objects <= max_boxes")
        if w.max_objects * (w.max_length + 1) - 1 > w.grid:
            raise ValueError("world.grid is too small for max_objects objects of max_length")
    r = config.reward
    if r.matcher not in loc.MATCHERS:
        raise ValueError(f"reward.matcher={r.matcher!r} must be one of {loc.MATCHERS}")
    if not 0.0 <= float(r.switch_fraction) <= 1.0:
        raise ValueError(f"reward.switch_fraction={r.switch_fraction} must lie in [0, 1]")
    if np.asarray(r.stages).shape != (2, 3):
        raise ValueError(f"reward.stages must be two (xi, low, high) triples, got {r.stages}")


def reward_rule(method: str, reward, steps: int) -> dict[str, np.ndarray]:
    """The variant's reward as data: term weights [3] (format, recall, precision), the two
    stages' (xi, low, high) [2, 3] and the switch step (the fixed rules repeat one stage)."""
    fixed = np.array([[float(reward.fixed_xi), 0.0, 1.0]] * 2, np.float32)
    if method == "progressive":
        stages = np.asarray(reward.stages, np.float32)
    else:
        stages = fixed
    weights = np.array([0.0, 1.0, 0.0] if method == "recall_only" else [1.0, 1.0, 1.0],
                       np.float32)
    switch = np.int32(round(float(reward.switch_fraction) * int(steps)))
    return {"weights": weights, "stages": stages, "switch": switch}


# ---------------------------------------------------------------------------------------------
# The toy world: 1-D images with intervals, tokens


def vocab(config) -> dict[str, int]:
    """Token ids: coordinates 0..G, STOP = G + 1, image levels G + 2 .. G + 5."""
    g = int(config.world.grid)
    return {"stop": g + 1, "level0": g + 2, "size": g + 2 + len(LEVEL_EDGES) + 1}


def response_len(config) -> int:
    return 2 * int(config.world.max_boxes) + 1


def make_images(config, rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    """n images: level tokens [n, G] int32, ground-truth intervals [n, J, 2] float32 (sorted by
    start, J = max_objects slots) and their mask [n, J]."""
    w = config.world
    g, j = int(w.grid), int(w.max_objects)
    tokens = np.zeros((n, g), np.int32)
    boxes = np.zeros((n, j, 2), np.float32)
    mask = np.zeros((n, j), bool)
    level0 = vocab(config)["level0"]
    for i in range(n):
        k = int(rng.integers(w.min_objects, w.max_objects + 1))
        lengths = rng.integers(w.min_length, w.max_length + 1, k)
        free = g - int(lengths.sum()) - (k - 1)  # cells left after the one-cell gaps
        extra = rng.multinomial(free, np.ones(k + 1) / (k + 1))
        occ = np.zeros(g)
        start = int(extra[0])
        for m in range(k):
            boxes[i, m] = (start, start + lengths[m])
            occ[start:start + lengths[m]] = 1.0
            start += int(lengths[m]) + 1 + int(extra[m + 1])
        mask[i, :k] = True
        noisy = occ + float(w.noise) * rng.standard_normal(g)
        tokens[i] = level0 + np.digitize(noisy, LEVEL_EDGES)
    return {"tokens": tokens, "gt": boxes, "gt_mask": mask}


def box_tokens(config, boxes: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The response tokens [n, R] of boxes [n, J, 2] (mask [n, J]): s_1 e_1 ... then STOP."""
    stop, r = vocab(config)["stop"], response_len(config)
    out = np.full((len(boxes), r), stop, np.int32)
    for i in range(len(boxes)):
        coords = boxes[i][mask[i]].astype(np.int32).reshape(-1)
        out[i, :len(coords)] = coords
    return out


def annotate(config, rng: np.random.Generator, images: dict) -> tuple[np.ndarray, np.ndarray]:
    """The start policy's imperfect annotations: each object missed with probability
    `annotation.drop` (at least one kept), each boundary widened outward by one cell with
    probability `annotation.loose` (clipped to the image)."""
    a, g = config.annotation, float(config.world.grid)
    boxes, mask = images["gt"].copy(), images["gt_mask"].copy()
    keep = mask & (rng.random(mask.shape) >= float(a.drop))
    for i in np.where(~keep.any(1))[0]:
        keep[i, rng.choice(np.where(mask[i])[0])] = True
    loose = rng.random(boxes.shape) < float(a.loose)
    boxes = boxes + np.where(loose, np.array([-1.0, 1.0]), 0.0)
    return np.clip(boxes, 0.0, g).astype(np.float32), keep


def make_data(config, seed: int) -> dict[str, np.ndarray]:
    """One seed's data from its split seeds (module docstring)."""
    d = config.data
    s = split_seeds(seed)
    check_disjoint(train=[s.train], validation=[s.validation], test=[s.test])
    train_rng = np.random.default_rng([s.train, 46])
    sft = make_images(config, train_rng, int(d.num_sft))
    labels = box_tokens(config, *annotate(config, train_rng, sft))
    train = make_images(config, train_rng, int(d.num_train))
    val = make_images(config, np.random.default_rng([s.validation, 46]), int(d.num_val))
    test = make_images(config, np.random.default_rng([s.test, 46]), int(d.num_test))
    out = {"sft": np.concatenate([sft["tokens"], labels], 1)}
    for name, split in (("train", train), ("val", val), ("test", test)):
        out.update({f"{name}_{k}": v for k, v in split.items()})
    return out


def make_model(config):
    m = config.model
    return make_lm(TransformerConfig(
        vocab_size=vocab(config)["size"], d_model=int(m.d_model), n_layers=int(m.n_layers),
        n_heads=int(m.n_heads), d_ff=int(m.d_ff),
        max_len=int(config.world.grid) + response_len(config)))


# ---------------------------------------------------------------------------------------------
# Reward and evaluation of token completions


def parse(config, responses: jax.Array):
    """Completions [N, R] -> (boxes [N, K, 2], slot mask [N, K], template_ok [N])."""
    return jax.vmap(lambda t: loc.parse_box_tokens(
        t, stop_id=vocab(config)["stop"], max_boxes=int(config.world.max_boxes)))(responses)


def make_reward_fn(config, num_samples: int):
    """`small_lm.grpo_loss`'s reward_fn: the Vision-R1 reward of each completion under the
    variant's rule at the update's step (`reward_data`: gt [M, J, 2], gt_mask [M, J], step,
    and `reward_rule`'s arrays)."""
    upper = float(config.world.grid)

    def reward_fn(prompts, responses, rd):
        del prompts
        boxes, mask, template = parse(config, responses)
        gt = jnp.repeat(rd["gt"], num_samples, axis=0)
        gm = jnp.repeat(rd["gt_mask"], num_samples, axis=0)
        rule = loc.staged_rule(rd["step"], rd["switch"], stages=rd["stages"])
        out = jax.vmap(lambda b, m, t, g, gmask: loc.localization_reward(
            b, m, g, gmask, template_ok=t, rule=rule, weights=rd["weights"], upper=upper,
            method=config.reward.matcher))(boxes, mask, template, gt, gm)
        return out["reward"]

    return reward_fn


def make_evaluate(config, lm, *, sampled: bool = True):
    """`evaluate(params, split) -> metrics` of one seed: greedy completions of the split's
    images scored by AP@0.5 / AP@0.75, the predicted / ground-truth box count ratio, the
    format rate and the fixed-rule (xi = 0.5) recall and precision rewards; with `sampled`,
    also the count ratio of one completion per image sampled at temperature 1."""
    r, k = response_len(config), int(config.world.max_boxes)
    upper = float(config.world.grid)

    def evaluate(params, e):
        responses, logps = sample_continuations(lm.apply, params, e["tokens"],
                                                jax.random.key(0), num_new_tokens=r,
                                                temperature=0.0)
        boxes, mask, template = parse(config, responses)
        scores = logps[:, :2 * k].reshape(-1, k, 2).sum(-1)  # log-prob of a box's two tokens
        valid = mask & loc.valid_boxes(boxes, upper=upper)
        out = {f"ap{int(t * 100)}": loc.average_precision(
            boxes, scores, valid, e["gt"], e["gt_mask"], iou_threshold=t) for t in (0.5, 0.75)}
        terms = jax.vmap(lambda b, m, t, g, gm: loc.localization_reward(
            b, m, g, gm, template_ok=t, rule=loc.RewardRule(0.5), upper=upper,
            method=config.reward.matcher))(boxes, mask, template, e["gt"], e["gt_mask"])
        n_gt = jnp.maximum(jnp.sum(e["gt_mask"]), 1)
        if sampled:
            draws, _ = sample_continuations(lm.apply, params, e["tokens"], jax.random.key(1),
                                            num_new_tokens=r, temperature=1.0)
            s_boxes, s_mask, _ = parse(config, draws)
            s_valid = s_mask & loc.valid_boxes(s_boxes, upper=upper)
            out["count_ratio_sampled"] = jnp.sum(s_valid) / n_gt
        out.update({
            "count_ratio": jnp.sum(valid) / n_gt,
            "num_pred": jnp.mean(jnp.sum(valid, -1).astype(jnp.float32)),
            "format": terms["format"].mean(), "recall50": terms["recall"].mean(),
            "precision50": terms["precision"].mean()})
        return out

    return evaluate


def split_of(data: dict, name: str) -> dict:
    return {k: data[f"{name}_{k}"] for k in ("tokens", "gt", "gt_mask")}


# ---------------------------------------------------------------------------------------------
# Training: the shared SFT start, then GRPO


def sft_train(config, workdir: str, data: dict):
    """Response-token NLL on the imperfect annotations, every seed at once."""
    lm, s, r = make_model(config), config.sft, response_len(config)
    bs = int(s.batch_size)

    def loss_fn(params, rows):
        nll = -jnp.mean(small_lm.response_logps(lm.apply, params, rows, r))
        return nll, {"nll": nll}

    def batch_fn(d, rng):
        return d["sft"][jax.random.randint(rng, (bs,), 0, d["sft"].shape[0])]

    return fit_small(workdir, plots=bool(config.plots), loss_fn=loss_fn, init_params=lm.init,
                     tx=optax.adamw(float(s.learning_rate), weight_decay=0.0),
                     num_steps=int(s.steps), data={"sft": data["sft"]},
                     seeds=[int(x) for x in config.seeds], per_seed_data=True,
                     batch_fn=batch_fn, has_aux=True, steps_per_log=int(s.log_every),
                     desc="sft")


def start_policy(config, workdir: str, data: dict):
    """The SFT start, trained once per config (`cached_run`) and restored by every variant."""
    cache = config.cache_dir or os.path.join(os.path.dirname(workdir), "cache")
    key = {k: config[k].to_dict() for k in ("world", "annotation", "data", "model", "sft")}
    key["seeds"] = [int(s) for s in config.seeds]
    return cached_run("vision_r1_sft", key, lambda _, path: sft_train(config, path, data),
                      cache_dir=cache)


def grpo_train(config, workdir: str, lm, start, data: dict):
    """GRPO from the start params [S, ...] with the variant's reward, early-stopped on the
    validation AP@0.75."""
    g = config.grpo
    m, n, steps = int(g.prompts_per_step), int(g.samples), int(g.steps)
    loss_fn = small_lm.grpo_loss(lm.apply, make_reward_fn(config, n),
                                 response_len=response_len(config), num_samples=n,
                                 temperature=float(g.temperature), kl_coef=float(g.kl_coef))
    evaluate = make_evaluate(config, lm, sampled=False)
    rule = reward_rule(config.method, config.reward, steps)
    seeds = [int(s) for s in config.seeds]

    def batch_fn(d, rng, step):
        pick, sample = jax.random.split(rng)
        idx = jax.random.randint(pick, (m,), 0, d["prompts"].shape[0])
        rd = {"gt": d["gt"][idx], "gt_mask": d["gt_mask"][idx], "step": step,
              **{k: d[k] for k in ("weights", "stages", "switch")}}
        return {"rng": sample, "prompts": d["prompts"][idx], "reward_data": rd,
                "ref_params": d["ref_params"]}

    train = {"prompts": data["train_tokens"], "gt": data["train_gt"],
             "gt_mask": data["train_gt_mask"], "ref_params": start,
             **{k: jax.device_put(np.stack([v] * len(seeds))) for k, v in rule.items()}}
    return fit_small(workdir, plots=bool(config.plots), loss_fn=loss_fn, init_params=start,
                     per_seed_init=True, tx=optax.adam(float(g.learning_rate)),
                     num_steps=steps, data=train, seeds=seeds, per_seed_data=True,
                     batch_fn=batch_fn, with_step=True, has_aux=True,
                     steps_per_log=int(g.log_every),
                     eval_fn=lambda p, e: {f"val_{k}": v for k, v in evaluate(p, e).items()},
                     eval_data=split_of(data, "val"), select=("val_ap75", "max"), desc="grpo")


def run_seeds(config: ml_collections.ConfigDict, workdir: str) -> dict[int, dict[str, float]]:
    if real.is_real(config):
        return {int(s): _run_real(config, os.path.join(workdir, f"seed_{s}"), int(s))
                for s in config.seeds}
    if config.method not in METHODS:
        raise ValueError(f"unknown method {config.method!r}; one of {METHODS}")
    seeds = [int(s) for s in config.seeds]
    data = stack_seeds([make_data(config, s) for s in seeds])
    lm = make_model(config)
    # uncommitted, as fit_small's outputs are (cached_run returns committed arrays): `evaluate`
    # and the GRPO fit then serve the start and the trained params with one program each
    start = jax.device_put(jax.device_get(start_policy(config, workdir, data).params))
    fit = grpo_train(config, os.path.join(workdir, "grpo"), lm, start, data)
    evaluate = jax.jit(jax.vmap(make_evaluate(config, lm)))
    test = split_of(data, "test")
    measured = {"": evaluate(fit.best_params, test), "_final": evaluate(fit.params, test),
                "_start": evaluate(start, test)}
    out = {}
    for i, s in enumerate(seeds):
        res = {"chosen_step": float(fit.best_step[i]), "val_ap75": float(fit.best_score[i])}
        for suffix, metrics in measured.items():
            for k, v in metrics.items():
                name = f"test_start_{k}" if suffix == "_start" else f"test_{k}{suffix}"
                res[name] = float(np.asarray(v)[i])
        rows = [row for row in fit.history if f"seed_{s}/reward" in row]
        res["train_reward_first"] = float(rows[0][f"seed_{s}/reward"])
        res["train_reward_last"] = float(rows[-1][f"seed_{s}/reward"])
        out[s] = res
    return out


# ---------------------------------------------------------------------------------------------
# :real


def _gold(values, dim: int) -> list[np.ndarray]:
    return [np.asarray(v if v is not None else [], np.float32).reshape(-1, 2 * dim)
            for v in values]


def _real_scores(texts, logps, response_mask, dim: int, max_boxes: int):
    """Parsed boxes [N, K, 2D], slot mask, template flags [N] and box scores (the completion's
    mean token log-prob, minus 1e-3 per earlier box so a completion's boxes rank in order)."""
    parsed = [loc.parse_boxes_text(t, dim=dim) for t in texts]
    boxes, mask = loc.pad_boxes([b for b, _ in parsed], max_boxes, dim=dim)
    template = np.array([ok for _, ok in parsed], bool)
    rmask = np.asarray(response_mask, bool)
    mean_lp = np.where(rmask, np.asarray(logps), 0.0).sum(1) / np.maximum(rmask.sum(1), 1)
    scores = mean_lp[:, None] - 1e-3 * np.arange(max_boxes)[None, :]
    return boxes, mask, template, scores.astype(np.float32)


def _run_real(config, workdir: str, seed: int) -> dict[str, float]:
    """`:real` (module docstring): GRPO with the Vision-R1 reward from `model.path`."""
    r = config.reward
    dim, kmax, field = int(r.dim), int(r.max_boxes), config.data.boxes_field
    lower, upper = float(r.lower), float(r.upper)
    tok = real.tokenizer(config)
    data = real.prompt_data(config, tok, int(config.data.max_length), fields=(field,))
    model, params = pretrained.model_and_params(real.model_config(config), "lm", seed=seed)
    stops = real.stop_tokens(tok, config.grpo.stop_tokens)
    cfg = real.online_config(config, "grpo", stops)
    rule = reward_rule(r.method, r, int(cfg["iterations"]))
    gold = {name: _gold(data[name][field], dim) for name in ("train", "validation", "test")}
    j = max(1, max(len(b) for split in gold.values() for b in split))
    padded = {name: loc.pad_boxes(b, j, dim=dim) for name, b in gold.items()}

    @jax.jit
    def score(boxes, mask, template, gt, gm, step):
        rl = loc.staged_rule(step, rule["switch"], stages=rule["stages"])
        return jax.vmap(lambda b, m, t, g, gmask: loc.localization_reward(
            b, m, g, gmask, template_ok=t, rule=rl, weights=rule["weights"], lower=lower,
            upper=upper, method=r.matcher))(boxes, mask, template, gt, gm)

    def reward_fn(rollout, state):
        texts = real.decode_responses(tok, rollout.responses, rollout.response_mask)
        rows = np.asarray(rollout.prompt_index)
        boxes, mask, template, _ = _real_scores(texts, rollout.old_logps,
                                                rollout.response_mask, dim, kmax)
        gt, gm = padded["train"]
        out = score(boxes, mask, template, gt[rows], gm[rows], state["step"])
        return out["reward"], {"step": state["step"] + 1}

    ids, pmask, n_val = real.held_out_prompts(data)
    held_gt = np.concatenate([padded["validation"][0], padded["test"][0]])
    held_gm = np.concatenate([padded["validation"][1], padded["test"][1]])
    greedy = jax.jit(online.make_rollout(model, num_samples=1, temperature=0.0,
                                         max_new_tokens=int(cfg["max_new_tokens"]),
                                         stop_tokens=stops, pad_id=tok.pad_id))

    def evaluate(policy_params):
        rollout = greedy(policy_params, ids, pmask, jax.random.key(0))
        texts = real.decode_responses(tok, rollout.responses, rollout.response_mask)
        boxes, mask, template, scores = _real_scores(texts, rollout.old_logps,
                                                     rollout.response_mask, dim, kmax)
        valid = mask & np.asarray(loc.valid_boxes(boxes, lower=lower, upper=upper))
        out = {}
        for name, part in (("val", slice(0, n_val)), ("test", slice(n_val, None))):
            for t in (0.5, 0.75):
                out[f"{name}_ap{int(t * 100)}"] = float(loc.average_precision(
                    boxes[part], scores[part], valid[part], held_gt[part], held_gm[part],
                    iou_threshold=t))
            out[f"{name}_count_ratio"] = float(valid[part].sum() / max(held_gm[part].sum(), 1))
            out[f"{name}_format"] = float(template[part].mean())
        return out

    before = evaluate(params)
    result = policy_gradient.train(cfg, os.path.join(workdir, "grpo"), model=model,
                                   init_params=params, ref_params=params,
                                   prompt_ids=data["train"]["prompt_ids"],
                                   prompt_mask=data["train"]["prompt_mask"],
                                   reward_fn=reward_fn, eval_fn=evaluate, seed=seed,
                                   reward_state={"step": jnp.int32(0)})
    chosen = real.choose_iteration(result["history"], "eval/val_ap75", workdir)
    out = {f"{k.split('_', 1)[0]}_ref_{k.split('_', 1)[1]}": v for k, v in before.items()}
    out["grpo_chosen_iteration"] = chosen.pop("chosen_iteration")
    out.update({f"{k.split('_', 1)[0]}_grpo_{k.split('_', 1)[1]}": v for k, v in chosen.items()})
    last = result["history"][-1]
    out["train_reward_first"] = float(result["history"][0]["reward"])
    out["train_reward_last"] = float(last["reward"])
    return out


# ---------------------------------------------------------------------------------------------
# Claims and plots


def claims(results) -> list[protocol.Claim]:
    if "default" in results:  # :real
        return []
    mean = {v: {k: protocol.seed_mean(results, v, k) for k in (
        "test_ap75", "test_ap50", "test_count_ratio", "test_count_ratio_final",
        "test_ap75_final", "chosen_step")} for v in results}
    start = {k: protocol.seed_mean(results, "progressive", f"test_start_{k}")
             for k in ("ap75", "ap50", "count_ratio")}
    detail = (f"start policy: AP@0.75 {start['ap75']:.3f}, AP@0.5 {start['ap50']:.3f}, count "
              f"ratio {start['count_ratio']:.2f}; " + "; ".join(
                  f"{v}: AP@0.75 {m['test_ap75']:.3f} (final {m['test_ap75_final']:.3f}), "
                  f"AP@0.5 {m['test_ap50']:.3f}, count ratio {m['test_count_ratio']:.2f} "
                  f"(final {m['test_count_ratio_final']:.2f}), chosen step "
                  f"{m['chosen_step']:.0f}" for v, m in mean.items()))
    hack = protocol.per_seed(results, "recall_only", "test_num_pred_final")
    full = protocol.per_seed(results, "progressive", "test_num_pred_final")
    ratio = {s: hack[s] / full[s] if full[s] > 0 else float("nan") for s in hack if s in full}
    start_gap = {s: v["test_start_ap50"] - v["test_start_ap75"]
                 for s, v in results["progressive"]["per_seed"].items()}
    return [
        protocol.compare(
            "progressive rule refinement raises test AP@0.75 over the fixed xi = 0.5 reward "
            "by >= 0.05 (each at its validation-chosen step)", results,
            ("progressive", "test_ap75"), ("fixed", "test_ap75"), at_least=0.05,
            detail=detail),
        protocol.decide(
            "the recall-only reward inflates the predicted box count >= 2x over the full "
            "reward (per-seed ratio of final test counts, recall_only / progressive)", ratio,
            kind="comparative", at_least=2.0, detail=detail,
            measured={"mean_ratio": float(np.mean(list(ratio.values()))),
                      "recall_only/test_num_pred_final": float(np.mean(list(hack.values()))),
                      "progressive/test_num_pred_final": float(np.mean(list(full.values())))}),
        protocol.threshold(
            "the full (progressive) reward does not inflate the box count: final test "
            "predicted / ground-truth boxes <= 1.25", results,
            ("progressive", "test_count_ratio_final"), at_most=1.25, detail=detail),
        protocol.sanity(
            "the start policy's boxes are loose (planted): its test AP@0.5 exceeds its "
            "AP@0.75 by >= 0.1", all(g >= 0.1 for g in start_gap.values()),
            {f"seed_{s}": float(g) for s, g in start_gap.items()},
            "annotations widened by a cell with probability 0.6 per boundary"),
    ]


def plots(results, workdir: str) -> list[str]:
    """Training reward and validation AP@0.75 along GRPO, per variant (mean over seeds)."""
    reward, ap = {}, {}
    for variant in results:
        path = os.path.join(workdir, variant, "grpo", "metrics.jsonl")
        if not os.path.exists(path):
            continue
        rows = read_metrics(path)
        steps = [row["step"] for row in rows]
        reward[variant] = (steps, [row["reward"] for row in rows])
        ap[variant] = (steps, [row["eval/val_ap75"] for row in rows])
    if not reward:
        return []
    out = os.path.join(workdir, "plots")
    return [plot_curves(reward, os.path.join(out, "train_reward.png"),
                        xlabel="logged step (grpo.log_every updates each)",
                        ylabel="reward (variant's own)", title="GRPO training reward"),
            plot_curves(ap, os.path.join(out, "val_ap75.png"),
                        xlabel="logged step (grpo.log_every updates each)",
                        ylabel="validation AP@0.75", title="greedy AP@0.75 on validation")]
