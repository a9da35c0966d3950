"""SALMON: an instructable (principle-conditioned) reward model, and principles added at RL time.

Paper: Sun et al. 2023, "SALMON: Self-Alignment with Instructable Reward Models".

Setting (feature-vector testbed): a response is a vector z ~ N(0, I_8) with a gold attribute
vector f(z) = A z in R^5: helpfulness, honesty, harmlessness, detail and length (the last one).
The attributes are correlated (`task.correlated`, the default): A = L Q with Q 5 orthonormal rows
and L the Cholesky factor of a correlation matrix with corr(helpfulness, detail) = 0.5,
corr(detail, length) = 0.5, corr(honesty, harmlessness) = 0.4 and 0 elsewhere, so a principle
set's judge direction is not a sum of independent coordinates (an issue-18 review found the
held-out-combination claim easy with orthogonal attributes; `task.correlated=False` gives them
back). Helpfulness and length are uncorrelated: that is the paper's premise (length is not
helpfulness; the judge's verbosity bias is the hack). These values were fixed before any run.
A principle set P is a subset of 1-3 attributes with signs s_k in {-1, +1}, encoded as a
multi-hot of 10 slots (attribute k "more" / "less"). The synthetic AI judge prefers y_a over y_b
with probability sigma((J(y_a | P) - J(y_b | P)) / T), J(y | P) = sum_{k in P} s_k f_k(y)
+ b f_len(y): like LLM judges it has a verbosity bias b whatever the principles say. The
instructable RM r(y | P) = MLP([z, multi-hot(P)]) (`alignax.models.mlp.make_mlp`, 64-64 GELU) is
trained with the Bradley-Terry loss on judge-labelled pairs whose principle sets come from a
training list; 30% of the 2- and 3-attribute combinations are held out (the attribute map and
the held-out list are the world, seeded by the experiment seed).

Splits (`alignax.tasks.splits.split_seeds`): training pairs from the train data seed;
validation pairs (training principle sets only) and the RL validation noise from the validation
seed; the test pairs (training sets: in-distribution; held-out sets) from the test seed. RM
accuracy on test is measured against the noiseless judge.

RL step (actual policy gradient, `alignax.algorithms.small_pg`): a diagonal Gaussian policy over
z, initialised at the reference pi_ref = N(0, I), trained by REINFORCE with a leave-one-out
baseline over 64 samples per update and the KL to pi_ref in the reward (beta = `rl.beta` = 2,
fixed before any run so that the KL optimum stays within about 2 sd of the RM's training data),
rewarded by the instructable RM r(z | P_RL), through `fit_small` (all seeds vmapped). P_RL =
{+helpfulness} (`base`) or {+helpfulness, -length} (`anti_length`: the principle added at RL
time, as SALMON adds principles against reward hacks it observes). Whether {+helpfulness,
-length} was a held-out combination of the seed is recorded (`anti_length_principle_held_out`).
Length exploitation = E_pi[f_len] - E_ref[f_len]; target gain = E_pi[f_help] - E_ref[f_help]
(gold attributes of the trained policy, exact for a Gaussian: A mu).

Selection on validation, the same for every variant: the RM keeps its best logged step (every
100 steps) by accuracy on the validation pairs' (noisy) judge labels (`fit_small(select=...)`);
each RL run (both P_RL alike) keeps its best logged step (every 20 updates) by the KL-regularised
objective E_pi[r(z | P_RL)] - beta KL(pi || pi_ref) estimated on fixed validation noise, and each
seed keeps the learning rate of `rl.learning_rates` with the best such score
(`choose_on_validation`); chosen steps and learning rates are per-seed metrics.

Claims (5 seeds, 95% Student-t intervals over seeds):
  (1) threshold: the RM's test accuracy on held-out principle combinations is >= 85% of its
      in-distribution accuracy (per-seed ratio);
  (2) threshold: adding the anti-length principle at RL time cuts the length exploitation by
      >= 50% (per-seed 1 - anti / base, measured after the RL);
  (3) threshold: and keeps the target-attribute gain within 5% (per-seed anti / base >= 0.95);
  (4) sanity: the base policy exploits length (gain > 0 on every seed): the judge's verbosity
      bias is planted, so this is shown, never counted.

    alignax run experiments/salmon.py            # full setting, 5 seeds
    alignax run experiments/salmon.py:smoke      # seconds, for the tests
"""

from __future__ import annotations

