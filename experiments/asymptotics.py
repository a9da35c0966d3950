"""Best-of-N and the KL-constrained optimum are asymptotically equivalent (exact computations).

Paper: Yang, Salamatian, Sun, Suresh and Beirami 2024, "Asymptotics of Language Model
Alignment" (arXiv 2404.01730).

Mechanism (`alignax.eval.tilted`): the optimum of max E_phi r s.t. KL(phi || p) <= Delta is
the tilt phi_lambda(y) ∝ p(y) e^{lambda r(y)} with KL(phi_lambda || p) = Delta. For a
memoryless reference (y = n i.i.d. tokens) and a linear reward r(y) = sum_t r(y_t), the
reward's per-token rate under phi satisfies a large-deviation principle whose rate is the
Legendre transform of the tilted log-MGF, and best-of-N with N = e^{n delta} is asymptotically
equivalent to phi at KL = n delta: E_BoN R / n - E_phi R / n -> 0 and KL(BoN || phi) / n -> 0,
with KL(BoN || p) / n -> delta (KL(BoN || p) <= log N - (N - 1) / N for every N).

Setting (exact, no training, no sampling): a vocabulary of 4 tokens with probabilities
p = 0.1 + 0.6 Dirichlet(1, 1, 1, 1) (every token >= 0.1, so that p(y) >= 0.1^n stays above
float64 underflow at n = 128) and 4 distinct token rewards drawn from {0, 0.1, ..., 1}. For
each n in `ns` (4, 8, ..., 128): the law of R = sum_t r(y_t) by exact convolution on the
reward grid; phi at KL = n delta (lambda by bisection; one lambda for every n, the token tilt
with KL delta per token); best-of-N with N = ceil(e^{n delta}) through its exact law
P(R_max = v) = F(v)^N - F(v^-)^N (lattice rewards tie; the ties are in the law). Both phi and
BoN multiply p by a function of r(y), so the laws of R give every expectation and KL exactly.
delta = 0.1 nats per token.

Seeds, splits, selection: the theory makes no estimate from data, so there is nothing to fit
on a training split, choose on a validation split or hold out. A seed is a problem instance:
experiment seed s draws (p, r) from its test data seed (`split_seeds(s).test`, disjoint across
seeds), 5 instances in the full run. Nothing is chosen: delta, the grid of n, the instance
distribution and every claim's threshold were fixed before the first run (metrics are named
`test_*` for the protocol's rule).

Variants: `inside`, delta = 0.1 (below every instance's delta_max = -log P_p(r = max r) >=
-log 0.7: the theorem's regime); `beyond_max`, delta = 1.5 delta_max of each instance: no tilt
spends more than n delta_max (lambda = inf, phi is p conditioned on the maximum), so the KL
equivalence is NOT expected there (a check that the claims can fail, reported).

Metrics (per instance, at the largest n unless suffixed `_n<n>`, where the per-n values are):
`test_reward_gap` = |E_BoN R - E_phi R| / n; `test_kl_rate_error` = |KL(BoN || p) / n -
delta|; `test_kl_to_tilt_rate` = KL(BoN || phi) / n; `*_change` = value at the largest n minus
at the one before; `test_abs_gap_growth` = (E_phi R - E_BoN R) at the largest n minus at the
smallest; `test_kl_shortfall` = (delta - KL(BoN || p) / n) / (delta - delta_max) (beyond_max);
`x_star`, the large-deviation prediction of the per-token reward (I_p(x*) = delta, the tilted
mean); `bound_slack_min` = min over n of (log N - (N - 1) / N) - KL(BoN || p).

Claims (5 instances, 95% Student t intervals, thresholds fixed in advance; the notes' pass
criteria made precise):
1. (threshold) |E_BoN R - E_phi R| / n <= 0.01 at n = 128;
2. (threshold) it decreases in n: its value at n = 128 minus at n = 64 is <= 0;
3. (threshold) KL(BoN || p) / n -> delta: |KL / n - delta| <= delta / 2 at n = 128;
4. (threshold) |KL / n - delta| decreases: its value at 128 minus at 64 is <= 0;
5. (threshold) KL(BoN || phi) / n <= 0.01 at n = 128 (the paper's KL form of the equivalence);
6. (threshold) the equivalence is per token only: the unnormalised gap E_phi R - E_BoN R grows
   from n = 4 to n = 128 (>= 0; a finite-n theory predicts about log(n) / (2 lambda));
Sanity (by construction, never counted): KL(BoN || p) <= log N - (N - 1) / N at every n;
E_phi R / n = x*; outside the regime (beyond_max) KL(BoN || p) / n stays short of delta by at
least half of delta - delta_max at n = 128 (`test_kl_shortfall` >= 0.5): KL(BoN || p) / n can
never exceed delta_max = -log P(r = max) / n per token, so the shortfall is >= 1 whatever the
sampler does; it is shown as the regime's boundary, not as evidence.

Reading the full run (exact, so it reruns bit for bit): at n = 128 the per-token reward gap is
0.0106 (95% interval 0.0056 to 0.0157 over the 5 instances), so claim 1 is INCONCLUSIVE: the
gap falls roughly like log(n) / (2 lambda n) (best-of-N's maximum sits O(log n) below n x*),
which is still about 0.01 at n = 128. KL(BoN || p) / n is delta - 0.0078 (about delta - 1/n:
the bound log N - (N - 1) / N is nearly tight on this lattice), KL(BoN || phi) / n is 0.0079,
and the unnormalised gap grows by 1.16 from n = 4 to 128. Every other claim passes; beyond
delta_max, KL(BoN || p) / n equals delta_max at every n (shortfall 1.0).

    alignax run experiments/asymptotics.py            # full setting, 5 instances, seconds
    alignax run experiments/asymptotics.py:smoke      # n <= 16, one instance, for the tests

`:real` measures the same comparison on a user's policy checkpoint (`model.path`, the reference
p) and reward checkpoint (`reward.path`, a one-label `*ForSequenceClassification` folder,
loaded with `pretrained.load_pretrained(..., "reward")`; both share the tokenizer): for each
held-out prompt of `data.path` (the validation rows, then the test rows, of `held_out_split`)
it samples `sampling.num_samples` = M responses from p and scores them with the RM. On the
empirical reference (each sample 1 / M) and for each N in `ns` (<= M): best-of-N's exact law
(the expected reward of the best of N draws with replacement, `bon_expected_reward`), its
exact KL(BoN || p_M) next to the bound log N - (N - 1) / N, and the tilt fitted on the same
samples with self-normalised weights e^{lambda r_i} / sum_j e^{lambda r_j} (lambda by
bisection to the same KL, and to the bound). It reports per N `{val,test}_bon_reward_N<N>`,
`{val,test}_tilted_reward_N<N>` (tilt at BoN's KL), `{val,test}_tilted_reward_bound_N<N>`
(tilt at the bound), `{val,test}_reward_gap_N<N>` (tilt at BoN's KL minus BoN),
`{val,test}_bon_kl_N<N>`, `kl_bound_N<N>`, and `{val,test}_ref_reward` (means over prompts).
No claim is evaluated on a :real run (a user's model is neither memoryless nor linear).

    alignax run experiments/asymptotics.py:real --workdir runs/asymptotics_real \
        --config.model.path=/ckpt/policy --config.reward.path=/ckpt/rm \
        --config.data.path=/data/prompts --config.sampling.num_samples=64 \
        --config.model.dtype=bfloat16
"""

