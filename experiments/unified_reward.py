"""UnifiedReward: one reward model for two related tasks and two label formats, and
rank-then-sift curation of DPO pairs.

Paper: Wang et al. 2025, "Unified Reward Model for Multimodal Understanding and Generation".

Setting (feature-vector testbed): two tasks ("understanding" A and "generation" B) score
responses z ~ N(0, I_12) with gold rewards that share features,
r_t(z) = sqrt(rho) g(z) + sqrt(1 - rho) g_t(z) (g, g_A, g_B frozen random tanh MLPs,
`alignax.tasks.features.MLPReward`, rho = 0.8). Each task has few labels in two formats:
`num_pairs` Bradley-Terry pairs (temperature 0.5) and `num_points` pointwise scores
(gold + N(0, 0.5^2)). The reward model is an MLP on [z, one-hot(task)] (`make_mlp`, 64-64 GELU)
with two outputs: a pairwise reward u (BT loss on the pairs) and a pointwise score s (squared
error on the scores); `model.conditioning="heads"` uses a shared trunk on z with one linear head
per task instead of the input flag. Variants:
  - `task_specific`: one such model per task, trained on that task's pairs and scores;
  - `unified`: one model trained jointly on both tasks and both formats (shared trunk, task
    given by the input flag).
Same optimiser, step budget and weight decay for both. Metric: test gold-preference accuracy of u
on 5000 fresh pairs per task.

Curation and DPO (task B, the "generation" task): 256 prompts with 16 candidates each. The RM
judges every candidate pair (l_ij = u_i - u_j) and scores every candidate (s_i);
`alignax.data.curation.rank_then_sift` takes the 4 candidates with the most round-robin wins as
the chosen list and the 4 with the fewest as the rejected list, and keeps the best-scored chosen
and the worst-scored rejected candidate. Two baselines: `random` draws two random candidates per
prompt and orders them with the same pairwise judge (`random_pairs`); `rank_only` is
rank-then-sift with lists of one (the judge's top and bottom candidate, no pointwise sifting),
i.e. the same judge and candidates without the sifting step. A tabular softmax policy over the
candidates (pi_ref uniform) is trained with the DPO loss (`alignax.losses.direct.dpo_loss` on
the categorical log-probs, beta = 0.1, Adam, 300 steps; fixed, the same for every pair set) on
each pair set; we report its expected gold reward.

Splits (issue 18 protocol): the gold rewards (the world) are seeded by the experiment seed s;
each task's training pairs and scores come from the data seed 3s, 100 validation BT pairs per
task (labelled like the training pairs) from 3s + 1, and the test pairs and the curation
candidates from 3s + 2 (`split_seeds`).

Selection (every RM the same): early stopping on validation, `fit_small(select=
("val_accuracy", "max"))` with a check every 100 of the 1500 steps; the validation accuracy is
the mean over the tasks the RM is trained on (the unified RM: both; a task-specific RM: its
own). Recorded as `chosen_step_<rm>` and `val_accuracy_<rm>`.

Claims (5 seeds, paired 95% t intervals, `alignax.protocol`): (1, 2: comparative) the unified
RM is >= 2 points more accurate than the task-specific RM on the understanding and on the
generation task; (3, sanity) DPO on rank-then-sift pairs reaches a higher gold reward than DPO
on random pairs: this holds by construction (issue 18): the DPO policy only moves mass onto
each prompt's chosen candidate, and rank-then-sift's chosen is the RM's best of 16 while
random's is the better of 2, so any better-than-chance RM gives it a higher-gold chosen; (4,
comparative, falsifiable) DPO on rank-then-sift pairs reaches a higher gold reward than DPO on
rank-only pairs (>= 0), i.e. the pointwise sifting step helps (unified RM).

    alignax run experiments/unified_reward.py            # full setting, 5 seeds
    alignax run experiments/unified_reward.py:smoke      # seconds, for the tests
"""

from __future__ import annotations

import functools
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from alignax.data.curation import random_pairs, rank_then_sift
from alignax import protocol
from alignax.protocol import seed_mean
from alignax.experiment import is_smoke
from alignax.losses.direct import dpo_loss
from alignax.losses.reward import bradley_terry_loss
from alignax.models.mlp import MLPConfig, make_mlp
from alignax.tasks.features import MLPReward
from alignax.train.plots import plot_grouped_bars
from alignax.tasks.splits import split_seeds
from alignax.train.small import fit_small

