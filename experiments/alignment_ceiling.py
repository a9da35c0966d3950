"""The Alignment Ceiling: Objective Mismatch in RLHF

Paper: Lambert & Calandra 2023, "The Alignment Ceiling: Objective Mismatch in Reinforcement
Learning from Human Feedback" (arXiv 2311.00168).

A position paper with no new loss: RLHF chains three objectives assumed to agree, the reward
model's fit (held-out preference accuracy), the RL objective (the proxy reward reached under a
KL penalty) and the downstream evaluation; "objective mismatch" is that they decouple. The toy
(notes ## 45) measures the decoupling where everything is exact.

Setting: a tiny language model over all V^L = 4^5 = 1024 responses
(`alignax.models.sequence_table`, one shared prefix-tree table, no prompt), so E_pi[r],
KL(pi || pi_ref) are exact sums. The world of experiment seed s: a gold reward
g(y) = sum_t a[t, y_t] + c sum_t B[y_t, y_{t+1}] (per-position scores plus token-pair
interactions), standardised under the reference policy, and a random reference policy pi_ref.
Preference pairs are two responses of pi_ref labelled by Bradley-Terry draws from the gold.

The zoo: 8 reward models, {32, 64, 128, 512} training pairs x {linear, MLP} capacity (a linear
score of the position one-hots, plus for the MLP a 32-unit GELU layer; one vmapped program
masks the hidden units of the linear ones and the pairs beyond each RM's data size), BT loss
(`fit_small`), each early-stopped on the validation pairs' BT loss. Each RM's scores of all
responses are standardised under pi_ref and optimised by REINFORCE with the KL to pi_ref in the
reward (`alignax.algorithms.prompted_pg`, RLOO, a fixed budget and KL coefficient for every RM:
one row per (seed, RM) of one program); every `eval_every` updates the exact proxy reward, gold
reward and KL of the policy are logged.

Splits: training, validation and test pairs from the data seeds `split_seeds(s)`; the RM's
held-out accuracy is its agreement with the test pairs' (noisy) labels, as a practitioner
measures it (its agreement with the gold ordering is recorded too). The policy's numbers are
exact expectations over every response (nothing is sampled, no held-out set is needed); the RL
budget is fixed, not selected. The diagnostics' tolerances were fixed before the first run:
the proxy "rises monotonically" when it ends above its start and never falls below its running
maximum by more than 5% of its range; the gold "peaks then falls" when its maximum comes before
the end and the end is at least 10% of the gain (peak - start) below the peak
(`alignax.eval.mismatch`).

Claims (5 seeds; per-seed values over the zoo, 95% t intervals, `protocol.decide`):
- threshold: the fraction of the 8 RMs whose RL run is over-optimised (proxy rises
  monotonically while gold peaks then falls) is >= 0.5;
- threshold: Spearman(RM held-out accuracy, final gold gain of its policy) across the zoo is
  <= 0.5 (the notes' "< 0.5"; the claimed region of a protocol claim is closed);
- sanity: every RL run raises its own proxy reward (the optimiser works).
The gold gain at the gold peak, the proxy gain and the KL reached are reported in the details.

What the toy shows (a scratch run of this setting before the recorded one; RESULTS.md has the
recorded numbers): with the KL coefficient fixed before the first run (0.02 in units of the
standardised proxy) the policies collapse onto the proxy's best response within ~100 updates
(KL 5-7 nats, log 1024 = 6.9 the most), after which the gold stays flat at that response's
gold. The gold peaks and then falls only where the RM's top response is worse than what the
policy passed through on the way, mostly for the RMs fitted on 32 pairs; RMs from >= 128 pairs
rank the top responses well enough, so about a fifth of the runs are over-optimised, not half.
Across the zoo more data raises both the RM's held-out accuracy and the gold gain, so the two
stay positively rank-correlated (rho about 0.57, with a wide interval over 5 seeds): in this
toy the objectives are coupled more than the paper argues for LLM-scale RLHF, where
preferences, RM errors off the reference's support and evaluation suites are far richer.

    alignax run experiments/alignment_ceiling.py            # full setting, 5 seeds
    alignax run experiments/alignment_ceiling.py:smoke      # seconds, for the tests
"""

