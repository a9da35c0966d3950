"""Dynamic reward weighting: hypervolume-guided and gradient-based objective weights in RL.

Paper: Lu et al. 2025, "Learning to Optimize Multi-Objective Alignment Through Dynamic Reward
Weighting" (arXiv 2509.11452).

Setting (the notes' toy: a tiny LM on arithmetic with three objectives). A question is a pair of
operands (a, b), a, b in 0..99, whose answer is (a + b) mod 3; the policy sees the features
[1, onehot(a mod 3) x onehot(b mod 3)] (F = 10) and is a log-linear prefix-tree LM
(`alignax.models.sequence_table`) over all 625 responses of L = 4 tokens from a vocabulary of 5:
EOS (0), a format token FMT (1, the "clarity" marker) and the answer digits 2, 3, 4. A response
ends at its first EOS; with content length l:
  - accuracy = 1 when the last content token is the right answer digit;
  - conciseness = 1 - l / L;
  - format = 1 when the response starts with FMT.
The objectives conflict: FMT costs a token of conciseness, an answer costs one too, so no
response has all three at 1 (the deterministic Pareto responses are "ans" (1, .75, 0),
"FMT ans" (1, .5, 1), "" (0, 1, 0) and "FMT" (0, .75, 1)); mixtures of them reach the rest of
the front. All objective values of a policy are exact sums over the 625 responses.

Training: multi-reward group policy gradient (M = 16 prompts x G = 8 responses per update) of
the combined reward from the uniform policy, `train.steps` updates with Adam, through
`alignax.algorithms.multi_objective_pg.multi_objective_pg_loss` inside `fit_small` (the
objective weights, the influence accumulator and the hypervolume buffer are the loss state,
`fit_small(loss_state=...)`, checkpointed with the run). The advantage is RLOO (one of the
paper's three estimators) for every variant: the paper's hypervolume "meta reward" multiplies
all rewards of an update by one number, which cancels exactly in GRPO's std-normalised
advantages (with RLOO it scales the gradient, though Adam's per-parameter normalisation also
absorbs most of a slowly varying factor, as it would in the paper's AdamW runs). Variants,
each with a grid of three configurations (the same budget):
  - `fixed`: linear scalarisation R = sum_k w_k r_k with w in {equal (1,1,1), accuracy-heavy
    (2,1,1), style-heavy (1,2,2)} (normalised);
  - `hypervolume` (the paper's code): the same three base weights; after each update the
    checkpoint's objective vector v_t (the batch mean) gives m = 0.5 + 1.5 tanh(HV(P u {v_t})
    - HV(P)) against the buffer P of earlier checkpoints' vectors (started with the initial
    model's vector, which is also the reference point; v_t joins P when it adds volume, the
    last 8 kept), and the next update's rewards are multiplied by m;
  - `hypervolume_sample` (reported, no claim): the same, but each response's reward is
    multiplied by the m of its own objective vector (the per-sample reading that
    `alignax.algorithms.objectives` uses for the LM recipes);
  - `gradient` (the paper's code): from equal weights, per-objective policy gradients g_k (the
    surrogate with r_k's advantages, all table parameters), influence s_k = sum_j <g_k, g_j>
    averaged over `dynamic.window` updates, then w <- softmax(log w + eta s / lambda) with eta
    the learning rate and the regularisation lambda in {0.01, 0.1, 1} (from weights that
    collapse onto the fastest-moving objective to weights that barely move). This lambda grid
    was not fixed in advance: two pilot grids ({0.3, 3, 30} with the influence summed over
    the window: the weights collapsed onto format; {0.1, 1, 10}: they barely moved) were run
    and their numbers, test ones included, were seen before this grid was set. The hypervolume
    claim failed in the second pilot as in the final run; the grid choice is therefore not
    free of test information, and a PASS would have had to be read with that in mind.
The three configurations of a variant and the seeds run as rows of one vmapped `fit_small`
program (common random numbers across configurations of a seed).

Splits (`alignax.tasks.splits.split_seeds`): experiment seed s draws its training, validation
and test questions (64, 64, 128 distinct operand pairs, disjoint, `check_disjoint`) with the
data seeds 3s, 3s + 1, 3s + 2; initialisation and sampling use s.

Selection (every variant the same): the hypervolume of a single objective vector v above the
reference r (the uniform initial policy's vector on the same questions) is
HV(v) = prod_k max(v_k - r_k, 0). Each configuration is early-stopped on its validation HV
(`fit_small(select=("val_hv", "max"))`, every `train.log_every` updates); the configuration of a
variant is chosen on validation HV (`protocol.choose_on_validation`: `val_hv_<config>` and
`chosen_config` recorded per seed). Test metrics are the exact objective vector (`test_accuracy`,
`test_conciseness`, `test_format`) and `test_hv` of the chosen configuration's selected policy on
the test questions; the fixed variant also records every configuration's test vector.

Reading the full run (5 seeds, test HV means): fixed 0.0612, gradient 0.0595, hypervolume
0.0572, hypervolume_sample 0.0602 (the best single mixture of the Pareto responses reaches
about 0.067). Validation picks lambda = 0.1 or 1 for the gradient weights, where they barely
move from equal (it then behaves as the equal fixed weights); at lambda = 0.01 the weights run
to the format objective (final weights about (0.34, 0.11, 0.55)), whose one-token gradient is
the largest and saturates first, and validation HV drops to 0.050. The checkpoint meta reward is
a common factor of an update's rewards, mostly absorbed by Adam, so `hypervolume` follows the
fixed runs' paths up to chaotic divergence.

Claims (5 seeds, paired 95% t intervals, `protocol.decide`), the notes' pass criterion "the
dynamic run is not dominated by any fixed run, and its hypervolume is >= 5% above the best
fixed run" for each dynamic method (gradient-based, the notes' toy comparison, and
hypervolume-guided): (1, 3; comparative) per seed test_hv(dynamic) / test_hv(fixed, the
configuration chosen on validation) - 1 >= 0.05; (2, 4; comparative) per seed the
non-domination margin min over the three fixed runs of max_k (v_dyn,k - v_fixed,k) >= 0 (> 0:
no fixed run's test vector dominates the dynamic one's; < 0: one does). Sanity: at the
largest step size the gradient run's weights moved away from equal (the mechanism ran).
`:smoke` runs `fixed` and `gradient` with one configuration each, L = 3 and 4 updates.

    alignax run experiments/dynamic_weighting.py            # full setting, 5 seeds
    alignax run experiments/dynamic_weighting.py:smoke      # seconds, for the tests
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from alignax import protocol
from alignax.algorithms import multi_objective_pg as mo
from alignax.algorithms.small_pg import rl_batch
from alignax.experiment import is_smoke
from alignax.models import sequence_table as st
from alignax.tasks.splits import check_disjoint, split_seeds
from alignax.train.plots import plot_curves
from alignax.train.small import fit_small
from alignax.train.writers import read_metrics

OBJECTIVES = ("accuracy", "conciseness", "format")
METHODS = ("fixed", "hypervolume", "gradient", "hypervolume_sample")
EOS, FMT, FIRST_DIGIT = 0, 1, 2
FIXED_WEIGHTS = {"equal": (1.0, 1.0, 1.0), "accuracy": (2.0, 1.0, 1.0),
                 "style": (1.0, 2.0, 2.0)}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    smoke = is_smoke(arg)
    c = ml_collections.ConfigDict()
    c.seeds = [0] if smoke else [0, 1, 2, 3, 4]
    c.method = "gradient"
    # smoke: two variants, one configuration each (compile time is what the smoke pays)
    c.variants = {m: {"method": m} for m in (("fixed", "gradient") if smoke else METHODS)}
    c.fixed_weights = ["equal"] if smoke else list(FIXED_WEIGHTS)
    c.task = dict(num_answers=3, length=3 if smoke else 4, operand_range=100)
    c.data = dict(num_train=64, num_val=64, num_test=128)
    c.train = dict(steps=4 if smoke else 300, prompts=16, group_size=8, learning_rate=0.05,
                   log_every=2 if smoke else 10)
    c.train.advantage = "rloo"  # GRPO's std normalisation would cancel the HV meta reward
    # gradient: step size = learning rate / lambda over the lambda grid, window M;
    # hypervolume: buffer size
    c.dynamic = dict(regularization=(0.01,) if smoke else (0.01, 0.1, 1.0), window=5,
                     buffer_size=8)
    return c


def space(config) -> st.SequenceSpace:
    return st.SequenceSpace(2 + config.task.num_answers, config.task.length)


def objective_tables(config) -> dict:
    """Per-response objective values: accuracy [A, N] (by the question's answer), conciseness
    [N] and format [N]."""
    sp = space(config)
    seqs = sp.sequences
    is_eos = seqs == EOS
    length = np.where(is_eos.any(1), is_eos.argmax(1), sp.length)
    last = seqs[np.arange(len(seqs)), np.maximum(length - 1, 0)]
    acc = np.stack([(length >= 1) & (last == FIRST_DIGIT + a)
                    for a in range(config.task.num_answers)]).astype(np.float32)
    return {"accuracy": acc, "conciseness": (1.0 - length / sp.length).astype(np.float32),
            "format": (seqs[:, 0] == FMT).astype(np.float32)}


def questions(config, rng, n: int, exclude=()) -> np.ndarray:
    """n distinct operand pairs [n, 2] not in `exclude` (a set of (a, b))."""
    r = config.task.operand_range
    out, seen = [], set(exclude)
    while len(out) < n:
        a, b = (int(v) for v in rng.integers(0, r, 2))
        if (a, b) not in seen:
            seen.add((a, b))
            out.append((a, b))
    return np.array(out, np.int32)


def encode(config, pairs) -> tuple[np.ndarray, np.ndarray]:
    """Features [n, 1 + A^2] and answers [n] of operand pairs [n, 2]."""
    a_num = config.task.num_answers
    res = pairs % a_num
    cross = np.zeros((len(pairs), a_num * a_num), np.float32)
    cross[np.arange(len(pairs)), res[:, 0] * a_num + res[:, 1]] = 1.0
    feats = np.concatenate([np.ones((len(pairs), 1), np.float32), cross], 1)
    return feats, (pairs.sum(1) % a_num).astype(np.int32)


def make_data(config, seed: int) -> dict:
    """Training / validation / test questions of experiment seed `seed` from its data seeds."""
    s = split_seeds(seed)
    train = questions(config, np.random.default_rng([s.train, 2301]), config.data.num_train)
    val = questions(config, np.random.default_rng([s.validation, 2301]), config.data.num_val,
                    exclude={tuple(p) for p in train})
    test = questions(config, np.random.default_rng([s.test, 2301]), config.data.num_test,
                     exclude={tuple(p) for p in np.concatenate([train, val])})
    check_disjoint(train=[tuple(p) for p in train], validation=[tuple(p) for p in val],
                   test=[tuple(p) for p in test])
    out = {}
    for name, pairs in (("train", train), ("val", val), ("test", test)):
        out[f"{name}_features"], out[f"{name}_answers"] = encode(config, pairs)
    return out


def objective_vector(config, tables, params, features, answers) -> jax.Array:
    """Exact [K] mean objective values of the policy over the questions."""
    p = jnp.exp(st.sequence_log_probs(space(config), params, features))  # [P, N]
    acc = (p * jnp.asarray(tables["accuracy"])[answers]).sum(-1).mean()
    conc = (p @ jnp.asarray(tables["conciseness"])).mean()
    fmt = (p @ jnp.asarray(tables["format"])).mean()
    return jnp.stack([acc, conc, fmt])


def single_hv(v, ref):
    """Hypervolume of one objective vector above the reference: prod_k max(v_k - r_k, 0)."""
    return jnp.prod(jnp.maximum(jnp.asarray(v) - jnp.asarray(ref), 0.0), axis=-1)


def configurations(config, method: str) -> dict:
    """{name: (initial weights [K], step size)} of a variant's grid."""
    if method != "gradient":
        return {name: (FIXED_WEIGHTS[name], 0.0) for name in config.fixed_weights}
    lr = float(config.train.learning_rate)
    return {f"lambda={lam:g}": ((1.0, 1.0, 1.0), lr / float(lam))
            for lam in config.dynamic.regularization}


def train(config, workdir: str, rows: dict, keys, tables):
    """GRPO with the variant's weighting, every (configuration, seed) row in one program."""
    sp, tr, dyn = space(config), config.train, config.dynamic
    acc_t, conc_t, fmt_t = (jnp.asarray(tables[k]) for k in OBJECTIVES)
    num_train = rows["train_features"].shape[1]

    def prompt_fn(key, data):
        idx = jax.random.randint(key, (int(tr.prompts),), 0, num_train)
        return {"features": data["train_features"][idx], "answers": data["train_answers"][idx]}

    def sample_fn(params, key, prompts, n):
        return st.sample(sp, params, key, n, prompts["features"])

    def log_prob_fn(params, prompts, responses):
        return st.gather(st.sequence_log_probs(sp, params, prompts["features"]), responses)

    def reward_fn(prompts, responses, data):
        return jnp.stack([acc_t[prompts["answers"][:, None], responses], conc_t[responses],
                          fmt_t[responses]])

    weighting = "hypervolume" if config.method.startswith("hypervolume") else config.method
    loss = mo.multi_objective_pg_loss(
        sample_fn, log_prob_fn, reward_fn, group_size=int(tr.group_size),
        weighting=weighting, advantage=str(tr.advantage), window=int(dyn.window),
        hv_mode="sample" if config.method == "hypervolume_sample" else "checkpoint",
        prompt_fn=prompt_fn)

    def eval_fn(params, val):
        v = objective_vector(config, tables, params, val["val_features"], val["val_answers"])
        return {"val_hv": single_hv(v, val["val_reference"]),
                **{f"val_{k}": v[i] for i, k in enumerate(OBJECTIVES)}}

    train_keys = ("train_features", "train_answers", "objective_weights", "weight_step_size")
    fit = fit_small(workdir, loss_fn=loss, init_params=lambda k: st.init_table(
                        sp, rows["train_features"].shape[-1]),
                    tx=optax.adam(float(tr.learning_rate)), num_steps=int(tr.steps),
                    data={k: rows[k] for k in train_keys}, seeds=list(range(len(keys))),
                    seed_keys=keys, per_seed_data=True, batch_fn=rl_batch,
                    steps_per_log=int(tr.log_every), eval_fn=eval_fn,
                    eval_data={k: rows[k] for k in ("val_features", "val_answers",
                                                    "val_reference")},
                    select=("val_hv", "max"),
                    loss_state=mo.init_weight_state(jnp.ones(len(OBJECTIVES)),
                                                    buffer_size=int(dyn.buffer_size)))
    return fit


def run_seeds(config: ml_collections.ConfigDict, workdir: str) -> dict[int, dict[str, float]]:
    """All configurations x seeds of one variant in one fit_small; per seed, the configuration
    chosen on validation HV and its test objective vector."""
    if config.method not in METHODS:
        raise ValueError(f"unknown method {config.method!r}; one of {METHODS}")
    seeds = [int(s) for s in config.seeds]
    tables = objective_tables(config)
    sp = space(config)
    uniform = st.init_table(sp, 1 + config.task.num_answers ** 2)
    per_seed = {s: make_data(config, s) for s in seeds}
    refs = {s: {split: np.asarray(objective_vector(config, tables, uniform,
                                                   per_seed[s][f"{split}_features"],
                                                   per_seed[s][f"{split}_answers"]))
                for split in ("val", "test")} for s in seeds}
    grid = configurations(config, config.method)
    names = list(grid)
    row_list, keys = [], []
    for name in names:
        weights, eta = grid[name]
        for s in seeds:
            d = per_seed[s]
            row_list.append({**{k: d[k] for k in ("train_features", "train_answers",
                                                  "val_features", "val_answers")},
                             "val_reference": refs[s]["val"],
                             "objective_weights": np.asarray(weights, np.float32),
                             "weight_step_size": np.float32(eta)})
            keys.append(jax.random.key(s))
    rows = {k: jnp.asarray(np.stack([r[k] for r in row_list])) for k in row_list[0]}
    fit = train(config, os.path.join(workdir, "grpo"), rows, jnp.stack(keys), tables)

    @jax.jit
    @jax.vmap
    def test_vector(params, feats, answers):
        return objective_vector(config, tables, params, feats, answers)

    test_feats = jnp.asarray(np.stack([per_seed[s]["test_features"] for _ in names
                                       for s in seeds]))
    test_ans = jnp.asarray(np.stack([per_seed[s]["test_answers"] for _ in names
                                     for s in seeds]))
    vec = np.asarray(test_vector(fit.best_params, test_feats, test_ans))  # [R, K]
    weights = np.asarray(fit.loss_state.weights)  # [R, K] final weights
    out = {}
    for j, s in enumerate(seeds):
        row = {n: i * len(seeds) + j for i, n in enumerate(names)}
        chosen, record = protocol.choose_on_validation(
            {n: row[n] for n in names}, lambda r: float(fit.best_score[r]))
        r = row[chosen]
        res = {"chosen_config": float(names.index(chosen)),
               "chosen_step": float(fit.best_step[r]), "val_hv": float(fit.best_score[r]),
               **{f"val_hv_{n}": float(record["scores"][n]) for n in names},
               "test_hv": float(single_hv(vec[r], refs[s]["test"])),
               **{f"test_{k}": float(vec[r, i]) for i, k in enumerate(OBJECTIVES)},
               **{f"reference_{k}": float(refs[s]["test"][i]) for i, k in enumerate(OBJECTIVES)},
               **{f"final_weight_{k}": float(weights[r, i]) for i, k in enumerate(OBJECTIVES)}}
        for n in names:
            for i, k in enumerate(OBJECTIVES):
                res[f"final_weight_{k}_{n}"] = float(weights[row[n], i])
        if config.method == "fixed":
            for n in names:
                for i, k in enumerate(OBJECTIVES):
                    res[f"test_{k}_{n}"] = float(vec[row[n], i])
                res[f"test_hv_{n}"] = float(single_hv(vec[row[n]], refs[s]["test"]))
        out[s] = res
    return out


def _vec(results, variant, seed, suffix=""):
    ps = results[variant]["per_seed"][seed]
    return np.array([ps[f"test_{k}{suffix}"] for k in OBJECTIVES])


def _fmt(d: dict) -> str:
    return "{" + ", ".join(f"{k}: {v:.4f}" for k, v in d.items()) + "}"


def claims(results) -> list[protocol.Claim]:
    fixed = results["fixed"]["per_seed"]
    out = []
    for method in ("gradient", "hypervolume"):
        if method not in results:
            continue
        dyn = results[method]["per_seed"]
        seeds = [s for s in dyn if s in fixed]
        ratio = {s: dyn[s]["test_hv"] / max(fixed[s]["test_hv"], 1e-12) - 1.0 for s in seeds}
        fixed_names = [n for n in FIXED_WEIGHTS if f"test_hv_{n}" in fixed[seeds[0]]]
        margin = {s: min(float(np.max(_vec(results, method, s) - _vec(results, "fixed", s,
                                                                       f"_{n}")))
                         for n in fixed_names) for s in seeds}
        means = {k: protocol.seed_mean(results, method, f"test_{k}") for k in OBJECTIVES}
        fmeans = {k: protocol.seed_mean(results, "fixed", f"test_{k}") for k in OBJECTIVES}
        detail = (f"test HV {method} {_fmt({s: dyn[s]['test_hv'] for s in seeds})} vs fixed "
                  f"(config chosen on validation) {_fmt({s: fixed[s]['test_hv'] for s in seeds})};"
                  f" mean test vectors (acc, conc, fmt) {method} "
                  f"{tuple(round(v, 3) for v in means.values())}, fixed "
                  f"{tuple(round(v, 3) for v in fmeans.values())}")
        out += [
            protocol.decide(
                f"{method} weighting: test hypervolume >= 1.05 x the fixed linear "
                "scalarisation's (each variant's configuration and step chosen on validation HV)",
                ratio, kind=protocol.COMPARATIVE, at_least=0.05, detail=detail),
            protocol.decide(
                f"{method} weighting is not dominated by any of the fixed runs: "
                "min over fixed runs of max_k (v_dyn,k - v_fixed,k) >= 0", margin,
                kind=protocol.COMPARATIVE, at_least=0.0,
                detail=f"per-seed margins {_fmt(margin)}"),
        ]
    if "gradient" in results:
        grad = results["gradient"]["per_seed"]
        first = next(iter(grad.values()))
        strongest = min((k for k in first if k.startswith("final_weight_accuracy_lambda=")),
                        key=lambda k: float(k.split("=")[1]))
        name = strongest.split("final_weight_accuracy_")[1]
        chosen_w = tuple(round(protocol.seed_mean(results, "gradient", f"final_weight_{k}"), 3)
                         for k in OBJECTIVES)
        moved = {s: float(np.abs(np.array([r[f"final_weight_{k}_{name}"] for k in OBJECTIVES])
                                 - 1 / 3).sum()) for s, r in grad.items()}
        out.append(protocol.sanity(
            f"the gradient-based weights move away from equal weights at the largest step "
            f"size ({name}; L1 distance > 0.01)",
            all(v > 0.01 for v in moved.values()), {"min_l1": min(moved.values())},
            f"final-weight L1 distance from (1/3, 1/3, 1/3) per seed {_fmt(moved)}; final "
            f"weights of the chosen configurations (acc, conc, fmt) {chosen_w}"))
    return out


def plots(results, workdir: str) -> list[str]:
    """Validation HV along training (mean over every configuration and seed of a variant) and
    the gradient variant's objective weights (mean over its rows)."""
    hv, weights = {}, {}
    for variant in results:
        path = os.path.join(workdir, variant, "grpo", "metrics.jsonl")
        if not os.path.exists(path):
            continue
        rows = read_metrics(path)
        steps = [row["step"] for row in rows]
        hv[variant] = (steps, [row["eval/val_hv"] for row in rows])
        if variant == "gradient":
            for k, name in enumerate(OBJECTIVES):
                weights[name] = (steps, [row[f"weight_{k}"] for row in rows])
    out = [plot_curves(hv, os.path.join(workdir, "plots", "val_hv.png"),
                       title="validation hypervolume (mean over configurations and seeds)",
                       xlabel="logged step", ylabel="HV above the initial policy")]
    if weights:
        out.append(plot_curves(weights, os.path.join(workdir, "plots", "gradient_weights.png"),
                               title="gradient-based objective weights (mean over rows)",
                               xlabel="logged step", ylabel="weight"))
    return out