METHODS = ("task_specific", "unified")
PAIR_SETS = ("curated", "rank_only", "random")
TASKS = ("understanding", "generation")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    smoke = is_smoke(arg)
    c = ml_collections.ConfigDict()
    c.seeds = [0] if smoke else [0, 1, 2, 3, 4]
    c.method = "unified"
    c.variants = {m: {"method": m} for m in METHODS}
    c.task = dict(dim=12, gold_hidden=32, shared=0.8, label_temperature=0.5, score_noise=0.5)
    c.data = dict(num_pairs=150, num_points=100, num_val_pairs=100,
                  num_test_pairs=5000 if not smoke else 500)
    c.model = dict(hidden=(64, 64), conditioning="flag")
    c.train = dict(steps=1500 if not smoke else 50, eval_every=100 if not smoke else 25,
                   learning_rate=3e-3, weight_decay=1e-2, point_weight=1.0)
    c.curation = dict(num_prompts=256 if not smoke else 32, num_candidates=16, list_size=4)
    c.dpo = dict(beta=0.1, steps=300 if not smoke else 20, learning_rate=0.05)
    return c


def gold_rewards(config, seed: int):
    """[N, D] -> [N] gold reward of each task (a list of two callables)."""
    t = config.task
    shared = MLPReward(dim=t.dim, hidden=t.gold_hidden, seed=seed)
    own = [MLPReward(dim=t.dim, hidden=t.gold_hidden, seed=1000 * (i + 1) + seed)
           for i in range(len(TASKS))]
    a, b = np.sqrt(t.shared), np.sqrt(1.0 - t.shared)
    return [lambda z, g=g: a * shared(z) + b * g(z) for g in own]


def bt_pairs(config, gold, n: int, rng) -> tuple[np.ndarray, np.ndarray]:
    """n Bradley-Terry labelled pairs (chosen, rejected) [n, D] of one task."""
    t = config.task
    za, zb = rng.standard_normal((2, n, t.dim)).astype(np.float32)
    p_a = 1.0 / (1.0 + np.exp(-(gold(za) - gold(zb)) / t.label_temperature))
    a_pref = rng.uniform(size=n) < p_a
    return np.where(a_pref[:, None], za, zb), np.where(a_pref[:, None], zb, za)


def make_data(config, seed: int) -> dict:
    """Per task: few BT pairs and few noisy pointwise scores (data seed 3s), BT validation pairs
    (3s + 1) and clean test pairs (3s + 2); the gold rewards are seeded by `seed`."""
    t, d = config.task, config.data
    golds = gold_rewards(config, seed)
    seeds = split_seeds(seed)
    rng = np.random.default_rng([seeds.train, 3636])
    val_rng = np.random.default_rng([seeds.validation, 3636])
    test_rng = np.random.default_rng([seeds.test, 3636])
    out = []
    for gold in golds:
        chosen, rejected = bt_pairs(config, gold, d.num_pairs, rng)
        zp = rng.standard_normal((d.num_points, t.dim)).astype(np.float32)
        val_chosen, val_rejected = bt_pairs(config, gold, d.num_val_pairs, val_rng)
        ta, tb = test_rng.standard_normal((2, d.num_test_pairs, t.dim)).astype(np.float32)
        out.append({
            "chosen": chosen, "rejected": rejected, "points": zp,
            "scores": (gold(zp) + t.score_noise * rng.standard_normal(d.num_points))
            .astype(np.float32),
            "val_chosen": val_chosen, "val_rejected": val_rejected,
            "test_a": ta, "test_b": tb, "test_a_better": gold(ta) > gold(tb)})
    return {"tasks": out, "golds": golds}


def _with_task(z, task: int):
    flag = jnp.zeros(z.shape[:-1] + (len(TASKS),), z.dtype).at[..., task].set(1.0)
    return jnp.concatenate([z, flag], -1)


def make_model(dim: int, hidden: tuple[int, ...], conditioning: str):
    """(init(key), apply(params, z [..., D], task) -> [..., 2] = (u, s)) of the reward model.

    conditioning "flag": an MLP on [z, one-hot(task)]; "heads": a shared GELU trunk MLP on z
    (hidden[:-1] -> hidden[-1] features) with one linear (u, s) head per task.
    """
    if conditioning == "flag":
        mlp = make_mlp(MLPConfig(in_dim=dim + len(TASKS), hidden=hidden, out_dim=2))
        return mlp.init, lambda p, z, task: mlp.apply(p, _with_task(z, task))
    if conditioning != "heads":
        raise ValueError(f"unknown conditioning {conditioning!r}; 'flag' or 'heads'")
    trunk = make_mlp(MLPConfig(in_dim=dim, hidden=hidden[:-1], out_dim=hidden[-1]))

    def init(key):
        k1, k2 = jax.random.split(key)
        w = jax.random.normal(k2, (len(TASKS), hidden[-1], 2)) / np.sqrt(hidden[-1])
        return {"trunk": trunk.init(k1), "w": w, "b": jnp.zeros((len(TASKS), 2))}

    def apply(p, z, task):
        h = jax.nn.gelu(trunk.apply(p["trunk"], z))
        return h @ p["w"][task] + p["b"][task]

    return init, apply


