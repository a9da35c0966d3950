"""TDPO: token-level DPO (TDPO1, TDPO2) vs DPO, the gold-KL frontier and token entropy.

Paper: Zeng, Liu, Ma, Yang, Zhang, Wang 2024, "Token-level Direct Preference Optimization"
(arXiv 2404.11999).

Setting (the notes' IMDb analogue): responses are all 256 sequences of 4 tokens over a vocabulary
of 4 (`alignax.models.sequence_table.SequenceSpace(4, 4)`), the policy is the exact prefix-tree
softmax of `sequence_table` (one logit table per prefix, one prompt), and the gold reward is the
number of "positive" tokens (tokens 0 and 1) in the response. The reference / SFT policy has
N(0, ref_scale^2) node logits. Preference pairs are two independent samples of pi_ref labelled by
Bradley-Terry draws from the gold reward (temperature 1). Every method trains on the same pairs,
full batch, with Adam for `train.steps` updates from pi_ref:
  - `dpo`: -log sigma(beta h), h = (log pi - log pi_ref)(y_w) - (log pi - log pi_ref)(y_l);
  - `tdpo1`: -log sigma(beta h - beta (D(y_l) - D(y_w))), with the sequential KL
    D(y) = sum_t KL(pi_ref(.|y_<t) || pi(.|y_<t)) (exact, `sequence_table.sequential_kl`);
  - `tdpo2`: -log sigma(beta h - alpha beta (D(y_l) - sg(D(y_w)))), alpha = 0.5 (the paper's
    value) (`alignax.losses.direct.tdpo_loss`).
One variant per beta in {0.05, 0.1, 0.2, 0.5} (the beta sweep); each variant trains the three
methods (one `fit_small` program each, every seed vmapped) so that the per-seed comparisons at
matched gold can be made inside the run (`:smoke`: one beta, DPO and TDPO2 only).

Splits (`alignax.tasks.splits.split_seeds`): pi_ref of experiment seed s is seeded by s; the
training, validation and test pairs come from the data seeds 3s, 3s + 1, 3s + 2. The gold reward,
KL and entropy of a policy are exact sums over the 256 responses (no test sample is needed; the
test pairs give the reported held-out pair accuracy).

Selection (every method and beta the same): early stopping on a validation proxy of the gold
quality computed from the held-out labelled pairs only, the self-normalised importance-weighted
win rate against pi_ref (`alignax.eval.overoptimization.importance_win_rate`: each validation
pair (a, b) ~ pi_ref x pi_ref counts for its winner with weight pi / pi_ref), via
`fit_small(select=("val_win_rate", "max"))` over the logged steps (every `train.log_every`
updates). `chosen_step` and `val_win_rate` are recorded per method.

Metrics (test_*: exact, of the selected policy): E_pi[gold], KL(pi || pi_ref) over whole
sequences (the frontier's x axis, fixed before the runs), TDPO's sequential KL under the policy's
own samples E_{y ~ pi}[sum_t KL(pi_ref(.|y_<t) || pi(.|y_<t))] (`seq_kl`, reported), the mean
per-token entropy H(pi) / L; along every run the exact (KL, seq_kl, gold, entropy) trajectory
(`trajectory_<method>.json`). Matched gold (the frontier comparison): for each seed and
beta, g* = the smaller of DPO's and TDPO2's selected gold (a level both selected policies
reach); each method's KL and token entropy where its trajectory first reaches g* (linear
interpolation between logged points, `first_crossing`); `kl_ratio_tdpo2` = KL_TDPO2(g*) /
KL_DPO(g*) (and `kl_ratio_tdpo1` likewise, with its own g*), `entropy_gain_tdpo2` =
H_TDPO2(g*) - H_DPO(g*).

Claims (5 seeds, 95% t intervals, `protocol.decide`), the notes' pass criterion "TDPO2's frontier
(gold vs seq-KL) dominates DPO (same reward at >= 20% lower KL at >= 2 beta values) and keeps
token entropy >= DPO's" as intervals: (1, comparative) per seed the second-smallest of the four
betas' KL ratios TDPO2 / DPO at matched gold is <= 0.8 (i.e. at >= 2 betas TDPO2 reaches DPO's
gold at >= 20% lower KL); (2, comparative) per seed the mean over betas of TDPO2's token entropy
minus DPO's at matched gold is >= 0. TDPO1 and the selected policies' gold / KL / entropy are
reported in the details. Reading them: a method that stops earlier on the same path has a lower
KL and a higher entropy at its selected step only because it also has a lower gold there; the
claims therefore compare the KL and entropy at the same gold, along each run.

    alignax run experiments/tdpo.py            # full setting, 5 seeds
    alignax run experiments/tdpo.py:smoke      # seconds, for the tests
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
from alignax.eval.overoptimization import first_crossing, importance_win_rate
from alignax.experiment import is_smoke
from alignax.losses.direct import dpo_loss, tdpo_loss
from alignax.models import sequence_table as st
from alignax.tasks.simulators import bradley_terry
from alignax.tasks.splits import split_seeds
from alignax.train.plots import plot_curves
from alignax.train.small import fit_small, stack_seeds

METHODS = ("dpo", "tdpo1", "tdpo2")
BETAS = (0.05, 0.1, 0.2, 0.5)
TRAJECTORY = ("gold", "kl", "seq_kl", "entropy")


def variant_name(beta: float) -> str:
    """e.g. beta_0p1 (config keys take no dots)."""
    return f"beta_{beta:g}".replace(".", "p")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    smoke = is_smoke(arg)
    c = ml_collections.ConfigDict()
    c.seeds = [0] if smoke else [0, 1, 2, 3, 4]
    c.beta = 0.1
    betas = (0.1,) if smoke else BETAS
    c.variants = {variant_name(b): {"beta": b} for b in betas}
    # the methods each variant trains (TDPO1 is reported, never claimed: not in :smoke)
    c.methods = ("dpo", "tdpo2") if smoke else METHODS
    c.alpha = 0.5  # TDPO2's weight of the sequential-KL term (the paper's value)
    # responses: vocab ** length sequences; gold = number of tokens < num_positive
    c.task = dict(vocab=4, length=4, num_positive=2, ref_scale=1.0, label_temperature=1.0)
    c.data = dict(num_pairs=128, num_val_pairs=256, num_test_pairs=256)
    c.train = dict(steps=100 if smoke else 1500, learning_rate=3e-3,
                   log_every=50 if smoke else 25, checkpoint_every=50,
                   plots=not smoke)  # the trainer's per-run PNGs (not in :smoke: they cost CPU)
    return c


def space_of(config) -> st.SequenceSpace:
    return st.SequenceSpace(int(config.task.vocab), int(config.task.length))


def _table(bias) -> dict:
    """sequence_table params of one shared (prompt-free) table with node logits bias [M, V]."""
    bias = jnp.asarray(bias, jnp.float32)
    return {"bias": bias, "weight": jnp.zeros((bias.shape[0], 0, bias.shape[1]), jnp.float32)}


def log_probs(space: st.SequenceSpace, bias) -> jax.Array:
    """log pi(y) [..., N] of every response for node logits bias [..., M, V]."""
    bias = jnp.asarray(bias, jnp.float32)
    f = lambda b: st.sequence_log_probs(space, _table(b))  # noqa: E731
    for _ in range(bias.ndim - 2):
        f = jax.vmap(f)
    return f(bias)


def gold_reward(config) -> np.ndarray:
    """[N] the number of positive tokens (ids < num_positive) of every response."""
    seqs = space_of(config).sequences
    return (seqs < int(config.task.num_positive)).sum(-1).astype(np.float32)


def draw_pairs(probs: np.ndarray, gold: np.ndarray, n: int, temperature: float, rng):
    """n pairs of independent pi_ref samples, (chosen, rejected) by Bradley-Terry draws from the
    gold reward (ties broken by a fair coin)."""
    a = rng.choice(probs.size, n, p=probs)
    b = rng.choice(probs.size, n, p=probs)
    a_wins = bradley_terry(gold[a], gold[b], rng=rng, temperature=temperature).astype(bool)
    return np.where(a_wins, a, b).astype(np.int32), np.where(a_wins, b, a).astype(np.int32)


def make_data(config, seed: int) -> dict:
    """pi_ref of experiment seed `seed` and its training / validation / test pairs from the
    disjoint data seeds of `split_seeds(seed)`."""
    space = space_of(config)
    rng = np.random.default_rng([seed, 5900])
    ref_bias = (config.task.ref_scale * rng.standard_normal((space.num_nodes, space.vocab_size))
                ).astype(np.float32)
    probs = np.exp(np.asarray(log_probs(space, ref_bias), np.float64))
    probs /= probs.sum()
    gold = gold_reward(config)
    seeds = split_seeds(seed)
    temp = float(config.task.label_temperature)
    out = {"ref_bias": ref_bias, "gold": gold}
    for prefix, n, data_seed in (("", config.data.num_pairs, seeds.train),
                                 ("val_", config.data.num_val_pairs, seeds.validation),
                                 ("test_", config.data.num_test_pairs, seeds.test)):
        c, r = draw_pairs(probs, gold, int(n), temp, np.random.default_rng([data_seed, 5901]))
        out[f"{prefix}chosen"], out[f"{prefix}rejected"] = c, r
    return out


def method_loss(space, method: str, beta: float, alpha: float):
    """The per-pair loss of a method on node logits `bias` and the batch's pairs."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; one of {METHODS}")

    def loss_fn(params, batch):
        logp = log_probs(space, params["bias"])
        ref = log_probs(space, batch["ref_bias"])
        c, r = batch["chosen"], batch["rejected"]
        if method == "dpo":
            losses, _ = dpo_loss(logp[c], logp[r], ref[c], ref[r], beta=beta)
        else:
            seq_kl = st.sequential_kl(space, _table(params["bias"]), _table(batch["ref_bias"]))
            losses, _ = tdpo_loss(logp[c], logp[r], ref[c], ref[r], chosen_seq_kl=seq_kl[c],
                                  rejected_seq_kl=seq_kl[r], beta=beta, alpha=alpha,
                                  variant=int(method[-1]))
        return losses.mean()

    return loss_fn


