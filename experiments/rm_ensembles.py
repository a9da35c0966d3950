"""Helping or Herding? Reward Model Ensembles Mitigate but do not Eliminate Reward Hacking.

Paper: Eisenstein et al. 2023 (arXiv 2312.09244). Reward models that agree on held-out
preference accuracy still disagree off-distribution (underspecification), and best-of-n exploits
their errors. Ensembles help: members that differ in their *pretraining* seed err more
independently than members that share one backbone and differ only in the fine-tuning seed, so a
pretrain ensemble resists hacking better than a fine-tune ensemble, which beats a single RM; no
ensemble reaches the gold reward of best-of-n by the gold reward itself.

Setting: the bigram language testbed (alignax.tasks). Five tiny transformer backbones (1 layer,
d_model 32) are "pretrained" by next-token prediction on the language from five seeds; reward
models are the backbone plus a scalar head, fully fine-tuned with the Bradley-Terry loss on 2048
pairs labelled by BT draws from the gold reward (mean token score). Nine single RMs are trained
per seed (the LMs of all seeds in one `alignax.train.small.fit_small` program,
<variant>/pretrain, the RMs of all seeds in another, <variant>/finetune): the pretrain ensemble
is backbones 0-4 (fine-tuning seeds 0-4), the fine-tune ensemble is backbone 0 with fine-tuning
seeds 0-4 (its first member is shared).
Each ensemble aggregates its members' rewards by mean, min or mean - std. Best-of-n samples 256
candidates per held-out prompt from the policy once and picks, for every n in
1, 2, 4, ..., 256, the top candidate among the first n; the metric is the picked response's gold
reward (mean over prompts). The oracle picks by the gold reward. The sampling policy is a sixth
LM pretrained (same recipe, own seed) alongside the backbones and used by no reward model.
"single" is the mean over the nine single RMs; held-out accuracy is agreement with the gold
ordering on 1024 independent pairs of the language.

Claims checked (3 seeds; a seed re-draws the backbones, the pairs and the candidates):
(1) at n = 256 with mean aggregation, gold(pretrain ens) > gold(fine-tune ens) > gold(single),
    each gap at least one standard error of the per-seed gaps;
(2) underspecification: single RMs whose held-out accuracies are within 1 point of each other
    give n = 256 gold rewards that differ by more than the standard error of their difference
    (a majority of such pairs, averaged over seeds);
(3) every ensemble and aggregation stays below the oracle best-of-n at n = 256.

    alignax run experiments/rm_ensembles.py              # full setting
    alignax run experiments/rm_ensembles.py:smoke        # seconds, for the tests
"""

from __future__ import annotations

import itertools
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from alignax.algorithms.common import make_model
from alignax.experiment import Claim, is_smoke
from alignax.losses.reward import bradley_terry_loss
from alignax.rewards.aggregate import ensemble
from alignax.sampling.sampler import sample
from alignax.tasks.gold import token_score_reward
from alignax.tasks.language import BOS_ID, BigramLanguage
from alignax.tasks.policies import gold_preference_pairs
from alignax.train.plots import plot_curves
from alignax.train.small import fit_small

AGGREGATIONS = ("mean", "min", "mean_minus_std")
ENSEMBLES = ("pretrain", "finetune")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    smoke = is_smoke(arg)
    c = ml_collections.ConfigDict()
    c.seeds = [0] if smoke else [0, 1, 2]
    c.variants = {"bon": {}}
    task = dict(vocab_size=32, prompt_len=4, response_len=12, concentration=0.5,
                label_temperature=0.05, seed=0)
    c.task = task
    c.model = dict(d_model=32, n_layers=1, n_heads=2, d_ff=64)
    c.num_members = 5  # backbones in the pretrain ensemble = fine-tuning seeds in the other
    c.pretrain = dict(num_sequences=4096 if not smoke else 128, steps=400 if not smoke else 4,
                      batch_size=64, learning_rate=3e-3)
    c.finetune = dict(num_pairs=2048 if not smoke else 64, num_eval_pairs=1024 if not smoke
                      else 64, label_temperature=0.1, steps=400 if not smoke else 4,
                      batch_size=64, learning_rate=1e-3)
    c.num_prompts = 128 if not smoke else 8
    c.ns = [2 ** k for k in range(9)] if not smoke else [1, 2, 4]
    c.lam = 1.0  # mean - lam * std
    return c