from __future__ import annotations

import math
import os

import ml_collections
import numpy as np

from alignax import protocol
from alignax.algorithms import real
from alignax.eval import tilted
from alignax.tasks.splits import split_seeds
from alignax.train.plots import plot_curves
from alignax.train.writers import MetricsWriter

VARIANTS = ("inside", "beyond_max")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    mode = real.config_mode(arg)
    if mode == "real":
        return _real_config()
    smoke = mode == "smoke"
    c = ml_collections.ConfigDict()
    c.seeds = [0] if smoke else [0, 1, 2, 3, 4]
    c.world = dict(vocab_size=4, reward_levels=11, min_prob=0.1)
    c.delta = 0.1  # nats per token
    c.delta_over_max = 0.0  # > 0: delta = delta_over_max * delta_max of each instance
    c.ns = [4, 8, 16] if smoke else [4, 8, 16, 32, 64, 128]
    c.variants = {"inside": {"delta_over_max": 0.0},
                  "beyond_max": {"delta_over_max": 1.5}}
    return c


def _real_config() -> ml_collections.ConfigDict:
    """`:real` (module docstring): best-of-N vs the fitted tilt on sampled, RM-scored
    responses."""
    c = ml_collections.ConfigDict()
    c.seeds = [0]
    real.add_real_fields(c, max_length=256)  # data.max_length: the prompt length P
    c.reward = dict(path="")
    c.sampling = dict(num_samples=16, max_new_tokens=128, temperature=1.0, stop_tokens=(-1,))
    c.ns = [1, 2, 4, 8, 16]
    return c