def policy_metrics(space, bias, ref_bias, gold) -> dict:
    """Exact E_pi[gold], KL(pi || pi_ref) over whole sequences, TDPO's sequential KL
    E_{y ~ pi}[sum_t KL(pi_ref(.|y_<t) || pi(.|y_<t))] and the mean per-token entropy H(pi) / L
    of one policy."""
    logp = log_probs(space, bias)
    ref = log_probs(space, ref_bias)
    p = jnp.exp(logp)
    seq_kl = st.sequential_kl(space, _table(bias), _table(ref_bias))
    return {"gold": jnp.sum(p * gold), "kl": jnp.sum(p * (logp - ref)),
            "seq_kl": jnp.sum(p * seq_kl), "entropy": -jnp.sum(p * logp) / space.length}


def train(config, workdir: str, data: dict, method: str):
    """One method, every seed at once, early-stopped on the validation win-rate proxy."""
    space, tr = space_of(config), config.train
    loss_fn = method_loss(space, method, float(config.beta), float(config.alpha))

    def eval_fn(params, ev):
        logp = log_probs(space, params["bias"])
        ref = log_probs(space, ev["ref_bias"])
        c, r = ev["val_chosen"], ev["val_rejected"]
        h = (logp - ref)
        out = policy_metrics(space, params["bias"], ev["ref_bias"], ev["gold"])
        out["val_win_rate"] = importance_win_rate(logp[c], logp[r], ref[c], ref[r],
                                                  jnp.ones(c.shape, bool))
        out["val_accuracy"] = jnp.mean(h[c] > h[r])
        return out

    return fit_small(workdir, loss_fn=loss_fn, init_params={"bias": jnp.array(
                         data["ref_bias"], copy=True)}, per_seed_init=True,
                     tx=optax.adam(float(tr.learning_rate)), num_steps=int(tr.steps),
                     data={k: data[k] for k in ("chosen", "rejected", "ref_bias")},
                     seeds=list(config.seeds), per_seed_data=True,
                     steps_per_log=int(tr.log_every), checkpoint_every=int(tr.checkpoint_every),
                     eval_fn=eval_fn,
                     eval_data={k: data[k] for k in ("ref_bias", "gold", "val_chosen",
                                                     "val_rejected")},
                     select=("val_win_rate", "max"), plots=bool(tr.plots))


