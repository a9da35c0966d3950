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

Splits (docs/protocol.md): the gold quality network is the "world" of experiment seed s; the
training items/ratings/pairs, the validation pairs and the test items come from the disjoint data
seeds `split_seeds(s)` (3s, 3s+1, 3s+2).

Selection on validation, equal for every variant: each variant gets the same total budget of
`train.budget` full-batch AdamW updates (300) and the same early stopping: `fit_small(select=
("val_pair_accuracy", "max"))` keeps, per seed, the params of the logged step (every 10 updates)
with the best accuracy on the validation pairs (annotated like the training pairs, noisy labels,
no gold). `regression_then_scaled_bt` splits the same budget: half for the regression stage (its
best validation step is the initialisation) and half for the Scaled BT fine-tune (again its best
validation step). The previous version trained every variant a fixed 100 steps, chosen after 300
had failed on the test metric, and gave the chained variant 100 + 100 steps. The learning rates
(3e-3, fine-tune 1e-3) are the earlier ones and not tuned. The chosen step of each seed is
recorded (`chosen_steps`, and `regression_chosen_steps` for the chained variant).

Metrics: `test_gold_pair_accuracy` on random pairs of new test items against the gold ordering
q_a > q_b, `test_spearman_gold`; `val_pair_accuracy` is the selection score.

Claims (8 seeds, paired over seeds, 95% t intervals):
(1) comparative: Scaled BT - BT >= +1 point test gold pair accuracy;
(2) comparative: regression-initialised Scaled BT - the strongest other variant (the one with
the highest mean test accuracy, i.e. the hardest comparison) >= -0.5 point ("best or tied").

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

from alignax import protocol
from alignax.experiment import is_smoke
from alignax.losses.reward import bradley_terry_loss, regression_loss, \
    scaled_bradley_terry_loss
from alignax.models.mlp import MLPConfig, make_mlp
from alignax.ops import spearman
from alignax.tasks.features import MLPReward
from alignax.tasks.simulators import likert_ratings
from alignax.tasks.splits import split_seeds
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
    c.data = dict(num_pairs=2000 if not smoke else 200, num_val_pairs=1000 if not smoke else 100,
                  num_eval_items=4000 if not smoke else 400)
    c.model = dict(hidden=[64, 64])
    # every variant: `budget` updates in all, early stopping on validation every `steps_per_log`
    c.train = dict(budget=300 if not smoke else 40, steps_per_log=10, learning_rate=3e-3,
                   weight_decay=1e-4, finetune_learning_rate=1e-3)
    return c


def _annotate(config, rng, xa, xb, qa, qb):
    """The annotators' verdicts on pairs (a, b): chosen/rejected items and strengths."""
    task = config.task
    n = len(qa)
    perceived = qa - qb + task.preference_noise * rng.standard_normal(n)
    strength = 1 + np.searchsorted(np.asarray(task.strength_bins), np.abs(perceived))
    a_wins = perceived > 0
    # inattentive annotations: a coin-flip verdict marked "slightly better" (strength 1)
    careless = rng.uniform(size=n) < task.inattentive_rate
    a_wins = np.where(careless, rng.uniform(size=n) < 0.5, a_wins)
    strength = np.where(careless, 1, strength)
    chosen = np.where(a_wins[:, None], xa, xb)
    rejected = np.where(a_wins[:, None], xb, xa)
    return (chosen.astype(np.float32), rejected.astype(np.float32), strength.astype(np.float32),
            float(np.mean(a_wins == (qa > qb))))


def make_data(config, seed: int) -> dict:
    """Matched ratings and preferences on the same training items, annotated validation pairs
    and test items; the gold network is seed `seed`'s world, the samples come from its three
    disjoint data seeds (`split_seeds`)."""
    task = config.task
    gold = MLPReward(task.dim, task.gold_hidden, "tanh", seed)
    splits = split_seeds(seed)
    rng = np.random.default_rng([splits.train, 63])
    n = config.data.num_pairs
    x = rng.standard_normal((2 * n, task.dim))
    q = gold(x)
    likert = likert_ratings(q, rng=rng, levels=5, noise_std=task.likert_noise)
    chosen, rejected, strength, correct = _annotate(config, rng, x[:n], x[n:], q[:n], q[n:])
    vrng = np.random.default_rng([splits.validation, 63])
    nv = config.data.num_val_pairs
    xv = vrng.standard_normal((2 * nv, task.dim))
    qv = gold(xv)
    val_chosen, val_rejected, _, _ = _annotate(config, vrng, xv[:nv], xv[nv:], qv[:nv], qv[nv:])
    trng = np.random.default_rng([splits.test, 63])
    xe = trng.standard_normal((config.data.num_eval_items, task.dim))
    return {
        "items": x.astype(np.float32), "likert": likert.astype(np.float32),
        "chosen": chosen, "rejected": rejected, "strength": strength,
        "label_correct": correct,
        "val_chosen": val_chosen, "val_rejected": val_rejected,
        "eval_items": xe.astype(np.float32), "eval_gold": gold(xe),
    }


