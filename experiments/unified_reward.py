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
Same optimiser, steps and weight decay for both. Metric: held-out gold-preference accuracy of u
on 5000 fresh pairs per task.

Curation and DPO (task B, the "generation" task): 256 prompts with 16 candidates each. The RM
judges every candidate pair (l_ij = u_i - u_j) and scores every candidate (s_i);
`alignax.data.curation.rank_then_sift` takes the 4 candidates with the most round-robin wins as
the chosen list and the 4 with the fewest as the rejected list, and keeps the best-scored chosen
and the worst-scored rejected candidate. The baseline draws two random candidates per prompt and
orders them with the same pairwise judge (`random_pairs`). A tabular softmax policy over the
candidates (pi_ref uniform) is trained with the DPO loss (`alignax.losses.direct.dpo_loss` on
the categorical log-probs, beta = 0.1, Adam) on either pair set; we report its expected gold
reward.

Claims checked: (1) the unified RM is >= 2 points more accurate than the task-specific RMs on
each task at low data (mean of seeds); (2) DPO on rank-then-sift pairs reaches a higher gold
reward than DPO on random pairs (unified RM, mean of seeds).

    alignax run experiments/unified_reward.py            # full setting, 3 seeds
    alignax run experiments/unified_reward.py:smoke      # seconds, for the tests
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from alignax.data.curation import random_pairs, rank_then_sift
from alignax.experiment import Claim, is_smoke, metric
from alignax.losses.direct import dpo_loss
from alignax.losses.reward import bradley_terry_loss
from alignax.models.mlp import MLPConfig, make_mlp
from alignax.tasks.features import MLPReward
from alignax.train.plots import plot_grouped_bars
from alignax.train.small import fit_small

METHODS = ("task_specific", "unified")
TASKS = ("understanding", "generation")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    smoke = is_smoke(arg)
    c = ml_collections.ConfigDict()
    c.seeds = [0] if smoke else [0, 1, 2]
    c.method = "unified"
    c.variants = {m: {"method": m} for m in METHODS}
    c.task = dict(dim=12, gold_hidden=32, shared=0.8, label_temperature=0.5, score_noise=0.5)
    c.data = dict(num_pairs=150, num_points=100, num_test_pairs=5000 if not smoke else 500)
    c.model = dict(hidden=(64, 64), conditioning="flag")
    c.train = dict(steps=1500 if not smoke else 50, learning_rate=3e-3, weight_decay=1e-2,
                   point_weight=1.0)
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


