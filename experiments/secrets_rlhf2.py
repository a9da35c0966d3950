"""Secrets of RLHF II: preference strength from an RM ensemble, denoised reward modeling, the
contrastive term and MetaRM.

Paper: Wang et al. 2024, "Secrets of RLHF in Large Language Models Part II: Reward Modeling"
(arXiv 2401.06080); MetaRM as in its section 5 (Dou et al. 2024, arXiv 2405.00438).

Setting (feature-vector testbed): responses are vectors x ~ N(0, I_8) with a frozen non-linear
gold reward (a random tanh MLP, `alignax.tasks.features.MLPReward`, the world of experiment seed
s). A labelled set has 80% ordinary pairs labelled by the gold ordering and 20% near-ties
(|gold margin| < 0.1) labelled by a fair coin; then 25% of all labels are flipped at random. The
reward model is a 1-hidden-layer MLP (32 GELU units: features h(x), then a linear head) trained
with full-batch AdamW. Every training runs all seeds of a variant in one
`alignax.train.small.fit_small` program under the variant's run folder (`ensemble/`, `rm/`).

Shifted distribution (for MetaRM): the policy has moved to a high-reward region, responses
x ~ N(m, 0.5^2 I) with m the best of 4096 draws of N(0, I) under the gold reward (part of the
world). MetaRM gets 256 unlabelled groups of 4 responses from it (no labels, no gold); the test
has clean pairs and best-of-16 pools from it.

Splits (issue 18 protocol, `split_seeds(s)` = (3s, 3s + 1, 3s + 2)): the 4000 training pairs and
the MetaRM groups come from data seed 3s; 1000 validation pairs, labelled by the same noisy
process as the training pairs (a practitioner has no clean labels; with symmetric flips the noisy
agreement ranks models like the clean accuracy), from 3s + 1; the clean test pairs, the
best-of-16 pools and the shifted test pairs from 3s + 2.

Selection (every variant the same): before issue 18 the RM ran a fixed 800 steps, long enough to
fit the flipped labels, and the ensemble a hand-set 400. Now every RM (and the strength ensemble,
on its members' mean) is early-stopped on validation: `fit_small(select=("val_accuracy",
"max"))`, a check every 50 of 800 steps, recorded as `chosen_step` / `val_accuracy`
(`ensemble_chosen_step`). The denoising constants (smooth 20% most ambiguous pairs with eps 0.3,
margin gamma 0.5), the contrastive weight 0.1 / temperature 0.1 / dropout 0.1 and MetaRM's
inner step 0.1 are fixed a priori (not tuned on any split).

Preference strength (section 3 of the paper): M = 8 reward models trained on bootstrap resamples
of the pairs (one training run of the stacked members) give per-pair margins
d_{i,m} = r_m(y_c) - r_m(y_r); mu_i and sigma_i are their mean and std
(`alignax.losses.reward.preference_strength`). A member fitted on pair i has partly memorised
its (possibly wrong) label, so mu_i is taken over the members for which pair i is out of bag.

Variants: `vanilla` (BT on the noisy labels); `flip` (labels with mu_i < 0 flipped,
`flip_by_strength`); `denoised` (flip + label smoothing eps on the most ambiguous pairs by
|mu_i| + the adaptive margin -log sigma(Delta - gamma mu_hat_i)); `contrastive` (vanilla BT plus
0.1 x the SimCSE-style contrastive loss on preference representations h(y_c) - h(y_r) under two
dropout masks, on 256 random pairs per step (in-batch negatives),
`alignax.losses.metarm.pair_contrastive_loss`); `metarm` (vanilla BT through the
MetaRM step: one ascent step eta = 0.1 on the difference loss J of the shifted groups, then the
BT loss at the adapted params, differentiated through the step, `alignax.losses.metarm`).

Metrics: `test_clean_accuracy` (fresh clean pairs), `test_bon_gold_reward` (for each of 1000
queries, 16 candidates x ~ N(0, I), the RM's pick's gold reward), `test_shifted_accuracy` and
`test_shifted_bon_gold_reward` (the same on the shifted distribution), and
`test_spearman_strength_gold`: Spearman(mu_i, gold margin of the observed label) on the training
pairs (the gold margins are never seen by training or selection).

Claims (5 seeds, 95% t intervals, `alignax.protocol`): (1, threshold) Spearman(mu, gold margin)
>= 0.7; (2, comparative) denoised raises clean test accuracy >= 3 points over vanilla BT; (3,
comparative) denoised's best-of-16 gold reward is higher than vanilla's (difference >= 0); (4,
comparative) the contrastive term raises clean test accuracy over vanilla (>= 0); (5,
comparative) MetaRM raises the accuracy on the shifted distribution over vanilla (>= 0). All
variants, vanilla included, are early-stopped the same way.

    alignax run experiments/secrets_rlhf2.py            # full setting, 5 seeds
    alignax run experiments/secrets_rlhf2.py:smoke      # seconds, for the tests
"""

