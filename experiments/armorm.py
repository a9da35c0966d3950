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

`:real` runs both stages on a Hugging Face causal LM (`model.path`, frozen: the paper's
Llama-3 8B backbone) and two datasets: `data.path`, pointwise ratings (TRL's rows `prompt`,
`response`, `ratings` = {attribute: number}, e.g. HelpSteer's helpfulness, correctness,
coherence, complexity, verbosity; a missing or null attribute is unrated; with
`data.attributes` set, a row without `ratings` reads those columns), and `data.pairs_path`,
preference pairs in a TRL paired format. Every row is rendered with the checkpoint's chat
template (string rows as a one-turn conversation, `data.chat_template`) and embedded as the
final hidden state at its last token (`alignax.eval.embeddings.sequence_embeddings`,
pool="last"); the gate's input is the prompt's embedding (the hidden state at the prompt's
last token, the paper's gating input). Each dataset is split by `real.held_out_split` into
train / validation / test rows. Stage 1: the same masked ridge heads, one per attribute, fitted
on the training ratings for each l2 of `armorm.ridge_l2s`; each attribute keeps the l2 of
lowest validation MSE (`selection.json`). Verbosity decorrelation against the head of
`armorm.verbosity_attribute` (lambda on the training pairs' responses, the paper's reference
distribution, or on the training ratings: `armorm.decorrelation_reference`; "" = none,
reported as `decorrelated` = 0). Stage 2: the same gate and beta (MLP `armorm.gate_hidden`,
beta from `armorm.beta_init`), BT on the training pairs through `fit_small`, steps and
learning rate chosen on the validation pairs' accuracy as in the toy. Test metrics: per
attribute the heads' RMSE and Pearson correlation with the ratings (`test_rmse_*`,
`test_corr_*`), the chosen l2s, each head's correlation with the verbosity score on the test
pairs' responses before and after decorrelation, and the pair accuracy of the gated score
(`test_accuracy_armorm`), of the mean of the decorrelated objectives (the toy's fixed
average) and of the best single objective (chosen on validation; the decorrelated verbosity
objective is no candidate), with the gate's mean weights and Spearman(score, response length).
A user's data has no gold utility: metrics only, no claim evaluated.

    alignax run experiments/armorm.py:real --config.model.path=/ckpt \
        --config.data.path=/ratings --config.data.pairs_path=/pairs \
        --config.armorm.verbosity_attribute=verbosity
