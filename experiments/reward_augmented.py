"""Reward-augmented data: score-conditioned relabelling of preference pairs, DPO on it vs DPO.

Paper: Zhang et al. 2024, "Reward-Augmented Data Enhances Direct Preference Alignment of LLMs"
(arXiv 2410.08067).

Setting (a tiny LM with an exact gold reward, `alignax.tasks.scored_sequences`): responses are
all 4^5 = 1024 sequences of 5 tokens over a vocabulary of 4; a prompt is a feature vector
z in R^6; the gold score of a response is additive over positions with prompt-dependent token
utilities, rescaled per prompt to [0, 10] (the best response scores 10). The policy is the
exact prefix-tree LM `alignax.models.sequence_table`, log-linear in its prompt features; the
reference (SFT) policy is a noisy, tempered copy of the gold utilities, good enough that most
of its samples score high, so most preference pairs hold two good responses (the paper's
regime). The transformer bigram testbed (`alignax.tasks.language`) was not used: five seeds of
two methods over a beta grid do not fit the 10-minute CPU budget there, while the sequence
table gives exact log-probs, expected gold and KL for every prompt.

Data: for each training prompt K = 4 responses are sampled from the reference and scored by a
judge (gold + N(0, 1) noise, rounded and clipped to the integers 0..10); the pair is
UltraFeedback's binarisation (chosen = best judged sample, rejected = a random strictly
lower-judged one; `best_vs_lower_pairs`). Each pair keeps its judge scores s_w > s_l.

Variants (the same model class, optimiser, steps, batch and beta grid):
  - `dpo`: DPO on the pairs (x, y_w > y_l). The policy's features are [z, 0, ..., 0] (the score
    blocks zero: no conditioning), at training and at inference.
  - `dpo_ra`: DPO on the reward-augmented data D' = {(x + g(s_w), y_w > y_l),
    (x + g(s_l), y_l > y_w)} (`alignax.data.transforms.reward_augmented_arrays`): twice the
    pairs, each conditioned on a target score. The conditioning g(s) is a feature block that
    interacts with every prompt feature, as a "target score" prefix does in an LM
    (`score_conditioned_features(encoding="both")`: [z, c z, c, e(s) (x) z, e(s)] with
    c = (s - 5) / 5 a shared quality direction and e(s) the one-hot judge score 0..10, a table
    per score level). At inference the policy is conditioned on the top score s = 10.
    The encoding was fixed on a 2-seed pilot on validation gold among "scalar" (8.17),
    "onehot" (8.20) and "both" (8.30); DPO's was 8.53 on the same pilot.
Both start from the reference policy; the reference log-probs in the loss are the reference's
(it ignores the conditioning).

Splits (`split_seeds`): the world (gold utilities, reference) is seeded by the experiment seed;
training prompts and pairs come from data seed 3s, validation prompts from 3s + 1, test prompts
(and held-out test pairs drawn the same way as the training pairs) from 3s + 2.

Selection (the same for both variants): for each beta in `train.betas`, `fit_small` runs
`train.steps` (400) Adam updates and keeps each seed's params at the logged step of the highest
validation gold (exact E_pi[gold] on the validation prompts under the variant's inference
conditioning; `select=("val_gold", "max")`); then beta is chosen per seed on the same
validation gold (`choose_on_validation`). Recorded: `chosen_beta`, `chosen_step`, `val_gold`,
`val_gold_beta_<b>`.

Test metrics (selected params, held-out test prompts, exact expectations):
`test_gold` (mean over prompts of E_pi[gold]); `test_top_decile` (the policy's probability of a
response at or above the 90% quantile of the reference's gold distribution for the prompt: the
reference puts about 0.1 there); `test_high_rejected_logratio` (mean of log pi(y_l) -
log pi_ref(y_l) over the held-out test pairs whose rejected response is good, gold >=
`eval.high_gold`; the same on the training pairs as `train_high_rejected_logratio`);
`test_kl` (KL(pi || pi_ref) per prompt).

What the toy can and cannot show (pilots, 2 seeds each, all with DPO ahead on gold by 1.5-4%):
the gold is additive over tokens and linear in the prompt features, so DPO's implicit reward
class contains it and the binarised pairs identify it; score conditioning spreads the same
pairs over 11 score levels and must extrapolate to s = 10, and its top-condition target
(rank responses by closeness to the target score) is not in the log-linear class. Tried: a
reference with 79% both-good pairs (kappa 1.5), 256 instead of 1024 pairs, the three
encodings above, lower betas. The unlearning mechanism does show (claim 3 below).

Claims (5 seeds, paired 95% t intervals), the notes' pass criterion:
  (1) comparative: DPO+RA's test gold is >= 5% above DPO's (per-seed ratio - 1 >= 0.05);
  (2) comparative: its top-decile rate is >= 1.5x DPO's (per-seed ratio >= 1.5);
  (3) comparative: the log-likelihood of high-gold rejected responses drops less
      (RA's test log-ratio minus DPO's >= 0).
Sanity (not counted): the reference's top-decile rate is about 0.1 by construction.

    alignax run experiments/reward_augmented.py            # full setting, 5 seeds
    alignax run experiments/reward_augmented.py:smoke      # seconds, for the tests
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from alignax import protocol
from alignax.protocol import seed_mean
from alignax.data.transforms import (reward_augmented_arrays, score_conditioned_features,
                                     score_feature_count)
from alignax.experiment import is_smoke
from alignax.losses.direct import dpo_loss
from alignax.models import sequence_table as st
from alignax.tasks.scored_sequences import (MAX_SCORE, ScoredSequenceWorld, best_vs_lower_pairs,
                                            judge_scores)
from alignax.tasks.splits import choose_on_validation, split_seeds
from alignax.train.plots import plot_curves
from alignax.train.small import fit_small, stack_seeds
from alignax.train.writers import read_metrics

METHODS = ("dpo", "dpo_ra")
# compiled once per shape (eager op-by-op evaluation compiles every primitive)
_SEQ_LOGPS = jax.jit(st.sequence_log_probs, static_argnums=0)
_PATH_LOGPS = jax.jit(st.path_log_probs, static_argnums=0)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    smoke = is_smoke(arg)
    c = ml_collections.ConfigDict()
    c.seeds = [0] if smoke else [0, 1, 2, 3, 4]
    c.method = "dpo_ra"
    c.variants = {m: {"method": m} for m in METHODS}
    c.task = dict(vocab_size=4, length=5 if not smoke else 3, dim=6, kappa=0.8, ref_noise=0.5,
                  judge_noise=1.0, samples_per_prompt=4, encoding="both")
    c.data = dict(num_pairs=1024 if not smoke else 64, num_val_prompts=256 if not smoke else 16,
                  num_test_prompts=1024 if not smoke else 32)
    c.train = dict(steps=400 if not smoke else 10, batch_size=128 if not smoke else 32,
                   learning_rate=0.01, eval_every=25 if not smoke else 5,
                   betas=(0.03, 0.1, 0.3) if not smoke else (0.1,))
    c.eval = dict(high_gold=7.0, top_quantile=0.9)
    return c


def _space(config) -> st.SequenceSpace:
    return st.SequenceSpace(int(config.task.vocab_size), int(config.task.length))


def _world(config, seed: int) -> ScoredSequenceWorld:
    t = config.task
    return ScoredSequenceWorld(_space(config), dim=int(t.dim), kappa=float(t.kappa),
                               ref_noise=float(t.ref_noise), seed=seed)


def conditioned(config, z, target):
    """The policy's features of prompts z conditioned on target scores (None: unconditioned)."""
    return score_conditioned_features(z, target, high=MAX_SCORE, encoding=config.task.encoding)