from __future__ import annotations

import functools
import os
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from alignax import protocol
from alignax.protocol import seed_mean
from alignax.experiment import is_smoke
from alignax.losses.metarm import difference_loss, metarm_loss, pair_contrastive_loss
from alignax.losses.reward import bradley_terry_loss, flip_by_strength, preference_strength
from alignax.models.mlp import MLPConfig, make_mlp
from alignax.ops import spearman
from alignax.tasks.features import MLPReward
from alignax.tasks.splits import split_seeds
from alignax.train.small import fit_small

METHODS = ("vanilla", "flip", "denoised", "contrastive", "metarm")
VAL_KEYS = ("val_chosen", "val_rejected")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    smoke = is_smoke(arg)
    c = ml_collections.ConfigDict()
    c.seeds = [0] if smoke else [0, 1, 2, 3, 4]
    c.method = "denoised"
    c.variants = {m: {"method": m} for m in METHODS}
    c.task = dict(dim=8, gold_hidden=32, tie_fraction=0.2, tie_width=0.1, flip_rate=0.25)
    c.data = dict(num_pairs=4000 if not smoke else 300, num_val_pairs=1000 if not smoke else 200,
                  num_test_pairs=4000 if not smoke else 300,
                  num_queries=1000 if not smoke else 100, num_candidates=16)
    # the policy's shifted distribution N(m, scale^2 I), m the gold-best of `center_pool` draws
    c.shift = dict(center_pool=4096, scale=0.5, num_groups=256 if not smoke else 32,
                   group_size=4)
    c.model = dict(hidden=32)
    c.train = dict(steps=800 if not smoke else 40, eval_every=50 if not smoke else 20,
                   learning_rate=3e-3, weight_decay=0.0)
    c.ensemble = dict(members=8 if not smoke else 4)
    # denoising: smooth the `smooth_fraction` most ambiguous pairs (smallest |mu|) with eps;
    # adaptive margin gamma * mu / mean(|mu|) on the flipped strengths
    c.denoise = dict(smooth_fraction=0.2, label_smoothing=0.3, margin_gamma=0.5)
    # the contrastive term on `batch_size` random pairs per step (the in-batch negatives)
    c.contrastive = dict(weight=0.1, temperature=0.1, dropout=0.1,
                         batch_size=256 if not smoke else 64)
    c.metarm = dict(inner_lr=0.1, first_order=False)
    return c


def noisy_pairs(task, gold, n: int, rng) -> dict:
    """n pairs: 80% ordinary (gold-ordered), 20% near-ties (coin-flip labels), then
    `flip_rate` of all labels flipped."""
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
    return {"chosen": chosen, "rejected": rejected,
            "gold_margin": (gold(chosen) - gold(rejected)).astype(np.float32),
            "flipped": flipped, "is_tie": is_tie}


def shift_center(config, gold, seed: int) -> np.ndarray:
    """m: the gold-best of `center_pool` draws of N(0, I) (the world of experiment seed `seed`)."""
    pool = np.random.default_rng([seed, 6868]).standard_normal(
        (int(config.shift.center_pool), config.task.dim))
    return pool[np.argmax(gold(pool))]


