"""RewardDance: generative yes/no judges of growing size as the reward of diffusion RL; final gold
reward and reward variance (the reward-hacking diagnostic) against the judge's size.

Paper: Wu, Gao, Ye, Li, Li, Guo, Liu, Xue, Hou, Liu, Zeng, Huang 2025, "RewardDance: Reward
Scaling in Visual Generation" (arXiv 2509.08826).

Mechanism (`alignax.rewards.generative_judge`): the reward of a generated sample is a judge's
probability of the answer token "yes" to "does the generated sample beat the reference?",
r = P_theta("yes" | x_gen, x_ref), trained by cross-entropy on yes/no answers of
pairwise-vs-reference judgements; in RL a sample's reward is the mean P("yes") against K
reference samples. The paper scales the judge (1B to 26B) and reports that larger judges give
better generators and keep a high reward variance across samples during RL (less hacking,
less mode collapse).

Setting (notes (d), a 2-D analogue: the notes call it weak):
- generator: a 2-D DDPM (T = 20 linear-schedule timesteps, `set_alpha_to_one=False`, K = 19
  stochastic steps 19 .. 1, DDIM with eta = 1 = DDPM, x0_hat clipped to [-3, 3]; MLP
  eps-denoiser, hidden 64, 2 residual blocks) pretrained by L_simple on 4,096 points of the
  8-Gaussian ring (radius 2, std 0.1; `alignax.algorithms.diffusion.pretrain`, the seeds vmapped,
  cached with `cached_run` in `<workdir>/../cache`).
- gold score (smooth, several peaks): g(x) = cos(3 theta(x)) - `gold.radial` (|x| - 2)^2; its
  maxima lie on the ring at 0, 120 and 240 degrees (mode 0 and between modes 2/3 and 5/6).
- judge data (the SAME for every size): `judge.num_pairs` = 1,024 training pairs per seed;
  x_ref a ring point, x_gen a ring point moved by N(0, (u `judge.spread`)^2 I), u ~ U(0, 1)
  (the pairs cover the ring and a band around it), label ~ Bernoulli(sigmoid((g(x_gen) -
  g(x_ref)) / `judge.temperature`)) (`simulate_labels`); 512 validation and 512 test pairs
  from the seed's validation and test data seeds.
- judges: `make_judge(width=w, depth=2, relu)` for w in `judge.widths` = (8, 64, 512): 130,
  4,610 and 266,242 parameters on 2-D points. Each is trained by the answer cross-entropy with
  Adam (`fit_small`, seeds vmapped, one program per width); its step is chosen by the
  validation pairs' cross-entropy (early stopping, the same schedule for every width).
- RL: DDPO (`alignax.algorithms.diffusion.ddpo_loss` through `fit_small`), the reward the mean
  P("yes") against `rl.num_refs` = 8 reference points (ring points of the seed's training data
  seed, fixed), B = 64 samples per update, `rl.updates` = 120 on-policy updates, Adam, clip
  1e-4, advantage clip 5. Every (width, seed) run is one row of ONE vmapped program: the
  judges are embedded in the widest one (`generative_judge.widen`: exact, padded units are
  zero) and passed as data, so every size gets the same program, steps and learning rate;
  rows of one seed share its noise stream (common random numbers across sizes).
- Recorded per update (a `RewardTrace` carried as the loss state): the proxy reward's mean and
  std across the update's samples, and the mean gold of the same samples
  (`<workdir>/toy/rl_trace.json`).

Splits and selection (`alignax.tasks.splits.split_seeds`): seed s pretrains on and draws its
judge pairs and references from data seed 3s, its validation pairs and validation chains from
3s + 1, its test pairs and test chains from 3s + 2. The DDPO learning rate is chosen from
`rl.lr_grid` by the mean over seeds AND sizes of the final validation gold (256 chains per
seed; one learning rate for every size, selection.json); claims use the test chains of that
run.

Metrics (per seed, `_w<w>` per width): `test_gold_w<w>` (mean gold of 256 test chains after
RL), `test_proxy_w<w>` and `test_reward_std_w<w>` (mean and std of the judge's reward across
those samples), `test_top_mode_w<w>` (share of the most popular of the 8 ring directions),
`train_final_std_w<w>` / `train_std_ratio_w<w>` (the per-update trace: mean std over the last
10% of updates, and its ratio to the first 10%), `judge_test_accuracy_w<w>` (gold-ordered
test pairs), `judge_val_ce_w<w>`, `judge_params_w<w>`, `initial_train_gold` (the gold of the
first update's samples: the pretrained model), and the paired
`test_gold_gain_<a>_<b>` and `test_log2_var_ratio` = log2(var_largest / var_smallest).

Claims (5 seeds, paired 95% t intervals; the notes' pass criteria made measurable):
(1, comparative) the final test gold rises from the small to the mid judge:
test_gold(w=64) - test_gold(w=8) > 0;
(2, comparative) and from the mid to the large judge: test_gold(w=512) - test_gold(w=64) > 0
(both together: monotone in size);
(3, threshold) the largest judge's final reward variance across test samples is at least twice
the smallest's: log2(var(w=512) / var(w=8)) >= 1.
Sanity (never counted): every judge orders gold-ordered test pairs above chance.

Reading the full run (seeds 0-4; lr 3e-4 chosen on validation from (3e-4, 1e-3, 3e-3): every
learning rate LOWERED the validation gold, the smallest least): the judges order test pairs at
0.83 / 0.88 / 0.88 (w = 8 / 64 / 512; validation CE 0.46 / 0.38 / 0.40, the widest stopped
early at about 560 steps). DDPO drives the proxy to 0.91 / 0.92 / 0.96 while the test gold
falls from 0.00 (pretrained) to -1.10 / -0.72 / -0.68: every size is hacked and every run
collapses onto one ring direction (top mode share 0.99 / 0.90 / 0.99). The means are ordered
by size, but which mode a seed collapses onto decides its gold (per-seed std 1-2), so the gold
differences (+0.37 [-2.25, 3.00], +0.04 [-0.78, 0.86]) and the variance ratio (log2 1.85
[-2.63, 6.32]) are all INCONCLUSIVE; the reward std across samples fell to 10-18% of its
initial value for every size.

    alignax run experiments/reward_dance.py            # full setting, 5 seeds
    alignax run experiments/reward_dance.py:smoke      # seconds, for the tests

`:real`: the same mechanism on a user's data without a language model. `data.path` is a .npy of
points [N, D] (or a folder with points.npy) that the denoiser is pretrained on (the last
`data.eval_fraction` rows held out; standardised by the training rows), and `data.pairs_path`
a .npz with `x_gen` [P, D], `x_ref` [P, D] (points in the data's units) and `label` [P]
(1 = x_gen beats x_ref): the user's pairwise-vs-reference judgements. The last
`data.eval_fraction` of the pairs are validation / test pairs (`real.held_out_split`); the
judges of `judge.widths` are trained on the rest, and DDPO runs with each; the references are
held-out points. No gold is known: the metrics are the judges' rewards (mean and std across
samples, the per-update trace) and the judges' held-out accuracy; no claim is evaluated.

    alignax run experiments/reward_dance.py:real --workdir runs/reward_dance \\
        --config.data.path=/data/points.npy --config.data.pairs_path=/data/pairs.npz
"""

