"""PrefPaint: RL of an inpainting diffusion model on a ridge reward model with an error bound,
plain vs confidence-regularised.

Paper: Liu, Zhu, Li, Liu, Zeng, Hou, "PrefPaint: Aligning Image Inpainting Diffusion Model with
Human Preference" (NeurIPS 2024, arXiv 2410.21966).

Mechanism (`alignax.rewards.ridge_rm`): the reward model is linear on frozen features,
r_hat(x) = theta^T phi(x), fitted by ridge regression on scored completions, with the error
bound |r_hat(x) - r(x)| <~ alpha ||phi(x)||_{V^-1}, V = lambda I + sum phi phi^T. RL is DDPO
on the denoising MDP (`alignax.algorithms.diffusion.ddpo_loss`, through `fit_small` with the
seeds vmapped) with the reward regularised by that width. Methods, at equal updates and
samples:
- `plain`: DDPO on r_hat;
- `trust` (the paper's "reward trustiness-aware alignment", as its reference code does it):
  each sample's DDPO loss is multiplied by gamma = clip(exp(-k width + b), 1, 2.21), b = 0.7,
  so trusted completions count up to 2.2 times more: `ddpo_loss(weight_fn=)` multiplies each
  sample's clipped loss by gamma of its final sample (`ridge_rm.trust_weights`), the
  advantages being those of r_hat, normalised within each condition's group. (The reference
  code's width is ||V_inv phi||_2; here it is the paper's ||phi||_{V^-1}, and k is chosen on
  validation because the width's scale depends on the features.)
- `lcb`: DDPO on the lower confidence bound r_hat - alpha width (the pessimistic reading of a
  "confidence-regularised reward"; the paper's own form is `trust`).

Setting (notes (d)): 2-D points of the 8-Gaussian ring (radius 2, std 0.1); "given x1, inpaint
x2": an MLP eps-denoiser of x2 conditioned on x1 (`cond_kind="vector"`), linear schedule T = 20
(`set_alpha_to_one=False`), K = 10 stochastic DDIM steps with eta = 1 (= DDPM), x0_hat clipped
to [-4, 4], pretrained by L_simple on the seed's training points
(`alignax.algorithms.diffusion.pretrain`, all seeds in one program, cached with `cached_run`
). Gold preference (smooth): g(x1, x2) = x2 - c (|x| - 2)^2 with
c = `gold.ring_penalty` = 4: higher completions are better, completions off the ring (the data
manifold) are implausible. Limited coverage: the reward model sees `rm.num_scored` completions
of the pretrained model only (conditions from the training points), scored by the gold plus
N(0, `rm.noise_std`^2) noise, as PrefPaint's annotators scored the base model's inpaintings; it
is ridge on `rm.num_features` random Fourier features of the point (x1, x2) (bandwidth
`rm.bandwidth`, lambda `rm.lam`). Off the ring it extrapolates: upward beyond the top of the
ring it keeps rising while the gold falls.

RL: every update draws `rl.conditions` conditions x1 from the training points and
`rl.group_size` completions of each (B = conditions x group), advantages normalised within
each condition's group, one Adam step per sampled batch (on-policy), DDPO's ratio clip 1e-4 and
advantage clip 5, `rl.updates` updates for every method. Every method and candidate
coefficient is a row of the same vmapped `fit_small` program (one per learning rate; the
per-row regulariser is data, so one program serves all; the rows of a seed share its key:
common random numbers), with an extra "initial" row of weight 0 that never moves and measures
the pretrained model. NFE: K = 10 denoiser calls per sample for every method (the log-prob
recompute of the update is not counted); the RM is evaluated once per final sample.

Splits (`alignax.tasks.splits.split_seeds`): seed s pretrains on the training points of data
seed 3s (`point_splits(s)`), draws the scored completions and the RL conditions from them;
validation uses the x1 of data seed 3s + 1's points and sampler noise from that seed, test
those of 3s + 2. Selection on validation (the same for every method): the learning rate from
`rl.lr_grid` and, for `trust` and `lcb`, the width coefficient (k from `reg.trust_k_grid`,
which holds the reference code's 0.05; alpha from `reg.lcb_alpha_grid`), by the mean over
seeds of the final validation gold reward (privileged: the gold is used for this choice by
every method alike); selection.json records every candidate's score. Claims are measured
once on test.

Metrics (per seed, on `eval.num_samples` completions of held-out conditions after training;
one variant, "default", each method's metrics prefixed by its name, e.g. `lcb_test_gold`):
`<m>_test_gold` (mean gold), `<m>_test_proxy` (mean r_hat), `<m>_test_gap` = mean(r_hat -
gold) (the proxy-gold gap), `<m>_test_width` (mean ||phi||_{V^-1}), `<m>_test_off_ring`
(share of completions farther than 0.5 from the ring), the same on validation (`<m>_val_*`),
the chosen `<m>_learning_rate` and `<m>_reg_coef`, and the pretrained model's (`initial_*`).

Claims (5 seeds, paired 95% t intervals; the notes' pass criteria):
- comparative: the regularised run (`trust`, the paper's form) ends with a higher test gold
  than `plain` (difference >= 0 with the whole interval);
- comparative: its proxy-gold gap is at least 30% smaller: per seed gap_trust - 0.7 gap_plain
  <= 0;
- the same two for `lcb` (the notes' "lower-confidence-bound" reading).
Sanity (not counted): before RL the RM is accurate on the base model's completions (|initial
test gap| < 0.25) and `plain` RL raises the proxy.

Reading the full run (seeds 0-4, commit 04adc76): from a test gold of -0.07 (gap 0.03), plain
DDPO raises the proxy to 2.04 but the gold only to 0.43: 38% of its completions leave the ring
upward, where the RM keeps rising (gap 1.61, width 1.29 against about 0.25 on the ring). The
trust weights (k = 2 chosen on validation; lr 1e-3 for every method) change almost nothing:
gold 0.44, gap 1.61 (gold +0.005, interval [-0.047, 0.057], INCONCLUSIVE; gap claim FAIL,
gap_trust - 0.7 gap_plain = 0.48 [0.06, 0.90]). A weight in [1, 2.2] on each sample's loss
scales the pushes of trusted samples, up or down, but never turns the push towards a high r_hat
off the ring into a pull back, so it is not pessimism. The LCB (alpha 1 chosen) stays near the
ring (11% off) and reaches gold 1.30 (+0.87 [0.10, 1.63] over plain, PASS) with a gap of 0.47
(gap_lcb - 0.7 gap_plain = -0.65 [-1.22, -0.08], PASS). So the notes' claims hold for the LCB
reading of the confidence-regularised reward and fail for the paper's own weighting in this
toy. (A first version folded the weights into the advantages, which `ddpo_loss` then
re-standardised over the batch; its full run gave the same verdicts: trust gold +0.007
[-0.03, 0.05], gap 0.48 [0.05, 0.90].)

    alignax run experiments/prefpaint.py            # full setting, 5 seeds
    alignax run experiments/prefpaint.py:smoke      # seconds, for the tests

`:real`: the same three methods on a user's points and scores, without a language model.
`data.path` is a .npy of points [N, D] (or a folder with points.npy); `data.cond_columns` names
the known columns (the condition), the others are inpainted. `data.scores_path` is an .npz with
`x` [M, D] (scored completions, in the data's units) and `score` [M] (e.g. human ratings); the
ridge RM is fitted on all but the last `data.eval_fraction` of them (its held-out RMSE on those
is reported). Points are standardised by the training rows' mean and std. There is no gold, so
nothing is chosen on it: one learning rate (`rl.lr_grid` must hold one) and the first entry of
each regulariser grid; metrics are the proxy, the width and the LCB of the final completions of
the held-out rows' conditions, with no claims (summary "claims" == []).

    alignax run experiments/prefpaint.py:real --workdir runs/prefpaint \\
        --config.data.path=/data/points.npy --config.data.cond_columns='(0,)' \\
        --config.data.scores_path=/data/scored.npz
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
from alignax.rewards import ridge_rm as rr
from alignax.tasks.diffusion_data import point_splits
from alignax.tasks.splits import split_seeds
from alignax.train.plots import plot_curves
from alignax.train.small import fit_small

METHODS = ("plain", "trust", "lcb")
VARIANT = "default"  # one variant: every method is a row of the same program


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    mode = real.config_mode(arg)
    smoke = mode == "smoke"
    c = ml_collections.ConfigDict()
    c.seeds = [0] if smoke or mode == "real" else [0, 1, 2, 3, 4]
    c.model = dict(hidden=16 if smoke else 64, n_blocks=1 if smoke else 2,
                   time_dim=8 if smoke else 32)
    c.diffusion = dict(num_timesteps=20, num_steps=4 if smoke else 10, last=1, eta=1.0,
                       clip_x0=4.0)
    c.pretrain = dict(steps=20 if smoke else 3000, batch_size=64 if smoke else 256,
                      learning_rate=2e-3, steps_per_log=10 if smoke else 500)
    c.rm = dict(num_scored=32 if smoke else 256, noise_std=0.1,
                num_features=32 if smoke else 256, bandwidth=1.5, lam=0.01)
    c.rl = dict(updates=4 if smoke else 150, conditions=2 if smoke else 8,
                group_size=4 if smoke else 8, lr_grid=(1e-3,) if smoke else (3e-4, 1e-3),
                clip=1e-4, advantage_clip=5.0, steps_per_log=2 if smoke else 10)
    c.reg = dict(trust_k_grid=(1.0,) if smoke else (0.05, 0.5, 2.0), trust_b=0.7,
                 trust_w_min=1.0, trust_w_max=2.21,
                 lcb_alpha_grid=(1.0,) if smoke else (0.5, 1.0, 2.0))
    c.eval = dict(num_samples=32 if smoke else 256)
    c.claims = dict(gap_ratio=0.7, off_ring=0.5)
    c.cache_dir = ""  # "" -> <workdir>/../cache (the shared pretraining run)
    if mode == "real":
        c.data = dict(path="", cond_columns=(0,), scores_path="", eval_fraction=0.1,
                      max_eval_rows=256)
        with c.unlocked():
            c.pretrain.steps, c.pretrain.steps_per_log = 2000, 500
        return c
    c.data = dict(num_train=4096, num_modes=8, ring_radius=2.0, std=0.1)
    c.gold = dict(ring_penalty=4.0)
    return c


def is_real(config) -> bool:
    return "path" in config.data


def validate(config) -> None:
    rl, reg = config.rl, config.reg
    if int(rl.updates) < 1 or int(rl.updates) % int(rl.steps_per_log):
        raise ValueError(f"rl.updates={rl.updates} must be a positive multiple of "
                         f"rl.steps_per_log={rl.steps_per_log}")
    if int(rl.group_size) < 2 or int(rl.conditions) < 1:
        raise ValueError(f"rl.group_size={rl.group_size} must be >= 2 and rl.conditions >= 1")
    if not rl.lr_grid or any(float(x) <= 0 for x in rl.lr_grid):
        raise ValueError(f"rl.lr_grid={rl.lr_grid} must be positive learning rates")
    for key in ("trust_k_grid", "lcb_alpha_grid"):
        if not reg[key] or any(float(x) < 0 for x in reg[key]):
            raise ValueError(f"reg.{key}={reg[key]} must be non-empty and >= 0")
    if not 0 < float(reg.trust_w_min) <= float(reg.trust_w_max):
        raise ValueError(f"reg.trust_w_min={reg.trust_w_min} must be in (0, reg.trust_w_max]")
    if float(config.rm.lam) <= 0 or float(config.rm.bandwidth) <= 0:
        raise ValueError(f"rm.lam={config.rm.lam} and rm.bandwidth={config.rm.bandwidth} must "
                         "be > 0")
    if is_real(config):
        if not config.data.path:
            raise ValueError("data.path is required by the :real config (a .npy of points "
                             "[N, D]); pass --config.data.path=...")
        if not config.data.scores_path:
            raise ValueError("data.scores_path is required by the :real config (an .npz with x "
                             "[M, D] and score [M]); pass --config.data.scores_path=...")
        if len(rl.lr_grid) != 1:
            raise ValueError(f"rl.lr_grid={rl.lr_grid} must hold one learning rate in :real "
                             "(no gold to choose on)")
        if not 0 < float(config.data.eval_fraction) < 0.5:
            raise ValueError(f"data.eval_fraction={config.data.eval_fraction} must be in "
                             "(0, 0.5)")


# ----------------------------------------------------------------------------- the world


def timesteps(config) -> np.ndarray:
    d = config.diffusion
    return dm.timestep_sequence(int(d.num_timesteps), int(d.num_steps), last=int(d.last))


def denoiser(config, cond_dim: int, out_dim: int) -> dm.Denoiser:
    m = config.model
    return dm.make_denoiser(dm.DenoiserConfig(
        kind="mlp", data_shape=(out_dim,), hidden=int(m.hidden), n_blocks=int(m.n_blocks),
        time_dim=int(m.time_dim), cond_kind="vector", cond_dim=cond_dim))


def schedule(config) -> dm.Schedule:
    return dm.make_schedule("linear", int(config.diffusion.num_timesteps),
                            set_alpha_to_one=False)


def gold(x: jax.Array, radius: float, penalty: float) -> jax.Array:
    """g(x) = x2 - c (|x| - R)^2 for points x [N, 2] (x1, x2): [N]."""
    return x[:, 1] - penalty * jnp.square(jnp.linalg.norm(x, axis=-1) - radius)


def load_points(path: str) -> np.ndarray:
    """Points [N, D] float32 from a .npy file (or a folder holding points.npy)."""
    if os.path.isdir(path):
        path = os.path.join(path, "points.npy")
    if not (os.path.isfile(path) and path.endswith(".npy")):
        raise DataError(f"data.path={path!r} is not a .npy file (or a folder with points.npy)")
    x = np.load(path, allow_pickle=False)
    if x.ndim != 2 or x.shape[0] < 3 or x.shape[1] < 2 or not np.issubdtype(x.dtype, np.number):
        raise DataError(f"{path}: expected numeric points [N >= 3, D >= 2], got {x.dtype} "
                        f"{x.shape}")
    if not np.all(np.isfinite(x)):
        raise DataError(f"{path}: non-finite values")
    return x.astype(np.float32)


def load_scores(path: str, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """Scored completions (x [M, D], score [M]) from an .npz file."""
    if not (os.path.isfile(path) and path.endswith(".npz")):
        raise DataError(f"data.scores_path={path!r} is not an .npz file")
    with np.load(path, allow_pickle=False) as f:
        if "x" not in f or "score" not in f:
            raise DataError(f"{path}: needs arrays 'x' [M, D] and 'score' [M], has "
                            f"{sorted(f.files)}")
        x, s = np.asarray(f["x"]), np.asarray(f["score"])
    if x.ndim != 2 or x.shape[1] != dim or s.shape != x.shape[:1] or len(s) < 3:
        raise DataError(f"{path}: expected x [M >= 3, {dim}] and score [M], got {x.shape} and "
                        f"{s.shape}")
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(s))):
        raise DataError(f"{path}: non-finite values")
    return x.astype(np.float32), s.astype(np.float32)


def _columns(config, dim: int) -> tuple[np.ndarray, np.ndarray]:
    known = sorted({int(i) for i in config.data.cond_columns}) if is_real(config) else [0]
    if not known or any(not 0 <= i < dim for i in known) or len(known) == dim:
        raise DataError(f"data.cond_columns={tuple(known)} must name 1..{dim - 1} columns of "
                        f"the {dim}-d points")
    return np.asarray(known), np.asarray([i for i in range(dim) if i not in known])


def world(config) -> dict:
    """Per-seed training points [S, N, D] (standardised), the known / inpainted columns,
    the standardisation, the held-out conditions [S, 2, E, C] (validation, test) and their
    sampler seeds [S, 2], and (:real) the user's scored completions."""
    seeds = [int(s) for s in config.seeds]
    n_eval = int(config.eval.num_samples)
    if is_real(config):
        pts = load_points(config.data.path)
        known, free = _columns(config, pts.shape[1])
        tr, va, te = real.held_out_split(len(pts), float(config.data.eval_fraction),
                                         int(config.data.max_eval_rows))
        mean, std = pts[tr].mean(0), pts[tr].std(0) + 1e-6
        z = (pts - mean) / std
        train = np.broadcast_to(z[tr], (len(seeds), len(tr), z.shape[1]))
        held = [z[rows][np.arange(n_eval) % len(rows)][:, known] for rows in (va, te)]
        conds = np.broadcast_to(np.stack(held), (len(seeds), 2, n_eval, len(known)))
        sx, score = load_scores(config.data.scores_path, pts.shape[1])
        digest = hashlib.sha256(pts.tobytes() + sx.tobytes() + score.tobytes()).hexdigest()[:16]
        extra = {"scored_x": (sx - mean) / std, "scored_y": score}
    else:
        d = config.data
        splits = [point_splits(s, (int(d.num_train), n_eval, n_eval),
                               num_modes=int(d.num_modes), radius=float(d.ring_radius),
                               std=float(d.std)) for s in seeds]
        train = np.stack([sp.train.points for sp in splits])
        known, free = _columns(config, 2)
        conds = np.stack([np.stack([sp.validation.points[:, known], sp.test.points[:, known]])
                          for sp in splits])
        mean, std = np.zeros(2, np.float32), np.ones(2, np.float32)
        digest, extra = "", {}
    eval_seeds = np.array([[split_seeds(s).validation, split_seeds(s).test] for s in seeds],
                          np.int32)
    return {"train": np.ascontiguousarray(train, np.float32), "known": known, "free": free,
            "mean": mean, "std": std, "eval_conds": np.ascontiguousarray(conds, np.float32),
            "eval_seeds": eval_seeds, "train_seeds": np.array(
                [split_seeds(s).train for s in seeds], np.int32), "digest": digest, **extra}


