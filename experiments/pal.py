"""PAL ideal-point mixtures against a single Bradley-Terry reward on heterogeneous users.

Paper: Chen et al. 2024, "PAL: Pluralistic Alignment Framework for Learning from Heterogeneous
Preferences" (arXiv 2406.08469). PAL-A: a map f shared by all users, K prototypes
P = [p_1..p_K] and per-user simplex weights softmax(w_u) give each user an ideal point
a_u = P^T softmax(w_u); user u prefers y_1 to y_2 with probability
sigma(||f(y_2) - a_u||^2 - ||f(y_1) - a_u||^2) (`alignax.losses.reward.ideal_point_loss`). A new
user is fitted few-shot: f and P frozen, only w_u learned on the user's comparisons
(`alignax.train.few_shot.user_weights_loss`). Every variant trains all its seeds in one
`alignax.train.small.fit_small` program (BT; PAL-A; the unseen users' logits).

Setting (the generating model is itself an ideal-point model): items y ~ N(0, I_8); 3 groups
with ideal points b_g in R^8 (Gaussian draws minus their mean, rescaled to norm 3); 60 users,
20 per group, each with its group's ideal point; user u prefers y_1 to y_2 with probability
sigma((||y_2 - b_g||^2 - ||y_1 - b_g||^2) / T), T = 2. Each training user gives 50 comparisons
of fresh random items and is evaluated on 200 more (held-out comparisons of seen users).
PAL: f linear R^8 -> R^8 (the paper uses a small MLP; a hidden layer is a config switch,
`pal.hidden`), K = 3 prototypes, full-batch Adam on all 3000 comparisons. Baselines: one BT
reward (MLP 8 -> 32 -> 1, the best size and step count of a small sweep on held-out accuracy)
on the same comparisons without user ids, and the oracle that
predicts with the generating model. Unseen users: 30 new users (10 per group) with 2, 5, 10 or
20 comparisons each; f and P frozen, only their 3 logits fitted, then evaluated on 200 held-out
comparisons each. All accuracies are against the sampled (noisy) labels, like the oracle's.

Claims checked: PAL's held-out accuracy on seen users is within 3 points of the oracle and at
least 15 points above BT; unseen users with 10 comparisons reach >= 85% of PAL's seen-user
accuracy.

    alignax run experiments/pal.py              # full setting, 3 seeds
    alignax run experiments/pal.py:smoke        # seconds, for the tests
"""

from __future__ import annotations

import functools
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from alignax.experiment import Claim, is_smoke, metric
from alignax.losses.reward import bradley_terry_loss, ideal_point_loss, ideal_points
from alignax.models.mlp import MLPConfig, make_mlp
from alignax.tasks import simulators as sim
from alignax.train.few_shot import user_weights_loss
from alignax.train.plots import plot_curves
from alignax.train.small import fit_small


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    smoke = is_smoke(arg)
    c = ml_collections.ConfigDict()
    c.seeds = [0] if smoke else [0, 1, 2]
    c.method = "pal"  # "pal" or "bt"
    c.variants = {"pal": {"method": "pal"}, "bt": {"method": "bt"}}
    c.data = dict(
        dim=8, num_groups=3, users_per_group=4 if smoke else 20, ideal_norm=3.0,
        temperature=2.0, train_per_user=50, test_per_user=50 if smoke else 200,
        unseen_per_group=2 if smoke else 10,
    )
    c.pal = dict(num_prototypes=3, hidden=(), steps=100 if smoke else 3000, learning_rate=1e-2)
    # BT size and steps: the best of a small sweep on held-out accuracy (hidden (64, 64), (32,)
    # or none; 100-1000 steps); bigger or longer BT nets overfit the 3000 comparisons
    c.bt = dict(hidden=(32,), steps=100 if smoke else 300, learning_rate=3e-3)
    c.few_shot = dict(shots=[2, 5, 10, 20], steps=50 if smoke else 300, learning_rate=0.1,
                      l2=0.0)
    return c


# --- data -------------------------------------------------------------------------------------

def group_ideal_points(data, seed: int) -> np.ndarray:
    """[G, D] group ideal points: Gaussian draws minus their mean, rescaled to `ideal_norm`."""
    rng = np.random.default_rng([seed, 44])
    b = rng.standard_normal((data.num_groups, data.dim))
    b -= b.mean(0)
    return data.ideal_norm * b / np.linalg.norm(b, axis=1, keepdims=True)