def validate(config: ml_collections.ConfigDict) -> None:
    """One-line errors for the keys of either setting."""
    if real.is_real(config):
        real.require(config, "model.path", "data.path", "reward.path",
                     what={"reward.path": "a reward-model checkpoint folder"})
        m = int(config.sampling.num_samples)
        if m < 1:
            raise ValueError(f"sampling.num_samples={m} must be >= 1")
        ns = [int(n) for n in config.ns]
        if not ns or min(ns) < 1 or max(ns) > m:
            raise ValueError(f"ns={ns} must be in [1, sampling.num_samples={m}]")
        if int(config.sampling.max_new_tokens) < 1:
            raise ValueError("sampling.max_new_tokens must be >= 1")
        return
    ns = [int(n) for n in config.ns]
    if len(ns) < 2 or ns != sorted(set(ns)) or ns[0] < 1:
        raise ValueError(f"ns={ns} must be >= 2 increasing sequence lengths >= 1")
    if not float(config.delta) > 0:
        raise ValueError(f"delta={config.delta} must be > 0")
    if float(config.delta_over_max) < 0:
        raise ValueError(f"delta_over_max={config.delta_over_max} must be >= 0")
    w = config.world
    if int(w.vocab_size) < 2 or int(w.reward_levels) < int(w.vocab_size):
        raise ValueError("world.reward_levels must be >= world.vocab_size >= 2 (distinct "
                         "token rewards)")
    if not 0 < float(w.min_prob) * int(w.vocab_size) < 1:
        raise ValueError(f"world.min_prob={w.min_prob} must be in (0, 1 / vocab_size)")


def instance(config, seed: int) -> dict:
    """The problem of experiment seed `seed`, from its test data seed: token probabilities p [V]
    (min_prob + (1 - V min_prob) Dirichlet(1)), distinct token rewards r [V] on the grid
    {0, step, ..., 1}, step = 1 / (reward_levels - 1)."""
    w = config.world
    v, levels = int(w.vocab_size), int(w.reward_levels)
    rng = np.random.default_rng([split_seeds(seed).test, 42])
    p = float(w.min_prob) + (1 - v * float(w.min_prob)) * rng.dirichlet(np.ones(v))
    step = 1.0 / (levels - 1)
    r = rng.choice(levels, v, replace=False) * step
    return {"p": p / p.sum(), "r": r, "step": step}


def _bon_n(n: int, delta: float) -> float:
    """N = ceil(e^{n delta}) as a float (exact while e^{n delta} < 2^53, within float64's
    relative precision beyond)."""
    if n * delta > 700:
        raise ValueError(f"N = e^(n delta) = e^{n * delta:.0f} overflows float64; lower "
                         "ns or delta")
    x = math.exp(n * delta)
    return float(math.ceil(x)) if x < 2 ** 53 else x


def at_length(world: dict, n: int, delta: float) -> dict[str, float]:
    """Every quantity of one instance at sequence length n (module docstring)."""
    support, probs = tilted.sum_distribution(world["r"], world["p"], n, world["step"])
    big_n = _bon_n(n, delta)
    lam = tilted.lambda_for_kl(world["r"], world["p"], delta)  # per token = per sequence
    phi = tilted.tilt(support, probs, lam)
    phi_reward = float(np.dot(phi, support))
    bon_reward = tilted.bon_expected_reward(support, probs, big_n)
    bon_kl = tilted.bon_kl(support, probs, big_n)
    out = {"bon_reward_rate": bon_reward / n, "phi_reward_rate": phi_reward / n,
           "reward_gap": abs(bon_reward - phi_reward) / n, "abs_gap": phi_reward - bon_reward,
           "kl_rate": bon_kl / n, "kl_rate_error": abs(bon_kl / n - delta),
           "phi_kl_rate": tilted.tilted_kl(support, probs, lam) / n,
           "bound_slack": tilted.bon_kl_bound(big_n) - bon_kl, "log_N": math.log(big_n)}
    if math.isfinite(lam):
        out["kl_to_tilt_rate"] = tilted.bon_kl_to_tilt(support, probs, big_n, lam) / n
    return out


