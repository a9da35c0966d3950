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

Splits (docs/protocol.md): experiment seed s draws the pretraining sequences and the 2048
training pairs from data seed `split_seeds(s).train` (3s), 1024 validation pairs (labelled like
the training pairs, BT draws) from `.validation` (3s + 1), and the 1024 held-out test pairs and
the best-of-n prompts from `.test` (3s + 2). Model initialisation and minibatch order use the
experiment seed (100 s + m for the LMs, 100 s + 50 + j for the heads).

Selection on validation, equal for every RM: each single RM (hence every ensemble member) is
fine-tuned for the same 400 steps and early-stopped on its validation pair accuracy
(`fit_small(select=("val_accuracy", "max"))`, every 25 steps); the chosen steps are recorded
(`chosen_steps_mean/min/max`, `val_accuracy_mean`). The pretraining recipe (400 steps) and the
learning rates are the first version's and not tuned; lambda = 1 of mean - lambda std is fixed.

Metrics on test (`test_*`): `test_gold_n<n>_<rm>` best-of-n gold of each RM type and aggregation,
`test_single<i>_accuracy`, `test_underspec_*`.

Claims (5 seeds; a seed re-draws the backbones, the pairs and the candidates; paired 95% t
intervals over seeds):
(1) comparative: at n = 256 with mean aggregation, gold(pretrain ens) - gold(fine-tune ens) >= 0
    (the whole interval; was "> 1 s.e." at 3 seeds);
(2) comparative: gold(fine-tune ens) - gold(single) >= 0 at n = 256 (single = the mean over the
    nine single RMs);
(3) threshold: underspecification: of the pairs of single RMs whose test accuracies are within 1
    point, the share whose n = 256 gold rewards differ by more than the standard error of their
    prompt-paired difference is >= 0.5 (a majority; per seed, then the interval over seeds);
(4) sanity: every ensemble and aggregation stays below the oracle best-of-n at n = 256 (the
    oracle picks by the gold reward itself: true by construction).

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
from alignax import protocol
from alignax.experiment import is_smoke
from alignax.losses.reward import bradley_terry_loss
from alignax.rewards.aggregate import ensemble
from alignax.sampling.sampler import sample
from alignax.tasks.gold import token_score_reward
from alignax.tasks.language import BOS_ID, BigramLanguage
from alignax.tasks.policies import gold_preference_pairs
from alignax.tasks.splits import split_seeds
from alignax.train.plots import plot_curves
from alignax.train.small import fit_small, minibatch_fn, pair_accuracy_selection

AGGREGATIONS = ("mean", "min", "mean_minus_std")
ENSEMBLES = ("pretrain", "finetune")

