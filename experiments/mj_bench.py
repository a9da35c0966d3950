"""MJ-Bench: evaluating judges (reward models) per category, with tie policies and bias metrics.

Paper: Chen et al. 2024, "MJ-Bench: Is Your Multimodal Reward Model Really a Good Judge for
Text-to-Image Generation?" (arXiv 2407.04842).

Setting (feature-vector testbed): an "image" is a vector x in R^32 built from planted
attributes, x = sum of the embeddings of the objects it shows + noise; a prompt asks for 3 of 12
objects and its text embedding q is the normalised sum of their embeddings. Preference pairs in
three categories: alignment (the rejected image swaps one requested object for another), safety
(the rejected image also carries a toxic direction) and quality (the rejected image is distorted:
signal shrunk, noise raised). Bias: the aligned image of a prompt rendered with each of G = 4
demographic directions added (equal norm); a fair judge scores the variants alike.

Judges (variants): `cosine`, cos(q, x) (a CLIP-like scorer); `bt_rm`, a linear BT reward model
on [x, q * x] trained on separate pairs of the three categories (full-batch Adam,
`alignax.train.small.fit_small`, all seeds at once); `numeric`, a noisy judge with a
hidden assessment (alignment - toxicity - distortion, plus Gaussian noise, squashed to [0, 1])
answering on a numeric 0-10 scale; `likert`, the same judge answering on a 5-point Likert scale;
`biased`, the numeric judge with a planted demographic bias (its hidden logit is shifted by
bias_strength * (1.5, 0.5, -0.5, -1.5) for the four groups). The harness (`alignax.eval.judges`)
reports per-category accuracy under the three tie policies (ties wrong / half / excluded), tie
rates, and on the bias set the Gini-based equality score GES = 1 - Gini and the normalised
dispersion score NDS = 1 - std/mean over the variants (scores of the continuous judges are put on
a 0-10 scale by their min and max over the evaluation set). Each run evaluates its judge twice
from the seed and records whether the two passes agree bit for bit.

Splits (docs/protocol.md): the object, toxic and demographic directions are the "world" of
experiment seed s (seeded by s); the `bt_rm` judge's training pairs, its validation pairs and the
evaluation set (pairs and bias set) come from the disjoint data seeds `split_seeds(s)` (3s,
3s + 1, 3s + 2). All metrics the claims read are measured on the evaluation (test) set and named
`test_*`.

Selection on validation: the only trained judge, `bt_rm`, is early-stopped on the accuracy of its
validation pairs (`fit_small(select=("val_accuracy", "max"))`, logged every 20 of its 400 steps);
the chosen step is recorded (`chosen_steps`, `val_accuracy`). The other judges have no trained
parts. The judge and toy parameters (noise, temperature, bias strength) define the problem and
were set in the first version of this module; they are not tuned here.

Claims (5 seeds). All three are `sanity` checks: they test that the harness sees properties the
toy plants, so they hold by construction and are never counted:
(1) the biased judge's GES and NDS are each lower by >= 0.2 than the unbiased numeric judge's;
(2) the Likert-discretised judge ties more pairs than the numeric one, which ties more than the
continuous cosine scorer; (3) seeded runs are bit-reproducible (every judge, every seed).

No falsifiable claim about MJ-Bench's own findings is made, so the paper is INCONCLUSIVE ("no
falsifiable claim"). The findings the notes list were considered and each is planted by the toy:
"Likert feedback is more accurate than numeric" -- here both judges discretise the same hidden
score, so the coarser Likert scale can only lose information (it would fail by construction, and
would say nothing about how a VLM uses a scale); "CLIP-type scorers are better on alignment and
quality, VLMs on safety and bias" -- the cosine scorer is the planted alignment function and is
blind to the toxic direction by construction, and no judge here is a VLM; "GPT-4o is best" needs
real judges. The per-category accuracies are reported for every judge (`test_acc_*`).

    alignax run experiments/mj_bench.py            # full setting, 5 seeds
    alignax run experiments/mj_bench.py:smoke      # seconds, for the tests
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from alignax.eval.judges import (discretize_scores, gini_equality_score, judge_accuracy,
                                 normalized_dispersion_score)
from alignax import protocol
from alignax.experiment import is_smoke
from alignax.losses.reward import bradley_terry_loss
from alignax.tasks.splits import split_seeds
from alignax.train.plots import plot_grouped_bars
from alignax.train.small import fit_small

JUDGES = ("cosine", "bt_rm", "numeric", "likert", "biased")
CATEGORIES = ("alignment", "safety", "quality")
POLICIES = ("wrong", "half", "exclude")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    smoke = is_smoke(arg)
    c = ml_collections.ConfigDict()
    c.seeds = [0] if smoke else [0, 1, 2, 3, 4]
    c.judge = "numeric"
    c.variants = {j: {"judge": j} for j in JUDGES}
    c.task = dict(dim=32, num_objects=12, objects_per_prompt=3, num_groups=4, image_noise=0.3,
                  toxic_scale=1.0, distortion_shrink=0.6, distortion_noise=0.8,
                  demographic_scale=1.0)
    c.data = dict(num_test_pairs=600 if not smoke else 60, num_train_pairs=1500 if not smoke
                  else 150, num_val_pairs=600 if not smoke else 60,
                  num_bias_prompts=300 if not smoke else 30)
    # the noisy judge: logit = (assessment - center) / temperature + noise_std * N(0, 1)
    c.noisy_judge = dict(center=0.3, temperature=0.35, noise_std=0.5, bias_strength=1.5)
    c.train = dict(steps=400 if not smoke else 50, learning_rate=1e-2, steps_per_log=20)
    return c


def make_world(task, seed: int) -> dict:
    """Object, toxic and demographic directions (unit vectors) of one seed."""
    rng = np.random.default_rng([seed, 53])

    def unit(n):
        v = rng.standard_normal((n, task.dim))
        return v / np.linalg.norm(v, axis=-1, keepdims=True)

    return {"objects": unit(task.num_objects), "toxic": unit(1)[0],
            "groups": unit(task.num_groups)}


def _images(world, task, present: np.ndarray, rng, *, noise: float, shrink: float = 1.0):
    """Images [N, D] showing the objects in `present` [N, O] (bool)."""
    signal = present.astype(np.float64) @ world["objects"]
    return shrink * signal + noise * rng.standard_normal(signal.shape)


def make_eval_set(world, task, n: int, num_bias: int, rng) -> dict:
    """Pairs of the three categories and the demographic-variant groups of the bias set."""
    o, k = task.num_objects, task.objects_per_prompt
    pairs = {}
    for ci, cat in enumerate(CATEGORIES):
        present = np.zeros((n, o), bool)
        for i in range(n):
            present[i, rng.choice(o, k, replace=False)] = True
        q = present @ world["objects"]
        q /= np.linalg.norm(q, axis=-1, keepdims=True)
        chosen = _images(world, task, present, rng, noise=task.image_noise)
        if cat == "alignment":  # swap one requested object for an unrequested one
            wrong = present.copy()
            for i in range(n):
                wrong[i, rng.choice(np.flatnonzero(present[i]))] = False
                wrong[i, rng.choice(np.flatnonzero(~present[i]))] = True
            rejected = _images(world, task, wrong, rng, noise=task.image_noise)
        elif cat == "safety":
            rejected = (_images(world, task, present, rng, noise=task.image_noise)
                        + task.toxic_scale * world["toxic"])
        else:
            rejected = _images(world, task, present, rng, noise=task.distortion_noise,
                               shrink=task.distortion_shrink)
        pairs[cat] = {"q": q.astype(np.float32), "chosen": chosen.astype(np.float32),
                      "rejected": rejected.astype(np.float32),
                      "category": np.full(n, ci, np.int32)}
    present = np.zeros((num_bias, o), bool)
    for i in range(num_bias):
        present[i, rng.choice(o, k, replace=False)] = True
    q = present @ world["objects"]
    q /= np.linalg.norm(q, axis=-1, keepdims=True)
    base = _images(world, task, present, rng, noise=task.image_noise)
    variants = base[:, None, :] + task.demographic_scale * world["groups"][None]  # [P, G, D]
    return {"pairs": pairs, "bias_q": q.astype(np.float32),
            "bias_images": variants.astype(np.float32)}


def assessment(world, q, x):
    """The noisy judge's hidden quality: alignment - toxicity - distortion (all from x)."""
    align = jnp.sum(q * x, -1) / jnp.maximum(jnp.linalg.norm(x, axis=-1), 1e-6)
    toxic = jnp.maximum(x @ world["toxic"], 0.0)
    objects = jnp.asarray(world["objects"], jnp.float32)
    coef = x @ jnp.linalg.pinv(objects)  # least-squares object content
    residual = jnp.linalg.norm(x - coef @ objects, axis=-1) / np.sqrt(x.shape[-1])
    return align - 0.5 * toxic - residual


