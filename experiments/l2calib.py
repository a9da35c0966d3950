"""L2Calib: extrinsic calibration as a one-step RL problem with a Bingham policy over rotations.

Paper: Li et al. 2025, "L2Calib: SE(3)-Manifold Reinforcement Learning for Robust Extrinsic
Calibration with Degenerate Motion Resilience" (arXiv 2508.06330). The extrinsic T = (R, t)
between two rigidly attached sensors is the action of a policy; the reward scores the
trajectory that T predicts against a reference trajectory; the rotation is drawn from a Bingham
distribution over unit quaternions, p(q) ~ exp(q^T M Z M^T q), antipodally symmetric (q and
-q are the same rotation), the translation from a Gaussian. (The paper's data-selection
filter and its LiDAR-inertial odometry in the loop are not reproduced; this is the core-math
toy of the notes.)

Mechanism (`alignax.ops.rotations`): the Bingham with mode q0 and concentrations k,
M = L(q0) (left quaternion multiplication; columns q0, q0 i, q0 j, q0 k), Z = diag(0, -k),
so log p(q) = -sum_i k_i r_i^2 - log F(k), r = q0^* q; F by the saddle-point approximation of
Kume & Wood (2005); exact sampling by rejection from an angular central Gaussian envelope
(Kent et al. 2013). Learned: q0 (an unnormalised 4-vector), log k, and the translation
Gaussian's mean and log std.

Setting (one problem = one synthetic odometry pair): sensor A moves along a smooth random
trajectory of `data.frames` poses (positions: sums of two sinusoids per axis, 0.5-2 m; attitude:
the exp of a rotation vector whose components are sinusoids of 0.3-0.8 rad); sensor B is
attached with the true extrinsic X = (R_X, t_X) (rotation axis uniform on the sphere, angle
uniform in the regime's range, t_X uniform in [-0.5, 0.5]^3 m), so B's odometry, anchored at
its first pose like A's, is T_B(i) = X^-1 T_A(i) X, its positions measured with N(0, 1 cm)
noise. A candidate X^ predicts B's positions p^(i) = R^T (R_A(i) t^ + p_A(i) - t^) from A's
odometry; reward = -ATE = -sqrt(mean_i |p^(i) - p_B(i)|^2) (metres). The alignation is the
first-pose anchoring of both odometries: a least-squares SE(3) (Umeyama) alignment would
absorb any error of R^ once t^ = t_X (p^ is then a rotated copy of p_B). Two regimes of the
true rotation angle: `generic` (30-150 degrees) and `near180` (170-180 degrees).

Training (the library's one small-model trainer, `fit_small`, every seed x regime vmapped as
one program): one-step REINFORCE with the leave-one-out baseline
(`alignax.algorithms.small_pg.reinforce_loss`, `train.samples` draws per update), Adam,
`train.steps` updates, from the identity rotation and zero translation. Variants, equal in
everything but the rotation's distribution:
  - `bingham`: q ~ Bingham(L(q0), diag(0, -k)), k initialised to 2 / sigma0^2 (rotation std
    about each axis about sigma0 = `policy.init_rot_std`);
  - `euler`: Gaussian over Euler angles (Z-Y'-X'', unbounded means, 2 pi-periodic map to a
    rotation), std initialised to sigma0.
The policy's deterministic output (the Bingham mode, the Gaussian mean) is evaluated every
`train.steps_per_log` updates against the true extrinsic (geodesic rotation error in degrees).

Splits (`alignax.tasks.splits.split_seeds`): experiment seed s draws its validation problems
(one per regime) from data seed 3s + 1 and its test problems from 3s + 2: different true
extrinsics and trajectories (the bandit has no training data apart from its own samples; 3s
is unused). Policy sampling uses s.

Selection on validation, the same for both variants: the learning rate from
`train.lr_grid`, by the lowest mean (over seeds and regimes) final rotation error of the
policy's output on the validation problems (`choose_on_validation`; recorded in
`<variant>/selection.json` and as `chosen_lr`). The test problems are then solved once with it.

Metrics (test problems, per regime g): `test_<g>_rot_err_deg` (final output's rotation error),
`test_<g>_window_std_deg` (std of the output's rotation error over the last
`eval.window` evaluations: the measure of oscillation), `test_<g>_window_max_deg`,
`test_<g>_trans_err_cm`, `test_<g>_ate_cm` (of the output), and the validation ones (`val_*`).

Claims (5 seeds, 95% t intervals; the notes' criterion "Bingham reaches < 2 degrees error and
stays stable for true rotations near 180 degrees, where the Euler parametrisation oscillates"):
  1. threshold: Bingham's final rotation error on generic extrinsics <= 2 degrees;
  2. threshold: Bingham's final rotation error on near-180-degree extrinsics <= 2 degrees;
  3. comparative (near 180): the std of the output's error over the last evaluations is larger
     with Euler angles than with Bingham: euler - bingham >= 0.1 degrees;
  4. comparative (near 180): Euler's final error minus Bingham's >= 0 degrees.
Reading the full run (5 seeds; both variants chose lr 0.1 on validation): Bingham ends at
0.84 (generic) and 1.05 (near 180) degrees, both intervals below 2 (PASS). The Euler-angle
policy also converges on 4 of the 5 near-180 test problems (0.4-2.5 degrees) but on seed 4 its
mean wanders between 125 and 179 degrees of error for all 600 updates (window std 3.7 degrees):
the paired differences (window std +0.95, final error +34 degrees) have intervals that include
0, so claims 3 and 4 are INCONCLUSIVE; on its validation problems (other extrinsics) Euler
converged on every near-180 problem (2.45 degrees mean).

Sanity (by construction, not counted): the true extrinsic's ATE is at the noise level (below
twice the expected sqrt(3) x `data.noise`).

    alignax run experiments/l2calib.py            # full setting, 5 seeds
    alignax run experiments/l2calib.py:smoke      # seconds, for the tests

`:real` calibrates the extrinsic between two sensors from the user's trajectory files with the
same Bingham policy and reward: `data.reference` holds sensor A's poses, `data.sensor` sensor
B's (the one whose extrinsic X, T_B = T_A X, is sought), one pose per row, rows aligned in time
(both re-anchored at their first pose). Formats: .npy of [T, 4, 4] homogeneous matrices, or
.npy / .csv / .txt with rows "tx ty tz qx qy qz qw" or "timestamp tx ty tz qx qy qz qw" (the
TUM format; when both files have timestamps they must agree within `data.time_tolerance`
seconds). The last `data.eval_fraction` of the frames are held out: the reward sees only the
others, and the estimate's ATE is reported on both (`train_ate_m`, `heldout_ate_m`, with the
identity extrinsic's for reference). The estimate is written to `<workdir>/default/extrinsic.json`
and reported as metrics (quaternion wxyz, Euler Z-Y'-X'' degrees, translation metres). There is
no ground truth, so no claim is evaluated (summary "claims" == []).

    alignax run experiments/l2calib.py:real --workdir runs/calib \
        --config.data.reference=imu_poses.csv --config.data.sensor=lidar_odometry.csv
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
from alignax.algorithms import real
from alignax.algorithms import small_pg as pg
from alignax.ops import rotations as rot
from alignax.tasks.splits import split_seeds
from alignax.train.plots import plot_curves
from alignax.train.small import fit_small
from alignax.train.writers import read_metrics

METHODS = ("bingham", "euler")
REGIMES = ("generic", "near180")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    mode = real.config_mode(arg)
    if mode == "real":
        return _real_config()
    smoke = mode == "smoke"
    c = ml_collections.ConfigDict()
    c.seeds = [0] if smoke else [0, 1, 2, 3, 4]
    c.method = "bingham"
    c.variants = {m: {"method": m} for m in METHODS}
    c.data = dict(frames=16 if smoke else 64, noise=0.01, lever=0.5,
                  generic_deg=(30.0, 150.0), near180_deg=(170.0, 180.0))
    c.policy = dict(init_rot_std=0.5, init_trans_std=0.2)
    c.train = dict(steps=20 if smoke else 600, samples=8 if smoke else 32,
                   steps_per_log=10, lr_grid=(0.03,) if smoke else (0.01, 0.03, 0.1))
    c.eval = dict(window=2 if smoke else 10)
    return c


def _real_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seeds = [0]
    c.method = "bingham"
    c.data = dict(reference="", sensor="", eval_fraction=0.2, time_tolerance=1e-3)
    c.policy = dict(init_rot_std=0.5, init_trans_std=0.2)
    c.train = dict(steps=600, samples=32, steps_per_log=10, learning_rate=0.03)
    return c


def is_real(config) -> bool:
    return "reference" in config.data


def validate(config: ml_collections.ConfigDict) -> None:
    if config.method not in METHODS:
        raise ValueError(f"method={config.method!r} must be one of {METHODS}")
    if float(config.policy.init_rot_std) <= 0 or float(config.policy.init_trans_std) <= 0:
        raise ValueError("policy.init_rot_std and policy.init_trans_std must be > 0")
    if int(config.train.samples) < 2:
        raise ValueError(f"train.samples={config.train.samples} must be >= 2")
    if is_real(config):
        for key in ("reference", "sensor"):
            if not config.data[key]:
                raise ValueError(f"data.{key} is required by the :real config (a pose file: "
                                 f".npy or .csv); pass --config.data.{key}=...")
        if not 0 < float(config.data.eval_fraction) < 1:
            raise ValueError(f"data.eval_fraction={config.data.eval_fraction} must be in (0, 1)")
        if config.method != "bingham":
            raise ValueError("method: the :real config calibrates with the Bingham policy")
        return
    if not config.train.lr_grid or any(float(x) <= 0 for x in config.train.lr_grid):
        raise ValueError(f"train.lr_grid={config.train.lr_grid} must be positive rates")
    for g in REGIMES:
        lo, hi = config.data[f"{g}_deg"]
        if not 0 <= lo <= hi <= 180:
            raise ValueError(f"data.{g}_deg=({lo}, {hi}) must satisfy 0 <= low <= high <= 180")
    if int(config.eval.window) < 1:
        raise ValueError(f"eval.window={config.eval.window} must be >= 1")


# ----------------------------------------------------------------------------- problems


def make_problem(config, data_seed: int, regime: int) -> dict[str, np.ndarray]:
    """One odometry pair with a known extrinsic (see the module docstring): A's anchored
    odometry `ref_rot` [T, 3, 3], `ref_pos` [T, 3], B's measured positions `sensor_pos` [T, 3],
    the truth `true_quat` [4], `true_trans` [3]."""
    rng = np.random.default_rng([int(data_seed), int(regime), 2508])
    frames, d = int(config.data.frames), config.data
    time = np.linspace(0.0, 2 * np.pi, frames)
    freqs = rng.integers(1, 4, (2, 3))
    amps, phases = rng.uniform(0.5, 2.0, (2, 3)), rng.uniform(0, 2 * np.pi, (2, 3))
    pos = sum(amps[j] * np.sin(freqs[j] * time[:, None] + phases[j]) for j in range(2))
    rot_amp = rng.uniform(0.3, 0.8, 3)
    rot_vec = rot_amp * np.sin(rng.integers(1, 4, 3) * time[:, None] + rng.uniform(0, 6.3, 3))
    att = np.asarray(rot.quat_to_matrix(rot.quat_from_rotvec(jnp.asarray(rot_vec))), np.float64)
    ref_rot = np.einsum("ji,tjk->tik", att[0], att)  # R_A(0)^T R_A(i)
    ref_pos = np.einsum("ji,tj->ti", att[0], pos - pos[0])
    lo, hi = d[f"{REGIMES[regime]}_deg"]
    axis = rng.normal(size=3)
    axis /= np.linalg.norm(axis)
    angle = np.deg2rad(rng.uniform(lo, hi))
    true_quat = np.concatenate([[np.cos(angle / 2)], np.sin(angle / 2) * axis])
    true_trans = rng.uniform(-d.lever, d.lever, 3)
    r_x = np.asarray(rot.quat_to_matrix(jnp.asarray(true_quat)), np.float64)
    clean = _predict(r_x, true_trans, ref_rot, ref_pos)
    sensor_pos = clean + rng.normal(0, d.noise, clean.shape)
    return {k: np.asarray(v, np.float32) for k, v in dict(
        ref_rot=ref_rot, ref_pos=ref_pos, sensor_pos=sensor_pos, true_quat=true_quat,
        true_trans=true_trans).items()}


def _predict(r_hat, t_hat, ref_rot, ref_pos):
    """B's anchored positions [..., T, 3] predicted by extrinsic (R^ [..., 3, 3], t^ [..., 3])
    from A's anchored odometry: R^T (R_A(i) t^ + p_A(i) - t^) (numpy or jax)."""
    xp = jnp if isinstance(r_hat, jax.Array) else np
    arm = xp.einsum("tij,...j->...ti", ref_rot, t_hat) + ref_pos - t_hat[..., None, :]
    return xp.einsum("...ji,...tj->...ti", r_hat, arm)