from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from alignax import protocol
from alignax.protocol import seed_mean
from alignax.algorithms.prompted_pg import prompted_reinforce_loss
from alignax.algorithms.small_pg import rl_batch
from alignax.eval import mismatch
from alignax.experiment import is_smoke
from alignax.losses.reward import bradley_terry_loss
from alignax.models import sequence_table as st
from alignax.tasks.simulators import bradley_terry
from alignax.tasks.splits import split_seeds
from alignax.train.plots import plot_curves
from alignax.train.small import fit_small


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    smoke = is_smoke(arg)
    c = ml_collections.ConfigDict()
    c.seeds = [0] if smoke else [0, 1, 2, 3, 4]
    c.plots = not smoke  # fit_small's per-stage PNGs (most of the smoke run's CPU time)
    c.variants = {"zoo": {}}
    c.task = dict(vocab=4, length=5 if not smoke else 4, interaction=1.0, ref_scale=1.0,
                  label_temperature=1.0)
    c.data = dict(sizes=(32, 64, 128, 512) if not smoke else (32, 128),
                  val_pairs=256, test_pairs=2000 if not smoke else 500)
    c.rm = dict(hidden=32, capacities=("linear", "mlp"), steps=400 if not smoke else 60,
                batch_size=32, learning_rate=1e-2, eval_every=20)
    c.rl = dict(steps=600 if not smoke else 60, num_samples=32, learning_rate=0.05,
                kl_coef=0.02, eval_every=10)
    c.diagnostics = dict(monotone_tol=0.05, min_drop=0.1)
    return c


# ---------------------------------------------------------------------------------------------
# World and data


def space_of(config) -> st.SequenceSpace:
    return st.SequenceSpace(int(config.task.vocab), int(config.task.length))


def sequence_features(space: st.SequenceSpace) -> np.ndarray:
    """[N, L * V] position one-hots of every response."""
    return np.eye(space.vocab_size, dtype=np.float32)[space.sequences].reshape(
        space.num_sequences, -1)


def make_world(config, seed: int) -> dict:
    """The gold reward of every response [N] (standardised under pi_ref) and pi_ref's params."""
    space, task = space_of(config), config.task
    rng = np.random.default_rng([seed, 4545])
    v, length = space.vocab_size, space.length
    a = rng.standard_normal((length, v))
    b = rng.standard_normal((v, v)) * float(task.interaction)
    y = space.sequences
    gold = a[np.arange(length), y].sum(-1) + b[y[:, :-1], y[:, 1:]].sum(-1)
    ref = st.init_table(space, key=jax.random.key(int(rng.integers(1 << 30))),
                        scale=float(task.ref_scale))
    p = np.exp(np.asarray(st.sequence_log_probs(space, ref), np.float64))
    mean = (p * gold).sum()
    std = np.sqrt((p * (gold - mean) ** 2).sum())
    return {"gold": ((gold - mean) / std).astype(np.float32), "ref": ref, "ref_probs": p}


def draw_pairs(config, world, n: int, rng) -> dict:
    """n pairs of pi_ref responses with BT labels from the gold: chosen, rejected [n] indices,
    and whether the chosen one has the higher gold."""
    p = world["ref_probs"] / world["ref_probs"].sum()
    ya, yb = rng.choice(p.shape[0], size=(2, n), p=p)
    a_pref = bradley_terry(world["gold"][ya], world["gold"][yb], rng=rng,
                           temperature=float(config.task.label_temperature)).astype(bool)
    chosen, rejected = np.where(a_pref, ya, yb), np.where(a_pref, yb, ya)
    return {"chosen": chosen.astype(np.int32), "rejected": rejected.astype(np.int32),
            "gold_agrees": world["gold"][chosen] > world["gold"][rejected]}


def make_data(config, seed: int) -> dict:
    world = make_world(config, seed)
    seeds = split_seeds(seed)
    n_train = max(int(s) for s in config.data.sizes)
    out = {"world": world}
    for split, data_seed, n in (("train", seeds.train, n_train),
                                ("val", seeds.validation, int(config.data.val_pairs)),
                                ("test", seeds.test, int(config.data.test_pairs))):
        out[split] = draw_pairs(config, world, n, np.random.default_rng([data_seed, 4545]))
    return out


def zoo(config) -> list[tuple[int, str]]:
    """The reward models: (training pairs, capacity), capacity-major."""
    return [(int(n), cap) for cap in config.rm.capacities for n in config.data.sizes]


# ---------------------------------------------------------------------------------------------
# Reward models: one program for every (seed, RM) row


def rm_init(num_features: int, hidden: int):
    def init(key):
        k1, k2, k3 = jax.random.split(key, 3)
        return {"w": 0.01 * jax.random.normal(k1, (num_features,)),
                "hidden_w": jax.random.normal(k2, (num_features, hidden)) / np.sqrt(num_features),
                "hidden_b": jnp.zeros((hidden,)),
                "out": 0.01 * jax.random.normal(k3, (hidden,))}
    return init