def assemble(w: dict, cond: jax.Array, x0: jax.Array) -> jax.Array:
    """The full point [N, D] from its known columns [N, C] and inpainted ones [N, F]."""
    order = np.argsort(np.concatenate([w["known"], w["free"]]))
    return jnp.concatenate([cond, x0], axis=-1)[:, order]


def pretrained(config, workdir: str, w: dict):
    """The conditional denoisers of every seed ([S, ...] leaves), pretrained once per config."""
    den, sch = denoiser(config, len(w["known"]), len(w["free"])), schedule(config)
    p = config.pretrain
    key = {"model": config.model.to_dict(), "diffusion": config.diffusion.to_dict(),
           "pretrain": p.to_dict(), "seeds": [int(s) for s in config.seeds],
           "data": config.data.to_dict(), "digest": w["digest"]}
    data = {"x0": jnp.asarray(w["train"][..., w["free"]]),
            "cond": jnp.asarray(w["train"][..., w["known"]])}

    def train(_, path):
        return dt.pretrain(path, den, sch, data, num_steps=int(p.steps),
                           batch_size=int(p.batch_size), learning_rate=float(p.learning_rate),
                           seeds=[int(s) for s in config.seeds], per_seed_data=True,
                           fields=("x0", "cond"), steps_per_log=int(p.steps_per_log),
                           plots=False).params

    cache = config.cache_dir or os.path.join(os.path.dirname(workdir), "cache")
    return cached_run("prefpaint_pretrain", key, train, cache_dir=cache)