import itertools
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from alignax import protocol
from alignax.algorithms import small_pg
from alignax.experiment import is_smoke
from alignax.losses.reward import bradley_terry_loss
from alignax.models.mlp import MLPConfig, make_mlp
from alignax.tasks.splits import choose_on_validation, split_seeds
from alignax.train.plots import plot_grouped_bars
from alignax.train.small import fit_small

ATTRIBUTES = ("helpfulness", "honesty", "harmlessness", "detail", "length")
LENGTH = ATTRIBUTES.index("length")
TARGET = ATTRIBUTES.index("helpfulness")
# off-diagonal attribute correlations of the correlated world (fixed before any run)
CORRELATIONS = {("helpfulness", "detail"): 0.5, ("detail", "length"): 0.5,
                ("honesty", "harmlessness"): 0.4}
P_RL = {"base": ((TARGET, 1),), "anti_length": ((TARGET, 1), (LENGTH, -1))}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    smoke = is_smoke(arg)
    c = ml_collections.ConfigDict()
    c.seeds = [0] if smoke else [0, 1, 2, 3, 4]
    c.task = dict(dim=8, verbosity_bias=0.5, judge_temperature=0.3, holdout_fraction=0.3,
                  max_principles=3, correlated=True)
    c.data = dict(num_pairs=20_000 if not smoke else 1000,
                  num_val_pairs=2000 if not smoke else 200,
                  num_eval_pairs=8000 if not smoke else 500)
    c.model = dict(hidden=(64, 64))
    c.train = dict(steps=3000 if not smoke else 60, batch_size=256 if not smoke else 64,
                   learning_rate=2e-3, log_every=100 if not smoke else 60)
    c.rl = dict(beta=2.0, num_samples=64 if not smoke else 16, steps=400 if not smoke else 10,
                learning_rates=[0.03, 0.1] if not smoke else [0.1],
                log_every=20 if not smoke else 10, num_val_samples=1024 if not smoke else 64)
    return c


def all_principle_sets(num_attributes: int, max_size: int) -> list[tuple[tuple[int, int], ...]]:
    """Every principle set: 1..max_size distinct attributes, each with a sign in {-1, +1}."""
    out = []
    for size in range(1, max_size + 1):
        for attrs in itertools.combinations(range(num_attributes), size):
            for signs in itertools.product((1, -1), repeat=size):
                out.append(tuple(zip(attrs, signs)))
    return out


def encode(principles, num_attributes: int) -> tuple[np.ndarray, np.ndarray]:
    """Principle sets -> (signed weights [S, K], multi-hot [S, 2K]).

    Slot 2k of the multi-hot means "more of attribute k", slot 2k + 1 "less of it"."""
    weights = np.zeros((len(principles), num_attributes), np.float32)
    hot = np.zeros((len(principles), 2 * num_attributes), np.float32)
    for i, p in enumerate(principles):
        for k, s in p:
            weights[i, k] = s
            hot[i, 2 * k + (s < 0)] = 1.0
    return weights, hot


def split_principles(config, seed: int):
    """Training and held-out principle sets: every single-attribute set trains; a random
    `holdout_fraction` of the 2- and 3-attribute sets is held out."""
    k = len(ATTRIBUTES)
    sets = all_principle_sets(k, config.task.max_principles)
    rng = np.random.default_rng([seed, 2525])
    multi = [p for p in sets if len(p) > 1]
    out = rng.uniform(size=len(multi)) < config.task.holdout_fraction
    train = [p for p in sets if len(p) == 1] + [p for p, o in zip(multi, out) if not o]
    held = [p for p, o in zip(multi, out) if o]
    return train, held


def correlation_matrix(correlated: bool = True) -> np.ndarray:
    """The attributes' correlation matrix [K, K] (the identity when not `correlated`)."""
    c = np.eye(len(ATTRIBUTES))
    if correlated:
        for (a, b), rho in CORRELATIONS.items():
            i, j = ATTRIBUTES.index(a), ATTRIBUTES.index(b)
            c[i, j] = c[j, i] = rho
    return c


def attribute_matrix(dim: int, seed: int, correlated: bool = True) -> np.ndarray:
    """A [K, D] = L Q: Q K orthonormal rows, L the Cholesky factor of `correlation_matrix`, so
    f(z) = A z has covariance = that matrix for z ~ N(0, I)."""
    q, _ = np.linalg.qr(np.random.default_rng([seed, 77]).standard_normal((dim, dim)))
    chol = np.linalg.cholesky(correlation_matrix(correlated))
    return (chol @ q[:len(ATTRIBUTES)]).astype(np.float32)