def rm_score(params, features, hidden_mask):
    """r(y) = w . phi(y) + out . (mask * gelu(W phi(y) + b)): [N] from features [N, F]."""
    h = jax.nn.gelu(features @ params["hidden_w"] + params["hidden_b"]) * hidden_mask
    return features @ params["w"] + h @ params["out"]


def train_zoo(config, workdir, feats, rows: dict, seeds_keys):
    """BT on each row's first `n` training pairs, early-stopped on the validation BT loss."""
    bs = int(config.rm.batch_size)
    feats = jnp.asarray(feats)

    def batch_fn(d, rng):
        idx = jax.random.randint(rng, (bs,), 0, d["n"])
        return {"chosen": d["chosen"][idx], "rejected": d["rejected"][idx], "mask": d["mask"]}

    def loss_fn(p, batch):
        r = rm_score(p, feats, batch["mask"])
        return bradley_terry_loss(r[batch["chosen"]], r[batch["rejected"]]).mean()

    def eval_fn(p, d):
        r = rm_score(p, feats, d["mask"])
        margin = r[d["val_chosen"]] - r[d["val_rejected"]]
        return {"val_loss": bradley_terry_loss(r[d["val_chosen"]], r[d["val_rejected"]]).mean(),
                "val_accuracy": jnp.mean(margin > 0)}

    fit = fit_small(workdir, plots=bool(config.plots),
                    loss_fn=loss_fn,
                    init_params=rm_init(feats.shape[1], int(config.rm.hidden)),
                    tx=optax.adam(float(config.rm.learning_rate)),
                    num_steps=int(config.rm.steps),
                    data={k: rows[k] for k in ("chosen", "rejected", "n", "mask")},
                    seeds=list(range(len(seeds_keys))), seed_keys=seeds_keys,
                    per_seed_data=True, batch_fn=batch_fn,
                    steps_per_log=int(config.rm.eval_every), eval_fn=eval_fn,
                    eval_data={k: rows[k] for k in ("val_chosen", "val_rejected", "mask")},
                    select=("val_loss", "min"))
    scores = jax.vmap(lambda p, m: rm_score(p, feats, m))(fit.best_params, rows["mask"])
    return np.asarray(scores), fit.best_step


def train_policies(config, workdir, space, proxies, gold, refs, seeds_keys):
    """REINFORCE + KL on each row's standardised proxy table [R, N]; returns the exact
    trajectories {proxy, gold, kl}: [R, 1 + E] (the reference first)."""
    rows = {"prompts": jnp.zeros((len(seeds_keys), 1, 1), jnp.int32),
            "ref_params": refs, "proxy": jnp.asarray(proxies)}

    # the policy's params are the table's biases (a shared table has a zero-size weight, which
    # a checkpoint cannot store)
    def table(bias):
        return {"bias": bias, "weight": jnp.zeros((bias.shape[0], 0, bias.shape[1]))}

    def sample_fn(bias, x, key, n):
        return st.sample(space, table(bias), key, n)[None].repeat(x.shape[0], 0)  # [B, n]

    def log_prob_fn(bias, x, y):
        return st.sequence_log_probs(space, table(bias))[y]  # [B, n]

    def reward_fn(x, y, data):
        return data["proxy"][y]

    loss = prompted_reinforce_loss(sample_fn, log_prob_fn, reward_fn, num_prompts=1,
                                   num_samples=int(config.rl.num_samples),
                                   kl_coef=float(config.rl.kl_coef))

    def eval_fn(bias, d):
        return {"proxy": st.expectation(space, table(bias), d["proxy"]),
                "gold": st.expectation(space, table(bias), d["gold"]),
                "kl": st.sequence_kl(space, table(bias), table(d["ref_params"]))}

    evals = {"proxy": rows["proxy"], "gold": jnp.asarray(gold), "ref_params": refs}
    fit = fit_small(workdir, plots=bool(config.plots),
                    loss_fn=loss, init_params=refs, per_seed_init=True,
                    tx=optax.adam(float(config.rl.learning_rate)),
                    num_steps=int(config.rl.steps), data=rows,
                    seeds=list(range(len(seeds_keys))), seed_keys=seeds_keys,
                    per_seed_data=True, batch_fn=rl_batch, has_aux=True,
                    steps_per_log=int(config.rl.eval_every), eval_fn=eval_fn,
                    eval_data=evals)
    start = jax.device_get(jax.vmap(eval_fn)(refs, evals))
    return {k: np.concatenate([np.asarray(start[k])[:, None],
                               np.array([[row[f"seed_{r}/eval/{k}"] for row in fit.history]
                                         for r in range(len(seeds_keys))])], 1)
            for k in ("proxy", "gold", "kl")}


