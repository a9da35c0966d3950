"""iREPO: implicit reward pairwise-difference regression on empirical preference rates.

Paper: "iREPO: implicit Reward Pairwise difference based Empirical Preference Optimization"
(2024, arXiv 2405.15230).

Mechanism. M annotators compare two responses y1, y2 of a prompt; p_hat is the fraction
preferring y1. iREPO regresses the implicit reward difference onto its logit,

    L = (beta (h(y1) - h(y2)) - logit(p_hat))^2,   h = log pi - log pi_ref,

with p_hat clipped to [eps, 1 - eps] (`alignax.losses.direct.irepo_loss`), and iterates: each
round samples fresh pairs from the current policy, has them labelled, and trains
(`alignax.train.small.fit_rounds`: one resumable `fit_small` per round, every seed vmapped).

Toy (notes' design). A tiny LM: `alignax.models.sequence_table` over all 4^4 = 256 sequences,
log-linear in F = 4 prompt features phi(x) ~ N(0, I) (the policy generalises across prompts);
gold g(x, y) = sum_t e_{t, y_t} . [1, phi(x)] + sum_t c(y_t, y_{t+1}), standardised; pi_ref a
random log-linear table; the policy starts at pi_ref. M = 8 simulated annotators, each
Bradley-Terry (temperature `annotators.temperature`) on its own reward g + sigma z_m(y)
(z_m(y) ~ N(0, 1) a fixed personal taste per annotator and sequence;
`alignax.tasks.simulators.bradley_terry`, `soft_labels`, `majority_label`). p_hat is clipped at
eps = 1 / (2M) (half a vote). Each of `rounds` rounds draws `pairs_per_round` fresh prompts and
two responses of each from the current policy (the previous round's selected params), labels
them, and trains `steps` updates from those params with a fresh optimizer; pi_ref (the KL
anchor of the loss and of every KL reported) stays the initial policy.
Variants: `irepo` (soft p_hat), `dpo` (the majority label, ties by a fair coin; DPO loss) and
`ipo` (the majority label; IPO loss with tau = beta), iterated the same way.

Splits: the world (gold, tastes, pi_ref) is seeded by the experiment seed s; each round's
prompts and votes by the training data seed of `split_seeds(s)` and the round; the validation
and test prompts by the validation and test data seeds. Metrics are exact sums over the 256
sequences: gold E_pi[g], KL(pi || pi_ref), win rate against pi_ref (`alignax.eval.exact`).

Selection (every variant the same): within each round early stopping on the validation gold
every `eval_every` updates (`select=("val_gold", "max")`, the next round continues from the
selected params); beta from `train.betas` chosen per seed on the last round's validation gold
(`choose_on_validation`; `chosen_beta`, `chosen_step`, `val_gold`, `val_gold_beta_<b>`).

Metrics and claims (>= 5 seeds, paired 95% t intervals):
  1 (comparative): iREPO's test gold >= DPO's (difference >= 0).
  2 (comparative): iREPO's gold-KL frontier is above DPO's: `test_frontier` = the mean over KL
     budgets k in `frontier_budgets` of the best test gold gain among the points (test KL, test
     gold gain) of every logged step of every round at every beta (and pi_ref itself, (0, 0))
     with KL <= k (the area under the achievable frontier); difference >= 0. The test metrics
     are logged along training by `eval_fn` for this measurement only; selection reads the
     validation gold alone.
  3 (threshold): iREPO's implicit reward differences beta (h(y1) - h(y2)) correlate with the gold
     differences on test pairs drawn from pi_ref (`pairs_per_test_prompt` per test prompt,
     pooled) at Pearson >= 0.7.
  Reported: IPO on all three; DPO's and IPO's Pearson.

Pilot (4 seeds, betas {0.1, 0.3, 1}, 150 steps per round, frontier from the selected params only):
every variant chose beta = 0.1 (the grid's edge), so the grid became {0.03, 0.1, 0.3} for all;
the last round's best step came early (~25 of 150), so rounds are 120 steps; DPO's selected
points all had KL > 2, which made the frontier from selected params alone meaningless (DPO 0),
so the frontier now uses every logged step. Pilot test gold: iREPO 1.43, DPO 1.45, IPO 1.02;
Pearson: iREPO 0.62, DPO 0.57, IPO 0.48. The toy was fixed before the pilot.

Outcome of the full run (8 seeds; experiments/summaries/irepo-b6c85ba.json): iREPO's test gold
1.61 vs DPO's 1.57 (difference 0.04, interval -0.04 to 0.12: INCONCLUSIVE, the point estimate in
the paper's direction); the frontier measure is higher for iREPO than for DPO (0.45 vs 0.37, PASS)
but IPO's is higher still (0.50); the Pearson correlation of iREPO's implicit reward differences
with the gold differences is 0.69 (0.66 to 0.72: INCONCLUSIVE), above DPO's 0.61 and IPO's 0.54.
The selected policies sit at KL ~5 nats from pi_ref, so the pi_ref pairs of the correlation test
lie where the policy has moved most.

    alignax run experiments/irepo.py            # full setting
    alignax run experiments/irepo.py:smoke      # seconds, for the tests
"""

