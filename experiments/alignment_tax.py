"""Mitigating the Alignment Tax of RLHF

Paper: Lin et al. 2024, "Mitigating the Alignment Tax of RLHF" (arXiv 2309.06256).

Setting (a two-task toy language model, notes ## 8): a prompt is a task flag and L = 4 tokens
over V = 8; a response is L tokens. The policy is a 3-layer GELU MLP (one-hot prompt ->
64 -> 64 -> L x V logits, one softmax per output position; `alignax.models.mlp`), so log-probs,
expected rewards and KLs are exact sums. Task A (copy: y = x) stands for the pretrained ability,
measured by the exact expected token accuracy of a sampled response, E_pi[mean_t 1{y_t = x_t}].
Task B is the RLHF target: the gold reward is r(x, y) = mean_t G[x_t, y_t] with a random table
G ~ N(0, 1)^{V x V} (the world of experiment seed s). theta_0 is SFT on the two-task mixture
(copy targets for A, a soft demonstrator softmax(G[x_t] / tau) for B; early-stopped on the
validation cross-entropy). RLHF is REINFORCE (RLOO, 4 samples per prompt) with the KL to theta_0
in the reward (`alignax.algorithms.prompted_pg`), on task-B prompts only, with a small KL
coefficient: it raises B's gold and forgets A.

Splits: experiment seed s draws its training, validation and test prompts of both tasks from
the data seeds `split_seeds(s)` (prompts of a later split that occur in an earlier one are
dropped: the three sets are disjoint); the world G and the model inits use s.

Methods (all from the same theta_0 and the same RLHF run, `alignax.train.merge`):
- uniform averaging theta(alpha) = (1 - alpha) theta_0 + alpha theta_RLHF, alpha on a grid of
  step `alpha_step` (the notes' {0, .1, ..., 1} is its subset, shown in the plot);
- HMA (heterogeneous averaging): K = 3 layer groups (input layer, middle layer, head), ratios
  alpha_k = sigmoid(z_k + c) with mean alpha_bar = .5, the logits z trained by the RLHF
  objective on the alphas only (the exact expected gold on training B prompts, `fit_small`
  over z, starting from uniform averaging; the step kept by `select` on validation gold);
- early stopping: the checkpoints of the RLHF run every `eval_every` updates;
- KL sweep: RLHF runs to the full budget with each coefficient of a log grid (the RLHF run's
  coefficient is its smallest), one row per (seed, coefficient) in one program.

Matched reward levels (chosen on validation): per seed, the levels are gold_0 + q (gold_RLHF -
gold_0) for q in {.25, .5, .75}, from the validation gold of theta_0 and theta_RLHF. Every
method's path starts at theta_0 (alpha up; step up; coefficient down). Its matched policy is the
stochastic mixture of the first candidate whose validation gold reaches the level and the
candidate before it, weighted so that the mixture's validation gold equals the level
(`alignax.eval.tradeoff.match_level`): the three grids' different coarseness then does not
decide how far past the level a method lands (with the plain first-reaching candidate the KL
sweep's coarse grid overshot the level by ~0.05 gold, the early checkpoints at q = .25 by ~0.03).
Gold and task-A accuracy are expectations over responses, so the mixture's test values are the
same convex combination of its two candidates' (`tradeoff.mix`), with the weight fixed on
validation. Recorded per seed and level: the two candidates (`chosen_<method>_lo/hi_q<q>`:
alpha, update count, or KL coefficient with -1 for theta_0), the weight, and the test gold
reached (`test_gold_<method>_q<q>`), which shows how closely the reward is matched on test.

Claims (5 seeds, paired 95% t intervals; `protocol.decide`):
- comparative (the notes' pass criterion "the uniform-averaging front dominates the early-
  stopped / KL-sweep checkpoints at >= 2 of 3 matched reward levels"): per seed, the median
  over the 3 levels of [test task-A accuracy of averaging - that of the better baseline at the
  level] is >= 0 (the median of three is >= 0 iff at least two are); the per-level differences
  against each baseline are reported in the details;
- comparative: at alpha_bar = .5, HMA's test gold - uniform averaging's test gold >= 0;
- comparative: at alpha_bar = .5, HMA's test task-A accuracy - uniform's >= -0.01 (no more than
  1 point lower).
- sanity: RLHF raises the test gold over theta_0 and lowers the test task-A accuracy (the tax
  the toy must have for the question to make sense).

    alignax run experiments/alignment_tax.py            # full setting, 5 seeds
    alignax run experiments/alignment_tax.py:smoke      # seconds, for the tests

`:real` runs the same mechanism, model averaging, on a user's Hugging Face checkpoints with
measured quantities in place of the toy's exact expectations (no RLHF run, no baselines: the two
end points are given). `model.path` is theta_0 (the SFT / pre-RLHF checkpoint), `aligned.path`
theta_1 (the RLHF checkpoint; it must have the architecture of theta_0: a config.json field that
changes the model and differs is a one-line error naming it), `rm.path` a reward model (a
one-label `*ForSequenceClassification` folder), `data.path` prompts (TRL prompt-only format, or
the prompts of any TRL format) and `tax.path` the ability to keep: a dataset of TRL
language-modeling rows `{"text": ...}` (column `tax.text_field`). All checkpoints share the
tokenizer of `model.path` (rollout ids are scored as they are). Both datasets are split by the
same rule (`real.held_out_split`: the last `data.eval_fraction` of the rows, at most
`data.max_eval_rows`, are test, as many before them validation; nothing trains on the rows
before them). Every merged model theta(alpha) is measured on both splits by one compiled program
(the merge happens inside it; held-out rows go through in chunks of `data.eval_batch_size`):
- reward: the mean RM score of one completion per prompt (`alignax.sampling` with a KV cache:
  greedy by default, `eval.greedy=False` samples at `eval.temperature` with a fixed key; at most
  `eval.max_new_tokens`, stopping at `eval.stop_tokens`, -1 = the eos);
- tax: the mean token NLL of theta(alpha) on the texts (each text `[bos] + tokens` when the
  tokenizer adds a bos, its first `tax.max_length` tokens, no eos; every token after the first
  is predicted from its prefix; mean over all predicted tokens of the split). Lower is less
  forgetting.
Uniform averaging is measured at every alpha of `alphas` (test_reward_alpha_<a>,
test_nll_alpha_<a>, and val_*). HMA: K = `hma.num_groups` layer groups by depth (the units
[embeddings, block 0, ..., block L-1, final norm + LM head] cut into K contiguous runs of near
equal size, `merge.layer_groups`; K <= L + 2). The toy trains the ratios on an exact expected
gold; here the reward is a sampled RM score, so the ratios are searched on a grid instead: the
profiles alpha_k = `hma.mean_alpha` + `hma.spread` o_k over all o in {-1, 0, 1}^K with sum_k o_k
= 0 (mean `hma.mean_alpha`, the paper's constraint; o = 0, uniform averaging, is first), and the
profile with the highest validation reward is chosen (the paper's HMA objective at a fixed mean
ratio; ties to the earliest; recorded in selection.json), reported on test (test_reward_hma,
test_nll_hma, chosen_hma_alpha_<k>; the uniform model at the same mean: test_*_uniform). Whether
HMA's test point lies above the uniform test frontier at the same tax is a metric, not a claim:
`test_hma_frontier_reward` is the best test reward of uniform averaging with a test NLL no larger
than HMA's, along the alpha grid with linear interpolation between neighbouring alphas (a
per-row random choice between two merged models has the interpolated reward and NLL; NaN when
every uniform point has a larger NLL), `test_hma_reward_gap` the difference and
`test_hma_above_uniform` 1 when HMA's reward exceeds it (also when no uniform point has as
little tax). Every point's numbers (with response
lengths and token counts) are in `<workdir>/default/seed_<s>/frontier.json`. Memory: theta_0,
theta_1, one merged copy and the RM are held at once. No claim is evaluated on a :real run.

    alignax run experiments/alignment_tax.py:real --config.model.path=/sft \\
        --config.aligned.path=/rlhf --config.rm.path=/rm --config.data.path=/prompts \\
        --config.tax.path=/texts
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import re

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from alignax import protocol
from alignax.algorithms import common, online, pretrained, real
from alignax.algorithms.prompted_pg import prompted_reinforce_loss
from alignax.algorithms.small_pg import rl_batch
from alignax.eval import tradeoff
from alignax.experiment import is_smoke
from alignax.models.mlp import MLPConfig, make_mlp
from alignax.tasks.splits import check_disjoint, choose_on_validation, split_seeds
from alignax.train import merge
from alignax.train.plots import plot_curves
from alignax.train.small import fit_small, stack_seeds

LEVELS = (0.25, 0.5, 0.75)
EVAL_SETS = ("val_a", "val_b", "test_a", "test_b")
METHODS = ("avg", "early", "kl")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    if real.config_mode(arg) == "real":
        return _real_config()
    smoke = is_smoke(arg)
    c = ml_collections.ConfigDict()
    c.seeds = [0] if smoke else [0, 1, 2, 3, 4]
    c.plots = not smoke  # fit_small's per-stage PNGs (most of the smoke run's CPU time)
    c.variants = {"tax": {}}
    c.task = dict(vocab=8, length=4, demo_temperature=1.0)
    c.data = dict(train_prompts=2000 if not smoke else 400, val_prompts=500 if not smoke else 200,
                  test_prompts=1000 if not smoke else 200)
    c.model = dict(hidden=(64, 64) if not smoke else (32, 32))
    c.sft = dict(steps=1500 if not smoke else 150, batch_size=128, learning_rate=3e-3,
                 eval_every=50 if not smoke else 50)
    c.rl = dict(steps=600 if not smoke else 60, num_prompts=32, num_samples=4,
                learning_rate=1e-3, kl_coef=0.01, eval_every=10)
    # the KL sweep: coefficients, log grid from rl.kl_coef (the RLHF run's) up
    c.kl_sweep = dict(num=16 if not smoke else 3, max_coef=3.0)
    c.alpha_step = 0.05
    c.hma = dict(mean_alpha=0.5, steps=200 if not smoke else 20, learning_rate=0.1,
                 eval_every=10)
    return c


# ---------------------------------------------------------------------------------------------
# Data


def _prompts(rng, n: int, task: int, vocab: int, length: int, exclude: set) -> np.ndarray:
    """n distinct task-`task` prompts [n, 1 + L] not in `exclude` (rows as tuples)."""
    out, seen = [], set(exclude)
    while len(out) < n:
        for row in rng.integers(0, vocab, (2 * n, length)):
            key = (task, *row.tolist())
            if key not in seen:
                seen.add(key)
                out.append(key)
                if len(out) == n:
                    break
    return np.asarray(out, np.int32)


def make_data(config, seed: int) -> dict:
    """Seed `seed`: the world G [V, V], and disjoint train / validation / test prompts of both
    tasks from the data seeds `split_seeds(seed)`."""
    v, length = int(config.task.vocab), int(config.task.length)
    gold = np.random.default_rng([seed, 808]).standard_normal((v, v)).astype(np.float32)
    seeds = split_seeds(seed)
    sizes = {"train": config.data.train_prompts, "val": config.data.val_prompts,
             "test": config.data.test_prompts}
    out, used = {"gold": gold}, {0: set(), 1: set()}
    for split, data_seed in zip(("train", "val", "test"), seeds):
        rng = np.random.default_rng([data_seed, 808])
        for task, name in ((0, "a"), (1, "b")):
            p = _prompts(rng, int(sizes[split]), task, v, length, used[task])
            used[task].update(map(tuple, p.tolist()))
            out[f"{split}_{name}"] = p
    for name in ("a", "b"):
        check_disjoint(train=map(tuple, out[f"train_{name}"].tolist()),
                       validation=map(tuple, out[f"val_{name}"].tolist()),
                       test=map(tuple, out[f"test_{name}"].tolist()))
    return out


# ---------------------------------------------------------------------------------------------
# Policy


class Policy:
    """The MLP policy over L positions x V tokens given a prompt [..., 1 + L] (task, tokens)."""

    def __init__(self, config):
        self.v, self.length = int(config.task.vocab), int(config.task.length)
        self.mlp = make_mlp(MLPConfig(in_dim=2 + self.length * self.v,
                                      hidden=tuple(config.model.hidden),
                                      out_dim=self.length * self.v))

    def features(self, prompts):
        task = jax.nn.one_hot(prompts[..., 0], 2)
        tokens = jax.nn.one_hot(prompts[..., 1:], self.v).reshape(*prompts.shape[:-1], -1)
        return jnp.concatenate([task, tokens], -1)

    def log_probs(self, params, prompts):
        """[..., L, V] per-position log-probabilities."""
        logits = self.mlp.apply(params, self.features(prompts))
        return jax.nn.log_softmax(logits.reshape(*logits.shape[:-1], self.length, self.v), -1)

    def sample(self, params, prompts, key, n):
        lp = self.log_probs(params, prompts)  # [B, L, V]
        y = jax.random.categorical(key, lp, axis=-1, shape=(n, *lp.shape[:-1]))
        return jnp.moveaxis(y, 0, 1).astype(jnp.int32)  # [B, n, L]

    def sequence_log_prob(self, params, prompts, y):
        lp = self.log_probs(params, prompts)[:, None]  # [B, 1, L, V]
        return jnp.take_along_axis(lp, y[..., None], -1)[..., 0].sum(-1)


def gold_reward(prompts, y, data):
    """r(x, y) = mean_t G[x_t, y_t]: [B, n] for y [B, n, L]."""
    return data["gold"][prompts[:, None, 1:], y].mean(-1)


def exact_metrics(policy: Policy, params, ref_params, gold, sets: dict) -> dict:
    """Exact expected gold on B prompts, task-A expected token accuracy, KL(pi || theta_0) on
    B prompts, for every prompt set (names "<split>_a" / "<split>_b"). One forward pass of each
    model over all the sets' prompts (a smaller program to compile than one per set)."""
    names = list(sets)
    prompts = jnp.concatenate([sets[k] for k in names])
    lp_all = policy.log_probs(params, prompts)  # [P, L, V]
    lq_all = policy.log_probs(ref_params, prompts)
    out, start = {}, 0
    for name in names:
        split, task = name.rsplit("_", 1)
        end = start + sets[name].shape[0]
        x, lp, lq = prompts[start:end], lp_all[start:end], lq_all[start:end]
        p = jnp.exp(lp)
        if task == "a":
            out[f"{split}_acc_a"] = jnp.take_along_axis(p, x[:, 1:, None], -1)[..., 0].mean()
        else:
            out[f"{split}_gold"] = jnp.mean(jnp.sum(p * gold[x[:, 1:]], -1))
            out[f"{split}_kl"] = jnp.mean(jnp.sum(p * (lp - lq), (-1, -2)))
        start = end
    return out