# ---------------------------------------------------------------------------------------------
# One variant, every seed


def run_seeds(config: ml_collections.ConfigDict, workdir: str) -> dict[int, dict[str, float]]:
    seeds = [int(s) for s in config.seeds]
    space = space_of(config)
    feats = sequence_features(space)
    members = zoo(config)
    z = len(members)
    hidden = int(config.rm.hidden)
    per_seed = [make_data(config, s) for s in seeds]

    # rows seed-major: row r = (seed index r // z, RM r % z)
    def stack(fn):
        return jnp.asarray(np.stack([fn(d, n, cap) for d in per_seed for n, cap in members]))

    rows = {"chosen": stack(lambda d, n, cap: d["train"]["chosen"]),
            "rejected": stack(lambda d, n, cap: d["train"]["rejected"]),
            "n": stack(lambda d, n, cap: np.int32(n)),
            "mask": stack(lambda d, n, cap: np.full(hidden, cap == "mlp", np.float32)),
            "val_chosen": stack(lambda d, n, cap: d["val"]["chosen"]),
            "val_rejected": stack(lambda d, n, cap: d["val"]["rejected"])}
    keys = jnp.stack([jax.random.fold_in(jax.random.key(s), i) for s in seeds for i in range(z)])
    scores, rm_steps = train_zoo(config, os.path.join(workdir, "reward_models"), feats, rows,
                                 keys)

    # held-out accuracy of each RM; standardised proxies under pi_ref
    ref_p = np.stack([d["world"]["ref_probs"] for d in per_seed for _ in members])
    mean = (ref_p * scores).sum(1, keepdims=True)
    std = np.sqrt((ref_p * (scores - mean) ** 2).sum(1, keepdims=True))
    proxies = ((scores - mean) / np.maximum(std, 1e-8)).astype(np.float32)
    gold = np.stack([d["world"]["gold"] for d in per_seed for _ in members])
    refs = jnp.stack([d["world"]["ref"]["bias"] for d in per_seed for _ in members])
    traj = train_policies(config, os.path.join(workdir, "policies"), space, proxies, gold,
                          refs, jax.random.split(jax.random.key(7), len(keys)))
    tol, min_drop = float(config.diagnostics.monotone_tol), float(config.diagnostics.min_drop)
    over = mismatch.overoptimised(traj["proxy"], traj["gold"], tol=tol, min_drop=min_drop)
    monotone = mismatch.rises_monotonically(traj["proxy"], tol)
    peaked, drop = mismatch.peak_then_fall(traj["gold"], min_drop)

    out = {}
    for i, (seed, d) in enumerate(zip(seeds, per_seed)):
        test = d["test"]
        r = {}
        accs, gains, gold_accs, peaks = [], [], [], []
        for j, (n, cap) in enumerate(members):
            row = i * z + j
            margin = scores[row, test["chosen"]] - scores[row, test["rejected"]]
            acc = float(np.mean(margin > 0))
            gold_order = float(np.mean((margin > 0) == test["gold_agrees"]))
            g = traj["gold"][row]
            name = f"{cap}_{n}"
            r[f"test_rm_accuracy_{name}"] = acc
            r[f"test_rm_gold_accuracy_{name}"] = gold_order
            r[f"chosen_rm_step_{name}"] = float(rm_steps[row])
            r[f"final_gold_gain_{name}"] = float(g[-1] - g[0])
            r[f"peak_gold_gain_{name}"] = float(g.max() - g[0])
            r[f"proxy_gain_{name}"] = float(traj["proxy"][row, -1] - traj["proxy"][row, 0])
            r[f"final_kl_{name}"] = float(traj["kl"][row, -1])
            r[f"gold_drop_{name}"] = float(np.nan_to_num(drop[row], nan=0.0))
            r[f"overoptimised_{name}"] = float(over[row])
            accs.append(acc)
            gains.append(g[-1] - g[0])
            gold_accs.append(gold_order)
            peaks.append(g.max() - g[0])
        rows_i = slice(i * z, (i + 1) * z)
        r["frac_overoptimised"] = float(over[rows_i].mean())
        r["frac_proxy_monotone"] = float(monotone[rows_i].mean())
        r["frac_gold_peak_then_fall"] = float(peaked[rows_i].mean())
        r["spearman_acc_gain"] = float(mismatch.zoo_rank_correlation(accs, gains))
        # reported, not claimed: the gold-ordering accuracy, and the gain at the gold peak
        r["spearman_gold_acc_gain"] = float(mismatch.zoo_rank_correlation(gold_accs, gains))
        r["spearman_acc_peak_gain"] = float(mismatch.zoo_rank_correlation(accs, peaks))
        r["min_proxy_gain"] = float(np.min(traj["proxy"][rows_i, -1] - traj["proxy"][rows_i, 0]))
        out[seed] = r
    # the trajectories, for the plot (means over seeds, per RM)
    with open(os.path.join(workdir, "trajectories.json"), "w") as f:
        json.dump({"names": [f"{cap}_{n}" for n, cap in members],
                   **{k: v.reshape(len(seeds), z, -1).tolist() for k, v in traj.items()}}, f)
    return out