from __future__ import annotations

import functools
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from alignax import protocol
from alignax.protocol import seed_mean
from alignax.eval.exact import win_probabilities
from alignax.experiment import is_smoke
from alignax.losses.direct import dpo_loss, ipo_loss, irepo_loss
from alignax.models import sequence_table as st
from alignax.tasks.simulators import bradley_terry, majority_label, soft_labels
from alignax.tasks.splits import choose_on_validation, split_seeds
from alignax.train.plots import plot_curves
from alignax.train.small import fit_rounds, stack_seeds

METHODS = ("irepo", "dpo", "ipo")
EVAL_KEYS = ("phi", "gold", "ref_logp", "win")
PAIR_KEYS = ("phi", "y1", "y2", "ref1", "ref2", "p_hat", "first_wins")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    smoke = is_smoke(arg)
    c = ml_collections.ConfigDict()
    c.seeds = [0] if smoke else [0, 1, 2, 3, 4, 5, 6, 7]
    c.method = "irepo"
    c.variants = {m: {"method": m} for m in METHODS}
    if smoke:  # IPO is reported only (no claim): left out of the test suite's run
        del c.variants["ipo"]
    c.task = dict(vocab_size=4, length=4, num_features=4, pair_scale=0.5, ref_scale=0.7)
    c.annotators = dict(num=8, temperature=1.0, taste_std=0.5)
    c.data = dict(pairs_per_round=512 if not smoke else 64, num_val=256 if not smoke else 32,
                  num_test=512 if not smoke else 32, pairs_per_test_prompt=16)
    c.train = dict(rounds=3 if not smoke else 2, steps=120 if not smoke else 10,
                   batch_size=64 if not smoke else 16, learning_rate=0.1,
                   eval_every=12 if not smoke else 10,
                   betas=(0.03, 0.1, 0.3) if not smoke else (0.3,))
    c.fit_plots = not smoke  # each fit's metric PNGs (~1 s each; the smoke run draws its own)
    c.frontier_budgets = (0.25, 0.5, 1.0, 2.0, 4.0)
    return c


def space_of(config) -> st.SequenceSpace:
    return st.SequenceSpace(int(config.task.vocab_size), int(config.task.length))


_log_probs = jax.jit(st.sequence_log_probs, static_argnums=0)
_win_probabilities = jax.jit(win_probabilities)


class World:
    """Experiment seed s's gold reward, annotator tastes and reference policy."""

    def __init__(self, config, seed: int):
        t = config.task
        self.space = space = space_of(config)
        self.num_features = f = int(t.num_features)
        rng = np.random.default_rng([seed, 3501])
        emb = rng.standard_normal((space.length, space.vocab_size, f + 1))
        seqs = space.sequences
        self.token_part = emb[np.arange(space.length), seqs].sum(1)  # [N, F + 1]
        pair = rng.standard_normal((space.vocab_size, space.vocab_size)) * t.pair_scale
        self.pair_part = pair[seqs[:, :-1], seqs[:, 1:]].sum(1)
        self.scale = 1.0
        self.scale = float(self.gold(self.prompts(np.random.default_rng([seed, 3502]), 512)).std())
        a = config.annotators
        self.tastes = float(a.taste_std) * rng.standard_normal((int(a.num), space.num_sequences))
        self.ref = st.init_table(space, f, key=jax.random.key(seed), scale=float(t.ref_scale))

    def prompts(self, rng, n: int) -> np.ndarray:
        return rng.standard_normal((n, self.num_features)).astype(np.float32)

    def gold(self, phi) -> np.ndarray:
        phi1 = np.concatenate([np.ones((len(phi), 1)), phi], 1)
        return ((phi1 @ self.token_part.T + self.pair_part) / self.scale).astype(np.float32)

    def ref_logp(self, phi) -> np.ndarray:
        return np.asarray(_log_probs(self.space, self.ref, jnp.asarray(phi)))


