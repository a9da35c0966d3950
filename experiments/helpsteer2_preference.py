"""HelpSteer2-Preference: Bradley-Terry vs regression reward models on matched data, Scaled BT.

Paper: Wang et al. 2024, "HelpSteer2-Preference: Complementing Ratings with Preferences"
(arXiv 2410.01257).

Setting (feature-vector testbed): items are vectors x in R^16 with a latent gold quality q(x), a
random frozen tanh MLP (`alignax.tasks.features.MLPReward`, standardised). Every training item
gets a 0-4 Likert helpfulness rating (ordered probit of q with noise,
`alignax.tasks.simulators.likert_ratings`, rating noise 1.5), and the same items are paired, each
item in one pair, with a preference p in {-3..-1, 1..3}: the annotator perceives
d = q_a - q_b + 0.3 eps, and p is the sign of d times its magnitude bin (|d| < 0.5 -> 1, < 1.2 -> 2,
else 3); a quarter of the annotations are inattentive, a coin-flip verdict marked "slightly
better" (|p| = 1), so the strength carries the label's reliability, as the paper's low agreement
on slight preferences suggests. The data are matched: the regression and the BT models see the
same items and the same pairs. The noise levels are set so that regression and the BT family are
of similar quality, as in the paper; with Gaussian perception noise alone (no inattentive
annotations) BT is close to well specified and Scaled BT gains nothing (see RESULTS notes).
One MLP reward model
(16 -> 64 -> 64 -> 1) is trained per variant:

- `bt`: -log sigma(r_c - r_r);
- `bt_margin`: -log sigma(r_c - r_r - |p|) (Llama-2-style margin);
- `scaled_bt`: -|p| log sigma(r_c - r_r);
- `regression`: MSE to the Likert rating of every item;
- `regression_then_scaled_bt`: the regression model as the initialisation of Scaled BT (fine-tuned
  with a lower learning rate).

Each model is trained full batch with AdamW for a fixed 100 steps (no early stopping); every variant
is better at 100 steps than at 300, where the MLPs fit the noisy labels almost exactly.

Metric: accuracy on held-out random pairs of new items against the gold ordering q_a > q_b.

Claims checked: (1) Scaled BT >= BT + 1 point held-out gold pair accuracy (mean over seeds);
(2) regression-initialised Scaled BT is the best variant or within 0.5 point of the best.

    alignax run experiments/helpsteer2_preference.py            # full setting, 8 seeds
    alignax run experiments/helpsteer2_preference.py:smoke      # seconds, for the tests
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from alignax.experiment import Claim, is_smoke, metric
from alignax.losses.reward import bradley_terry_loss, regression_loss, \
    scaled_bradley_terry_loss
from alignax.models.mlp import MLPConfig, make_mlp
from alignax.ops import spearman
from alignax.tasks.features import MLPReward
from alignax.tasks.simulators import likert_ratings
from alignax.train.small import fit_small, stack_seeds

METHODS = ("bt", "bt_margin", "scaled_bt", "regression", "regression_then_scaled_bt")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    smoke = is_smoke(arg)
    c = ml_collections.ConfigDict()
    c.seeds = [0] if smoke else [0, 1, 2, 3, 4, 5, 6, 7]
    c.method = "scaled_bt"
    c.variants = {m: {"method": m} for m in METHODS}
    c.task = dict(dim=16, gold_hidden=32, likert_noise=1.5, preference_noise=0.3,
                  strength_bins=[0.5, 1.2], inattentive_rate=0.25)
    c.data = dict(num_pairs=2000 if not smoke else 200, num_eval_items=4000 if not smoke else 400)
    c.model = dict(hidden=[64, 64])
    c.train = dict(steps=100 if not smoke else 40, learning_rate=3e-3, weight_decay=1e-4,
                   regression_steps=100 if not smoke else 40, finetune_learning_rate=1e-3)
    return c


def make_data(config, seed: int) -> dict:
    """Matched ratings and preferences on the same training items, plus held-out pairs."""
    task = config.task
    gold = MLPReward(task.dim, task.gold_hidden, "tanh", seed)
    rng = np.random.default_rng([seed, 63])
    n = config.data.num_pairs
    x = rng.standard_normal((2 * n, task.dim))
    q = gold(x)
    likert = likert_ratings(q, rng=rng, levels=5, noise_std=task.likert_noise)
    qa, qb = q[:n], q[n:]
    perceived = qa - qb + task.preference_noise * rng.standard_normal(n)
    strength = 1 + np.searchsorted(np.asarray(task.strength_bins), np.abs(perceived))
    a_wins = perceived > 0
    # inattentive annotations: a coin-flip verdict marked "slightly better" (strength 1)
    careless = rng.uniform(size=n) < task.inattentive_rate
    a_wins = np.where(careless, rng.uniform(size=n) < 0.5, a_wins)
    strength = np.where(careless, 1, strength)
    xa, xb = x[:n], x[n:]
    chosen = np.where(a_wins[:, None], xa, xb)
    rejected = np.where(a_wins[:, None], xb, xa)
    xe = rng.standard_normal((config.data.num_eval_items, task.dim))
    return {
        "items": x.astype(np.float32), "likert": likert.astype(np.float32),
        "chosen": chosen.astype(np.float32), "rejected": rejected.astype(np.float32),
        "strength": strength.astype(np.float32),
        "label_correct": float(np.mean(a_wins == (qa > qb))),
        "eval_items": xe.astype(np.float32), "eval_gold": gold(xe),
    }


def run_seeds(config: ml_collections.ConfigDict, workdir: str) -> dict[int, dict[str, float]]:
    """Every seed of one variant in one `fit_small` program per training stage, then the
    held-out metrics of each seed."""
    method = config.method
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; one of {METHODS}")
    seeds = [int(s) for s in config.seeds]
    per_seed = [make_data(config, s) for s in seeds]
    data = stack_seeds(per_seed, ("items", "likert", "chosen", "rejected", "strength",
                                  "eval_items"))
    model = make_mlp(MLPConfig(in_dim=config.task.dim, hidden=tuple(config.model.hidden),
                               out_dim=1, activation="gelu"))
    tr = config.train

    def bt_objective(kind):
        def loss_fn(p, d):
            rc, rr = model.apply(p, d["chosen"]), model.apply(p, d["rejected"])
            if kind == "bt":
                return jnp.mean(bradley_terry_loss(rc, rr))
            if kind == "bt_margin":
                return jnp.mean(bradley_terry_loss(rc, rr, margin=d["strength"]))
            return jnp.mean(scaled_bradley_terry_loss(rc, rr, strength=d["strength"]))
        return loss_fn

    def regression_objective(p, d):
        return jnp.mean(regression_loss(model.apply(p, d["items"]), d["likert"]))

    def fit(name, loss_fn, keys, init, steps, lr, **kw):
        return fit_small(os.path.join(workdir, name), loss_fn=loss_fn, init_params=init,
                         tx=optax.adamw(float(lr), weight_decay=float(tr.weight_decay)),
                         num_steps=int(steps), data={k: data[k] for k in keys}, seeds=seeds,
                         per_seed_data=True, **kw)

    pairs = ("chosen", "rejected", "strength")
    out: dict[int, dict[str, float]] = {s: {} for s in seeds}
    if method in ("bt", "bt_margin", "scaled_bt"):
        result = fit(method, bt_objective(method), pairs, model.init, tr.steps,
                     tr.learning_rate)
    else:
        result = fit("regression", regression_objective, ("items", "likert"), model.init,
                     tr.regression_steps, tr.learning_rate)
        for i, s in enumerate(seeds):
            out[s]["regression_final_loss"] = float(result.final_loss[i])
        if method == "regression_then_scaled_bt":  # each seed starts from its regression model
            result = fit("scaled_bt", bt_objective("scaled_bt"), pairs, result.params, tr.steps,
                         tr.finetune_learning_rate, per_seed_init=True)

    all_scores = np.asarray(jax.jit(jax.vmap(model.apply))(result.params, data["eval_items"]),
                            np.float64)  # [S, M]
    for i, (s, p) in enumerate(zip(seeds, per_seed)):
        o, scores, gold = out[s], all_scores[i], p["eval_gold"]
        o["final_train_loss"] = float(result.final_loss[i])
        half = len(scores) // 2
        sa, sb, ga, gb = scores[:half], scores[half:2 * half], gold[:half], gold[half:2 * half]
        o["gold_pair_accuracy"] = float(np.mean((sa > sb) == (ga > gb)))
        o["spearman_gold"] = float(spearman(scores, gold))
        o["train_label_correct"] = p["label_correct"]
    return out


def claims(results) -> list[Claim]:
    acc = {m: metric(results, m, "gold_pair_accuracy") for m in METHODS}
    n = results["scaled_bt"]["metrics"]["gold_pair_accuracy"]["n"]
    best = max(acc.values())
    chained = acc["regression_then_scaled_bt"]
    table = ", ".join(f"{m} {v:.4f}" for m, v in acc.items())
    return [
        Claim(
            name="Scaled BT >= BT + 1 point held-out gold pair accuracy (mean over seeds)",
            passed=acc["scaled_bt"] >= acc["bt"] + 0.01,
            measured={"scaled_bt": acc["scaled_bt"], "bt": acc["bt"], "seeds": float(n)},
            detail=f"Scaled BT {acc['scaled_bt']:.4f} vs BT {acc['bt']:.4f} over {n} seeds",
        ),
        Claim(
            name="regression-initialised Scaled BT is the best variant or within 0.5 point of it",
            passed=chained >= best - 0.005,
            measured={**acc, "best": best},
            detail=table,
        ),
    ]


def plots(results, workdir: str) -> list[str]:
    """Held-out gold pair accuracy per variant (mean +- std over seeds)."""
    from alignax.train.plots import plot_variant_bars

    return [plot_variant_bars(
        results, [("gold_pair_accuracy", "held-out gold pair accuracy")],
        os.path.join(workdir, "plots", "helpsteer2_preference.png"),
        title="BT vs regression reward models on matched data", zoom=True)]
