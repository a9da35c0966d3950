"""ArmoRM: multi-objective ridge heads, verbosity decorrelation and a prompt-conditioned gate.

Paper: Wang et al. 2024, "Interpretable Preferences via Multi-Objective Reward Modeling and
Mixture-of-Experts" (arXiv 2406.12845).

Setting (feature-vector testbed): every (prompt, response) has a frozen embedding. Responses
carry K = 5 gold attributes (four quality attributes and length); length is correlated with the
first attribute (rho = 0.7). Prompts come in 3 types and the true preference weights over the
quality attributes depend on the type (length has true weight 0). The embedding of a response is
a fixed random linear map of its attributes plus nuisance directions and noise; the prompt part
of the embedding identifies the type only up to noise. Training preference labels are
Bradley-Terry draws from the true utility plus a verbosity bias of the annotators (gamma * length),
so a plain preference-trained reward model learns to reward length.

ArmoRM, stage 1: linear heads on the frozen embedding fitted by masked ridge regression to
absolute ratings of the 5 objectives (each rating is missing with probability 1/2); then every
objective is decorrelated from the predicted verbosity on the rating set,
r_k' = r_k - lambda_k r_verb (`alignax.ops.regression`). Stage 2: a gate g(prompt) = softmax(MLP)
and a scale beta are trained with the BT loss on the preference pairs, the heads frozen;
R = beta g(x)^T r'(x, y). Baselines on the same frozen embedding and pairs: a BT linear probe
(the paper's usual reward head), a BT MLP (reported, no claim), and the fixed average of the
decorrelated objectives. Accuracy is measured on held-out pairs against the true preference
(without the verbosity bias); Spearman(score, length) over the held-out responses.

Splits (docs/protocol.md): the embedding maps and type weights are experiment seed s's world;
the rating set and the training pairs, the validation pairs and the test pairs come from the
disjoint data seeds `split_seeds(s)` (3s, 3s+1, 3s+2).

Selection on validation, the same for every trained part (ArmoRM's gate, the BT probe, the BT
MLP): `train.steps` = 600 full-batch AdamW updates with early stopping on the validation pairs'
label accuracy (`fit_small(select=("val_label_accuracy", "max"))`, every 20 updates; the
validation labels are annotated like the training labels, verbosity bias included, no gold),
for each learning rate of `train.learning_rates` = (3e-3, 1e-2); each seed keeps the learning
rate whose early-stopped model is best on validation (`choose_on_validation`; recorded as
`chosen_learning_rate`, `chosen_steps`, `val_label_accuracy`). The previous version trained
every part a fixed 600 steps, the MLP at 0.3x the learning rate, set by hand. The fixed average
trains nothing. The ridge penalty (1.0, negligible at 3000 ratings of 40 features) is not tuned.

Claims (5 seeds, paired over seeds, 95% t intervals, test split):
(1) comparative: ArmoRM - BT linear probe >= 0 gold accuracy;
(2) comparative: ArmoRM - fixed average >= +3 points gold accuracy (BT MLP reported in the
detail);
(3) threshold: |Spearman(score, length)| <= 0.1 for ArmoRM (the decorrelation makes each
objective uncorrelated with the *predicted* length on the rating set; the claim is that this
carries over to the true length on test responses through the prompt-dependent gate);
(4) sanity: |Spearman(score, length)| >= 0.3 for BT (the annotators' verbosity bias is planted
in the labels, so a preference-trained RM rewarding length is by construction).

    alignax run experiments/armorm.py            # full setting, 5 seeds
    alignax run experiments/armorm.py:smoke      # seconds, for the tests

No `:real` config yet. What would run: both stages are functions of frozen embedding arrays, so
the same code applies to a checkpoint's last-token hidden states (the paper's Llama-3 8B
backbone): stage 1's masked ridge heads and verbosity decorrelation on a multi-attribute
ratings dataset (TRL's pointwise rows with a `ratings` list per response, e.g. HelpSteer's five
attributes, one of them the verbosity), stage 2's gate on preference pairs. What is missing:
`make_seed_data` builds the synthetic world (true type weights, the planted verbosity bias, the
gold utility the accuracies are measured against) and `run_seeds` reads its fields throughout;
a :real run needs an embedding pass of the checkpoint over two datasets and a run without a
gold (accuracy against the user's labels). Not done in issue 22's time; `:real` is refused
with this reason.
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
from alignax.losses.reward import bradley_terry_loss
from alignax.models.mlp import MLPConfig, make_mlp
from alignax.ops import spearman
from alignax.ops.regression import decorrelate, decorrelation_coefficients, \
    masked_ridge_regression
from alignax.tasks.splits import choose_on_validation, split_seeds
from alignax.train.small import fit_small

METHODS = ("armorm", "bt", "bt_mlp", "fixed_average")
LENGTH = 4  # index of the length (verbosity) attribute


NO_REAL = ("armorm has no :real config yet: its stages run on frozen embeddings, but the module "
           "builds and measures against a synthetic world (see its docstring)")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    if arg == "real":
        raise ValueError(NO_REAL)
    smoke = is_smoke(arg)
    c = ml_collections.ConfigDict()
    c.seeds = [0] if smoke else [0, 1, 2, 3, 4]
    c.method = "armorm"
    c.variants = {m: {"method": m} for m in METHODS}
    c.task = dict(
        num_types=3, prompt_dim=8, embed_dim=32, nuisance_dim=8, length_corr=0.7,
        prompt_noise=0.3, embed_noise=0.3,
        # true weights over the 4 quality attributes per prompt type (length weight is 0)
        type_weights=[[0.7, 0.1, 0.1, 0.1], [0.1, 0.7, 0.1, 0.1], [0.1, 0.1, 0.1, 0.7]],
        utility_scale=3.0, verbosity_bias=1.0,
        rating_noise=0.3, rating_missing=0.5,
    )
    c.data = dict(num_rated=3000 if not smoke else 400, num_pairs=2000 if not smoke else 200,
                  num_val_pairs=1000 if not smoke else 100,
                  num_eval_pairs=2000 if not smoke else 200)
    c.ridge_l2 = 1.0
    c.gate_hidden = 32
    # every trained part: the same updates, early stopping every `steps_per_log` on validation,
    # the same learning-rate grid (smoke: one learning rate, to keep the test suite's time)
    c.train = dict(steps=600 if not smoke else 50, steps_per_log=20 if not smoke else 25,
                   learning_rates=[1e-2] if smoke else [3e-3, 1e-2], weight_decay=1e-4)
    return c


def make_task(task, seed: int) -> dict:
    """Random embedding maps of the testbed (fixed per seed)."""
    rng = np.random.default_rng(seed)
    k = 5
    return {
        "type_centres": rng.normal(size=(task.num_types, task.prompt_dim)),
        "attr_map": rng.normal(size=(k, task.embed_dim)) / np.sqrt(k),
        "nuisance_map": rng.normal(size=(task.nuisance_dim, task.embed_dim))
        / np.sqrt(task.nuisance_dim),
        "weights": np.asarray(task.type_weights, np.float64),
    }


def sample_responses(task, maps, types: np.ndarray, rng: np.random.Generator) -> dict:
    """Attributes [N, 5] and embeddings [N, Dp + De] of one response per prompt type entry."""
    n = len(types)
    length = rng.normal(size=n)
    attrs = rng.normal(size=(n, 5))
    rho = task.length_corr
    attrs[:, 0] = rho * length + np.sqrt(1 - rho**2) * attrs[:, 0]
    attrs[:, LENGTH] = length
    prompt = maps["type_centres"][types] + task.prompt_noise * rng.normal(
        size=(n, task.prompt_dim))
    embed = (attrs @ maps["attr_map"]
             + rng.normal(size=(n, task.nuisance_dim)) @ maps["nuisance_map"]
             + task.embed_noise * rng.normal(size=(n, task.embed_dim)))
    utility = np.sum(maps["weights"][types] * attrs[:, :4], axis=-1)
    return {"attrs": attrs, "features": np.concatenate([prompt, embed], -1).astype(np.float32),
            "prompt": prompt.astype(np.float32), "utility": utility}


def sample_pairs(task, maps, n: int, rng: np.random.Generator) -> dict:
    """n pairs; both responses share the prompt (its type and prompt embedding)."""
    types = rng.integers(task.num_types, size=n)
    a = sample_responses(task, maps, types, rng)
    b = sample_responses(task, maps, types, rng)
    b["prompt"] = a["prompt"]
    b["features"][:, :task.prompt_dim] = a["prompt"]
    biased = task.utility_scale * (a["utility"] - b["utility"]) + task.verbosity_bias * (
        a["attrs"][:, LENGTH] - b["attrs"][:, LENGTH])
    label = rng.uniform(size=n) < 1.0 / (1.0 + np.exp(-biased))  # True: a preferred
    gold = a["utility"] > b["utility"]
    return {"a": a, "b": b, "label": label, "gold": gold, "types": types}


def _oriented(pairs):
    """(chosen, rejected) features by the training label."""
    lab = pairs["label"][:, None]
    fa, fb = pairs["a"]["features"], pairs["b"]["features"]
    return np.where(lab, fa, fb), np.where(lab, fb, fa)


def make_seed_data(config, seed: int) -> dict:
    """One seed's testbed: the ratings set (stage 1) and training pairs, validation pairs and
    test pairs, each split from its own data seed (`split_seeds`); the maps from `seed`."""
    task = config.task
    maps = make_task(task, seed)
    splits = split_seeds(seed)
    rng = np.random.default_rng(10_000 + splits.train)
    # Stage-1 data: absolute ratings of the 5 objectives, each missing with prob rating_missing.
    rated = sample_responses(task, maps, rng.integers(task.num_types, size=config.data.num_rated),
                             rng)
    ratings = rated["attrs"] + task.rating_noise * rng.normal(size=rated["attrs"].shape)
    rated_mask = rng.uniform(size=ratings.shape) >= task.rating_missing
    ratings = np.where(rated_mask, ratings, np.nan).astype(np.float32)
    train = sample_pairs(task, maps, config.data.num_pairs, rng)
    val = sample_pairs(task, maps, config.data.num_val_pairs,
                       np.random.default_rng(10_000 + splits.validation))
    test = sample_pairs(task, maps, config.data.num_eval_pairs,
                        np.random.default_rng(10_000 + splits.test))
    chosen, rejected = _oriented(train)
    val_chosen, val_rejected = _oriented(val)
    return {"maps": maps, "rated": rated, "ratings": ratings, "rated_mask": rated_mask,
            "chosen": chosen, "rejected": rejected, "val_chosen": val_chosen,
            "val_rejected": val_rejected, "test": test}


def run_seeds(config: ml_collections.ConfigDict, workdir: str) -> dict[int, dict[str, float]]:
    """Every seed of one method: stage 1 in closed form per seed, the trained parts (gate, BT
    probe, BT MLP) for all seeds in one `fit_small` program, then the held-out metrics."""
    method = config.method
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; one of {METHODS}")
    seeds = [int(s) for s in config.seeds]
    task = config.task
    dp = task.prompt_dim
    d = dp + task.embed_dim
    k = 5
    per_seed = [make_seed_data(config, s) for s in seeds]
    out: dict[int, dict[str, float]] = {s: {} for s in seeds}

    def stack(get):
        return jnp.asarray(np.stack([get(p) for p in per_seed]))

    chosen, rejected = stack(lambda p: p["chosen"]), stack(lambda p: p["rejected"])
    val_chosen = stack(lambda p: p["val_chosen"])
    val_rejected = stack(lambda p: p["val_rejected"])
    test_a = stack(lambda p: p["test"]["a"]["features"])  # [S, M, D]
    test_b = stack(lambda p: p["test"]["b"]["features"])
    tc = config.train

    def fit(name, loss_fn, init_params, data, val, score_fn):
        """For each learning rate: early stopping on the validation label accuracy of
        score_fn(params, features); then per seed the learning rate best on validation.
        Returns (params [S, ...], final loss [S])."""
        def val_metrics(params, v):
            hits = score_fn(params, v["chosen"]) > score_fn(params, v["rejected"])
            return {"val_label_accuracy": jnp.mean(hits.astype(jnp.float32))}

        fits = {}
        for lr in tc.learning_rates:
            fits[f"lr={float(lr):g}"] = (float(lr), fit_small(
                os.path.join(workdir, name, f"lr={float(lr):g}"), loss_fn=loss_fn,
                init_params=init_params,
                tx=optax.adamw(float(lr), weight_decay=float(tc.weight_decay)),
                num_steps=int(tc.steps), data=data, seeds=seeds, per_seed_data=True,
                eval_fn=val_metrics, eval_data=val, select=("val_label_accuracy", "max"),
                steps_per_log=int(tc.steps_per_log)))
        chosen_params, final_loss = [], []
        for i, s in enumerate(seeds):
            name_i, _ = choose_on_validation(fits, lambda f, i=i: float(f[1].best_score[i]))
            lr, res = fits[name_i]
            chosen_params.append(jax.tree.map(lambda x, i=i: x[i], res.best_params))
            final_loss.append(float(res.final_loss[i]))
            out[s].update(chosen_learning_rate=lr, chosen_steps=float(res.best_step[i]),
                          val_label_accuracy=float(res.best_score[i]))
        return jax.tree.map(lambda *xs: jnp.stack(xs), *chosen_params), final_loss

    if method in ("armorm", "fixed_average"):
        @jax.jit
        def stage1(features, targets, mask):
            w, b = masked_ridge_regression(features, targets, mask, l2=config.ridge_l2)
            objectives = features @ w + b
            lam = decorrelation_coefficients(objectives, objectives[:, LENGTH])
            return w, b, lam, objectives, decorrelate(objectives, objectives[:, LENGTH], lam)

        heads = []
        for s, p in zip(seeds, per_seed):
            rated, rated_mask = p["rated"], p["rated_mask"]
            w, b, lam, objectives, r_ref = stage1(rated["features"], p["ratings"], rated_mask)
            heads.append({"w": w, "b": b, "lam": lam})
            corr = np.array([np.corrcoef(np.asarray(r_ref[:, j]),
                                         np.asarray(objectives[:, LENGTH]))[0, 1]
                             for j in range(4)])
            out[s]["max_abs_corr_after_decorrelation"] = float(np.max(np.abs(corr)))
            head_pred = np.asarray(objectives)
            for j, name in enumerate(("help", "correct", "safe", "coherent", "length")):
                ok = rated_mask[:, j]
                out[s][f"head_r2_{name}"] = float(
                    1 - np.mean((head_pred[ok, j] - rated["attrs"][ok, j]) ** 2)
                    / np.var(rated["attrs"][ok, j]))
        heads = jax.tree.map(lambda *xs: jnp.stack(xs), *heads)  # [S, ...]

        def rewards(head, features):  # decorrelated objectives r' [N, K]
            r = features @ head["w"] + head["b"]
            return decorrelate(r, r[:, LENGTH], head["lam"])

        if method == "armorm":
            gate = make_mlp(MLPConfig(in_dim=dp, hidden=(config.gate_hidden,), out_dim=k,
                                      activation="relu"))

            def score_fn(params, prompt, r):
                g = jax.nn.softmax(gate.apply(params["gate"], prompt), axis=-1)
                return jnp.exp(params["log_beta"]) * jnp.sum(g * r, axis=-1)

            def loss_fn(params, batch):
                return jnp.mean(bradley_terry_loss(
                    score_fn(params, batch["prompt"], batch["chosen"]),
                    score_fn(params, batch["prompt"], batch["rejected"])))

            batched_rewards = jax.jit(jax.vmap(rewards))
            data = {"prompt": chosen[..., :dp], "chosen": batched_rewards(heads, chosen),
                    "rejected": batched_rewards(heads, rejected)}
            # validation: the frozen heads' objectives and the prompt, one array [N, Dp + K]
            val = {"chosen": jnp.concatenate([val_chosen[..., :dp],
                                              batched_rewards(heads, val_chosen)], -1),
                   "rejected": jnp.concatenate([val_rejected[..., :dp],
                                                batched_rewards(heads, val_rejected)], -1)}
            params, final_loss = fit(
                "gate", loss_fn, lambda key: {"gate": gate.init(key),
                                              "log_beta": jnp.log(jnp.float32(5.0))},
                data, val, lambda prm, x: score_fn(prm, x[:, :dp], x[:, dp:]))
            state = {"params": params, "head": heads}

            def score(st, features):
                return score_fn(st["params"], features[:, :dp], rewards(st["head"], features))

            gates = np.asarray(jax.jit(jax.vmap(
                lambda p, x: jax.nn.softmax(gate.apply(p, x), -1)))(
                params["gate"], test_a[..., :dp]))  # [S, M, K]
            for i, (s, p) in enumerate(zip(seeds, per_seed)):
                # the decorrelated verbosity objective is ~0, so the gate can park mass on it to
                # set the overall scale; interpretability is read off the quality objectives
                out[s]["gate_mass_verbosity"] = float(gates[i, :, LENGTH].mean())
                top = [int(np.argmax(gates[i][p["test"]["types"] == t, :LENGTH].mean(0)))
                       for t in range(task.num_types)]
                true_top = np.argmax(p["maps"]["weights"], axis=-1)
                out[s]["gate_top_objective_match"] = float(np.mean(np.array(top) == true_top))
                out[s]["beta"] = float(jnp.exp(params["log_beta"][i]))
                out[s]["final_train_loss"] = final_loss[i]
        else:
            state = heads

            def score(head, features):
                return jnp.mean(rewards(head, features), axis=-1)
    elif method == "bt":
        def score(params, features):
            return features @ params["w"]

        def loss_fn(params, batch):
            return jnp.mean(bradley_terry_loss(score(params, batch["chosen"]),
                                               score(params, batch["rejected"])))

        state, final_loss = fit("linear_probe", loss_fn, {"w": jnp.zeros((d,), jnp.float32)},
                                {"chosen": chosen, "rejected": rejected},
                                {"chosen": val_chosen, "rejected": val_rejected}, score)
    else:  # bt_mlp
        mlp = make_mlp(MLPConfig(in_dim=d, hidden=(64, 64), out_dim=1, activation="gelu"))
        score = mlp.apply

        def loss_fn(params, batch):
            return jnp.mean(bradley_terry_loss(mlp.apply(params, batch["chosen"]),
                                               mlp.apply(params, batch["rejected"])))

        state, final_loss = fit("mlp", loss_fn, mlp.init, {"chosen": chosen, "rejected": rejected},
                                {"chosen": val_chosen, "rejected": val_rejected}, score)
    if method in ("bt", "bt_mlp"):
        for i, s in enumerate(seeds):
            out[s]["final_train_loss"] = final_loss[i]

    evaluate = jax.jit(jax.vmap(score))
    all_sa, all_sb = np.asarray(evaluate(state, test_a)), np.asarray(evaluate(state, test_b))
    for i, (s, p) in enumerate(zip(seeds, per_seed)):
        test, sa, sb = p["test"], all_sa[i], all_sb[i]
        o = out[s]
        o["test_gold_accuracy"] = float(np.mean((sa > sb) == test["gold"]))
        o["test_label_accuracy"] = float(np.mean((sa > sb) == test["label"]))
        scores = np.concatenate([sa, sb])
        lengths = np.concatenate([test["a"]["attrs"][:, LENGTH], test["b"]["attrs"][:, LENGTH]])
        o["test_spearman_length"] = float(spearman(scores, lengths))
        o["test_abs_spearman_length"] = abs(o["test_spearman_length"])
        utility = np.concatenate([test["a"]["utility"], test["b"]["utility"]])
        o["test_spearman_gold"] = float(spearman(scores, utility))
    return out


def claims(results) -> list[protocol.Claim]:
    def mean(m, name):
        return results[m]["metrics"][name]["mean"]

    acc = {m: mean(m, "test_gold_accuracy") for m in METHODS}
    table = ", ".join(f"{m} {v:.3f}" for m, v in acc.items())
    sp_bt = protocol.per_seed(results, "bt", "test_abs_spearman_length")
    return [
        protocol.compare(
            "ArmoRM's test gold accuracy is >= the BT linear probe's", results,
            ("armorm", "test_gold_accuracy"), ("bt", "test_gold_accuracy"), at_least=0.0,
            detail=f"test gold accuracy: {table}"),
        protocol.compare(
            "ArmoRM's test gold accuracy is >= the fixed average of the objectives + 3 points",
            results, ("armorm", "test_gold_accuracy"), ("fixed_average", "test_gold_accuracy"),
            at_least=0.03, detail=f"test gold accuracy: {table}"),
        protocol.threshold(
            "verbosity decorrelation: |Spearman(score, length)| <= 0.1 for ArmoRM on test "
            "responses", results, ("armorm", "test_abs_spearman_length"), at_most=0.1,
            detail="decorrelated against the predicted length on the rating set; measured "
                   "against the true length on test; BT "
                   f"{mean('bt', 'test_abs_spearman_length'):.3f}"),
        protocol.sanity(
            "|Spearman(score, length)| >= 0.3 for BT (on every seed)", min(sp_bt.values()) >= 0.3,
            {"bt_mean": float(np.mean(list(sp_bt.values()))),
             "bt_min_over_seeds": min(sp_bt.values()),
             "bt_mlp_mean": mean("bt_mlp", "test_abs_spearman_length")},
            "the annotators' verbosity bias is planted in the labels"),
    ]


def plots(results, workdir: str) -> list[str]:
    """Held-out gold accuracy and |Spearman(score, length)| per method (mean +- std over seeds)."""
    from alignax.train.plots import plot_variant_bars

    return [plot_variant_bars(results, [("test_gold_accuracy", "test gold pair accuracy"),
                                        ("test_abs_spearman_length", "|Spearman(score, length)|")],
                              os.path.join(workdir, "plots", "armorm.png"),
                              title="ArmoRM vs BT and fixed average (frozen features)")]