def _ref_log_probs(config, world, ref, z) -> np.ndarray:
    """[P, N] reference log-probs of every response for prompts z [P, D] (the reference
    ignores the conditioning)."""
    feats = conditioned(config, z, None)
    return np.asarray(_SEQ_LOGPS(world.space, ref, jnp.asarray(feats)))


def draw_pairs(config, world, ref, n: int, seed: int) -> dict:
    """n judged preference pairs on fresh prompts drawn with data seed `seed`: K reference
    samples per prompt, judged, binarised best-vs-lower (prompts whose samples tie dropped)."""
    rng = np.random.default_rng([seed, 2022])
    k = int(config.task.samples_per_prompt)
    z = world.prompts(2 * n, seed)
    logp = _ref_log_probs(config, world, ref, z)
    gold = world.gold(z)
    p = np.exp(logp - logp.max(1, keepdims=True))
    cdf = np.cumsum(p / p.sum(1, keepdims=True), 1)
    samples = (cdf[:, None, :] < rng.random((len(z), k, 1))).sum(-1)  # inverse CDF, [P, K]
    samples = np.minimum(samples, world.space.num_sequences - 1)
    sample_gold = np.take_along_axis(gold, samples, 1)
    scores = judge_scores(sample_gold, float(config.task.judge_noise), rng)
    keep, ci, ri = best_vs_lower_pairs(scores, rng)
    rows = np.flatnonzero(keep)[:n]
    if len(rows) < n:
        raise ValueError(f"only {len(rows)} untied prompts of {len(z)}; need {n}")
    take = lambda a, i: np.take_along_axis(a[rows], i[rows, None], 1)[:, 0]  # noqa: E731
    chosen, rejected = take(samples, ci), take(samples, ri)
    return {"z": z[rows], "chosen": chosen.astype(np.int32), "rejected": rejected.astype(np.int32),
            "s_w": take(scores, ci), "s_l": take(scores, ri),
            "gold_w": np.take_along_axis(gold[rows], chosen[:, None], 1)[:, 0],
            "gold_l": np.take_along_axis(gold[rows], rejected[:, None], 1)[:, 0],
            "ref_w": np.take_along_axis(logp[rows], chosen[:, None], 1)[:, 0],
            "ref_l": np.take_along_axis(logp[rows], rejected[:, None], 1)[:, 0]}