from __future__ import annotations

import hashlib
import json
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from alignax import protocol
from alignax.algorithms import diffusion as dt
from alignax.algorithms import real
from alignax.algorithms.cached import cached_run
from alignax.data.errors import DataError
from alignax.models import diffusion as dm
from alignax.rewards import generative_judge as gj
from alignax.tasks.diffusion_data import point_splits, ring_centers, ring_of_gaussians
from alignax.tasks.splits import split_seeds
from alignax.train.plots import plot_curves
from alignax.train.small import fit_small, minibatch_fn


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    mode = real.config_mode(arg)
    smoke = mode == "smoke"
    c = ml_collections.ConfigDict()
    c.seeds = [0] if smoke or mode == "real" else [0, 1, 2, 3, 4]
    c.variants = {"toy": {}}
    c.model = dict(hidden=16 if smoke else 64, n_blocks=1 if smoke else 2,
                   time_dim=8 if smoke else 32)
    c.diffusion = dict(num_timesteps=20, num_steps=4 if smoke else 19, last=1, eta=1.0,
                       clip_x0=3.0)
    c.pretrain = dict(steps=20 if smoke else 3000, batch_size=64 if smoke else 256,
                      learning_rate=2e-3, steps_per_log=10 if smoke else 500)
    c.judge = dict(widths=(4, 8, 16) if smoke else (8, 64, 512), depth=2,
                   num_pairs=64 if smoke else 1024, num_eval_pairs=32 if smoke else 512,
                   spread=0.5, temperature=0.3, steps=10 if smoke else 1000,
                   batch_size=32 if smoke else 64, learning_rate=3e-3,
                   steps_per_log=5 if smoke else 50)
    c.rl = dict(updates=4 if smoke else 120, batch_size=16 if smoke else 64,
                num_refs=4 if smoke else 8, lr_grid=(1e-3,) if smoke else (3e-4, 1e-3, 3e-3),
                clip=1e-4, advantage_clip=5.0, steps_per_log=2 if smoke else 12,
                trace_window=0.1)
    c.eval = dict(num_samples=16 if smoke else 256)
    c.cache_dir = ""  # "" -> <workdir>/../cache (the pretrained denoisers)
    if mode == "real":
        c.data = dict(path="", pairs_path="", eval_fraction=0.1, max_eval_rows=256)
        c.pretrain.steps, c.pretrain.steps_per_log = 2000, 500
        return c
    c.data = dict(num_train=256 if smoke else 4096, num_modes=8, ring_radius=2.0, std=0.1)
    c.gold = dict(radial=1.0)
    return c