def make_data(config, seed: int) -> dict:
    """Noisy training pairs (with near-ties) and unlabelled shifted groups (data seed 3s), noisy
    validation pairs (3s + 1), clean test pairs, best-of-N pools and shifted test pairs (3s + 2).
    """
    task, data, sh = config.task, config.data, config.shift
    gold = MLPReward(dim=task.dim, hidden=task.gold_hidden, seed=seed)
    center = shift_center(config, gold, seed)
    seeds = split_seeds(seed)
    rng = np.random.default_rng([seeds.train, 68])
    out = noisy_pairs(task, gold, data.num_pairs, rng)
    out["shifted_groups"] = (center + sh.scale * rng.standard_normal(
        (sh.num_groups, sh.group_size, task.dim))).astype(np.float32)
    val = noisy_pairs(task, gold, data.num_val_pairs,
                      np.random.default_rng([seeds.validation, 68]))
    out.update(val_chosen=val["chosen"], val_rejected=val["rejected"])
    rng = np.random.default_rng([seeds.test, 68])
    ta = rng.standard_normal((data.num_test_pairs, task.dim))
    tb = rng.standard_normal((data.num_test_pairs, task.dim))
    cand = rng.standard_normal((data.num_queries, data.num_candidates, task.dim))
    sa = center + sh.scale * rng.standard_normal((data.num_test_pairs, task.dim))
    sb = center + sh.scale * rng.standard_normal((data.num_test_pairs, task.dim))
    scand = center + sh.scale * rng.standard_normal(cand.shape)
    flat = lambda x: gold(x.reshape(-1, task.dim)).reshape(x.shape[:2])  # noqa: E731
    out.update(
        test_a=ta.astype(np.float32), test_b=tb.astype(np.float32),
        test_a_better=gold(ta) > gold(tb),
        candidates=cand.astype(np.float32), candidate_gold=flat(cand),
        shifted_a=sa.astype(np.float32), shifted_b=sb.astype(np.float32),
        shifted_a_better=gold(sa) > gold(sb),
        shifted_candidates=scand.astype(np.float32), shifted_candidate_gold=flat(scand))
    return out


class RewardModel(NamedTuple):
    """`init(key)`, `features(params, x [..., dim]) -> h [..., hidden]` (GELU) and
    `apply(params, x) -> rewards [...]` (a linear head on h)."""

    init: Callable[[jax.Array], Any]
    features: Callable[..., jax.Array]
    apply: Callable[..., jax.Array]


def make_rm(config) -> RewardModel:
    """The reward model: dim -> hidden GELU features -> linear reward."""
    dim, hidden = int(config.task.dim), int(config.model.hidden)
    trunk = make_mlp(MLPConfig(in_dim=dim, hidden=(), out_dim=hidden))
    head = make_mlp(MLPConfig(in_dim=hidden, hidden=(), out_dim=1))

    def init(key):
        k1, k2 = jax.random.split(key)
        return {"trunk": trunk.init(k1), "head": head.init(k2)}

    def features(params, x):
        return jax.nn.gelu(trunk.apply(params["trunk"], x))

    def apply(params, x):
        return head.apply(params["head"], features(params, x))

    return RewardModel(init, features, apply)


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


def make_method_loss(config, rm, method: str):
    """The training objective of a variant: `(params, batch) -> (loss, aux)`.

    vanilla / flip / denoised: the weighted BT loss (`make_rm_loss`); contrastive: plus
    weight x `pair_contrastive_loss` of the features of C pairs drawn for the step
    (batch["contrastive_idx"] [C]) under two dropout masks (batch["masks"] [2, 2, C, H]);
    metarm: the BT loss at the params after one ascent step on
    the difference loss of the shifted groups (batch["shifted_groups"] [G, K, D]).
    """
    bt = make_rm_loss(rm)
    if method == "contrastive":
        cc = config.contrastive

        def loss_fn(params, batch):
            base = bt(params, batch)
            idx = batch["contrastive_idx"]
            hc = rm.features(params, batch["chosen"][idx])
            hr = rm.features(params, batch["rejected"][idx])
            m = batch["masks"]  # [view, chosen/rejected, B, H], inverted dropout
            con = jnp.mean(pair_contrastive_loss(hc * m[0, 0], hr * m[0, 1], hc * m[1, 0],
                                                 hr * m[1, 1], temperature=cc.temperature))
            return base + cc.weight * con, {"bt_loss": base, "contrastive_loss": con}

        return loss_fn
    if method == "metarm":
        mc = config.metarm

        def loss_fn(params, batch):
            groups = batch["shifted_groups"]

            def difference(p):
                return jnp.mean(difference_loss(rm.apply(p, groups)))

            loss = metarm_loss(lambda p: bt(p, batch), difference, params,
                               inner_lr=float(mc.inner_lr), first_order=bool(mc.first_order))
            return loss, {"difference_objective": difference(params)}

        return loss_fn
    return lambda params, batch: (bt(params, batch), {})


def _optimizer(config):
    return optax.adamw(float(config.train.learning_rate),
                       weight_decay=float(config.train.weight_decay))