def train_rm(config, workdir: str, batches: list[dict], task_ids: list[int], keys,
             seeds: list[int]):
    """Full-batch AdamW on sum_t [BT(u) + point_weight * squared error(s)] over the tasks in
    `task_ids` (both: the unified RM; one: a task-specific RM), every seed in one `fit_small`
    program.

    batches: one dict per task with [S, ...] chosen/rejected [S, B, D], points [S, M, D],
    scores [S, M] and the validation pairs val_chosen/val_rejected [S, V, D]; keys: [S] the
    seeds' init keys. The model maps (z, task) -> (u, s). Early stopping on the mean validation
    accuracy of u over the tasks in `task_ids`.
    Returns (apply, the SmallFit: best_params / best_step / best_score stacked over seeds).
    """
    tr = config.train
    dim = batches[0]["chosen"].shape[-1]
    init, apply = make_model(dim, tuple(config.model.hidden), config.model.conditioning)
    point_weight = float(tr.point_weight)

    def loss_fn(p, tasks):
        total = 0.0
        for t, b in zip(task_ids, tasks):
            u_c = apply(p, b["chosen"], t)[..., 0]
            u_r = apply(p, b["rejected"], t)[..., 0]
            s = apply(p, b["points"], t)[..., 1]
            total += (jnp.mean(bradley_terry_loss(u_c, u_r))
                      + point_weight * jnp.mean((s - b["scores"]) ** 2))
        return total

    def eval_fn(p, vals):
        acc = [jnp.mean(apply(p, v["val_chosen"], t)[..., 0] > apply(p, v["val_rejected"], t)
                        [..., 0]) for t, v in zip(task_ids, vals)]
        return {"val_accuracy": jnp.mean(jnp.stack(acc))}

    train_keys = ("chosen", "rejected", "points", "scores")
    fit = fit_small(workdir, loss_fn=loss_fn, init_params=init,
                    tx=optax.adamw(float(tr.learning_rate), weight_decay=float(tr.weight_decay)),
                    num_steps=int(tr.steps),
                    data=[{k: batches[t][k] for k in train_keys} for t in task_ids],
                    seeds=seeds, seed_keys=keys, per_seed_data=True, eval_fn=eval_fn,
                    eval_data=[{k: batches[t][k] for k in ("val_chosen", "val_rejected")}
                               for t in task_ids],
                    steps_per_log=int(tr.eval_every), select=("val_accuracy", "max"))
    return apply, fit


def dpo_tabular(workdir: str, chosen, rejected, num_candidates: int, seeds: list[int], *,
                steps: int, lr: float, beta: float) -> np.ndarray:
    """DPO of a categorical policy pi = softmax(theta) [P, N] from pi_ref uniform on one pair per
    prompt, every seed in one `fit_small` program: chosen/rejected [S, P] candidate indices ->
    the final probabilities [S, P, N]."""
    p = chosen.shape[1]
    ref = jnp.full((p, num_candidates), -jnp.log(num_candidates))
    rows = jnp.arange(p)

    def loss_fn(theta, d):
        logp = jax.nn.log_softmax(theta, -1)
        c, r = d["chosen"], d["rejected"]
        loss, _ = dpo_loss(logp[rows, c], logp[rows, r], ref[rows, c], ref[rows, r], beta=beta)
        return jnp.mean(loss)

    # strong float32 zeros (zeros_like(ref) is weak-typed: the updated params are not, and the
    # chunk program was traced and compiled again twice, for the params and each Adam moment)
    fit = fit_small(workdir, loss_fn=loss_fn, init_params=jnp.zeros(ref.shape, jnp.float32),
                    tx=optax.adam(lr), num_steps=steps,
                    data={"chosen": jnp.asarray(chosen), "rejected": jnp.asarray(rejected)},
                    seeds=seeds, per_seed_data=True)
    return np.asarray(_softmax(fit.params))


_softmax = jax.jit(functools.partial(jax.nn.softmax, axis=-1))