# ---------------------------------------------------------------------------------------------
# Training stages


def train_sft(config, workdir, policy: Policy, data) -> np.ndarray:
    """SFT on the two-task mixture (soft targets: copy for A, the demonstrator for B),
    early-stopped on the validation cross-entropy. Returns the selected params [S, ...]."""
    tau = float(config.task.demo_temperature)
    bs = int(config.sft.batch_size)

    def targets(prompts, gold):
        copy = jax.nn.one_hot(prompts[..., 1:], policy.v)
        demo = jax.nn.softmax(gold[prompts[..., 1:]] / tau, -1)
        return jnp.where((prompts[..., 0] == 1)[..., None, None], demo, copy)

    def xent(params, prompts, gold):
        return -jnp.mean(jnp.sum(targets(prompts, gold) * policy.log_probs(params, prompts),
                                 -1))

    def batch_fn(d, rng):
        prompts = jnp.concatenate([d["train_a"], d["train_b"]])
        idx = jax.random.randint(rng, (bs,), 0, prompts.shape[0])
        return {"prompts": prompts[idx], "gold": d["gold"]}

    def loss_fn(params, batch):
        return xent(params, batch["prompts"], batch["gold"])

    def eval_fn(params, d):
        val = jnp.concatenate([d["val_a"], d["val_b"]])
        return {"val_xent": xent(params, val, d["gold"])}

    fit = fit_small(workdir, plots=bool(config.plots),
                    loss_fn=loss_fn, init_params=policy.mlp.init,
                    tx=optax.adam(float(config.sft.learning_rate)),
                    num_steps=int(config.sft.steps),
                    data={k: data[k] for k in ("train_a", "train_b", "gold")},
                    seeds=list(config.seeds), per_seed_data=True, batch_fn=batch_fn,
                    steps_per_log=int(config.sft.eval_every), eval_fn=eval_fn,
                    eval_data={k: data[k] for k in ("val_a", "val_b", "gold")},
                    select=("val_xent", "min"))
    return fit.best_params