def is_real(config) -> bool:
    return "path" in config.data


def validate(config) -> None:
    j, rl = config.judge, config.rl
    if not j.widths or any(int(w) < 1 for w in j.widths) or list(j.widths) != sorted(
            set(int(w) for w in j.widths)):
        raise ValueError(f"judge.widths={tuple(j.widths)} must be increasing positive ints")
    if int(rl.updates) < 1 or int(rl.updates) % int(rl.steps_per_log):
        raise ValueError(f"rl.updates={rl.updates} must be a positive multiple of "
                         f"rl.steps_per_log={rl.steps_per_log}")
    if int(j.steps) % int(j.steps_per_log):
        raise ValueError(f"judge.steps={j.steps} must be a multiple of judge.steps_per_log="
                         f"{j.steps_per_log}")
    if not rl.lr_grid or any(float(x) <= 0 for x in rl.lr_grid):
        raise ValueError(f"rl.lr_grid={rl.lr_grid} must be positive learning rates")
    if not 0 < float(rl.trace_window) <= 1:
        raise ValueError(f"rl.trace_window={rl.trace_window} must be in (0, 1]")
    if is_real(config):
        if not config.data.path:
            raise ValueError("data.path is required by the :real config (a .npy of points "
                             "[N, D]); pass --config.data.path=...")
        if not config.data.pairs_path:
            raise ValueError("data.pairs_path is required by the :real config (a .npz with "
                             "x_gen, x_ref, label); pass --config.data.pairs_path=...")
        if not 0 < float(config.data.eval_fraction) < 0.5:
            raise ValueError(f"data.eval_fraction={config.data.eval_fraction} must be in "
                             "(0, 0.5)")


# ----------------------------------------------------------------------------- the world


def timesteps(config) -> np.ndarray:
    d = config.diffusion
    return dm.timestep_sequence(int(d.num_timesteps), int(d.num_steps), last=int(d.last))


def denoiser(config, dim: int) -> dm.Denoiser:
    m = config.model
    return dm.make_denoiser(dm.DenoiserConfig(kind="mlp", data_shape=(dim,),
                                              hidden=int(m.hidden), n_blocks=int(m.n_blocks),
                                              time_dim=int(m.time_dim)))


def schedule(config) -> dm.Schedule:
    return dm.make_schedule("linear", int(config.diffusion.num_timesteps),
                            set_alpha_to_one=False)


def judge_of(config, dim: int, width: int) -> gj.Judge:
    return gj.make_judge(gj.JudgeConfig(data_shape=(dim,), width=int(width),
                                        depth=int(config.judge.depth)))


def gold_fn(radial: float, radius: float = 2.0):
    """g(x) = cos(3 theta) - radial (|x| - radius)^2 of points x [B, 2] -> [B]."""
    def gold(x):
        r = jnp.linalg.norm(x, axis=-1)
        cos3 = jnp.cos(3.0 * jnp.arctan2(x[:, 1], x[:, 0]))
        return cos3 - radial * jnp.square(r - radius)

    return gold


def _toy_pairs(config, gold, data_seed: int, n: int) -> dict:
    """n pairwise-vs-reference judgements of data seed `data_seed` (module docstring)."""
    d, j = config.data, config.judge
    mix = dict(num_modes=int(d.num_modes), radius=float(d.ring_radius), std=float(d.std))
    ref = ring_of_gaussians(n, seed=data_seed * 7 + 1, **mix).points
    gen = ring_of_gaussians(n, seed=data_seed * 7 + 2, **mix).points
    rng = np.random.default_rng([data_seed, 34])
    gen = gen + float(j.spread) * rng.uniform(0, 1, (n, 1)) * rng.standard_normal((n, 2))
    gen = gen.astype(np.float32)
    g_gen, g_ref = np.asarray(gold(jnp.asarray(gen))), np.asarray(gold(jnp.asarray(ref)))
    label = gj.simulate_labels(jax.random.key(data_seed), g_gen, g_ref,
                               temperature=float(j.temperature))
    return {"x_gen": gen, "x_ref": ref, "label": np.asarray(label, np.float32),
            "gold_label": (g_gen > g_ref).astype(np.float32)}