def _features(q, x):
    return jnp.concatenate([x, q * x], -1)


def _pairs(pairs: dict) -> dict:
    """The q, chosen, rejected arrays of all categories, concatenated."""
    return {k: np.concatenate([pairs[c][k] for c in CATEGORIES]) for k in
            ("q", "chosen", "rejected")}


def fit_bt_rm(config, workdir: str, train: dict, val: dict, seeds):
    """Linear BT reward models on [x, q * x], every seed at once (`fit_small`, full-batch Adam
    from zero weights), early-stopped on validation pair accuracy: train / val q, chosen,
    rejected [S, B, D] -> (weights [S, 2D] of each seed's best validation step, the SmallFit)."""
    def loss_fn(w, d):
        fc, fr = _features(d["q"], d["chosen"]), _features(d["q"], d["rejected"])
        return jnp.mean(bradley_terry_loss(fc @ w, fr @ w))

    def val_metrics(w, v):
        fc, fr = _features(v["q"], v["chosen"]), _features(v["q"], v["rejected"])
        return {"val_accuracy": jnp.mean((fc @ w > fr @ w).astype(jnp.float32))}

    fit = fit_small(workdir, loss_fn=loss_fn,
                    init_params=jnp.zeros(2 * train["q"].shape[-1], jnp.float32),
                    tx=optax.adam(float(config.train.learning_rate)),
                    num_steps=int(config.train.steps), data=train, seeds=seeds,
                    per_seed_data=True, eval_fn=val_metrics, eval_data=val,
                    select=("val_accuracy", "max"),
                    steps_per_log=int(config.train.steps_per_log))
    return np.asarray(fit.best_params), fit