def comparisons(ideal, groups, per_user, data, rng):
    """`per_user` labelled comparisons of fresh items for each user.

    Returns a dict of [U, N] / [U, N, D] arrays: chosen, rejected items, user ids, and the
    oracle's verdict on the sampled label (1 if the generating model's more likely side won).
    """
    u, n, d = len(groups), per_user, data.dim
    y1 = rng.standard_normal((u, n, d))
    y2 = rng.standard_normal((u, n, d))
    a = ideal[groups][:, None]
    margin = (np.sum((y2 - a) ** 2, -1) - np.sum((y1 - a) ** 2, -1)) / data.temperature
    label = rng.random((u, n)) < sim.sigmoid(margin)
    chosen = np.where(label[..., None], y1, y2).astype(np.float32)
    rejected = np.where(label[..., None], y2, y1).astype(np.float32)
    oracle = np.where(label, margin > 0, margin < 0).astype(np.float32)
    users = np.broadcast_to(np.arange(u)[:, None], (u, n))
    return {"chosen": chosen, "rejected": rejected, "user": users, "oracle": oracle}


# --- models -----------------------------------------------------------------------------------

def pal_margin(f, params, chosen, rejected, user_logits):
    """||f(y_r) - a_u||^2 - ||f(y_c) - a_u||^2 per comparison: [..., D] x2, [..., K] -> [...]."""
    protos = params["prototypes"]
    a = jax.nn.softmax(user_logits, -1) @ protos
    fc, fr = f.apply(params["f"], chosen), f.apply(params["f"], rejected)
    return jnp.sum((fr - a) ** 2, -1) - jnp.sum((fc - a) ** 2, -1)


def make_seed_data(config, seed: int) -> dict[str, np.ndarray]:
    """One seed's comparisons: training ([M, D] flat, user ids [M]), held-out ([U, N, D]), and
    the unseen users' shot pool ([U', max shots, D]) and held-out comparisons ([U', N, D])."""
    data = config.data
    rng = np.random.default_rng([seed, 45])
    ideal = group_ideal_points(data, seed)
    groups = np.repeat(np.arange(data.num_groups), data.users_per_group)
    train = comparisons(ideal, groups, data.train_per_user, data, rng)
    test = comparisons(ideal, groups, data.test_per_user, data, rng)
    # unseen users: new users of the same groups, drawn after the seen users' comparisons
    new_groups = np.repeat(np.arange(data.num_groups), data.unseen_per_group)
    pool = comparisons(ideal, new_groups, max(int(s) for s in config.few_shot.shots), data, rng)
    new_test = comparisons(ideal, new_groups, data.test_per_user, data, rng)
    flat = lambda a: a.reshape(-1, *a.shape[2:])  # noqa: E731
    return {"train_chosen": flat(train["chosen"]), "train_rejected": flat(train["rejected"]),
            "train_user": flat(train["user"]), "test_chosen": test["chosen"],
            "test_rejected": test["rejected"], "test_oracle": test["oracle"],
            "pool_chosen": pool["chosen"], "pool_rejected": pool["rejected"],
            "new_test_chosen": new_test["chosen"], "new_test_rejected": new_test["rejected"],
            "new_test_oracle": new_test["oracle"]}


def fit_bt(config, workdir: str, data: dict, seeds: list[int]) -> list[dict[str, float]]:
    """One BT reward per seed (full-batch Adam on all comparisons, ignoring who made them),
    every seed in one `fit_small` program; each seed's held-out accuracy and final loss."""
    r = make_mlp(MLPConfig(in_dim=data["train_chosen"].shape[-1], hidden=tuple(config.bt.hidden),
                           out_dim=1))

    def loss_fn(p, d):
        return bradley_terry_loss(r.apply(p, d["train_chosen"]),
                                  r.apply(p, d["train_rejected"])).mean()

    fit = fit_small(workdir, loss_fn=loss_fn,
                    init_params=lambda key: r.init(jax.random.split(key)[0]),
                    tx=optax.adam(float(config.bt.learning_rate)), num_steps=int(config.bt.steps),
                    data={k: data[k] for k in ("train_chosen", "train_rejected")}, seeds=seeds,
                    per_seed_data=True)

    @jax.jit
    @jax.vmap
    def seen_accuracy(p, d):
        return jnp.mean(r.apply(p, d["test_chosen"]) - r.apply(p, d["test_rejected"]) > 0)

    acc = np.asarray(seen_accuracy(fit.params, data))
    return [{"seen_accuracy": float(acc[i]), "final_loss": float(fit.final_loss[i])}
            for i in range(len(seeds))]