"""

from __future__ import annotations

import functools
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from alignax import protocol
from alignax.algorithms import real
from alignax.losses.reward import bradley_terry_loss
from alignax.models.mlp import MLPConfig, make_mlp
from alignax.ops import spearman
from alignax.ops.regression import decorrelate, decorrelation_coefficients, \
    masked_ridge_regression
from alignax.tasks.splits import choose_on_validation, split_seeds
from alignax.train.small import fit_small

METHODS = ("armorm", "bt", "bt_mlp", "fixed_average")
LENGTH = 4  # index of the length (verbosity) attribute
REFERENCES = ("pairs", "ratings")  # :real, armorm.decorrelation_reference


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    mode = real.config_mode(arg)
    if mode == "real":
        return _real_config()
    smoke = mode == "smoke"
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


def _real_config() -> ml_collections.ConfigDict:
    """`:real` (module docstring): the checkpoint, the ratings and pairs datasets, the grids."""
    c = ml_collections.ConfigDict()
    c.seeds = [0]  # the gate's init; several seeds train as one vmapped program
    # data.path: the ratings; data.pairs_path: the pairs; data.attributes: the K rating
    # attributes in order ([] = every key of the rows' `ratings`, in order of appearance; with
    # rows that have no `ratings`, these columns, e.g. HelpSteer's); data.chat_template: string
    # rows become one-turn conversations rendered with the checkpoint's chat template
    real.add_real_fields(c, max_length=1024, pairs_path="", pairs_split="train", attributes=[],
                         chat_template=True)
    # decorrelation_reference: the responses lambda is fitted on ("pairs": the training pairs'
    # responses, the paper's reference distribution; "ratings": the training rating rows)
    c.armorm = dict(verbosity_attribute="verbosity",
                    ridge_l2s=[0.01, 0.1, 1.0, 10.0, 100.0, 1000.0],
                    decorrelation_reference="pairs", gate_hidden=[256, 256], beta_init=5.0)
    c.train = dict(steps=1000, steps_per_log=50, learning_rates=[1e-3, 3e-3], weight_decay=1e-4)
    return c


def validate(config: ml_collections.ConfigDict) -> None:
    """The `:real` keys, before any work (`alignax run` calls it); the toy needs nothing."""
    from alignax.data.tokenize import check_truncation_mode

    if not real.is_real(config):
        return
    real.require(config, "model.path", "data.path", "data.pairs_path", what={
        "data.path": "an HF dataset of pointwise ratings: prompt, response, ratings",
        "data.pairs_path": "an HF dataset of preference pairs in a TRL format"})
    check_truncation_mode(config.data.truncation_mode)
    a, tc = config.armorm, config.train
    if not a.ridge_l2s or not all(_number(x) and x > 0 for x in a.ridge_l2s):
        raise ValueError(f"armorm.ridge_l2s={list(a.ridge_l2s)!r} must be a non-empty list of "
                         f"numbers > 0")
    if a.decorrelation_reference not in REFERENCES:
        raise ValueError(f"armorm.decorrelation_reference={a.decorrelation_reference!r} must be "
                         f"one of {REFERENCES}")
    if not all(_number(h) and int(h) == h and h > 0 for h in a.gate_hidden):
        raise ValueError(f"armorm.gate_hidden={list(a.gate_hidden)!r} must be ints > 0")
    if not (_number(a.beta_init) and a.beta_init > 0):
        raise ValueError(f"armorm.beta_init={a.beta_init!r} must be a number > 0")
    if not tc.learning_rates or not all(_number(x) and x > 0 for x in tc.learning_rates):
        raise ValueError(f"train.learning_rates={list(tc.learning_rates)!r} must be a "
                         f"non-empty list of numbers > 0")
    if isinstance(tc.steps_per_log, bool) or not int(tc.steps_per_log) >= 1:
        raise ValueError(f"train.steps_per_log={tc.steps_per_log!r} must be an int >= 1")


def _number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and np.isfinite(x)


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


def ridge_heads(features, targets, mask, *, l2: float) -> dict:
    """Stage 1: K linear heads on frozen embeddings by masked ridge regression.

    Features x [N, D], ratings y [N, K] (unrated entries never read, e.g. NaN), mask [N, K]
    (1 = rated); per objective k, min_w sum_i m_ik (y_ik - x_i^T w_k - b_k)^2 + l2 |w_k|^2
    (`alignax.ops.regression.masked_ridge_regression`). Returns {"w": [D, K], "b": [K]}.
    """
    w, b = masked_ridge_regression(features, targets, mask, l2=l2)
    return {"w": w, "b": b}


def objective_scores(head, features):
    """r = x W + b: the K objective scores [N, K] of embeddings [N, D] under `head`."""
    return features @ head["w"] + head["b"]


def verbosity_coefficients(scores, verbosity: int):
    """lambda_k = Cov(r_k, r_v) / Var(r_v) [K] on reference scores [N, K], v = `verbosity`:
    r_k - lambda_k r_v is uncorrelated with r_v on the reference set (ArmoRM's verbosity
    penalty; `alignax.ops.regression.decorrelation_coefficients`; lambda_v = 1)."""
    return decorrelation_coefficients(scores, scores[:, verbosity])


def head_rewards(head, features, verbosity: int | None):
    """The objectives the gate mixes, [N, K]: r' = r - r_v lambda^T with `head["lam"]` [K]
    (`verbosity` None: r itself, no decorrelation)."""
    r = objective_scores(head, features)
    if verbosity is None:
        return r
    return decorrelate(r, r[:, verbosity], head["lam"])


def gated_score(gate, params, prompt, rewards):
    """ArmoRM's stage-2 score R = beta g(x)^T r'(x, y), g(x) = softmax(MLP(e(x))) over the K
    objectives, beta = exp(params["log_beta"]) learned (Wang et al. 2024, Sec. 3.2).

    Args:
      gate: the MLP (`make_mlp`, in_dim = prompt dim, out_dim = K).
      params: {"gate": MLP params, "log_beta": []}.
      prompt: [N, Dp] prompt embeddings e(x).
      rewards: [N, K] objectives r'(x, y).

    Returns:
      [N] scores.
    """
    g = jax.nn.softmax(gate.apply(params["gate"], prompt), axis=-1)
    return jnp.exp(params["log_beta"]) * jnp.sum(g * rewards, axis=-1)


def gate_bt_loss(gate, params, batch):
    """Mean Bradley-Terry loss -log sigmoid(R(x, y_c) - R(x, y_r)) of `gated_score` over a
    batch {"prompt": [N, Dp], "chosen": [N, K], "rejected": [N, K]} (heads frozen)."""
    return jnp.mean(bradley_terry_loss(
        gated_score(gate, params, batch["prompt"], batch["chosen"]),
        gated_score(gate, params, batch["prompt"], batch["rejected"])))


def fit_on_validation(workdir: str, *, loss_fn, init_params, data, val, score_fn, seeds,
                      train, per_seed_data: bool):
    """Trains with `fit_small` for each learning rate of `train.learning_rates`, early stopping
    on the validation label accuracy mean(score_fn(p, val["chosen"]) > score_fn(p,
    val["rejected"])) every `train.steps_per_log` of `train.steps` full-batch AdamW updates;
    then per seed the learning rate whose early-stopped params are best on validation
    (`choose_on_validation`, ties to the earlier).

    Args:
      workdir: one `fit_small` run folder per learning rate below it.
      loss_fn, init_params: `fit_small`'s.
      data, val: the training batch and the validation pairs (leaves [S, ...] with
        `per_seed_data`, else shared by every seed).
      score_fn: (params, val rows [M, ...]) -> [M] scores.
      seeds: the S seeds, vmapped in one program.
      train: {steps, steps_per_log, learning_rates, weight_decay}.
      per_seed_data: see `data`.

    Returns:
      (params, leaves [S, ...]; final training loss per seed [S]; per seed {chosen_learning_rate,
      chosen_steps, val_label_accuracy}).
    """
    def val_metrics(params, v):
        hits = score_fn(params, v["chosen"]) > score_fn(params, v["rejected"])
        return {"val_label_accuracy": jnp.mean(hits.astype(jnp.float32))}

    fits = {}
    for lr in train.learning_rates:
        fits[f"lr={float(lr):g}"] = (float(lr), fit_small(
            os.path.join(workdir, f"lr={float(lr):g}"), loss_fn=loss_fn,
            init_params=init_params,
            tx=optax.adamw(float(lr), weight_decay=float(train.weight_decay)),
            num_steps=int(train.steps), data=data, seeds=seeds, per_seed_data=per_seed_data,
            eval_fn=val_metrics, eval_data=val, select=("val_label_accuracy", "max"),
            steps_per_log=int(train.steps_per_log)))
    chosen_params, final_loss, records = [], [], []
    for i, _ in enumerate(seeds):
        name_i, _ = choose_on_validation(fits, lambda f, i=i: float(f[1].best_score[i]))
        lr, res = fits[name_i]
        chosen_params.append(jax.tree.map(lambda x, i=i: x[i], res.best_params))
        final_loss.append(float(res.final_loss[i]))
        records.append(dict(chosen_learning_rate=lr, chosen_steps=float(res.best_step[i]),
                            val_label_accuracy=float(res.best_score[i])))
    return jax.tree.map(lambda *xs: jnp.stack(xs), *chosen_params), final_loss, records


def run_seeds(config: ml_collections.ConfigDict, workdir: str) -> dict[int, dict[str, float]]:
    """Every seed of one method: stage 1 in closed form per seed, the trained parts (gate, BT
    probe, BT MLP) for all seeds in one `fit_small` program, then the held-out metrics.
    `:real`: `_run_real`."""
    if real.is_real(config):
        return _run_real(config, workdir)
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
        """`fit_on_validation` of every seed (rows of `data` / `val`); the choices go to `out`.
        Returns (params [S, ...], final loss [S])."""
        params, final_loss, records = fit_on_validation(
            os.path.join(workdir, name), loss_fn=loss_fn, init_params=init_params, data=data,
            val=val, score_fn=score_fn, seeds=seeds, train=tc, per_seed_data=True)
        for s, record in zip(seeds, records):
            out[s].update(record)
        return params, final_loss

    if method in ("armorm", "fixed_average"):
        @jax.jit
        def stage1(features, targets, mask):
            head = ridge_heads(features, targets, mask, l2=config.ridge_l2)
            objectives = objective_scores(head, features)
            lam = verbosity_coefficients(objectives, LENGTH)
            return (head["w"], head["b"], lam, objectives,
                    decorrelate(objectives, objectives[:, LENGTH], lam))

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

        rewards = functools.partial(head_rewards, verbosity=LENGTH)  # r' [N, K]

        if method == "armorm":
            gate = make_mlp(MLPConfig(in_dim=dp, hidden=(config.gate_hidden,), out_dim=k,
                                      activation="relu"))

            score_fn = functools.partial(gated_score, gate)
            loss_fn = functools.partial(gate_bt_loss, gate)

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


# ----------------------------------------------------------------------------------------------
# :real: the same two stages on a checkpoint's embeddings of a user's ratings and pairs


class _RatingRows:
    """A dataset view for the pointwise reader: a `ratings` attribute that is null (Arrow's
    fill for a key a row's struct does not have) is unrated and left out; a row without
    `rating`/`ratings` takes its ratings from the `columns` (e.g. HelpSteer's one column per
    attribute), the null ones left out."""

    def __init__(self, dataset, columns):
        self._dataset, self._columns = dataset, [str(c) for c in columns]

    def __len__(self) -> int:
        return len(self._dataset)

    def __getitem__(self, index: int) -> dict:
        row = dict(self._dataset[int(index)])
        ratings = row.get("ratings")
        if isinstance(ratings, dict):
            row["ratings"] = {k: v for k, v in ratings.items() if v is not None}
        elif ratings is None and row.get("rating") is None and self._columns:
            row["ratings"] = {c: row.pop(c) for c in self._columns if row.get(c) is not None}
        return row


def _render(record, tok, config):
    """A (prompt, response) or a pair -> `tokenize_pair` arrays; string rows as one-turn
    conversations (`as_conversation`) when `data.chat_template`, so that every row is rendered
    with the checkpoint's chat template (a tokenizer without one: `[bos] prompt response
    eos`)."""
    from alignax.data import PreferenceRecord, as_conversation
    from alignax.data.tokenize import tokenize_pair

    if not isinstance(record, PreferenceRecord):  # a rating: the response on both sides
        record = PreferenceRecord(record.prompt, record.response, record.response, {})
    if config.data.chat_template:
        record = as_conversation(record)
    return tokenize_pair(record, tok, max_length=int(config.data.max_length),
                         truncation_mode=config.data.truncation_mode)


def rating_data(config, tok) -> dict:
    """The ratings dataset `data.path`: tokenised (prompt, response) rows and their ratings.

    Returns:
      {"ids", "mask": [N, T] (the rendered prompt + response), "targets": [N, K] float32 (NaN
      where unrated), "rated": [N, K] bool, "attributes": the K names}.

    Raises:
      DataError: a row that is not a rating row, or bad (`<dataset>:<index>: field ...`).
      ValueError: an attribute of `data.attributes` that no row rates.
    """
    from alignax.data import HFSource, RatingRecord, load_hf_dataset

    data = load_hf_dataset(config.data.path, split=config.data.split or None)
    name = os.path.basename(os.path.normpath(str(config.data.path)))
    source = HFSource(_RatingRows(data, config.data.attributes),
                      functools.partial(_render, tok=tok, config=config), name=name,
                      kinds=(RatingRecord,))
    records = [source.record(i) for i in range(len(source))]
    attributes = [str(a) for a in config.data.attributes] or list(
        dict.fromkeys(k for r in records for k in r.ratings))
    for attr in attributes:
        if not any(attr in r.ratings for r in records):
            raise ValueError(f"data.attributes: no row of {name} rates {attr!r}")
    targets = np.array([[r.ratings.get(a, np.nan) for a in attributes] for r in records],
                       np.float32)
    rows = real.stack([source[i] for i in range(len(source))])
    return {"ids": rows["chosen_ids"], "mask": rows["chosen_mask"], "targets": targets,
            "rated": ~np.isnan(targets), "attributes": attributes}


def pair_data(config, tok) -> dict:
    """The pairs dataset `data.pairs_path`, tokenised: `tokenize_pair`'s arrays [N, T] and
    "prompt_mask" [N, T], the chosen row's prompt tokens (the prompt both sides share)."""
    from alignax.data import HFSource, PreferenceRecord, load_hf_dataset

    data = load_hf_dataset(config.data.pairs_path, split=config.data.pairs_split or None)
    name = os.path.basename(os.path.normpath(str(config.data.pairs_path)))
    source = HFSource(data, functools.partial(_render, tok=tok, config=config), name=name,
                      kinds=(PreferenceRecord,))
    rows = real.stack([source[i] for i in range(len(source))])
    rows["prompt_mask"] = rows["chosen_mask"] * (1 - rows["chosen_response_mask"])
    return rows


def metric_names(attributes) -> list[str]:
    """Attribute names as metric-name parts (lower case, runs of other characters -> "_").

    Raises:
      ValueError: two attributes with the same name part.
    """
    import re

    names = [re.sub(r"[^0-9a-z]+", "_", str(a).lower()).strip("_") or f"attribute{i}"
             for i, a in enumerate(attributes)]
    if len(set(names)) != len(names):
        raise ValueError(f"data.attributes {list(attributes)} give clashing metric names "
                         f"{names}")
    return names


@functools.partial(jax.jit, static_argnames=("l2s",))
def _ridge_grid(features, targets, mask, l2s):
    """`ridge_heads` for each l2 of `l2s`: {"w": [L, D, K], "b": [L, K]} (one program)."""
    heads = [ridge_heads(features, targets, mask, l2=l2) for l2 in l2s]
    return jax.tree.map(lambda *xs: jnp.stack(xs), *heads)


def _masked_mse(pred, targets, rated):
    """Per-column mean squared error over the rated entries: [..., N, K] -> [..., K] (NaN for a
    column without rated rows)."""
    sq = np.where(rated, (pred - np.nan_to_num(targets)) ** 2, 0.0)
    count = rated.sum(-2)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, sq.sum(-2) / np.maximum(count, 1), np.nan)


def _pearson(a, b) -> float:
    """Pearson correlation of two [N] arrays (NaN with N < 2 or a constant one)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if len(a) < 2 or a.std() == 0 or b.std() == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


def _pair_accuracy(chosen, rejected) -> float:
    """Share of pairs scored chosen > rejected, a tie counting 1/2."""
    chosen, rejected = np.asarray(chosen), np.asarray(rejected)
    return float(np.mean((chosen > rejected) + 0.5 * (chosen == rejected)))


def _run_real(config, workdir: str) -> dict[int, dict[str, float]]:
    """`:real` (module docstring): stage 1 on the ratings, stage 2 on the pairs, test metrics."""
    import json

    from alignax.algorithms import pretrained
    from alignax.eval.embeddings import sequence_embeddings
    from alignax.train.sharding import mesh_from_config

    seeds = [int(s) for s in config.seeds]
    a = config.armorm
    tok = real.tokenizer(config)
    rated = rating_data(config, tok)
    attributes = rated["attributes"]
    names = metric_names(attributes)
    k = len(attributes)
    if a.verbosity_attribute and a.verbosity_attribute not in attributes:
        raise ValueError(f"armorm.verbosity_attribute={a.verbosity_attribute!r} is not an "
                         f"attribute of data.path ({attributes}); name one, or '' for no "
                         f"decorrelation")
    verbosity = attributes.index(a.verbosity_attribute) if a.verbosity_attribute else None
    if verbosity is not None and k < 2:
        raise ValueError(f"data.path rates only {attributes}: the gate needs an attribute "
                         f"besides armorm.verbosity_attribute")
    pairs = pair_data(config, tok)
    fraction, cap = config.data.eval_fraction, config.data.max_eval_rows
    r_train, r_val, r_test = real.held_out_split(len(rated["ids"]), fraction, cap)
    p_train, p_val, p_test = real.held_out_split(len(pairs["chosen_ids"]), fraction, cap)
    for attr, n_train, n_val in zip(attributes, rated["rated"][r_train].sum(0),
                                    rated["rated"][r_val].sum(0)):
        if not (n_train and n_val):
            raise ValueError(f"attribute {attr!r} of data.path has {n_train} rated training "
                             f"and {n_val} rated validation rows; stage 1 needs both (raise "
                             f"data.eval_fraction or data.max_eval_rows, or leave it out of "
                             f"data.attributes)")

    mesh = mesh_from_config(real.mesh_config(config))
    model, params = pretrained.load_pretrained(real.model_config(config), "lm", mesh=mesh)

    def embed(ids, mask):  # frozen e(.) [N, D]: the final hidden state at the last valid token
        chunk = int(config.data.eval_batch_size) or len(ids)
        return sequence_embeddings(model, params, ids, mask, pool="last", batch_size=chunk)

    e_rated = embed(rated["ids"], rated["mask"])
    e_chosen = embed(pairs["chosen_ids"], pairs["chosen_mask"])
    e_rejected = embed(pairs["rejected_ids"], pairs["rejected_mask"])
    e_prompt = embed(pairs["chosen_ids"], pairs["prompt_mask"])  # = the prompt alone (causal)

    # stage 1: ridge heads per l2 on the training ratings; per attribute the l2 of lowest
    # validation MSE
    l2s = tuple(float(x) for x in a.ridge_l2s)
    targets, mask = rated["targets"], rated["rated"]
    grid = _ridge_grid(jnp.asarray(e_rated[r_train]), jnp.asarray(targets[r_train]),
                       jnp.asarray(mask[r_train]), l2s)
    w_grid, b_grid = np.asarray(grid["w"]), np.asarray(grid["b"])
    val_mse = _masked_mse(e_rated[r_val] @ w_grid + b_grid[:, None], targets[r_val],
                          mask[r_val])  # [L, K]
    metrics: dict[str, float] = {"decorrelated": float(verbosity is not None)}
    selection = {}
    chosen = []
    for j, name in enumerate(names):
        cands = {f"l2={l2:g}": i for i, l2 in enumerate(l2s)}
        best, record = choose_on_validation(cands, lambda i, j=j: val_mse[i, j], maximize=False)
        chosen.append(cands[best])
        selection[f"ridge_l2_{name}"] = record
        metrics[f"chosen_l2_{name}"] = l2s[cands[best]]
        metrics[f"val_mse_{name}"] = float(val_mse[cands[best], j])
    head = {"w": jnp.asarray(np.stack([w_grid[c, :, j] for j, c in enumerate(chosen)], 1)),
            "b": jnp.asarray(np.array([b_grid[c, j] for j, c in enumerate(chosen)]))}
    pred = np.asarray(objective_scores(head, jnp.asarray(e_rated[r_test])))
    test_mse = _masked_mse(pred, targets[r_test], mask[r_test])
    for j, name in enumerate(names):
        ok = mask[r_test, j]
        metrics[f"test_rmse_{name}"] = float(np.sqrt(test_mse[j]))
        metrics[f"test_corr_{name}"] = _pearson(pred[ok, j], targets[r_test][ok, j])
        metrics[f"num_rated_train_{name}"] = float(mask[r_train, j].sum())

    # verbosity decorrelation: lambda on the reference responses' scores
    if a.decorrelation_reference == "pairs":
        reference = np.concatenate([e_chosen[p_train], e_rejected[p_train]])
    else:
        reference = e_rated[r_train]
    if verbosity is None:
        head["lam"] = jnp.zeros((k,), jnp.float32)
    else:
        head["lam"] = verbosity_coefficients(objective_scores(head, jnp.asarray(reference)),
                                             verbosity)
        for j, name in enumerate(names):
            metrics[f"decorrelation_lambda_{name}"] = float(head["lam"][j])

    def experts(e):  # the objectives the gate mixes, r' [N, K], host
        return np.asarray(head_rewards(head, jnp.asarray(e), verbosity))

    r_chosen, r_rejected = experts(e_chosen), experts(e_rejected)
    test_rows = np.concatenate([e_chosen[p_test], e_rejected[p_test]])
    if verbosity is not None:  # correlation with the verbosity score, test pair responses
        raw, after = np.asarray(objective_scores(head, jnp.asarray(test_rows))), experts(test_rows)
        for j, name in enumerate(names):
            if j != verbosity:
                metrics[f"test_corr_verbosity_before_{name}"] = _pearson(raw[:, j],
                                                                         raw[:, verbosity])
                metrics[f"test_corr_verbosity_after_{name}"] = _pearson(after[:, j],
                                                                        raw[:, verbosity])
        raw_c = np.asarray(objective_scores(head, jnp.asarray(e_chosen[p_test])))
        raw_r = np.asarray(objective_scores(head, jnp.asarray(e_rejected[p_test])))
        metrics["test_accuracy_verbosity_head"] = _pair_accuracy(raw_c[:, verbosity],
                                                                 raw_r[:, verbosity])

    # baselines without training: the mean of the objectives, and the single objective best on
    # the validation pairs (the gate's experts; the decorrelated verbosity one, ~0, left out)
    lengths = np.concatenate([pairs["chosen_response_mask"][p_test].sum(-1),
                              pairs["rejected_response_mask"][p_test].sum(-1)])
    mean_c, mean_r = r_chosen.mean(-1), r_rejected.mean(-1)
    metrics["test_accuracy_mean_objectives"] = _pair_accuracy(mean_c[p_test], mean_r[p_test])
    metrics["test_spearman_length_mean_objectives"] = float(spearman(
        np.concatenate([mean_c[p_test], mean_r[p_test]]), lengths))
    singles = {name: j for j, name in enumerate(names) if j != verbosity}
    best, record = choose_on_validation(
        singles, lambda j: _pair_accuracy(r_chosen[p_val, j], r_rejected[p_val, j]))
    selection["best_single_objective"] = record
    for name, j in singles.items():
        metrics[f"test_accuracy_head_{name}"] = _pair_accuracy(r_chosen[p_test, j],
                                                               r_rejected[p_test, j])
    metrics["best_single_index"] = float(singles[best])
    metrics["test_accuracy_best_single"] = metrics[f"test_accuracy_head_{best}"]
    metrics["num_rating_rows_train"] = float(len(r_train))
    metrics["num_pairs_train"] = float(len(p_train))
    metrics["num_pairs_test"] = float(len(p_test))
    if jax.process_index() == 0:
        os.makedirs(workdir, exist_ok=True)
        with open(os.path.join(workdir, "selection.json"), "w") as f:
            json.dump({"attributes": attributes, **selection}, f, indent=1)

    # stage 2: the gate on the prompt embedding, BT on the training pairs, heads frozen
    dp = e_prompt.shape[1]
    gate = make_mlp(MLPConfig(in_dim=dp, hidden=tuple(int(h) for h in a.gate_hidden),
                              out_dim=k, activation="relu"))
    log_beta = jnp.log(jnp.float32(a.beta_init))

    def rows(index, r):
        return jax.device_put(np.concatenate([e_prompt[index], r[index]], -1))

    params_gate, final_loss, records = fit_on_validation(
        os.path.join(workdir, "gate"), loss_fn=functools.partial(gate_bt_loss, gate),
        init_params=lambda key: {"gate": gate.init(key), "log_beta": log_beta},
        data={"prompt": jax.device_put(e_prompt[p_train]),
              "chosen": jax.device_put(r_chosen[p_train]),
              "rejected": jax.device_put(r_rejected[p_train])},
        val={"chosen": rows(p_val, r_chosen), "rejected": rows(p_val, r_rejected)},
        score_fn=lambda prm, x: gated_score(gate, prm, x[:, :dp], x[:, dp:]), seeds=seeds,
        train=config.train, per_seed_data=False)

    @jax.jit
    def test_scores(prm, prompt, chosen_r, rejected_r):
        weights = jax.nn.softmax(gate.apply(prm["gate"], prompt), axis=-1)
        return (gated_score(gate, prm, prompt, chosen_r),
                gated_score(gate, prm, prompt, rejected_r), weights.mean(0))

    out = {}
    for i, s in enumerate(seeds):
        prm = jax.tree.map(lambda x, i=i: x[i], params_gate)
        sc, sr, weights = (np.asarray(x) for x in test_scores(
            prm, e_prompt[p_test], r_chosen[p_test], r_rejected[p_test]))
        m = dict(metrics, **records[i], final_train_loss=final_loss[i],
                 beta=float(jnp.exp(prm["log_beta"])))
        m["test_accuracy_armorm"] = _pair_accuracy(sc, sr)
        m["test_spearman_length_armorm"] = float(spearman(np.concatenate([sc, sr]), lengths))
        for j, name in enumerate(names):
            m[f"test_gate_weight_{name}"] = float(weights[j])
        out[s] = m
    return out


def claims(results) -> list[protocol.Claim]:
    if "default" in results:  # :real: metrics only, a user's data has no gold utility
        return []
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

    if "default" in results:  # :real
        return []
    return [plot_variant_bars(results, [("test_gold_accuracy", "test gold pair accuracy"),
                                        ("test_abs_spearman_length", "|Spearman(score, length)|")],
                              os.path.join(workdir, "plots", "armorm.png"),
                              title="ArmoRM vs BT and fixed average (frozen features)")]
