"""Collaborative reward modeling (CRM): two reward models that pick each other's training pairs.

Paper: "Two Minds Better Than One: Collaborative Reward Modeling for LLM Alignment" (2025).

Setting (feature-vector testbed): responses are vectors x ~ N(0, I_16) with a frozen non-linear
gold reward (a random tanh MLP, `alignax.tasks.features.MLPReward`). 20k training pairs are
labelled by Bradley-Terry draws from the gold reward (temperature `task.label_temperature`), then
a fraction `flip_rate` (20% or 40%) of the labels is flipped at random
(`alignax.tasks.simulators.flip_labels`). Reward models are 2-layer MLPs (128-128 GELU) trained
with minibatch Adam for many epochs (`alignax.train.small.fit_small`: every seed of a
variant in one vmapped program), long enough to start fitting the flipped labels. Methods:
  - `bt`: plain Bradley-Terry on every pair;
  - `small_loss`: one model that trains only on the (1 - tau_t) fraction of each minibatch with
    its own largest margins (small-loss filtering);
  - `crm`: two models; on each minibatch each one keeps its (1 - tau_t) most confident pairs and
    hands them to its peer, which trains on them (`alignax.losses.reward.peer_review_masks`); the
    drop rate ramps up on a curriculum tau_t = tau_max min(1, t / T_warm)
    (`curriculum_drop_rate`). The CRM reward is the mean of the two models' rewards.
tau_max is set to the flip rate (as in co-teaching, the noise rate is assumed known).
Metrics: gold-preference accuracy on 10k fresh clean pairs (gold ordering), and, for the
filtering methods, the planted-flip rate among the pairs kept at the end of training (on the
whole training set, at tau_max).

Claims checked: at 40% flips (1) CRM's held-out gold accuracy beats plain BT by >= 3 points
(mean of 3 seeds) and (2) the pairs CRM keeps have a flip rate <= 25%. The 20% setting is
reported alongside (no threshold).

    alignax run experiments/crm.py            # full setting, 3 seeds
    alignax run experiments/crm.py:smoke      # seconds, for the tests
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from alignax.experiment import Claim, is_smoke, metric
from alignax.losses.reward import bradley_terry_loss, curriculum_drop_rate, peer_review_masks
from alignax.models.mlp import MLPConfig, make_mlp
from alignax.tasks.features import MLPReward
from alignax.tasks.simulators import bradley_terry, flip_labels
from alignax.train.plots import plot_curves
from alignax.train.small import fit_small, stack_seeds
from alignax.train.writers import read_metrics

METHODS = ("bt", "small_loss", "crm")
TEST_KEYS = ("test_a", "test_b", "test_a_better")
NOISE = {"20": 0.2, "40": 0.4}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    smoke = is_smoke(arg)
    c = ml_collections.ConfigDict()
    c.seeds = [0] if smoke else [0, 1, 2]
    c.method = "crm"
    c.variants = {f"{m}_{n}": {"method": m, "flip_rate": r}
                  for n, r in NOISE.items() for m in METHODS}
    c.flip_rate = 0.4  # fraction of labels flipped at random
    c.task = dict(dim=16, gold_hidden=32, label_temperature=0.1)
    c.data = dict(num_pairs=20_000 if not smoke else 500,
                  num_test_pairs=10_000 if not smoke else 300)
    c.model = dict(hidden=(128, 128) if not smoke else (32, 32))
    c.train = dict(steps=2000 if not smoke else 30, batch_size=256 if not smoke else 64,
                   learning_rate=1e-3, eval_every=250 if not smoke else 10)
    # drop rate: tau_max = flip_rate * drop_scale, reached after warmup_fraction of the steps
    c.crm = dict(drop_scale=1.0, warmup_fraction=0.25)
    return c


def make_data(config, seed: int) -> dict:
    """Noisy BT training pairs (with the planted-flip mask) and clean held-out pairs."""
    task = config.task
    gold = MLPReward(dim=task.dim, hidden=task.gold_hidden, seed=seed)
    rng = np.random.default_rng([seed, 1001])
    n = config.data.num_pairs
    xa, xb = rng.standard_normal((2, n, task.dim))
    a_pref = bradley_terry(gold(xa), gold(xb), rng=rng, temperature=task.label_temperature)
    noisy, flipped = flip_labels(a_pref.astype(np.int32), rate=config.flip_rate, rng=rng)
    a_chosen = noisy.astype(bool)
    chosen = np.where(a_chosen[:, None], xa, xb).astype(np.float32)
    rejected = np.where(a_chosen[:, None], xb, xa).astype(np.float32)
    ta, tb = rng.standard_normal((2, config.data.num_test_pairs, task.dim))
    return {"chosen": chosen, "rejected": rejected, "flipped": flipped,
            "label_gold_wrong": gold(chosen) < gold(rejected),
            "test_a": ta.astype(np.float32), "test_b": tb.astype(np.float32),
            "test_a_better": gold(ta) > gold(tb)}


def make_model(config):
    """One reward model: a GELU MLP dim -> hidden... -> 1 (`alignax.models.mlp`)."""
    return make_mlp(MLPConfig(in_dim=config.task.dim, hidden=tuple(config.model.hidden),
                              out_dim=1))


def num_models(method: str) -> int:
    """CRM trains two peer models; `bt` and `small_loss` one."""
    return 2 if method == "crm" else 1


def ensemble_score(score, params, x):
    """The method's reward: the mean of its models' rewards (both for CRM, the one model
    otherwise). `score(params, x)` -> [M, N]; returns [N]."""
    return jnp.mean(score(params, x), 0)


def training_masks(margins, drop_rate, method: str):
    """The pairs each model trains on, [M, B] from its margins [M, B] at drop rate tau.

    crm: each model keeps its (1 - tau) most confident pairs for its peer
    (`peer_review_masks`); small_loss: the model keeps its own most confident pairs; bt: all.
    """
    if method == "crm":
        return jnp.stack(peer_review_masks(margins[0], margins[1], drop_rate=drop_rate))
    if method == "small_loss":
        return peer_review_masks(margins[0], margins[0], drop_rate=drop_rate)[0][None]
    return jnp.ones_like(margins)


def train(config, workdir: str, data: dict):
    """Minibatch Adam on the method's masked BT loss for every seed at once (`fit_small`).

    data: [S, ...] arrays of the seeds in `config.seeds`: chosen, rejected [S, N, D] and the
    held-out test_a, test_b [S, T, D], test_a_better [S, T]. The drop rate follows the
    curriculum tau_t = tau_max min(1, t / T_warm) over the updates t. Returns (SmallFit with
    params [S, M, ...], held-out gold accuracy every `eval_every` updates [S, E]).
    """
    method, tr = config.method, config.train
    model = make_model(config)
    score = jax.vmap(model.apply, in_axes=(0, None))  # [M, ...] params, shared inputs -> [M, N]
    max_rate = float(config.flip_rate * config.crm.drop_scale)
    warmup = int(config.crm.warmup_fraction * tr.steps)
    batch_size, m = int(tr.batch_size), num_models(method)

    def init(key):
        return jax.vmap(model.init)(jax.random.split(key, m))

    def batch_fn(d, rng, step):
        idx = jax.random.randint(rng, (batch_size,), 0, d["chosen"].shape[0])
        return {"chosen": d["chosen"][idx], "rejected": d["rejected"][idx], "step": step}

    def loss_fn(p, batch):
        rc, rr = score(p, batch["chosen"]), score(p, batch["rejected"])  # [M, B]
        losses = jax.vmap(bradley_terry_loss)(rc, rr)  # [M, B]
        tau = curriculum_drop_rate(batch["step"], max_rate=1.0, warmup_steps=warmup) * max_rate
        masks = training_masks(jax.lax.stop_gradient(rc - rr), tau, method)
        per_model = jnp.sum(masks * losses, 1) / jnp.maximum(jnp.sum(masks, 1), 1.0)
        return jnp.sum(per_model), {"drop_rate": tau if method != "bt" else jnp.float32(0.0),
                                    "updates": (batch["step"] + 1).astype(jnp.float32)}

    def eval_fn(p, test):
        r = ensemble_score(score, p, test["test_a"]) - ensemble_score(score, p, test["test_b"])
        return {"gold_accuracy": jnp.mean((r > 0) == test["test_a_better"])}

    fit = fit_small(workdir, loss_fn=loss_fn, init_params=init,
                    tx=optax.adam(float(tr.learning_rate)), num_steps=int(tr.steps),
                    data={k: data[k] for k in ("chosen", "rejected")},
                    seeds=list(config.seeds), per_seed_data=True, batch_fn=batch_fn,
                    with_step=True, has_aux=True, steps_per_log=int(tr.eval_every),
                    eval_fn=eval_fn, eval_data={k: data[k] for k in TEST_KEYS})
    curves = np.array([[row[f"seed_{s}/eval/gold_accuracy"] for row in fit.history]
                       for s in fit.seeds])
    return fit, curves


def pair_margins(config, params, chosen, rejected) -> np.ndarray:
    """Every model's margins r(chosen) - r(rejected) [S, M, N] of the stacked params [S, M, ...]
    on the seeds' pairs chosen, rejected [S, N, D]."""
    score = jax.vmap(make_model(config).apply, in_axes=(0, None))

    @jax.jit
    @jax.vmap
    def margins(p, c, r):
        return score(p, c) - score(p, r)

    return np.asarray(margins(params, jnp.asarray(chosen), jnp.asarray(rejected)))