def world(config) -> dict:
    """Per-seed pretraining points [S, N, D] (model space), judge pairs (train / val / test,
    [S, P, ...], model space), references [S, K, D], eval data seeds [S, 2], the
    standardisation (mean, std) and a digest of user data."""
    seeds = [int(s) for s in config.seeds]
    k = int(config.rl.num_refs)
    if is_real(config):
        return _real_world(config)
    d = config.data
    gold = gold_fn(float(config.gold.radial), float(d.ring_radius))
    x0, pairs, refs = [], {"train": [], "val": [], "test": []}, []
    n, ne = int(config.judge.num_pairs), int(config.judge.num_eval_pairs)
    for s in seeds:
        st = split_seeds(s)
        sp = point_splits(s, (int(d.num_train), 1, 1), num_modes=int(d.num_modes),
                          radius=float(d.ring_radius), std=float(d.std))
        x0.append(sp.train.points)
        pairs["train"].append(_toy_pairs(config, gold, st.train, n))
        pairs["val"].append(_toy_pairs(config, gold, st.validation, ne))
        pairs["test"].append(_toy_pairs(config, gold, st.test, ne))
        refs.append(ring_of_gaussians(k, seed=st.train * 7 + 3, num_modes=int(d.num_modes),
                                      radius=float(d.ring_radius), std=float(d.std)).points)
    eval_seeds = np.array([[split_seeds(s).validation, split_seeds(s).test] for s in seeds],
                          np.int32)
    stack = lambda rows: {key: np.stack([r[key] for r in rows]) for key in rows[0]}  # noqa
    return {"x0": np.stack(x0), "pairs": {k_: stack(v) for k_, v in pairs.items()},
            "refs": np.stack(refs), "eval_seeds": eval_seeds, "gold": gold,
            "mean": np.zeros(2, np.float32), "std": np.ones(2, np.float32), "digest": "",
            "centers": ring_centers(int(d.num_modes), float(d.ring_radius))}


def pretrained(config, workdir: str, w: dict):
    """The denoisers of every seed ([S, ...] leaves), pretrained once per config."""
    dim = w["x0"].shape[-1]
    den, sch = denoiser(config, dim), schedule(config)
    p = config.pretrain
    key = {"model": config.model.to_dict(), "diffusion": config.diffusion.to_dict(),
           "pretrain": p.to_dict(), "seeds": [int(s) for s in config.seeds],
           "data": {k: v for k, v in config.data.to_dict().items() if k != "pairs_path"},
           "digest": w["digest"]}

    def train(_, path):
        return dt.pretrain(path, den, sch, {"x0": jnp.asarray(w["x0"])},
                           num_steps=int(p.steps), batch_size=int(p.batch_size),
                           learning_rate=float(p.learning_rate),
                           seeds=[int(s) for s in config.seeds], per_seed_data=True,
                           steps_per_log=int(p.steps_per_log), plots=False).params

    cache = config.cache_dir or os.path.join(os.path.dirname(os.path.abspath(workdir)),
                                             "cache")
    return cached_run("reward_dance_pretrain", key, train, cache_dir=cache)


# ----------------------------------------------------------------------------- the judges


def _ce_selection(judge: gj.Judge, val: dict, steps_per_log: int) -> dict:
    """fit_small kwargs: early stopping on the validation pairs' answer cross-entropy."""
    def val_metrics(params, v):
        logits = judge.apply(params, v["x_gen"], v["x_ref"])
        p_yes = gj.yes_probability(logits)
        return {"val_ce": gj.answer_loss(logits, v["label"]).mean(),
                "val_accuracy": jnp.mean(((p_yes > 0.5) == (v["label"] > 0.5)).astype(
                    jnp.float32))}

    return dict(eval_fn=val_metrics, select=("val_ce", "min"),
                eval_data={k: jnp.asarray(val[k]) for k in ("x_gen", "x_ref", "label")},
                steps_per_log=int(steps_per_log))