def training_pairs(config, method: str, pairs: dict) -> dict:
    """The rows the variant trains on: features, chosen, rejected and their reference
    log-probs. dpo: the pairs, unconditioned; dpo_ra: D' (2n rows), conditioned on g(s)."""
    base = {k: pairs[k] for k in ("z", "chosen", "rejected", "ref_w", "ref_l")}
    if method == "dpo":
        return {"feats": conditioned(config, base["z"], None), "chosen": base["chosen"],
                "rejected": base["rejected"], "ref_chosen": base["ref_w"],
                "ref_rejected": base["ref_l"]}
    aug = reward_augmented_arrays({"z": base["z"], "chosen": base["chosen"],
                                   "rejected": base["rejected"]}, pairs["s_w"], pairs["s_l"])
    # the reference log-probs travel with their responses (swapped in the second half)
    aug["ref_chosen"] = np.concatenate([base["ref_w"], base["ref_l"]])
    aug["ref_rejected"] = np.concatenate([base["ref_l"], base["ref_w"]])
    return {"feats": conditioned(config, aug["z"], aug["target_score"]),
            "chosen": aug["chosen"], "rejected": aug["rejected"],
            "ref_chosen": aug["ref_chosen"], "ref_rejected": aug["ref_rejected"]}


def inference_score(method: str) -> float | None:
    """The target score a variant is conditioned on at inference (dpo: unconditioned)."""
    return MAX_SCORE if method == "dpo_ra" else None


def top_decile_mask(gold: np.ndarray, ref_logp: np.ndarray, q: float) -> np.ndarray:
    """[P, N] responses at or above the q-quantile of the reference's gold distribution."""
    order = np.argsort(gold, 1)
    g = np.take_along_axis(gold, order, 1)
    cdf = np.cumsum(np.exp(np.take_along_axis(ref_logp, order, 1)), 1)
    idx = np.minimum((cdf < q).sum(1), gold.shape[1] - 1)
    return gold >= g[np.arange(len(g)), idx][:, None]


def make_data(config, seed: int) -> dict:
    method = config.method
    world = _world(config, seed)
    dim = int(config.task.dim)
    ref = world.reference_params(extra_features=score_feature_count(
        dim, high=MAX_SCORE, encoding=config.task.encoding) - dim)
    seeds = split_seeds(seed)
    train = draw_pairs(config, world, ref, int(config.data.num_pairs), seeds.train)
    rows = training_pairs(config, method, train)
    s_inf = inference_score(method)
    zv = world.prompts(int(config.data.num_val_prompts), seeds.validation)
    zt = world.prompts(int(config.data.num_test_prompts), seeds.test)
    test_pairs = draw_pairs(config, world, ref, int(config.data.num_test_prompts), seeds.test)
    gold_t, ref_t = world.gold(zt), _ref_log_probs(config, world, ref, zt)
    high = float(config.eval.high_gold)
    return {
        "train": rows, "train_pairs": train, "test_pairs": test_pairs, "ref": ref,
        "val": {"feats": conditioned(config, zv, s_inf), "gold": world.gold(zv)},
        "test": {"feats": conditioned(config, zt, s_inf), "gold": gold_t,
                 "ref_logp": ref_t,
                 "top": top_decile_mask(gold_t, ref_t, float(config.eval.top_quantile))},
        "train_high": train["gold_l"] >= high, "test_high": test_pairs["gold_l"] >= high,
    }


