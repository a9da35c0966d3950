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
reward (MLP 8 -> 32 -> 1; the size is the earlier choice, which came from a sweep on held-out
accuracy before the protocol; early stopping now removes the overfitting that made bigger nets
lose) on the same comparisons without user ids, and the oracle that predicts with the generating
model. Unseen users: 30 new users (10 per group) with 2, 5, 10 or 20 comparisons each; f and P
frozen, only their 3 logits fitted (300 Adam steps at 0.1, unchanged and not selected: a new
user has no validation comparisons), then evaluated on 200 test comparisons each. All
accuracies are against the sampled (noisy) labels, like the oracle's.

Splits (docs/protocol.md): the group ideal points are experiment seed s's world; the seen users'
training comparisons, their validation comparisons (50 per user) and the test comparisons (seen
users' test comparisons, the unseen users' shots and tests) come from the disjoint data seeds
`split_seeds(s)` (3s, 3s+1, 3s+2).

Selection on validation, the same for PAL and BT: `train.steps` = 3000 full-batch Adam updates
with early stopping on the seen users' validation accuracy (`fit_small(select=
("val_accuracy", "max"))`, every 50 updates), for each learning rate of `train.learning_rates`
= (3e-3, 1e-2); each seed keeps the learning rate whose early-stopped model is best on
validation (`choose_on_validation`; recorded as `chosen_learning_rate`, `chosen_steps`,
`val_accuracy`). The previous version trained PAL 3000 steps at 1e-2 and BT 300 steps at 3e-3,
BT's from a sweep on the held-out (test) accuracy.

Claims (5 seeds, paired over seeds, 95% t intervals, test split): (1) comparative: oracle - PAL
<= 3 points on seen users; (2) comparative: PAL - BT >= 15 points on seen users; (3) threshold:
unseen users fitted on 10 comparisons reach >= 85% of PAL's seen-user accuracy (per-seed ratio).

    alignax run experiments/pal.py              # full setting, 3 seeds
    alignax run experiments/pal.py:smoke        # seconds, for the tests

`:real` runs PAL-A and the BT baseline on the frozen embeddings of a Hugging Face checkpoint
(`model.path`, `alignax.algorithms.pretrained.load_pretrained(..., "lm")`) for a paired
preference dataset (`data.path`, TRL's explicit or implicit, standard or conversational
format) with a user column (`data.user_field`, default "user_id": a string or an int per row,
`alignax.data.hf_datasets.user_ids`; a row without one is a one-line DataError naming it).
Each side is prompt + response rendered with the checkpoint's chat template (`tokenize_pair`),
embedded as the final hidden state at its last token (`alignax.eval.embeddings.
sequence_embeddings`, pool "last"), then standardised per feature with the mean and std of the
training pairs' embeddings. PAL's f maps them to `pal.out_dim` dimensions (linear, or an MLP
with `pal.hidden`); the baseline is the toy's single BT reward (MLP `bt.hidden`) on the same
embeddings, trained on the same pairs without user ids.

Users are indexed in first-seen order; the last `pal.unseen_users` are unseen (held out
entirely). Every seen user's pairs are split per user, in dataset order, by
`alignax.algorithms.real.held_out_split` (the last `data.eval_fraction` of them, at least one,
are test, as many before them validation, the rest train), so every seen user has training
pairs for its weights and is tested on pairs it never gave; a seen user needs at least 3 pairs.
An unseen user's first `pal.few_shot` pairs are its shots (the toy's few-shot fit: f and the
prototypes frozen, only its logits, `few_shot.steps` Adam steps at `few_shot.learning_rate`,
not selected), the rest its test pairs; it needs more than `pal.few_shot` pairs.

Selection on validation (the seen users' validation pairs): the toy's procedure for PAL and BT
alike (early stopping every `train.steps_per_log` updates, the learning rate of
`train.learning_rates` per seed), and for PAL the number of prototypes from the list
`pal.num_prototypes` (one K for all seeds: the best mean validation accuracy over seeds;
`chosen_num_prototypes`, `val_accuracy_K<k>`). Seeds change the initialisation only (the
embeddings are the data). Metrics (test split): `test_seen_accuracy` (PAL, seen users'
weights), `test_unseen_accuracy_<few_shot>` and `test_unseen_accuracy_0` (unseen users after
their shots, and with the uniform mixture before any), `bt_test_seen_accuracy` and
`bt_test_unseen_accuracy` (the BT baseline on the same test pairs), with the selection records
and the split sizes. No claim is evaluated (summary "claims" is []): the toy's claims compare
with the generating model's oracle, which a user's data does not have.

    alignax run experiments/pal.py:real --workdir runs/pal_real \
        --config.model.path=/ckpt --config.data.path=/pairs_with_user_id \
        --config.pal.unseen_users=10 --config.pal.few_shot=10 --config.model.dtype=bfloat16
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
from alignax.algorithms import real
from alignax.data import DataError
from alignax.losses.reward import bradley_terry_loss, ideal_point_loss, ideal_points
from alignax.models.mlp import MLPConfig, make_mlp
from alignax.tasks import simulators as sim
from alignax.train.few_shot import user_weights_loss
from alignax.tasks.splits import choose_on_validation, split_seeds
from alignax.train.plots import plot_curves
from alignax.train.small import fit_small


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    mode = real.config_mode(arg)
    if mode == "real":
        return _real_config()
    smoke = mode == "smoke"
    c = ml_collections.ConfigDict()
    c.seeds = [0] if smoke else [0, 1, 2, 3, 4]
    c.method = "pal"  # "pal" or "bt"
    c.variants = {"pal": {"method": "pal"}, "bt": {"method": "bt"}}
    c.data = dict(
        dim=8, num_groups=3, users_per_group=4 if smoke else 20, ideal_norm=3.0,
        temperature=2.0, train_per_user=50, val_per_user=50, test_per_user=50 if smoke else 200,
        unseen_per_group=2 if smoke else 10,
    )
    c.pal = dict(num_prototypes=3, hidden=())
    c.bt = dict(hidden=(32,))
    # PAL and BT: the same updates, early stopping every `steps_per_log`, the same lr grid
    # (smoke: one learning rate, to keep the test suite's time)
    c.train = dict(steps=100 if smoke else 3000, steps_per_log=25 if smoke else 50,
                   learning_rates=[1e-2] if smoke else [3e-3, 1e-2])
    c.few_shot = dict(shots=[2, 5, 10, 20], steps=50 if smoke else 300, learning_rate=0.1,
                      l2=0.0)
    return c


def _real_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seeds = [0]
    real.add_real_fields(c, max_length=1024, user_field="user_id")
    # num_prototypes: the grid of K chosen on validation; out_dim: f's output dimension
    c.pal = dict(num_prototypes=[2, 4, 8], hidden=(), out_dim=64, unseen_users=10, few_shot=10)
    c.bt = dict(hidden=(32,))
    c.train = dict(steps=2000, steps_per_log=50, learning_rates=[1e-3, 1e-2])
    c.few_shot = dict(steps=300, learning_rate=0.1, l2=0.0)
    return c


def validate(config: ml_collections.ConfigDict) -> None:
    """The `:real` keys (the toy's config has no model.path and nothing to check here)."""
    if not real.is_real(config):
        return
    real.require(config, "model.path", "data.path", what={
        "data.path": "an HF paired preference dataset with a user column"})
    ks = list(config.pal.num_prototypes)
    if not ks or any(isinstance(k, bool) or not isinstance(k, int) or k < 1 for k in ks):
        raise ValueError(f"pal.num_prototypes={ks!r} must be a non-empty list of ints >= 1")
    for key, low in (("unseen_users", 0), ("few_shot", 1), ("out_dim", 1)):
        value = config.pal[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"pal.{key}={value!r} must be an int >= {low}")
    if not list(config.train.learning_rates):
        raise ValueError("train.learning_rates must list at least one learning rate")


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
    """One seed's comparisons: training ([M, D] flat, user ids [M]), validation and test of the
    seen users ([U, N, D]), and the unseen users' shot pool ([U', max shots, D]) and test
    comparisons ([U', N, D]); each split from its own data seed (`split_seeds`)."""
    data = config.data
    splits = split_seeds(seed)
    ideal = group_ideal_points(data, seed)
    groups = np.repeat(np.arange(data.num_groups), data.users_per_group)
    train = comparisons(ideal, groups, data.train_per_user, data,
                        np.random.default_rng([splits.train, 45]))
    val = comparisons(ideal, groups, data.val_per_user, data,
                      np.random.default_rng([splits.validation, 45]))
    rng = np.random.default_rng([splits.test, 45])
    test = comparisons(ideal, groups, data.test_per_user, data, rng)
    # unseen users: new users of the same groups, drawn after the seen users' comparisons
    new_groups = np.repeat(np.arange(data.num_groups), data.unseen_per_group)
    pool = comparisons(ideal, new_groups, max(int(s) for s in config.few_shot.shots), data, rng)
    new_test = comparisons(ideal, new_groups, data.test_per_user, data, rng)
    flat = lambda a: a.reshape(-1, *a.shape[2:])  # noqa: E731
    return {"train_chosen": flat(train["chosen"]), "train_rejected": flat(train["rejected"]),
            "train_user": flat(train["user"]), "val_chosen": val["chosen"],
            "val_rejected": val["rejected"], "test_chosen": test["chosen"],
            "test_rejected": test["rejected"], "test_oracle": test["oracle"],
            "pool_chosen": pool["chosen"], "pool_rejected": pool["rejected"],
            "new_test_chosen": new_test["chosen"], "new_test_rejected": new_test["rejected"],
            "new_test_oracle": new_test["oracle"]}


def _fit_selected(config, workdir: str, loss_fn, init, train: dict, val: dict, seeds,
                  val_accuracy):
    """The validation procedure PAL and BT both get: for each learning rate of the grid,
    `train.steps` full-batch Adam updates with early stopping on validation accuracy; then per
    seed the learning rate whose early-stopped model is best on validation.

    val_accuracy: (params, val data) -> scalar. Returns (params stacked [S, ...], {seed:
    {"chosen_learning_rate", "chosen_steps", "val_accuracy", "final_loss"}})."""
    tr = config.train
    fits = {}
    for lr in tr.learning_rates:
        fits[f"lr={float(lr):g}"] = (float(lr), fit_small(
            os.path.join(workdir, f"lr={float(lr):g}"), loss_fn=loss_fn, init_params=init,
            tx=optax.adam(float(lr)), num_steps=int(tr.steps), data=train, seeds=seeds,
            per_seed_data=True, eval_fn=lambda p, v: {"val_accuracy": val_accuracy(p, v)},
            eval_data=val, select=("val_accuracy", "max"), steps_per_log=int(tr.steps_per_log)))
    chosen, info = [], {}
    for i, s in enumerate(seeds):
        name, _ = choose_on_validation(fits, lambda f, i=i: float(f[1].best_score[i]))
        lr, fit = fits[name]
        chosen.append(jax.tree.map(lambda x, i=i: x[i], fit.best_params))
        info[s] = {"chosen_learning_rate": lr, "chosen_steps": float(fit.best_step[i]),
                   "val_accuracy": float(fit.best_score[i]),
                   "final_loss": float(fit.final_loss[i])}
    return jax.tree.map(lambda *xs: jnp.stack(xs), *chosen), info


def bt_accuracy(r, p, chosen, rejected):
    """Share of pairs [..., D] whose chosen side gets the higher reward r(y) (MLP `r`)."""
    return jnp.mean(r.apply(p, chosen) - r.apply(p, rejected) > 0)


def fit_bt(config, workdir: str, data: dict, seeds: list[int]) -> list[dict[str, float]]:
    """One BT reward per seed (full-batch Adam on all comparisons, ignoring who made them),
    every seed in one `fit_small` program per learning rate, selected on validation; each
    seed's test accuracy and selection record."""
    r, params, info = fit_bt_params(config, workdir, data, seeds)
    acc = np.asarray(jax.jit(jax.vmap(functools.partial(bt_accuracy, r)))(
        params, data["test_chosen"], data["test_rejected"]))
    return [{"test_seen_accuracy": float(acc[i]), **info[s]} for i, s in enumerate(seeds)]


def fit_bt_params(config, workdir: str, data: dict, seeds: list[int]):
    """The BT fit of `fit_bt`: train_chosen/train_rejected [S, M, D], val_* [S, ..., D].
    Returns (the reward MLP, params [S, ...], per-seed selection info)."""
    r = make_mlp(MLPConfig(in_dim=data["train_chosen"].shape[-1], hidden=tuple(config.bt.hidden),
                           out_dim=1))

    def loss_fn(p, d):
        return bradley_terry_loss(r.apply(p, d["train_chosen"]),
                                  r.apply(p, d["train_rejected"])).mean()

    params, info = _fit_selected(
        config, workdir, loss_fn, lambda key: r.init(jax.random.split(key)[0]),
        {k: data[k] for k in ("train_chosen", "train_rejected")},
        {k: data[k] for k in ("val_chosen", "val_rejected")}, seeds,
        lambda p, v: bt_accuracy(r, p, v["val_chosen"], v["val_rejected"]))
    return r, params, info


def split_logits(p, d, split: str):
    """The user logits of split `split`'s comparisons: [U, 1, K] against the toy's per-user
    arrays [U, N, D], or [N, K] against flat arrays [N, D] with user indices `<split>_user`."""
    if f"{split}_user" in d:
        return p["user_logits"][d[f"{split}_user"]]
    return p["user_logits"][:, None]


def fit_pal(config, workdir: str, data: dict, seeds: list[int], *, num_users: int | None = None,
            num_prototypes: int | None = None):
    """PAL-A for every seed in one `fit_small` program per learning rate: full-batch Adam on the
    ideal-point loss of all comparisons of all users, selected on validation.

    data: train_chosen/train_rejected [S, M, D], train_user [S, M]; validation either per user
    (val_chosen/val_rejected [S, U, N, D], the toy) or flat with val_user [S, V]. num_users:
    U (default: the toy's test_chosen.shape[1]); num_prototypes: K (default
    `pal.num_prototypes`); f maps D to `pal.out_dim` (default D). Returns (the map f, params
    [S, ...], per-seed selection info)."""
    dim = data["train_chosen"].shape[-1]
    k = int(config.pal.num_prototypes if num_prototypes is None else num_prototypes)
    out_dim = int(config.pal.get("out_dim", dim))
    num_users = data["test_chosen"].shape[1] if num_users is None else int(num_users)
    f = make_mlp(MLPConfig(in_dim=dim, hidden=tuple(config.pal.hidden), out_dim=out_dim))

    def init(key):
        key_model, key_users = jax.random.split(key)
        return {"f": f.init(key_model),
                "prototypes": jax.random.normal(jax.random.fold_in(key_model, 1), (k, out_dim)),
                "user_logits": 0.01 * jax.random.normal(key_users, (num_users, k))}

    def loss_fn(p, d):
        a = ideal_points(p["user_logits"], p["prototypes"])[d["train_user"]]
        return ideal_point_loss(f.apply(p["f"], d["train_chosen"]),
                                f.apply(p["f"], d["train_rejected"]), a).mean()

    def val_accuracy(p, v):
        margin = pal_margin(f, p, v["val_chosen"], v["val_rejected"], split_logits(p, v, "val"))
        return jnp.mean(margin > 0)

    params, info = _fit_selected(
        config, workdir, loss_fn, init,
        {k: data[k] for k in ("train_chosen", "train_rejected", "train_user")},
        {k: data[k] for k in ("val_chosen", "val_rejected", "val_user") if k in data}, seeds,
        val_accuracy)
    return f, params, info


def seen_accuracy(f, params, data):
    """[S] test accuracy of every seed's PAL on the seen users' test comparisons (per-user
    [S, U, N, D] arrays, or flat with test_user [S, N])."""
    @jax.jit
    @jax.vmap
    def accuracy(p, d):
        margin = pal_margin(f, p, d["test_chosen"], d["test_rejected"],
                            split_logits(p, d, "test"))
        return jnp.mean(margin > 0)

    return np.asarray(accuracy(params, {k: data[k] for k in (
        "test_chosen", "test_rejected", "test_user") if k in data}))


def fit_unseen_users(config, workdir: str, f, params, data: dict, seeds: list[int],
                     shots: list[int]):
    """Few-shot fits of the unseen users' logits, f and prototypes frozen, every seed at once.

    The logits of every (shot count H, unseen user U) are one [H, U, K] parameter tree per seed;
    the objective is the sum of the users' own losses (`user_weights_loss`, the first `s`
    comparisons of the user's pool for shot count `s`), so each user's gradient is its own and
    Adam, elementwise, updates each user exactly as a separate fit from the uniform mixture.

    data: pool_chosen/pool_rejected [S, U, n, D] (each user's shot pool, n >= max shots) and
    new_test_chosen/new_test_rejected [S, U, N, D] (the toy), or flat [S, N, D] with
    new_test_user [S, N] (each comparison's unseen user, `:real`).

    Returns (the fitted logits [S, H, U, K], the held-out accuracy [S, H] of each seed and shot
    count, over all the unseen users' test comparisons).
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

    flat = "new_test_user" in data  # [S, N] user of each test comparison (else [S, U, N])

    @jax.jit
    @jax.vmap
    def accuracy(p, logits, d):  # [H] held-out accuracy per shot count
        def margins(w):  # w: [U, K]
            return pal_margin(f, p, d["new_test_chosen"], d["new_test_rejected"],
                              w[d["new_test_user"]] if flat else w[:, None])
        return jnp.mean(jax.vmap(margins)(logits) > 0, axis=(1,) if flat else (1, 2))

    test = {k: data[k] for k in ("new_test_chosen", "new_test_rejected", "new_test_user")
            if k in data}
    return fit.params, np.asarray(accuracy(params, fit.params, test))


def run_seeds(config: ml_collections.ConfigDict, workdir: str) -> dict[int, dict[str, float]]:
    """Every seed of one variant at once: BT, or PAL-A then the unseen users' few-shot fits
    (`:real`: both on a checkpoint's embeddings, `run_real`)."""
    if real.is_real(config):
        return run_real(config, workdir)
    if config.method not in ("pal", "bt"):
        raise ValueError(f"unknown method {config.method!r}; valid: 'pal', 'bt'")
    seeds = [int(s) for s in config.seeds]
    per_seed = [make_seed_data(config, s) for s in seeds]
    data = {k: jnp.asarray(np.stack([d[k] for d in per_seed])) for k in per_seed[0]}
    out = {s: {"test_oracle_accuracy": float(d["test_oracle"].mean())}
           for s, d in zip(seeds, per_seed)}
    if config.method == "bt":
        for s, res in zip(seeds, fit_bt(config, os.path.join(workdir, "bt"), data, seeds)):
            out[s].update(res)
        return out

    f, params, info = fit_pal(config, os.path.join(workdir, "pal_a"), data, seeds)
    seen = seen_accuracy(f, params, data)
    shots = sorted(int(s) for s in config.few_shot.shots)
    _, unseen = fit_unseen_users(config, os.path.join(workdir, "few_shot"), f, params, data,
                                 seeds, shots)
    for i, (s, d) in enumerate(zip(seeds, per_seed)):
        out[s].update(info[s], test_seen_accuracy=float(seen[i]),
                      test_unseen_oracle_accuracy=float(d["new_test_oracle"].mean()))
        out[s].update({f"test_unseen_accuracy_{n}": float(unseen[i, j])
                       for j, n in enumerate(shots)})
    return out


# --- :real ------------------------------------------------------------------------------------

def real_splits(config, users: np.ndarray, names: list, name: str) -> dict[str, np.ndarray]:
    """Row indices of the `:real` splits: seen users' train / val / test rows (each user's
    pairs split by `held_out_split` in dataset order), the unseen users' shot rows
    [U', few_shot] and test rows.

    Raises:
      DataError: no seen user is left, a seen user with too few pairs to split, an unseen
        user with no pair beyond its shots (one line naming the user and the config key).
    """
    num_users, unseen, shots = len(names), int(config.pal.unseen_users), int(config.pal.few_shot)
    seen = num_users - unseen
    if seen < 1:
        raise DataError(f"{name}: pal.unseen_users={unseen} leaves no seen user ({num_users} "
                        "users)", path=name)
    out = {k: [] for k in ("train", "val", "test", "pool", "new_test")}
    for u in range(num_users):
        rows = np.flatnonzero(users == u)
        if u < seen:
            try:
                parts = real.held_out_split(len(rows), config.data.eval_fraction,
                                            config.data.max_eval_rows)
            except ValueError as e:
                raise DataError(f"{name}: user {names[u]!r}: {e} (data.eval_fraction="
                                f"{config.data.eval_fraction}); give it more pairs or count it "
                                "among pal.unseen_users", path=name) from None
            for key, part in zip(("train", "val", "test"), parts):
                out[key].append(rows[part])
        elif len(rows) <= shots:
            raise DataError(f"{name}: unseen user {names[u]!r} has {len(rows)} pairs: "
                            f"pal.few_shot={shots} leaves none to test", path=name)
        else:
            out["pool"].append(rows[:shots])
            out["new_test"].append(rows[shots:])
    return {k: (np.stack(v) if k == "pool" else np.concatenate(v)) if v else
            np.zeros((0, shots) if k == "pool" else (0,), np.int64) for k, v in out.items()}


def real_data(emb: dict, splits: dict, num_seen: int, num_seeds: int) -> dict[str, jax.Array]:
    """The fit arrays of the `:real` splits, standardised with the training pairs' per-feature
    mean and std, each repeated for the S seeds ([S, ...]): train/val/test_* [S, N, D] with
    *_user [S, N] (seen users 0..U-1), pool_* [S, U', few_shot, D], new_test_* [S, N', D]
    with new_test_user [S, N'] (unseen users 0..U'-1; users >= `num_seen` are unseen)."""
    train = np.concatenate([emb["chosen"][splits["train"]], emb["rejected"][splits["train"]]])
    mean, std = train.mean(0), np.maximum(train.std(0), 1e-6)
    out = {}
    for split in ("train", "val", "test", "pool", "new_test"):
        rows = splits[split]
        for side in ("chosen", "rejected"):
            out[f"{split}_{side}"] = ((emb[side][rows] - mean) / std).astype(np.float32)
        if split != "pool":
            out[f"{split}_user"] = (emb["users"][rows] - (num_seen if split == "new_test" else 0)
                                    ).astype(np.int32)
    return {k: jax.device_put(np.broadcast_to(v, (num_seeds, *v.shape))) for k, v in out.items()}


def run_real(config: ml_collections.ConfigDict, workdir: str) -> dict[int, dict[str, float]]:
    """`:real` (module docstring): PAL-A with K chosen on validation, the unseen users'
    few-shot fits and the BT baseline, every seed at once on the checkpoint's embeddings."""
    seeds = [int(s) for s in config.seeds]
    emb = real.pair_embeddings(config, user_field=config.data.user_field)
    splits = real_splits(config, emb["users"], emb["names"], emb["name"])
    num_seen = len(emb["names"]) - int(config.pal.unseen_users)
    data = real_data(emb, splits, num_seen, len(seeds))
    sizes = {f"num_{k}_pairs": float(len(v)) for k, v in splits.items() if k != "pool"}
    out = {s: {"num_seen_users": float(num_seen), **sizes,
               "num_unseen_users": float(config.pal.unseen_users)} for s in seeds}

    r, bt_params, bt_info = fit_bt_params(config, os.path.join(workdir, "bt"), data, seeds)
    bt_acc = jax.jit(jax.vmap(functools.partial(bt_accuracy, r)))
    bt_seen = np.asarray(bt_acc(bt_params, data["test_chosen"], data["test_rejected"]))
    for i, s in enumerate(seeds):
        out[s].update({f"bt_{k}": v for k, v in bt_info[s].items()},
                      bt_test_seen_accuracy=float(bt_seen[i]))

    fits = {}
    for k in config.pal.num_prototypes:
        fits[f"K={int(k)}"] = (int(k), *fit_pal(
            config, os.path.join(workdir, "pal_a", f"K={int(k)}"), data, seeds,
            num_users=num_seen, num_prototypes=int(k)))
    name, record = choose_on_validation(
        fits, lambda fit: float(np.mean([fit[3][s]["val_accuracy"] for s in seeds])))
    k, f, params, info = fits[name]
    seen = seen_accuracy(f, params, data)
    for i, s in enumerate(seeds):
        out[s].update(info[s], chosen_num_prototypes=float(k),
                      test_seen_accuracy=float(seen[i]),
                      **{f"val_accuracy_{n.replace('=', '')}": float(v)
                         for n, v in record["scores"].items()})
    if not int(config.pal.unseen_users):
        return out
    bt_unseen = np.asarray(bt_acc(bt_params, data["new_test_chosen"],
                                  data["new_test_rejected"]))
    shots = [0, int(config.pal.few_shot)]
    _, unseen = fit_unseen_users(config, os.path.join(workdir, "few_shot"), f, params, data,
                                 seeds, shots)
    for i, s in enumerate(seeds):
        out[s]["bt_test_unseen_accuracy"] = float(bt_unseen[i])
        out[s].update({f"test_unseen_accuracy_{n}": float(unseen[i, j])
                       for j, n in enumerate(shots)})
    return out


# --- claims and plots -------------------------------------------------------------------------

def claims(results) -> list[protocol.Claim]:
    if "default" in results:  # :real: a user's data has no generating-model oracle
        return []
    shots = _shots(results)
    n = 10 if 10 in shots else shots[len(shots) // 2]
    seen = protocol.per_seed(results, "pal", "test_seen_accuracy")
    unseen = protocol.per_seed(results, "pal", f"test_unseen_accuracy_{n}")
    ratio = {s: unseen[s] / seen[s] for s in seen if s in unseen}
    bt = results["bt"]["metrics"]["test_seen_accuracy"]["mean"]
    oracle = results["pal"]["metrics"]["test_oracle_accuracy"]["mean"]
    pal = results["pal"]["metrics"]["test_seen_accuracy"]["mean"]
    refs = f"PAL {pal:.3f}, oracle {oracle:.3f}, BT {bt:.3f} (test means, seen users)"
    return [
        protocol.compare(
            "PAL's test accuracy on seen users is within 3 points of the generating-model "
            "oracle (oracle - PAL <= 0.03)", results, ("pal", "test_oracle_accuracy"),
            ("pal", "test_seen_accuracy"), at_most=0.03, detail=refs),
        protocol.compare(
            "PAL's test accuracy on seen users is >= 15 points above a single BT reward",
            results, ("pal", "test_seen_accuracy"), ("bt", "test_seen_accuracy"),
            at_least=0.15, detail=refs),
        protocol.decide(
            f"Unseen users fitted on {n} comparisons (f and prototypes frozen) reach >= 85% "
            "of PAL's seen-user test accuracy", ratio, kind="threshold", at_least=0.85,
            measured={f"test_unseen_accuracy_{n}": float(np.mean(list(unseen.values()))),
                      "test_seen_accuracy": pal,
                      "ratio": float(np.mean(list(ratio.values())))},
            detail="per-seed ratio unseen / seen"),
    ]


def _shots(results) -> list[int]:
    names = results["pal"]["metrics"]
    return sorted(int(k.rsplit("_", 1)[1]) for k in names
                  if k.startswith("test_unseen_accuracy_"))


def plots(results, workdir: str) -> list[str]:
    """Unseen users' held-out accuracy against the number of few-shot comparisons."""
    if "default" in results:  # :real: metrics only
        return []
    m = results["pal"]["metrics"]
    shots = np.array(_shots(results), np.float64)
    flat = lambda name, metrics=m: np.full(len(shots), metrics[name]["mean"])  # noqa: E731
    curves = {"PAL, unseen users": (
                  shots, [m[f"test_unseen_accuracy_{s:.0f}"]["mean"] for s in shots],
                  [m[f"test_unseen_accuracy_{s:.0f}"]["std"] for s in shots]),
              "PAL, seen users": (shots, flat("test_seen_accuracy")),
              "oracle": (shots, flat("test_unseen_oracle_accuracy"))}
    if "bt" in results:
        curves["single BT"] = (shots, flat("test_seen_accuracy", results["bt"]["metrics"]))
    path = os.path.join(workdir, "plots", "pal_unseen_users.png")
    return [plot_curves(curves, path, title="PAL: few-shot personalisation of unseen users",
                        xlabel="comparisons of the new user", ylabel="held-out accuracy")]
