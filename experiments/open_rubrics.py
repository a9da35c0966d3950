"""OpenRubrics: contrastive rubric generation, the consistency filter and a rubric-conditioned RM.

Paper: Liu et al. 2025, "OpenRubrics: Towards Scalable Synthetic Rubric Generation for Reward
Modeling and LLM Alignment" (arXiv 2510.07743).

Setting (attribute testbed): a response carries 10 checkable binary attributes. There are 10
prompt types; each states 3 hard constraints (attributes a response must have) and values 4 of
the other attributes with hidden principle weights in [0.5, 1.5]. Gold utility
u = sum_a w_a x_a - 10 * (number of violated hard constraints). A training set of at most 200
pairs (20 per prompt type) is labelled by Bradley-Terry draws sigma(3 (u_a - u_b)); held-out
pairs are judged against the gold ordering (pairs of equal utility left out).

Rubric-RM (`alignax.rewards.rubrics`): for every training pair a rubric is generated
contrastively (`contrastive_rubrics`): the prompt's stated hard rules, each missed with
probability 0.2, plus spurious rules with probability 0.1; principles are positively phrased
criteria (weight 1) for the qualities the chosen response has and the rejected one lacks, read
only off pairs the hard rules do not already separate and only for the qualities the prompt
asks for (the 4 valued attributes, not their weights; missed / spurious like the rules); with
probability 0.3 the generator confuses the two responses (it then credits the rejected one).
The consistency filter keeps a rubric only if its gated judge recovers the pair's label
(`consistency_filter`); the kept rubrics of a prompt type are merged (`aggregate_rubrics`);
a logistic judge over the two rubric-satisfaction features (hard-rule violations, principle
score) is fitted on the training pairs with the BT loss (`rubric_judge_logits`; full-batch Adam,
`alignax.train.small.fit_small`, every seed at once).
`rubric_rm_nofilter` merges all rubrics.
Baseline `bt_rm`: a plain BT reward model, linear in [x, onehot(prompt type) (x) x] (the prompt
enters as its identity, so it can fit per-type weights) with L2 regularisation 3e-3.
`bt_rm_rule_features` (reported, no claim) also gets x * stated rules and x * asked qualities,
i.e. the prompt-side information the rubric generator reads, as hand-made features.

Variants `*_n50` rerun three of the methods with 50 training pairs, and `*_signed` the rubric
methods with signed criteria (+1 for a quality only the chosen has, -1 for one only the rejected
has, `positive_criteria=False`); both are reported, not claimed.

Claims checked: with <= 200 training pairs (the 200-pair setting), (1) Rubric-RM beats the BT-RM
by >= 5 points of held-out gold preference accuracy; (2) the consistency filter adds >= 2 points.

    alignax run experiments/open_rubrics.py            # full setting, 3 seeds
    alignax run experiments/open_rubrics.py:smoke      # seconds, for the tests
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from alignax.experiment import Claim, is_smoke, metric
from alignax.losses.reward import bradley_terry_loss
from alignax.rewards.rubrics import (Rubric, aggregate_rubrics, consistency_filter,
                                     contrastive_rubrics, rubric_judge_logits)
from alignax.train.small import fit_small

METHODS = ("rubric_rm", "rubric_rm_nofilter", "bt_rm", "bt_rm_rule_features")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    smoke = is_smoke(arg)
    c = ml_collections.ConfigDict()
    c.seeds = [0] if smoke else [0, 1, 2, 3, 4]
    c.method = "rubric_rm"
    c.variants = {m: {"method": m} for m in METHODS}
    if not smoke:  # (the smoke setting runs the four main methods only)
        # the same methods with 50 training pairs (5 per prompt type): reported, not claimed
        c.variants.update({f"{m}_n50": {"method": m, "pairs_per_type": 5}
                           for m in ("rubric_rm", "rubric_rm_nofilter", "bt_rm")})
        # signed criteria (+1 / -1 for what only the chosen / only the rejected has): not claimed
        c.variants.update({f"{m}_signed": {"method": m, "positive_criteria": False}
                           for m in ("rubric_rm", "rubric_rm_nofilter")})
    c.task = dict(num_attributes=10, num_types=10, num_hard=3, num_principles=4,
                  hard_rate=0.75, other_rate=0.5, violation_penalty=10.0, label_beta=3.0)
    c.pairs_per_type = 20  # training pairs per prompt type (10 types)
    c.data = dict(num_test_pairs=4000 if not smoke else 500)
    c.generator = dict(miss_rate=0.2, spurious_rate=0.1, corrupt_rate=0.3, reads_principles=True)
    c.positive_criteria = True  # principles as positively phrased criteria (weight 1)
    c.rubric = dict(gate_penalty=10.0, rule_threshold=0.5)
    c.train = dict(steps=500 if not smoke else 100, learning_rate=3e-2, l2=3e-3)
    return c


def make_world(task, seed: int) -> dict:
    """Hard constraints [T, A] and principle weights [T, A] of every prompt type."""
    rng = np.random.default_rng([seed, 27])
    t, a = task.num_types, task.num_attributes
    hard = np.zeros((t, a), np.float32)
    weights = np.zeros((t, a), np.float32)
    for i in range(t):
        order = rng.permutation(a)
        hard[i, order[:task.num_hard]] = 1.0
        principles = order[task.num_hard:task.num_hard + task.num_principles]
        weights[i, principles] = rng.uniform(0.5, 1.5, size=len(principles))
    return {"hard": hard, "weights": weights}


def utility(world, task, types, x):
    """Gold utility of responses x [N, A] to prompts of `types` [N]."""
    violations = np.sum(world["hard"][types] * (1.0 - x), -1)
    return np.sum(world["weights"][types] * x, -1) - task.violation_penalty * violations


def sample_responses(world, task, types, rng):
    rates = np.where(world["hard"][types] > 0, task.hard_rate, task.other_rate)
    return (rng.uniform(size=rates.shape) < rates).astype(np.float32)


def sample_pairs(world, task, n_per_type: int, rng, *, labelled: bool) -> dict:
    types = np.repeat(np.arange(task.num_types), n_per_type)
    xa, xb = sample_responses(world, task, types, rng), sample_responses(world, task, types, rng)
    ua, ub = utility(world, task, types, xa), utility(world, task, types, xb)
    if labelled:
        a_chosen = rng.uniform(size=len(types)) < 0.5 * (1.0 + np.tanh(
            0.5 * task.label_beta * (ua - ub)))  # sigmoid without overflow
    else:
        keep = ua != ub
        types, xa, xb, a_chosen = types[keep], xa[keep], xb[keep], (ua > ub)[keep]
    return {"types": types.astype(np.int32),
            "chosen": np.where(a_chosen[:, None], xa, xb),
            "rejected": np.where(a_chosen[:, None], xb, xa)}


def _bt_features(x, prompt, types, num_types, rule_features: bool):
    """[x, onehot(type) (x) x] (+ the `prompt` blocks: x * stated rules, x * asked qualities)."""
    onehot = jax.nn.one_hot(types, num_types, dtype=jnp.float32)
    inter = (onehot[:, :, None] * x[:, None, :]).reshape(x.shape[0], -1)
    return jnp.concatenate([x, inter] + (list(prompt) if rule_features else []), -1)


def make_seed_data(config, seed: int) -> tuple[dict, dict, dict]:
    """One seed's world, labelled training pairs and gold-ordered held-out pairs."""
    task = config.task
    world = make_world(task, seed)
    rng = np.random.default_rng([seed, 270])
    train = sample_pairs(world, task, config.pairs_per_type, rng, labelled=True)
    n_test_per_type = max(1, config.data.num_test_pairs // task.num_types)
    test = sample_pairs(world, task, n_test_per_type, rng, labelled=False)
    return world, train, test


def bt_rm_features(config, world, x, types):
    """The BT-RM's features of responses x [N, A] to prompts of `types` [N] (with the rule
    features for `bt_rm_rule_features`)."""
    stated = world["hard"]  # the constraints each prompt type states
    asked = (world["weights"] > 0).astype(np.float32)  # the qualities it asks for (not weights)
    prompt = [x * stated[types], x * asked[types]]
    return _bt_features(x, prompt, types, config.task.num_types,
                        config.method == "bt_rm_rule_features")


def merged_rubrics(config, world, train, seed: int) -> tuple[Rubric, dict[str, float]]:
    """Contrastive rubrics of the training pairs, the consistency filter (`rubric_rm`) and the
    per-prompt-type merge: (merged Rubric [T, A] leaves, generator / filter diagnostics)."""
    task, g = config.task, config.generator
    stated = world["hard"]
    asked = (world["weights"] > 0).astype(np.float32)
    rubrics, corrupted = contrastive_rubrics(
        train["chosen"], train["rejected"], stated[train["types"]],
        jax.random.key(seed), miss_rate=g.miss_rate, spurious_rate=g.spurious_rate,
        corrupt_rate=g.corrupt_rate,
        stated_principles=asked[train["types"]] if g.reads_principles else None,
        positive_only=config.positive_criteria)
    if config.method == "rubric_rm":
        keep = consistency_filter(train["chosen"], train["rejected"], rubrics,
                                  gate_penalty=config.rubric.gate_penalty)
    else:
        keep = jnp.ones(len(train["types"]), bool)
    keep_np, corrupted_np = np.asarray(keep), np.asarray(corrupted)
    info = {"kept_fraction": float(keep_np.mean()),
            "corrupted_kept_fraction": float(keep_np[corrupted_np].mean()) if np.any(
                corrupted_np) else 0.0,
            "clean_kept_fraction": float(keep_np[~corrupted_np].mean())}
    merged = aggregate_rubrics(rubrics, train["types"], keep, num_groups=task.num_types,
                               rule_threshold=config.rubric.rule_threshold)
    info["hard_rule_recovery"] = float(np.mean(np.asarray(merged.hard_rules) == stated))
    true_w, est_w = world["weights"].ravel(), np.asarray(merged.principle_weights).ravel()
    info["principle_weight_corr"] = float(np.corrcoef(true_w, est_w)[0, 1])
    return merged, info


def _rubric_of(merged: Rubric, types) -> Rubric:
    return jax.tree.map(lambda leaf: leaf[types], merged)


def _stack(trees: list):
    return jax.tree.map(lambda *xs: jnp.asarray(np.stack(xs)), *trees)


def run_seeds(config: ml_collections.ConfigDict, workdir: str) -> dict[int, dict[str, float]]:
    """Every seed of one variant: the BT-RM weights or the rubric judge's theta of all seeds
    fitted in one program (full-batch Adam, `fit_small`), then each seed's held-out accuracy."""
    method = config.method
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; one of {METHODS}")
    seeds = [int(s) for s in config.seeds]
    per_seed = [make_seed_data(config, s) for s in seeds]
    tr = config.train
    fit_args = dict(tx=optax.adam(tr.learning_rate), num_steps=int(tr.steps), seeds=seeds,
                    per_seed_data=True)
    out = {s: {"num_train_pairs": float(len(train["types"]))} for s, (_, train, _) in
           zip(seeds, per_seed)}
    if method.startswith("bt_rm"):
        data = _stack([{"fc": bt_rm_features(config, world, train["chosen"], train["types"]),
                        "fr": bt_rm_features(config, world, train["rejected"], train["types"])}
                       for world, train, _ in per_seed])

        def loss_fn(w, d):
            return (jnp.mean(bradley_terry_loss(d["fc"] @ w, d["fr"] @ w))
                    + tr.l2 * jnp.sum(w * w))

        fit = fit_small(os.path.join(workdir, "bt_rm"), loss_fn=loss_fn,
                        init_params=jnp.zeros(data["fc"].shape[-1], jnp.float32), data=data,
                        **fit_args)
        margins = []
        for i, (world, _, test) in enumerate(per_seed):  # test sizes differ per seed
            w = fit.seed_params(i)
            margins.append(np.asarray(
                bt_rm_features(config, world, test["chosen"], test["types"]) @ w
                - bt_rm_features(config, world, test["rejected"], test["types"]) @ w))
    else:
        merged = []
        for s, (world, train, _) in zip(seeds, per_seed):
            m, info = merged_rubrics(config, world, train, s)
            merged.append(m)
            out[s].update(info)
        data = _stack([{"chosen": train["chosen"], "rejected": train["rejected"],
                        "rubric": _rubric_of(m, train["types"])}
                       for (_, train, _), m in zip(per_seed, merged)])

        def loss_fn(theta, d):
            logits = rubric_judge_logits(theta, d["chosen"], d["rejected"], d["rubric"])
            return jnp.mean(bradley_terry_loss(logits, jnp.zeros_like(logits)))

        fit = fit_small(os.path.join(workdir, "rubric_judge"), loss_fn=loss_fn,
                        init_params=jnp.ones(2, jnp.float32), data=data, **fit_args)
        margins = []
        for i, ((_, _, test), m) in enumerate(zip(per_seed, merged)):
            theta = fit.seed_params(i)
            out[seeds[i]]["theta_gate"], out[seeds[i]]["theta_principles"] = (
                float(v) for v in theta)
            margins.append(np.asarray(rubric_judge_logits(
                theta, test["chosen"], test["rejected"], _rubric_of(m, test["types"]))))
    for i, (s, margin) in enumerate(zip(seeds, margins)):
        out[s]["final_train_loss"] = float(fit.final_loss[i])
        out[s]["gold_accuracy"] = float(np.mean(np.where(margin > 0, 1.0,
                                                         np.where(margin == 0, 0.5, 0.0))))
    return out


def _present(measured: dict) -> dict:
    """Drops the entries of variants that were not run (NaN), e.g. in the smoke setting."""
    return {k: v for k, v in measured.items() if not np.isnan(v)}


def claims(results) -> list[Claim]:
    acc = {m: metric(results, m, "gold_accuracy") for m in results}
    nan = float("nan")
    n = metric(results, "rubric_rm", "num_train_pairs")
    gain_bt = acc["rubric_rm"] - acc["bt_rm"]
    gain_filter = acc["rubric_rm"] - acc["rubric_rm_nofilter"]
    extra_bt = {"bt_rm_rule_features": acc.get("bt_rm_rule_features", nan),
                "rubric_rm_n50": acc.get("rubric_rm_n50", nan),
                "bt_rm_n50": acc.get("bt_rm_n50", nan)}
    extra_filter = {"filtered_signed": acc.get("rubric_rm_signed", nan),
                    "unfiltered_signed": acc.get("rubric_rm_nofilter_signed", nan),
                    "filtered_n50": acc.get("rubric_rm_n50", nan),
                    "unfiltered_n50": acc.get("rubric_rm_nofilter_n50", nan)}
    return [
        Claim(name="with <= 200 training pairs, Rubric-RM beats a plain BT-RM by >= 5 points of "
                   "gold preference accuracy",
              passed=n <= 200 and gain_bt >= 0.05,
              measured=_present({"rubric_rm": acc["rubric_rm"], "bt_rm": acc["bt_rm"],
                                 "gain": gain_bt, "num_train_pairs": n, **extra_bt}),
              detail=f"Rubric-RM {acc['rubric_rm']:.3f} vs BT-RM {acc['bt_rm']:.3f} "
                     f"({int(n)} training pairs); with 50 pairs "
                     f"{extra_bt['rubric_rm_n50']:.3f} vs {extra_bt['bt_rm_n50']:.3f}"),
        Claim(name="the label-consistency filter adds >= 2 points",
              passed=gain_filter >= 0.02,
              measured=_present({"filtered": acc["rubric_rm"],
                                 "unfiltered": acc["rubric_rm_nofilter"], "gain": gain_filter,
                                 **extra_filter}),
              detail=f"filtered {acc['rubric_rm']:.3f} vs unfiltered "
                     f"{acc['rubric_rm_nofilter']:.3f}; signed criteria "
                     f"{extra_filter['filtered_signed']:.3f} vs "
                     f"{extra_filter['unfiltered_signed']:.3f}"),
    ]


def plots(results, workdir: str) -> list[str]:
    """Held-out gold accuracy per method (mean +- std over seeds)."""
    from alignax.train.plots import plot_variant_bars

    return [plot_variant_bars(
        results, [("gold_accuracy", "held-out gold preference accuracy")],
        os.path.join(workdir, "plots", "open_rubrics.png"),
        title="OpenRubrics: Rubric-RM vs BT-RM (<= 200 pairs)", zoom=True)]
