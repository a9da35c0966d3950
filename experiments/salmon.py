"""SALMON: an instructable (principle-conditioned) reward model, and principles added at RL time.

Paper: Sun et al. 2023, "SALMON: Self-Alignment with Instructable Reward Models".

Setting (feature-vector testbed): a response is a vector z ~ N(0, I_8) with a gold attribute
vector f(z) = W z in R^5 (W = 5 orthonormal rows, so the attributes are independent standard
normals): helpfulness, honesty, harmlessness, detail and length (the last one). A principle set P
is a subset of 1-3 attributes with signs s_k in {-1, +1}, encoded as a multi-hot of 10 slots
(attribute k "more" / "less"). The synthetic AI judge prefers y_a over y_b with probability
sigma((J(y_a | P) - J(y_b | P)) / T), J(y | P) = sum_{k in P} s_k f_k(y) + b f_len(y): like LLM
judges it has a verbosity bias b whatever the principles say. The instructable RM
r(y | P) = MLP([z, multi-hot(P)]) (`alignax.models.mlp.make_mlp`, 64-64 GELU) is trained with the
Bradley-Terry loss on judge-labelled pairs whose principle sets come from a training list; 30% of
the 2- and 3-attribute combinations are held out. RM accuracy is measured against the noiseless
judge on fresh pairs, with training combinations (in-distribution) and held-out ones.

RL step: each of 512 prompts has a fixed pool of 16 candidate responses; the policy is the exact
KL-regularised optimum over the pool, pi(y) ∝ pi_ref(y) exp(r(y | P_RL) / beta) with pi_ref
uniform (no policy-gradient steps). P_RL = {+helpfulness} (base) or {+helpfulness, -length}
(the "anti-length" principle added at RL time, as SALMON adds principles against reward hacks it
observes). Length exploitation = E_pi[f_len] - E_ref[f_len]; target = E_pi[f_help] -
E_ref[f_help] (gold attributes).

Claims checked: (1) the RM's held-out-combination accuracy is >= 85% of its in-distribution
accuracy; (2) adding the anti-length principle at RL time cuts the length exploitation by >= 50%
while the target-attribute gain stays within 5% (>= 95% of the base policy's gain).

    alignax run experiments/salmon.py            # full setting, 3 seeds
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

from alignax.experiment import Claim, is_smoke, metric
from alignax.losses.reward import bradley_terry_loss
from alignax.models.mlp import MLPConfig, make_mlp
from alignax.train.plots import plot_grouped_bars
from alignax.train.small import fit_small

ATTRIBUTES = ("helpfulness", "honesty", "harmlessness", "detail", "length")
LENGTH = ATTRIBUTES.index("length")
TARGET = ATTRIBUTES.index("helpfulness")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    smoke = is_smoke(arg)
    c = ml_collections.ConfigDict()
    c.seeds = [0] if smoke else [0, 1, 2]
    c.task = dict(dim=8, verbosity_bias=0.5, judge_temperature=0.3, holdout_fraction=0.3,
                  max_principles=3)
    c.data = dict(num_pairs=20_000 if not smoke else 1000,
                  num_eval_pairs=8000 if not smoke else 500)
    c.model = dict(hidden=(64, 64))
    c.train = dict(steps=3000 if not smoke else 60, batch_size=256 if not smoke else 64,
                   learning_rate=2e-3)
    c.rl = dict(num_prompts=512 if not smoke else 64, num_candidates=16, beta=0.3)
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


def attribute_matrix(dim: int, seed: int) -> np.ndarray:
    """W [K, D]: K orthonormal rows, f(z) = W z."""
    q, _ = np.linalg.qr(np.random.default_rng([seed, 77]).standard_normal((dim, dim)))
    return q[:len(ATTRIBUTES)].astype(np.float32)


def judge_scores(f, weights, bias: float):
    """J(y | P) = weights . f(y) + b f_len(y): f [..., K], weights [..., K] -> [...]."""
    return np.sum(f * weights, -1) + bias * f[..., LENGTH]


def make_pairs(config, seed: int, principles, n: int, tag: int) -> dict:
    task = config.task
    w_attr = attribute_matrix(task.dim, seed)
    rng = np.random.default_rng([seed, 2526, tag])
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


def train_rm(config, workdir: str, data: dict, seeds: list[int]):
    """Minibatch Adam on the BT loss of r(y | P) = MLP([z, multi-hot(P)]), every seed in one
    `fit_small` program; `data` holds [S, N, ...] chosen, rejected and principle arrays.

    Returns (the MLP, the SmallFit); the loss is logged every 100 steps (`loss_mean`: the mean
    over those steps).
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

    fit = fit_small(workdir, loss_fn=loss_fn,
                    init_params=lambda key: mlp.init(jax.random.split(key)[0]),
                    tx=optax.adam(float(tc.learning_rate)), num_steps=int(tc.steps), data=data,
                    seeds=seeds, per_seed_data=True, batch_fn=batch_fn, steps_per_log=100)
    return mlp, fit