def _pair_logps(space, params, feats, idx):
    return st.path_log_probs(space, params, idx, feats)


def train(config, workdir: str, data: dict, ref_stacked, beta: float):
    """DPO on the variant's rows for every seed at once, early-stopped on validation gold."""
    space, tr = _space(config), config.train
    batch_size = int(tr.batch_size)

    def batch_fn(d, rng):
        idx = jax.random.randint(rng, (batch_size,), 0, d["chosen"].shape[0])
        return jax.tree.map(lambda a: a[idx], d)

    def loss_fn(p, b):
        pc = _pair_logps(space, p, b["feats"], b["chosen"])
        pr = _pair_logps(space, p, b["feats"], b["rejected"])
        loss, m = dpo_loss(pc, pr, b["ref_chosen"], b["ref_rejected"], beta=beta)
        return loss.mean(), {"reward_accuracy": m["reward_accuracies"].mean(),
                             "margin": m["reward_margins"].mean()}

    def eval_fn(p, val):
        return {"val_gold": st.expectation(space, p, val["gold"], val["feats"]).mean()}

    return fit_small(workdir, loss_fn=loss_fn, init_params=ref_stacked, per_seed_init=True,
                     tx=optax.adam(float(tr.learning_rate)), num_steps=int(tr.steps),
                     data=data["train"], seeds=list(config.seeds), per_seed_data=True,
                     batch_fn=batch_fn, has_aux=True, steps_per_log=int(tr.eval_every),
                     eval_fn=eval_fn, eval_data=data["val"], select=("val_gold", "max"))


def test_metrics(config, params, ref, d) -> dict:
    """One seed's test metrics of `params` (its rows of the stacked params)."""
    space = _space(config)
    test = d["test"]
    lp = np.asarray(_SEQ_LOGPS(space, params, jnp.asarray(test["feats"])))
    p = np.exp(lp)
    out = {"test_gold": float((p * test["gold"]).sum(1).mean()),
           "test_top_decile": float((p * test["top"]).sum(1).mean()),
           "test_kl": float((p * (lp - test["ref_logp"])).sum(1).mean()),
           "test_ref_gold": float((np.exp(test["ref_logp"]) * test["gold"]).sum(1).mean()),
           "test_ref_top_decile": float((np.exp(test["ref_logp"]) * test["top"]).sum(1).mean())}
    s_inf = inference_score(config.method)
    for split in ("train", "test"):
        pairs, high = d[f"{split}_pairs"], d[f"{split}_high"]
        feats = jnp.asarray(conditioned(config, pairs["z"], s_inf))
        rej = np.asarray(_PATH_LOGPS(space, params, jnp.asarray(pairs["rejected"]), feats))
        ratio = rej - pairs["ref_l"]
        out[f"{split}_high_rejected_logratio"] = float(ratio[high].mean())
        out[f"{split}_low_rejected_logratio"] = float(ratio[~high].mean())
        out[f"{split}_high_rejected_fraction"] = float(high.mean())
    pairs = d["train_pairs"]
    out["train_both_good_fraction"] = float(np.mean(
        (pairs["gold_w"] >= config.eval.high_gold) & (pairs["gold_l"] >= config.eval.high_gold)))
    out["train_label_gold_agreement"] = float(np.mean(pairs["gold_w"] > pairs["gold_l"]))
    return out


def run_seeds(config: ml_collections.ConfigDict, workdir: str) -> dict[int, dict[str, float]]:
    if config.method not in METHODS:
        raise ValueError(f"unknown method {config.method!r}; one of {METHODS}")
    seeds = [int(s) for s in config.seeds]
    per_seed = [make_data(config, s) for s in seeds]
    data = {"train": stack_seeds([d["train"] for d in per_seed]),
            "val": stack_seeds([d["val"] for d in per_seed])}
    ref_stacked = stack_seeds([d["ref"] for d in per_seed])
    fits = {}
    for beta in config.train.betas:
        fits[float(beta)] = train(config, os.path.join(workdir, f"beta_{beta:g}"), data,
                                  ref_stacked, float(beta))
    out = {}
    for i, (seed, d) in enumerate(zip(seeds, per_seed)):
        chosen, record = choose_on_validation(
            {b: float(f.best_score[i]) for b, f in fits.items()}, lambda x: x)
        fit = fits[chosen]
        params = jax.tree.map(lambda x, i=i: x[i], fit.best_params)
        res = test_metrics(config, params, d["ref"], d)
        res.update({"chosen_beta": float(chosen), "chosen_step": float(fit.best_step[i]),
                    "val_gold": float(fit.best_score[i]),
                    **{f"val_gold_beta_{b:g}": float(f.best_score[i]) for b, f in fits.items()}})
        out[seed] = res
    return out