def kl_grid(config) -> np.ndarray:
    """The KL sweep's coefficients, increasing, from the RLHF run's `rl.kl_coef`."""
    return np.geomspace(float(config.rl.kl_coef), float(config.kl_sweep.max_coef),
                        int(config.kl_sweep.num))


def train_rl(config, workdir, policy: Policy, data, sft_params, coefs) -> tuple:
    """REINFORCE + KL from theta_0 on training B prompts, one row per (seed, coefficient).

    Returns (final params [S * C, ...], history {metric: [S * C, E]} of the exact val/test
    metrics every `eval_every` updates)."""
    seeds = [int(s) for s in config.seeds]
    c = len(coefs)
    rep = lambda x: jnp.repeat(x, c, axis=0)  # noqa: E731 (rows seed-major)
    rows = {"prompts": rep(data["train_b"]), "ref_params": jax.tree.map(rep, sft_params),
            "gold": rep(data["gold"]), "kl_coef": jnp.tile(jnp.asarray(coefs, jnp.float32),
                                                           len(seeds))}
    evals = {"ref_params": rows["ref_params"], "gold": rows["gold"],
             **{k: rep(data[k]) for k in EVAL_SETS}}
    loss = prompted_reinforce_loss(policy.sample, policy.sequence_log_prob, gold_reward,
                                   num_prompts=int(config.rl.num_prompts),
                                   num_samples=int(config.rl.num_samples))

    def eval_fn(params, d):
        return exact_metrics(policy, params, d["ref_params"], d["gold"],
                             {k: d[k] for k in EVAL_SETS})

    keys = jnp.stack([jax.random.fold_in(jax.random.key(s), 1 + i)
                      for s in seeds for i in range(c)])
    row_ids = [s * 1000 + i for s in seeds for i in range(c)]
    fit = fit_small(workdir, plots=bool(config.plots),
                    loss_fn=loss, init_params=rows["ref_params"], per_seed_init=True,
                    tx=optax.adam(float(config.rl.learning_rate)),
                    num_steps=int(config.rl.steps), data=rows, seeds=row_ids,
                    seed_keys=keys, per_seed_data=True, batch_fn=rl_batch, has_aux=True,
                    steps_per_log=int(config.rl.eval_every), eval_fn=eval_fn, eval_data=evals)
    names = [k[len("eval/"):] for k in fit.history[0] if k.startswith("eval/")]
    history = {n: np.array([[row[f"seed_{r}/eval/{n}"] for row in fit.history]
                            for r in row_ids]) for n in names}
    return fit.params, history