# --- training (all members of all seeds at once, `fit_small`) ----------------------------------

def _adam(learning_rate):
    return optax.chain(optax.clip_by_global_norm(1.0), optax.adam(learning_rate))


def pretrain_lms(workdir: str, lm, seqs, seeds, *, steps, batch_size, learning_rate):
    """Next-token pretraining of one LM per seed, all in one `fit_small` program.

    seqs: [R, N, T] the training sequences of each run (row r for seed r); seeds [R]: LM r is
    initialised from `k = jax.random.key(seeds[r])` and draws its batches from
    `fold_in(k, 1)`. Returns the `SmallFit` (params [R, ...], final_loss [R])."""
    keys = jnp.stack([jax.random.key(int(s)) for s in seeds])
    mask = jnp.ones((batch_size, seqs.shape[-1]), bool)

    def loss_fn(params, ids):
        logits = lm.apply(params, ids, mask)[:, :-1]
        return optax.softmax_cross_entropy_with_integer_labels(logits, ids[:, 1:]).mean()

    def batch_fn(seqs, rng):
        return seqs[jax.random.randint(rng, (batch_size,), 0, seqs.shape[0])]

    return fit_small(workdir, loss_fn=loss_fn, init_params=jax.vmap(lm.init)(keys),
                     per_seed_init=True, tx=_adam(learning_rate), num_steps=steps,
                     data=jnp.asarray(seqs), seeds=seeds,
                     seed_keys=jax.vmap(jax.random.fold_in, in_axes=(0, None))(keys, 1),
                     per_seed_data=True, batch_fn=batch_fn, desc="pretrain")


def finetune_rms(workdir: str, rm, backbones, seeds, labels, chosen, rejected, *, steps,
                 batch_size, learning_rate):
    """BT fine-tuning of backbone r + a fresh scalar head for each row r, in one program.

    backbones: decoder params stacked [R, ...]; seeds [R]: row r's head is initialised from
    `k = jax.random.key(seeds[r])` and its batches are drawn from `fold_in(k, 2)` (rows with the
    same seed share the head init and the batch order); labels [R]: distinct ints naming the
    rows in the metrics; chosen/rejected [R, N, T] ids of each row. Returns the `SmallFit`
    (params [R, ...])."""
    keys = jnp.stack([jax.random.key(int(s)) for s in seeds])
    heads = jax.vmap(lambda k: rm.init(k)["score"])(keys)
    mask = jnp.ones((2 * batch_size, chosen.shape[-1]), bool)

    def loss_fn(params, batch):
        rewards = rm.apply(params, jnp.concatenate([batch["chosen"], batch["rejected"]]), mask)
        return bradley_terry_loss(rewards[:batch_size], rewards[batch_size:]).mean()

    def batch_fn(data, rng):
        idx = jax.random.randint(rng, (batch_size,), 0, data["chosen"].shape[0])
        return {"chosen": data["chosen"][idx], "rejected": data["rejected"][idx]}

    return fit_small(workdir, loss_fn=loss_fn, init_params={"decoder": backbones, "score": heads},
                     per_seed_init=True, tx=_adam(learning_rate), num_steps=steps,
                     data={"chosen": jnp.asarray(chosen), "rejected": jnp.asarray(rejected)},
                     seeds=labels,
                     seed_keys=jax.vmap(jax.random.fold_in, in_axes=(0, None))(keys, 2),
                     per_seed_data=True, batch_fn=batch_fn, desc="finetune")


def score_members(rm, params, ids, chunk: int = 4096):
    """Rewards of every member on ids [N, T] -> [K, N] (numpy), in zero-padded chunks of one
    shape (one compilation)."""
    n = len(ids)
    chunk = min(chunk, n)
    padded = np.concatenate([ids, np.zeros((-n % chunk, ids.shape[1]), ids.dtype)])
    fn = jax.jit(jax.vmap(rm.apply, in_axes=(0, None, None)))
    mask = np.ones((chunk, ids.shape[1]), bool)
    return np.concatenate([np.asarray(fn(params, padded[i:i + chunk], mask))
                           for i in range(0, len(padded), chunk)], axis=1)[:, :n]


# --- best-of-n ---------------------------------------------------------------------------------