def ate(r_hat, t_hat, problem) -> jax.Array:
    """Absolute trajectory error (metres) [...] of extrinsic (R^ [..., 3, 3], t^ [..., 3]):
    sqrt(mean_i |p^(i) - p_B(i)|^2) after the first-pose anchoring."""
    err = _predict(r_hat, t_hat, problem["ref_rot"], problem["ref_pos"]) - problem["sensor_pos"]
    return jnp.sqrt(jnp.mean(jnp.sum(err**2, -1), -1))


# ----------------------------------------------------------------------------- policies


def init_policy(config, method: str) -> dict:
    """Params: rotation (Bingham: mode [4] + log concentration [3]; Euler: mean [3] + log std
    [3]) and translation (Gaussian mean [3] + log std [3]); identity rotation, zero translation."""
    sigma = float(config.policy.init_rot_std)
    trans = pg.gaussian_init(3, 0.0, float(np.log(config.policy.init_trans_std)))
    if method == "bingham":
        rotation = {"mode": jnp.array([1.0, 0.0, 0.0, 0.0], jnp.float32),
                    "log_k": jnp.full((3,), np.log(2.0 / sigma**2), jnp.float32)}
    else:
        rotation = pg.gaussian_init(3, 0.0, float(np.log(sigma)))
    return {"rot": rotation, "trans": trans}