def run_seeds(config: ml_collections.ConfigDict, workdir: str) -> dict[int, dict[str, float]]:
    """Every seed of one variant trained in one program, then each seed's metrics."""
    method = config.method
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; one of {METHODS}")
    seeds = [int(s) for s in config.seeds]
    per_seed = [make_data(config, s) for s in seeds]
    data = stack_seeds(per_seed, ("chosen", "rejected", *TEST_KEYS))
    fit, curves = train(config, os.path.join(workdir, "reward_models"), data)
    margins = pair_margins(config, fit.params, data["chosen"], data["rejected"])  # [S, M, N]
    max_rate = float(config.flip_rate * config.crm.drop_scale)
    out = {}
    for i, (seed, d) in enumerate(zip(seeds, per_seed)):
        curve, flipped = curves[i], d["flipped"]
        res = {"gold_accuracy": float(curve[-1]), "best_gold_accuracy": float(curve.max()),
               "observed_flip_rate": float(flipped.mean())}
        m0 = margins[i].mean(0)  # the method's reward margin (the ensemble for CRM)
        res["train_fit_flipped"] = float(np.mean(m0[flipped] > 0))  # memorised wrong labels
        res["train_fit_clean"] = float(np.mean(m0[~flipped] > 0))
        if method != "bt":
            kept = np.asarray(training_masks(jnp.asarray(margins[i]), max_rate, method), bool)
            res["kept_flip_rate"] = float(np.mean([flipped[k].mean() for k in kept]))
            res["kept_gold_wrong_rate"] = float(np.mean([d["label_gold_wrong"][k].mean()
                                                         for k in kept]))
            res["kept_fraction"] = float(kept.mean())
        out[seed] = res
    return out


