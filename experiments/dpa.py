"""Directional Preference Alignment: preference-conditioned rejection-sampling fine-tuning of a toy
LM over two objectives (helpfulness, verbosity).

Paper: Wang et al. 2024, "Arithmetic Control of LLMs for Diverse User Preferences: Directional
Preference Alignment with Multi-Objective Rewards" (arXiv 2402.18571). A user preference is a unit
direction v = (cos theta, sin theta) in the (helpfulness, verbosity) reward plane, the reward is
v^T r(x, y), the policy reads v from its prompt, and iterated rejection-sampling fine-tuning (RSF)
keeps the best of N samples under each (prompt, v).

Setting: a toy language of 12 content tokens, a stop token and 8 direction tokens (bins of theta
covering [0, pi/2]: from pure helpfulness to pure verbosity). A prompt is
[bos, direction token, two random content tokens]; a response is content tokens then the stop.
Verbosity = number of content tokens. Helpfulness = the sum of the gold scores of the DISTINCT
content tokens of the response minus a redundancy penalty for every repeated token. (A plain count
of good tokens, as in the notes' sketch, makes the longest all-good response best on both axes:
the front collapses to one point and no direction changes the optimum. Scores counted once per
distinct token give a strictly concave front: each direction has its own optimal length, from 4
tokens at theta near 0 to the maximum near pi/2.) Per seed: SFT a 2-layer LM on random responses of
random length (direction tokens uninformative), then 3 rounds of RSF: for each of 64 prompts per
direction bin, 16 samples, keep argmax v^T r (`alignax.rewards.directional.select_by_direction`),
SFT on the kept samples (each round fine-tunes the last round's policy with a fresh AdamW state;
the reference SFT and every round train all seeds of a variant in one
`alignax.train.small.fit_small` program under `<variant>/base` and `<variant>/round<r>`:
metrics, checkpoints). Baseline (`scalar`): the same RSF with ONE fixed direction (theta = pi/4,
the middle of the range), no direction token (a constant null token), the same sample budget.
Evaluation after every round: 1024 samples
(64 fresh prompts x 16) per direction bin, or of the scalar policy.

Claims checked (after round 3, over seeds):
  1. the direction controls verbosity: Spearman(theta, mean length) over the 8 bins >= 0.9;
  2. helpfulness moves as prescribed: it falls as theta moves weight from helpfulness to
     verbosity, Spearman(theta, mean helpfulness) <= -0.9;
  3. the DPA front dominates the scalar-reward RSF point: hypervolume of the 8 DPA points >= the
     hypervolume of the scalar point (both objectives maximised; reference = the nadir of the
     true front: the worst helpfulness and the shortest length among the 8 directions' optimal
     responses), on average and per seed.

    alignax run experiments/dpa.py            # full setting, 3 seeds
    alignax run experiments/dpa.py:smoke      # seconds, for the tests
"""

from __future__ import annotations

import math
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from alignax.algorithms import common, sft
from alignax.experiment import Claim, is_smoke, metric
from alignax.ops import spearman
from alignax.rewards import aggregate
from alignax.rewards.directional import (bin_centers, direction_tokens, select_by_direction,
                                         unit_directions)
from alignax.sampling.sampler import sample
from alignax.train.small import fit_small

PAD, BOS, EOS, NULL = 0, 1, 2, 3
FIRST_DIR = 4


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    smoke = is_smoke(arg)
    c = ml_collections.ConfigDict()
    c.seeds = [0] if smoke else [0, 1, 2]
    c.method = "dpa"  # "dpa": direction-conditioned RSF; "scalar": one fixed direction
    c.task = dict(
        num_bins=8, angle_low=0.0, angle_high=math.pi / 2, max_content=12,
        # gold scores of the 12 content tokens, best first; a repeated token costs `repeat_cost`
        scores=(1.5, 1.0, 0.5, 0.2, -0.2, -0.4, -0.7, -1.0, -1.5, -2.5, -3.0, -3.5),
        repeat_cost=4.0, scalar_angle=math.pi / 4,
    )
    c.model = dict(d_model=64, n_layers=2, n_heads=4, d_ff=128, max_len=32)
    c.base = dict(examples=4096 if not smoke else 256, steps=200 if not smoke else 10,
                  learning_rate=3e-3)
    c.rsf = dict(rounds=3 if not smoke else 1, prompts_per_bin=64 if not smoke else 4,
                 num_samples=16 if not smoke else 4, steps=100 if not smoke else 5,
                 batch_size=128 if not smoke else 16, learning_rate=1e-3, temperature=1.0)
    c.variants = dict(dpa=dict(method="dpa"), scalar=dict(method="scalar"))
    return c


