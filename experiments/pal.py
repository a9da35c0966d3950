"""PAL ideal-point mixtures against a single Bradley-Terry reward on heterogeneous users.

Paper: Chen et al. 2024, "PAL: Pluralistic Alignment Framework for Learning from Heterogeneous
Preferences" (arXiv 2406.08469). PAL-A: a map f shared by all users, K prototypes
P = [p_1..p_K] and per-user simplex weights softmax(w_u) give each user an ideal point
a_u = P^T softmax(w_u); user u prefers y_1 to y_2 with probability
sigma(||f(y_2) - a_u||^2 - ||f(y_1) - a_u||^2) (`alignax.losses.reward.ideal_point_loss`). A new
user is fitted few-shot: f and P frozen, only w_u learned
(`alignax.train.few_shot.fit_user_weights`).

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
from alignax.train.few_shot import fit_user_weights
from alignax.train.full_batch import fit_full_batch


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

@functools.lru_cache(maxsize=None)
def _mlp(dim: int, hidden: tuple, out_dim: int):
    return make_mlp(MLPConfig(in_dim=dim, hidden=hidden, out_dim=out_dim))


def pal_margin(f, params, chosen, rejected, user_logits):
    """||f(y_r) - a_u||^2 - ||f(y_c) - a_u||^2 per comparison: [..., D] x2, [..., K] -> [...]."""
    protos = params["prototypes"]
    a = jax.nn.softmax(user_logits, -1) @ protos
    fc, fr = f.apply(params["f"], chosen), f.apply(params["f"], rejected)
    return jnp.sum((fr - a) ** 2, -1) - jnp.sum((fc - a) ** 2, -1)


@functools.partial(jax.jit, static_argnames=("f", "steps", "lr"))
def fit_pal(params, chosen, rejected, users, *, f, steps, lr):
    """Full-batch Adam on the PAL-A loss over all comparisons [M, D] of all users."""
    tx = optax.adam(lr)

    def loss_fn(p):
        a = ideal_points(p["user_logits"], p["prototypes"])[users]
        return ideal_point_loss(f.apply(p["f"], chosen), f.apply(p["f"], rejected), a).mean()

    params, losses = fit_full_batch(loss_fn, params, tx, steps)
    return params, losses


@functools.partial(jax.jit, static_argnames=("r", "steps", "lr"))
def fit_bt(params, chosen, rejected, *, r, steps, lr):
    """Full-batch Adam on the BT loss over all comparisons, ignoring who made them."""
    tx = optax.adam(lr)

    def loss_fn(p):
        return bradley_terry_loss(r.apply(p, chosen), r.apply(p, rejected)).mean()

    params, losses = fit_full_batch(loss_fn, params, tx, steps)
    return params, losses


@functools.partial(jax.jit, static_argnames=("f", "steps", "lr", "l2"))
def few_shot_accuracy(params, shot_chosen, shot_rejected, shot_mask, test_chosen, test_rejected,
                      *, f, steps, lr, l2):
    """Fits each unseen user's logits on its shots ([U, S, D], mask [U, S]); test accuracy.

    Returns the mean accuracy over the users' test comparisons [U, N, D].
    """
    feats = lambda y: f.apply(params["f"], y)  # noqa: E731
    fit = functools.partial(fit_user_weights, prototypes=params["prototypes"], steps=steps,
                            learning_rate=lr, l2=l2)
    logits = jax.vmap(fit)(feats(shot_chosen), feats(shot_rejected), mask=shot_mask)
    margin = pal_margin(f, params, test_chosen, test_rejected, logits[:, None])
    return jnp.mean(margin > 0)


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
    if config.method not in ("pal", "bt"):
        raise ValueError(f"unknown method {config.method!r}; valid: 'pal', 'bt'")
    seed, data = int(config.seed), config.data
    rng = np.random.default_rng([seed, 45])
    ideal = group_ideal_points(data, seed)
    groups = np.repeat(np.arange(data.num_groups), data.users_per_group)
    train = comparisons(ideal, groups, data.train_per_user, data, rng)
    test = comparisons(ideal, groups, data.test_per_user, data, rng)
    flat = lambda a: jnp.asarray(a.reshape(-1, *a.shape[2:]))  # noqa: E731
    out = {"oracle_accuracy": float(test["oracle"].mean())}
    key_model, key_users = jax.random.split(jax.random.key(seed))

    if config.method == "bt":
        r = _mlp(data.dim, tuple(config.bt.hidden), 1)
        params, losses = fit_bt(r.init(key_model), flat(train["chosen"]),
                                flat(train["rejected"]), r=r, steps=int(config.bt.steps),
                                lr=float(config.bt.learning_rate))
        margin = r.apply(params, flat(test["chosen"])) - r.apply(params, flat(test["rejected"]))
        out.update(seen_accuracy=float(jnp.mean(margin > 0)), final_loss=float(losses[-1]))
        return out

    k = int(config.pal.num_prototypes)
    f = _mlp(data.dim, tuple(config.pal.hidden), data.dim)
    params = {"f": f.init(key_model),
              "prototypes": jax.random.normal(jax.random.fold_in(key_model, 1), (k, data.dim)),
              "user_logits": 0.01 * jax.random.normal(key_users, (len(groups), k))}
    params, losses = fit_pal(params, flat(train["chosen"]), flat(train["rejected"]),
                             flat(train["user"]), f=f, steps=int(config.pal.steps),
                             lr=float(config.pal.learning_rate))
    margin = pal_margin(f, params, jnp.asarray(test["chosen"]), jnp.asarray(test["rejected"]),
                        params["user_logits"][:, None])
    out.update(seen_accuracy=float(jnp.mean(margin > 0)), final_loss=float(losses[-1]))

    # unseen users: new users of the same groups, few shots each; f and prototypes frozen
    new_groups = np.repeat(np.arange(data.num_groups), data.unseen_per_group)
    shots = sorted(int(s) for s in config.few_shot.shots)
    pool = comparisons(ideal, new_groups, max(shots), data, rng)
    new_test = comparisons(ideal, new_groups, data.test_per_user, data, rng)
    out["unseen_oracle_accuracy"] = float(new_test["oracle"].mean())
    for s in shots:  # the shots are a prefix of the pool: one compiled fit for every s
        mask = jnp.broadcast_to(jnp.arange(max(shots)) < s, pool["oracle"].shape)
        out[f"unseen_accuracy_{s}"] = float(few_shot_accuracy(
            params, jnp.asarray(pool["chosen"]), jnp.asarray(pool["rejected"]), mask,
            jnp.asarray(new_test["chosen"]), jnp.asarray(new_test["rejected"]), f=f,
            steps=int(config.few_shot.steps), lr=float(config.few_shot.learning_rate),
            l2=float(config.few_shot.l2)))
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
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    m = results["pal"]["metrics"]
    shots = _shots(results)
    fig = Figure(figsize=(5.5, 3.6), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    mean = np.array([m[f"unseen_accuracy_{s}"]["mean"] for s in shots])
    std = np.array([m[f"unseen_accuracy_{s}"]["std"] for s in shots])
    ax.errorbar(shots, mean, yerr=std, marker="o", capsize=3, label="PAL, unseen users")
    ax.axhline(m["seen_accuracy"]["mean"], color="C1", ls="--", label="PAL, seen users")
    ax.axhline(m["unseen_oracle_accuracy"]["mean"], color="gray", ls=":", label="oracle")
    if "bt" in results:
        ax.axhline(results["bt"]["metrics"]["seen_accuracy"]["mean"], color="C3", ls="-.",
                   label="single BT")
    ax.set_xscale("log")
    ax.minorticks_off()
    ax.set_xticks(shots, [str(s) for s in shots])
    ax.set_xlabel("comparisons of the new user")
    ax.set_ylabel("held-out accuracy")
    ax.set_title("PAL: few-shot personalisation of unseen users")
    ax.legend(fontsize=8)
    os.makedirs(os.path.join(workdir, "plots"), exist_ok=True)
    path = os.path.join(workdir, "plots", "pal_unseen_users.png")
    fig.savefig(path, dpi=120)
    return [path]