def make_judge(config, world, bt_weights=None):
    """`score(q [N, D], x [N, D], groups [N] int (-1: none), key) -> [N]` for config.judge
    (`bt_weights` [2D]: the fitted weights of the `bt_rm` judge)."""
    nj = config.noisy_judge
    offsets = nj.bias_strength * np.linspace(1.5, -1.5, config.task.num_groups)
    if config.judge == "cosine":
        def score(q, x, groups, key):
            return jnp.sum(q * x, -1) / jnp.maximum(jnp.linalg.norm(x, axis=-1), 1e-6)
        return score
    if config.judge == "bt_rm":
        w = jnp.asarray(bt_weights)

        def score(q, x, groups, key):
            return _features(q, x) @ w
        return score
    levels = {"numeric": 11, "likert": 5, "biased": 11}[config.judge]
    low = 1.0 if config.judge == "likert" else 0.0
    bias = jnp.asarray(offsets if config.judge == "biased" else np.zeros_like(offsets),
                       jnp.float32)

    def score(q, x, groups, key):
        logit = ((assessment(world, q, x) - nj.center) / nj.temperature
                 + nj.noise_std * jax.random.normal(key, (x.shape[0],)))
        logit = logit + jnp.where(groups >= 0, bias[jnp.maximum(groups, 0)], 0.0)
        return discretize_scores(jax.nn.sigmoid(logit), levels=levels, low=low)
    return score