def trajectory(fit, seeds, start: dict) -> dict:
    """{metric: [S, K + 1]}: pi_ref's point, then every logged step."""
    return {k: np.concatenate([np.asarray(start[k], np.float64)[:, None],
                               np.array([[row[f"seed_{s}/eval/{k}"] for row in fit.history]
                                         for s in seeds], np.float64)], axis=1)
            for k in TRAJECTORY}


def at_matched_gold(traj: dict, i: int, target: float) -> dict:
    """KL and entropy of seed i's run where its gold first reaches `target` (interpolated)."""
    t = first_crossing(np.arange(traj["gold"].shape[1]), traj["gold"][i], target)
    if not np.isfinite(t):
        return {"kl": float("inf"), "seq_kl": float("inf"), "entropy": float("nan")}
    grid = np.arange(traj["gold"].shape[1])
    return {k: float(np.interp(t, grid, traj[k][i])) for k in ("kl", "seq_kl", "entropy")}


def run_seeds(config: ml_collections.ConfigDict, workdir: str) -> dict[int, dict[str, float]]:
    """DPO, TDPO1 and TDPO2 at one beta, every seed vmapped; the selected policies' exact
    metrics and the matched-gold comparisons along the trajectories."""
    seeds = [int(s) for s in config.seeds]
    space = space_of(config)
    data = stack_seeds([make_data(config, s) for s in seeds])
    start = jax.vmap(lambda b, g: policy_metrics(space, b, b, g))(data["ref_bias"],
                                                                  data["gold"])
    start = {k: np.asarray(v) for k, v in start.items()}
    ref_logp = log_probs(space, data["ref_bias"])
    trajs, chosen = {}, {}
    out = {s: {} for s in seeds}
    log_every, steps = int(config.train.log_every), int(config.train.steps)
    methods = tuple(config.methods)
    if "dpo" not in methods or not set(methods) <= set(METHODS):
        raise ValueError(f"methods must include dpo and be among {METHODS}, got {methods}")
    for method in methods:
        fit = train(config, os.path.join(workdir, method), data, method)
        trajs[method] = traj = trajectory(fit, seeds, start)
        updates = [0] + [min((i + 1) * log_every, steps) for i in range(len(fit.history))]
        with open(os.path.join(workdir, f"trajectory_{method}.json"), "w") as f:
            json.dump({"seeds": seeds, "updates": updates,
                       **{k: v.tolist() for k, v in traj.items()}}, f)
        # the selected policy is the logged point at its best step (same numbers as
        # fit.best_params, read off the trajectory so matched-gold levels are reached exactly)
        chosen[method] = [updates.index(int(b)) for b in fit.best_step]
        logp = log_probs(space, fit.best_params["bias"])
        h = np.asarray(logp - ref_logp)
        tc, tr = np.asarray(data["test_chosen"]), np.asarray(data["test_rejected"])
        for i, s in enumerate(seeds):
            res, k = out[s], chosen[method][i]
            for name in TRAJECTORY:
                res[f"test_{name}_{method}"] = float(traj[name][i, k])
            res[f"test_pair_accuracy_{method}"] = float(np.mean(h[i][tc[i]] > h[i][tr[i]]))
            res[f"val_win_rate_{method}"] = float(fit.best_score[i])
            res[f"chosen_step_{method}"] = float(fit.best_step[i])
            res[f"test_gold_max_{method}"] = float(traj["gold"][i].max())
    for i, s in enumerate(seeds):
        res = out[s]
        res["test_gold_ref"] = float(start["gold"][i])
        res["test_entropy_ref"] = float(start["entropy"][i])
        for method in (m for m in methods if m != "dpo"):
            target = min(res["test_gold_dpo"], res[f"test_gold_{method}"])
            ours = at_matched_gold(trajs[method], i, target)
            base = at_matched_gold(trajs["dpo"], i, target)
            res[f"matched_gold_{method}"] = float(target)
            res[f"test_kl_at_matched_{method}"] = ours["kl"]
            res[f"test_kl_at_matched_dpo_vs_{method}"] = base["kl"]
            # both runs reach the target by construction; a target at pi_ref's own gold
            # (neither improved) has no ratio
            res[f"kl_ratio_{method}"] = (ours["kl"] / base["kl"] if base["kl"] > 0
                                         else float("nan"))
            res[f"seq_kl_ratio_{method}"] = (ours["seq_kl"] / base["seq_kl"]
                                             if base["seq_kl"] > 0 else float("nan"))
            res[f"entropy_gain_{method}"] = ours["entropy"] - base["entropy"]
    return out