def label_pairs(world: World, config, phi, y1, y2, rng) -> dict:
    """M annotators' votes on (y1, y2): each BT on g + its taste; p_hat and the majority."""
    n = np.arange(len(phi))
    g = world.gold(phi)
    r1 = g[n, y1][:, None] + world.tastes[:, y1].T  # [n, M]
    r2 = g[n, y2][:, None] + world.tastes[:, y2].T
    votes = bradley_terry(r1, r2, rng=rng, temperature=float(config.annotators.temperature))
    ref = world.ref_logp(phi)
    return {"phi": phi, "y1": y1, "y2": y2, "ref1": ref[n, y1], "ref2": ref[n, y2],
            "p_hat": soft_labels(votes).astype(np.float32),
            "first_wins": majority_label(votes, rng=rng).astype(np.int32)}


def eval_set(world: World, rng, n: int) -> dict:
    phi = world.prompts(rng, n)
    gold, ref_logp = world.gold(phi), world.ref_logp(phi)
    return {"phi": phi, "gold": gold, "ref_logp": ref_logp,
            "win": np.asarray(_win_probabilities(gold, ref_logp))}


def eval_metrics(space, params, e, prefix: str) -> dict:
    lp = st.sequence_log_probs(space, params, e["phi"])
    p, q = jnp.exp(lp), jnp.exp(e["ref_logp"])
    gold = (p * e["gold"]).sum(-1)
    return {f"{prefix}_gold": gold.mean(),
            f"{prefix}_gold_gain": (gold - (q * e["gold"]).sum(-1)).mean(),
            f"{prefix}_win_rate": (p * e["win"]).sum(-1).mean(),
            f"{prefix}_kl": (p * (lp - e["ref_logp"])).sum(-1).mean()}


@functools.partial(jax.jit, static_argnums=0)
def _draw(space, params, phi, keys, rnd):
    """[S, n, 2] two responses per prompt from each seed's policy (keys folded with the round)."""
    def one(p, x, k):
        return st.sample(space, p, jax.random.fold_in(k, rnd), 2, x)
    return jax.vmap(one)(params, phi, keys)


@functools.partial(jax.jit, static_argnums=0)
def _test_eval(space, params, e):
    return jax.vmap(lambda p, x: eval_metrics(space, p, x, "test"))(params, e)


@functools.partial(jax.jit, static_argnums=0)
def _implicit(space, params, ref, phi, y):
    """[S, P, K] log-ratios h = log pi - log pi_ref of the responses y [S, P, K]."""
    def one(p, r, x, yy):
        lp = st.sequence_log_probs(space, p, x) - st.sequence_log_probs(space, r, x)
        return jnp.take_along_axis(lp, yy, axis=-1)
    return jax.vmap(one)(params, ref, phi, y)


def make_loss(config, beta: float):
    space, method = space_of(config), config.method
    eps = 0.5 / int(config.annotators.num)

    def logps(p, phi, y):
        lp = st.sequence_log_probs(space, p, phi)
        return jnp.take_along_axis(lp, y[:, None], axis=-1)[:, 0]

    def loss_fn(p, b):
        l1, l2 = logps(p, b["phi"], b["y1"]), logps(p, b["phi"], b["y2"])
        if method == "irepo":
            losses, m = irepo_loss(l1, l2, b["ref1"], b["ref2"], preference_rate=b["p_hat"],
                                   beta=beta, eps=eps)
        else:
            first = b["first_wins"] > 0
            pc, pr = jnp.where(first, l1, l2), jnp.where(first, l2, l1)
            rc, rr = (jnp.where(first, b["ref1"], b["ref2"]),
                      jnp.where(first, b["ref2"], b["ref1"]))
            fn = dpo_loss if method == "dpo" else ipo_loss
            losses, m = fn(pc, pr, rc, rr, beta=beta)
        return losses.mean(), {"reward_margin": jnp.abs(m["reward_margins"]).mean()}

    return loss_fn