def train_hma(config, workdir, policy: Policy, data, params0, params1, groups):
    """The alpha-only optimisation of HMA (mean alpha fixed), early-stopped on validation
    gold. Returns (alphas [S, K], val gold of the selected alphas [S])."""
    mean_alpha = float(config.hma.mean_alpha)

    def reward_fn(params, batch):
        return exact_metrics(policy, params, params, batch["gold"],
                             {"train_b": batch["train_b"]})["train_gold"]

    k = merge.num_groups(groups)
    loss = merge.hma_loss(groups, mean_alpha, reward_fn)

    def eval_fn(z, d):
        theta = merge.interpolate_groups(d["params0"], d["params1"],
                                         merge.constrained_alphas(z, mean_alpha), groups)
        return {"val_gold": exact_metrics(policy, theta, theta, d["gold"],
                                          {"val_b": d["val_b"]})["val_gold"]}

    both = {"params0": params0, "params1": params1, "gold": data["gold"]}
    fit = fit_small(workdir, plots=bool(config.plots),
                    loss_fn=loss, init_params=jnp.zeros((k,), jnp.float32),
                    tx=optax.adam(float(config.hma.learning_rate)),
                    num_steps=int(config.hma.steps), data={**both, "train_b": data["train_b"]},
                    seeds=list(config.seeds), per_seed_data=True, has_aux=True,
                    steps_per_log=int(config.hma.eval_every), eval_fn=eval_fn,
                    eval_data={**both, "val_b": data["val_b"]}, select=("val_gold", "max"))
    alphas = jax.vmap(lambda z: merge.constrained_alphas(z, mean_alpha))(fit.best_params)
    return np.asarray(alphas), fit.best_score


def layer_grouping(params_one_seed):
    """K = 3 groups of the 3-layer MLP: input layer (the 'embedding + layer 1'), middle, head."""
    return merge.layer_groups(params_one_seed, [["['layers'][0]"], ["['layers'][1]"],
                                                ["['layers'][2]"]])


# ---------------------------------------------------------------------------------------------
# One variant, every seed


def run_seeds(config: ml_collections.ConfigDict, workdir: str) -> dict[int, dict[str, float]]:
    if real.is_real(config):
        return {int(s): _run_real(config, os.path.join(workdir, f"seed_{s}"), int(s))
                for s in config.seeds}
    seeds = [int(s) for s in config.seeds]
    n = len(seeds)
    policy = Policy(config)
    data = stack_seeds([make_data(config, s) for s in seeds])
    theta0 = train_sft(config, os.path.join(workdir, "sft"), policy, data)

    coefs = kl_grid(config)
    c = len(coefs)
    final, hist = train_rl(config, os.path.join(workdir, "rlhf"), policy, data, theta0, coefs)
    hist = {k: v.reshape(n, c, -1) for k, v in hist.items()}  # [S, C, E]
    final = jax.tree.map(lambda x: x.reshape(n, c, *x.shape[1:]), final)
    theta_rl = jax.tree.map(lambda x: x[:, 0], final)  # the smallest coefficient

    # every merged model in one program: the uniform grid, uniform at alpha_bar, and HMA
    groups = layer_grouping(jax.tree.map(lambda x: x[0], theta0))
    hma_alphas, hma_val = train_hma(config, os.path.join(workdir, "hma"), policy, data,
                                    theta0, theta_rl, groups)
    alphas = np.round(np.arange(0.0, 1.0 + 1e-9, float(config.alpha_step)), 6)
    k = hma_alphas.shape[1]
    mean_alpha = float(config.hma.mean_alpha)
    ratios = np.concatenate([np.repeat(np.append(alphas, mean_alpha)[None, :, None], n, 0)
                             .repeat(k, 2), hma_alphas[:, None]], 1)  # [S, A + 2, K]

    @jax.jit
    @jax.vmap
    def merged_metrics(p0, p1, r, gold, e):
        def one(a):
            return exact_metrics(policy, merge.interpolate_groups(p0, p1, a, groups), p0, gold, e)
        return jax.vmap(one)(r)

    every = jax.device_get(merged_metrics(theta0, theta_rl, jnp.asarray(ratios, jnp.float32),
                                          data["gold"], {k: data[k] for k in EVAL_SETS}))
    every = {name: np.asarray(v) for name, v in every.items()}  # [S, A + 2]
    avg = {name: v[:, :len(alphas)] for name, v in every.items()}  # uniform averaging [S, A]
    at0 = {name: v[:, 0] for name, v in avg.items()}
    at_rl = {name: v[:, -1] for name, v in avg.items()}
    at_uni = {name: v[:, -2] for name, v in every.items()}
    at_hma = {name: v[:, -1] for name, v in every.items()}

    # early stopping: theta_0, then the RLHF run's checkpoints [S, 1 + E]; KL sweep: theta_0,
    # then the final points with the coefficient going down [S, 1 + C]
    def after_theta0(k, x):
        return np.concatenate([np.asarray(at0[k])[:, None], x], -1)

    early = {k: after_theta0(k, hist[k][:, 0]) for k in hist}
    kl_final = {k: after_theta0(k, hist[k][:, ::-1, -1]) for k in hist}
    paths = {"avg": avg, "early": early, "kl": kl_final}
    candidates = {"avg": alphas,
                  "early": np.arange(early["val_gold"].shape[-1]) * int(config.rl.eval_every),
                  "kl": np.concatenate([[-1.0], coefs[::-1]])}  # -1: theta_0

    levels = tradeoff.level_from_gain(at0["val_gold"], at_rl["val_gold"], LEVELS)  # [S, 3]
    matched = {}
    for m, path in paths.items():
        lo, hi, w, reached = tradeoff.match_level(path["val_gold"][:, None, :].repeat(
            len(LEVELS), 1), levels)  # [S, 3]
        matched[m] = {"lo": lo, "hi": hi, "weight": w, "reached": reached,
                      **{k: tradeoff.mix(path[k][:, None, :].repeat(len(LEVELS), 1), lo, hi, w)
                         for k in ("test_acc_a", "test_gold", "val_gold", "test_kl")}}

    out = {}
    for i, seed in enumerate(seeds):
        r = {"test_gold_sft": at0["test_gold"][i], "test_acc_a_sft": at0["test_acc_a"][i],
             "test_gold_rlhf": at_rl["test_gold"][i], "test_acc_a_rlhf": at_rl["test_acc_a"][i],
             "test_kl_rlhf": at_rl["test_kl"][i], "val_gold_sft": at0["val_gold"][i],
             "val_gold_rlhf": at_rl["val_gold"][i],
             "test_gold_hma": at_hma["test_gold"][i], "test_acc_a_hma": at_hma["test_acc_a"][i],
             "val_gold_hma": hma_val[i],
             "test_gold_uniform": at_uni["test_gold"][i],
             "test_acc_a_uniform": at_uni["test_acc_a"][i],
             "val_gold_uniform": at_uni["val_gold"][i]}
        for k in range(hma_alphas.shape[1]):
            r[f"chosen_hma_alpha_{k}"] = hma_alphas[i, k]
        for j, q in enumerate(LEVELS):
            r[f"val_level_q{q}"] = levels[i, j]
            for m in METHODS:
                mm = matched[m]
                r[f"test_acc_a_{m}_q{q}"] = mm["test_acc_a"][i, j]
                r[f"test_gold_{m}_q{q}"] = mm["test_gold"][i, j]
                r[f"test_kl_{m}_q{q}"] = mm["test_kl"][i, j]
                r[f"val_gold_{m}_q{q}"] = mm["val_gold"][i, j]
                r[f"reached_{m}_q{q}"] = float(mm["reached"][i, j])
                r[f"chosen_{m}_lo_q{q}"] = float(candidates[m][mm["lo"][i, j]])
                r[f"chosen_{m}_hi_q{q}"] = float(candidates[m][mm["hi"][i, j]])
                r[f"chosen_{m}_weight_q{q}"] = float(mm["weight"][i, j])
        for a_i, a in enumerate(alphas):  # the front (every alpha), for the plot
            if abs(a * 10 - round(a * 10)) < 1e-6:
                r[f"front_test_gold_a{a:.1f}"] = avg["test_gold"][i, a_i]
                r[f"front_test_acc_a_a{a:.1f}"] = avg["test_acc_a"][i, a_i]
        out[seed] = {k: float(v) for k, v in r.items()}
    return out


