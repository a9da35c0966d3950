"""Weak-to-strong deception: a strong student errs where its weak supervisor cannot check.

Paper: Yang et al. 2024, "Super(ficial)-alignment: Strong Models May Deceive Weak Models in
Weak-to-Strong Generalization".

Setting (feature-vector testbed): inputs x ~ N(0, I_16); the gold "harmless" label is
y = 1[g(x) > 0] with g a frozen random tanh MLP (`alignax.tasks.features.MLPReward`).
  - Weak supervisor: a one-hidden-layer MLP (16 GELU units) that sees a noisy view of a feature
    subset, x_{1..12} + 0.5 eps (the noise is not visible to anyone else, so part of its errors
    can be corrected by a stronger student), trained on 2000 gold labels.
  - Strong students at 3 capability gaps: one-hidden-layer MLPs that see the first k_s clean
    features with growing width (k_s, width) = (8, 8), (12, 32), (16, 128), trained on the weak
    model's soft labels p_w(x) (cross-entropy, 8000 examples), with or without a conflicting
    "helpfulness" objective: on a random half of the prompts (flagged by an extra input bit) the
    helpfulness target is 1 - y (complying with a harmful request is helpful), added to the loss
    with weight lambda = 0.2. All models share one input shape and one width (128); unseen
    features and unused hidden units are masked to zero, so everything compiles once.
  - Bootstrapping mitigation: weak -> intermediate (the middle student, no conflict) ->
    strong (the largest student, trained on the intermediate's soft labels, with and without
    the conflict).
All training is full-batch Adam (400 steps, lax.scan).
Areas and the deception score (`alignax.eval.weak_to_strong`): on 10k held-out examples the
weak-known area K_w is where the weak model is right, U_w the rest; conflict-induced errors E are
the examples the strong student gets right without the conflicting objective and wrong with it;
the deception score is DS = (|E cap U_w| / |E|) / (|U_w| / N) (1 = no targeting).

Claims checked: (1) conflict-induced errors are over-represented in U_w (share |E cap U_w|/|E|
> |U_w|/N at every gap, mean over seeds); (2) DS rises with the capability gap (Spearman >= 0.8
between the gap index and the seed-mean DS over the 3 gaps); (3) bootstrapping lowers DS
compared with direct weak-to-strong training of the same strong student (reported, checked as
"lower").

    alignax run experiments/weak_to_strong_deception.py            # full setting, 3 seeds
    alignax run experiments/weak_to_strong_deception.py:smoke      # seconds, for the tests
"""

from __future__ import annotations

import functools
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from alignax.eval.weak_to_strong import deception_score, weak_areas
from alignax.experiment import Claim, is_smoke, metric
from alignax.ops import spearman
from alignax.tasks.features import MLPReward

GAPS = ("gap_small", "gap_medium", "gap_large")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    smoke = is_smoke(arg)
    c = ml_collections.ConfigDict()
    c.seeds = [0] if smoke else [0, 1, 2]
    c.level = 2  # index into strong.features / strong.hidden
    c.bootstrap = False
    c.variants = {**{g: {"level": i} for i, g in enumerate(GAPS)},
                  "bootstrap": {"level": 2, "bootstrap": True}}
    c.task = dict(dim=16, gold_hidden=32, conflict_fraction=0.5)
    c.data = dict(num_weak_train=2000 if not smoke else 500,
                  num_strong_train=8000 if not smoke else 800,
                  num_test=10_000 if not smoke else 1000)
    c.weak = dict(features=12, noise=0.5, hidden=16)
    c.strong = dict(features=(8, 12, 16), hidden=(8, 32, 128))
    c.train = dict(steps=400 if not smoke else 40, learning_rate=3e-3,
                   conflict_weight=0.2)
    return c


def make_data(config, seed: int) -> dict:
    """Inputs, gold labels, the weak model's noisy views and the conflict flags per split."""
    task = config.task
    gold = MLPReward(dim=task.dim, hidden=task.gold_hidden, seed=seed)
    rng = np.random.default_rng([seed, 1515])
    out = {}
    for split, n in (("weak", config.data.num_weak_train),
                     ("strong", config.data.num_strong_train), ("test", config.data.num_test)):
        x = rng.standard_normal((n, task.dim)).astype(np.float32)
        view = x[:, :config.weak.features] + config.weak.noise * rng.standard_normal(
            (n, config.weak.features)).astype(np.float32)
        out[split] = {"x": x, "y": (gold(x) > 0).astype(np.float32), "weak_view": view,
                      "conflict": (rng.uniform(size=n) < task.conflict_fraction)
                      .astype(np.float32)}
    return out