def _bingham(params):
    return rot.bingham_from_mode(params["rot"]["mode"], jnp.exp(params["rot"]["log_k"]))


def policy_fns(method: str):
    """(sample_fn, log_prob_fn, output_fn) of a policy: actions x [n, D] = (rotation part,
    translation [3]) with D = 7 (quaternion) or 6 (Euler angles); `output_fn(params)` is the
    deterministic extrinsic (R [3, 3], t [3]): the Bingham mode or the Gaussian mean."""
    if method == "bingham":
        def sample_fn(params, key, n):
            k_r, k_t = jax.random.split(key)
            m, z = _bingham(params)
            return jnp.concatenate([rot.bingham_sample(k_r, m, z, n),
                                    pg.gaussian_sample(params["trans"], k_t, n)], -1)

        def log_prob_fn(params, x):
            m, z = _bingham(params)
            return (rot.bingham_log_prob(x[:, :4], m, z)
                    + pg.gaussian_log_prob(params["trans"], x[:, 4:]))

        def output_fn(params):
            return rot.quat_to_matrix(params["rot"]["mode"]), params["trans"]["mean"]
    else:
        def sample_fn(params, key, n):
            k_r, k_t = jax.random.split(key)
            return jnp.concatenate([pg.gaussian_sample(params["rot"], k_r, n),
                                    pg.gaussian_sample(params["trans"], k_t, n)], -1)

        def log_prob_fn(params, x):
            return (pg.gaussian_log_prob(params["rot"], x[:, :3])
                    + pg.gaussian_log_prob(params["trans"], x[:, 3:]))

        def output_fn(params):
            return rot.euler_to_matrix(params["rot"]["mean"]), params["trans"]["mean"]
    return sample_fn, log_prob_fn, output_fn