def judge_scores(f, weights, bias: float):
    """J(y | P) = weights . f(y) + b f_len(y): f [..., K], weights [..., K] -> [...]."""
    return np.sum(f * weights, -1) + bias * f[..., LENGTH]


def make_pairs(config, seed: int, data_seed: int, principles, n: int, tag: int) -> dict:
    """n judge-labelled pairs of the world of experiment seed `seed`, drawn from `data_seed`."""
    task = config.task
    w_attr = attribute_matrix(task.dim, seed, task.correlated)
    rng = np.random.default_rng([data_seed, 2526, tag])
    za, zb = rng.standard_normal((2, n, task.dim)).astype(np.float32)
    weights, hot = encode(principles, len(ATTRIBUTES))
    which = rng.integers(0, len(principles), n)
    diff = judge_scores(za @ w_attr.T - zb @ w_attr.T, weights[which], task.verbosity_bias)
    a_pref = rng.uniform(size=n) < 1.0 / (1.0 + np.exp(-diff / task.judge_temperature))
    chosen = np.where(a_pref[:, None], za, zb)
    rejected = np.where(a_pref[:, None], zb, za)
    return {"chosen": chosen, "rejected": rejected, "principle": hot[which],
            "judge_agrees": (diff > 0) == a_pref}


def rm_inputs(z, hot):
    return jnp.concatenate([z, jnp.broadcast_to(hot, z.shape[:-1] + hot.shape[-1:])], -1)


def train_rm(config, workdir: str, data: dict, val: dict, seeds: list[int]):
    """Minibatch Adam on the BT loss of r(y | P) = MLP([z, multi-hot(P)]), every seed in one
    `fit_small` program; `data` and `val` hold [S, N, ...] chosen, rejected and principle
    arrays (training and validation pairs).

    Returns (the MLP, the SmallFit); every `log_every` steps the accuracy on the validation
    pairs' labels is computed and each seed keeps its best step (`best_params`).
    """
    tc = config.train
    mlp = make_mlp(MLPConfig(in_dim=data["chosen"].shape[-1] + data["principle"].shape[-1],
                             hidden=tuple(config.model.hidden)))
    batch_size = int(tc.batch_size)

    def batch_fn(d, rng):  # uniform draws with replacement
        idx = jax.random.randint(rng, (batch_size,), 0, d["chosen"].shape[0])
        return jax.tree.map(lambda v: v[idx], d)

    def loss_fn(p, b):
        return jnp.mean(bradley_terry_loss(mlp.apply(p, rm_inputs(b["chosen"], b["principle"])),
                                           mlp.apply(p, rm_inputs(b["rejected"],
                                                                  b["principle"]))))

    def eval_fn(p, v):
        margin = (mlp.apply(p, rm_inputs(v["chosen"], v["principle"]))
                  - mlp.apply(p, rm_inputs(v["rejected"], v["principle"])))
        return {"val_accuracy": jnp.mean(margin > 0)}

    fit = fit_small(workdir, loss_fn=loss_fn,
                    init_params=lambda key: mlp.init(jax.random.split(key)[0]),
                    tx=optax.adam(float(tc.learning_rate)), num_steps=int(tc.steps), data=data,
                    seeds=seeds, per_seed_data=True, batch_fn=batch_fn,
                    steps_per_log=int(tc.log_every), eval_fn=eval_fn, eval_data=val,
                    select=("val_accuracy", "max"))
    return mlp, fit