# the gold as one compiled program per shape (called eagerly, jax compiles every primitive
# separately); the same numbers as the library function. (`ensemble` stays eager: jitted, its
# mean - lam * std rounds differently and can change a best-of-n pick.)
_token_score_reward = jax.jit(token_score_reward)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    smoke = is_smoke(arg)
    c = ml_collections.ConfigDict()
    c.seeds = [0] if smoke else [0, 1, 2, 3, 4]
    c.variants = {"bon": {}}
    task = dict(vocab_size=32, prompt_len=4, response_len=12, concentration=0.5,
                label_temperature=0.05, seed=0)
    c.task = task
    c.model = dict(d_model=32, n_layers=1, n_heads=2, d_ff=64)
    c.num_members = 5  # backbones in the pretrain ensemble = fine-tuning seeds in the other
    c.pretrain = dict(num_sequences=4096 if not smoke else 128, steps=400 if not smoke else 4,
                      batch_size=64, learning_rate=3e-3)
    c.finetune = dict(num_pairs=2048 if not smoke else 64, num_eval_pairs=1024 if not smoke
                      else 64, num_val_pairs=1024 if not smoke else 64, label_temperature=0.1,
                      steps=400 if not smoke else 4, steps_per_log=25 if not smoke else 4,
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

    return fit_small(workdir, loss_fn=loss_fn, init_params=jax.vmap(lm.init)(keys),
                     per_seed_init=True, tx=_adam(learning_rate), num_steps=steps,
                     data=jax.device_put(seqs), seeds=seeds,
                     seed_keys=jax.vmap(jax.random.fold_in, in_axes=(0, None))(keys, 1),
                     per_seed_data=True, batch_fn=minibatch_fn(batch_size), desc="pretrain")


def finetune_rms(workdir: str, rm, backbones, seeds, labels, chosen, rejected, *, steps,
                 batch_size, learning_rate, val=None, steps_per_log=None):
    """BT fine-tuning of backbone r + a fresh scalar head for each row r, in one program.

    backbones: decoder params stacked [R, ...]; seeds [R]: row r's head is initialised from
    `k = jax.random.key(seeds[r])` and its batches are drawn from `fold_in(k, 2)` (rows with the
    same seed share the head init and the batch order); labels [R]: distinct ints naming the
    rows in the metrics; chosen/rejected [R, N, T] ids of each row; val: None, or
    {"chosen", "rejected"} [R, V, T] validation pairs of each row: then every row is
    early-stopped on its validation pair accuracy (logged every `steps_per_log` steps). Returns
    the `SmallFit` (params [R, ...]; with `val`, best_params / best_step / best_score)."""
    keys = jnp.stack([jax.random.key(int(s)) for s in seeds])
    heads = jax.vmap(lambda k: rm.init(k)["score"])(keys)
    mask = jnp.ones((2 * batch_size, chosen.shape[-1]), bool)

    def loss_fn(params, batch):
        rewards = rm.apply(params, jnp.concatenate([batch["chosen"], batch["rejected"]]), mask)
        return bradley_terry_loss(rewards[:batch_size], rewards[batch_size:]).mean()

    select = {}
    if val is not None:
        vmask = jnp.ones(val["chosen"].shape[1:], bool)
        select = pair_accuracy_selection(lambda params, x: rm.apply(params, x, vmask), val,
                                         steps_per_log=steps_per_log)
    return fit_small(workdir, loss_fn=loss_fn, init_params={"decoder": backbones, "score": heads},
                     per_seed_init=True, tx=_adam(learning_rate), num_steps=steps,
                     data={"chosen": jax.device_put(chosen), "rejected": jax.device_put(rejected)},
                     seeds=labels,
                     seed_keys=jax.vmap(jax.random.fold_in, in_axes=(0, None))(keys, 2),
                     per_seed_data=True, batch_fn=minibatch_fn(batch_size), desc="finetune",
                     **select)


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
    gold_fn = lambda responses, prompts: _token_score_reward(responses, scores_v)  # noqa: E731
    k = int(config.num_members)
    model_cfg = {**config.model.to_dict(), "vocab_size": task.vocab_size,
                 "max_len": task.seq_len}
    lm, rm = make_model(model_cfg, "lm"), make_model(model_cfg, "reward")

    # 1. pretrain K backbones + the sampling policy (next-token prediction) per seed, from
    #    seeds 100 s + m (m = 0..K; K is the policy)
    pre = config.pretrain
    splits = [split_seeds(seed) for seed in seeds]
    seqs = [np.stack([e["input_ids"] for e in task.sft_examples(int(pre.num_sequences),
                                                                 sp.train)])
            for sp in splits]
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
    def pair_ids(n, data_seed):
        ps = gold_preference_pairs(task, gold_fn, n, seed=data_seed,
                                   temperature=float(ft.label_temperature))
        return (np.stack([p["chosen_ids"] for p in ps]),
                np.stack([p["rejected_ids"] for p in ps]))

    train_pairs = [pair_ids(int(ft.num_pairs), sp.train) for sp in splits]
    val_pairs = [pair_ids(int(ft.num_val_pairs), sp.validation) for sp in splits]
    chosen = np.stack([c for c, _ in train_pairs])
    rejected = np.stack([r for _, r in train_pairs])
    val_chosen = np.stack([c for c, _ in val_pairs])
    val_rejected = np.stack([r for _, r in val_pairs])
    backbone_rows = np.array([b for _, b in itertools.product(seeds, [b for b, _ in singles])])
    seed_rows = np.repeat(np.arange(len(seeds)), len(singles))
    ft_fit = finetune_rms(
        os.path.join(workdir, "finetune"), rm,
        jax.tree.map(lambda x: x[seed_rows, backbone_rows], lm_params["decoder"]),
        [100 * seed + 50 + j for seed in seeds for _, j in singles],
        [100 * seed + i for seed in seeds for i in range(len(singles))],
        chosen[seed_rows], rejected[seed_rows], steps=int(ft.steps),
        batch_size=int(ft.batch_size), learning_rate=float(ft.learning_rate),
        val={"chosen": val_chosen[seed_rows], "rejected": val_rejected[seed_rows]},
        steps_per_log=int(ft.steps_per_log))
    rm_params = jax.tree.map(
        lambda x: np.asarray(x).reshape(len(seeds), len(singles), *x.shape[1:]),
        ft_fit.best_params)
    chosen_steps = np.asarray(ft_fit.best_step, np.float64).reshape(len(seeds), len(singles))
    val_acc = np.asarray(ft_fit.best_score, np.float64).reshape(len(seeds), len(singles))

    out = {}
    for i, seed in enumerate(seeds):
        out[seed] = _best_of_n(config, task, lm, rm, jax.tree.map(lambda x: x[i, k], lm_params),
                               jax.tree.map(lambda x: x[i], rm_params), seed)
        out[seed]["lm_final_nll"] = float(np.mean(lm_loss[i]))
        out[seed].update(chosen_steps_mean=float(chosen_steps[i].mean()),
                         chosen_steps_min=float(chosen_steps[i].min()),
                         chosen_steps_max=float(chosen_steps[i].max()),
                         val_accuracy_mean=float(val_acc[i].mean()))
    return out


def _best_of_n(config, task, lm, rm, policy_params, rm_params, seed):
    """One seed's held-out accuracies of its single RMs (params [S, ...]) and the best-of-n gold
    rewards of the singles, the ensembles and the oracle."""
    scores_v = task.token_scores()
    gold_fn = lambda responses, prompts: _token_score_reward(responses, scores_v)  # noqa: E731
    k = int(config.num_members)
    ft = config.finetune
    singles, members = member_layout(k)

    # test accuracy against the gold ordering (independent pairs, clean), test data seed
    test_seed = split_seeds(seed).test
    ev = gold_preference_pairs(task, gold_fn, int(ft.num_eval_pairs), seed=test_seed,
                               temperature=float(ft.label_temperature))
    ev_c = np.stack([p["chosen_ids"] for p in ev])
    ev_r = np.stack([p["rejected_ids"] for p in ev])
    better = np.array([p["label_correct"] for p in ev]) > 0.5

    # 3. one candidate list of n_max samples per held-out prompt from the policy
    ns = [int(n) for n in config.ns]
    n_max = max(ns)
    prompts = task.eval_prompts(int(config.num_prompts), test_seed)
    ids = np.concatenate([np.full((len(prompts), 1), BOS_ID, np.int32), prompts], axis=1)
    out = sample(lm, policy_params, jnp.asarray(ids), jnp.ones(ids.shape, bool),
                 jax.random.key(seed), max_new_tokens=task.response_len, num_samples=n_max)
    responses = np.asarray(out.tokens)
    cand_ids = np.concatenate([np.asarray(out.prompt_ids), responses], axis=1)
    gold = np.asarray(_token_score_reward(responses, scores_v)).reshape(-1, n_max)
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

    result = {"test_single_accuracy_mean": float(accuracy.mean()),
              "test_single_accuracy_range": float(accuracy.max() - accuracy.min())}
    for i, acc in enumerate(accuracy):
        result[f"test_single{i}_accuracy"] = float(acc)
        result[f"test_single{i}_gold_n{n_max}"] = float(single_curves[i, -1].mean())
    for name, curve in picks.items():
        for j, n in enumerate(ns):
            result[f"test_gold_n{n}_{name}"] = float(curve[j].mean())
        result[f"test_se_n{n_max}_{name}"] = float(curve[-1].std(ddof=1)
                                                   / np.sqrt(curve.shape[1]))
    result.update({f"test_{k}": v for k, v in
                   _underspecification(accuracy, single_curves[:, -1]).items()})
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

def claims(results) -> list[protocol.Claim]:
    per = results["bon"]["per_seed"]
    n = max(int(k.split("_")[2][1:]) for k in next(iter(per.values()))
            if k.startswith("test_gold_n"))

    def key(name):
        return ("bon", f"test_gold_n{n}_{name}")

    def mean(name):
        return float(np.mean(list(protocol.per_seed(results, *key(name)).values())))

    means = {v: mean(v) for v in ("pretrain_mean", "finetune_mean", "single", "oracle")}
    aggs = {f"{e}_{a}": mean(f"{e}_{a}") for e in ENSEMBLES for a in AGGREGATIONS}
    shown = (f"test means at n={n}: pretrain ens {means['pretrain_mean']:.4f}, fine-tune ens "
             f"{means['finetune_mean']:.4f}, single (mean of the 9 single RMs) "
             f"{means['single']:.4f}, oracle {means['oracle']:.4f}; other aggregations: "
             + ", ".join(f"{k} {v:.4f}" for k, v in aggs.items()))
    out = [
        protocol.compare(
            f"at n={n}, best-of-n gold: pretrain ensemble > fine-tune ensemble (mean "
            "aggregation)", results, key("pretrain_mean"), key("finetune_mean"), at_least=0.0,
            detail=shown),
        protocol.compare(
            f"at n={n}, best-of-n gold: fine-tune ensemble > single RM (mean aggregation; single "
            "= the mean over the nine single RMs)", results, key("finetune_mean"), key("single"),
            at_least=0.0, detail=shown),
    ]
    frac = protocol.per_seed(results, "bon", "test_underspec_frac_differ")
    close = protocol.per_seed(results, "bon", "test_underspec_close_pairs")
    max_z = protocol.per_seed(results, "bon", "test_underspec_max_z")
    out.append(protocol.decide(
        "underspecification: of the single RMs within 1 point of test accuracy, a majority of "
        f"pairs give n={n} best-of-n gold rewards that differ by more than their s.e.", frac,
        at_least=0.5,
        detail=f"{np.mean(list(close.values())):.1f} close pairs per seed (of 36); largest z per "
               f"seed (mean) {np.nanmean(list(max_z.values())):.2f}; a seed without close pairs "
               "is NaN (INCONCLUSIVE)"))
    below = all(v < means["oracle"] for v in aggs.values())
    out.append(protocol.sanity(
        f"every ensemble stays below the oracle best-of-n at n={n}", below,
        {"oracle": means["oracle"], **aggs},
        f"by construction: the oracle picks by the gold reward; oracle {means['oracle']:.4f}, "
        f"best ensemble {max(aggs.values()):.4f}"))
    return out


def plots(results, workdir: str) -> list[str]:
    """Gold reward of best-of-n against log2 n per RM type (mean +- std over seeds)."""
    stats = results["bon"]["metrics"]
    ns = sorted({int(key.split("_")[2][1:]) for key in stats if key.endswith("_oracle")
                 and key.startswith("test_gold_n")})
    names = sorted(key[len(f"test_gold_n{ns[0]}_"):] for key in stats
                   if key.startswith(f"test_gold_n{ns[0]}_"))
    curves = {name: (np.log2(ns), [stats[f"test_gold_n{n}_{name}"]["mean"] for n in ns],
                     [stats[f"test_gold_n{n}_{name}"]["std"] for n in ns]) for name in names}
    return [plot_curves(curves, os.path.join(workdir, "plots", "bon_gold.png"),
                        title="Best-of-n with single RMs and RM ensembles",
                        xlabel="log2 n (best-of-n)", ylabel="gold reward of the chosen response")]