def _ratio(results, metric: str, minus_one: bool = False) -> dict:
    a = protocol.per_seed(results, "dpo_ra", metric)
    b = protocol.per_seed(results, "dpo", metric)
    return {s: a[s] / b[s] - (1.0 if minus_one else 0.0) for s in a if s in b}


def claims(results) -> list[protocol.Claim]:
    m = {v: {k: seed_mean(results, v, k) for k in ("test_gold", "test_top_decile", "test_kl",
                                                 "test_high_rejected_logratio",
                                                 "train_high_rejected_logratio", "chosen_beta")}
         for v in METHODS}
    ref_top = protocol.per_seed(results, "dpo", "test_ref_top_decile")
    ref_gold = seed_mean(results, "dpo", "test_ref_gold")
    both = seed_mean(results, "dpo", "train_both_good_fraction")
    desc = {v: f"{v}: gold {m[v]['test_gold']:.3f}, top-decile {m[v]['test_top_decile']:.3f}, "
               f"KL {m[v]['test_kl']:.2f}, mean chosen beta {m[v]['chosen_beta']:.2f}"
            for v in METHODS}
    common = (f"{desc['dpo_ra']}; {desc['dpo']}; reference gold {ref_gold:.3f}; "
              f"{both:.0%} of training pairs have both responses with gold >= 7. The toy's gold "
              f"is additive and linear in the prompt features, inside DPO's implicit-reward "
              f"class; 2-seed pilots with 79% both-good pairs, 256 pairs, and scalar / one-hot "
              f"/ both score encodings all had DPO ahead by 1.5-4% (module docstring)")
    return [
        protocol.decide(
            "DPO on reward-augmented data raises the test gold by >= 5% over DPO "
            "(per-seed ratio - 1)", _ratio(results, "test_gold", minus_one=True),
            kind="comparative", at_least=0.05, detail=common),
        protocol.decide(
            "DPO+RA's top-decile gold rate is >= 1.5x DPO's (per-seed ratio)",
            _ratio(results, "test_top_decile"), kind="comparative", at_least=1.5,
            detail=f"top decile = at or above the 90% quantile of the reference's gold "
                   f"distribution per test prompt; {common}"),
        protocol.compare(
            "the log-likelihood of high-gold rejected responses drops less under DPO+RA "
            "(test pairs, log pi - log pi_ref, RA minus DPO >= 0)", results,
            ("dpo_ra", "test_high_rejected_logratio"), ("dpo", "test_high_rejected_logratio"),
            at_least=0.0,
            detail=f"held-out pairs with rejected gold >= 7: DPO+RA "
                   f"{m['dpo_ra']['test_high_rejected_logratio']:.2f}, DPO "
                   f"{m['dpo']['test_high_rejected_logratio']:.2f}; on the training pairs "
                   f"{m['dpo_ra']['train_high_rejected_logratio']:.2f} vs "
                   f"{m['dpo']['train_high_rejected_logratio']:.2f}"),
        protocol.sanity(
            "the reference puts about 10% of its mass in its own top decile",
            all(0.05 <= v <= 0.3 for v in ref_top.values()),
            {f"ref_top_decile_seed_{s}": v for s, v in ref_top.items()},
            "by construction of the quantile (ties can add mass)"),
    ]


def plots(results, workdir: str) -> list[str]:
    """Validation gold along training for each variant and beta (mean +- std over seeds)."""
    curves = {}
    for variant, res in results.items():
        vdir = os.path.join(workdir, variant)
        if not os.path.isdir(vdir):
            continue
        for name in sorted(os.listdir(vdir)):
            path = os.path.join(vdir, name, "metrics.jsonl")
            if not name.startswith("beta_") or not os.path.exists(path):
                continue
            rows = read_metrics(path)
            ys = np.array([[row[f"seed_{s}/eval/val_gold"] for row in rows]
                           for s in res["per_seed"]])
            xs = [row["step"] for row in rows]
            curves[f"{variant} {name}"] = (xs, ys.mean(0), ys.std(0))
    out = os.path.join(workdir, "plots", "reward_augmented_val_gold.png")
    plot_curves(curves, out, title="DPO vs DPO on reward-augmented data: validation gold",
                xlabel="logged step", ylabel="E_pi[gold] on validation prompts")
    return [out]