def bon_gold(scores, gold, ns):
    """Gold reward of the top-scored candidate among the first n, per prompt.

    scores, gold: [B, n_max]. Returns [len(ns), B]: reusing one candidate list for every n.
    """
    rows = np.arange(scores.shape[0])
    return np.stack([gold[rows, np.argmax(scores[:, :n], axis=1)] for n in ns])


def member_layout(num_members: int):
    """(backbone, fine-tuning seed) of each single RM; the two ensembles' member indices.

    The pretrain ensemble is (k, k) for k < K; the fine-tune ensemble is backbone 0 with seeds
    0..K-1, sharing member (0, 0).
    """
    singles = [(k, k) for k in range(num_members)] + [(0, j) for j in range(1, num_members)]
    pretrain = list(range(num_members))
    finetune = [0] + list(range(num_members, 2 * num_members - 1))
    return singles, {"pretrain": pretrain, "finetune": finetune}


def run_seeds(config: ml_collections.ConfigDict, workdir: str) -> dict[int, dict[str, float]]:
    """All seeds of the variant: the LMs of every seed pretrain in one program
    (<workdir>/pretrain), the single RMs of every seed fine-tune in one program
    (<workdir>/finetune), then best-of-n per seed."""
    seeds = [int(s) for s in config.seeds]
    task = BigramLanguage(**config.task.to_dict())
    scores_v = task.token_scores()
    gold_fn = lambda responses, prompts: token_score_reward(responses, scores_v)  # noqa: E731
    k = int(config.num_members)
    model_cfg = {**config.model.to_dict(), "vocab_size": task.vocab_size,
                 "max_len": task.seq_len}
    lm, rm = make_model(model_cfg, "lm"), make_model(model_cfg, "reward")

    # 1. pretrain K backbones + the sampling policy (next-token prediction) per seed, from
    #    seeds 100 s + m (m = 0..K; K is the policy)
    pre = config.pretrain
    seqs = [np.stack([e["input_ids"] for e in task.sft_examples(int(pre.num_sequences),
                                                                 1000 + seed)])
            for seed in seeds]
    pre_fit = pretrain_lms(
        os.path.join(workdir, "pretrain"), lm, np.repeat(np.stack(seqs), k + 1, axis=0),
        [100 * seed + m for seed in seeds for m in range(k + 1)], steps=int(pre.steps),
        batch_size=int(pre.batch_size), learning_rate=float(pre.learning_rate))
    lm_params = jax.tree.map(lambda x: np.asarray(x).reshape(len(seeds), k + 1, *x.shape[1:]),
                             pre_fit.params)
    lm_loss = pre_fit.final_loss.reshape(len(seeds), k + 1)

    # 2. fine-tune every seed's single RMs on its gold-BT pairs: backbone b, head and batch order
    #    from seed 100 s + 50 + j for each (b, j) of member_layout
    ft = config.finetune
    singles, _ = member_layout(k)
    pairs = [gold_preference_pairs(task, gold_fn, int(ft.num_pairs), seed=seed,
                                   temperature=float(ft.label_temperature)) for seed in seeds]
    chosen = np.stack([np.stack([p["chosen_ids"] for p in ps]) for ps in pairs])
    rejected = np.stack([np.stack([p["rejected_ids"] for p in ps]) for ps in pairs])
    backbone_rows = np.array([b for _, b in itertools.product(seeds, [b for b, _ in singles])])
    seed_rows = np.repeat(np.arange(len(seeds)), len(singles))
    ft_fit = finetune_rms(
        os.path.join(workdir, "finetune"), rm,
        jax.tree.map(lambda x: x[seed_rows, backbone_rows], lm_params["decoder"]),
        [100 * seed + 50 + j for seed in seeds for _, j in singles],
        [100 * seed + i for seed in seeds for i in range(len(singles))],
        chosen[seed_rows], rejected[seed_rows], steps=int(ft.steps),
        batch_size=int(ft.batch_size), learning_rate=float(ft.learning_rate))
    rm_params = jax.tree.map(
        lambda x: np.asarray(x).reshape(len(seeds), len(singles), *x.shape[1:]), ft_fit.params)

    out = {}
    for i, seed in enumerate(seeds):
        out[seed] = _best_of_n(config, task, lm, rm, jax.tree.map(lambda x: x[i, k], lm_params),
                               jax.tree.map(lambda x: x[i], rm_params), seed)
        out[seed]["lm_final_nll"] = float(np.mean(lm_loss[i]))
    return out