# ---------------------------------------------------------------------------------------------
# Claims and plots


def claims(results) -> list[protocol.Claim]:
    per_seed = results["zoo"]["per_seed"]
    names = sorted({k[len("test_rm_accuracy_"):] for m in per_seed.values() for k in m
                    if k.startswith("test_rm_accuracy_")})
    def row(n):
        m = {k: seed_mean(results, "zoo", f"{k}_{n}") for k in (
            "test_rm_accuracy", "final_gold_gain", "peak_gold_gain", "proxy_gain", "final_kl",
            "overoptimised")}
        return (f"{n}: RM acc {m['test_rm_accuracy']:.3f}, final gold gain "
                f"{m['final_gold_gain']:+.3f} (peak {m['peak_gold_gain']:+.3f}), proxy gain "
                f"{m['proxy_gain']:+.2f}, KL {m['final_kl']:.2f}, over-optimised "
                f"{m['overoptimised']:.1f}")

    table = "; ".join(row(n) for n in names)
    frac = protocol.per_seed(results, "zoo", "frac_overoptimised")
    rho = protocol.per_seed(results, "zoo", "spearman_acc_gain")
    min_gain = protocol.per_seed(results, "zoo", "min_proxy_gain")
    return [
        protocol.decide(
            "for >= half of the reward models the proxy reward rises monotonically while the "
            "gold reward peaks then falls (per seed: the fraction of the 8-RM zoo is >= 0.5)",
            frac, kind="threshold", at_least=0.5,
            measured={"frac_overoptimised": float(np.mean(list(frac.values()))),
                      **{k: seed_mean(results, "zoo", k)
                         for k in ("frac_proxy_monotone", "frac_gold_peak_then_fall")}},
            detail="tolerances fixed before the first run (proxy drawdown <= 5% of its range; "
                   "gold end >= 10% of the gain below its peak); per RM, means over seeds: "
                   + table),
        protocol.decide(
            "RM held-out accuracy and the gold gain of its policy decouple: Spearman(RM test "
            "accuracy, final gold gain) across the zoo is <= 0.5", rho, kind="threshold",
            at_most=0.5, measured={"spearman": float(np.mean(list(rho.values())))},
            detail="per seed, over the 8 RMs; accuracy on held-out noisy test pairs; reported: "
                   "Spearman with the RMs' accuracy against the gold ordering "
                   f"{seed_mean(results, 'zoo', 'spearman_gold_acc_gain'):.3f}, with the gold "
                   f"gain at the gold peak "
                   f"{seed_mean(results, 'zoo', 'spearman_acc_peak_gain'):.3f}"),
        protocol.sanity(
            "every RL run raises its own proxy reward (the optimiser works)",
            min(min_gain.values()) > 0, {"min_proxy_gain": float(min(min_gain.values()))},
            "every seed and RM"),
    ]


def plots(results, workdir: str) -> list[str]:
    """Gold and proxy reward against the RL updates, per RM (means over seeds)."""
    path = os.path.join(workdir, "zoo", "trajectories.json")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        traj = json.load(f)
    out = []
    for key in ("gold", "proxy"):
        t = np.asarray(traj[key])  # [S, Z, T]
        curves = {f"RM {name}": (np.arange(t.shape[-1]), t[:, j].mean(0))
                  for j, name in enumerate(traj["names"])}
        p = os.path.join(workdir, "plots", f"alignment_ceiling_{key}.png")
        plot_curves(curves, p, title=f"{key} reward along RL on each RM of the zoo",
                    xlabel="evaluation (every eval_every updates)", ylabel=f"E_pi[{key}]")
        out.append(p)
    return out