def completer(config, den, sch):
    """`(params, cond [N, C], keys [N]) -> x0 [N, F]`: one completion per condition, row i's
    start and noise from its own key (rows are independent of their batch neighbours)."""
    seq, d = timesteps(config), config.diffusion
    out_dim = den.config.data_shape[0]

    def complete(params, cond, keys):
        x_T = jax.vmap(lambda k: jax.random.normal(jax.random.fold_in(k, 1 << 20), (out_dim,),
                                                   jnp.float32))(keys)
        return dm.sample(den.apply, params, sch, keys, x_T, seq, cond=cond, eta=float(d.eta),
                         clip_x0=float(d.clip_x0)).final

    return complete


def rm_scores(rm: dict, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(r_hat [N], width [N]) of one seed's RM at points x [N, D]."""
    phi = rr.featurize(rr.RandomFeatures(rm["omega"], rm["phase"]), x)
    head = rr.RidgeRM(rm["theta"], rm["chol"])
    return rr.ridge_predict(head, phi), rr.confidence_width(head, phi)


def reward_models(config, w: dict, params0, complete) -> tuple[dict, np.ndarray, np.ndarray]:
    """Each seed's scored set and ridge RM on random features, in one program.

    Toy: `rm.num_scored` training conditions (drawn with the seed's training data seed), one
    completion of each by the pretrained model, scored by the gold plus N(0, noise_std^2);
    :real: the user's scored completions. Returns (RM arrays with a leading [S] axis, points
    [S, M, D], scores [S, M])."""
    rm_cfg = config.rm
    train_seeds = jnp.asarray(w["train_seeds"])
    num, bw, lam = int(rm_cfg.num_features), float(rm_cfg.bandwidth), float(rm_cfg.lam)
    dim = w["train"].shape[-1]
    if is_real(config):  # fitted on all but the held-out scored rows
        s = len(config.seeds)
        keep = np.setdiff1d(np.arange(len(w["scored_y"])),
                            held_out_rows(len(w["scored_y"]), float(config.data.eval_fraction)))
        points = np.broadcast_to(w["scored_x"][keep], (s, len(keep), dim))
        scores = np.broadcast_to(w["scored_y"][keep], (s, len(keep)))
        cond = np.zeros((s, 1, len(w["known"])), np.float32)  # unused
    else:
        m = int(rm_cfg.num_scored)
        rows = np.stack([np.random.default_rng(int(t)).choice(w["train"].shape[1], m,
                                                              replace=False)
                         for t in w["train_seeds"]])
        cond = np.take_along_axis(w["train"], rows[..., None], 1)[..., w["known"]]
        points = scores = None
    toy = not is_real(config)

    @jax.jit
    @jax.vmap
    def prepare(params, cond, seed, points, scores):
        key = jax.random.key(seed)
        if toy:
            keys = jax.random.split(jax.random.fold_in(key, 1), cond.shape[0])
            points = assemble(w, cond, complete(params, cond, keys))
            g = gold(points, float(config.data.ring_radius), float(config.gold.ring_penalty))
            scores = g + float(rm_cfg.noise_std) * jax.random.normal(
                jax.random.fold_in(key, 2), g.shape)
        feats = rr.random_fourier_features(jax.random.fold_in(key, 3), dim, num, bw)
        head = rr.ridge_fit(rr.featurize(feats, points), scores, lam)
        rm = {"omega": feats.omega, "phase": feats.phase, "theta": head.theta,
              "chol": head.chol}
        return rm, points, scores

    if toy:
        placeholder = jnp.zeros((len(config.seeds), 1), jnp.float32)
        rm, points, scores = prepare(params0, jnp.asarray(cond), train_seeds,
                                     placeholder[..., None], placeholder)
    else:
        rm, _, _ = prepare(params0, jnp.asarray(cond), train_seeds, jnp.asarray(points),
                           jnp.asarray(scores))
    return rm, np.asarray(points), np.asarray(scores)


def candidates(config) -> list[tuple[str, str, dict]]:
    """(method, name, regulariser) of every trained row; "initial" (weight 0: no update)
    measures the pretrained model in the same program. The regulariser of a row: the RL
    reward is gamma(width) * A(r_hat - alpha width), gamma = clip(exp(-k width + b), w_min,
    w_max): plain (k = b = alpha = 0, gamma = 1), trust (k, b, [w_min, w_max]), lcb (alpha)."""
    reg = config.reg
    none = {"alpha": 0.0, "k": 0.0, "b": 0.0, "w_min": 1.0, "w_max": 1.0}
    rows = [("initial", "initial", {**none, "w_min": 0.0, "w_max": 0.0}),
            ("plain", "plain", none)]
    rows += [("trust", f"k={float(k):g}", {**none, "k": float(k), "b": float(reg.trust_b),
                                            "w_min": float(reg.trust_w_min),
                                            "w_max": float(reg.trust_w_max)})
             for k in reg.trust_k_grid]
    rows += [("lcb", f"alpha={float(a):g}", {**none, "alpha": float(a)})
             for a in reg.lcb_alpha_grid]
    return rows


def rl_loss(config, w: dict, den, sch):
    """`ddpo_loss` with each row's regularised reward of its seed's RM (both read off the
    batch, so every method, coefficient and seed is a row of one vmapped program).

    The reward is r_hat - alpha width (`ridge_rm.lcb_reward`; alpha = 0 but for `lcb`), its
    advantages normalised within each condition's group by `ddpo_loss` (`group_size`), and
    each sample's clipped loss is weighted by gamma = `ridge_rm.trust_weights` of its width
    (`weight_fn`; gamma = 1 but for `trust`, 0 for the "initial" row, which never moves)."""
    rl, d = config.rl, config.diffusion
    group = int(rl.group_size)

    def loss(params, b):
        rm, reg = b["rm"], b["reg"]

        def reward_fn(x0, cond):
            r_hat, width = rm_scores(rm, assemble(w, cond, x0))
            return rr.lcb_reward(r_hat, width, reg["alpha"])

        def weight_fn(x0, cond):
            _, width = rm_scores(rm, assemble(w, cond, x0))
            return rr.trust_weights(width, k=reg["k"], b=reg["b"], w_min=reg["w_min"],
                                    w_max=reg["w_max"])

        fn = dt.ddpo_loss(den, sch, timesteps(config), reward_fn,
                          batch_size=int(rl.conditions) * group,
                          data_shape=den.config.data_shape, method="ddim", eta=float(d.eta),
                          clip=float(rl.clip), advantage_clip=float(rl.advantage_clip),
                          group_size=group, clip_x0=float(d.clip_x0), weight_fn=weight_fn)
        return fn(params, b)

    return loss


def batch_fn(config, w: dict):
    """Each update: `rl.conditions` training conditions, each repeated `rl.group_size` times."""
    n, group = int(config.rl.conditions), int(config.rl.group_size)
    known = jnp.asarray(w["known"])

    def draw(data, rng):
        pick, key = jax.random.split(rng)
        rows = jax.random.randint(pick, (n,), 0, data["train"].shape[0])
        cond = jnp.repeat(data["train"][rows][:, known], group, axis=0)
        return {"key": key, "cond": cond, "rm": data["rm"], "reg": data["reg"]}

    return draw


def eval_fn(config, w: dict, complete):
    """`(params, eval data of one row) -> metrics` on the validation and test conditions (one
    sampler run over both, each row keyed by its split's data seed)."""
    toy = not is_real(config)
    far = float(config.claims.off_ring)

    def evaluate(params, e):
        conds = e["conds"].reshape(-1, e["conds"].shape[-1])
        n = e["conds"].shape[1]
        keys = jnp.concatenate([jax.random.split(jax.random.key(e["seeds"][i]), n)
                                for i in range(2)])
        x = assemble(w, conds, complete(params, conds, keys))
        r_hat, width = rm_scores(e["rm"], x)
        per = {"proxy": r_hat, "width": width}
        if toy:
            radius = float(config.data.ring_radius)
            g = gold(x, radius, float(config.gold.ring_penalty))
            per.update(gold=g, gap=r_hat - g, off_ring=(jnp.abs(
                jnp.linalg.norm(x, axis=-1) - radius) > far).astype(jnp.float32))
        return {f"{split}_{k}": v[i * n:(i + 1) * n].mean() for k, v in per.items()
                for i, split in enumerate(("val", "test"))}

    return evaluate


# ----------------------------------------------------------------------------- the run


def run_seeds(config: ml_collections.ConfigDict, workdir: str) -> dict[int, dict[str, float]]:
    """Every candidate of every method, for every seed, as the rows of one `fit_small` per
    learning rate (a seed's rows share its key: common random numbers across methods); then
    each method's choice on validation and its metrics, prefixed by the method's name."""
    validate(config)
    seeds = [int(s) for s in config.seeds]
    w = world(config)
    den, sch = denoiser(config, len(w["known"]), len(w["free"])), schedule(config)
    params0 = pretrained(config, workdir, w)
    complete = completer(config, den, sch)
    rm, points, scores = reward_models(config, w, params0, complete)
    cands = candidates(config)
    rows = [(c, i) for c in range(len(cands)) for i in range(len(seeds))]
    row = {ci: r for r, ci in enumerate(rows)}
    seed_index = np.array([i for _, i in rows])
    regs = [cands[c][2] for c, _ in rows]
    # rows gathered on the host: a device gather would compile once per leaf shape
    per_row = lambda tree: jax.tree.map(  # noqa: E731
        lambda a: jax.device_put(np.asarray(a)[seed_index]), tree)
    data = {"train": per_row(w["train"]), "rm": per_row(rm),
            "reg": {k: jax.device_put(np.asarray([r[k] for r in regs], np.float32))
                    for k in regs[0]}}
    eval_data = {"conds": per_row(w["eval_conds"]), "seeds": per_row(w["eval_seeds"]),
                 "rm": per_row(rm)}
    rl = config.rl
    histories = {}
    for lr in rl.lr_grid:
        name = f"lr={float(lr):g}"
        histories[name] = fit_small(
            os.path.join(workdir, name), loss_fn=rl_loss(config, w, den, sch), has_aux=True,
            init_params=per_row(params0), per_seed_init=True, tx=optax.adam(float(lr)),
            num_steps=int(rl.updates), data=data, seeds=list(range(len(rows))),
            seed_keys=jnp.stack([jax.random.key(seeds[i]) for _, i in rows]),
            per_seed_data=True, batch_fn=batch_fn(config, w),
            steps_per_log=int(rl.steps_per_log), checkpoint_every=1000,
            eval_fn=eval_fn(config, w, complete), eval_data=eval_data, plots=False).history

    def final(hist, c, i, metric):
        return float(hist[-1][f"seed_{row[(c, i)]}/eval/{metric}"])

    first_lr = next(iter(histories))
    names = [k.split("/eval/")[1] for k in histories[first_lr][-1]
             if k.startswith("seed_0/eval/")]
    signal = "val_proxy" if is_real(config) else "val_gold"
    out = {seed: {"nfe_per_sample": float(len(timesteps(config))),
                  "samples": float(int(rl.updates) * int(rl.conditions) * int(rl.group_size))}
           for seed in seeds}
    for i, seed in enumerate(seeds):
        for name in names:
            out[seed][f"initial_{name}"] = final(histories[first_lr], 0, i, name)
    selection, curves = {}, {}
    for method in METHODS:
        mine = {f"{lr},{cands[c][1]}": (lr, c) for lr in histories
                for c in range(len(cands)) if cands[c][0] == method}
        if is_real(config):  # no gold to choose on: the first configured candidate
            first = next(iter(mine))
            chosen, record = first, {"chosen": first, "procedure": "the first candidate"}
        else:
            chosen, record = protocol.choose_on_validation(mine, lambda lc: float(np.mean(
                [final(histories[lc[0]], lc[1], i, signal) for i in range(len(seeds))])))
        selection[method] = {**record, "score": f"mean over seeds of the final {signal}"}
        lr_name, c = mine[chosen]
        hist, reg = histories[lr_name], cands[c][2]
        coef = reg["k"] if method == "trust" else reg["alpha"]
        curves[method] = {m: [float(np.mean([r[f"seed_{row[(c, i)]}/eval/{m}"]
                                             for i in range(len(seeds))])) for r in hist]
                          for m in names if m.startswith("test_")}
        curves[method]["step"] = [float(r["step"]) for r in hist]
        for i, seed in enumerate(seeds):
            res = out[seed]
            res[f"{method}_learning_rate"] = float(lr_name.split("=")[1])
            res[f"{method}_reg_coef"] = float(coef)
            for name in names:
                res[f"{method}_{name}"] = final(hist, c, i, name)
            if is_real(config):
                for split in ("val", "test"):
                    res[f"{method}_{split}_lcb"] = (res[f"{method}_{split}_proxy"]
                                                    - res[f"{method}_{split}_width"])
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, "selection.json"), "w") as f:
        json.dump(selection, f, indent=1)
    with open(os.path.join(workdir, "curves.json"), "w") as f:
        json.dump(curves, f)
    if is_real(config):
        held = held_out_rows(len(w["scored_y"]), float(config.data.eval_fraction))
        for i, seed in enumerate(seeds):
            r_hat, _ = rm_scores(jax.tree.map(lambda a: a[i], rm),
                                 jnp.asarray(w["scored_x"][held]))
            out[seed]["rm_heldout_rmse"] = float(np.sqrt(np.mean(
                (np.asarray(r_hat) - w["scored_y"][held]) ** 2)))
            out[seed]["scored_points"] = float(len(scores[i]))
    return out