def _best_of_n(config, task, lm, rm, policy_params, rm_params, seed):
    """One seed's held-out accuracies of its single RMs (params [S, ...]) and the best-of-n gold
    rewards of the singles, the ensembles and the oracle."""
    scores_v = task.token_scores()
    gold_fn = lambda responses, prompts: token_score_reward(responses, scores_v)  # noqa: E731
    k = int(config.num_members)
    ft = config.finetune
    singles, members = member_layout(k)

    # held-out accuracy against the gold ordering (independent pairs, clean)
    ev = gold_preference_pairs(task, gold_fn, int(ft.num_eval_pairs), seed=20_000 + seed,
                               temperature=float(ft.label_temperature))
    ev_c = np.stack([p["chosen_ids"] for p in ev])
    ev_r = np.stack([p["rejected_ids"] for p in ev])
    better = np.array([p["label_correct"] for p in ev]) > 0.5

    # 3. one candidate list of n_max samples per held-out prompt from the policy
    ns = [int(n) for n in config.ns]
    n_max = max(ns)
    prompts = task.eval_prompts(int(config.num_prompts), 70 + seed)
    ids = np.concatenate([np.full((len(prompts), 1), BOS_ID, np.int32), prompts], axis=1)
    out = sample(lm, policy_params, jnp.asarray(ids), jnp.ones(ids.shape, bool),
                 jax.random.key(seed), max_new_tokens=task.response_len, num_samples=n_max)
    responses = np.asarray(out.tokens)
    cand_ids = np.concatenate([np.asarray(out.prompt_ids), responses], axis=1)
    gold = np.asarray(token_score_reward(responses, scores_v)).reshape(-1, n_max)
    # one scoring pass (one compiled shape) over held-out pairs and candidates
    everything = score_members(rm, rm_params, np.concatenate([ev_c, ev_r, cand_ids]))
    n_ev = len(ev_c)
    margin = everything[:, :n_ev] - everything[:, n_ev:2 * n_ev]
    accuracy = np.mean((margin > 0) == better[None], axis=1)  # [S]
    member_scores = everything[:, 2 * n_ev:].reshape(len(singles), -1, n_max)

    picks = {"oracle": bon_gold(gold, gold, ns)}
    single_curves = np.stack([bon_gold(s, gold, ns) for s in member_scores])  # [S, len(ns), B]
    picks["single"] = single_curves.mean(axis=0)
    for name in ENSEMBLES:
        sub = member_scores[np.array(members[name])]
        for agg in AGGREGATIONS:
            agg_scores = np.asarray(ensemble(sub.reshape(k, -1), mode=agg,
                                             lam=float(config.lam))).reshape(-1, n_max)
            picks[f"{name}_{agg}"] = bon_gold(agg_scores, gold, ns)

    result = {"single_accuracy_mean": float(accuracy.mean()),
              "single_accuracy_range": float(accuracy.max() - accuracy.min())}
    for i, acc in enumerate(accuracy):
        result[f"single{i}_accuracy"] = float(acc)
        result[f"single{i}_gold_n{n_max}"] = float(single_curves[i, -1].mean())
    for name, curve in picks.items():
        for j, n in enumerate(ns):
            result[f"gold_n{n}_{name}"] = float(curve[j].mean())
        result[f"se_n{n_max}_{name}"] = float(curve[-1].std(ddof=1) / np.sqrt(curve.shape[1]))
    result.update(_underspecification(accuracy, single_curves[:, -1]))
    return result


def _underspecification(accuracy, gold_per_prompt, tol: float = 0.01):
    """Pairs of single RMs with held-out accuracy within `tol`: does their BoN gold differ by
    more than the standard error of the (prompt-paired) difference?"""
    close, differ, zs = 0, 0, []
    for i, j in itertools.combinations(range(len(accuracy)), 2):
        if abs(accuracy[i] - accuracy[j]) > tol + 1e-9:
            continue
        d = gold_per_prompt[i] - gold_per_prompt[j]
        se = d.std(ddof=1) / np.sqrt(len(d))
        z = abs(d.mean()) / max(se, 1e-12)
        close += 1
        differ += int(z > 1.0)
        zs.append(z)
    return {"underspec_close_pairs": float(close),
            "underspec_frac_differ": float(differ / close) if close else float("nan"),
            "underspec_max_z": float(max(zs)) if zs else float("nan")}