def fit_pal(config, workdir: str, data: dict, seeds: list[int]):
    """PAL-A for every seed in one `fit_small` program: full-batch Adam on the ideal-point loss
    of all comparisons of all users. Returns (the map f, the SmallFit)."""
    dim, k = data["train_chosen"].shape[-1], int(config.pal.num_prototypes)
    num_users = data["test_chosen"].shape[1]
    f = make_mlp(MLPConfig(in_dim=dim, hidden=tuple(config.pal.hidden), out_dim=dim))

    def init(key):
        key_model, key_users = jax.random.split(key)
        return {"f": f.init(key_model),
                "prototypes": jax.random.normal(jax.random.fold_in(key_model, 1), (k, dim)),
                "user_logits": 0.01 * jax.random.normal(key_users, (num_users, k))}

    def loss_fn(p, d):
        a = ideal_points(p["user_logits"], p["prototypes"])[d["train_user"]]
        return ideal_point_loss(f.apply(p["f"], d["train_chosen"]),
                                f.apply(p["f"], d["train_rejected"]), a).mean()

    fit = fit_small(workdir, loss_fn=loss_fn, init_params=init,
                    tx=optax.adam(float(config.pal.learning_rate)),
                    num_steps=int(config.pal.steps),
                    data={k: data[k] for k in ("train_chosen", "train_rejected", "train_user")},
                    seeds=seeds, per_seed_data=True)
    return f, fit


def fit_unseen_users(config, workdir: str, f, params, data: dict, seeds: list[int],
                     shots: list[int]):
    """Few-shot fits of the unseen users' logits, f and prototypes frozen, every seed at once.

    The logits of every (shot count H, unseen user U) are one [H, U, K] parameter tree per seed;
    the objective is the sum of the users' own losses (`user_weights_loss`, the first `s`
    comparisons of the user's pool for shot count `s`), so each user's gradient is its own and
    Adam, elementwise, updates each user exactly as a separate fit from the uniform mixture.

    Returns (the fitted logits [S, H, U, K], the held-out accuracy [S, H] of each seed and shot
    count).
    """
    fs, l2 = config.few_shot, float(config.few_shot.l2)
    feats = jax.jit(jax.vmap(lambda p, y: f.apply(p["f"], y)))
    num_users, pool_size = data["pool_chosen"].shape[1:3]
    mask = (np.arange(pool_size)[None] < np.array(shots)[:, None]).astype(np.float32)  # [H, n]
    shot_data = {
        "chosen": feats(params, data["pool_chosen"]),  # [S, U, n, D]
        "rejected": feats(params, data["pool_rejected"]),
        "prototypes": params["prototypes"],  # [S, K, D]
        "mask": jnp.broadcast_to(jnp.asarray(mask)[None, :, None],
                                 (len(seeds), len(shots), num_users, pool_size)),
    }
    user_loss = jax.vmap(functools.partial(user_weights_loss, l2=l2),  # over users
                         in_axes=(0, 0, 0, None, 0))
    user_loss = jax.vmap(user_loss, in_axes=(0, None, None, None, 0))  # over shot counts

    def loss_fn(logits, d):
        per_user = user_loss(logits, d["chosen"], d["rejected"], d["prototypes"], d["mask"])
        return per_user.sum(), {"mean_user_loss": per_user.mean()}

    k = params["prototypes"].shape[1]
    fit = fit_small(workdir, loss_fn=loss_fn, has_aux=True,
                    init_params=jnp.zeros((len(shots), num_users, k), jnp.float32),
                    tx=optax.adam(float(fs.learning_rate)), num_steps=int(fs.steps),
                    data=shot_data, seeds=seeds, per_seed_data=True)

    @jax.jit
    @jax.vmap
    def accuracy(p, logits, d):  # [H] held-out accuracy per shot count
        margin = jax.vmap(lambda w: pal_margin(f, p, d["new_test_chosen"],
                                               d["new_test_rejected"], w[:, None]))(logits)
        return jnp.mean(margin > 0, axis=(1, 2))

    return fit.params, np.asarray(accuracy(params, fit.params, data))