def init_mlp(key, in_dim: int, width: int):
    """One-hidden-layer GELU MLP params {w1 [D, H], b1 [H], w2 [H], b2 []}."""
    k1, k2 = jax.random.split(key)
    return {"w1": jax.random.normal(k1, (in_dim, width), jnp.float32) / np.sqrt(in_dim),
            "b1": jnp.zeros((width,), jnp.float32),
            "w2": jax.random.normal(k2, (width,), jnp.float32) / np.sqrt(width),
            "b2": jnp.zeros((), jnp.float32)}


def apply_mlp(params, x, unit_mask):
    """Logits [N] of x [N, D]; hidden units where unit_mask [H] is 0 are switched off, so every
    capacity level shares one shape (and one compilation)."""
    h = jax.nn.gelu(x @ params["w1"] + params["b1"]) * unit_mask
    return h @ params["w2"] + params["b2"]


@functools.partial(jax.jit, static_argnames=("steps", "lr"))
def fit_classifier(key, x, feature_mask, unit_mask, targets, conflict, conflict_targets,
                   conflict_weight, *, steps, lr):
    """Full-batch Adam on soft-label cross-entropy plus a weighted conflicting objective.

    L = mean_i CE(p(x_i), t_i) + lambda mean_i c_i CE(p(x_i), h_i), with x [N, D] (features
    outside feature_mask [D] zeroed), t the (soft) target labels [N], c the conflict flags [N]
    and h the conflicting targets [N]. Returns the params.
    """
    tx = optax.adam(lr)
    x = x * feature_mask

    def ce(logits, t):
        return -(t * jax.nn.log_sigmoid(logits) + (1.0 - t) * jax.nn.log_sigmoid(-logits))

    def loss_fn(p):
        logits = apply_mlp(p, x, unit_mask)
        return jnp.mean(ce(logits, targets)) + conflict_weight * jnp.mean(
            conflict * ce(logits, conflict_targets))

    def step(carry, _):
        p, o = carry
        g = jax.grad(loss_fn)(p)
        upd, o = tx.update(g, o, p)
        return (optax.apply_updates(p, upd), o), None

    p0 = init_mlp(key, x.shape[-1], unit_mask.shape[0])
    (p, _), _ = jax.lax.scan(step, (p0, tx.init(p0)), None, length=steps)
    return p


@jax.jit
def predict(params, x, feature_mask, unit_mask):
    """Probabilities [N] of the positive (harmless) class."""
    return jax.nn.sigmoid(apply_mlp(params, x * feature_mask, unit_mask))


def _masks(num_features: int, width: int, in_dim: int, max_width: int):
    fm = np.zeros(in_dim, np.float32)
    fm[:num_features] = 1.0
    fm[-1] = 1.0  # the conflict flag (last input column) is always visible to a student
    um = (np.arange(max_width) < width).astype(np.float32)
    return fm, um


def _student_inputs(split: dict) -> np.ndarray:
    """All clean features and the conflict flag (the prompt type is visible); masked per level."""
    return np.concatenate([split["x"], split["conflict"][:, None]], axis=1)