def train_judges(config, workdir: str, w: dict) -> dict:
    """Judges of every width on the same pairs: {width: (params [S, ...], selection)}."""
    j, seeds = config.judge, [int(s) for s in config.seeds]
    dim = w["refs"].shape[-1]
    train = {k: jnp.asarray(w["pairs"]["train"][k]) for k in ("x_gen", "x_ref", "label")}
    out = {}
    for width in j.widths:
        judge = judge_of(config, dim, int(width))
        fit = fit_small(os.path.join(workdir, f"judge_w{int(width)}"),
                        loss_fn=gj.judge_loss(judge.apply), has_aux=True,
                        init_params=judge.init, tx=optax.adam(float(j.learning_rate)),
                        num_steps=int(j.steps), data=train, seeds=seeds, per_seed_data=True,
                        batch_fn=minibatch_fn(int(j.batch_size)), checkpoint_every=1000,
                        plots=False, **_ce_selection(judge, w["pairs"]["val"],
                                                     int(j.steps_per_log)))
        out[int(width)] = (fit.best_params, fit.best_step, fit.best_score)
    return out


def judge_metrics(config, judges: dict, w: dict) -> dict:
    """Per width and seed: parameter count, validation CE, test accuracy on gold-ordered
    pairs (labels when no gold is known)."""
    dim = w["refs"].shape[-1]
    test = w["pairs"]["test"]
    truth = jnp.asarray(test.get("gold_label", test["label"]))
    out = {}
    for width, (params, step, score) in judges.items():
        judge = judge_of(config, dim, width)
        acc = jax.jit(jax.vmap(lambda p, a, b, y: jnp.mean(
            (gj.yes_probability(judge.apply(p, a, b)) > 0.5) == (y > 0.5))))(
            params, jnp.asarray(test["x_gen"]), jnp.asarray(test["x_ref"]), truth)
        one = jax.tree.map(lambda a: a[0], params)
        out[width] = {"params": gj.num_params(one), "test_accuracy": np.asarray(acc),
                      "val_ce": np.asarray(score), "step": np.asarray(step)}
    return out


# ----------------------------------------------------------------------------- RL


def eval_fn(config, w: dict, den, sch, judge: gj.Judge):
    """`(params, row data) -> metrics` of one row: gold (when known), the judge's reward mean
    and std, and the top ring-direction share of `eval.num_samples` fresh validation and test
    chains."""
    seq, d = timesteps(config), config.diffusion
    n, dim = int(config.eval.num_samples), w["x0"].shape[-1]
    gold = w["gold"]
    mean, std = jnp.asarray(w["mean"]), jnp.asarray(w["std"])
    centers = None if w.get("centers") is None else jnp.asarray(w["centers"])

    def one(params, e, data_seed):
        key_x, key_noise = jax.random.split(jax.random.key(data_seed))
        x_T = jax.random.normal(key_x, (n, dim), jnp.float32)
        return x_T, jax.vmap(lambda i: jax.random.fold_in(key_noise, i))(jnp.arange(n))

    def evaluate(params, e):
        # the validation and test chains in one sampler call (row-wise keys)
        x_T, keys = jax.vmap(lambda s: one(params, e, s))(e["eval_seeds"])
        x0 = dm.sample(den.apply, params, sch, keys.reshape(-1), x_T.reshape(-1, dim), seq,
                       eta=float(d.eta), clip_x0=float(d.clip_x0)).final.reshape(2, n, dim)
        res = {}
        for i, split in enumerate(("val", "test")):
            r = gj.reference_reward(judge.apply, e["judge"], x0[i], e["refs"])
            res[f"{split}_proxy"], res[f"{split}_reward_std"] = r.mean(), r.std()
            x = x0[i] * std + mean
            if gold is not None:
                res[f"{split}_gold"] = gold(x).mean()
            if centers is not None:
                dist = jnp.linalg.norm(x[:, None] - centers[None], axis=-1)
                res[f"{split}_top_mode"] = jax.nn.one_hot(
                    dist.argmin(-1), centers.shape[0]).mean(0).max()
        return res

    return evaluate


def rl_loss(config, w: dict, den, sch, judge: gj.Judge):
    """`loss_fn(params, batch, trace) -> (loss, metrics, trace)`: one DDPO update with the row's
    judge as reward (`batch["judge"]`, `batch["refs"]`); the trace records the update's reward
    mean and std across samples and their mean gold.

    `ddpo_loss` calls the reward function once, on the update's final samples, inside this
    function's trace; the closure keeps those samples and rewards so that the update's trace
    entry describes exactly the batch that was trained on."""
    rl, d = config.rl, config.diffusion
    gold = w["gold"]
    mean, std = jnp.asarray(w["mean"]), jnp.asarray(w["std"])
    dim = w["x0"].shape[-1]

    def loss_fn(params, batch, trace):
        seen = {}

        def reward(x, cond=None):
            seen["x"] = x
            seen["r"] = gj.reference_reward(judge.apply, batch["judge"], x, batch["refs"])
            return seen["r"]

        ddpo = dt.ddpo_loss(den, sch, timesteps(config), reward,
                            batch_size=int(rl.batch_size), data_shape=(dim,), method="ddim",
                            eta=float(d.eta), clip=float(rl.clip),
                            advantage_clip=float(rl.advantage_clip), clip_x0=float(d.clip_x0))
        loss, metrics = ddpo(params, batch)
        g = None if gold is None else gold(seen["x"] * std + mean)
        trace = gj.trace_update(trace, seen["r"], g)
        metrics = {**metrics, "reward_std": seen["r"].std()}
        if g is not None:
            metrics["gold"] = g.mean()
        return loss, metrics, trace

    return loss_fn