def _across_betas(results, metric: str, reduce) -> dict:
    """{seed: reduce([metric at each beta])} over the betas present."""
    per = [protocol.per_seed(results, variant_name(b), metric) for b in BETAS
           if variant_name(b) in results]
    if not per:
        return {}
    seeds = set(per[0]).intersection(*per[1:])
    return {s: float(reduce([p[s] for p in per])) for s in seeds}


def _second_smallest(values) -> float:
    """The second-smallest value (the smallest with one value): at least two are <= it."""
    v = sorted(values)
    return v[1] if len(v) > 1 else v[0]


def _grid(results, metric: str) -> str:
    """The metric's mean over seeds at each beta (non-finite seeds left out, counted)."""
    parts = []
    for b in BETAS:
        v = variant_name(b)
        if v not in results or not any(metric in m for m in results[v]["per_seed"].values()):
            continue
        x = np.array(list(protocol.per_seed(results, v, metric).values()), np.float64)
        ok = np.isfinite(x)
        mean = float(x[ok].mean()) if ok.any() else float("nan")
        parts.append(f"b={b:g}: {mean:.3f}" + (f" ({int((~ok).sum())} seeds n/a)"
                                               if not ok.all() else ""))
    return ", ".join(parts) or "n/a"


def claims(results) -> list[protocol.Claim]:
    ratio = _across_betas(results, "kl_ratio_tdpo2", _second_smallest)
    gain = _across_betas(results, "entropy_gain_tdpo2", np.mean)
    return [
        protocol.decide(
            "TDPO2 reaches DPO's gold at >= 20% lower KL(pi || pi_ref) at >= 2 of the 4 betas "
            "(per seed the second-smallest KL ratio TDPO2 / DPO at matched gold <= 0.8)",
            ratio, kind=protocol.COMPARATIVE, at_most=0.8,
            detail=f"matched gold = the smaller of the two validation-selected policies' exact "
                   f"gold; KL where each run first reaches it; mean ratio by beta: "
                   f"{_grid(results, 'kl_ratio_tdpo2')}; TDPO1 / DPO: "
                   f"{_grid(results, 'kl_ratio_tdpo1')}; with TDPO's sequential KL "
                   f"E_pi[D_SeqKL] instead, TDPO2 / DPO: {_grid(results, 'seq_kl_ratio_tdpo2')}; "
                   f"selected gold DPO "
                   f"{_grid(results, 'test_gold_dpo')}, TDPO2 "
                   f"{_grid(results, 'test_gold_tdpo2')}, TDPO1 "
                   f"{_grid(results, 'test_gold_tdpo1')}; selected KL DPO "
                   f"{_grid(results, 'test_kl_dpo')}, TDPO2 {_grid(results, 'test_kl_tdpo2')}"),
        protocol.decide(
            "TDPO2 keeps the token entropy >= DPO's at matched gold (per seed, mean over betas "
            "of H_TDPO2 - H_DPO per token)",
            gain, kind=protocol.COMPARATIVE, at_least=0.0,
            detail=f"nats per token where each run first reaches the matched gold; by beta: "
                   f"{_grid(results, 'entropy_gain_tdpo2')}; TDPO1 - DPO: "
                   f"{_grid(results, 'entropy_gain_tdpo1')}; selected policies' entropy DPO "
                   f"{_grid(results, 'test_entropy_dpo')}, TDPO2 "
                   f"{_grid(results, 'test_entropy_tdpo2')}"),
    ]


def plots(results, workdir: str) -> list[str]:
    """Gold vs KL(pi || pi_ref) along training, mean over seeds, one curve per method and
    beta."""
    curves = {}
    for variant in results:
        for method in METHODS:
            path = os.path.join(workdir, variant, f"trajectory_{method}.json")
            if not os.path.exists(path):
                continue
            with open(path) as f:
                t = json.load(f)
            kl, gold = np.asarray(t["kl"]), np.asarray(t["gold"])
            curves[f"{method} {variant}"] = (kl.mean(0), gold.mean(0))
    return [plot_curves(curves, os.path.join(workdir, "plots", "gold_vs_kl.png"),
                        title="TDPO vs DPO: gold vs KL along training",
                        xlabel="KL(pi || pi_ref)", ylabel="E_pi[gold]")]