def run_seeds(config: ml_collections.ConfigDict, workdir: str) -> dict[int, dict[str, float]]:
    """Every seed of one variant: for each beta, `rounds` rounds of sample-label-train
    (fit_rounds, early-stopped per round on validation); beta chosen per seed on validation."""
    if config.method not in METHODS:
        raise ValueError(f"unknown method {config.method!r}; one of {METHODS}")
    seeds = [int(s) for s in config.seeds]
    space, tr = space_of(config), config.train
    worlds = [World(config, s) for s in seeds]
    splits = [split_seeds(s) for s in seeds]
    evals = []
    for w, sp in zip(worlds, splits):
        val = eval_set(w, np.random.default_rng([sp.validation, 3503]), int(config.data.num_val))
        test = eval_set(w, np.random.default_rng([sp.test, 3503]), int(config.data.num_test))
        evals.append({**{f"val_{k}": v for k, v in val.items()},
                      **{f"test_{k}": v for k, v in test.items()}})
    ev = stack_seeds(evals)
    val_e = {k: ev[f"val_{k}"] for k in EVAL_KEYS}
    test_e = {k: ev[f"test_{k}"] for k in EVAL_KEYS}
    ref = jax.tree.map(lambda *x: jnp.stack(x), *[w.ref for w in worlds])
    keys = jnp.stack([jax.random.key(s) for s in seeds])
    n_pairs, bs = int(config.data.pairs_per_round), int(tr.batch_size)

    def make_round(r, fits):
        params = ref if not fits else fits[-1].best_params
        phis = np.stack([w.prompts(np.random.default_rng([sp.train, 3504, r]), n_pairs)
                         for w, sp in zip(worlds, splits)])
        ys = np.asarray(_draw(space, params, jnp.asarray(phis), keys, r))  # [S, n, 2]
        rows = [label_pairs(w, config, phis[i], ys[i, :, 0], ys[i, :, 1],
                            np.random.default_rng([sp.train, 3505, r]))
                for i, (w, sp) in enumerate(zip(worlds, splits))]
        return {"data": stack_seeds(rows, PAIR_KEYS), "per_seed_data": True}

    def batch_fn(d, rng):
        i = jax.random.randint(rng, (bs,), 0, d["y1"].shape[0])
        return {k: v[i] for k, v in d.items()}

    runs = {}
    for beta in (float(b) for b in tr.betas):
        runs[beta] = fit_rounds(
            os.path.join(workdir, f"beta_{beta:g}"), num_rounds=int(tr.rounds),
            make_round=make_round, init_params=ref, per_seed_init=True,
            carry=lambda f: f.best_params, loss_fn=make_loss(config, beta),
            tx=optax.adam(float(tr.learning_rate)), num_steps=int(tr.steps),
            seeds=seeds, batch_fn=batch_fn, has_aux=True, steps_per_log=int(tr.eval_every),
            eval_fn=lambda p, e: {**eval_metrics(space, p, e["val"], "val"),
                                  **eval_metrics(space, p, e["test"], "test")},
            eval_data={"val": val_e, "test": test_e}, select=("val_gold", "max"),
            plots=bool(config.fit_plots))

    # test pairs from pi_ref for the implicit-reward correlation
    k = int(config.data.pairs_per_test_prompt)
    pairs = []
    for i, (w, sp) in enumerate(zip(worlds, splits)):
        rng = np.random.default_rng([sp.test, 3506])
        probs = np.exp(evals[i]["test_ref_logp"])
        cdf = np.cumsum(probs / probs.sum(1, keepdims=True), 1)
        u = rng.random((probs.shape[0], 2 * k))
        pairs.append(np.minimum((cdf[:, None, :] < u[:, :, None]).sum(-1), probs.shape[1] - 1))
    pairs = jnp.asarray(np.stack(pairs).astype(np.int32))  # [S, P, 2K]
    gold_pairs = np.take_along_axis(np.asarray(test_e["gold"]), np.asarray(pairs), -1)
    gold_diff = gold_pairs[..., :k] - gold_pairs[..., k:]

    points = {}  # (beta, round) -> test metrics of that round's selected params
    for beta, rf in runs.items():
        for r, fit in enumerate(rf.fits):
            points[beta, r] = jax.device_get(_test_eval(space, fit.best_params, test_e))
    budgets = [float(b) for b in config.frontier_budgets]
    out = {}
    for i, seed in enumerate(seeds):
        name, record = choose_on_validation(
            {f"beta={b:g}": b for b in runs},
            lambda b, i=i: float(runs[b].final.best_score[i]))
        beta = float(record["chosen"].split("=")[1])
        final = runs[beta].final
        res = {key: float(v[i]) for key, v in points[beta, len(runs[beta].fits) - 1].items()}
        # every logged step of every round at every beta (test metrics logged, never selected
        # on), and pi_ref itself
        kl = np.array([0.0] + [row[f"seed_{seed}/eval/test_kl"] for rf in runs.values()
                               for fit in rf.fits for row in fit.history])
        gain = np.array([0.0] + [row[f"seed_{seed}/eval/test_gold_gain"]
                                 for rf in runs.values() for fit in rf.fits
                                 for row in fit.history])
        res["test_frontier"] = float(np.mean([gain[kl <= b].max() for b in budgets]))
        h = np.asarray(_implicit(space, final.best_params, ref, test_e["phi"], pairs))[i]
        res["test_implicit_pearson"] = float(np.corrcoef(
            (h[:, :k] - h[:, k:]).ravel(), gold_diff[i].ravel())[0, 1])
        res.update(chosen_beta=beta, chosen_step=float(final.best_step[i]),
                   val_gold=float(final.best_score[i]))
        res.update({f"val_gold_beta_{b:g}": float(rf.final.best_score[i])
                    for b, rf in runs.items()})
        res.update({f"test_gold_round_{r}": float(points[beta, r]["test_gold"][i])
                    for r in range(len(runs[beta].fits))})
        out[seed] = res
    return out