def run_seeds(config: ml_collections.ConfigDict, workdir: str) -> dict[int, dict[str, float]]:
    if real.is_real(config):
        return {int(s): _run_real(config, os.path.join(workdir, f"seed_{s}"), int(s))
                for s in config.seeds}
    ns = [int(n) for n in config.ns]
    out = {}
    for seed in (int(s) for s in config.seeds):
        world = instance(config, seed)
        delta_max = tilted.max_kl(world["r"], world["p"])
        delta = (float(config.delta_over_max) * delta_max if float(config.delta_over_max) > 0
                 else float(config.delta))
        lam = tilted.lambda_for_kl(world["r"], world["p"], delta)
        x_star = tilted.ldp_reward_rate(world["r"], world["p"], delta)
        rows = {n: at_length(world, n, delta) for n in ns}
        writer = MetricsWriter(os.path.join(workdir, f"seed_{seed}"), tensorboard=False)
        writer.truncate_after(0)
        for n in ns:
            writer.write(n, rows[n])
        writer.close()
        last, prev, first = rows[ns[-1]], rows[ns[-2]], rows[ns[0]]
        res = {"delta": delta, "delta_max": delta_max, "x_star": x_star,
               **({"lambda": lam} if math.isfinite(lam) else {}),
               "max_n": float(ns[-1]), "ref_reward_rate": float(np.dot(world["p"], world["r"])),
               "bound_slack_min": min(row["bound_slack"] for row in rows.values()),
               "phi_x_star_error": abs(last["phi_reward_rate"] - x_star)}
        for key in ("reward_gap", "kl_rate_error", "kl_rate", "bon_reward_rate",
                    "phi_reward_rate", "kl_to_tilt_rate"):
            if key in last:
                res[f"test_{key}"] = last[key]
                res[f"test_{key}_change"] = last[key] - prev[key]
                for n in ns:
                    res[f"test_{key}_n{n}"] = rows[n][key]
        res["test_abs_gap_growth"] = last["abs_gap"] - first["abs_gap"]
        res["test_bon_x_star_error"] = abs(last["bon_reward_rate"] - x_star)
        if delta > delta_max:
            res["test_kl_shortfall"] = (delta - last["kl_rate"]) / (delta - delta_max)
        out[seed] = res
    return out