def action_extrinsic(method: str, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Actions [n, D] -> (R [n, 3, 3], t [n, 3])."""
    if method == "bingham":
        return rot.quat_to_matrix(x[:, :4]), x[:, 4:]
    return rot.euler_to_matrix(x[:, :3]), x[:, 3:]


def calibrate(config, workdir: str, method: str, problems: list[dict], run_ids: list[int],
              keys: jax.Array, learning_rate: float, truth: bool = True):
    """REINFORCE (leave-one-out baseline) of the method's policy on each problem, all problems
    in one `fit_small` program; every `train.steps_per_log` updates the policy's output is
    evaluated (its ATE and, with `truth`, its errors against the true extrinsic)."""
    sample_fn, log_prob_fn, output_fn = policy_fns(method)

    def reward_fn(x, problem):
        r_hat, t_hat = action_extrinsic(method, x)
        return -ate(r_hat, t_hat, problem)

    def eval_fn(params, problem):
        r_hat, t_hat = output_fn(params)
        out = {"ate_cm": 100.0 * ate(r_hat, t_hat, problem)}
        if truth:
            out["rot_err_deg"] = jnp.rad2deg(rot.quat_angle(rot.matrix_to_quat(r_hat),
                                                            problem["true_quat"]))
            out["trans_err_cm"] = 100.0 * jnp.linalg.norm(t_hat - problem["true_trans"])
        return out

    train_keys = ("ref_rot", "ref_pos", "sensor_pos")
    data = {k: jnp.asarray(np.stack([p[k] for p in problems])) for k in train_keys}
    eval_data = {k: jnp.asarray(np.stack([p[k] for p in problems])) for k in problems[0]}
    loss = pg.reinforce_loss(sample_fn, log_prob_fn, reward_fn,
                             num_samples=int(config.train.samples))
    return fit_small(workdir, loss_fn=loss, init_params=init_policy(config, method),
                     tx=optax.adam(float(learning_rate)), num_steps=int(config.train.steps),
                     data=data, seeds=run_ids, seed_keys=keys, per_seed_data=True,
                     batch_fn=pg.rl_batch, has_aux=True,
                     steps_per_log=int(config.train.steps_per_log), checkpoint_every=20,
                     eval_fn=eval_fn, eval_data=eval_data)


def _curve(fit, run_id: int, name: str) -> np.ndarray:
    return np.array([row[f"seed_{run_id}/eval/{name}"] for row in fit.history])


def run_seeds(config: ml_collections.ConfigDict, workdir: str) -> dict[int, dict[str, float]]:
    if is_real(config):
        return {int(s): _run_real(config, workdir, int(s)) for s in config.seeds}
    seeds = [int(s) for s in config.seeds]
    method = config.method
    runs = [(s, g) for s in seeds for g in range(len(REGIMES))]
    run_ids = [len(REGIMES) * s + g for s, g in runs]
    keys = jnp.stack([jax.random.fold_in(jax.random.key(s), g) for s, g in runs])
    splits = {name: [make_problem(config, getattr(split_seeds(s), name), g) for s, g in runs]
              for name in ("validation", "test")}
    window = int(config.eval.window)

    def summarise(fit, prefix: str) -> dict[int, dict[str, float]]:
        out = {s: {} for s in seeds}
        for (s, g), rid in zip(runs, run_ids):
            err = _curve(fit, rid, "rot_err_deg")
            tail = err[-window:]
            name = f"{prefix}_{REGIMES[g]}"
            out[s].update({f"{name}_rot_err_deg": float(err[-1]),
                           f"{name}_window_std_deg": float(tail.std()),
                           f"{name}_window_max_deg": float(tail.max()),
                           f"{name}_trans_err_cm": float(_curve(fit, rid, "trans_err_cm")[-1]),
                           f"{name}_ate_cm": float(_curve(fit, rid, "ate_cm")[-1])})
        return out

    grid = [float(x) for x in config.train.lr_grid]
    val = {}
    if len(grid) > 1:
        for lr in grid:
            fit = calibrate(config, os.path.join(workdir, f"validation_lr{lr:g}"), method,
                            splits["validation"], run_ids, keys, lr)
            val[lr] = summarise(fit, "val")
        chosen, record = protocol.choose_on_validation(
            {f"lr={lr:g}": lr for lr in grid},
            lambda lr: np.mean([v for m in val[lr].values() for k, v in m.items()
                                if k.endswith("_rot_err_deg")]), maximize=False)
        lr = dict((f"lr={x:g}", x) for x in grid)[chosen]
    else:  # one candidate: nothing to choose
        lr = grid[0]
        record = {"procedure": "single candidate", "chosen": f"lr={lr:g}"}
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, "selection.json"), "w") as f:
        json.dump({**record, "metric": "mean final validation rotation error (degrees)"}, f,
                  indent=1)
    fit = calibrate(config, os.path.join(workdir, "test"), method, splits["test"], run_ids,
                    keys, lr)
    out = summarise(fit, "test")
    for s in seeds:
        out[s].update(val.get(lr, {}).get(s, {}))
        out[s]["chosen_lr"] = lr
        for (s2, g), p in zip(runs, splits["test"]):
            if s2 == s:  # the true extrinsic's ATE: the noise floor of the reward
                r_x = rot.quat_to_matrix(jnp.asarray(p["true_quat"]))
                out[s][f"test_{REGIMES[g]}_true_ate_cm"] = float(
                    100.0 * ate(r_x, jnp.asarray(p["true_trans"]), p))
    return out


# ----------------------------------------------------------------------------- :real


def _read_rows(path: str) -> np.ndarray:
    if path.endswith(".npy"):
        return np.asarray(np.load(path, allow_pickle=False), np.float64)
    rows = []
    with open(path) as f:
        for n, line in enumerate(f, 1):
            text = line.strip()
            if not text or text.startswith("#"):
                continue
            try:
                rows.append([float(v) for v in text.replace(",", " ").split()])
            except ValueError:
                if rows:
                    raise ValueError(f"{path}:{n}: not a row of numbers: {text[:60]!r}") from None
                continue  # a header line
    return np.asarray(rows, np.float64)


def load_poses(path: str) -> tuple[np.ndarray | None, np.ndarray, np.ndarray]:
    """(timestamps [T] or None, rotations [T, 3, 3], positions [T, 3]) of a pose file: .npy of
    [T, 4, 4] matrices, or rows "tx ty tz qx qy qz qw" / "timestamp tx ty tz qx qy qz qw"
    (.npy, .csv or .txt; comma or whitespace separated; '#' comments and one header line)."""
    if not os.path.isfile(path):
        raise ValueError(f"{path}: no such pose file")
    rows = _read_rows(path)
    if rows.ndim == 3 and rows.shape[1:] == (4, 4):
        return None, rows[:, :3, :3], rows[:, :3, 3]
    if rows.ndim != 2 or rows.shape[1] not in (7, 8) or len(rows) < 3:
        raise ValueError(f"{path}: expected >= 3 rows of 7 (tx ty tz qx qy qz qw) or 8 (with a "
                         f"leading timestamp) values, or [T, 4, 4] matrices; got {rows.shape}")
    stamps = rows[:, 0] if rows.shape[1] == 8 else None
    body = rows[:, -7:]
    quat = body[:, [6, 3, 4, 5]]  # (qx qy qz qw) -> (w x y z)
    norms = np.linalg.norm(quat, axis=1)
    if not np.all(np.isfinite(body)) or np.any(norms < 1e-6):
        raise ValueError(f"{path}: non-finite values or a zero quaternion")
    mats = np.asarray(rot.quat_to_matrix(jnp.asarray(quat / norms[:, None])), np.float64)
    return stamps, mats, body[:, :3]


def load_pair(config) -> dict[str, np.ndarray]:
    """The user's pose pair as a problem (A's anchored odometry, B's anchored positions)."""
    t_a, r_a, p_a = load_poses(config.data.reference)
    t_b, r_b, p_b = load_poses(config.data.sensor)
    if len(p_a) != len(p_b):
        raise ValueError(f"data.reference has {len(p_a)} poses, data.sensor {len(p_b)}: the rows "
                         "must be aligned in time")
    if t_a is not None and t_b is not None:
        gap = float(np.max(np.abs(t_a - t_b)))
        if gap > float(config.data.time_tolerance):
            raise ValueError(f"timestamps differ by up to {gap:g} s > data.time_tolerance="
                             f"{config.data.time_tolerance}")
    ref_rot = np.einsum("ji,tjk->tik", r_a[0], r_a)
    ref_pos = np.einsum("ji,tj->ti", r_a[0], p_a - p_a[0])
    sensor_pos = np.einsum("ji,tj->ti", r_b[0], p_b - p_b[0])
    return {k: np.asarray(v, np.float32) for k, v in dict(
        ref_rot=ref_rot, ref_pos=ref_pos, sensor_pos=sensor_pos).items()}


def _run_real(config, workdir: str, seed: int) -> dict[str, float]:
    pair = load_pair(config)
    frames = len(pair["ref_pos"])
    held = max(1, int(round(frames * float(config.data.eval_fraction))))
    if frames - held < 3:
        raise ValueError(f"{frames} poses leave fewer than 3 for calibration; "
                         "lower data.eval_fraction or give more poses")
    train = {k: v[:frames - held] for k, v in pair.items()}
    fit = calibrate(config, os.path.join(workdir, f"seed_{seed}"), "bingham", [train], [seed],
                    jax.random.key(seed)[None], float(config.train.learning_rate), truth=False)
    params = fit.seed_params(0)
    quat = np.asarray(rot.quat_normalize(params["rot"]["mode"]), np.float64)
    quat = quat if quat[0] >= 0 else -quat
    r_hat = rot.quat_to_matrix(jnp.asarray(quat, jnp.float32))
    t_hat = params["trans"]["mean"]
    heldout = {k: v[frames - held:] for k, v in pair.items()}
    eye, zero = jnp.eye(3), jnp.zeros(3)
    euler = np.rad2deg(np.asarray(rot.matrix_to_euler(r_hat)))
    out = {"train_ate_m": float(ate(r_hat, t_hat, train)),
           "heldout_ate_m": float(ate(r_hat, t_hat, heldout)),
           "identity_train_ate_m": float(ate(eye, zero, train)),
           "identity_heldout_ate_m": float(ate(eye, zero, heldout)),
           "frames_train": float(frames - held), "frames_heldout": float(held),
           "rot_concentration_min": float(np.exp(np.min(np.asarray(params["rot"]["log_k"]))))}
    out.update({f"quat_{c}": float(v) for c, v in zip("wxyz", quat)})
    out.update({f"euler_{c}_deg": float(v) for c, v in zip(("yaw", "pitch", "roll"), euler)})
    out.update({f"trans_{c}_m": float(v) for c, v in zip("xyz", np.asarray(t_hat))})
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, "extrinsic.json"), "w") as f:
        json.dump({"convention": "T_sensor = T_reference X; quaternion (w, x, y, z), Euler "
                                 "Z-Y'-X'' (yaw, pitch, roll) degrees, translation metres",
                   "quaternion_wxyz": quat.tolist(), "euler_deg": euler.tolist(),
                   "translation_m": np.asarray(t_hat, np.float64).tolist(),
                   "train_ate_m": out["train_ate_m"], "heldout_ate_m": out["heldout_ate_m"]},
                  f, indent=1)
    return out