def bootstrap_counts(key, num_pairs: int, members: int) -> jax.Array:
    """Multiplicities [M, B] of the B pairs in M bootstrap resamples."""
    return jax.vmap(lambda k: jnp.bincount(jax.random.randint(k, (num_pairs,), 0, num_pairs),
                                           length=num_pairs))(
        jax.random.split(key, members)).astype(jnp.float32)


@functools.partial(jax.jit, static_argnums=(1, 2))
def _seed_bootstrap_counts(keys, num_pairs: int, members: int) -> jax.Array:
    """[S, M, B] `bootstrap_counts` of every seed, drawn with the first of split(key) of each
    seed key [S] (one program, not one per op)."""
    split = jax.vmap(jax.random.split)(keys)  # [S, 2]: bootstrap, init
    return jax.vmap(lambda k: bootstrap_counts(k, num_pairs, members))(split[:, 0])


_flip_by_strength = jax.jit(jax.vmap(flip_by_strength))
_spearman = jax.jit(spearman)  # one program, not one per op


def ensemble_strength(config, workdir: str, chosen, rejected, seeds, keys, *, members: int,
                      steps: int, val: dict | None = None):
    """Bootstrap RM ensemble of every seed -> (out-of-bag mu, sigma, all-member mu, SmallFit).

    chosen/rejected [S, B, D]; keys [S] (one per seed: bootstrap draws and member inits); val:
    optional val_chosen / val_rejected [S, V, D]: then the members are early-stopped together on
    their mean validation accuracy (`select`) and the selected params give the strengths. M
    members per seed are fitted on bootstrap resamples of the B pairs (multiplicities as loss
    weights); they are one params tree with a leading [M] axis trained on the sum of the members'
    losses, which Adam updates exactly as M separate fits, and all seeds train in one
    `fit_small` program. d_{i,m} = r_m(y_c) - r_m(y_r); mu_i averages the members for which
    pair i is out of bag (all members if it is in every bag); sigma_i is the std over all members.
    """
    rm = make_rm(config)
    member_loss = make_rm_loss(rm)
    num_pairs = chosen.shape[1]
    counts = _seed_bootstrap_counts(keys, num_pairs, members)  # [S, M, B]
    zeros = np.zeros((num_pairs,), np.float32)

    def loss_fn(params, batch):
        losses = jax.vmap(lambda p, w: member_loss(p, {
            "chosen": batch["chosen"], "rejected": batch["rejected"], "weights": w,
            "margin": zeros, "smoothing": zeros}))(params, batch["counts"])
        return jnp.sum(losses), {"member_loss_mean": jnp.mean(losses)}

    def init(key):  # the seed's key: members initialised from split(init key, M)
        return jax.vmap(rm.init)(jax.random.split(jax.random.split(key)[1], members))

    def eval_fn(params, v):
        r = jax.vmap(lambda p: rm.apply(p, v["val_chosen"]) - rm.apply(p, v["val_rejected"]))(
            params)  # [M, V]
        return {"val_accuracy": jnp.mean(r > 0)}

    data = {"chosen": np.asarray(chosen), "rejected": np.asarray(rejected), "counts": counts}
    extra = {} if val is None else dict(
        eval_fn=eval_fn, eval_data={k: np.asarray(val[k]) for k in VAL_KEYS},
        steps_per_log=int(config.train.eval_every), select=("val_accuracy", "max"))
    fit = fit_small(workdir, loss_fn=loss_fn, init_params=init, tx=_optimizer(config),
                    num_steps=int(steps), data=data, seeds=seeds, seed_keys=keys,
                    per_seed_data=True, has_aux=True, **extra)

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

    params = fit.params if val is None else fit.best_params
    return (*(np.asarray(a) for a in strength(params, data)), fit)