def train_policies(config, workdir: str, mlp, rm_params, val_eps, seeds):
    """REINFORCE (KL to pi_ref = N(0, I) in the reward) of a Gaussian policy on r(z | P_RL) for
    every P_RL and seed: one `fit_small` per learning rate with every (P_RL, seed) run vmapped
    (run ids: seed + 1000 * the P_RL's index); `rm_params` and `val_eps` (the validation noise
    [S, V, D]) are per seed. Each run keeps its best logged step by the KL-regularised objective
    on its validation noise.

    Returns ({"lr=<x>": SmallFit}, [(P_RL name, seed index)] in run order).
    """
    rl, dim = config.rl, config.task.dim
    runs = [(name, i) for name in P_RL for i in range(len(seeds))]
    _, hot = encode([P_RL[name] for name, _ in runs], len(ATTRIBUTES))
    idx = np.array([i for _, i in runs])
    data = {"rm": jax.tree.map(lambda x: x[idx], rm_params), "hot": jnp.asarray(hot)}
    eval_data = dict(data, eps=jnp.asarray(val_eps)[idx])
    run_ids = [seeds[i] + 1000 * list(P_RL).index(name) for name, i in runs]
    ref = small_pg.gaussian_init(dim)
    beta = float(rl.beta)

    def reward(z, d):
        return mlp.apply(d["rm"], rm_inputs(z, d["hot"]))

    loss = small_pg.reinforce_loss(
        small_pg.gaussian_sample, small_pg.gaussian_log_prob, reward,
        num_samples=int(rl.num_samples), kl_coef=beta,
        ref_log_prob_fn=lambda z: small_pg.gaussian_log_prob(ref, z))

    def eval_fn(policy, d):
        z = policy["mean"] + jnp.exp(policy["log_std"]) * d["eps"]
        objective = jnp.mean(reward(z, d)) - beta * small_pg.gaussian_kl(policy, ref)
        return {"val_objective": objective}

    fits = {}
    for lr in rl.learning_rates:
        fits[f"lr={lr:g}"] = fit_small(
            os.path.join(workdir, f"lr{lr:g}"), loss_fn=loss, has_aux=True,
            init_params=lambda key: small_pg.gaussian_init(dim),
            tx=optax.adam(float(lr)), num_steps=int(rl.steps), data=data,
            per_seed_data=True, batch_fn=small_pg.rl_batch, seeds=run_ids,
            steps_per_log=int(rl.log_every), eval_fn=eval_fn, eval_data=eval_data,
            select=("val_objective", "max"))
    return fits, runs


def evaluate_rm(config, seed: int, reward) -> dict[str, float]:
    """One seed's RM test accuracies, `reward(z [..., D], hot [..., 2K]) -> [...]`."""
    train_sets, held_sets = split_principles(config, seed)
    test_seed = split_seeds(seed).test

    def accuracy(sets, tag):
        ev = make_pairs(config, seed, test_seed, sets, config.data.num_eval_pairs, tag)
        # accuracy against the noiseless judge: the label agrees with the judge's sign or not
        margin = np.asarray(reward(ev["chosen"], ev["principle"])
                            - reward(ev["rejected"], ev["principle"]))
        return float(np.mean((margin > 0) == ev["judge_agrees"]))

    out = {"test_rm_accuracy_in_distribution": accuracy(train_sets, 1),
           "test_rm_accuracy_held_out": accuracy(held_sets, 2),
           "num_held_out_sets": float(len(held_sets)),
           "anti_length_principle_held_out": float(P_RL["anti_length"] in held_sets)}
    out["test_held_out_ratio"] = (out["test_rm_accuracy_held_out"]
                                  / out["test_rm_accuracy_in_distribution"])
    return out


def policy_metrics(config, seed: int, name: str, policy) -> dict[str, float]:
    """Gold attribute gains of a trained Gaussian policy over pi_ref (exact: A mu) and its KL."""
    w_attr = attribute_matrix(config.task.dim, seed, config.task.correlated)
    gains = w_attr @ np.asarray(policy["mean"], np.float64)
    out = {f"test_{name}_target_gain": float(gains[TARGET]),
           f"test_{name}_length_exploitation": float(gains[LENGTH]),
           f"test_{name}_kl": float(small_pg.gaussian_kl(
               policy, small_pg.gaussian_init(config.task.dim)))}
    for j, a in enumerate(ATTRIBUTES):
        if j not in (TARGET, LENGTH):
            out[f"test_{name}_{a}_gain"] = float(gains[j])
    return out