def claims(results) -> list[protocol.Claim]:
    keys = ("test_gold", "test_kl", "test_frontier", "test_implicit_pearson", "test_win_rate")
    m = {v: {k: seed_mean(results, v, k) for k in keys} for v in results}
    table = "; ".join(f"{v}: gold {m[v]['test_gold']:.3f}, KL {m[v]['test_kl']:.3f}, win rate "
                      f"{m[v]['test_win_rate']:.3f}, frontier {m[v]['test_frontier']:.3f}, "
                      f"Pearson {m[v]['test_implicit_pearson']:.3f}" for v in results)
    return [
        protocol.compare("iREPO's test gold is >= DPO's (majority labels), both iterated on "
                         "fresh policy samples", results, ("irepo", "test_gold"),
                         ("dpo", "test_gold"), at_least=0.0, detail=table),
        protocol.compare("iREPO's gold-KL frontier (mean best test gold gain within KL budgets "
                         "0.25-4 nats) is above DPO's", results, ("irepo", "test_frontier"),
                         ("dpo", "test_frontier"), at_least=0.0, detail=table),
        protocol.threshold("iREPO's implicit reward differences correlate with the gold "
                           "differences at Pearson >= 0.7 (test pairs from pi_ref)", results,
                           ("irepo", "test_implicit_pearson"), at_least=0.7, detail=table),
    ]


def plots(results, workdir: str) -> list[str]:
    """Test gold after each round at each variant's most chosen beta (mean +- std over seeds)."""
    curves = {}
    for variant, res in results.items():
        rows = list(res["per_seed"].values())
        rounds = sorted(k for k in rows[0] if k.startswith("test_gold_round_"))
        ys = np.array([[row[k] for k in rounds] for row in rows])
        curves[variant] = (list(range(len(rounds))), ys.mean(0), ys.std(0))
    out = os.path.join(workdir, "plots", "irepo_rounds.png")
    plot_curves(curves, out, title="iREPO vs DPO / IPO: test gold after each round",
                xlabel="round", ylabel="test gold E_pi[g] (chosen beta)")
    return [out]