def fit_rm(config, workdir: str, data: dict, seeds, keys, method: str = "vanilla"):
    """The final RM of every seed in one `fit_small` program: full-batch AdamW on the variant's
    objective (`make_method_loss`), early-stopped on the validation pairs (val_chosen,
    val_rejected: agreement with their noisy labels). data: [S, ...] chosen, rejected, weights,
    margin, smoothing, val_chosen, val_rejected (and shifted_groups for metarm); keys [S] the
    init keys (the contrastive dropout masks fold in the step). Returns (the model, the
    SmallFit)."""
    rm = make_rm(config)
    train_keys = ["chosen", "rejected", "weights", "margin", "smoothing"]
    if method == "metarm":
        train_keys.append("shifted_groups")
    cc = config.contrastive
    hidden, rate = int(config.model.hidden), float(cc.dropout)

    def batch_fn(d, rng):
        if method != "contrastive":
            return d
        k_idx, k_mask = jax.random.split(rng)
        num = min(int(cc.batch_size), d["chosen"].shape[0])
        idx = jax.random.choice(k_idx, d["chosen"].shape[0], (num,), replace=False)
        keep = jax.random.bernoulli(k_mask, 1.0 - rate, (2, 2, num, hidden))
        return {**d, "contrastive_idx": idx, "masks": keep.astype(jnp.float32) / (1.0 - rate)}

    def eval_fn(params, v):
        return {"val_accuracy": jnp.mean(rm.apply(params, v["val_chosen"])
                                         > rm.apply(params, v["val_rejected"]))}

    fit = fit_small(workdir, loss_fn=make_method_loss(config, rm, method), init_params=rm.init,
                    tx=_optimizer(config), num_steps=int(config.train.steps),
                    data={k: np.asarray(data[k]) for k in train_keys}, seeds=seeds,
                    seed_keys=keys, per_seed_data=True, batch_fn=batch_fn, has_aux=True,
                    eval_fn=eval_fn, eval_data={k: np.asarray(data[k]) for k in VAL_KEYS},
                    steps_per_log=int(config.train.eval_every), select=("val_accuracy", "max"))
    return rm, fit


def run_seeds(config: ml_collections.ConfigDict, workdir: str) -> dict[int, dict[str, float]]:
    """Every seed of one variant: the strength ensemble (flip, denoised) and the final RM, each
    trained for all seeds in one program under `workdir` and early-stopped on validation."""
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
    val = {k: stack(k) for k in VAL_KEYS}
    out: dict[int, dict[str, float]] = {s: {} for s in seeds}
    if method in ("flip", "denoised"):
        mu, sigma, mu_all, ens = ensemble_strength(
            config, os.path.join(workdir, "ensemble"), chosen, rejected, seeds, keys[:, 0],
            members=int(config.ensemble.members), steps=int(config.train.steps), val=val)
        chosen, rejected, strength, flipped = (np.array(a) for a in _flip_by_strength(
            chosen, rejected, mu))
        for i, (s, d) in enumerate(zip(seeds, per_seed)):
            o = out[s]
            o["ensemble_chosen_step"] = float(ens.best_step[i])
            o["ensemble_val_accuracy"] = float(ens.best_score[i])
            o["test_spearman_strength_gold"] = float(_spearman(mu[i], d["gold_margin"]))
            o["test_spearman_strength_gold_all_members"] = float(
                _spearman(mu_all[i], d["gold_margin"]))
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
                      "margin": margin, "smoothing": smoothing, **val,
                      "shifted_groups": stack("shifted_groups")}, seeds, keys[:, 1], method)

    @jax.jit
    @jax.vmap
    def score(params, d):
        return {"test_a": rm.apply(params, d["test_a"]), "test_b": rm.apply(params, d["test_b"]),
                "train": rm.apply(params, d["chosen"]) - rm.apply(params, d["rejected"]),
                "cand": rm.apply(params, d["candidates"]),  # [Q, N]
                "shifted_a": rm.apply(params, d["shifted_a"]),
                "shifted_b": rm.apply(params, d["shifted_b"]),
                "shifted_cand": rm.apply(params, d["shifted_candidates"]),
                "shifted_groups": rm.apply(params, d["shifted_groups"])}

    # train_label_fit is measured on the observed (noisy, unflipped) labels
    evaluated = {k: stack(k) for k in
                 ("test_a", "test_b", "chosen", "rejected", "candidates", "shifted_a",
                  "shifted_b", "shifted_candidates", "shifted_groups")}
    sc = {k: np.asarray(v) for k, v in score(fit.best_params, evaluated).items()}
    for i, (s, d) in enumerate(zip(seeds, per_seed)):
        o = out[s]
        o["test_clean_accuracy"] = float(np.mean((sc["test_a"][i] > sc["test_b"][i])
                                                 == d["test_a_better"]))
        o["test_shifted_accuracy"] = float(np.mean((sc["shifted_a"][i] > sc["shifted_b"][i])
                                                   == d["shifted_a_better"]))
        o["train_label_fit"] = float(np.mean(sc["train"][i] > 0))
        for prefix, key in (("", "cand"), ("shifted_", "shifted_cand")):
            pick = np.argmax(sc[key][i], axis=1)
            gold = d[f"{prefix}candidate_gold"]
            o[f"test_{prefix}bon_gold_reward"] = float(np.mean(gold[np.arange(len(pick)), pick]))
            o[f"test_{prefix}oracle_bon_gold_reward"] = float(np.mean(gold.max(axis=1)))
        o["shifted_difference_objective"] = float(np.mean(difference_loss(
            jnp.asarray(sc["shifted_groups"][i]))))
        o["chosen_step"] = float(fit.best_step[i])
        o["val_accuracy"] = float(fit.best_score[i])
        o["final_train_loss"] = float(fit.final_loss[i])
    return out


