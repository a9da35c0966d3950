"""B^2-DiffuRL: backward progressive training with branch-based sampling vs DDPO on a sparse
reward, at equal sample budget.

Paper: Hu et al., "Towards Better Alignment: Training Diffusion Models with Reinforcement
Learning Against Sparse Rewards" (CVPR 2025, arXiv 2503.11240).

Mechanism (`alignax.algorithms.diffusion_branch`): each update trains only the last L(u) steps
of the denoising chain, L growing with the update index u from `rl.first_fraction` of the
chain to all of it (the reference code's stage schedule: 14 -> 20 of 20 steps, i.e. 0.7 -> 1);
N trunks run from x_T to the interval's start and are continued by M branches each; the
advantage is the reward normalised within a trunk's M branches, and DDPO's clipped loss is
taken over the interval's steps only. The baseline is DDPO (`alignax.algorithms.diffusion.
ddpo_loss`): B = N M independent chains per update, batch-normalised advantages, every step
trained.

Setting (notes (d)): a 2-D DDPM (T = 20 linear-schedule timesteps, `set_alpha_to_one=False`,
K = 19 stochastic steps 19 .. 1, DDIM with eta = 1 = DDPM, x0_hat clipped to [-3, 3]; an MLP
eps-denoiser, hidden 64, 2 residual blocks) pretrained by L_simple on 4,096 points of the
8-Gaussian ring (radius 2, std 0.1; `alignax.algorithms.diffusion.pretrain`, all seeds in one
program, cached with `cached_run` in `<workdir>/cache` and shared by both variants). Sparse
reward: r(x_0) = 1 if x_0 lies within `reward.radius` = 0.3 of one of the two target modes
(`reward.targets` = modes 0 and 4, opposite on the ring), else 0; the pretrained model puts
about a quarter of its mass there.

Equal budget: both methods draw B = 64 final samples per update (N = 16 trunks x M = 4
branches for B^2; branches count as samples) for `rl.updates` = 150 on-policy updates (Adam,
one gradient step per sampled batch, DDPO's clip 1e-4 and advantage clip 5 for both). NFE per
final sample: DDPO K = 19; B^2 j / M + K - j for branch step j = K - L, averaged over the run
(`nfe_per_sample`; the log-prob recompute of the update is not counted for either).

Splits (`alignax.tasks.splits.split_seeds`): seed s pretrains on points of data seed 3s; the
RL updates draw their noise from the seed's training key; the validation reward is measured on
512 chains from data seed 3s + 1 and the test reward on 512 chains from data seed 3s + 2, after
every 2 updates. Selection on validation: the learning rate of each method from the same grid
`rl.lr_grid` by the mean over seeds of the validation reward averaged over the logged points
(the area under the validation curve: fast and high); both methods get the same grid, budget
and schedule of evaluations (selection.json per variant). Claims are measured on the test
chains of the chosen run.

Metrics (per seed): `test_reward` (final), `test_minority_share` (among the final test samples
that hit a target mode, the share of the less frequent target), `samples_to_target`: the
final samples drawn before the test reward first reaches `claims.reward_target` = 0.9 at a
logged point (capped at the whole budget U B when it never does: a lower bound on the true
number), `log2_samples_to_target`, `target_margin` = min(test_reward - 0.9,
test_minority_share - 0.3) (>= 0: reaches 0.9 and keeps both modes), `nfe_per_sample`,
`initial_test_reward`, and the validation versions (`val_*`).

Claims (5 seeds, paired 95% t intervals; the notes' pass criteria made measurable):
(1, comparative) B^2 reaches mean reward 0.9 in at most half the samples of DDPO:
log2 samples_to_target(b2) - log2 samples_to_target(ddpo) <= -1 (the capped counts make a
never-reaching DDPO count in B^2's favour only up to the budget, and a never-reaching B^2
against it);
(2, threshold) B^2 keeps both target modes: test_minority_share(b2) >= 0.3;
(3, threshold) DDPO stalls or collapses: target_margin(ddpo) <= 0 (its final reward is below
0.9 or its minority share below 0.3).
Sanity (never counted): the pretrained model's test reward is about the targets' share of the
ring (between 0.1 and 0.4), and B^2's NFE per sample is below DDPO's.

Reading the full run (5 seeds; lr 3e-3 chosen on validation for both from (3e-4, 1e-3, 3e-3)):
from a test reward of 0.19 both methods pass 0.9 within about 800 samples (B^2 794, DDPO 870;
log2 difference -0.12, interval [-0.67, 0.43]: claim 1 FAILs) and end near 1.0 (B^2 0.996,
DDPO 0.964), and both collapse onto one target mode: minority share 0.05 for B^2 (4 of 5 seeds
at 0; claim 2 FAILs) and 0.12 for DDPO (3 of 5 at 0, one seed keeps both modes at 0.36, so
claim 3 is INCONCLUSIVE). B^2 used 16.7 denoiser calls per sample against DDPO's 19. On two
development seeds (100, 101) every learning rate of the grid collapsed both methods as well
(at 3e-4 the minority share fell from about 0.45 to 0.05 over the run). Not tried: the
reference code's off-policy variant (best and worst branch per trunk, history-normalised
scores, 2 epochs per stage).

    alignax run experiments/b2_diffurl.py            # full setting, 5 seeds
    alignax run experiments/b2_diffurl.py:smoke      # seconds, for the tests

`:real` runs the same comparison on a user's points: `data.path` is a `.npy` file of points
[N, D] (float; or a folder holding `points.npy`); the last `data.eval_fraction` of the rows are
held out (`real.held_out_split`) and the rest pretrain the denoiser (points standardised by the
training rows' mean and std; samples are mapped back before the reward). The reward is a named
gold function, "near_targets": r = 1 if a sample lies within `reward.radius` of one of the
user's `reward.targets` (points in the data's units), else 0. One seed, no claims (summary
"claims" == []); metrics as above for the targets given (the minority share over all targets).

    alignax run experiments/b2_diffurl.py:real --workdir runs/b2 \\
        --config.data.path=/data/points.npy --config.reward.targets='((2.0, 0.0), (-2.0, 0.0))' \\
        --config.reward.radius=0.3
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
from alignax.algorithms import diffusion_branch as db
from alignax.algorithms import real
from alignax.algorithms.cached import cached_run
from alignax.data.errors import DataError
from alignax.models import diffusion as dm
from alignax.tasks.diffusion_data import point_splits, ring_centers
from alignax.tasks.splits import split_seeds
from alignax.train.plots import plot_curves
from alignax.train.small import fit_small
from alignax.train.writers import read_metrics

METHODS = ("ddpo", "b2")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    mode = real.config_mode(arg)
    smoke = mode == "smoke"
    c = ml_collections.ConfigDict()
    c.seeds = [0] if smoke or mode == "real" else [0, 1, 2, 3, 4]
    c.method = "b2"
    c.variants = {m: {"method": m} for m in METHODS}
    c.model = dict(hidden=16 if smoke else 64, n_blocks=1 if smoke else 2,
                   time_dim=8 if smoke else 32)
    c.diffusion = dict(num_timesteps=20, num_steps=19, last=1, eta=1.0, clip_x0=3.0)
    c.pretrain = dict(steps=20 if smoke else 3000, batch_size=64 if smoke else 256,
                      learning_rate=2e-3, steps_per_log=10 if smoke else 500)
    c.rl = dict(updates=4 if smoke else 150, trunks=4 if smoke else 16,
                branches=2 if smoke else 4, first_fraction=0.7,
                lr_grid=(1e-3,) if smoke else (3e-4, 1e-3, 3e-3),
                clip=1e-4, advantage_clip=5.0, steps_per_log=2)
    c.eval = dict(num_samples=32 if smoke else 512)
    c.claims = dict(reward_target=0.9, minority_share=0.3)
    c.cache_dir = ""  # "" -> <workdir>/cache (the shared pretraining run)
    if mode == "real":
        c.data = dict(path="", eval_fraction=0.1, max_eval_rows=256)
        c.reward = dict(kind="near_targets", targets=(), radius=0.3)
        with c.unlocked():
            c.pretrain.steps, c.pretrain.steps_per_log = 2000, 500
        return c
    c.data = dict(num_train=256 if smoke else 4096, num_modes=8, ring_radius=2.0, std=0.1)
    c.reward = dict(kind="near_targets", target_modes=(0, 4), radius=0.3)
    return c


def is_real(config) -> bool:
    return "path" in config.data


def validate(config) -> None:
    if config.method not in METHODS:
        raise ValueError(f"method={config.method!r} must be one of {METHODS}")
    rl = config.rl
    if int(rl.updates) < 1 or int(rl.updates) % int(rl.steps_per_log):
        raise ValueError(f"rl.updates={rl.updates} must be a positive multiple of "
                         f"rl.steps_per_log={rl.steps_per_log}")
    if int(rl.branches) < 2 or int(rl.trunks) < 1:
        raise ValueError(f"rl.branches={rl.branches} must be >= 2 and rl.trunks >= 1")
    if not 0.0 < float(rl.first_fraction) <= 1.0:
        raise ValueError(f"rl.first_fraction={rl.first_fraction} must be in (0, 1]")
    if not rl.lr_grid or any(float(x) <= 0 for x in rl.lr_grid):
        raise ValueError(f"rl.lr_grid={rl.lr_grid} must be positive learning rates")
    if config.reward.kind != "near_targets":
        raise ValueError(f"reward.kind={config.reward.kind!r} must be 'near_targets'")
    if float(config.reward.radius) <= 0:
        raise ValueError(f"reward.radius={config.reward.radius} must be > 0")
    if is_real(config):
        if not config.data.path:
            raise ValueError("data.path is required by the :real config (a .npy of points "
                             "[N, D]); pass --config.data.path=...")
        if not config.reward.targets:
            raise ValueError("reward.targets is required by the :real config (points in the "
                             "data's units); pass --config.reward.targets='((x, y), ...)'")
        if not 0 < float(config.data.eval_fraction) < 0.5:
            raise ValueError(f"data.eval_fraction={config.data.eval_fraction} must be in "
                             "(0, 0.5)")
    elif any(not 0 <= int(m) < int(config.data.num_modes) for m in config.reward.target_modes):
        raise ValueError(f"reward.target_modes={config.reward.target_modes} must be modes in "
                         f"[0, {config.data.num_modes})")


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


def world(config) -> dict:
    """Per-seed pretraining points [S, N, D], the targets [P, D] in data units, the
    standardisation (mean, std) [D] and the eval data seeds."""
    seeds = [int(s) for s in config.seeds]
    if is_real(config):
        pts = load_points(config.data.path)
        targets = np.asarray(config.reward.targets, np.float32)
        if targets.ndim != 2 or targets.shape[1] != pts.shape[1]:
            raise DataError(f"reward.targets must be points of dimension {pts.shape[1]}, got "
                            f"shape {targets.shape}")
        tr, _, _ = real.held_out_split(len(pts), float(config.data.eval_fraction),
                                       int(config.data.max_eval_rows))
        mean, std = pts[tr].mean(0), pts[tr].std(0) + 1e-6
        x0 = np.broadcast_to((pts[tr] - mean) / std, (len(seeds), len(tr), pts.shape[1]))
        digest = hashlib.sha256(pts.tobytes()).hexdigest()[:16]
    else:
        d = config.data
        splits = [point_splits(s, (int(d.num_train), 1, 1), num_modes=int(d.num_modes),
                               radius=float(d.ring_radius), std=float(d.std)) for s in seeds]
        x0 = np.stack([sp.train.points for sp in splits])
        centers = ring_centers(int(d.num_modes), float(d.ring_radius))
        targets = centers[[int(m) for m in config.reward.target_modes]]
        mean, std = np.zeros(2, np.float32), np.ones(2, np.float32)
        digest = ""
    eval_seeds = np.array([[split_seeds(s).validation, split_seeds(s).test] for s in seeds],
                          np.int32)
    return {"x0": np.ascontiguousarray(x0, np.float32), "targets": targets, "mean": mean,
            "std": std, "eval_seeds": eval_seeds, "digest": digest}


def pretrained(config, workdir: str, w: dict):
    """The denoisers of every seed ([S, ...] leaves), pretrained once per config."""
    dim = w["x0"].shape[-1]
    den, sch = denoiser(config, dim), schedule(config)
    p = config.pretrain
    key = {"model": config.model.to_dict(), "diffusion": config.diffusion.to_dict(),
           "pretrain": p.to_dict(), "seeds": [int(s) for s in config.seeds],
           "data": config.data.to_dict(), "digest": w["digest"]}

    def train(_, path):
        return dt.pretrain(path, den, sch, {"x0": jnp.asarray(w["x0"])},
                           num_steps=int(p.steps), batch_size=int(p.batch_size),
                           learning_rate=float(p.learning_rate),
                           seeds=[int(s) for s in config.seeds], per_seed_data=True,
                           steps_per_log=int(p.steps_per_log), plots=False).params

    cache = config.cache_dir or os.path.join(os.path.dirname(workdir), "cache")
    return cached_run("b2_diffurl_pretrain", key, train, cache_dir=cache)


def reward_fn(w: dict, radius: float):
    """r(x) = 1[min_p |to_data(x) - target_p| <= radius] for model-space samples x [B, D]."""
    targets, mean, std = (jnp.asarray(w[k]) for k in ("targets", "mean", "std"))

    def fn(x, cond=None):
        dist = jnp.linalg.norm((x * std + mean)[:, None] - targets[None], axis=-1)
        return (dist.min(-1) <= radius).astype(jnp.float32)

    return fn


def eval_fn(config, w: dict, den, sch):
    """`(params, eval_seeds [2]) -> metrics` of one seed: the reward and the minority share of
    `eval.num_samples` fresh chains from the validation and the test data seed."""
    seq, d = timesteps(config), config.diffusion
    n, dim = int(config.eval.num_samples), w["x0"].shape[-1]
    targets, mean, std = (jnp.asarray(w[k]) for k in ("targets", "mean", "std"))
    radius = float(config.reward.radius)

    def one(params, data_seed):
        key_x, key_noise = jax.random.split(jax.random.key(data_seed))
        x_T = jax.random.normal(key_x, (n, dim), jnp.float32)
        x0 = dm.sample(den.apply, params, sch, key_noise, x_T, seq, eta=float(d.eta),
                       clip_x0=float(d.clip_x0)).final
        dist = jnp.linalg.norm((x0 * std + mean)[:, None] - targets[None], axis=-1)
        hit = dist.min(-1) <= radius
        counts = (jax.nn.one_hot(dist.argmin(-1), targets.shape[0]) * hit[:, None]).sum(0)
        return hit.mean(), counts.min() / jnp.maximum(counts.sum(), 1.0)

    def evaluate(params, eval_seeds):
        out = {}
        for i, name in enumerate(("val", "test")):
            r, share = one(params, eval_seeds[i])
            out[f"{name}_reward"], out[f"{name}_minority_share"] = r, share
        return out

    return evaluate


def rl_loss(config, w: dict, den, sch):
    rl, d = config.rl, config.diffusion
    seq = timesteps(config)
    k = len(seq)
    common = dict(method="ddim", eta=float(d.eta), clip=float(rl.clip),
                  advantage_clip=float(rl.advantage_clip), clip_x0=float(d.clip_x0))
    reward = reward_fn(w, float(config.reward.radius))
    dim = w["x0"].shape[-1]
    if config.method == "ddpo":
        return dt.ddpo_loss(den, sch, seq, reward, batch_size=int(rl.trunks) * int(rl.branches),
                            data_shape=(dim,), **common)
    return db.branch_loss(den, sch, seq, reward, num_trunks=int(rl.trunks),
                          num_branches=int(rl.branches), data_shape=(dim,),
                          num_updates=int(rl.updates), first=first_length(config, k), **common)


def first_length(config, k: int) -> int:
    return max(1, min(k, int(round(float(config.rl.first_fraction) * k))))


def nfe_per_sample(config) -> float:
    """Denoiser calls per final sample over the run, as a split run spends them (module doc)."""
    k, rl = len(timesteps(config)), config.rl
    if config.method == "ddpo":
        return float(k)
    n, m, u = int(rl.trunks), int(rl.branches), int(rl.updates)
    lengths = np.asarray(jax.vmap(lambda i: db.interval_length(
        i, num_updates=u, first=first_length(config, k), last=k))(jnp.arange(u)))
    j = k - lengths
    return float(np.mean((n * j + n * m * (k - j)) / (n * m)))


# ----------------------------------------------------------------------------- the run


def run_seeds(config: ml_collections.ConfigDict, workdir: str) -> dict[int, dict[str, float]]:
    validate(config)
    seeds = [int(s) for s in config.seeds]
    w = world(config)
    dim = w["x0"].shape[-1]
    den, sch = denoiser(config, dim), schedule(config)
    params0 = pretrained(config, workdir, w)
    evaluate = eval_fn(config, w, den, sch)
    eval_data = {"eval_seeds": jnp.asarray(w["eval_seeds"])}
    loss = rl_loss(config, w, den, sch)
    rl = config.rl
    per_update = int(rl.trunks) * int(rl.branches)
    fits = {}
    for lr in rl.lr_grid:
        name = f"lr={float(lr):g}"
        fits[name] = fit_small(
            os.path.join(workdir, name), loss_fn=loss, has_aux=True, init_params=params0,
            per_seed_init=True, tx=optax.adam(float(lr)), num_steps=int(rl.updates),
            seeds=seeds, per_seed_data=True, with_step=True,
            batch_fn=lambda d, rng, step: {"key": rng, "step": step},
            steps_per_log=int(rl.steps_per_log), checkpoint_every=1000,
            eval_fn=lambda p, e: evaluate(p, e["eval_seeds"]), eval_data=eval_data,
            plots=False)

    def curve(fit, seed, metric):
        return np.array([row[f"seed_{seed}/eval/{metric}"] for row in fit.history])

    chosen, record = protocol.choose_on_validation(
        fits, lambda fit: float(np.mean([curve(fit, s, "val_reward").mean() for s in seeds])))
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, "selection.json"), "w") as f:
        json.dump({**record, "score": "mean over seeds of the validation reward averaged over "
                                      "the logged points"}, f, indent=1)
    fit = fits[chosen]
    initial = jax.device_get(jax.jit(jax.vmap(evaluate))(params0, eval_data["eval_seeds"]))
    budget = int(rl.updates) * per_update
    updates = (np.arange(len(fit.history)) + 1) * int(rl.steps_per_log)
    target = float(config.claims.reward_target)
    out = {}
    for i, seed in enumerate(seeds):
        res = {"learning_rate": float(chosen.split("=")[1]), "budget_samples": float(budget),
               "nfe_per_sample": nfe_per_sample(config)}
        if is_real(config):
            res["train_points"] = float(w["x0"].shape[1])
        for split in ("val", "test"):
            rewards = curve(fit, seed, f"{split}_reward")
            reached = np.flatnonzero(rewards >= target)
            samples = float(updates[reached[0]] * per_update) if len(reached) else float(budget)
            final = float(rewards[-1])
            share = float(curve(fit, seed, f"{split}_minority_share")[-1])
            res.update({f"{split}_reward": final, f"{split}_minority_share": share,
                        f"{split}_reward_auc": float(rewards.mean()),
                        f"{split}_samples_to_target": samples,
                        f"{split}_log2_samples_to_target": float(np.log2(samples)),
                        f"{split}_reached_target": float(len(reached) > 0),
                        f"{split}_target_margin": min(
                            final - target, share - float(config.claims.minority_share)),
                        f"initial_{split}_reward": float(initial[f"{split}_reward"][i]),
                        f"initial_{split}_minority_share":
                            float(initial[f"{split}_minority_share"][i])})
        out[seed] = res
    return out


def claims(results) -> list[protocol.Claim]:
    if any("train_points" in m for v in results.values() for m in v["per_seed"].values()):
        return []  # :real: a user's data and reward, metrics only
    if not {"b2", "ddpo"} <= set(results):
        return []
    c = get_config().claims
    mean = {v: {m: protocol.seed_mean(results, v, m) for m in
                ("test_reward", "test_minority_share", "test_samples_to_target",
                 "nfe_per_sample", "initial_test_reward", "test_reached_target")}
            for v in results}
    detail = "; ".join(
        f"{v}: final test reward {mean[v]['test_reward']:.3f} (from "
        f"{mean[v]['initial_test_reward']:.3f}), minority share "
        f"{mean[v]['test_minority_share']:.3f}, samples to {c.reward_target} "
        f"{mean[v]['test_samples_to_target']:.0f} (reached on "
        f"{mean[v]['test_reached_target']:.0%} of seeds), NFE/sample "
        f"{mean[v]['nfe_per_sample']:.2f}" for v in ("b2", "ddpo"))
    init = protocol.per_seed(results, "ddpo", "initial_test_reward")
    return [
        protocol.compare(
            f"B^2-DiffuRL reaches test reward {c.reward_target} in at most half the samples of "
            "DDPO (log2 samples b2 - ddpo <= -1; counts capped at the budget)", results,
            ("b2", "test_log2_samples_to_target"), ("ddpo", "test_log2_samples_to_target"),
            at_most=-1.0, detail=detail),
        protocol.threshold(
            f"B^2-DiffuRL keeps both target modes (minority share >= {c.minority_share})",
            results, ("b2", "test_minority_share"), at_least=float(c.minority_share),
            detail=detail),
        protocol.threshold(
            f"DDPO stalls or collapses (min(test reward - {c.reward_target}, minority share - "
            f"{c.minority_share}) <= 0)", results, ("ddpo", "test_target_margin"),
            at_most=0.0, detail=detail),
        protocol.sanity(
            "the pretrained model's test reward is about the targets' share of the ring "
            "(between 0.1 and 0.4) and B^2 spends fewer NFE per sample than DDPO",
            bool(all(0.1 <= v <= 0.4 for v in init.values())
                 and mean["b2"]["nfe_per_sample"] < mean["ddpo"]["nfe_per_sample"]),
            {"initial_test_reward": float(np.mean(list(init.values()))),
             "nfe_b2": mean["b2"]["nfe_per_sample"], "nfe_ddpo": mean["ddpo"]["nfe_per_sample"]},
            "by construction of the toy"),
    ]


def plots(results, workdir: str) -> list[str]:
    """The test reward of each variant's chosen run along training, against the final samples
    drawn (mean over seeds)."""
    curves = {}
    for variant in results:
        sel = os.path.join(workdir, variant, "selection.json")
        if not os.path.exists(sel):
            continue
        with open(sel) as f:
            chosen = json.load(f)["chosen"]
        seeds = results[variant]["per_seed"]
        budget = next(iter(seeds.values()))["budget_samples"]
        rows = read_metrics(os.path.join(workdir, variant, chosen, "metrics.jsonl"))
        if not rows:
            continue
        fraction = np.arange(1, len(rows) + 1) / len(rows)  # logged points are evenly spaced
        curves[f"{variant} ({chosen})"] = (fraction * budget,
                                           [row["eval/test_reward"] for row in rows])
    if not curves:
        return []
    return [plot_curves(curves, os.path.join(workdir, "plots", "test_reward.png"),
                        title="test reward (mean over seeds)", xlabel="final samples drawn",
                        ylabel="mean reward")]