def run_seeds(config: ml_collections.ConfigDict, workdir: str) -> dict[int, dict[str, float]]:
    """Every seed of one variant in one `fit_small` program per training stage (early stopping
    on the validation pairs), then the test metrics of each seed's selected params."""
    method = config.method
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; one of {METHODS}")
    seeds = [int(s) for s in config.seeds]
    per_seed = [make_data(config, s) for s in seeds]
    data = stack_seeds(per_seed, ("items", "likert", "chosen", "rejected", "strength",
                                  "eval_items"))
    val = stack_seeds(per_seed, ("val_chosen", "val_rejected"))
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

    def val_metrics(p, v):
        rc, rr = model.apply(p, v["val_chosen"]), model.apply(p, v["val_rejected"])
        return {"val_pair_accuracy": jnp.mean((rc > rr).astype(jnp.float32))}

    def fit(name, loss_fn, keys, init, steps, lr, **kw):
        return fit_small(os.path.join(workdir, name), loss_fn=loss_fn, init_params=init,
                         tx=optax.adamw(float(lr), weight_decay=float(tr.weight_decay)),
                         num_steps=int(steps), data={k: data[k] for k in keys}, seeds=seeds,
                         per_seed_data=True, eval_fn=val_metrics, eval_data=val,
                         select=("val_pair_accuracy", "max"),
                         steps_per_log=int(tr.steps_per_log), **kw)

    pairs = ("chosen", "rejected", "strength")
    budget = int(tr.budget)
    out: dict[int, dict[str, float]] = {s: {} for s in seeds}
    if method in ("bt", "bt_margin", "scaled_bt"):
        result = fit(method, bt_objective(method), pairs, model.init, budget, tr.learning_rate)
    elif method == "regression":
        result = fit("regression", regression_objective, ("items", "likert"), model.init,
                     budget, tr.learning_rate)
    else:  # half the budget each; the fine-tune starts from each seed's selected regression
        first = fit("regression", regression_objective, ("items", "likert"), model.init,
                    budget // 2, tr.learning_rate)
        for i, s in enumerate(seeds):
            out[s]["regression_chosen_steps"] = float(first.best_step[i])
            out[s]["regression_val_pair_accuracy"] = float(first.best_score[i])
        result = fit("scaled_bt", bt_objective("scaled_bt"), pairs, first.best_params,
                     budget - budget // 2, tr.finetune_learning_rate, per_seed_init=True)

    all_scores = np.asarray(jax.jit(jax.vmap(model.apply))(result.best_params,
                                                          data["eval_items"]),
                            np.float64)  # [S, M]
    for i, (s, p) in enumerate(zip(seeds, per_seed)):
        o, scores, gold = out[s], all_scores[i], p["eval_gold"]
        o["final_train_loss"] = float(result.final_loss[i])
        o["chosen_steps"] = float(result.best_step[i])
        o["val_pair_accuracy"] = float(result.best_score[i])
        half = len(scores) // 2
        sa, sb, ga, gb = scores[:half], scores[half:2 * half], gold[:half], gold[half:2 * half]
        o["test_gold_pair_accuracy"] = float(np.mean((sa > sb) == (ga > gb)))
        o["test_spearman_gold"] = float(spearman(scores, gold))
        o["train_label_correct"] = p["label_correct"]
    return out


def claims(results) -> list[protocol.Claim]:
    metric = "test_gold_pair_accuracy"
    acc = {m: results[m]["metrics"][metric]["mean"] for m in METHODS}
    table = ", ".join(f"{m} {v:.4f}" for m, v in acc.items())
    chained = "regression_then_scaled_bt"
    others = [m for m in METHODS if m != chained]
    strongest = max(others, key=lambda m: acc[m])
    return [
        protocol.compare(
            "Scaled BT >= BT + 1 point test gold pair accuracy (equal budget, early stopping "
            "on validation)", results, ("scaled_bt", metric), ("bt", metric), at_least=0.01,
            detail=f"all variants (test means): {table}"),
        protocol.compare(
            "regression-initialised Scaled BT is the best variant or within 0.5 point of it "
            "(paired against the strongest other variant by mean test accuracy)", results,
            (chained, metric), (strongest, metric), at_least=-0.005,
            detail=f"strongest other variant: {strongest}; all variants (test means): {table}"),
    ]


def plots(results, workdir: str) -> list[str]:
    """Held-out gold pair accuracy per variant (mean +- std over seeds)."""
    from alignax.train.plots import plot_variant_bars

    return [plot_variant_bars(
        results, [("test_gold_pair_accuracy", "test gold pair accuracy")],
        os.path.join(workdir, "plots", "helpsteer2_preference.png"),
        title="BT vs regression reward models on matched data", zoom=True)]