# ---------------------------------------------------------------------------------------------
# :real (module docstring): measured points of the averaging path of two HF checkpoints


def _real_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seeds = [0]
    real.add_real_fields(c, max_length=256)  # data.max_length: the prompt length P
    c.aligned = dict(path="")  # theta_1, the RLHF checkpoint (model.path is theta_0)
    c.rm = dict(path="")  # the reward model of the measured reward
    # the ability to keep: TRL language-modeling rows; tax.max_length: T of the texts
    c.tax = dict(path="", split="train", text_field="text", max_length=512)
    c.alphas = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)  # uniform averaging's grid
    c.hma = dict(num_groups=3, mean_alpha=0.5, spread=0.2)
    # greedy completions by default; eval.greedy=False samples at eval.temperature
    c.eval = dict(max_new_tokens=256, greedy=True, temperature=1.0, stop_tokens=(-1,))
    return c


def validate(config: ml_collections.ConfigDict) -> None:
    """:real: the paths, theta_1's architecture against theta_0's (config.json only), the reward
    checkpoint's kind, the alpha grid and the HMA profiles."""
    if not real.is_real(config):
        return
    real.require(config, "model.path", "aligned.path", "rm.path", "data.path", "tax.path",
                 what={"aligned.path": "the RLHF checkpoint folder, theta_1",
                       "rm.path": "a reward (sequence-classification) checkpoint folder",
                       "tax.path": "an HF dataset of texts, TRL language-modeling rows"})
    check_same_architecture(real.model_config(config),
                            real.model_config(config, config.aligned.path))
    pretrained.check_model_config(real.model_config(config, config.rm.path), "rm.path")
    rm_hf = pretrained.read_hf_config(config.rm.path)
    if pretrained.checkpoint_kind(rm_hf) != "reward":
        raise ValueError(f"rm.path={config.rm.path!r} is not a sequence-classification "
                         f"checkpoint ({rm_hf.get('architectures')}); a reward model is needed")
    alphas = [float(a) for a in config.alphas]
    if not alphas or any(not 0.0 <= a <= 1.0 for a in alphas) or alphas != sorted(set(alphas)):
        raise ValueError(f"alphas={tuple(config.alphas)} must be distinct increasing numbers "
                         "in [0, 1]")
    n_layers = pretrained.checkpoint_config(real.model_config(config)).n_layers
    k = config.hma.num_groups
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= n_layers + 2:
        raise ValueError(f"hma.num_groups={k!r} must be an int in [1, {n_layers + 2}] (the "
                         f"checkpoint's {n_layers} blocks, its embeddings and its head)")
    hma_profiles(k, float(config.hma.mean_alpha), float(config.hma.spread))
    if int(config.tax.max_length) < 2:
        raise ValueError(f"tax.max_length={config.tax.max_length} must be >= 2 (a predicted "
                         "token needs a prefix)")
    if not config.tax.text_field:
        raise ValueError("tax.text_field is empty; name the texts' column (TRL: 'text')")


def check_same_architecture(model0: dict, model1: dict) -> None:
    """One-line ValueError unless the checkpoints at `model0["path"]` (theta_0) and
    `model1["path"]` (theta_1) build the same model: equal TransformerConfigs as alignax reads
    them (`pretrained.checkpoint_config`); otherwise the message names the first config.json
    field that changes the model (`model_type`, then the family's `alignax.models.hf.MATH_KEYS`
    in theta_0's file order) and differs."""
    from alignax.models.hf import MATH_KEYS

    cfg0 = pretrained.checkpoint_config(model0)
    pretrained.check_model_config(model1, "aligned.path")
    cfg1 = pretrained.checkpoint_config(model1)
    if cfg0 == cfg1:
        return
    hf0, hf1 = (pretrained.read_hf_config(m["path"]) for m in (model0, model1))
    math = MATH_KEYS.get(hf0.get("model_type"), {})
    for key in ("model_type", *[k for k in hf0 if k in math],
                *sorted(k for k in math if k not in hf0)):
        if hf0.get(key) != hf1.get(key):
            raise ValueError(f"aligned.path={model1['path']!r}: config.json field {key!r} is "
                             f"{hf1.get(key)!r}, model.path has {hf0.get(key)!r} (theta_0 and "
                             f"theta_1 must share one architecture)")
    field = next(f.name for f in dataclasses.fields(cfg0)
                 if getattr(cfg0, f.name) != getattr(cfg1, f.name))
    raise ValueError(f"aligned.path={model1['path']!r}: its model differs from model.path's in "
                     f"{field} ({getattr(cfg1, field)!r} vs {getattr(cfg0, field)!r}; theta_0 "
                     f"and theta_1 must share one architecture)")