def run_rl(config, workdir: str, w: dict, params0, judges: dict):
    """DDPO with every judge: rows = widths x seeds, one program per learning rate; the
    learning rate chosen on validation. Returns (fit, chosen lr name, record, rows)."""
    seeds = [int(s) for s in config.seeds]
    widths = [int(x) for x in config.judge.widths]
    dim = w["x0"].shape[-1]
    den, sch = denoiser(config, dim), schedule(config)
    wide = judge_of(config, dim, widths[-1])
    stacked = [jax.vmap(lambda p: gj.widen(p, widths[-1]))(judges[x][0]) for x in widths]
    judge_rows = jax.tree.map(lambda *a: jnp.concatenate(a), *stacked)     # [W S, ...]
    rep = lambda a: jnp.concatenate([jnp.asarray(a)] * len(widths))  # noqa: E731
    data = {"judge": judge_rows, "refs": rep(w["refs"])}
    eval_data = {**data, "eval_seeds": rep(w["eval_seeds"])}
    init = jax.tree.map(rep, params0)
    keys = rep(jnp.stack([jax.random.key(s) for s in seeds]))  # common noise across widths
    rows = [(width, s) for width in widths for s in seeds]
    rl = config.rl
    evaluate = eval_fn(config, w, den, sch, wide)
    loss = rl_loss(config, w, den, sch, wide)
    fits = {}
    for lr in rl.lr_grid:
        name = f"lr={float(lr):g}"
        fits[name] = fit_small(
            os.path.join(workdir, name), loss_fn=loss, init_params=init, per_seed_init=True,
            tx=optax.adam(float(lr)), num_steps=int(rl.updates), seeds=list(range(len(rows))),
            seed_keys=keys, data=data, per_seed_data=True,
            batch_fn=lambda d, rng: {"key": rng, **d}, loss_state=gj.trace_init(
                int(rl.updates)), steps_per_log=int(rl.steps_per_log), checkpoint_every=1000,
            eval_fn=evaluate, eval_data=eval_data, plots=False)
    metric = "val_gold" if w["gold"] is not None else "val_proxy"
    chosen, record = protocol.choose_on_validation(
        fits, lambda fit: float(np.mean([fit.history[-1][f"seed_{i}/eval/{metric}"]
                                         for i in range(len(rows))])))
    record["score"] = f"mean over seeds and judge sizes of the final {metric}"
    return fits[chosen], chosen, record, rows


# ----------------------------------------------------------------------------- the run