def run_seeds(config: ml_collections.ConfigDict, workdir: str) -> dict[int, dict[str, float]]:
    """Every seed's instructable RM in one program, then the RL runs of both P_RL."""
    seeds = [int(s) for s in config.seeds]
    splits = [split_seeds(s) for s in seeds]
    train = [make_pairs(config, s, sp.train, split_principles(config, s)[0],
                        config.data.num_pairs, 0) for s, sp in zip(seeds, splits)]
    val = [make_pairs(config, s, sp.validation, split_principles(config, s)[0],
                      config.data.num_val_pairs, 0) for s, sp in zip(seeds, splits)]
    keys = ("chosen", "rejected", "principle")
    data = {k: jnp.asarray(np.stack([t[k] for t in train])) for k in keys}
    val_data = {k: jnp.asarray(np.stack([t[k] for t in val])) for k in keys}
    mlp, fit = train_rm(config, os.path.join(workdir, "rm"), data, val_data, seeds)
    reward = jax.jit(lambda p, z, h: mlp.apply(p, rm_inputs(z, h)))
    out = {}
    for i, seed in enumerate(seeds):
        params = jax.tree.map(lambda x, i=i: x[i], fit.best_params)
        out[seed] = evaluate_rm(config, seed, lambda z, h, p=params: reward(p, z, h))
        out[seed]["rm_val_accuracy"] = float(fit.best_score[i])
        out[seed]["rm_chosen_step"] = float(fit.best_step[i])
    val_eps = jnp.asarray(np.stack([
        np.random.default_rng([sp.validation, 2528]).standard_normal(
            (int(config.rl.num_val_samples), int(config.task.dim))) for sp in splits]),
        jnp.float32)
    fits, runs = train_policies(config, os.path.join(workdir, "rl"), mlp, fit.best_params,
                                val_eps, seeds)
    for r, (name, i) in enumerate(runs):
        seed = seeds[i]
        chosen, record = choose_on_validation(fits, lambda f, r=r: f.best_score[r])
        best = fits[chosen]
        policy = jax.tree.map(lambda x, r=r: x[r], best.best_params)
        out[seed].update(policy_metrics(config, seed, name, policy))
        out[seed][f"{name}_val_objective"] = float(best.best_score[r])
        out[seed][f"{name}_chosen_step"] = float(best.best_step[r])
        out[seed][f"{name}_chosen_learning_rate"] = float(chosen[len("lr="):])
        for cand, score in record["scores"].items():
            out[seed][f"{name}_val_objective_{cand.replace('=', '')}"] = float(score)
    for seed in seeds:
        o = out[seed]
        o["test_length_cut"] = 1.0 - (o["test_anti_length_length_exploitation"]
                                      / o["test_base_length_exploitation"])
        o["test_target_ratio"] = o["test_anti_length_target_gain"] / o["test_base_target_gain"]
    return out


def claims(results) -> list[protocol.Claim]:
    v = "default"
    base_len = protocol.per_seed(results, v, "test_base_length_exploitation")
    held = protocol.per_seed(results, v, "anti_length_principle_held_out")
    n_held = int(sum(held.values()))
    return [
        protocol.threshold(
            "the instructable RM's accuracy on held-out principle combinations is >= 85% of "
            "its in-distribution accuracy", results, (v, "test_held_out_ratio"), at_least=0.85,
            detail="per-seed ratio of test accuracies against the noiseless judge; correlated "
                   "attributes; RM stopping step chosen on validation accuracy"),
        protocol.threshold(
            "adding an anti-length principle at RL time cuts length exploitation by >= 50% "
            "(measured after REINFORCE on the policy)", results, (v, "test_length_cut"),
            at_least=0.5,
            detail="per-seed 1 - anti / base length gain of the trained Gaussian policies over "
                   f"pi_ref; {{+helpfulness, -length}} was a held-out combination on {n_held} "
                   f"of {len(held)} seeds"),
        protocol.threshold(
            "with the anti-length principle the target-attribute (helpfulness) gain stays "
            "within 5% of the base policy's", results, (v, "test_target_ratio"), at_least=0.95,
            detail="per-seed anti / base helpfulness gain of the trained policies"),
        protocol.sanity(
            "the base policy exploits length (the judge's planted verbosity bias)",
            min(base_len.values()) > 0, {"min_base_length_exploitation": min(base_len.values())},
            detail="by construction of the judge: shown, never counted"),
    ]


def plots(results, workdir: str) -> list[str]:
    """RM accuracy (in-distribution vs held-out combinations) and the RL attribute gains."""
    m = results["default"]["metrics"]
    stat = lambda names: ([m[n]["mean"] for n in names], [m[n]["std"] for n in names])  # noqa: E731
    folder = os.path.join(workdir, "plots")
    rm = plot_grouped_bars(
        ["in-distribution", "held-out combos"],
        {"instructable RM": stat(["test_rm_accuracy_in_distribution",
                                  "test_rm_accuracy_held_out"])},
        os.path.join(folder, "salmon_rm_accuracy.png"),
        title="SALMON toy: instructable RM", ylabel="RM accuracy vs judge", ylim=(0.5, 1.0))
    rl = plot_grouped_bars(
        ["helpfulness gain", "length gain"],
        {f"P_RL: {name}": stat([f"test_{name}_target_gain",
                                f"test_{name}_length_exploitation"])
         for name in ("base", "anti_length")},
        os.path.join(folder, "salmon_rl_gains.png"),
        title="SALMON toy: anti-length at RL time", ylabel="gain over pi_ref")
    return [rm, rl]
