"""Secrets of RLHF II: preference strength from an RM ensemble, and denoised reward modeling.

Paper: Wang et al. 2024, "Secrets of RLHF in Large Language Models Part II: Reward Modeling"
(arXiv 2401.06080).

Setting (feature-vector testbed): responses are vectors x ~ N(0, I_8) with a frozen non-linear
gold reward (a random tanh MLP, `alignax.tasks.features.MLPReward`). The training set has
`num_pairs` pairs: 80% ordinary pairs labelled by the gold ordering and 20% near-ties
(|gold margin| < 0.1) labelled by a fair coin; then 25% of all labels are flipped at random. The
reward model is a 1-hidden-layer MLP (32 GELU units) trained with full-batch Adam (lax.scan,
800 steps), long enough that it starts to fit the flipped labels (the regime where noise hurts).

Preference strength (section 3 of the paper): M = 8 reward models trained on bootstrap resamples
of the pairs (one vmapped training run; 400 steps, i.e. early-stopped estimators) give per-pair
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

import functools
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from alignax.experiment import Claim, is_smoke, metric
from alignax.losses.reward import bradley_terry_loss, flip_by_strength, preference_strength
from alignax.ops import spearman
from alignax.tasks.features import MLPReward

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


def _init_mlp(key, dims):
    params = []
    for k, (a, b) in zip(jax.random.split(key, len(dims) - 1), zip(dims[:-1], dims[1:])):
        params.append({"w": jax.random.normal(k, (a, b), jnp.float32) / np.sqrt(a),
                       "b": jnp.zeros((b,), jnp.float32)})
    return params


def _apply_mlp(params, x):
    for layer in params[:-1]:
        x = jax.nn.gelu(x @ layer["w"] + layer["b"])
    return (x @ params[-1]["w"] + params[-1]["b"])[..., 0]


_score = jax.jit(_apply_mlp)


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


@functools.partial(jax.jit, static_argnames=("dims", "steps", "lr", "wd"))
def fit_rm(key, chosen, rejected, weights, margin, smoothing, *, dims, steps, lr, wd):
    """Full-batch Adam on the weighted BT loss (per-pair margin and label smoothing) -> params.

    chosen/rejected [B, D]; weights, margin, smoothing [B]; returns (params, final loss).
    """
    tx = optax.adamw(lr, weight_decay=wd)

    def loss_fn(p):
        losses = bradley_terry_loss(_apply_mlp(p, chosen), _apply_mlp(p, rejected),
                                    margin=margin, label_smoothing=smoothing)
        return jnp.sum(weights * losses) / jnp.sum(weights)

    def step(carry, _):
        p, opt = carry
        loss, g = jax.value_and_grad(loss_fn)(p)
        upd, opt = tx.update(g, opt, p)
        return (optax.apply_updates(p, upd), opt), loss

    p0 = _init_mlp(key, dims)
    (p, _), losses = jax.lax.scan(step, (p0, tx.init(p0)), None, length=steps)
    return p, losses[-1]


@functools.partial(jax.jit, static_argnames=("members", "dims", "steps", "lr", "wd"))
def ensemble_strength(key, chosen, rejected, *, members, dims, steps, lr, wd):
    """Bootstrap RM ensemble -> (out-of-bag mu [B], sigma [B], all-member mu [B]).

    M members are fitted (one vmapped run) on bootstrap resamples of the B pairs (multiplicities
    as loss weights); d_{i,m} = r_m(y_c) - r_m(y_r); mu_i averages the members for which pair i
    is out of bag (all members if it is in every bag); sigma_i is the std over all members.
    """
    n = chosen.shape[0]
    k_boot, k_init = jax.random.split(key)
    counts = jax.vmap(lambda k: jnp.bincount(jax.random.randint(k, (n,), 0, n), length=n))(
        jax.random.split(k_boot, members)).astype(jnp.float32)  # [M, B]
    zeros = jnp.zeros((n,), jnp.float32)
    fit = functools.partial(fit_rm, dims=dims, steps=steps, lr=lr, wd=wd)
    params, _ = jax.vmap(fit, in_axes=(0, None, None, 0, None, None))(
        jax.random.split(k_init, members), chosen, rejected, counts, zeros, zeros)
    margins = jax.vmap(lambda p: _apply_mlp(p, chosen) - _apply_mlp(p, rejected))(params)
    mu_all, sigma = preference_strength(margins)
    oob = counts == 0
    n_oob = oob.sum(0)
    mu_oob = jnp.where(n_oob > 0, jnp.sum(jnp.where(oob, margins, 0.0), 0)
                       / jnp.maximum(n_oob, 1), mu_all)
    return mu_oob, sigma, mu_all


def _hparams(config, steps):
    return dict(dims=(config.task.dim, *config.model.hidden, 1), steps=int(steps),
                lr=float(config.train.learning_rate), wd=float(config.train.weight_decay))


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
    seed, method = int(config.seed), config.method
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; one of {METHODS}")
    data = make_data(config, seed)
    key_ens, key_rm = jax.random.split(jax.random.key(seed))
    n = len(data["chosen"])
    chosen, rejected = data["chosen"], data["rejected"]
    margin, smoothing = np.zeros(n, np.float32), np.zeros(n, np.float32)
    out: dict[str, float] = {}
    if method != "vanilla":
        mu, sigma, mu_all = (np.asarray(a) for a in ensemble_strength(
            key_ens, chosen, rejected, members=int(config.ensemble.members),
            **_hparams(config, config.ensemble.steps)))
        out["spearman_strength_gold"] = float(spearman(mu, data["gold_margin"]))
        out["spearman_strength_gold_all_members"] = float(spearman(mu_all, data["gold_margin"]))
        wrong = data["gold_margin"] < 0
        out["flip_precision"] = float(np.mean(wrong[mu < 0])) if np.any(mu < 0) else 0.0
        out["flip_recall"] = float(np.mean(mu[wrong] < 0)) if np.any(wrong) else 0.0
        out["mean_sigma"] = float(np.mean(sigma))
        chosen, rejected, strength, flipped = (np.asarray(a) for a in flip_by_strength(
            jnp.asarray(chosen), jnp.asarray(rejected), jnp.asarray(mu)))
        out["flipped_fraction"] = float(np.mean(flipped))
        if method == "denoised":
            d = config.denoise
            ambiguous = strength <= np.quantile(strength, d.smooth_fraction)
            smoothing = np.where(ambiguous, d.label_smoothing, 0.0).astype(np.float32)
            margin = (d.margin_gamma * strength / np.mean(strength)).astype(np.float32)
            margin = np.where(ambiguous, 0.0, margin).astype(np.float32)
            out["smoothed_tie_fraction"] = float(np.mean(data["is_tie"][ambiguous]))
    params, final_loss = fit_rm(key_rm, chosen, rejected, np.ones(n, np.float32), margin,
                                smoothing, **_hparams(config, config.train.steps))
    score = _score
    sa, sb = np.asarray(score(params, data["test_a"])), np.asarray(score(params, data["test_b"]))
    out["clean_test_accuracy"] = float(np.mean((sa > sb) == data["test_a_better"]))
    train_margin = np.asarray(score(params, data["chosen"]) - score(params, data["rejected"]))
    out["train_label_fit"] = float(np.mean(train_margin > 0))
    cand_scores = np.asarray(score(params, data["candidates"]))  # [Q, N]
    pick = np.argmax(cand_scores, axis=1)
    out["bon_gold_reward"] = float(np.mean(data["candidate_gold"][np.arange(len(pick)), pick]))
    out["oracle_bon_gold_reward"] = float(np.mean(data["candidate_gold"].max(axis=1)))
    out["final_train_loss"] = float(final_loss)
    if method != "vanilla":
        os.makedirs(workdir, exist_ok=True)
        np.savez(os.path.join(workdir, "strength.npz"), mu=mu, sigma=sigma,
                 gold_margin=data["gold_margin"], is_tie=data["is_tie"])
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
    """Strength mu against gold margin (first seed) and accuracy / BoN gold reward per variant."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(13, 3.8), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 3, 1)
    seeds = list(results.get("denoised", {}).get("per_seed", {}))
    path = os.path.join(workdir, "denoised", f"seed_{seeds[0]}", "strength.npz") if seeds else ""
    if path and os.path.exists(path):
        z = np.load(path)
        ax.scatter(z["gold_margin"][~z["is_tie"]], z["mu"][~z["is_tie"]], s=2, alpha=0.4,
                   label="ordinary")
        ax.scatter(z["gold_margin"][z["is_tie"]], z["mu"][z["is_tie"]], s=2, alpha=0.4,
                   label="near-tie")
        ax.axhline(0.0, color="k", lw=0.5)
        ax.legend()
    ax.set_xlabel("gold margin of the observed label")
    ax.set_ylabel("ensemble strength mu")
    names = list(results)
    for i, (m, label) in enumerate([("clean_test_accuracy", "clean held-out accuracy"),
                                    ("bon_gold_reward", "best-of-16 gold reward")]):
        ax = fig.add_subplot(1, 3, i + 2)
        ax.bar(range(len(names)), [results[v]["metrics"][m]["mean"] for v in names],
               yerr=[results[v]["metrics"][m]["std"] for v in names], capsize=3)
        ax.set_xticks(range(len(names)), names)
        ax.set_ylabel(label)
        lo = min(results[v]["metrics"][m]["mean"] for v in names)
        ax.set_ylim(lo - 0.1 * abs(lo) - 0.02, None)
    fig.suptitle("Secrets of RLHF II: denoising 25% flipped labels with ensemble strength")
    out = os.path.join(workdir, "plots", "secrets_rlhf2.png")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    fig.savefig(out, dpi=100)
    return [out]