def run_seeds(config: ml_collections.ConfigDict, workdir: str) -> dict[int, dict[str, float]]:
    """Every seed of one variant at once: BT, or PAL-A then the unseen users' few-shot fits."""
    if config.method not in ("pal", "bt"):
        raise ValueError(f"unknown method {config.method!r}; valid: 'pal', 'bt'")
    seeds = [int(s) for s in config.seeds]
    per_seed = [make_seed_data(config, s) for s in seeds]
    data = {k: jnp.asarray(np.stack([d[k] for d in per_seed])) for k in per_seed[0]}
    out = {s: {"oracle_accuracy": float(d["test_oracle"].mean())}
           for s, d in zip(seeds, per_seed)}
    if config.method == "bt":
        for s, res in zip(seeds, fit_bt(config, os.path.join(workdir, "bt"), data, seeds)):
            out[s].update(res)
        return out

    f, fit = fit_pal(config, os.path.join(workdir, "pal_a"), data, seeds)

    @jax.jit
    @jax.vmap
    def seen_accuracy(p, d):
        margin = pal_margin(f, p, d["test_chosen"], d["test_rejected"], p["user_logits"][:, None])
        return jnp.mean(margin > 0)

    seen = np.asarray(seen_accuracy(fit.params, data))
    shots = sorted(int(s) for s in config.few_shot.shots)
    _, unseen = fit_unseen_users(config, os.path.join(workdir, "few_shot"), f, fit.params, data,
                              seeds, shots)
    for i, (s, d) in enumerate(zip(seeds, per_seed)):
        out[s].update(seen_accuracy=float(seen[i]), final_loss=float(fit.final_loss[i]),
                      unseen_oracle_accuracy=float(d["new_test_oracle"].mean()))
        out[s].update({f"unseen_accuracy_{n}": float(unseen[i, j]) for j, n in enumerate(shots)})
    return out


# --- claims and plots -------------------------------------------------------------------------

def claims(results) -> list[Claim]:
    pal = metric(results, "pal", "seen_accuracy")
    oracle = metric(results, "pal", "oracle_accuracy")
    bt = metric(results, "bt", "seen_accuracy")
    shots = _shots(results)
    n = 10 if 10 in shots else shots[len(shots) // 2]
    unseen = metric(results, "pal", f"unseen_accuracy_{n}")
    return [
        Claim(
            name="PAL's held-out accuracy on seen users is within 3 points of the generating-"
                 "model oracle and >= 15 points above a single BT reward",
            passed=oracle - pal <= 0.03 and pal - bt >= 0.15,
            measured={"pal_accuracy": pal, "oracle_accuracy": oracle, "bt_accuracy": bt,
                      "gap_to_oracle": oracle - pal, "gain_over_bt": pal - bt},
            detail=f"PAL {pal:.3f}, oracle {oracle:.3f}, BT {bt:.3f}",
        ),
        Claim(
            name=f"Unseen users fitted on {n} comparisons (f and prototypes frozen) reach >= 85% "
                 "of PAL's seen-user accuracy",
            passed=unseen >= 0.85 * pal,
            measured={f"unseen_accuracy_{n}": unseen, "seen_accuracy": pal,
                      "ratio": unseen / pal},
            detail=f"unseen@{n} {unseen:.3f} vs seen {pal:.3f} (ratio {unseen / pal:.3f})",
        ),
    ]


def _shots(results) -> list[int]:
    names = results["pal"]["metrics"]
    return sorted(int(k.rsplit("_", 1)[1]) for k in names if k.startswith("unseen_accuracy_"))


def plots(results, workdir: str) -> list[str]:
    """Unseen users' held-out accuracy against the number of few-shot comparisons."""
    m = results["pal"]["metrics"]
    shots = np.array(_shots(results), np.float64)
    flat = lambda name, metrics=m: np.full(len(shots), metrics[name]["mean"])  # noqa: E731
    curves = {"PAL, unseen users": (shots, [m[f"unseen_accuracy_{s:.0f}"]["mean"] for s in shots],
                                    [m[f"unseen_accuracy_{s:.0f}"]["std"] for s in shots]),
              "PAL, seen users": (shots, flat("seen_accuracy")),
              "oracle": (shots, flat("unseen_oracle_accuracy"))}
    if "bt" in results:
        curves["single BT"] = (shots, flat("seen_accuracy", results["bt"]["metrics"]))
    path = os.path.join(workdir, "plots", "pal_unseen_users.png")
    return [plot_curves(curves, path, title="PAL: few-shot personalisation of unseen users",
                        xlabel="comparisons of the new user", ylabel="held-out accuracy")]