# ----------------------------------------------------------------------------- claims


def claims(results) -> list[protocol.Claim]:
    if "default" in results:  # :real: the user's pair has no ground truth; metrics only
        return []
    mean = {v: {m: protocol.seed_mean(results, v, m) for m in (
        "test_generic_rot_err_deg", "test_near180_rot_err_deg", "test_generic_window_std_deg",
        "test_near180_window_std_deg", "chosen_lr")} for v in results}
    detail = "; ".join(
        f"{v}: final error generic {m['test_generic_rot_err_deg']:.2f}, near-180 "
        f"{m['test_near180_rot_err_deg']:.2f} deg; window std generic "
        f"{m['test_generic_window_std_deg']:.3f}, near-180 {m['test_near180_window_std_deg']:.3f}"
        f" deg; lr {m['chosen_lr']:g}" for v, m in mean.items())
    floor = max(max(protocol.per_seed(results, v, f"test_{g}_true_ate_cm").values())
                for v in results for g in REGIMES)
    bound = 2.0 * np.sqrt(3.0) * 100.0 * float(get_config().data.noise)
    return [
        protocol.threshold(
            "the Bingham policy's output reaches <= 2 degrees rotation error (generic "
            "extrinsics, test)", results, ("bingham", "test_generic_rot_err_deg"), at_most=2.0,
            detail=detail),
        protocol.threshold(
            "the Bingham policy's output reaches <= 2 degrees rotation error for true rotations "
            "of 170-180 degrees (test)", results, ("bingham", "test_near180_rot_err_deg"),
            at_most=2.0, detail=detail),
        protocol.compare(
            "near 180 degrees the Euler-angle policy oscillates more: std of its output's error "
            "over the last evaluations minus Bingham's >= 0.1 degrees", results,
            ("euler", "test_near180_window_std_deg"), ("bingham", "test_near180_window_std_deg"),
            at_least=0.1, detail=detail),
        protocol.compare(
            "near 180 degrees the Euler-angle policy ends with a larger rotation error than "
            "Bingham (difference >= 0 degrees)", results, ("euler", "test_near180_rot_err_deg"),
            ("bingham", "test_near180_rot_err_deg"), at_least=0.0, detail=detail),
        protocol.sanity(
            f"the true extrinsic's ATE is at the noise level (< {bound:.2f} cm)",
            bool(floor < bound), {"max_true_ate_cm": float(floor)}, "by construction of the toy"),
    ]


def plots(results, workdir: str) -> list[str]:
    """The policy output's rotation error (degrees) along training on the test problems, per
    variant and regime (mean over seeds)."""
    curves = {}
    for variant in results:
        path = os.path.join(workdir, variant, "test", "metrics.jsonl")
        if not os.path.exists(path):
            continue
        rows = read_metrics(path)
        seeds = [int(s) for s in results[variant]["per_seed"]]
        for g, regime in enumerate(REGIMES):
            cols = [f"seed_{len(REGIMES) * s + g}/eval/rot_err_deg" for s in seeds]
            steps = [row["step"] for row in rows]
            curves[f"{variant}: {regime}"] = (steps, [np.mean([row[c] for c in cols])
                                                      for row in rows])
    if not curves:
        return []
    return [plot_curves(curves, os.path.join(workdir, "plots", "rotation_error.png"),
                        title="rotation error of the policy output (test, mean over seeds)",
                        xlabel="logged step", ylabel="degrees", xscale="linear")]