def _run_real(config, workdir: str, seed: int) -> dict[str, float]:
    """`:real` (module docstring): M samples per held-out prompt, RM scores, per-N metrics."""
    import jax

    from alignax.algorithms import online, pretrained

    tok = real.tokenizer(config)
    data = real.prompt_data(config, tok, int(config.data.max_length))
    ids, mask, n_val = real.held_out_prompts(data)
    model, params = pretrained.load_pretrained(real.model_config(config), "lm", seed=seed)
    rm, rm_params = pretrained.load_pretrained(
        real.model_config(config, config.reward.path), "reward", seed=seed)
    s = config.sampling
    m = int(s.num_samples)
    rollout_fn = online.make_rollout(model, num_samples=m, max_new_tokens=int(s.max_new_tokens),
                                     temperature=float(s.temperature),
                                     stop_tokens=real.stop_tokens(tok, s.stop_tokens),
                                     pad_id=int(tok.pad_id))

    @jax.jit
    def sample_and_score(params, rm_params, ids, mask, key):
        rollout = rollout_fn(params, ids, mask, key)
        return rm.apply(rm_params, rollout.ids, rollout.mask), rollout.prompt_index

    n = len(ids)
    chunk = int(config.data.eval_batch_size) or n
    keys = jax.random.split(jax.random.key(seed), -(-n // chunk))
    rewards = []
    for i, start in enumerate(range(0, n, chunk)):
        rows = np.arange(start, start + chunk).clip(max=n - 1)  # last chunk: repeat the last row
        scores, index = sample_and_score(params, rm_params, ids[rows], mask[rows], keys[i])
        scores, index = np.asarray(scores, np.float64), np.asarray(index)
        if not np.array_equal(index, np.repeat(np.arange(chunk), m)):
            raise ValueError("rollout rows are not grouped by prompt")
        rewards.append(scores.reshape(chunk, m)[:min(chunk, n - start)])
    rewards = np.concatenate(rewards)  # [P, M]
    metrics = bon_vs_tilt(rewards, [int(k) for k in config.ns])
    out = {}
    for key, values in metrics.items():
        if key.startswith("kl_bound"):
            out[key] = float(values[0])
        else:
            out.update(real.split_means(values, n_val, key))
    if jax.process_index() == 0:
        writer = MetricsWriter(workdir, tensorboard=False)
        writer.truncate_after(0)
        writer.write(0, out)
        writer.close()
    return out


def bon_vs_tilt(rewards, ns) -> dict[str, np.ndarray]:
    """Per prompt [P] for rewards [P, M] of M samples each: the reference's mean reward, and
    per N in ns best-of-N's exact expected reward and KL(BoN || p_M) on the empirical law
    p_M (each sample 1 / M), the bound log N - (N - 1) / N, and the expected reward of the
    tilt fitted on the same samples (self-normalised weights e^{lambda r_i}) at BoN's KL and
    at the bound."""
    rewards = np.asarray(rewards, np.float64)
    p, m = rewards.shape
    uniform = np.full(m, 1.0 / m)
    out = {"ref_reward": rewards.mean(1)}
    for big_n in ns:
        bound = tilted.bon_kl_bound(big_n)
        bon, kls, tilt_eq, tilt_bound = (np.empty(p) for _ in range(4))
        for i, r in enumerate(rewards):
            bon[i] = tilted.bon_expected_reward(r, uniform, big_n)
            kls[i] = tilted.bon_kl(r, uniform, big_n)
            for target, dest in ((kls[i], tilt_eq), (bound, tilt_bound)):
                lam = tilted.lambda_for_kl(r, uniform, target)
                dest[i] = float(np.dot(tilted.empirical_tilt_weights(r, lam), r))
        out[f"bon_reward_N{big_n}"] = bon
        out[f"bon_kl_N{big_n}"] = kls
        out[f"tilted_reward_N{big_n}"] = tilt_eq
        out[f"tilted_reward_bound_N{big_n}"] = tilt_bound
        out[f"reward_gap_N{big_n}"] = tilt_eq - bon
        out[f"kl_bound_N{big_n}"] = np.full(p, bound)
    return out


def _lengths(results) -> list[int]:
    """The sequence lengths n of a run, from its per-n metric names."""
    row = next(iter(next(iter(results.values()))["per_seed"].values()))
    return sorted(int(k.rsplit("_n", 1)[1]) for k in row if k.startswith("test_kl_rate_n"))


def claims(results) -> list[protocol.Claim]:
    if not set(VARIANTS) & set(results):
        return []  # a :real run: metrics only (module docstring)
    delta = float(get_config().delta)
    ns = _lengths(results)
    last, prev = ns[-1], ns[-2]
    inside = "inside"
    claims_out = []
    if inside in results:
        def vals(metric):
            return protocol.per_seed(results, inside, metric)

        def mean(metric):
            return protocol.seed_mean(results, inside, metric)

        detail = (f"delta {delta}; means over instances at the largest n: reward gap / n "
                  f"{mean('test_reward_gap'):.4f}, KL(BoN||p)/n {mean('test_kl_rate'):.4f}, "
                  f"KL(BoN||phi)/n {mean('test_kl_to_tilt_rate'):.4f}, BoN reward rate "
                  f"{mean('test_bon_reward_rate'):.4f}, phi reward rate "
                  f"{mean('test_phi_reward_rate'):.4f}, x* {mean('x_star'):.4f}")
        claims_out += [
            protocol.threshold(
                f"|E_BoN R - E_phi R| / n <= 0.01 at n = {last} (N = ceil(e^(n delta)), "
                f"KL(phi||p) = n delta)", results, (inside, "test_reward_gap"), at_most=0.01,
                detail=detail),
            protocol.threshold(
                f"the per-token reward gap decreases in n (n = {last} minus n = {prev} <= 0)",
                results, (inside, "test_reward_gap_change"), at_most=0.0, detail=detail),
            protocol.threshold(
                f"KL(BoN||p) / n -> delta: |KL / n - delta| <= delta / 2 at n = {last}",
                results, (inside, "test_kl_rate_error"), at_most=delta / 2, detail=detail),
            protocol.threshold(
                f"|KL(BoN||p) / n - delta| decreases in n (n = {last} minus n = {prev} <= 0)",
                results, (inside, "test_kl_rate_error_change"), at_most=0.0, detail=detail),
            protocol.threshold(
                f"KL(BoN||phi) / n <= 0.01 at n = {last}", results,
                (inside, "test_kl_to_tilt_rate"), at_most=0.01, detail=detail),
            protocol.threshold(
                f"the equivalence is per token only: the unnormalised gap E_phi R - E_BoN R "
                f"grows from n = {ns[0]} to n = {last} (>= 0)", results,
                (inside, "test_abs_gap_growth"), at_least=0.0, detail=detail),
        ]
        bound = {f"seed_{s}": v for s, v in vals("bound_slack_min").items()}
        x_err = {f"seed_{s}": v for s, v in vals("phi_x_star_error").items()}
        claims_out += [
            protocol.sanity("KL(BoN||p) <= log N - (N - 1) / N at every n (Beirami et al.)",
                            min(bound.values()) >= -1e-9, bound, "a theorem"),
            protocol.sanity("E_phi R / n equals the large-deviation rate x* (I_p(x*) = delta)",
                            max(x_err.values()) <= 1e-9, x_err, "exact for a product tilt"),
        ]
    if "beyond_max" in results:
        m = protocol.seed_mean
        # KL(BoN||p) / n <= delta_max always, so this holds by construction: a sanity check
        shortfall = {f"seed_{s}": v for s, v in
                     protocol.per_seed(results, "beyond_max", "test_kl_shortfall").items()}
        claims_out.append(protocol.sanity(
            f"outside the regime (delta = 1.5 delta_max) KL(BoN||p) / n stays short of delta by "
            f">= half of delta - delta_max at n = {last}", min(shortfall.values()) >= 0.5,
            shortfall,
            detail=(f"KL(BoN||p) / n <= delta_max by construction; mean delta "
                    f"{m(results, 'beyond_max', 'delta'):.3f}, delta_max "
                    f"{m(results, 'beyond_max', 'delta_max'):.3f}, KL/n "
                    f"{m(results, 'beyond_max', 'test_kl_rate'):.3f}, reward gap / n "
                    f"{m(results, 'beyond_max', 'test_reward_gap'):.4f}")))
    return claims_out


def plots(results, workdir: str) -> list[str]:
    """The convergence in n of the three per-token gaps (inside) and of KL(BoN||p) / n against
    delta and delta_max (beyond_max); means over instances, std shaded."""
    out = []
    if not set(VARIANTS) & set(results):
        return out
    ns = _lengths(results)
    if "inside" in results:
        seeds = results["inside"]["per_seed"]
        curves = {}
        for key, label in (("test_reward_gap", "|E_BoN R - E_phi R| / n"),
                           ("test_kl_rate_error", "|KL(BoN||p) / n - delta|"),
                           ("test_kl_to_tilt_rate", "KL(BoN||phi) / n")):
            ys = np.array([[row[f"{key}_n{n}"] for n in ns] for row in seeds.values()])
            curves[label] = (ns, ys.mean(0), ys.std(0))
        out.append(plot_curves(curves, os.path.join(workdir, "plots", "convergence.png"),
                               title="best-of-e^(n delta) vs the KL-constrained optimum",
                               xlabel="sequence length n", ylabel="per-token gap",
                               xscale="log"))
    if "beyond_max" in results:
        seeds = results["beyond_max"]["per_seed"]
        rel = np.array([[(row[f"test_kl_rate_n{n}"] - row["delta_max"])
                         / (row["delta"] - row["delta_max"]) for n in ns]
                        for row in seeds.values()])
        out.append(plot_curves(
            {"(KL/n - delta_max) / (delta - delta_max)": (ns, rel.mean(0), rel.std(0))},
            os.path.join(workdir, "plots", "beyond_max.png"),
            title="delta = 1.5 delta_max: 1 would be KL/n = delta", xlabel="sequence length n",
            ylabel="relative KL rate", xscale="log"))
    return out