def hma_profiles(num_groups: int, mean_alpha: float, spread: float) -> np.ndarray:
    """HMA's candidate ratios [H, K]: alpha = mean_alpha + spread o for every o in {-1, 0, 1}^K
    with sum_k o_k = 0 (so mean_k alpha_k = mean_alpha, the constraint of Lin et al. 2024,
    Sec. 5), o = 0 (uniform averaging) first, then in lexicographic order of o.

    Raises:
      ValueError: a profile with a ratio outside [0, 1], or a negative spread.
    """
    if spread < 0:
        raise ValueError(f"hma.spread={spread} must be >= 0")
    if not (0.0 <= mean_alpha - spread and mean_alpha + spread <= 1.0):
        raise ValueError(f"hma.mean_alpha={mean_alpha} +- hma.spread={spread} leaves [0, 1]")
    offsets = [o for o in itertools.product((-1, 0, 1), repeat=int(num_groups))
               if sum(o) == 0 and any(o)]
    if spread == 0:
        offsets = []
    rows = [(0,) * int(num_groups), *offsets]
    return mean_alpha + spread * np.asarray(rows, np.float64)


def depth_groups(params, n_layers: int, num_groups: int):
    """The `merge.layer_groups` tree of K groups by depth of an (unstacked) causal LM's params:
    the L + 2 units [embeddings (token and position), block 0, ..., block L-1, everything else
    (final norm, LM head)], unit u in group floor(u K / (L + 2))."""
    units = n_layers + 2
    pattern = re.compile(r"\['decoder'\]\['layers'\]\[(\d+)\]")

    def assign(path: str) -> int:
        m = pattern.match(path)
        if m:
            u = 1 + int(m.group(1))
        elif path.startswith(("['decoder']['embed']", "['decoder']['pos_embed']")):
            u = 0
        else:
            u = units - 1
        return u * num_groups // units

    return merge.layer_groups(params, assign)


def _unstack_layers(params, n_layers: int):
    """A `scan_layers` params tree with its stacked blocks [L, ...] as L per-block trees (the
    layout of an unscanned model), so that `depth_groups` sees one leaf per block."""
    layers = params["decoder"]["layers"]
    blocks = {i: jax.tree.map(lambda x, i=i: x[i], layers) for i in range(n_layers)}
    return {**params, "decoder": {**params["decoder"], "layers": blocks}}


def _restack_layers(params, n_layers: int):
    blocks = [params["decoder"]["layers"][i] for i in range(n_layers)]
    stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *blocks)
    return {**params, "decoder": {**params["decoder"], "layers": stacked}}


def merged_params(params0, params1, alphas, groups, *, scanned: bool, n_layers: int):
    """theta(alpha): per depth group k, (1 - alphas[k]) theta_0 + alphas[k] theta_1
    (`merge.interpolate_groups`; alphas [K], all equal: uniform averaging), in theta_0's
    parameter dtypes. `groups` is the `depth_groups` tree of the unstacked layout."""
    if scanned:
        params0, params1 = (_unstack_layers(p, n_layers) for p in (params0, params1))
    out = merge.interpolate_groups(params0, params1, alphas, groups)
    out = jax.tree.map(lambda m, p: m.astype(p.dtype), out, params0)
    return _restack_layers(out, n_layers) if scanned else out


def tax_texts(config, tok) -> dict[str, dict[str, np.ndarray]]:
    """The held-out texts of `tax.path` (`real.held_out_split` with the `data.*` fractions),
    right-padded: {split: {"ids" [M, T] int32, "mask" [M, T] bool}}, T = `tax.max_length`; each
    text `[bos] + tokens` (bos when the tokenizer adds one), truncated to its first T ids.

    Raises:
      DataError: a row whose `tax.text_field` is missing or not a string (dataset:index).
    """
    from alignax.data import DataError, load_hf_dataset

    data = load_hf_dataset(config.tax.path, split=config.tax.split or None)
    name = os.path.basename(os.path.normpath(str(config.tax.path)))
    field, t = config.tax.text_field, int(config.tax.max_length)
    bos = [int(tok.bos_id)] if getattr(tok, "add_bos", False) else []
    _, val, test = real.held_out_split(len(data), config.data.eval_fraction,
                                       config.data.max_eval_rows)
    out = {}
    for split, rows in (("validation", val), ("test", test)):
        ids = np.full((len(rows), t), int(tok.pad_id), np.int32)
        mask = np.zeros((len(rows), t), bool)
        for j, i in enumerate(rows):
            text = data[int(i)].get(field)
            if not isinstance(text, str):
                problem = "missing" if text is None else f"expected a string, got {type(text)}"
                raise DataError(f"{name}:{int(i)}: field '{field}': {problem} (tax.path holds "
                                f"TRL language-modeling rows {{'{field}': ...}})", path=name,
                                line=int(i), field=field)
            row = (bos + list(tok.encode(text)))[:t]
            ids[j, :len(row)], mask[j, :len(row)] = row, True
        out[split] = {"ids": ids, "mask": mask}
    return out