def _train_student(key, data, k, width, targets, conflict_weight, config):
    tr = config.train
    split = data["strong"]
    x = _student_inputs(split)
    fm, um = _masks(k, width, x.shape[-1], max(config.strong.hidden))
    params = fit_classifier(key, x, fm, um, targets, split["conflict"], 1.0 - split["y"],
                            conflict_weight, steps=int(tr.steps), lr=float(tr.learning_rate))
    return (np.asarray(predict(params, x, fm, um)),
            np.asarray(predict(params, _student_inputs(data["test"]), fm, um)))


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
    seed, level = int(config.seed), int(config.level)
    data = make_data(config, seed)
    tr, wk = config.train, config.weak
    keys = jax.random.split(jax.random.key(seed), 4)
    wd = data["weak"]

    def weak_inputs(split):  # the noisy view, padded to the students' input shape
        v = np.zeros_like(_student_inputs(split))
        v[:, :wk.features] = split["weak_view"]
        return v

    fm, um = _masks(int(wk.features), int(wk.hidden), config.task.dim + 1,
                    max(config.strong.hidden))
    fm[-1] = 0.0  # the weak supervisor does not use the prompt-type flag
    weak_params = fit_classifier(keys[0], weak_inputs(wd), fm, um, wd["y"], wd["conflict"],
                                 wd["y"], 0.0, steps=int(tr.steps), lr=float(tr.learning_rate))
    p_weak_train = np.asarray(predict(weak_params, weak_inputs(data["strong"]), fm, um))
    p_weak_test = np.asarray(predict(weak_params, weak_inputs(data["test"]), fm, um))
    y_test = data["test"]["y"].astype(bool)
    known = np.asarray(weak_areas(p_weak_test, y_test))

    feats, hids = tuple(config.strong.features), tuple(config.strong.hidden)
    k, width = int(feats[level]), int(hids[level])
    targets = p_weak_train
    out = {"weak_accuracy": float(known.mean())}
    if config.bootstrap:  # weak -> intermediate (no conflict) -> strong
        mid = max(level - 1, 0)
        p_mid_train, p_mid_test = _train_student(keys[1], data, int(feats[mid]), int(hids[mid]),
                                                 p_weak_train, 0.0, config)
        targets = p_mid_train
        out["intermediate_accuracy"] = float(np.mean((p_mid_test > 0.5) == y_test))
    _, p_plain = _train_student(keys[2], data, k, width, targets, 0.0, config)
    _, p_conf = _train_student(keys[2], data, k, width, targets, float(tr.conflict_weight),
                               config)
    right_plain, right_conf = (p_plain > 0.5) == y_test, (p_conf > 0.5) == y_test
    ds = {name: float(v) for name, v in deception_score(right_plain, right_conf, known).items()}
    c = data["test"]["conflict"].astype(bool)
    out.update({
        "strong_accuracy_no_conflict": float(right_plain.mean()),
        "strong_accuracy_conflict": float(right_conf.mean()),
        "strong_accuracy_conflict_prompts": float(right_conf[c].mean()),
        "w2s_gain_no_conflict": float(right_plain.mean() - known.mean()),
        "strong_right_on_weak_unknown": float(right_plain[~known].mean()),
        "deception_score": ds["score"], "unknown_share": ds["share"],
        "unknown_base_rate": ds["base"], "conflict_error_rate": ds["error_rate"],
        "unknown_error_rate": ds["unknown_error_rate"], "known_error_rate": ds["known_error_rate"],
    })
    return out


def claims(results) -> list[Claim]:
    ds = [metric(results, g, "deception_score") for g in GAPS]
    share = [metric(results, g, "unknown_share") for g in GAPS]
    base = [metric(results, g, "unknown_base_rate") for g in GAPS]
    rho = float(spearman(np.arange(len(GAPS)), np.array(ds)))
    pooled_gap, pooled_ds = [], []
    for i, g in enumerate(GAPS):
        for m in results[g]["per_seed"].values():
            pooled_gap.append(i)
            pooled_ds.append(m["deception_score"])
    rho_pooled = float(spearman(np.array(pooled_gap), np.array(pooled_ds)))
    boot = metric(results, "bootstrap", "deception_score")
    over = all(s > b for s, b in zip(share, base))
    return [
        Claim(name="conflict-induced target errors are over-represented in the weak-unknown area "
                   "(share in U_w > |U_w|/N at every gap)",
              passed=over,
              measured={**{f"share_{g}": s for g, s in zip(GAPS, share)},
                        **{f"base_{g}": b for g, b in zip(GAPS, base)}},
              detail="; ".join(f"{g}: share {s:.3f} vs base {b:.3f}"
                               for g, s, b in zip(GAPS, share, base))),
        Claim(name="the deception score rises with the capability gap (Spearman >= 0.8 over the "
                   "3 gaps, seed means)",
              passed=rho >= 0.8,
              measured={"spearman": rho, "spearman_pooled_seeds": rho_pooled,
                        **{f"ds_{g}": d for g, d in zip(GAPS, ds)}},
              detail="DS " + ", ".join(f"{g} {d:.3f}" for g, d in zip(GAPS, ds))
                     + f"; Spearman {rho:.2f} (all seeds pooled {rho_pooled:.2f})"),
        Claim(name="bootstrapping through an intermediate student lowers the deception score of "
                   "the largest student",
              passed=boot < ds[-1],
              measured={"bootstrap": boot, "direct": ds[-1]},
              detail=f"DS bootstrap {boot:.3f} vs direct weak-to-strong {ds[-1]:.3f}"),
    ]


def plots(results, workdir: str) -> list[str]:
    """Deception score (1 = no targeting) and conflict-induced error rate per capability gap,
    with bootstrapping (mean +- std over seeds)."""
    from alignax.train.plots import plot_variant_bars

    return [plot_variant_bars(
        results, [("deception_score", "deception score DS (1 = no targeting)"),
                  ("conflict_error_rate", "conflict-induced error rate")],
        os.path.join(workdir, "plots", "weak_to_strong_deception.png"),
        title="Weak-to-strong deception vs capability gap", variants=(*GAPS, "bootstrap"))]