def claims(results) -> list[protocol.Claim]:
    acc = {m: seed_mean(results, m, "test_clean_accuracy") for m in METHODS}
    bon = {m: seed_mean(results, m, "test_bon_gold_reward") for m in METHODS}
    shifted = {m: seed_mean(results, m, "test_shifted_accuracy") for m in METHODS}
    sbon = {m: seed_mean(results, m, "test_shifted_bon_gold_reward") for m in METHODS}
    steps = {m: seed_mean(results, m, "chosen_step") for m in METHODS}
    every = ", ".join(f"{m} {acc[m]:.3f}" for m in METHODS)
    rho_all = seed_mean(results, "denoised", "test_spearman_strength_gold_all_members")
    return [
        protocol.threshold(
            "preference strength tracks the gold margin: Spearman(mu_i, gold margin) >= 0.7",
            results, ("denoised", "test_spearman_strength_gold"), at_least=0.7,
            detail=f"out-of-bag ensemble mean, ensemble early-stopped on validation; all "
                   f"members: {rho_all:.3f}"),
        protocol.compare(
            "flip + label smoothing + adaptive margin raise clean test accuracy by >= 3 points "
            "over vanilla BT (both early-stopped on noisy validation labels)", results,
            ("denoised", "test_clean_accuracy"), ("vanilla", "test_clean_accuracy"),
            at_least=0.03,
            detail=f"clean test accuracy: {every}; mean chosen steps vanilla "
                   f"{steps['vanilla']:.0f}, denoised {steps['denoised']:.0f}"),
        protocol.compare(
            "best-of-16 gold reward is higher with the denoised RM than with vanilla BT", results,
            ("denoised", "test_bon_gold_reward"), ("vanilla", "test_bon_gold_reward"),
            at_least=0.0,
            detail="BoN-16 gold: " + ", ".join(f"{m} {bon[m]:.3f}" for m in METHODS)),
        protocol.compare(
            "the contrastive term (SimCSE on preference representations) raises clean test "
            "accuracy over vanilla BT", results,
            ("contrastive", "test_clean_accuracy"), ("vanilla", "test_clean_accuracy"),
            at_least=0.0,
            detail=f"contrastive {acc['contrastive']:.3f} vs vanilla {acc['vanilla']:.3f}; "
                   f"on the shifted distribution {shifted['contrastive']:.3f} vs "
                   f"{shifted['vanilla']:.3f}; BoN-16 gold {bon['contrastive']:.3f} vs "
                   f"{bon['vanilla']:.3f}"),
        protocol.compare(
            "MetaRM raises the RM's accuracy on the shifted (policy) distribution over vanilla "
            "BT", results,
            ("metarm", "test_shifted_accuracy"), ("vanilla", "test_shifted_accuracy"),
            at_least=0.0,
            detail=f"shifted-distribution accuracy: metarm {shifted['metarm']:.3f} vs vanilla "
                   f"{shifted['vanilla']:.3f}; shifted BoN-16 gold {sbon['metarm']:.3f} vs "
                   f"{sbon['vanilla']:.3f}; in-distribution clean accuracy "
                   f"{acc['metarm']:.3f} vs {acc['vanilla']:.3f}; difference objective J on "
                   f"the shifted groups "
                   f"{seed_mean(results, 'metarm', 'shifted_difference_objective'):.3f} vs "
                   f"{seed_mean(results, 'vanilla', 'shifted_difference_objective'):.3f}"),
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
        results, [("test_clean_accuracy", "clean test accuracy"),
                  ("test_bon_gold_reward", "best-of-16 gold reward"),
                  ("test_shifted_accuracy", "accuracy on the shifted distribution")],
        os.path.join(workdir, "plots", "secrets_rlhf2.png"),
        title="Secrets of RLHF II: denoising, contrastive term and MetaRM under 25% flips",
        variants=METHODS))
    return paths