def claims(results) -> list[Claim]:
    acc = {v: metric(results, v, "gold_accuracy") for v in results}
    gain40 = acc["crm_40"] - acc["bt_40"]
    gain20 = acc["crm_20"] - acc["bt_20"]
    kept40 = metric(results, "crm_40", "kept_flip_rate")
    kept20 = metric(results, "crm_20", "kept_flip_rate")
    return [
        Claim(name="at 40% flipped labels CRM's held-out gold accuracy beats plain BT by >= 3 "
                   "points (mean of seeds)",
              passed=gain40 >= 0.03,
              measured={"crm_40": acc["crm_40"], "bt_40": acc["bt_40"],
                        "small_loss_40": acc["small_loss_40"], "gain_40": gain40,
                        "crm_20": acc["crm_20"], "bt_20": acc["bt_20"],
                        "small_loss_20": acc["small_loss_20"], "gain_20": gain20},
              detail=f"40%: CRM {acc['crm_40']:.3f} vs BT {acc['bt_40']:.3f} (small-loss "
                     f"{acc['small_loss_40']:.3f}), gain {100 * gain40:.1f} points; 20%: CRM "
                     f"{acc['crm_20']:.3f} vs BT {acc['bt_20']:.3f} (small-loss "
                     f"{acc['small_loss_20']:.3f}), gain {100 * gain20:.1f} points"),
        Claim(name="at 40% flipped labels the pairs CRM keeps have a flip rate <= 25%",
              passed=kept40 <= 0.25,
              measured={"kept_flip_rate_40": kept40, "kept_flip_rate_20": kept20,
                        "small_loss_kept_flip_rate_40":
                            metric(results, "small_loss_40", "kept_flip_rate")},
              detail=f"kept-pair flip rate {kept40:.3f} at 40% noise, {kept20:.3f} at 20%"),
    ]


def plots(results, workdir: str) -> list[str]:
    """Held-out gold accuracy along training, per variant (mean +- std over seeds)."""
    curves = {}
    for variant, res in results.items():
        path = os.path.join(workdir, variant, "reward_models", "metrics.jsonl")
        if not os.path.exists(path):
            continue
        rows = read_metrics(path)
        ys = np.array([[row[f"seed_{s}/eval/gold_accuracy"] for row in rows]
                       for s in res["per_seed"]])
        curves[variant] = ([row["updates"] for row in rows], ys.mean(0), ys.std(0))
    out = os.path.join(workdir, "plots", "crm_accuracy.png")
    plot_curves(curves, out, title="CRM vs BT under flipped labels: held-out gold accuracy",
                xlabel="training step", ylabel="gold-preference accuracy")
    return [out]