def make_seed_data(config, seed: int) -> tuple[dict, dict, dict | None, dict | None]:
    """One seed's world (seeded by the experiment seed), test evaluation set and, for `bt_rm`,
    training and validation pairs q/chosen/rejected, from the disjoint data seeds
    `split_seeds(seed)`."""
    task = config.task
    world = make_world(task, seed)
    splits = split_seeds(seed)
    ev = make_eval_set(world, task, config.data.num_test_pairs, config.data.num_bias_prompts,
                       np.random.default_rng([splits.test, 530]))
    train = val = None
    if config.judge == "bt_rm":
        train = _pairs(make_eval_set(world, task, config.data.num_train_pairs // 3, 1,
                                     np.random.default_rng([splits.train, 530]))["pairs"])
        val = _pairs(make_eval_set(world, task, config.data.num_val_pairs // 3, 1,
                                   np.random.default_rng([splits.validation, 530]))["pairs"])
    return world, ev, train, val


def evaluate(config, seed: int, world: dict, ev: dict, bt_weights=None) -> dict[str, float]:
    """One seeded evaluation of config.judge: accuracies, tie rates, GES and NDS."""
    k_pairs, k_bias = jax.random.split(jax.random.key(seed))
    judge = make_judge(config, world, bt_weights)
    cat = {k: np.concatenate([ev["pairs"][c][k] for c in CATEGORIES]) for k in
           ("q", "chosen", "rejected", "category")}
    n = len(cat["q"])
    none = np.full(n, -1, np.int32)
    kc, kr = jax.random.split(k_pairs)
    sc = np.asarray(judge(cat["q"], cat["chosen"], none, kc))
    sr = np.asarray(judge(cat["q"], cat["rejected"], none, kr))
    out: dict[str, float] = {}
    for policy in POLICIES:
        res = judge_accuracy(sc, sr, cat["category"], num_categories=len(CATEGORIES),
                             tie_policy=policy)
        acc = np.asarray(res["accuracy"])
        for ci, c in enumerate(CATEGORIES):
            out[f"test_acc_{c}_{policy}"] = float(acc[ci])
        out[f"test_acc_mean_{policy}"] = float(np.mean(acc))
        if policy == "half":
            ties = np.asarray(res["tie_rate"])
            for ci, c in enumerate(CATEGORIES):
                out[f"test_tie_rate_{c}"] = float(ties[ci])
            out["test_tie_rate"] = float(np.mean(sc == sr))
    p, g, d = ev["bias_images"].shape
    groups = np.tile(np.arange(g, dtype=np.int32), p)
    bias_scores = np.asarray(judge(np.repeat(ev["bias_q"], g, 0), ev["bias_images"].reshape(
        p * g, d), groups, k_bias)).reshape(p, g)
    if config.judge in ("cosine", "bt_rm"):  # continuous scores onto a 0-10 scale
        everything = np.concatenate([sc, sr, bias_scores.ravel()])
        lo, hi = everything.min(), everything.max()
        bias_scores = 10.0 * (bias_scores - lo) / max(hi - lo, 1e-12)
    out["test_ges"] = float(np.mean(gini_equality_score(bias_scores)))
    out["test_nds"] = float(np.mean(normalized_dispersion_score(bias_scores)))
    top = np.argmax(bias_scores, axis=1)
    out["test_favoured_group_share"] = float(np.max(np.bincount(top, minlength=g)) / p)
    return out


def evaluate_seeds(config, workdir: str) -> dict[int, dict[str, float]]:
    """One full, seeded evaluation of config.judge for every seed (the `bt_rm` judge is
    trained for all seeds at once into `workdir`, early-stopped on validation)."""
    seeds = [int(s) for s in config.seeds]
    per_seed = [make_seed_data(config, s) for s in seeds]
    weights = [None] * len(seeds)
    chosen: list[dict[str, float]] = [{} for _ in seeds]
    if config.judge == "bt_rm":
        stack = lambda j: {k: jnp.asarray(np.stack([p[j][k] for p in per_seed]))  # noqa: E731
                           for k in ("q", "chosen", "rejected")}
        weights, fit = fit_bt_rm(config, os.path.join(workdir, "bt_rm"), stack(2), stack(3),
                                 seeds)
        chosen = [{"chosen_steps": float(fit.best_step[i]),
                   "val_accuracy": float(fit.best_score[i])} for i in range(len(seeds))]
    return {s: {**evaluate(config, s, world, ev, w), **c}
            for s, (world, ev, _, _), w, c in zip(seeds, per_seed, weights, chosen)}


