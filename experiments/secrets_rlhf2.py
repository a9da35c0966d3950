"""Secrets of RLHF II: preference strength from an RM ensemble, and denoised reward modeling.

Paper: Wang et al. 2024, "Secrets of RLHF in Large Language Models Part II: Reward Modeling"
(arXiv 2401.06080).

Setting (feature-vector testbed): responses are vectors x ~ N(0, I_8) with a frozen non-linear
gold reward (a random tanh MLP, `alignax.tasks.features.MLPReward`). The training set has
`num_pairs` pairs: 80% ordinary pairs labelled by the gold ordering and 20% near-ties
(|gold margin| < 0.1) labelled by a fair coin; then 25% of all labels are flipped at random. The
reward model is a 1-hidden-layer MLP (32 GELU units, `alignax.models.mlp`) trained with full-batch
Adam (800 steps), long enough that it starts to fit the flipped labels (the regime where noise
hurts). Every training runs all seeds of a variant in one `alignax.train.small.fit_small` program
under the variant's run folder (`ensemble/`, `rm/`: metrics, checkpoints).

Preference strength (section 3 of the paper): M = 8 reward models trained on bootstrap resamples
of the pairs (one training run of the stacked members; 400 steps, i.e. early-stopped estimators)
give per-pair
margins d_{i,m} = r_m(y_c) - r_m(y_r); mu_i and sigma_i are their mean and std
(`alignax.losses.reward.preference_strength`). A member fitted on pair i has partly memorised its
(possibly wrong) label, so mu_i is taken over the members for which pair i is out of bag (all
members where a pair is in every bag).

Variants: `vanilla` (BT on the noisy labels); `flip` (labels with mu_i < 0 flipped,
`flip_by_strength`); `denoised` (flip + label smoothing eps on the most ambiguous pairs by
|mu_i| + the adaptive margin -log sigma(Delta - gamma mu_hat_i) with mu_hat_i the flipped
strength divided by its mean; both through `bradley_terry_loss(margin=, label_smoothing=)`).
MetaRM and the contrastive term are not run here. Metrics: clean held-out pair accuracy (gold
ordering, fresh pairs), and best-of-16 gold reward: for each of 1000 queries, 16 candidates
x ~ N(0, I), the one the RM scores highest is picked and its gold reward averaged.

Claims checked: (1) Spearman(mu_i, gold margin of the observed label) >= 0.7; (2) the denoised
recipe raises clean held-out accuracy >= 3 points over vanilla BT; (3) best-of-16 gold reward is
higher with the denoised RM than with the vanilla one.

    alignax run experiments/secrets_rlhf2.py            # full setting, 3 seeds
    alignax run experiments/secrets_rlhf2.py:smoke      # seconds, for the tests
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from alignax.experiment import Claim, is_smoke, metric
from alignax.losses.reward import bradley_terry_loss, flip_by_strength, preference_strength
from alignax.models.mlp import MLPConfig, make_mlp
from alignax.ops import spearman
from alignax.tasks.features import MLPReward
from alignax.train.small import fit_small

METHODS = ("vanilla", "flip", "denoised")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    smoke = is_smoke(arg)
    c = ml_collections.ConfigDict()
    c.seeds = [0] if smoke else [0, 1, 2]
    c.method = "denoised"
    c.variants = {m: {"method": m} for m in METHODS}
    c.task = dict(dim=8, gold_hidden=32, tie_fraction=0.2, tie_width=0.1, flip_rate=0.25)
    c.data = dict(num_pairs=4000 if not smoke else 300, num_test_pairs=4000 if not smoke else 300,
                  num_queries=1000 if not smoke else 100, num_candidates=16)
    c.model = dict(hidden=(32,))
    c.train = dict(steps=800 if not smoke else 60, learning_rate=3e-3, weight_decay=0.0)
    c.ensemble = dict(members=8, steps=400 if not smoke else 30)
    # denoising: smooth the `smooth_fraction` most ambiguous pairs (smallest |mu|) with eps;
    # adaptive margin gamma * mu / mean(|mu|) on the flipped strengths
    c.denoise = dict(smooth_fraction=0.2, label_smoothing=0.3, margin_gamma=0.5)
    return c


def make_data(config, seed: int) -> dict:
    """Noisy training pairs (with near-ties), clean test pairs and best-of-N candidate pools."""
    task, data = config.task, config.data
    gold = MLPReward(dim=task.dim, hidden=task.gold_hidden, seed=seed)
    rng = np.random.default_rng([seed, 68])
    n = data.num_pairs
    n_tie = int(round(task.tie_fraction * n))
    xa = rng.standard_normal((n - n_tie, task.dim))
    xb = rng.standard_normal((n - n_tie, task.dim))
    ties_a, ties_b = [], []
    while sum(len(t) for t in ties_a) < n_tie:  # near-ties by rejection sampling
        ca, cb = rng.standard_normal((4 * n, task.dim)), rng.standard_normal((4 * n, task.dim))
        keep = np.abs(gold(ca) - gold(cb)) < task.tie_width
        ties_a.append(ca[keep])
        ties_b.append(cb[keep])
    xa = np.concatenate([xa, np.concatenate(ties_a)[:n_tie]])
    xb = np.concatenate([xb, np.concatenate(ties_b)[:n_tie]])
    is_tie = np.arange(n) >= n - n_tie
    a_better = np.where(is_tie, rng.uniform(size=n) < 0.5, gold(xa) > gold(xb))
    flipped = rng.uniform(size=n) < task.flip_rate
    a_chosen = a_better ^ flipped
    chosen = np.where(a_chosen[:, None], xa, xb).astype(np.float32)
    rejected = np.where(a_chosen[:, None], xb, xa).astype(np.float32)
    ta = rng.standard_normal((data.num_test_pairs, task.dim))
    tb = rng.standard_normal((data.num_test_pairs, task.dim))
    cand = rng.standard_normal((data.num_queries, data.num_candidates, task.dim))
    return {
        "chosen": chosen, "rejected": rejected,
        "gold_margin": (gold(chosen) - gold(rejected)).astype(np.float32),
        "flipped": flipped, "is_tie": is_tie,
        "test_a": ta.astype(np.float32), "test_b": tb.astype(np.float32),
        "test_a_better": gold(ta) > gold(tb),
        "candidates": cand.astype(np.float32),
        "candidate_gold": gold(cand.reshape(-1, task.dim)).reshape(cand.shape[:2]),
    }


def make_rm(config):
    """The reward model: an MLP [..., dim] -> rewards [...]."""
    return make_mlp(MLPConfig(in_dim=int(config.task.dim), hidden=tuple(config.model.hidden),
                              out_dim=1, activation="gelu"))


def make_rm_loss(rm):
    """Weighted BT loss with per-pair margin and label smoothing, averaged with the weights.

    batch: chosen/rejected [B, D]; weights, margin, smoothing [B].
    """
    def loss_fn(params, batch):
        losses = bradley_terry_loss(rm.apply(params, batch["chosen"]),
                                    rm.apply(params, batch["rejected"]),
                                    margin=batch["margin"], label_smoothing=batch["smoothing"])
        return jnp.sum(batch["weights"] * losses) / jnp.sum(batch["weights"])

    return loss_fn


def _optimizer(config):
    return optax.adamw(float(config.train.learning_rate),
                       weight_decay=float(config.train.weight_decay))


def bootstrap_counts(key, num_pairs: int, members: int) -> jax.Array:
    """Multiplicities [M, B] of the B pairs in M bootstrap resamples."""
    return jax.vmap(lambda k: jnp.bincount(jax.random.randint(k, (num_pairs,), 0, num_pairs),
                                           length=num_pairs))(
        jax.random.split(key, members)).astype(jnp.float32)


def ensemble_strength(config, workdir: str, chosen, rejected, seeds, keys, *, members: int,
                      steps: int):
    """Bootstrap RM ensemble of every seed -> (out-of-bag mu, sigma, all-member mu), each [S, B].

    chosen/rejected [S, B, D]; keys [S] (one per seed: bootstrap draws and member inits). M
    members per seed are fitted on bootstrap resamples of the B pairs (multiplicities as loss
    weights); they are one params tree with a leading [M] axis trained on the sum of the members'
    losses, which Adam updates exactly as M separate fits, and all seeds train in one
    `fit_small` program. d_{i,m} = r_m(y_c) - r_m(y_r); mu_i averages the members for which
    pair i is out of bag (all members if it is in every bag); sigma_i is the std over all members.
    """
    rm = make_rm(config)
    member_loss = make_rm_loss(rm)
    num_pairs = chosen.shape[1]
    split = jax.vmap(jax.random.split)(keys)  # [S, 2]: bootstrap, init
    counts = jax.vmap(lambda k: bootstrap_counts(k, num_pairs, members))(split[:, 0])  # [S, M, B]
    zeros = jnp.zeros((num_pairs,), jnp.float32)

    def loss_fn(params, batch):
        losses = jax.vmap(lambda p, w: member_loss(p, {
            "chosen": batch["chosen"], "rejected": batch["rejected"], "weights": w,
            "margin": zeros, "smoothing": zeros}))(params, batch["counts"])
        return jnp.sum(losses), {"member_loss_mean": jnp.mean(losses)}

    def init(key):  # the seed's key: members initialised from split(init key, M)
        return jax.vmap(rm.init)(jax.random.split(jax.random.split(key)[1], members))

    data = {"chosen": jnp.asarray(chosen), "rejected": jnp.asarray(rejected), "counts": counts}
    fit = fit_small(workdir, loss_fn=loss_fn, init_params=init, tx=_optimizer(config),
                    num_steps=int(steps), data=data, seeds=seeds, seed_keys=keys,
                    per_seed_data=True, has_aux=True)

    @jax.jit
    @jax.vmap
    def strength(params, d):
        margins = jax.vmap(lambda p: rm.apply(p, d["chosen"]) - rm.apply(p, d["rejected"]))(
            params)  # [M, B]
        mu_all, sigma = preference_strength(margins)
        oob = d["counts"] == 0
        n_oob = oob.sum(0)
        mu_oob = jnp.where(n_oob > 0, jnp.sum(jnp.where(oob, margins, 0.0), 0)
                           / jnp.maximum(n_oob, 1), mu_all)
        return mu_oob, sigma, mu_all

    return tuple(np.asarray(a) for a in strength(fit.params, data))


def fit_rm(config, workdir: str, data: dict, seeds, keys):
    """The final RM of every seed in one `fit_small` program: full-batch AdamW on the weighted
    BT loss. data: [S, B, ...] chosen, rejected, weights, margin, smoothing; keys [S] the init
    keys. Returns (the model, the SmallFit)."""
    rm = make_rm(config)
    fit = fit_small(workdir, loss_fn=make_rm_loss(rm), init_params=rm.init,
                    tx=_optimizer(config), num_steps=int(config.train.steps),
                    data=jax.tree.map(jnp.asarray, data), seeds=seeds, seed_keys=keys,
                    per_seed_data=True)
    return rm, fit


def run_seeds(config: ml_collections.ConfigDict, workdir: str) -> dict[int, dict[str, float]]:
    """Every seed of one variant: the strength ensemble (flip, denoised) and the final RM, each
    trained for all seeds in one program under `workdir`."""
    method = config.method
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; one of {METHODS}")
    seeds = [int(s) for s in config.seeds]
    per_seed = [make_data(config, s) for s in seeds]
    stack = lambda name: np.stack([d[name] for d in per_seed])  # noqa: E731
    keys = jnp.stack([jax.random.split(jax.random.key(s)) for s in seeds])  # [S, 2]: ens, rm
    chosen, rejected, gold_margin = stack("chosen"), stack("rejected"), stack("gold_margin")
    shape = gold_margin.shape  # [S, B]
    margin, smoothing = np.zeros(shape, np.float32), np.zeros(shape, np.float32)
    out: dict[int, dict[str, float]] = {s: {} for s in seeds}
    if method != "vanilla":
        mu, sigma, mu_all = ensemble_strength(
            config, os.path.join(workdir, "ensemble"), chosen, rejected, seeds, keys[:, 0],
            members=int(config.ensemble.members), steps=int(config.ensemble.steps))
        chosen, rejected, strength, flipped = (np.array(a) for a in jax.vmap(flip_by_strength)(
            jnp.asarray(chosen), jnp.asarray(rejected), jnp.asarray(mu)))
        for i, (s, d) in enumerate(zip(seeds, per_seed)):
            o = out[s]
            o["spearman_strength_gold"] = float(spearman(mu[i], d["gold_margin"]))
            o["spearman_strength_gold_all_members"] = float(spearman(mu_all[i], d["gold_margin"]))
            wrong = d["gold_margin"] < 0
            o["flip_precision"] = float(np.mean(wrong[mu[i] < 0])) if np.any(mu[i] < 0) else 0.0
            o["flip_recall"] = float(np.mean(mu[i][wrong] < 0)) if np.any(wrong) else 0.0
            o["mean_sigma"] = float(np.mean(sigma[i]))
            o["flipped_fraction"] = float(np.mean(flipped[i]))
            if method == "denoised":
                dn = config.denoise
                ambiguous = strength[i] <= np.quantile(strength[i], dn.smooth_fraction)
                smoothing[i] = np.where(ambiguous, dn.label_smoothing, 0.0)
                m = dn.margin_gamma * strength[i] / np.mean(strength[i])
                margin[i] = np.where(ambiguous, 0.0, m)
                o["smoothed_tie_fraction"] = float(np.mean(d["is_tie"][ambiguous]))
        os.makedirs(workdir, exist_ok=True)
        np.savez(os.path.join(workdir, "strength.npz"), seeds=np.array(seeds), mu=mu,
                 sigma=sigma, gold_margin=gold_margin, is_tie=stack("is_tie"))
    rm, fit = fit_rm(config, os.path.join(workdir, "rm"),
                     {"chosen": chosen, "rejected": rejected, "weights": np.ones(shape, np.float32),
                      "margin": margin, "smoothing": smoothing}, seeds, keys[:, 1])

    @jax.jit
    @jax.vmap
    def score(params, d):
        return (rm.apply(params, d["test_a"]), rm.apply(params, d["test_b"]),
                rm.apply(params, d["chosen"]) - rm.apply(params, d["rejected"]),
                rm.apply(params, d["candidates"]))  # [Q, N]

    # train_label_fit is measured on the observed (noisy, unflipped) labels
    evaluated = {k: jnp.asarray(stack(k)) for k in
                 ("test_a", "test_b", "chosen", "rejected", "candidates")}
    sa, sb, train_margin, cand_scores = (np.asarray(a) for a in score(fit.params, evaluated))
    for i, (s, d) in enumerate(zip(seeds, per_seed)):
        o = out[s]
        o["clean_test_accuracy"] = float(np.mean((sa[i] > sb[i]) == d["test_a_better"]))
        o["train_label_fit"] = float(np.mean(train_margin[i] > 0))
        pick = np.argmax(cand_scores[i], axis=1)
        o["bon_gold_reward"] = float(np.mean(d["candidate_gold"][np.arange(len(pick)), pick]))
        o["oracle_bon_gold_reward"] = float(np.mean(d["candidate_gold"].max(axis=1)))
        o["final_train_loss"] = float(fit.final_loss[i])
    return out


def claims(results) -> list[Claim]:
    rho = metric(results, "denoised", "spearman_strength_gold")
    acc = {m: metric(results, m, "clean_test_accuracy") for m in METHODS}
    bon = {m: metric(results, m, "bon_gold_reward") for m in METHODS}
    gain = acc["denoised"] - acc["vanilla"]
    return [
        Claim(name="preference strength tracks the gold margin: Spearman(mu_i, gold margin) >= 0.7",
              passed=rho >= 0.7, measured={"spearman": rho},
              detail=f"Spearman(mu, gold margin) = {rho:.3f} (out-of-bag ensemble mean)"),
        Claim(name="flip + label smoothing + adaptive margin raise clean held-out accuracy by >= 3 "
                   "points over vanilla BT",
              passed=gain >= 0.03,
              measured={"denoised": acc["denoised"], "vanilla": acc["vanilla"],
                        "flip_only": acc["flip"], "gain": gain},
              detail=f"denoised {acc['denoised']:.3f} vs vanilla {acc['vanilla']:.3f} "
                     f"(flip only {acc['flip']:.3f}); gain {100 * gain:.1f} points"),
        Claim(name="best-of-16 gold reward is higher with the denoised RM than with vanilla BT",
              passed=bon["denoised"] > bon["vanilla"],
              measured={"denoised": bon["denoised"], "vanilla": bon["vanilla"],
                        "flip_only": bon["flip"]},
              detail=f"BoN-16 gold reward denoised {bon['denoised']:.3f} vs vanilla "
                     f"{bon['vanilla']:.3f} (flip only {bon['flip']:.3f})"),
    ]


def plots(results, workdir: str) -> list[str]:
    """Strength mu against the gold margin (first seed) and accuracy / BoN gold reward per
    variant."""
    from alignax.train.plots import plot_scatter, plot_variant_bars

    paths = []
    path = os.path.join(workdir, "denoised", "strength.npz")
    if os.path.exists(path):
        z = np.load(path, allow_pickle=False)
        tie = z["is_tie"][0]
        paths.append(plot_scatter(
            {"ordinary": (z["gold_margin"][0][~tie], z["mu"][0][~tie]),
             "near-tie": (z["gold_margin"][0][tie], z["mu"][0][tie])},
            os.path.join(workdir, "plots", "secrets_rlhf2_strength.png"),
            title=f"Ensemble strength vs gold margin (seed {int(z['seeds'][0])})",
            xlabel="gold margin of the observed label", ylabel="ensemble strength mu", hline=0.0))
    paths.append(plot_variant_bars(
        results, [("clean_test_accuracy", "clean held-out accuracy"),
                  ("bon_gold_reward", "best-of-16 gold reward")],
        os.path.join(workdir, "plots", "secrets_rlhf2.png"),
        title="Secrets of RLHF II: denoising 25% flipped labels with ensemble strength",
        variants=METHODS))
    return paths
