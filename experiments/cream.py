"""CREAM: consistency-regularised self-rewarding vs plain self-rewarding.

Paper: Wang et al. 2024, "CREAM: Consistency Regularized Self-Rewarding Language Models"
(arXiv 2410.12735).

Setting (a tiny LM, `alignax.models.sequence_table`): responses are all V^L sequences (V = 4
tokens, length L = 4: 256 responses), prompts are feature vectors phi(x) ~ N(0, I_6) and every
policy is log-linear in them (an autoregressive prefix tree whose node logits are
bias + phi(x) @ weight), so what is learnt on training prompts generalises to held-out ones.
The world of experiment seed s (seeded by s): a random base ("pre-trained") policy pi_base and a
prompt-dependent gold reward that scores each token at each position, gold(x, y) = sum_t (phi(x)
@ W_t)[y_t] / sqrt(6), W ~ N(0, 1) (E_pi[gold] is exact). The SFT model pi_1 fine-tunes pi_base
by maximum likelihood on a small seed set of good responses (for each of 48 seed prompts the top
4 by gold of 32 base samples), early-stopped on the validation gold (the same SFT model for both
variants).

Self-rewarding rounds (`alignax.train.small.fit_rounds`, one `fit_small` per round, every seed
vmapped): round t draws N = 8 responses for each of 64 training prompts from pi_t and scores
them with the policy's own implicit reward r_t = log pi_t / pi_base (the DPO reward with the
pre-SFT model as reference; with the SFT model as its own reference the first judge would score
every response 0; beta does not change a ranking). y+ = argmax r_t, y- = argmin r_t
(`alignax.algorithms.self_rewarding.self_reward_pairs`, rows without a strict preference are
dropped); pi_{t+1} is trained from pi_t by DPO with reference pi_t. Variants:
  - `srlm`: plain self-rewarding, hard labels (`dpo_loss`);
  - `cream`: the soft label C = (tau_Kendall(J_t, J_{t-1}) + 1) / 2, averaged over the
    prompts, between the rankings of the same samples by this iterate's and the previous
    iterate's implicit rewards (`ranking_consistency`, `consistency_weight`;
    `alignax.losses.direct.cream_loss`). In the first round there is no previous self-judge
    (r_0 = log pi_base / pi_base = 0 ranks nothing), so C = 1: the two variants differ from
    round 2 on. 4 rounds.

Splits (`split_seeds(s)`): the training prompts and the SFT seed set come from the train data
seed, 64 validation prompts from the validation seed, 128 test prompts from the test seed.

Selection (the same for both variants): the DPO beta in {0.1, 0.3, 1.0} and the Adam steps per
round in {10, 40} (learning rate 0.05, full batch) are chosen per seed by the validation gold
E_pi[gold] on the validation prompts after round 4 (`choose_on_validation`; gold access for
selection only, given equally to both; the test prompts are never used). Recorded as
`chosen_beta`, `chosen_steps`, `val_gold_r4` and every candidate's `val_gold_<candidate>`.

Metrics (test prompts, selected candidate): `test_gold_r<k>` = mean E_pi[gold] after k rounds
(k = 0 is the SFT model), `test_gold_base`; `test_tau_r<k>` = the mean per-prompt Kendall tau
between the rankings of 8 samples of the round-k policy by its own and by the previous iterate's
implicit reward (the consistency CREAM measures, on held-out prompts); `test_judge_tau_r<k>` =
the tau of the round-k self-judge with the gold ranking of the same samples (how good the
self-reward is); `consistency_r<k>` = the C of the training round k (CREAM uses it, SRLM only
records it).

Claims (10 seeds, vmapped, so they cost about one; raised from 5 after a 5-seed trial run left
claims 1, 3 and 4 INCONCLUSIVE with intervals straddling their thresholds; paired 95% t
intervals, `alignax.protocol`): (1, comparative) at round 4 CREAM's test gold >= SRLM's; (2,
threshold) SRLM's gold stalls or falls after round 2: (g4 - g2) / (g_SFT - g_base) <= 0.1 per
seed (the late change at most a tenth of the SFT gain, a tolerance fixed before the runs); (3,
threshold) CREAM's does not fall: (g4 - g2) / (g_SFT - g_base) >= -0.1; (4, comparative) CREAM's
rankings are more consistent: its mean test tau over rounds 2-4 >= SRLM's. Sanity: SFT on the
good seed responses raises the test gold over the base policy.

    alignax run experiments/cream.py            # full setting, 10 seeds
    alignax run experiments/cream.py:smoke      # seconds, for the tests
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
from alignax.algorithms.self_rewarding import (consistency_weight, ranking_consistency,
                                               self_reward_pairs)
from alignax.experiment import is_smoke
from alignax.losses.direct import cream_loss, dpo_loss
from alignax.models import sequence_table as st
from alignax.tasks.splits import choose_on_validation, split_seeds
from alignax.train.plots import plot_curves
from alignax.train.small import fit_rounds, fit_small

METHODS = ("srlm", "cream")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    smoke = is_smoke(arg)
    c = ml_collections.ConfigDict()
    c.seeds = [0] if smoke else list(range(10))
    c.method = "cream"
    c.variants = {m: {"method": m} for m in METHODS}
    c.space = dict(vocab=4, length=4 if not smoke else 3, features=6)
    c.world = dict(base_scale=0.5, gold_scale=1.0)
    c.data = dict(train_prompts=64 if not smoke else 16, val_prompts=64 if not smoke else 16,
                  test_prompts=128 if not smoke else 16, seed_prompts=48 if not smoke else 8,
                  seed_samples=32 if not smoke else 8, seed_top=4 if not smoke else 2,
                  samples=8 if not smoke else 4)
    c.sft = dict(steps=100 if not smoke else 10, learning_rate=0.05,
                 eval_every=10 if not smoke else 5)
    c.rounds = 4 if not smoke else 2
    c.train = dict(learning_rate=0.05, beta_grid=(0.1, 0.3, 1.0) if not smoke else (0.3,),
                   steps_grid=(10, 40) if not smoke else (5,))
    return c


def space_of(config) -> st.SequenceSpace:
    return st.SequenceSpace(int(config.space.vocab), int(config.space.length))


def make_world(config, seed: int) -> dict:
    """Experiment seed `seed`: the base policy and the gold weights (seeded by `seed`), the
    training / validation / test prompt features from the data seeds `split_seeds(seed)`, and
    the SFT seed set (top responses by gold of base samples on seed prompts, train seed)."""
    space, f = space_of(config), int(config.space.features)
    w, d = config.world, config.data
    k_base, k_gold = jax.random.split(jax.random.key(seed))
    base = st.init_table(space, f, key=k_base, scale=float(w.base_scale))
    gold_weight = jax.random.normal(k_gold, (space.length, f, space.vocab_size))
    seeds = split_seeds(seed)
    rng_train = np.random.default_rng([seeds.train, 19])
    prompts = {
        "train": rng_train.standard_normal((d.train_prompts, f)),
        "sft": rng_train.standard_normal((d.seed_prompts, f)),
        "val": np.random.default_rng([seeds.validation, 19]).standard_normal((d.val_prompts, f)),
        "test": np.random.default_rng([seeds.test, 19]).standard_normal((d.test_prompts, f)),
    }
    out = {f"{k}_x": np.asarray(v, np.float32) for k, v in prompts.items()}  # host arrays
    for k in ("train", "sft", "val", "test"):
        out[f"{k}_gold"] = gold_values(config, gold_weight, out[f"{k}_x"])
    draws = st.sample(space, base, jax.random.key(seeds.train), int(d.seed_samples),
                      out["sft_x"])  # [K, M]
    top = jnp.argsort(-st.gather(out["sft_gold"], draws), axis=-1)[:, :int(d.seed_top)]
    out["sft_y"] = jnp.take_along_axis(draws, top, axis=-1)
    out["base"] = base
    return out


def gold_values(config, gold_weight, x) -> jax.Array:
    """[P, N] the gold reward of every response to prompts x [P, F]: a prompt-dependent score
    of each token at each position, summed, gold(x, y) = c sum_t (phi(x) @ W_t)[y_t] / sqrt(F)
    with W [L, F, V] ~ N(0, 1)."""
    space = space_of(config)
    tok = jnp.einsum("pf,lfv->plv", x, gold_weight) / np.sqrt(x.shape[-1])  # [P, L, V]
    seqs = jnp.asarray(space.sequences)  # [N, L]
    per_token = tok[:, jnp.arange(space.length)[None, :], seqs]  # [P, N, L]
    return float(config.world.gold_scale) * per_token.sum(-1)


def mean_gold(space, params, x, gold) -> jax.Array:
    """E_pi[gold] averaged over the prompts x [P, F] (gold [P, N])."""
    return st.expectation(space, params, gold, x).mean()


def sft(config, workdir: str, data: dict):
    """pi_1: maximum likelihood on the seed set from pi_base, early-stopped on validation
    gold (every seed at once)."""
    space = space_of(config)

    def loss_fn(p, batch):
        lp = st.sequence_log_probs(space, p, batch["sft_x"])
        return -st.gather(lp, batch["sft_y"]).mean()

    def eval_fn(p, val):
        return {"val_gold": mean_gold(space, p, val["val_x"], val["val_gold"])}

    fit = fit_small(workdir, loss_fn=loss_fn, init_params=data["base"], per_seed_init=True,
                    tx=optax.adam(float(config.sft.learning_rate)),
                    num_steps=int(config.sft.steps),
                    data={k: data[k] for k in ("sft_x", "sft_y")}, seeds=list(config.seeds),
                    per_seed_data=True, steps_per_log=int(config.sft.eval_every),
                    eval_fn=eval_fn, eval_data={k: data[k] for k in ("val_x", "val_gold")},
                    select=("val_gold", "max"), plots=False)
    return fit.best_params


def self_judge(space, params, prev, base, x, draws):
    """Implicit rewards of the sampled responses draws [P, K] by this iterate and the
    previous one, r = log pi / pi_base (beta is a positive scale: it ranks the same)."""
    lb = st.sequence_log_probs(space, base, x)
    r_t = st.gather(st.sequence_log_probs(space, params, x) - lb, draws)
    r_prev = st.gather(st.sequence_log_probs(space, prev, x) - lb, draws)
    return r_t, r_prev


@functools.partial(jax.jit, static_argnames=("space", "k"))
def round_program(p, q, base, x, key, *, space: st.SequenceSpace, k: int):
    """The seed-vmapped sampling and self-judging of one round (compiled once per space and k
    by jit's own cache)."""

    def one(p, q, base, x, key):
        draws = st.sample(space, p, key, k, x)  # [P, K]
        r_t, r_prev = self_judge(space, p, q, base, x, draws)
        c, r, valid = self_reward_pairs(r_t)
        tau = ranking_consistency(r_t, r_prev)
        lp = st.sequence_log_probs(space, p, x)
        yc = jnp.take_along_axis(draws, c[:, None], -1)[:, 0]
        yr = jnp.take_along_axis(draws, r[:, None], -1)[:, 0]
        return {"x": x, "chosen": yc, "rejected": yr, "valid": valid.astype(jnp.float32),
                "ref_chosen": st.gather(lp, yc[:, None])[:, 0],
                "ref_rejected": st.gather(lp, yr[:, None])[:, 0],
                "consistency": consistency_weight(tau, valid)}

    return jax.vmap(one)(p, q, base, x, key)


def round_data(config, method: str, params, prev, data, keys) -> dict:
    """One round's DPO pairs for every seed: sample, self-judge, pick best vs worst, and
    CREAM's consistency C (SRLM trains with C = 1 and only records the measured C)."""
    out = round_program(params, prev, data["base"], data["train_x"], keys,
                        space=space_of(config), k=int(config.data.samples))
    out["measured_consistency"] = out["consistency"]
    if method == "srlm":
        out["consistency"] = jnp.ones_like(out["consistency"])
    return out


def make_loss(config, method: str, beta: float):
    space = space_of(config)

    def loss_fn(p, batch):
        lp = st.sequence_log_probs(space, p, batch["x"])
        pc = st.gather(lp, batch["chosen"][:, None])[:, 0]
        pr = st.gather(lp, batch["rejected"][:, None])[:, 0]
        if method == "cream":
            losses, m = cream_loss(pc, pr, batch["ref_chosen"], batch["ref_rejected"],
                                   consistency=batch["consistency"], beta=beta)
        else:
            losses, m = dpo_loss(pc, pr, batch["ref_chosen"], batch["ref_rejected"], beta=beta)
        w = batch["valid"]
        n = jnp.maximum(w.sum(), 1.0)
        return (losses * w).sum() / n, {"margin": (m["reward_margins"] * w).sum() / n}

    return loss_fn


def train_rounds(config, workdir: str, method: str, beta: float, steps: int, sft_params,
                 data: dict):
    """The self-rewarding rounds of one (beta, steps) candidate; returns the policies
    [pi_1 (SFT), after round 1, ..., after round T] (leaves [S, ...]) and each round's
    measured consistency [T, S]."""
    space, seeds = space_of(config), list(config.seeds)

    def make_round(r, fits):
        params = sft_params if r == 0 else fits[-1].params
        prev = data["base"] if r == 0 else (sft_params if r == 1 else fits[-2].params)
        keys = jnp.stack([jax.random.fold_in(jax.random.key(s), 1000 + r) for s in seeds])
        batch = round_data(config, method, params, prev, data, keys)
        if r == 0:  # no previous self-judge: hard labels for both variants
            batch["consistency"] = jnp.ones_like(batch["consistency"])
        return {"data": batch}

    def eval_fn(p, val):
        return {"val_gold": mean_gold(space, p, val["val_x"], val["val_gold"])}

    rounds = fit_rounds(workdir, num_rounds=int(config.rounds), make_round=make_round,
                        init_params=sft_params, per_seed_init=True,
                        loss_fn=make_loss(config, method, beta), has_aux=True,
                        tx=optax.adam(float(config.train.learning_rate)), num_steps=steps,
                        seeds=seeds, per_seed_data=True, steps_per_log=steps,
                        eval_fn=eval_fn, eval_data={k: data[k] for k in ("val_x", "val_gold")},
                        plots=False)
    policies = [sft_params] + [f.params for f in rounds.fits]
    consistency = np.stack([np.asarray(inp["data"]["measured_consistency"])
                            for inp in rounds.inputs])
    return policies, consistency


@functools.partial(jax.jit, static_argnames="space")
def gold_program(p, x, g, *, space: st.SequenceSpace):
    """[S] mean gold of the seeds' policies (seed-vmapped)."""
    return jax.vmap(lambda p, x, g: mean_gold(space, p, x, g))(p, x, g)


@functools.partial(jax.jit, static_argnames=("space", "k"))
def taus_program(p, q, base, x, g, key, *, space: st.SequenceSpace, k: int):
    """[S] (self-consistency, judge-vs-gold) Kendall taus of k samples per prompt."""

    def one(p, q, base, x, g, key):
        draws = st.sample(space, p, key, k, x)
        r_t, r_prev = self_judge(space, p, q, base, x, draws)
        judge = jnp.nanmean(ranking_consistency(r_t, st.gather(g, draws)))
        return jnp.nanmean(ranking_consistency(r_t, r_prev)), judge

    return jax.vmap(one)(p, q, base, x, g, key)


def evaluate(config, policies, data, seeds) -> dict[str, np.ndarray]:
    """[S] test and validation metrics of every round's policy."""
    space = space_of(config)
    gold = functools.partial(gold_program, space=space)
    taus = functools.partial(taus_program, space=space, k=int(config.data.samples))
    out = {"test_gold_base": gold(data["base"], data["test_x"], data["test_gold"])}
    for r, p in enumerate(policies):
        out[f"test_gold_r{r}"] = gold(p, data["test_x"], data["test_gold"])
        out[f"val_gold_r{r}"] = gold(p, data["val_x"], data["val_gold"])
        if r >= 1:
            keys = jnp.stack([jax.random.fold_in(jax.random.key(s), 5000 + r) for s in seeds])
            out[f"test_tau_r{r}"], out[f"test_judge_tau_r{r}"] = taus(
                p, policies[r - 1], data["base"], data["test_x"], data["test_gold"], keys)
    return {k: np.asarray(v, np.float64) for k, v in out.items()}


def run_seeds(config: ml_collections.ConfigDict, workdir: str) -> dict[int, dict[str, float]]:
    """Both the SFT model and every (beta, steps) candidate's rounds for every seed at once;
    per seed the candidate with the best validation gold after the last round."""
    method = config.method
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; one of {METHODS}")
    seeds = [int(s) for s in config.seeds]
    worlds = [make_world(config, s) for s in seeds]
    data = {k: np.stack([np.asarray(w[k]) for w in worlds])  # host: no transfer programs
            for k in ("train_x", "val_x", "val_gold", "test_x", "test_gold", "sft_x", "sft_y")}
    data["base"] = jax.tree.map(lambda *xs: np.stack(xs), *[w["base"] for w in worlds])
    sft_params = sft(config, os.path.join(workdir, "sft"), data)
    last = int(config.rounds)
    cands = {}
    for beta in config.train.beta_grid:
        for steps in config.train.steps_grid:
            name = f"beta{beta:g}_steps{int(steps)}"
            policies, consistency = train_rounds(config, os.path.join(workdir, name), method,
                                                 float(beta), int(steps), sft_params, data)
            metrics = evaluate(config, policies, data, seeds)
            for r in range(1, last + 1):
                metrics[f"consistency_r{r}"] = consistency[r - 1]
            cands[name] = {"beta": float(beta), "steps": float(steps), "metrics": metrics}
    out = {}
    for i, seed in enumerate(seeds):
        name, record = choose_on_validation(
            {n: c for n, c in cands.items()}, lambda c: c["metrics"][f"val_gold_r{last}"][i])
        chosen = cands[name]
        res = {k: float(v[i]) for k, v in chosen["metrics"].items()}
        res.update(chosen_beta=chosen["beta"], chosen_steps=chosen["steps"])
        res.update({f"val_gold_{n}": float(s) for n, s in record["scores"].items()})
        out[seed] = res
    return out


def _late_change(results, variant, rounds: int = 4) -> dict:
    """Per seed (g_T - g_2) / (g_SFT - g_base): the change after round 2 in units of the SFT
    gain."""
    g = {k: protocol.per_seed(results, variant, f"test_gold_{k}")
         for k in ("base", "r0", "r2", f"r{rounds}")}
    return {s: (g[f"r{rounds}"][s] - g["r2"][s]) / (g["r0"][s] - g["base"][s]) for s in g["r0"]}


def _mean_tau(results, variant, rounds: int = 4) -> dict:
    taus = [protocol.per_seed(results, variant, f"test_tau_r{r}") for r in range(2, rounds + 1)]
    return {s: float(np.mean([t[s] for t in taus])) for s in taus[0]}


def _fmt(results, variant, prefix, rounds) -> str:
    return ", ".join(
        f"{np.mean(list(protocol.per_seed(results, variant, f'{prefix}{r}').values())):.3f}"
        for r in rounds)


def claims(results) -> list[protocol.Claim]:
    rounds = max(int(k[len("test_gold_r"):]) for k in
                 next(iter(results["cream"]["per_seed"].values())) if k.startswith("test_gold_r"))
    late = {v: _late_change(results, v, rounds) for v in METHODS}
    tau = {v: _mean_tau(results, v, rounds) for v in METHODS}
    gold = {v: _fmt(results, v, "test_gold_r", range(rounds + 1)) for v in METHODS}
    taus = {v: _fmt(results, v, "test_tau_r", range(1, rounds + 1)) for v in METHODS}
    judge = {v: _fmt(results, v, "test_judge_tau_r", range(1, rounds + 1)) for v in METHODS}
    cons = _fmt(results, "cream", "consistency_r", range(2, rounds + 1))
    sft_gain = {s: v for s, v in (
        (s, protocol.per_seed(results, "cream", "test_gold_r0")[s]
         - protocol.per_seed(results, "cream", "test_gold_base")[s])
        for s in protocol.per_seed(results, "cream", "test_gold_r0"))}
    trajectory = (f"test gold by round (0 = SFT): SRLM {gold['srlm']}; CREAM {gold['cream']}; "
                  f"self-judge vs gold tau by round: SRLM {judge['srlm']}; CREAM "
                  f"{judge['cream']}")
    dtau = {s: tau["cream"][s] - tau["srlm"][s] for s in tau["cream"] if s in tau["srlm"]}
    return [
        protocol.compare(
            f"at round {rounds} CREAM's test gold >= plain self-rewarding's (SRLM)", results,
            ("cream", f"test_gold_r{rounds}"), ("srlm", f"test_gold_r{rounds}"), at_least=0.0,
            detail=trajectory),
        protocol.decide(
            "SRLM's gold stalls or falls after round 2: (g4 - g2) / (g_SFT - g_base) <= 0.1",
            late["srlm"], kind=protocol.THRESHOLD, at_most=0.1, detail=trajectory),
        protocol.decide(
            "CREAM's gold does not fall after round 2: (g4 - g2) / (g_SFT - g_base) >= -0.1",
            late["cream"], kind=protocol.THRESHOLD, at_least=-0.1, detail=trajectory),
        protocol.decide(
            "CREAM's successive self-rankings are more consistent: mean test Kendall tau over "
            "rounds 2-4 >= SRLM's", dtau, kind=protocol.COMPARATIVE, at_least=0.0,
            measured={"cream_tau": float(np.mean(list(tau["cream"].values()))),
                      "srlm_tau": float(np.mean(list(tau["srlm"].values()))),
                      "difference": float(np.mean(list(dtau.values()))) if dtau else np.nan},
            detail=f"test tau by round 1-{rounds}: SRLM {taus['srlm']}; CREAM {taus['cream']}; "
                   f"CREAM's training C by round 2-{rounds}: {cons}"),
        protocol.sanity(
            "SFT on good seed responses raises the test gold over the base policy",
            bool(min(sft_gain.values()) > 0),
            {"min_sft_gain": float(min(sft_gain.values()))}, "the seed set is top-by-gold"),
    ]


def plots(results, workdir: str) -> list[str]:
    """Test gold by round (mean +- std over seeds), per variant."""
    curves = {}
    for v in METHODS:
        if v not in results:
            continue
        seeds = results[v]["per_seed"]
        ks = sorted(int(k[len("test_gold_r"):]) for k in next(iter(seeds.values()))
                    if k.startswith("test_gold_r"))
        ys = np.array([[m[f"test_gold_r{k}"] for k in ks] for m in seeds.values()])
        curves[v] = (ks, ys.mean(0), ys.std(0))
    out = os.path.join(workdir, "plots", "cream_gold.png")
    plot_curves(curves, out, title="Self-rewarding rounds: test gold (round 0 = SFT)",
                xlabel="round", ylabel="E_pi[gold] on test prompts")
    return [out]