def point_program(model, rm, *, groups, chunk: int, max_new_tokens: int, greedy: bool,
                  temperature: float, stop_tokens, pad_id: int, seed: int):
    """The jitted measurement of one merged model: `(params0, params1, rm_params, alphas [K],
    prompts {"prompt_ids", "prompt_mask" [N, P], "row" [N]}, texts {"ids", "mask" [M, T]}) ->
    {"reward" [N], "length" [N], "nll_sum" [M], "tokens" [M]}`: the RM score and the length of
    one completion per prompt, and each text's summed NLL -sum_t log pi(x_t | x_<t) over its
    predicted tokens and their count. Rows go in chunks of `chunk` (`real.map_in_chunks`); a
    chunk's sampling key is fold_in(key(seed), its first row)."""
    cfg = model.config
    rollout_fn = online.make_rollout(model, num_samples=1, max_new_tokens=max_new_tokens,
                                     temperature=0.0 if greedy else temperature,
                                     stop_tokens=stop_tokens, pad_id=pad_id)

    @jax.jit
    def program(params0, params1, rm_params, alphas, prompts, texts):
        params = merged_params(params0, params1, alphas, groups, scanned=cfg.scan_layers,
                               n_layers=cfg.n_layers)

        def answer(c):
            key = jax.random.fold_in(jax.random.key(seed), c["row"][0])
            rollout = rollout_fn(params, c["prompt_ids"], c["prompt_mask"], key)
            return {"reward": rm.apply(rm_params, rollout.ids, rollout.mask).astype(jnp.float32),
                    "length": rollout.response_mask.sum(-1)}

        def nll(c):
            ids, mask = c["ids"], c["mask"]
            logps = model.apply(params, ids, mask, logits_range=(0, ids.shape[1] - 1),
                                targets=ids[:, 1:])  # [C, T - 1]
            predicted = mask[:, 1:] & mask[:, :-1]
            return {"nll_sum": -jnp.sum(jnp.where(predicted, logps, 0.0), -1),
                    "tokens": predicted.sum(-1)}

        return {**real.map_in_chunks(answer, prompts, chunk),
                **real.map_in_chunks(nll, texts, chunk)}

    return program


def uniform_frontier(nll: np.ndarray, reward: np.ndarray, at: float) -> float:
    """The best reward of the uniform averaging path with NLL <= `at`: the points (nll_i,
    reward_i) [A] in alpha order and the segments between neighbours (linear in both, what a
    per-row random choice between the two models achieves); -inf when every point's NLL is
    above `at`."""
    best = -np.inf
    for i in range(len(nll)):
        if nll[i] <= at:
            best = max(best, float(reward[i]))
        if i + 1 < len(nll) and nll[i + 1] != nll[i]:
            w = (at - nll[i]) / (nll[i + 1] - nll[i])
            if 0.0 <= w <= 1.0:
                best = max(best, float((1 - w) * reward[i] + w * reward[i + 1]))
    return best


def _run_real(config, workdir: str, seed: int) -> dict[str, float]:
    """`:real` (module docstring): the uniform grid and HMA's profiles of theta_0 / theta_1,
    each measured on validation and test; HMA chosen on validation."""
    tok = real.tokenizer(config)
    prompts = real.prompt_data(config, tok, int(config.data.max_length))
    texts = tax_texts(config, tok)
    mesh = common.mesh_from(real.mesh_config(config))
    model, params0 = pretrained.model_and_params(real.model_config(config), "lm", seed=seed,
                                                 mesh=mesh)
    _, params1 = pretrained.model_and_params(real.model_config(config, config.aligned.path),
                                             "lm", seed=seed, mesh=mesh)
    if jax.tree.map(jnp.shape, params0) != jax.tree.map(jnp.shape, params1):
        raise ValueError(f"aligned.path={config.aligned.path!r}: its parameters differ in "
                         f"shape from model.path's")
    rm, rm_params = pretrained.model_and_params(real.model_config(config, config.rm.path),
                                                "reward", seed=seed, mesh=mesh)
    cfg = model.config
    view = jax.eval_shape(lambda p: _unstack_layers(p, cfg.n_layers), params0) \
        if cfg.scan_layers else params0
    k = int(config.hma.num_groups)
    groups = depth_groups(view, cfg.n_layers, k)
    program = point_program(
        model, rm, groups=groups, chunk=int(config.data.eval_batch_size),
        max_new_tokens=int(config.eval.max_new_tokens), greedy=bool(config.eval.greedy),
        temperature=float(config.eval.temperature),
        stop_tokens=real.stop_tokens(tok, config.eval.stop_tokens), pad_id=int(tok.pad_id),
        seed=seed)
    ids, pmask, n_val = real.held_out_prompts(prompts)
    prompt_in = {"prompt_ids": ids, "prompt_mask": pmask,
                 "row": np.arange(len(ids), dtype=np.int32)}
    text_in = {key: np.concatenate([texts["validation"][key], texts["test"][key]])
               for key in ("ids", "mask")}
    m_val = len(texts["validation"]["ids"])

    def measure(alphas) -> dict[str, float]:
        out = jax.device_get(program(params0, params1, rm_params,
                                     jnp.asarray(alphas, jnp.float32), prompt_in, text_in))
        point = {}
        for split, p_rows, t_rows in (("val", slice(0, n_val), slice(0, m_val)),
                                      ("test", slice(n_val, None), slice(m_val, None))):
            tokens = float(np.sum(out["tokens"][t_rows]))
            if tokens == 0:
                raise ValueError(f"tax.path: no {split} text has 2 or more tokens (nothing to "
                                 f"predict)")
            point.update({f"{split}_reward": float(np.mean(out["reward"][p_rows])),
                          f"{split}_length": float(np.mean(out["length"][p_rows])),
                          f"{split}_nll": float(np.sum(out["nll_sum"][t_rows])) / tokens,
                          f"{split}_tokens": tokens})
        return point

    grid = [float(a) for a in config.alphas]
    uniform = [{"alpha": a, **measure(np.full((k,), a))} for a in grid]
    profiles = hma_profiles(k, float(config.hma.mean_alpha), float(config.hma.spread))
    hma = {"alphas=(" + ", ".join(f"{a:g}" for a in row) + ")":
           {"alphas": [float(a) for a in row], **measure(row)} for row in profiles}
    name, record = choose_on_validation(hma, lambda p: p["val_reward"])
    chosen, at_mean = hma[name], next(iter(hma.values()))  # the first profile: uniform
    os.makedirs(workdir, exist_ok=True)
    if jax.process_index() == 0:
        with open(os.path.join(workdir, "selection.json"), "w") as f:
            json.dump({**record, "metric": "validation reward (HMA profile)"}, f, indent=1)
        with open(os.path.join(workdir, "frontier.json"), "w") as f:
            json.dump({"uniform": uniform, "hma": hma, "chosen_hma": name}, f, indent=1)

    result = {}
    for p in uniform:
        for key in ("val_reward", "val_nll", "test_reward", "test_nll"):
            result[f"{key}_alpha_{p['alpha']:g}"] = p[key]
    for label, p in (("hma", chosen), ("uniform", at_mean)):
        result.update({f"{key}_{label}": p[key]
                       for key in ("val_reward", "val_nll", "test_reward", "test_nll")})
    for i, a in enumerate(chosen["alphas"]):
        result[f"chosen_hma_alpha_{i}"] = a
    frontier = uniform_frontier(np.array([p["test_nll"] for p in uniform]),
                                np.array([p["test_reward"] for p in uniform]),
                                chosen["test_nll"])
    result["test_hma_frontier_reward"] = frontier if np.isfinite(frontier) else float("nan")
    result["test_hma_reward_gap"] = (chosen["test_reward"] - frontier
                                     if np.isfinite(frontier) else float("nan"))
    result["test_hma_above_uniform"] = float(chosen["test_reward"] > frontier)
    return result