def kl_optimal_policy(rewards, ref_logprobs, beta: float):
    """pi(y) ∝ pi_ref(y) exp(r(y) / beta) over a candidate pool: [P, N] -> [P, N] probs."""
    return jax.nn.softmax(ref_logprobs + rewards / beta, axis=-1)


def evaluate(config, seed: int, reward) -> dict[str, float]:
    """One seed's RM accuracies and RL step, `reward(z [..., D], hot [..., 2K]) -> [...]`."""
    task, k = config.task, len(ATTRIBUTES)
    train_sets, held_sets = split_principles(config, seed)
    w_attr = attribute_matrix(task.dim, seed)

    def accuracy(sets, tag):
        ev = make_pairs(config, seed, sets, config.data.num_eval_pairs, tag)
        # accuracy against the noiseless judge: the label agrees with the judge's sign or not
        margin = np.asarray(reward(ev["chosen"], ev["principle"])
                            - reward(ev["rejected"], ev["principle"]))
        return float(np.mean((margin > 0) == ev["judge_agrees"]))

    out = {"rm_accuracy_in_distribution": accuracy(train_sets, 1),
           "rm_accuracy_held_out": accuracy(held_sets, 2),
           "num_held_out_sets": float(len(held_sets))}
    out["held_out_ratio"] = out["rm_accuracy_held_out"] / out["rm_accuracy_in_distribution"]

    # RL step on fixed candidate pools with the exact KL-regularised optimum
    rl = config.rl
    rng = np.random.default_rng([seed, 2527])
    pool = rng.standard_normal((rl.num_prompts, rl.num_candidates, task.dim)).astype(np.float32)
    f = pool @ w_attr.T  # [P, N, K]
    ref_logp = jnp.full((rl.num_prompts, rl.num_candidates), -np.log(rl.num_candidates))
    ref_f = f.mean(1).mean(0)
    for name, principles in (("base", ((TARGET, 1),)), ("anti_length", ((TARGET, 1),
                                                                          (LENGTH, -1)))):
        _, hot = encode([principles], k)
        r = np.asarray(reward(pool, hot[0]))  # [P, N]
        pi = np.asarray(kl_optimal_policy(jnp.asarray(r), ref_logp, float(rl.beta)))
        pf = np.einsum("pn,pnk->k", pi, f) / rl.num_prompts
        out[f"{name}_target_gain"] = float(pf[TARGET] - ref_f[TARGET])
        out[f"{name}_length_exploitation"] = float(pf[LENGTH] - ref_f[LENGTH])
        out[f"{name}_kl"] = float(np.mean(np.sum(pi * (np.log(pi + 1e-30) + np.log(
            rl.num_candidates)), -1)))
        for j, a in enumerate(ATTRIBUTES):
            if j not in (TARGET, LENGTH):
                out[f"{name}_{a}_gain"] = float(pf[j] - ref_f[j])
    out["length_cut"] = 1.0 - out["anti_length_length_exploitation"] / max(
        out["base_length_exploitation"], 1e-8)
    out["target_ratio"] = out["anti_length_target_gain"] / out["base_target_gain"]
    return out