@functools.partial(jax.jit, static_argnums=2)
def curate(h, key, list_size: int):
    """The DPO pairs (chosen [P], rejected [P]) of each of PAIR_SETS from the generation head's
    (u, s) = h [P, N, 2] of every candidate: rank-then-sift with a chosen list of `list_size`,
    rank-only (lists of one) and random pairs ordered by u (one program, not one per op)."""
    u, s = h[..., 0], h[..., 1]
    pair_logits = u[:, :, None] - u[:, None, :]
    return (rank_then_sift(pair_logits, s, num_chosen=list_size),
            rank_then_sift(pair_logits, s, num_chosen=1),
            random_pairs(key, s.shape, pair_logits=pair_logits))


def run_seeds(config: ml_collections.ConfigDict, workdir: str) -> dict[int, dict[str, float]]:
    """Every seed of one method: the RM(s) of all seeds in one program each (early-stopped on
    validation), then curation per seed and the DPO policies of all seeds in one program per
    pair set."""
    method = config.method
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; one of {METHODS}")
    seeds = [int(s) for s in config.seeds]
    data = [make_data(config, s) for s in seeds]
    keys = jnp.stack([jax.random.split(jax.random.key(s), 3) for s in seeds])  # [S, 3]
    batches = [{k: np.stack([d["tasks"][t][k] for d in data])  # host: no transfer programs
                for k in ("chosen", "rejected", "points", "scores", "val_chosen",
                          "val_rejected")} for t in range(len(TASKS))]
    out = {s: {} for s in seeds}
    if method == "unified":
        apply, fit = train_rm(config, os.path.join(workdir, "rm"), batches,
                              list(range(len(TASKS))), keys[:, 0], seeds)
        params = [fit.best_params, fit.best_params]
        fits = {"unified": fit}
    else:
        params, fits = [], {}
        for t, name in enumerate(TASKS):
            apply, fit = train_rm(config, os.path.join(workdir, f"rm_{name}"), batches, [t],
                                  keys[:, t], seeds)
            params.append(fit.best_params)
            fits[name] = fit
    for i, seed in enumerate(seeds):
        for name, fit in fits.items():
            out[seed][f"chosen_step_{name}"] = float(fit.best_step[i])
            out[seed][f"val_accuracy_{name}"] = float(fit.best_score[i])
    heads = jax.jit(apply, static_argnums=2)
    cu, task = config.curation, TASKS.index("generation")
    pairs = {name: [] for name in PAIR_SETS}
    golds = []
    for i, (seed, d) in enumerate(zip(seeds, data)):
        res = out[seed]
        # host rows: no slicing program per leaf
        seed_params = [jax.tree.map(lambda x, i=i: np.asarray(x)[i], p) for p in params]
        for t, (name, b) in enumerate(zip(TASKS, d["tasks"])):
            ha = np.asarray(heads(seed_params[t], b["test_a"], t))
            hb = np.asarray(heads(seed_params[t], b["test_b"], t))
            res[f"test_{name}_accuracy"] = float(np.mean((ha[:, 0] > hb[:, 0])
                                                         == b["test_a_better"]))
            res[f"test_{name}_point_accuracy"] = float(np.mean((ha[:, 1] > hb[:, 1])
                                                               == b["test_a_better"]))
        res["test_mean_accuracy"] = float(np.mean([res[f"test_{n}_accuracy"] for n in TASKS]))

        # rank-then-sift curation on the generation task (DPO below, all seeds at once)
        rng = np.random.default_rng([split_seeds(seed).test, 3637])
        cand = rng.standard_normal((cu.num_prompts, cu.num_candidates, config.task.dim)) \
            .astype(np.float32)
        h = np.asarray(heads(seed_params[task], cand, task))  # [P, N, 2]
        golds.append(d["golds"][task](cand.reshape(-1, cand.shape[-1])).reshape(cand.shape[:2]))
        for name, pair in zip(PAIR_SETS, curate(h, keys[i, 2], int(cu.list_size))):
            pairs[name].append(pair)
    rows = np.arange(cu.num_prompts)
    dc = config.dpo
    for name, per_seed in pairs.items():
        chosen = np.stack([np.asarray(c) for c, _ in per_seed])  # [S, P]
        rejected = np.stack([np.asarray(r) for _, r in per_seed])
        pi = dpo_tabular(os.path.join(workdir, f"dpo_{name}"), chosen, rejected,
                         int(cu.num_candidates), seeds, steps=int(dc.steps),
                         lr=float(dc.learning_rate), beta=float(dc.beta))
        for i, (seed, g) in enumerate(zip(seeds, golds)):
            c, r = chosen[i], rejected[i]
            out[seed][f"test_dpo_gold_{name}"] = float(np.mean(np.sum(pi[i] * g, -1)))
            out[seed][f"test_{name}_chosen_gold"] = float(np.mean(g[rows, c]))
            out[seed][f"test_{name}_rejected_gold"] = float(np.mean(g[rows, r]))
            out[seed][f"test_{name}_pair_gold_correct"] = float(np.mean(g[rows, c] > g[rows, r]))
    for seed, g in zip(seeds, golds):
        out[seed]["test_ref_gold"] = float(np.mean(g))
        out[seed]["test_best_candidate_gold"] = float(np.mean(g.max(-1)))
    return out