def run_seeds(config: ml_collections.ConfigDict, workdir: str) -> dict[int, dict[str, float]]:
    validate(config)
    seeds = [int(s) for s in config.seeds]
    widths = [int(x) for x in config.judge.widths]
    w = world(config)
    params0 = pretrained(config, workdir, w)
    judges = train_judges(config, workdir, w)
    jm = judge_metrics(config, judges, w)
    fit, chosen, record, rows = run_rl(config, workdir, w, params0, judges)
    summary = jax.device_get(gj.trace_summary(fit.loss_state, window=max(1, int(round(
        float(config.rl.trace_window) * int(config.rl.updates))))))
    trace = jax.device_get(fit.loss_state)
    has_gold = w["gold"] is not None
    out = {s: {"learning_rate": float(chosen.split("=")[1])} for s in seeds}
    for r, (width, s) in enumerate(rows):
        i = seeds.index(s)
        res, last = out[s], fit.history[-1]
        names = ["proxy", "reward_std"] + (["gold"] if has_gold else []) + (
            ["top_mode"] if w.get("centers") is not None else [])
        for split in ("val", "test"):
            for m in names:
                res[f"{split}_{m}_w{width}"] = float(last[f"seed_{r}/eval/{split}_{m}"])
        for m in ("final_std", "std_ratio", "final_mean", "initial_std", "initial_mean") + (
                ("final_gold",) if has_gold else ()):
            res[f"train_{m}_w{width}"] = float(summary[m][r])
        res[f"judge_params_w{width}"] = float(jm[width]["params"])
        res[f"judge_test_accuracy_w{width}"] = float(jm[width]["test_accuracy"][i])
        res[f"judge_val_ce_w{width}"] = float(jm[width]["val_ce"][i])
        res[f"judge_step_w{width}"] = float(jm[width]["step"][i])
        if has_gold and width == widths[0]:  # the first update samples the pretrained model
            res["initial_train_gold"] = float(trace.gold[r, 0])
        if "train_points" in w:
            res["train_points"], res["train_pairs"] = w["train_points"], w["train_pairs"]
    small, large = widths[0], widths[-1]
    for s in seeds:
        res = out[s]
        var = {x: max(res[f"test_reward_std_w{x}"] ** 2, 1e-30) for x in (small, large)}
        res["test_log2_var_ratio"] = float(np.log2(var[large] / var[small]))
        if has_gold:
            for a, b in zip(widths[:-1], widths[1:]):
                res[f"test_gold_gain_{a}_{b}"] = res[f"test_gold_w{b}"] - res[f"test_gold_w{a}"]
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, "selection.json"), "w") as f:
        json.dump(record, f, indent=1)
    with open(os.path.join(workdir, "rl_trace.json"), "w") as f:
        json.dump({f"w{width}/seed_{s}": {"proxy_mean": _floats(trace.mean[r]),
                                          "proxy_std": _floats(trace.std[r]),
                                          "gold_mean": _floats(trace.gold[r])}
                   for r, (width, s) in enumerate(rows)}, f)
    return out


def _floats(a) -> list:
    return [None if not np.isfinite(v) else round(float(v), 6) for v in np.asarray(a)]


# ----------------------------------------------------------------------------- :real


def load_points(path: str) -> np.ndarray:
    """Points [N, D] float32 from a .npy file (or a folder holding points.npy)."""
    if os.path.isdir(path):
        path = os.path.join(path, "points.npy")
    if not (os.path.isfile(path) and path.endswith(".npy")):
        raise DataError(f"data.path={path!r} is not a .npy file (or a folder with points.npy)")
    x = np.load(path, allow_pickle=False)
    if x.ndim != 2 or x.shape[0] < 3 or not np.issubdtype(x.dtype, np.number):
        raise DataError(f"{path}: expected numeric points [N >= 3, D], got {x.dtype} "
                        f"{x.shape}")
    if not np.all(np.isfinite(x)):
        raise DataError(f"{path}: non-finite values")
    return x.astype(np.float32)


def load_pairs(path: str, dim: int) -> dict:
    """A user's pairwise-vs-reference judgements: .npz with x_gen [P, D], x_ref [P, D] and
    label [P] in {0, 1} (1: x_gen beats x_ref)."""
    if not (os.path.isfile(path) and path.endswith(".npz")):
        raise DataError(f"data.pairs_path={path!r} is not a .npz file")
    with np.load(path, allow_pickle=False) as f:
        missing = [k for k in ("x_gen", "x_ref", "label") if k not in f.files]
        if missing:
            raise DataError(f"{path}: missing arrays {missing} (needs x_gen, x_ref, label)")
        x_gen, x_ref, label = (np.asarray(f[k]) for k in ("x_gen", "x_ref", "label"))
    p = len(label)
    if x_gen.shape != (p, dim) or x_ref.shape != (p, dim) or label.ndim != 1:
        raise DataError(f"{path}: x_gen and x_ref must be [P, {dim}] and label [P], got "
                        f"{x_gen.shape}, {x_ref.shape}, {label.shape}")
    if not np.all(np.isin(label, (0, 1))):
        raise DataError(f"{path}: label must hold 0 / 1 (1: x_gen beats x_ref)")
    if not (np.all(np.isfinite(x_gen)) and np.all(np.isfinite(x_ref))):
        raise DataError(f"{path}: non-finite values")
    return {"x_gen": x_gen.astype(np.float32), "x_ref": x_ref.astype(np.float32),
            "label": label.astype(np.float32)}