def run_seeds(config: ml_collections.ConfigDict, workdir: str) -> dict[int, dict[str, float]]:
    """Every seed's instructable RM in one program, then each seed's accuracies and RL step."""
    seeds = [int(s) for s in config.seeds]
    train = [make_pairs(config, s, split_principles(config, s)[0], config.data.num_pairs, 0)
             for s in seeds]
    data = {k: jnp.asarray(np.stack([t[k] for t in train]))
            for k in ("chosen", "rejected", "principle")}
    mlp, fit = train_rm(config, os.path.join(workdir, "rm"), data, seeds)
    reward = jax.jit(lambda p, z, h: mlp.apply(p, rm_inputs(z, h)))
    last = fit.history[-1]
    out = {}
    for i, seed in enumerate(seeds):
        params = fit.seed_params(i)
        out[seed] = evaluate(config, seed, lambda z, h, p=params: reward(p, z, h))
        out[seed]["rm_final_loss"] = float(last[f"seed_{seed}/loss_mean"])
    return out


def claims(results) -> list[Claim]:
    v = "default"
    ind = metric(results, v, "rm_accuracy_in_distribution")
    held = metric(results, v, "rm_accuracy_held_out")
    ratio = held / ind
    base_len = metric(results, v, "base_length_exploitation")
    anti_len = metric(results, v, "anti_length_length_exploitation")
    base_t = metric(results, v, "base_target_gain")
    anti_t = metric(results, v, "anti_length_target_gain")
    cut = 1.0 - anti_len / base_len if base_len > 0 else 0.0
    t_ratio = anti_t / base_t if base_t > 0 else 0.0
    return [
        Claim(name="the instructable RM's accuracy on held-out principle combinations is >= 85% "
                   "of its in-distribution accuracy",
              passed=ratio >= 0.85,
              measured={"in_distribution": ind, "held_out": held, "ratio": ratio},
              detail=f"held-out {held:.3f} / in-distribution {ind:.3f} = {ratio:.3f}"),
        Claim(name="adding an anti-length principle at RL time cuts length exploitation by >= 50% "
                   "while the target-attribute gain stays within 5%",
              passed=cut >= 0.5 and t_ratio >= 0.95,
              measured={"base_length_exploitation": base_len,
                        "anti_length_length_exploitation": anti_len, "length_cut": cut,
                        "base_target_gain": base_t, "anti_length_target_gain": anti_t,
                        "target_ratio": t_ratio},
              detail=f"length exploitation {base_len:.3f} -> {anti_len:.3f} (cut "
                     f"{100 * cut:.0f}%); helpfulness gain {base_t:.3f} -> {anti_t:.3f} "
                     f"({100 * t_ratio:.1f}% of base)"),
    ]


def plots(results, workdir: str) -> list[str]:
    """RM accuracy (in-distribution vs held-out combinations) and the RL attribute gains."""
    m = results["default"]["metrics"]
    stat = lambda names: ([m[n]["mean"] for n in names], [m[n]["std"] for n in names])  # noqa: E731
    folder = os.path.join(workdir, "plots")
    rm = plot_grouped_bars(
        ["in-distribution", "held-out combos"],
        {"instructable RM": stat(["rm_accuracy_in_distribution", "rm_accuracy_held_out"])},
        os.path.join(folder, "salmon_rm_accuracy.png"),
        title="SALMON toy: instructable RM", ylabel="RM accuracy vs judge", ylim=(0.5, 1.0))
    rl = plot_grouped_bars(
        ["helpfulness gain", "length gain"],
        {f"P_RL: {name}": stat([f"{name}_target_gain", f"{name}_length_exploitation"])
         for name in ("base", "anti_length")},
        os.path.join(folder, "salmon_rl_gains.png"),
        title="SALMON toy: anti-length at RL time", ylabel="gain over pi_ref")
    return [rm, rl]