def claims(results) -> list[protocol.Claim]:
    out = []
    for t in TASKS:
        out.append(protocol.compare(
            f"the unified RM is >= 2 points more accurate than a task-specific RM on the {t} "
            f"task at low data", results, ("unified", f"test_{t}_accuracy"),
            ("task_specific", f"test_{t}_accuracy"), at_least=0.02,
            detail=f"both early-stopped on validation; pointwise head: unified "
                   f"{seed_mean(results, 'unified', f'test_{t}_point_accuracy'):.3f} vs "
                   f"task-specific "
                   f"{seed_mean(results, 'task_specific', f'test_{t}_point_accuracy'):.3f}"))
    gold = {n: protocol.per_seed(results, "unified", f"test_dpo_gold_{n}") for n in PAIR_SETS}
    ref = seed_mean(results, "unified", "test_ref_gold")
    mean = {n: float(np.mean(list(v.values()))) for n, v in gold.items()}
    out.append(protocol.sanity(
        "DPO on rank-then-sift pairs reaches a higher gold reward than DPO on random pairs "
        "(holds by construction: best of 16 by the RM vs better of 2)",
        all(gold["curated"][s] > gold["random"][s] for s in gold["curated"]),
        {"curated": mean["curated"], "random": mean["random"], "reference": ref},
        detail=f"every seed; policy gold: rank-then-sift {mean['curated']:.3f} vs random "
               f"{mean['random']:.3f} (reference {ref:.3f})"))
    out.append(protocol.decide(
        "DPO on rank-then-sift pairs reaches a higher gold reward than DPO on rank-only pairs "
        "(the pointwise sifting step helps; unified RM)",
        {s: gold["curated"][s] - gold["rank_only"][s] for s in gold["curated"]},
        kind=protocol.COMPARATIVE, at_least=0.0,
        measured={"curated": mean["curated"], "rank_only": mean["rank_only"],
                  "difference": mean["curated"] - mean["rank_only"]},
        detail=f"policy gold: rank-then-sift {mean['curated']:.3f}, rank-only (judge's top vs "
               f"bottom) {mean['rank_only']:.3f}, random {mean['random']:.3f}, reference "
               f"{ref:.3f}, best candidate "
               f"{seed_mean(results, 'unified', 'test_best_candidate_gold'):.3f}; chosen gold "
               f"{seed_mean(results, 'unified', 'test_curated_chosen_gold'):.3f} vs "
               f"{seed_mean(results, 'unified', 'test_rank_only_chosen_gold'):.3f}"))
    return out


def plots(results, workdir: str) -> list[str]:
    """Per-task accuracy per RM, and the DPO policy's gold reward per pair-curation scheme."""
    methods = [m for m in METHODS if m in results]
    if not methods:
        return []
    stat = lambda m, names: ([results[m]["metrics"][n]["mean"] for n in names],  # noqa: E731
                             [results[m]["metrics"][n]["std"] for n in names])
    folder = os.path.join(workdir, "plots")
    acc = plot_grouped_bars(
        TASKS, {m: stat(m, [f"test_{t}_accuracy" for t in TASKS]) for m in methods},
        os.path.join(folder, "unified_reward_accuracy.png"),
        title="UnifiedReward toy: joint vs task-specific RMs", ylabel="held-out gold accuracy",
        ylim=(0.5, 1.0))
    names = ["test_ref_gold", "test_dpo_gold_random", "test_dpo_gold_rank_only",
             "test_dpo_gold_curated", "test_best_candidate_gold"]
    dpo = plot_grouped_bars(
        ["reference", "DPO random", "DPO rank-only", "DPO rank-sift", "best of 16"],
        {f"{m} RM": stat(m, names) for m in methods},
        os.path.join(folder, "unified_reward_dpo.png"),
        title="UnifiedReward toy: rank-then-sift DPO pairs",
        ylabel="gold reward (generation task)")
    return [acc, dpo]