def _real_world(config) -> dict:
    pts = load_points(config.data.path)
    dim = pts.shape[1]
    pairs = load_pairs(config.data.pairs_path, dim)
    frac, cap = float(config.data.eval_fraction), int(config.data.max_eval_rows)
    tr, va, te = real.held_out_split(len(pts), frac, cap)
    mean, std = pts[tr].mean(0), pts[tr].std(0) + 1e-6
    to_model = lambda x: ((x - mean) / std).astype(np.float32)  # noqa: E731
    ptr, pva, pte = real.held_out_split(len(pairs["label"]), frac, cap)
    split = {name: {"x_gen": to_model(pairs["x_gen"][rows]),
                    "x_ref": to_model(pairs["x_ref"][rows]),
                    "label": pairs["label"][rows]}
             for name, rows in (("train", ptr), ("val", pva), ("test", pte))}
    k = int(config.rl.num_refs)
    held = np.concatenate([va, te])
    refs = to_model(pts[held[np.linspace(0, len(held) - 1, k).round().astype(int)]])
    s = int(config.seeds[0])
    add = lambda a: np.asarray(a)[None]  # noqa: E731  (one seed axis)
    digest = hashlib.sha256(pts.tobytes() + b"|" + b"".join(
        np.ascontiguousarray(v).tobytes() for v in pairs.values())).hexdigest()[:16]
    return {"x0": add(to_model(pts[tr])),
            "pairs": {n: {key: add(v) for key, v in d.items()} for n, d in split.items()},
            "refs": add(refs), "eval_seeds": np.array(
                [[split_seeds(s).validation, split_seeds(s).test]], np.int32),
            "gold": None, "mean": mean, "std": std, "digest": digest, "centers": None,
            "train_points": len(tr), "train_pairs": len(ptr)}


# ----------------------------------------------------------------------------- claims


def claims(results) -> list[protocol.Claim]:
    per = results.get("toy", {}).get("per_seed", {})
    if not per or any(not any(k.startswith("test_gold_w") for k in m) for m in per.values()):
        return []  # :real: a user's judgements, no gold (metrics only)
    first = next(iter(per.values()))
    widths = sorted(int(k[len("test_gold_w"):]) for k in first if k.startswith("test_gold_w"))
    if len(widths) != 3:
        return []
    small, mid, large = widths
    v = "toy"
    mean = lambda m: protocol.seed_mean(results, v, m)  # noqa: E731
    detail = "; ".join(
        f"w={x} ({mean(f'judge_params_w{x}'):.0f} params): test gold {mean(f'test_gold_w{x}'):.3f} "
        f"(pretrained {mean('initial_train_gold'):.3f}), proxy {mean(f'test_proxy_w{x}'):.3f}, "
        "reward "
        f"std {mean(f'test_reward_std_w{x}'):.3f} (train trace: final "
        f"{mean(f'train_final_std_w{x}'):.3f}, "
        f"ratio to initial {mean(f'train_std_ratio_w{x}'):.2f}), top mode share "
        f"{mean(f'test_top_mode_w{x}'):.2f}, judge test accuracy "
        f"{mean(f'judge_test_accuracy_w{x}'):.3f}" for x in widths)
    acc = {x: mean(f"judge_test_accuracy_w{x}") for x in widths}
    return [
        protocol.compare(
            f"the final test gold rises from the w={small} to the w={mid} judge", results,
            (v, f"test_gold_w{mid}"), (v, f"test_gold_w{small}"), at_least=0.0, detail=detail),
        protocol.compare(
            f"the final test gold rises from the w={mid} to the w={large} judge", results,
            (v, f"test_gold_w{large}"), (v, f"test_gold_w{mid}"), at_least=0.0, detail=detail),
        protocol.threshold(
            f"the w={large} judge's final reward variance across test samples is >= 2x the "
            f"w={small} judge's (log2 ratio >= 1)", results, (v, "test_log2_var_ratio"),
            at_least=1.0, detail=detail),
        protocol.sanity(
            "every judge orders gold-ordered test pairs above chance",
            bool(all(a > 0.5 for a in acc.values())),
            {f"judge_test_accuracy_w{x}": acc[x] for x in widths}, "trained to"),
    ]


def plots(results, workdir: str) -> list[str]:
    """The per-update reward std across samples of each judge size (mean over seeds)."""
    path = os.path.join(workdir, "toy", "rl_trace.json")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        trace = json.load(f)
    groups: dict[str, list] = {}
    for name, row in trace.items():
        groups.setdefault(name.split("/")[0], []).append(row["proxy_std"])
    curves = {}
    for width, rows in groups.items():
        ys = np.array([[np.nan if v is None else v for v in r] for r in rows], float)
        curves[f"judge {width}"] = (np.arange(1, ys.shape[1] + 1), np.nanmean(ys, 0))
    return [plot_curves(curves, os.path.join(workdir, "plots", "reward_std.png"),
                        title="reward std across samples during DDPO (mean over seeds)",
                        xlabel="update", ylabel="std of P(yes)")]