# ---------------------------------------------------------------------------------------------
# Claims and plots


def _ps(results, metric):
    return protocol.per_seed(results, "tax", metric)


def level_advantages(results) -> dict:
    """{q: {seed: acc_a(avg) - max(acc_a(early), acc_a(kl))}} at each matched level."""
    out = {}
    for q in LEVELS:
        avg, early, kl = (_ps(results, f"test_acc_a_{m}_q{q}") for m in METHODS)
        out[q] = {s: avg[s] - max(early[s], kl[s]) for s in avg}
    return out


def claims(results) -> list[protocol.Claim]:
    if "default" in results:  # :real: measured points of two given checkpoints, metrics only
        return []
    adv = level_advantages(results)
    seeds = list(adv[LEVELS[0]])
    median = {s: float(np.median([adv[q][s] for q in LEVELS])) for s in seeds}

    def mean(metric):
        return float(np.mean(list(_ps(results, metric).values())))

    lines = []
    for q in LEVELS:
        d_e = protocol.decide("", {s: _ps(results, f"test_acc_a_avg_q{q}")[s]
                                   - _ps(results, f"test_acc_a_early_q{q}")[s] for s in seeds},
                              kind="comparative", at_least=0.0)
        d_k = protocol.decide("", {s: _ps(results, f"test_acc_a_avg_q{q}")[s]
                                   - _ps(results, f"test_acc_a_kl_q{q}")[s] for s in seeds},
                              kind="comparative", at_least=0.0)
        lines.append(
            f"q={q}: task-A acc avg {mean(f'test_acc_a_avg_q{q}'):.4f} (gold "
            f"{mean(f'test_gold_avg_q{q}'):.3f}), early {mean(f'test_acc_a_early_q{q}'):.4f} "
            f"(gold {mean(f'test_gold_early_q{q}'):.3f}), KL sweep "
            f"{mean(f'test_acc_a_kl_q{q}'):.4f} (gold {mean(f'test_gold_kl_q{q}'):.3f}); "
            f"avg - early {d_e.mean:+.4f} [{d_e.interval[0]:+.4f}, {d_e.interval[1]:+.4f}] "
            f"{d_e.status}, avg - KL {d_k.mean:+.4f} [{d_k.interval[0]:+.4f}, "
            f"{d_k.interval[1]:+.4f}] {d_k.status}" if d_e.interval and d_k.interval else
            f"q={q}: avg - early {d_e.mean:+.4f}, avg - KL {d_k.mean:+.4f}")
    gold_gap = {s: _ps(results, "test_gold_hma")[s] - _ps(results, "test_gold_uniform")[s]
                for s in seeds}
    alphas = ", ".join(f"alpha_{k} {mean(f'chosen_hma_alpha_{k}'):.3f}" for k in range(3))
    rl_gain = {s: _ps(results, "test_gold_rlhf")[s] - _ps(results, "test_gold_sft")[s]
               for s in seeds}
    tax = {s: _ps(results, "test_acc_a_sft")[s] - _ps(results, "test_acc_a_rlhf")[s]
           for s in seeds}
    return [
        protocol.decide(
            "the uniform-averaging front dominates the early-stopped and KL-sweep checkpoints "
            "at >= 2 of 3 matched reward levels: the per-seed median over the 3 levels of "
            "[test task-A accuracy of averaging - that of the better baseline] is >= 0",
            median, kind="comparative", at_least=0.0,
            measured={f"advantage_q{q}": float(np.mean(list(adv[q].values()))) for q in LEVELS},
            detail="levels at 25/50/75% of the RLHF model's validation gold gain; each "
                   "method's matched policy: the mixture of the first candidate reaching the "
                   "level on validation and the one before it, validation gold = the level; "
                   + "; ".join(lines)),
        protocol.compare(
            "at mean alpha .5 HMA's test gold reward >= uniform averaging's", results,
            ("tax", "test_gold_hma"), ("tax", "test_gold_uniform"), at_least=0.0,
            detail=f"HMA ratios (input, middle, head layer groups): {alphas}; mean gold gap "
                   f"{np.mean(list(gold_gap.values())):+.4f}"),
        protocol.compare(
            "at mean alpha .5 HMA's test task-A accuracy is no more than 1 point below uniform "
            "averaging's", results, ("tax", "test_acc_a_hma"), ("tax", "test_acc_a_uniform"),
            at_least=-0.01, detail=f"HMA ratios: {alphas}"),
        protocol.sanity(
            "RLHF raises the test gold over theta_0 and costs task-A accuracy (the alignment tax "
            "exists in the toy)", min(rl_gain.values()) > 0 and min(tax.values()) > 0,
            {"gold_gain": float(np.mean(list(rl_gain.values()))),
             "task_a_drop": float(np.mean(list(tax.values())))},
            "every seed"),
    ]


def plots(results, workdir: str) -> list[str]:
    """The alignment-forgetting front of uniform averaging (alpha in {0, .1, ..., 1}):
    test task-A accuracy against test gold, mean over seeds."""
    res = results.get("tax")
    if not res:
        return []
    seeds = list(res["per_seed"])
    grid = [f"{a:.1f}" for a in np.arange(0, 1.01, 0.1)]
    gold = np.array([[res["per_seed"][s][f"front_test_gold_a{a}"] for a in grid]
                     for s in seeds]).mean(0)
    acc = np.array([[res["per_seed"][s][f"front_test_acc_a_a{a}"] for a in grid]
                    for s in seeds])
    out = os.path.join(workdir, "plots", "alignment_tax_front.png")
    order = np.argsort(gold)
    plot_curves({"uniform averaging": (gold[order], acc.mean(0)[order], acc.std(0)[order])},
                out, title="alignment tax: averaging front (alpha 0..1)",
                xlabel="test gold reward (task B)", ylabel="test task-A accuracy")
    return [out]