def run_seeds(config: ml_collections.ConfigDict, workdir: str) -> dict[int, dict[str, float]]:
    """Every seed evaluated twice from scratch (`pass_1`, `pass_2`: the `bt_rm` judge is
    retrained in each); `bit_reproducible` says whether the two passes agree bit for bit."""
    if config.judge not in JUDGES:
        raise ValueError(f"unknown judge {config.judge!r}; one of {JUDGES}")
    first = evaluate_seeds(config, os.path.join(workdir, "pass_1"))
    second = evaluate_seeds(config, os.path.join(workdir, "pass_2"))
    out = {}
    for seed, a in first.items():
        b = second[seed]
        same = a.keys() == b.keys() and all(
            np.array_equal(np.float64(a[k]), np.float64(b[k]), equal_nan=True) for k in a)
        out[seed] = {**a, "bit_reproducible": float(same)}
    return out


def claims(results) -> list[protocol.Claim]:
    def per(judge, key):
        return protocol.per_seed(results, judge, key)

    def mean(judge, key):
        return float(np.mean(list(per(judge, key).values())))

    ges = {j: mean(j, "test_ges") for j in ("numeric", "biased")}
    nds = {j: mean(j, "test_nds") for j in ("numeric", "biased")}
    ties = {j: mean(j, "test_tie_rate") for j in ("cosine", "numeric", "likert")}
    repro = {j: min(per(j, "bit_reproducible").values()) for j in results}
    n = len(per("numeric", "test_ges"))
    return [
        protocol.sanity(
            "the harness recovers the planted demographic bias: the biased judge's GES and NDS "
            "are each lower by >= 0.2 than the unbiased judge's (test set, mean over seeds)",
            ges["numeric"] - ges["biased"] >= 0.2 and nds["numeric"] - nds["biased"] >= 0.2,
            {"ges_unbiased": ges["numeric"], "ges_biased": ges["biased"],
             "nds_unbiased": nds["numeric"], "nds_biased": nds["biased"], "seeds": float(n)},
            f"planted: the biased judge adds a per-group offset; GES {ges['numeric']:.3f} -> "
            f"{ges['biased']:.3f}, NDS {nds['numeric']:.3f} -> {nds['biased']:.3f} ({n} seeds)"),
        protocol.sanity(
            "the Likert-discretised judge ties more pairs than the numeric (0-10) judge, which "
            "ties more than the continuous cosine scorer (test set, mean over seeds)",
            ties["likert"] > ties["numeric"] > ties["cosine"],
            {f"tie_rate_{j}": v for j, v in ties.items()},
            f"planted: 5 vs 11 levels of the same hidden score, vs a continuous score; tie rates: "
            f"Likert {ties['likert']:.3f}, numeric {ties['numeric']:.3f}, cosine "
            f"{ties['cosine']:.3f}"),
        protocol.sanity(
            "seeded runs are bit-reproducible (two evaluations per judge and seed agree exactly)",
            all(v == 1.0 for v in repro.values()),
            {f"reproducible_{j}": v for j, v in repro.items()},
            ", ".join(f"{j}: {'yes' if v == 1.0 else 'NO'}" for j, v in repro.items())),
    ]


def plots(results, workdir: str) -> list[str]:
    """Per-category accuracy (ties count 1/2) and GES / NDS per judge."""
    names = list(results)
    mean_std = lambda m: ([results[j]["metrics"][m]["mean"] for j in names],  # noqa: E731
                          [results[j]["metrics"][m]["std"] for j in names])
    plots_dir = os.path.join(workdir, "plots")
    return [
        plot_grouped_bars(names, {c: mean_std(f"test_acc_{c}_half") for c in CATEGORIES},
                          os.path.join(plots_dir, "mj_bench_accuracy.png"),
                          title="MJ-Bench harness on planted judges: accuracy per category",
                          ylabel="pairwise accuracy (ties = 1/2)"),
        plot_grouped_bars(names, {m.upper(): mean_std(f"test_{m}") for m in ("ges", "nds")},
                          os.path.join(plots_dir, "mj_bench_bias.png"),
                          title="MJ-Bench harness on planted judges: demographic bias",
                          ylabel="bias score (1 = fair)"),
    ]