def make_data(config, seed: int) -> dict:
    """Per task: few BT pairs, few noisy pointwise scores and clean held-out pairs."""
    t, d = config.task, config.data
    golds = gold_rewards(config, seed)
    rng = np.random.default_rng([seed, 3636])
    out = []
    for gold in golds:
        za, zb = rng.standard_normal((2, d.num_pairs, t.dim)).astype(np.float32)
        p_a = 1.0 / (1.0 + np.exp(-(gold(za) - gold(zb)) / t.label_temperature))
        a_pref = rng.uniform(size=d.num_pairs) < p_a
        zp = rng.standard_normal((d.num_points, t.dim)).astype(np.float32)
        ta, tb = rng.standard_normal((2, d.num_test_pairs, t.dim)).astype(np.float32)
        out.append({
            "chosen": np.where(a_pref[:, None], za, zb),
            "rejected": np.where(a_pref[:, None], zb, za),
            "points": zp,
            "scores": (gold(zp) + t.score_noise * rng.standard_normal(d.num_points))
            .astype(np.float32),
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

    batches: one dict per task with [S, ...] chosen/rejected [S, B, D], points [S, M, D] and
    scores [S, M]; keys: [S] the seeds' init keys. The model maps (z, task) -> (u, s).
    Returns (apply, the params stacked over seeds).
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

    fit = fit_small(workdir, loss_fn=loss_fn, init_params=init,
                    tx=optax.adamw(float(tr.learning_rate), weight_decay=float(tr.weight_decay)),
                    num_steps=int(tr.steps), data=[batches[t] for t in task_ids], seeds=seeds,
                    seed_keys=keys, per_seed_data=True)
    return apply, fit.params


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

    fit = fit_small(workdir, loss_fn=loss_fn, init_params=jnp.zeros_like(ref),
                    tx=optax.adam(lr), num_steps=steps,
                    data={"chosen": jnp.asarray(chosen), "rejected": jnp.asarray(rejected)},
                    seeds=seeds, per_seed_data=True)
    return np.asarray(jax.nn.softmax(fit.params, -1))


def run_seeds(config: ml_collections.ConfigDict, workdir: str) -> dict[int, dict[str, float]]:
    """Every seed of one method: the RM(s) of all seeds in one program each, then curation per
    seed and the DPO policies of all seeds in one program per pair set."""
    method = config.method
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; one of {METHODS}")
    seeds = [int(s) for s in config.seeds]
    data = [make_data(config, s) for s in seeds]
    keys = jnp.stack([jax.random.split(jax.random.key(s), 3) for s in seeds])  # [S, 3]
    batches = [{k: jnp.asarray(np.stack([d["tasks"][t][k] for d in data]))
                for k in ("chosen", "rejected", "points", "scores")} for t in range(len(TASKS))]
    if method == "unified":
        apply, p = train_rm(config, os.path.join(workdir, "rm"), batches,
                            list(range(len(TASKS))), keys[:, 0], seeds)
        params = [p, p]
    else:
        params = []
        for t, name in enumerate(TASKS):
            apply, p = train_rm(config, os.path.join(workdir, f"rm_{name}"), batches, [t],
                                keys[:, t], seeds)
            params.append(p)
    heads = jax.jit(apply, static_argnums=2)
    out = {s: {} for s in seeds}
    cu, task = config.curation, TASKS.index("generation")
    pairs = {"curated": [], "random": []}
    golds = []
    for i, (seed, d) in enumerate(zip(seeds, data)):
        res = out[seed]
        seed_params = [jax.tree.map(lambda x, i=i: x[i], p) for p in params]
        for t, (name, b) in enumerate(zip(TASKS, d["tasks"])):
            ha = np.asarray(heads(seed_params[t], b["test_a"], t))
            hb = np.asarray(heads(seed_params[t], b["test_b"], t))
            res[f"{name}_accuracy"] = float(np.mean((ha[:, 0] > hb[:, 0]) == b["test_a_better"]))
            res[f"{name}_point_accuracy"] = float(np.mean((ha[:, 1] > hb[:, 1])
                                                          == b["test_a_better"]))
        res["mean_accuracy"] = float(np.mean([res[f"{n}_accuracy"] for n in TASKS]))

        # rank-then-sift curation on the generation task (DPO below, all seeds at once)
        rng = np.random.default_rng([seed, 3637])
        cand = rng.standard_normal((cu.num_prompts, cu.num_candidates, config.task.dim)) \
            .astype(np.float32)
        h = np.asarray(heads(seed_params[task], cand, task))  # [P, N, 2]
        u, s = jnp.asarray(h[..., 0]), jnp.asarray(h[..., 1])
        pair_logits = u[:, :, None] - u[:, None, :]
        golds.append(d["golds"][task](cand.reshape(-1, cand.shape[-1])).reshape(cand.shape[:2]))
        pairs["curated"].append(rank_then_sift(pair_logits, s, num_chosen=int(cu.list_size)))
        pairs["random"].append(random_pairs(keys[i, 2], s.shape, pair_logits=pair_logits))
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
            out[seed][f"dpo_gold_{name}"] = float(np.mean(np.sum(pi[i] * g, -1)))
            out[seed][f"{name}_chosen_gold"] = float(np.mean(g[rows, c]))
            out[seed][f"{name}_rejected_gold"] = float(np.mean(g[rows, r]))
            out[seed][f"{name}_pair_gold_correct"] = float(np.mean(g[rows, c] > g[rows, r]))
    for seed, g in zip(seeds, golds):
        out[seed]["ref_gold"] = float(np.mean(g))
        out[seed]["best_candidate_gold"] = float(np.mean(g.max(-1)))
    return out


def claims(results) -> list[Claim]:
    acc = {(m, t): metric(results, m, f"{t}_accuracy") for m in METHODS for t in TASKS}
    gains = {t: acc[("unified", t)] - acc[("task_specific", t)] for t in TASKS}
    cur = metric(results, "unified", "dpo_gold_curated")
    rnd = metric(results, "unified", "dpo_gold_random")
    ref = metric(results, "unified", "ref_gold")
    return [
        Claim(name="the unified RM is >= 2 points more accurate than task-specific RMs on each "
                   "task at low data",
              passed=all(g >= 0.02 for g in gains.values()),
              measured={**{f"{m}_{t}": acc[(m, t)] for m in METHODS for t in TASKS},
                        **{f"gain_{t}": g for t, g in gains.items()}},
              detail="; ".join(f"{t}: unified {acc[('unified', t)]:.3f} vs task-specific "
                               f"{acc[('task_specific', t)]:.3f} ({100 * gains[t]:+.1f} points)"
                               for t in TASKS)),
        Claim(name="DPO on rank-then-sift pairs reaches a higher gold reward than DPO on random "
                   "pairs",
              passed=cur > rnd,
              measured={"curated": cur, "random": rnd, "reference": ref},
              detail=f"policy gold reward: rank-then-sift {cur:.3f} vs random pairs {rnd:.3f} "
                     f"(reference {ref:.3f})"),
    ]


def plots(results, workdir: str) -> list[str]:
    """Per-task accuracy per RM, and the DPO policy's gold reward per pair-curation scheme."""
    methods = [m for m in METHODS if m in results]
    if not methods:
        return []
    stat = lambda m, names: ([results[m]["metrics"][n]["mean"] for n in names],  # noqa: E731
                             [results[m]["metrics"][n]["std"] for n in names])
    folder = os.path.join(workdir, "plots")
    acc = plot_grouped_bars(
        TASKS, {m: stat(m, [f"{t}_accuracy" for t in TASKS]) for m in methods},
        os.path.join(folder, "unified_reward_accuracy.png"),
        title="UnifiedReward toy: joint vs task-specific RMs", ylabel="held-out gold accuracy",
        ylim=(0.5, 1.0))
    names = ["ref_gold", "dpo_gold_random", "dpo_gold_curated", "best_candidate_gold"]
    dpo = plot_grouped_bars(
        ["reference", "DPO random", "DPO rank-sift", "best of 16"],
        {f"{m} RM": stat(m, names) for m in methods},
        os.path.join(folder, "unified_reward_dpo.png"),
        title="UnifiedReward toy: rank-then-sift DPO pairs",
        ylabel="gold reward (generation task)")
    return [acc, dpo]