def held_out_rows(n: int, fraction: float) -> np.ndarray:
    """The last `fraction` of n scored rows (at least one)."""
    k = max(1, int(round(fraction * n)))
    return np.arange(n - k, n)


def claims(results) -> list[protocol.Claim]:
    if any("scored_points" in m for v in results.values() for m in v["per_seed"].values()):
        return []  # :real: a user's data and scores, metrics only
    if VARIANT not in results:
        return []
    c = get_config().claims
    mean = {v: {m: protocol.seed_mean(results, VARIANT, f"{v}_{m}") for m in
                ("test_gold", "test_proxy", "test_gap", "test_width", "test_off_ring",
                 "reg_coef", "learning_rate")} for v in METHODS}
    init = {m: protocol.seed_mean(results, VARIANT, f"initial_{m}")
            for m in ("test_gold", "test_gap", "test_proxy")}
    detail = (f"before RL: test gold {init['test_gold']:.3f}, gap {init['test_gap']:.3f}; "
              + "; ".join(
                  f"{v}: test gold {mean[v]['test_gold']:.3f}, proxy {mean[v]['test_proxy']:.3f}"
                  f", gap {mean[v]['test_gap']:.3f}, width {mean[v]['test_width']:.3f}, "
                  f"off-ring share {mean[v]['test_off_ring']:.3f} (lr "
                  f"{mean[v]['learning_rate']:g}, coef {mean[v]['reg_coef']:g})"
                  for v in METHODS))
    plain_gap = protocol.per_seed(results, VARIANT, "plain_test_gap")
    out = []
    for v, label in (("trust", "trust-weighted DDPO (the paper's form)"),
                     ("lcb", "DDPO on the lower confidence bound")):
        gap = protocol.per_seed(results, VARIANT, f"{v}_test_gap")
        shared = [s for s in gap if s in plain_gap]
        out += [
            protocol.compare(f"{label} ends with a higher test gold reward than plain DDPO on "
                             "r_hat", results, (VARIANT, f"{v}_test_gold"),
                             (VARIANT, "plain_test_gold"), at_least=0.0, detail=detail),
            protocol.decide(
                f"{label} has a proxy-gold gap at least 30% smaller than plain DDPO's "
                f"(gap_{v} - {c.gap_ratio} gap_plain <= 0; gap = mean(r_hat - gold))",
                {s: gap[s] - float(c.gap_ratio) * plain_gap[s] for s in shared},
                kind="comparative", at_most=0.0,
                measured={f"{v}/test_gap": float(np.mean([gap[s] for s in shared])),
                          "plain/test_gap": float(np.mean([plain_gap[s] for s in shared]))},
                detail=detail)]
    init_gap = protocol.per_seed(results, VARIANT, "initial_test_gap")
    out.append(protocol.sanity(
        "before RL the RM is accurate on the base model's completions (|initial test gap| < "
        "0.25) and plain RL raises the proxy",
        bool(all(abs(g) < 0.25 for g in init_gap.values())
             and mean["plain"]["test_proxy"] > init["test_proxy"]),
        {"initial_test_gap": init["test_gap"], "plain_test_proxy": mean["plain"]["test_proxy"],
         "initial_test_proxy": init["test_proxy"]},
        "the RM is fitted on those completions; RL maximises the proxy"))
    return out


def plots(results, workdir: str) -> list[str]:
    """Test gold and proxy of each method's chosen run along training (mean over seeds)."""
    path = os.path.join(workdir, VARIANT, "curves.json")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        rec = json.load(f)
    curves = {f"{m} {metric}": (rec[m]["step"], rec[m][metric]) for m in METHODS
              for metric in ("test_gold", "test_proxy") if metric in rec.get(m, {})}
    if not curves:
        return []
    return [plot_curves(curves, os.path.join(workdir, "plots", "test_gold_proxy.png"),
                        title="test gold and proxy (mean over seeds)", xlabel="update",
                        ylabel="reward")]