# --- claims and plots --------------------------------------------------------------------------

def _gap(results, a, b, n):
    per = results["bon"]["per_seed"]
    d = np.array([m[f"gold_n{n}_{a}"] - m[f"gold_n{n}_{b}"] for m in per.values()])
    se = d.std(ddof=1) / np.sqrt(len(d)) if len(d) > 1 else float("inf")
    return float(d.mean()), float(se)


def claims(results) -> list[Claim]:
    per = results["bon"]["per_seed"]
    n = max(int(k.split("_")[1][1:]) for k in next(iter(per.values())) if k.startswith("gold_n"))
    out = []
    g1, s1 = _gap(results, "pretrain_mean", "finetune_mean", n)
    g2, s2 = _gap(results, "finetune_mean", "single", n)
    means = {v: float(np.mean([m[f"gold_n{n}_{v}"] for m in per.values()]))
             for v in ("pretrain_mean", "finetune_mean", "single", "oracle")}
    out.append(Claim(
        name=f"at n={n}, gold(pretrain ens) > gold(fine-tune ens) > gold(single) (mean "
             "aggregation), each gap >= 1 s.e. over seeds",
        passed=bool(g1 >= s1 and g1 > 0 and g2 >= s2 and g2 > 0),
        measured={**{f"gold_{k}": v for k, v in means.items()}, "gap_pretrain_finetune": g1,
                  "se_pretrain_finetune": s1, "gap_finetune_single": g2,
                  "se_finetune_single": s2},
        detail=f"pretrain {means['pretrain_mean']:.4f}, finetune {means['finetune_mean']:.4f}, "
               f"single {means['single']:.4f}; gaps {g1:.4f} (se {s1:.4f}), "
               f"{g2:.4f} (se {s2:.4f})"))
    close = [m["underspec_close_pairs"] for m in per.values()]
    frac = [m["underspec_frac_differ"] for m in per.values() if m["underspec_close_pairs"] > 0]
    mean_frac = float(np.mean(frac)) if frac else float("nan")
    out.append(Claim(
        name="single RMs with held-out accuracy within 1 point give n-max BoN gold rewards "
             "that differ by more than their s.e. (a majority of such pairs)",
        passed=bool(frac and len(frac) == len(close) and mean_frac > 0.5),
        measured={"close_pairs_per_seed": float(np.mean(close)), "frac_differ": mean_frac,
                  "max_z": float(np.nanmean([m["underspec_max_z"] for m in per.values()]))},
        detail=f"{np.mean(close):.1f} close pairs per seed; {mean_frac:.2f} of them differ by "
               "more than 1 s.e."))
    oracle = means["oracle"]
    ens = {f"{e}_{a}": float(np.mean([m[f"gold_n{n}_{e}_{a}"] for m in per.values()]))
           for e in ENSEMBLES for a in AGGREGATIONS}
    out.append(Claim(
        name=f"every ensemble stays below the oracle best-of-n at n={n}",
        passed=bool(all(v < oracle for v in ens.values())),
        measured={"oracle": oracle, **ens},
        detail=f"oracle {oracle:.4f}; best ensemble {max(ens.values()):.4f}"))
    return out


def plots(results, workdir: str) -> list[str]:
    """Gold reward of best-of-n against log2 n per RM type (mean +- std over seeds)."""
    stats = results["bon"]["metrics"]
    ns = sorted({int(key.split("_")[1][1:]) for key in stats if key.endswith("_oracle")
                 and key.startswith("gold_n")})
    names = sorted(key[len(f"gold_n{ns[0]}_"):] for key in stats
                   if key.startswith(f"gold_n{ns[0]}_"))
    curves = {name: (np.log2(ns), [stats[f"gold_n{n}_{name}"]["mean"] for n in ns],
                     [stats[f"gold_n{n}_{name}"]["std"] for n in ns]) for name in names}
    return [plot_curves(curves, os.path.join(workdir, "plots", "bon_gold.png"),
                        title="Best-of-n with single RMs and RM ensembles",
                        xlabel="log2 n (best-of-n)", ylabel="gold reward of the chosen response")]