# ----------------------------------------------------------------------------- the toy task


def content_ids(task) -> np.ndarray:
    first = FIRST_DIR + int(task.num_bins)
    return np.arange(first, first + len(task.scores))


def vocab_size(task) -> int:
    return FIRST_DIR + int(task.num_bins) + len(task.scores)


def objectives(task, tokens: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(helpfulness, verbosity) of responses: tokens, mask [M, N] -> [M, 2] float32.

    Verbosity = content tokens before the stop; helpfulness = sum of the gold scores of the
    distinct content tokens - repeat_cost * (number of repeated occurrences).
    """
    ids = content_ids(task)
    scores = np.asarray(task.scores, np.float32)
    live = np.asarray(mask, bool) & (np.asarray(tokens) >= ids[0])
    counts = ((np.asarray(tokens)[:, :, None] == ids[None, None, :]) & live[:, :, None]).sum(1)
    helpful = (counts > 0) @ scores - task.repeat_cost * np.maximum(counts - 1, 0).sum(1)
    return np.stack([helpful, live.sum(1)], axis=1).astype(np.float32)


def oracle_points(task, angles: np.ndarray) -> np.ndarray:
    """(helpfulness, verbosity) of the best response for each direction (exhaustive over the
    number of distinct tokens, best-scored first, and repeats): [M] -> [M, 2]."""
    s = np.sort(np.asarray(task.scores, np.float64))[::-1]
    budget = int(task.max_content) + 1  # the last slot may hold a content token instead of stop
    out = []
    for th in angles:
        v = np.array([math.cos(th), math.sin(th)])
        best, point = -np.inf, None
        for d in range(min(len(s), budget) + 1):
            for rep in range(0 if d == 0 else budget - d + 1):
                p = np.array([s[:d].sum() - task.repeat_cost * rep, d + rep])
                if v @ p > best + 1e-12:
                    best, point = v @ p, p
        out.append(point)
    return np.asarray(out, np.float32)


def make_prompts(task, bins: np.ndarray, rng: np.random.Generator, *, null: bool) -> np.ndarray:
    """[bos, direction token (or null), two random content tokens]: bins [M] -> [M, 4]."""
    ids = content_ids(task)
    cond = np.full(len(bins), NULL) if null else FIRST_DIR + bins
    q = rng.choice(ids, size=(len(bins), 2))
    return np.concatenate([np.full((len(bins), 1), BOS), cond[:, None], q], 1).astype(np.int32)


def base_examples(task, n: int, rng: np.random.Generator):
    """Random responses of random length (0..max_content) after random prompts; the direction
    token carries no information. Returns input_ids, mask, loss_mask [n, 4 + max_content + 1]."""
    prompts = make_prompts(task, rng.integers(0, task.num_bins, n), rng, null=False)
    prompts[rng.random(n) < 1.0 / (task.num_bins + 1), 1] = NULL
    n_new = int(task.max_content) + 1
    lengths = rng.integers(0, task.max_content + 1, n)
    toks = rng.choice(content_ids(task), size=(n, n_new))
    pos = np.arange(n_new)[None, :]
    toks = np.where(pos < lengths[:, None], toks, np.where(pos == lengths[:, None], EOS, PAD))
    resp_mask = pos <= lengths[:, None]
    ids = np.concatenate([prompts, toks], 1).astype(np.int32)
    mask = np.concatenate([np.ones_like(prompts, bool), resp_mask], 1)
    loss_mask = np.concatenate([np.zeros_like(prompts, bool), resp_mask], 1)
    return ids, mask, loss_mask


# ----------------------------------------------------------------------------- training


def make_model(config):
    """The toy LM of `config.model` over the task's vocabulary."""
    return common.make_model({**config.model.to_dict(), "vocab_size": vocab_size(config.task)},
                             "lm")


def fit_sft(workdir: str, model, params, data: dict, seeds, keys, *, steps: int,
            learning_rate: float, batch_size: int):
    """`steps` AdamW steps of the SFT loss on random minibatches of each seed's rows, every seed
    in one `fit_small` program with a fresh optimizer.

    params: the stacked [S, ...] start of every seed; data: [S, C, T] input_ids, mask, loss_mask;
    keys [S]: minibatch draws (update i of seed s uses fold_in(keys[s], i)). Returns the SmallFit
    (final_loss: the loss before the last update).
    """
    sft_loss = sft.make_sft_loss(model.apply)

    def batch_fn(d, rng):
        idx = jax.random.randint(rng, (batch_size,), 0, d["input_ids"].shape[0])
        return jax.tree.map(lambda x: x[idx], d)

    return fit_small(workdir, loss_fn=lambda p, batch: sft_loss(p, batch, None), has_aux=True,
                     init_params=params, per_seed_init=True,
                     tx=optax.adamw(float(learning_rate), weight_decay=0.0),
                     num_steps=int(steps), data=jax.tree.map(jnp.asarray, data), seeds=seeds,
                     seed_keys=jnp.stack(keys), per_seed_data=True, batch_fn=batch_fn)


def _sample(model, params, prompts, rng, num_samples: int, task, temperature: float):
    out = sample(model, params, jnp.asarray(prompts), jnp.ones(prompts.shape, bool), rng,
                 max_new_tokens=int(task.max_content) + 1, num_samples=num_samples,
                 temperature=temperature, stop_tokens=(EOS,), pad_id=PAD)
    return out


def evaluate(model, params, task, bins: np.ndarray, *, method: str, num_samples: int,
             rng: jax.Array, seed: int) -> np.ndarray:
    """Mean (helpfulness, verbosity) per direction bin ([num_bins, 2]) for DPA, or of the
    null-token policy ([1, 2]) for the scalar baseline, from `num_samples` samples of fresh
    prompts of `bins` [B] (the RSF prompt layout, so the sampler compiles once)."""
    prompts = make_prompts(task, bins, np.random.default_rng([seed, 99]),
                           null=method == "scalar")
    out = _sample(model, params, prompts, rng, num_samples, task, 1.0)
    r = objectives(task, np.asarray(out.tokens), np.asarray(out.mask))
    group = np.repeat(bins, num_samples) if method == "dpa" else np.zeros(len(r), int)
    return np.stack([r[group == g].mean(0) for g in np.unique(group)])


def run_seeds(config: ml_collections.ConfigDict, workdir: str) -> dict[int, dict[str, float]]:
    """Every seed of one variant: the reference SFT and each RSF round train all seeds in one
    program (`workdir/base`, `workdir/round<r>`); sampling, selection and evaluation per seed."""
    seeds = [int(s) for s in config.seeds]
    task, method = config.task, config.method
    if method not in ("dpa", "scalar"):
        raise ValueError(f"method must be 'dpa' or 'scalar', got {method!r}")
    model = make_model(config)
    rngs = [np.random.default_rng([s, 1]) for s in seeds]
    keys, init_keys, base_keys = [], [], []
    for s in seeds:
        key, k_init, k_base = jax.random.split(jax.random.key(s), 3)
        keys.append(key)
        init_keys.append(k_init)
        base_keys.append(k_base)
    n, per_bin = int(config.rsf.num_samples), int(config.rsf.prompts_per_bin)
    bins = np.repeat(np.arange(task.num_bins), per_bin)
    names = ("input_ids", "mask", "loss_mask")

    # 1. reference policy: SFT on random responses
    examples = [base_examples(task, config.base.examples, rng) for rng in rngs]
    init = jax.tree.map(lambda *x: jnp.stack(x), *[model.init(k) for k in init_keys])
    fit = fit_sft(os.path.join(workdir, "base"), model, init,
                  {k: np.stack([e[j] for e in examples]) for j, k in enumerate(names)}, seeds,
                  base_keys, steps=config.base.steps, learning_rate=config.base.learning_rate,
                  batch_size=config.rsf.batch_size)
    results = {s: {"base_nll_last": float(fit.final_loss[i])} for i, s in enumerate(seeds)}

    # 2. RSF rounds (each round fine-tunes from the last one's params with a fresh AdamW)
    centers = np.asarray(bin_centers(task.num_bins, task.angle_low, task.angle_high))
    if method == "dpa":
        group_dirs = unit_directions(jnp.asarray(centers[bins]))
        # the prompts carry the token of each direction's angle bin
        if not np.array_equal(np.asarray(direction_tokens(
                jnp.asarray(centers[bins]), first_token_id=FIRST_DIR, num_bins=task.num_bins,
                low=task.angle_low, high=task.angle_high)), FIRST_DIR + bins):
            raise RuntimeError("the prompts' direction tokens do not match their angle bins")
    else:
        group_dirs = jnp.tile(unit_directions(jnp.array([task.scalar_angle])), (len(bins), 1))

    history = {s: [] for s in seeds}
    for r in range(int(config.rsf.rounds) + 1):
        kept, fit_keys = [], []
        for i, s in enumerate(seeds):
            keys[i], k_eval, k_samp, k_fit = jax.random.split(keys[i], 4)
            params = fit.seed_params(i)
            history[s].append(evaluate(model, params, task, bins, method=method, num_samples=n,
                                       rng=k_eval, seed=s))
            if r == int(config.rsf.rounds):
                continue
            prompts = make_prompts(task, bins, rngs[i], null=method == "scalar")
            out = _sample(model, params, prompts, k_samp, n, task, config.rsf.temperature)
            rew = objectives(task, np.asarray(out.tokens), np.asarray(out.mask))
            idx, best = select_by_direction(jnp.asarray(rew.reshape(len(bins), n, 2)),
                                            group_dirs)
            rows = np.arange(len(bins)) * n + np.asarray(idx)
            ids = np.concatenate([np.asarray(out.prompt_ids), np.asarray(out.tokens)], 1)[rows]
            resp = np.asarray(out.mask)[rows]
            mask = np.concatenate([np.ones((len(rows), prompts.shape[1]), bool), resp], 1)
            loss_mask = np.concatenate([np.zeros((len(rows), prompts.shape[1]), bool), resp], 1)
            kept.append((ids.astype(np.int32), mask, loss_mask))
            fit_keys.append(k_fit)
            results[s][f"round{r + 1}_kept_reward"] = float(np.mean(best))
        if r == int(config.rsf.rounds):
            break
        fit = fit_sft(os.path.join(workdir, f"round{r + 1}"), model, fit.params,
                      {k: np.stack([e[j] for e in kept]) for j, k in enumerate(names)}, seeds,
                      fit_keys, steps=config.rsf.steps, learning_rate=config.rsf.learning_rate,
                      batch_size=config.rsf.batch_size)
        for i, s in enumerate(seeds):
            results[s][f"round{r + 1}_nll_last"] = float(fit.final_loss[i])

    # reference point: the nadir of the true front (the worst helpfulness and the shortest length
    # among the optimal responses of the 8 directions), fixed by the task
    oracle = oracle_points(task, centers)
    ref = oracle.min(0)
    for s in seeds:
        out = results[s]
        for r, points in enumerate(history[s]):
            for j, (h, v) in enumerate(points):
                out[f"round{r}_help_{j}"] = float(h)
                out[f"round{r}_len_{j}"] = float(v)
        final, base = history[s][-1], history[s][0]
        out["base_help"] = float(base[:, 0].mean())
        out["base_len"] = float(base[:, 1].mean())
        out["ref_help"], out["ref_len"] = float(ref[0]), float(ref[1])
        out["hypervolume"] = aggregate.hypervolume(final, ref)
        out["oracle_hypervolume"] = aggregate.hypervolume(oracle, ref)
        out["final_help_mean"] = float(final[:, 0].mean())
        out["final_len_mean"] = float(final[:, 1].mean())
        if method == "dpa":
            out["spearman_theta_length"] = float(spearman(centers, final[:, 1]))
            out["spearman_theta_help"] = float(spearman(centers, final[:, 0]))
            v = np.asarray(unit_directions(jnp.asarray(centers)))
            out["directional_reward_mean"] = float(np.mean(np.sum(final * v, 1)))
            out["spearman_oracle_length"] = float(spearman(centers, oracle[:, 1]))
    return results


# ----------------------------------------------------------------------------- claims and plots


def _per_seed(results, variant, name):
    return {s: m[name] for s, m in results[variant]["per_seed"].items()}


def claims(results) -> list[Claim]:
    out = []
    rho_len = _per_seed(results, "dpa", "spearman_theta_length")
    out.append(Claim(
        name="DPA: Spearman(theta, mean response length) >= 0.9 across the 8 directions",
        passed=metric(results, "dpa", "spearman_theta_length") >= 0.9,
        measured={"spearman_mean": metric(results, "dpa", "spearman_theta_length"),
                  "spearman_min": float(min(rho_len.values()))},
        detail=f"per seed {rho_len}"))
    rho_help = _per_seed(results, "dpa", "spearman_theta_help")
    out.append(Claim(
        name="DPA: helpfulness falls as the direction moves weight to verbosity, "
             "Spearman(theta, mean helpfulness) <= -0.9",
        passed=metric(results, "dpa", "spearman_theta_help") <= -0.9,
        measured={"spearman_mean": metric(results, "dpa", "spearman_theta_help"),
                  "spearman_max": float(max(rho_help.values()))},
        detail=f"per seed {rho_help}"))
    # informational: is the scalar point dominated by one of the DPA points (means over seeds)?
    m = results["dpa"]["metrics"]
    last = max(int(k[5:].split("_")[0]) for k in m if k.startswith("round") and "_help_" in k)
    pts = np.array([[m[f"round{last}_help_{j}"]["mean"], m[f"round{last}_len_{j}"]["mean"]]
                    for j in range(sum(k.startswith("round0_help_") for k in m))])
    ms = results["scalar"]["metrics"]
    sp = np.array([ms[f"round{last}_help_0"]["mean"], ms[f"round{last}_len_0"]["mean"]])
    dominated = bool(np.any(np.all(pts >= sp, axis=1) & np.any(pts > sp, axis=1)))
    hv_dpa = _per_seed(results, "dpa", "hypervolume")
    hv_scalar = _per_seed(results, "scalar", "hypervolume")
    seeds = sorted(set(hv_dpa) & set(hv_scalar))
    wins = [hv_dpa[s] >= hv_scalar[s] for s in seeds]
    out.append(Claim(
        name="DPA front dominates the scalar-reward RSF point: hypervolume(DPA) >= "
             "hypervolume(scalar) > 0 on average and on every seed",
        passed=(metric(results, "dpa", "hypervolume") >= metric(results, "scalar", "hypervolume")
                and metric(results, "dpa", "hypervolume") > 0 and all(wins)),
        measured={"hv_dpa": metric(results, "dpa", "hypervolume"),
                  "hv_scalar": metric(results, "scalar", "hypervolume"),
                  "seeds_won": float(sum(wins)),
                  "scalar_point_dominated_by_a_dpa_point": float(dominated)},
        detail=f"per seed dpa {hv_dpa}, scalar {hv_scalar}"))
    return out


def plots(results, workdir: str) -> list[str]:
    """(helpfulness, verbosity) of the 8 directions per RSF round, with the scalar RSF point."""
    from alignax.train.plots import plot_curves

    def mean_point(variant, r, j):
        res = results[variant]["metrics"]
        return res[f"round{r}_help_{j}"]["mean"], res[f"round{r}_len_{j}"]["mean"]

    if "dpa" not in results:
        return []
    names = results["dpa"]["metrics"]
    rounds = sorted({int(k[5:].split("_")[0]) for k in names if k.startswith("round")
                     and "_help_" in k})
    num_bins = len({k for k in names if k.startswith("round0_help_")})
    curves = {}
    for r in rounds:
        pts = np.array([mean_point("dpa", r, j) for j in range(num_bins)])
        curves[f"DPA round {r}" + (" (SFT)" if r == 0 else "")] = (pts[:, 0], pts[:, 1])
    task = get_config().task
    oracle = oracle_points(task, np.asarray(bin_centers(num_bins, task.angle_low,
                                                        task.angle_high)))
    curves["optimal response per direction"] = (oracle[:, 0], oracle[:, 1])
    if "scalar" in results:
        h, v = mean_point("scalar", rounds[-1], 0)
        curves[f"scalar RSF round {rounds[-1]}"] = ([h], [v])
    path = os.path.join(workdir, "plots", "dpa_front.png")
    return [plot_curves(curves, path,
                        title="Directional preference alignment: front over 8 directions",
                        xlabel="helpfulness (distinct gold-token score)",
                        ylabel="verbosity (response length)")]
