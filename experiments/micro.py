"""MiCRo: a context-gated mixture of BT heads, then online per-user routing, against single BT.

Paper: Shen et al. 2025, "MiCRo: Mixture Modeling and Context-aware Routing for Personalized
Preference Learning" (arXiv 2505.24846). Stage 1 trains K Bradley-Terry heads r_k and a
context-aware gate w(c) = softmax(g(c)) on binary preferences with hidden annotator groups by the
mixture likelihood P(y_c > y_r | c) = sum_k w_k(c) sigmoid(r_k(y_c) - r_k(y_r))
(`alignax.losses.reward.mixture_bradley_terry_loss`). Stage 2 adapts the mixture weights of one
user context online from a few labelled comparisons with multiplicative weights,
h_k <- h_k - eta * l_k, l_k = -log sigmoid(r_k(y_c) - r_k(y_r))
(`alignax.losses.reward.hedge_routing_update`; the paper's exact router update is not pinned
in our notes, this is the Hedge form, and with eta = 1 it is the Bayes posterior over heads).
The routed weights of user u on prompt c are softmax(g(c) + h_u): the gate's prompt signal times
the user's evidence.

Setting: items y ~ N(0, I_8); 3 latent groups with linear rewards r_g(y) = w_g . y (unit w_g,
pairwise cosine -1/2, so the population-average reward is zero); labels are Bradley-Terry draws
sigmoid(6 (r_g(y_1) - r_g(y_2))) of the annotator's group. Each comparison has a prompt
c ~ N(2 e_g, I_3): partial group signal (the posterior of the true group given c is about 0.8).
Stage 1: 6000 comparisons of 120 training users (groups hidden), K = 3 linear heads and an MLP
gate (3 -> 32 -> 3), full-batch Adam (`alignax.train.small.fit_small`, every seed at once).
Stage 2: 60 new users (20 per group), each with an
explicit user context (its id) that owns one Hedge state; the router sees up to 50 labelled
comparisons of the user, one at a time; every user is evaluated on 200 held-out comparisons
after 0, 1, 2, 5, 10, 20 and 50 labels. Baselines on the same data and test comparisons: "bt", a
single BT reward of the item features (MLP 8 -> 32 -> 1), and "bt_prompt", a single BT reward
of prompt and item (MLP on [c, y]), which can use the same partial prompt signal as the gate.
All accuracies are against the sampled labels; the run also reports the Bayes accuracy given
the prompt and given the true group.

Splits (docs/protocol.md): the group rewards are experiment seed s's world; the stage-1 training
comparisons, the validation comparisons (1000, from 40 other users of the same population) and
the test users (routing streams and test comparisons) come from the disjoint data seeds
`split_seeds(s)` (3s, 3s+1, 3s+2).

Selection on validation, the same for MiCRo stage 1 and both BT baselines: `train.steps` = 1000
full-batch Adam updates with early stopping on validation accuracy (`fit_small(select=
("val_accuracy", "max"))`, every 25 updates), for each learning rate of `train.learning_rates`
= (3e-3, 1e-2); each seed keeps the learning rate whose early-stopped model has the best
validation accuracy (`choose_on_validation`; recorded as `chosen_learning_rate`,
`chosen_steps`, `val_accuracy`). The previous version trained MiCRo 1500 steps at 1e-2 and the BT
baselines 500 steps at 3e-3, set by hand. The Hedge rate 1 is not tuned (it makes the router the
Bayes posterior over heads). The toy parameters (prompt signal 2, label scale 6) define the
problem and were set before the first results; they are unchanged.

Claims (5 seeds, 95% t intervals over seeds, test split):
- sanity: a single BT reward of the items is <= 0.70 accurate. It holds by construction: the
  group rewards sum to zero, so no reward of the items alone beats chance on the population;
- threshold: MiCRo stage 1 (mixture of BT heads with the prompt gate, no routing) reaches
  >= 0.80 test accuracy;
- threshold: after online routing with 50 labels every group reaches >= 0.90 (per seed the
  lowest of the three groups' accuracies).
The prompt-aware BT is reported in the details, not claimed: it uses the same prompt signal as
the gate and lands near stage 1 (see RESULTS).

    alignax run experiments/micro.py            # full setting, 3 seeds
    alignax run experiments/micro.py:smoke      # seconds, for the tests

`:real` runs stage 1 and stage 2 on the frozen embeddings of a Hugging Face checkpoint
(`model.path`, `alignax.algorithms.pretrained.load_pretrained(..., "lm")`) for a paired
preference dataset (`data.path`, TRL's explicit or implicit, standard or conversational
format) with a user column (`data.user_field`, default "user_id": a string or an int per row,
`alignax.data.hf_datasets.user_ids`; a row without one is a one-line DataError naming it).
Each side is prompt + response rendered with the checkpoint's chat template (`tokenize_pair`)
and embedded as the final hidden state at its last token (`alignax.eval.embeddings.
sequence_embeddings`, pool "last"): the heads' input y. The gate's context c is the embedding
of the prompt alone (the same ids, the prompt's tokens, generation cue included, at its last
token). A per-comparison context such as a user's stated criteria belongs in the prompt (e.g. a
system message), where the gate sees it; no separate context column is read. Items and
contexts are standardised per feature with the training pairs' mean and std.

Users are indexed in first-seen order; the last `micro.test_users` are the test users, whom
stage 1 never sees (the toy's new users). Stage 1 trains on the other users' pairs, without
their ids, split in dataset order by `alignax.algorithms.real.held_out_split` (the last
`data.eval_fraction` are held-out test pairs of these users, as many before them validation,
the rest train). Stage 2: each test user's first max(`micro.eval_labels`) pairs are its label
stream, seen one at a time by its own Hedge state (rate `micro.hedge_rate`); the rest are its
test pairs, scored after 0 (the gate alone) and each count of `micro.eval_labels` labels. A
test user needs more than max(`micro.eval_labels`) pairs. The baseline is the toy's single BT
reward (MLP `bt.hidden`) of the item embedding (which already holds the prompt), on the same
pairs; selection on validation as in the toy, for both.

Metrics: `test_routed_accuracy_<n>` (the test users' test pairs after n labels) and
`bt_test_accuracy` (BT on the same pairs); `test_seen_accuracy` and `bt_test_seen_accuracy`
(stage 1, gate only, and BT on the held-out pairs of the training users); the selection
records (`val_accuracy`, `chosen_learning_rate`, `chosen_steps`, `bt_*`) and the split sizes.
No claim is evaluated (summary "claims" is []): the toy's claims refer to its known groups.

    alignax run experiments/micro.py:real --workdir runs/micro_real \
        --config.model.path=/ckpt --config.data.path=/pairs_with_user_id \
        --config.micro.test_users=10 --config.model.dtype=bfloat16
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
from alignax.losses.reward import (bradley_terry_loss, hedge_routing_update,
                                   mixture_bradley_terry_loss)
from alignax.models.mlp import MLPConfig, make_mlp
from alignax.tasks import simulators as sim
from alignax.tasks.splits import choose_on_validation, split_seeds
from alignax.train.plots import plot_curves
from alignax.train.small import fit_small

METHODS = ("micro", "bt", "bt_prompt")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    mode = real.config_mode(arg)
    if mode == "real":
        return _real_config()
    smoke = mode == "smoke"
    c = ml_collections.ConfigDict()
    c.seeds = [0] if smoke else [0, 1, 2, 3, 4]
    c.method = "micro"
    c.variants = {m: {"method": m} for m in METHODS}
    c.data = dict(
        dim=8, prompt_dim=3, num_groups=3, prompt_signal=2.0, label_scale=6.0,
        num_train=600 if smoke else 6000, train_users=120,
        num_val=200 if smoke else 1000, val_users=40,
        test_users_per_group=4 if smoke else 20, route_labels=50,
        test_per_user=50 if smoke else 200,
    )
    c.micro = dict(num_heads=3, head_hidden=(), gate_hidden=(32,), hedge_rate=1.0,
                   eval_labels=[0, 1, 2, 5, 10, 20, 50])
    c.bt = dict(hidden=(32,))
    # every variant: the same updates, early stopping every `steps_per_log`, the same lr grid
    # (smoke: one learning rate, to keep the test suite's time)
    c.train = dict(steps=100 if smoke else 1000, steps_per_log=25,
                   learning_rates=[1e-2] if smoke else [3e-3, 1e-2])
    return c


def _real_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seeds = [0]
    real.add_real_fields(c, max_length=1024, user_field="user_id")
    c.micro = dict(num_heads=4, head_hidden=(), gate_hidden=(32,), hedge_rate=1.0,
                   eval_labels=[0, 1, 2, 5, 10], test_users=10)
    c.bt = dict(hidden=(32,))
    c.train = dict(steps=2000, steps_per_log=50, learning_rates=[1e-3, 1e-2])
    return c


def validate(config: ml_collections.ConfigDict) -> None:
    """The `:real` keys (the toy's config has no model.path and nothing to check here)."""
    if not real.is_real(config):
        return
    real.require(config, "model.path", "data.path", what={
        "data.path": "an HF paired preference dataset with a user column"})
    labels = list(config.micro.eval_labels)
    if not labels or any(isinstance(n, bool) or not isinstance(n, int) or n < 0 for n in labels):
        raise ValueError(f"micro.eval_labels={labels!r} must be a non-empty list of ints >= 0")
    for key in ("num_heads", "test_users"):
        value = config.micro[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"micro.{key}={value!r} must be an int >= 1")
    if not list(config.train.learning_rates):
        raise ValueError("train.learning_rates must list at least one learning rate")


# --- data -------------------------------------------------------------------------------------

def group_rewards(data, seed: int) -> np.ndarray:
    """[G, D] unit reward directions with pairwise cosine -1/(G - 1) (they sum to zero)."""
    rng = np.random.default_rng([seed, 60])
    q, _ = np.linalg.qr(rng.standard_normal((data.dim, data.num_groups)))
    w = q.T - q.T.mean(0)
    return w / np.linalg.norm(w, axis=1, keepdims=True)


def comparisons(w, groups, data, rng) -> dict[str, np.ndarray]:
    """One labelled comparison per entry of `groups` (any shape S).

    Returns chosen/rejected items [S, D], prompts [S, P], the Bayes verdicts on the sampled
    label given the prompt ("bayes_prompt") and given the true group ("bayes_group"), [S].
    """
    shape, d, g_num = groups.shape, data.dim, data.num_groups
    y1, y2 = rng.standard_normal((2, *shape, d))
    onehot = np.eye(g_num, data.prompt_dim)
    prompts = data.prompt_signal * onehot[groups] + rng.standard_normal((*shape, data.prompt_dim))
    margins = data.label_scale * ((y1 - y2) @ w.T)  # [S, G]
    m_true = np.take_along_axis(margins, groups[..., None], -1)[..., 0]
    label = rng.random(shape) < sim.sigmoid(m_true)
    logp = -0.5 * np.sum((prompts[..., None, :] - data.prompt_signal * onehot) ** 2, -1)
    post = np.exp(logp - logp.max(-1, keepdims=True))
    post /= post.sum(-1, keepdims=True)
    p_prompt = np.sum(post * sim.sigmoid(margins), -1)
    return {
        "chosen": np.where(label[..., None], y1, y2).astype(np.float32),
        "rejected": np.where(label[..., None], y2, y1).astype(np.float32),
        "prompt": prompts.astype(np.float32),
        "bayes_prompt": np.where(label, p_prompt > 0.5, p_prompt < 0.5).astype(np.float32),
        "bayes_group": np.where(label, m_true > 0, m_true < 0).astype(np.float32),
    }


# --- models -----------------------------------------------------------------------------------

def mixture_correct(head_margins, log_weights):
    """1 where sum_k w_k sigmoid(d_k) > 1/2 (the chosen side is predicted): [..., K] -> [...]."""
    p = jnp.sum(jax.nn.softmax(log_weights, -1) * jax.nn.sigmoid(head_margins), -1)
    return jnp.where(p > 0.5, 1.0, jnp.where(p == 0.5, 0.5, 0.0))


def route_and_eval(params, stream, test, *, heads, gate, eval_labels, rate):
    """Stage 2 for a batch of users: Hedge over their labelled stream, accuracy at checkpoints.

    stream: [U, L] comparisons of each user (chosen/rejected [U, L, D]); test: [U, N] (the toy)
    or flat [N] with "user" [N], the test user of each comparison. Returns [len(eval_labels), U]
    per-user accuracies (flat: [len(eval_labels)] accuracies over all N comparisons) of the
    routed mixture softmax(g(c) + h_u) on the tests.
    """
    d_stream = heads.apply(params["heads"], stream["chosen"]) - heads.apply(
        params["heads"], stream["rejected"])  # [U, L, K]
    d_test = heads.apply(params["heads"], test["chosen"]) - heads.apply(
        params["heads"], test["rejected"])  # [U, N, K]
    gate_test = gate.apply(params["gate"], test["prompt"])  # [U, N, K]
    num_users, _, k = d_stream.shape

    def per_user(d_user):
        def update(h, d_one):
            h = hedge_routing_update(h, d_one[None], jnp.zeros_like(d_one[None]),
                                     learning_rate=rate)
            return h, h

        h0 = jnp.full((k,), -jnp.log(k))
        _, hs = jax.lax.scan(update, h0, d_user)
        return jnp.concatenate([h0[None], hs], 0)  # [L + 1, K]: after 0..L labels

    states = jax.vmap(per_user)(d_stream)  # [U, L + 1, K]
    accs = []
    for n in eval_labels:
        if "user" in test:
            accs.append(jnp.mean(mixture_correct(d_test, gate_test + states[test["user"], n])))
            continue
        logw = gate_test + states[:, n][:, None]
        accs.append(jnp.mean(mixture_correct(d_test, logw), axis=-1))
    return jnp.stack(accs)


def make_data(config, seed: int) -> dict[str, dict[str, np.ndarray]]:
    """One seed's stage-1 training comparisons (train [M]), validation comparisons (val [V]),
    each test user's routing stream (stream [U, L]) and test comparisons (test [U, N]); each
    split from its own data seed (`split_seeds`), the group rewards from `seed`."""
    data = config.data
    splits = split_seeds(seed)
    w = group_rewards(data, seed)
    g_num = data.num_groups
    rng = np.random.default_rng([splits.train, 61])
    train_groups = rng.integers(0, g_num, data.train_users)[
        rng.integers(0, data.train_users, data.num_train)]
    train = comparisons(w, train_groups, data, rng)
    rng = np.random.default_rng([splits.validation, 61])
    val_groups = rng.integers(0, g_num, data.val_users)[
        rng.integers(0, data.val_users, data.num_val)]
    val = comparisons(w, val_groups, data, rng)
    rng = np.random.default_rng([splits.test, 61])
    test_groups = np.repeat(np.arange(g_num), data.test_users_per_group)
    stream = comparisons(w, np.repeat(test_groups[:, None], data.route_labels, 1), data, rng)
    test = comparisons(w, np.repeat(test_groups[:, None], data.test_per_user, 1), data, rng)
    return {"train": train, "val": val, "stream": stream, "test": test}


def _stack(per_seed: list[dict], part: str, keys) -> dict[str, jax.Array]:
    return {k: jnp.asarray(np.stack([d[part][k] for d in per_seed])) for k in keys}


def _fit_selected(config, workdir: str, loss_fn, init, train: dict, val: dict, seeds,
                  val_correct):
    """The validation procedure every variant gets: for each learning rate of the grid,
    `train.steps` full-batch Adam updates with early stopping on validation accuracy; then per
    seed the learning rate whose early-stopped model is best on validation.

    val_correct: (params, val comparisons) -> [V] 1/0 hits. Returns (params stacked [S, ...],
    {seed: {"chosen_learning_rate", "chosen_steps", "val_accuracy", "final_loss"}},
    {seed: choose_on_validation record})."""
    tr = config.train

    def val_metrics(p, v):
        return {"val_accuracy": jnp.mean(val_correct(p, v))}

    fits = {}
    for lr in tr.learning_rates:
        fits[f"lr={float(lr):g}"] = (float(lr), fit_small(
            os.path.join(workdir, f"lr={float(lr):g}"), loss_fn=loss_fn, init_params=init,
            tx=optax.adam(float(lr)), num_steps=int(tr.steps), data=train, seeds=seeds,
            per_seed_data=True, eval_fn=val_metrics, eval_data=val,
            select=("val_accuracy", "max"), steps_per_log=int(tr.steps_per_log)))
    chosen, info, records = [], {}, {}
    for i, s in enumerate(seeds):
        name, records[s] = choose_on_validation(fits, lambda f, i=i: float(f[1].best_score[i]))
        lr, fit = fits[name]
        chosen.append(jax.tree.map(lambda x, i=i: x[i], fit.best_params))
        info[s] = {"chosen_learning_rate": lr, "chosen_steps": float(fit.best_step[i]),
                   "val_accuracy": float(fit.best_score[i]),
                   "final_loss": float(fit.final_loss[i])}
    params = jax.tree.map(lambda *xs: jnp.stack(xs), *chosen)
    return params, info, records


def fit_bt(config, workdir: str, train: dict, val: dict, seeds, *, with_prompt: bool):
    """A single BT reward of the item (or of [prompt, item]) on all comparisons, every seed at
    once, selected on validation (`_fit_selected`). train/val: [S, M, ...]. Returns (reward
    model, params [S, ...], per-seed selection info)."""
    in_dim = train["chosen"].shape[-1] + (train["prompt"].shape[-1] if with_prompt else 0)
    r = make_mlp(MLPConfig(in_dim=in_dim, hidden=tuple(config.bt.hidden), out_dim=1))

    def reward(p, d, y):
        return r.apply(p, jnp.concatenate([d["prompt"], y], -1) if with_prompt else y)

    def loss_fn(p, d):
        return bradley_terry_loss(reward(p, d, d["chosen"]), reward(p, d, d["rejected"])).mean()

    def correct(p, d):
        return (reward(p, d, d["chosen"]) > reward(p, d, d["rejected"])).astype(jnp.float32)

    params, info, _ = _fit_selected(config, workdir, loss_fn, r.init, train, val, seeds,
                                    correct)
    return r, params, info


def fit_mixture(config, workdir: str, train: dict, val: dict, seeds):
    """Stage 1: full-batch Adam on the mixture-BT likelihood for every seed at once, selected
    on validation (`_fit_selected`).

    train/val: chosen/rejected [S, M, D], prompt [S, M, P]. Returns (heads, gate, params
    [S, ...], per-seed selection info).
    """
    mc = config.micro
    k = int(mc.num_heads)
    heads = make_mlp(MLPConfig(in_dim=train["chosen"].shape[-1], hidden=tuple(mc.head_hidden),
                               out_dim=k))
    gate = make_mlp(MLPConfig(in_dim=train["prompt"].shape[-1], hidden=tuple(mc.gate_hidden),
                              out_dim=k))

    def init(key):
        k_heads, k_gate = jax.random.split(key)
        return {"heads": heads.init(k_heads), "gate": gate.init(k_gate)}

    def loss_fn(p, d):
        rc, rr = heads.apply(p["heads"], d["chosen"]), heads.apply(p["heads"], d["rejected"])
        return mixture_bradley_terry_loss(rc, rr, gate.apply(p["gate"], d["prompt"])).mean()

    def correct(p, d):
        margins = heads.apply(p["heads"], d["chosen"]) - heads.apply(p["heads"], d["rejected"])
        return mixture_correct(margins, gate.apply(p["gate"], d["prompt"]))

    params, info, _ = _fit_selected(config, workdir, loss_fn, init, train, val, seeds, correct)
    return heads, gate, params, info


def run_seeds(config: ml_collections.ConfigDict, workdir: str) -> dict[int, dict[str, float]]:
    """Every seed of one variant: one fit_small program for the seeds, then each seed's
    held-out accuracies (routed after 0..50 labels for MiCRo); `:real`: `run_real`."""
    if real.is_real(config):
        return run_real(config, workdir)
    if config.method not in METHODS:
        raise ValueError(f"unknown method {config.method!r}; valid: {METHODS}")
    data = config.data
    labels = tuple(int(n) for n in config.micro.eval_labels)
    if config.method == "micro" and max(labels) > data.route_labels:
        raise ValueError(f"eval_labels {labels} exceed route_labels={data.route_labels}")
    seeds = [int(s) for s in config.seeds]
    per_seed = [make_data(config, s) for s in seeds]
    train = _stack(per_seed, "train", ("chosen", "rejected", "prompt"))
    val = _stack(per_seed, "val", ("chosen", "rejected", "prompt"))
    test = _stack(per_seed, "test", ("chosen", "rejected", "prompt"))
    test_groups = np.repeat(np.arange(data.num_groups), data.test_users_per_group)
    out = {s: {"test_bayes_prompt_accuracy": float(d["test"]["bayes_prompt"].mean()),
               "test_bayes_group_accuracy": float(d["test"]["bayes_group"].mean())}
           for s, d in zip(seeds, per_seed)}

    if config.method in ("bt", "bt_prompt"):
        with_prompt = config.method == "bt_prompt"
        r, params, info = fit_bt(config, os.path.join(workdir, "reward_model"), train, val,
                                 seeds, with_prompt=with_prompt)

        @jax.jit
        @jax.vmap
        def correct(p, t):
            def reward(y):
                return r.apply(p, jnp.concatenate([t["prompt"], y], -1) if with_prompt else y)
            return (reward(t["chosen"]) > reward(t["rejected"])).astype(jnp.float32)

        hits = np.asarray(correct(params, test))  # [S, U, N]
        for i, s in enumerate(seeds):
            out[s].update(info[s], test_accuracy=float(hits[i].mean()))
            for g in range(data.num_groups):
                out[s][f"test_accuracy_group{g}"] = float(hits[i][test_groups == g].mean())
        return out

    heads, gate, params, info = fit_mixture(config, os.path.join(workdir, "mixture"), train,
                                            val, seeds)
    stream = _stack(per_seed, "stream", ("chosen", "rejected"))
    route = jax.jit(jax.vmap(functools.partial(
        route_and_eval, heads=heads, gate=gate, eval_labels=labels,
        rate=float(config.micro.hedge_rate))))
    accs = np.asarray(route(params, stream, test))  # [S, len(labels), U]
    for i, s in enumerate(seeds):
        out[s].update(info[s], test_accuracy=float(accs[i, 0].mean()))
        for j, n in enumerate(labels):
            out[s][f"test_routed_accuracy_{n}"] = float(accs[i, j].mean())
            for g in range(data.num_groups):
                out[s][f"test_routed_accuracy_{n}_group{g}"] = float(
                    accs[i, j][test_groups == g].mean())
    return out


# --- :real ------------------------------------------------------------------------------------

def real_splits(config, users: np.ndarray, names: list, name: str) -> dict[str, np.ndarray]:
    """Row indices of the `:real` splits: the training users' train / val / test rows
    (`held_out_split` of their rows in dataset order), each test user's stream rows [U', L]
    (its first L = max(eval_labels) pairs) and its test rows (the rest).

    Raises:
      DataError: no training user is left, the training users' rows are too few to split, a
        test user with no pair beyond its stream (one line naming the config key).
    """
    num_users, test_users = len(names), int(config.micro.test_users)
    length = max(int(n) for n in config.micro.eval_labels)
    train_users = num_users - test_users
    if train_users < 1:
        raise DataError(f"{name}: micro.test_users={test_users} leaves no training user "
                        f"({num_users} users)", path=name)
    rows = np.flatnonzero(users < train_users)
    try:
        parts = real.held_out_split(len(rows), config.data.eval_fraction,
                                    config.data.max_eval_rows)
    except ValueError as e:
        raise DataError(f"{name}: the training users' pairs: {e} (data.eval_fraction="
                        f"{config.data.eval_fraction})", path=name) from None
    out = {k: rows[part] for k, part in zip(("train", "val", "test_seen"), parts)}
    stream, test = [], []
    for u in range(train_users, num_users):
        mine = np.flatnonzero(users == u)
        if len(mine) <= length:
            raise DataError(f"{name}: test user {names[u]!r} has {len(mine)} pairs: "
                            f"micro.eval_labels up to {length} leave none to test", path=name)
        stream.append(mine[:length])
        test.append(mine[length:])
    return {**out, "stream": np.stack(stream), "test": np.concatenate(test)}


def real_data(emb: dict, splits: dict, num_train_users: int, num_seeds: int) -> dict:
    """The stage-1 and stage-2 arrays of the `:real` splits, items and prompts standardised
    with the training pairs' per-feature mean and std, each repeated for the S seeds:
    {"train", "val", "test_seen": {chosen, rejected, prompt: [S, N, D]}, "stream": {chosen,
    rejected: [S, U', L, D]}, "test": {chosen, rejected, prompt: [S, N', D], user: [S, N']
    (test users 0..U'-1)}}."""
    train = splits["train"]
    items = np.concatenate([emb["chosen"][train], emb["rejected"][train]])
    stats = {"item": (items.mean(0), np.maximum(items.std(0), 1e-6)),
             "prompt": (emb["prompt"][train].mean(0),
                        np.maximum(emb["prompt"][train].std(0), 1e-6))}

    def part(rows, keys):
        out = {}
        for k in keys:
            mean, std = stats["prompt" if k == "prompt" else "item"]
            out[k] = ((emb[k][rows] - mean) / std).astype(np.float32)
        return out

    keys = ("chosen", "rejected", "prompt")
    out = {k: part(splits[k], keys) for k in ("train", "val", "test_seen", "test")}
    out["stream"] = part(splits["stream"], keys[:2])
    out["test"]["user"] = (emb["users"][splits["test"]] - num_train_users).astype(np.int32)
    return {k: {n: jax.device_put(np.broadcast_to(v, (num_seeds, *v.shape)))
                for n, v in d.items()} for k, d in out.items()}


def run_real(config: ml_collections.ConfigDict, workdir: str) -> dict[int, dict[str, float]]:
    """`:real` (module docstring): stage 1, stage 2 routing of the test users and the BT
    baseline, every seed at once on the checkpoint's embeddings."""
    seeds = [int(s) for s in config.seeds]
    labels = sorted({0, *(int(n) for n in config.micro.eval_labels)})
    emb = real.pair_embeddings(config, user_field=config.data.user_field, prompt=True)
    splits = real_splits(config, emb["users"], emb["names"], emb["name"])
    num_test_users = int(config.micro.test_users)
    num_train_users = len(emb["names"]) - num_test_users
    data = real_data(emb, splits, num_train_users, len(seeds))
    sizes = {f"num_{k}_pairs": float(len(v)) for k, v in splits.items() if k != "stream"}
    out = {s: {"num_train_users": float(num_train_users), "num_test_users": float(num_test_users),
               **sizes} for s in seeds}
    stage1 = {k: data[k] for k in ("train", "val")}

    r, bt_params, bt_info = fit_bt(config, os.path.join(workdir, "reward_model"), **stage1,
                                   seeds=seeds, with_prompt=False)

    @jax.jit
    @jax.vmap
    def bt_accuracy(p, t):
        return jnp.mean(r.apply(p, t["chosen"]) > r.apply(p, t["rejected"]))

    bt_test = {k: np.asarray(bt_accuracy(bt_params, {n: data[k][n] for n in ("chosen",
                                                                          "rejected")}))
               for k in ("test_seen", "test")}
    heads, gate, params, info = fit_mixture(config, os.path.join(workdir, "mixture"), **stage1,
                                            seeds=seeds)

    @jax.jit
    @jax.vmap
    def seen_accuracy(p, t):
        margins = heads.apply(p["heads"], t["chosen"]) - heads.apply(p["heads"], t["rejected"])
        return jnp.mean(mixture_correct(margins, gate.apply(p["gate"], t["prompt"])))

    seen = np.asarray(seen_accuracy(params, data["test_seen"]))
    route = jax.jit(jax.vmap(functools.partial(
        route_and_eval, heads=heads, gate=gate, eval_labels=tuple(labels),
        rate=float(config.micro.hedge_rate))))
    routed = np.asarray(route(params, data["stream"], data["test"]))  # [S, len(labels)]
    for i, s in enumerate(seeds):
        out[s].update({f"bt_{k}": v for k, v in bt_info[s].items()})
        out[s].update(info[s], bt_test_seen_accuracy=float(bt_test["test_seen"][i]),
                      bt_test_accuracy=float(bt_test["test"][i]),
                      test_seen_accuracy=float(seen[i]))
        out[s].update({f"test_routed_accuracy_{n}": float(routed[i, j])
                       for j, n in enumerate(labels)})
    return out


# --- claims and plots -------------------------------------------------------------------------

def _labels(results) -> list[int]:
    names = results["micro"]["metrics"]
    return sorted({int(k.split("_")[3]) for k in names if k.startswith("test_routed_accuracy_")})


def _groups(results) -> list[int]:
    names = results["micro"]["metrics"]
    return sorted({int(k.rsplit("group", 1)[1]) for k in names
                   if k.startswith("test_routed_accuracy_") and "group" in k})


def claims(results) -> list[protocol.Claim]:
    if "default" in results:  # :real: a user's data has no known groups
        return []

    def mean(variant, name):
        return results[variant]["metrics"][name]["mean"]

    bt = protocol.per_seed(results, "bt", "test_accuracy")
    n = max(_labels(results))
    groups = _groups(results)
    routed = {g: protocol.per_seed(results, "micro", f"test_routed_accuracy_{n}_group{g}")
              for g in groups}
    worst = {s: min(routed[g][s] for g in groups) for s in routed[groups[0]]}
    extra = {"test_bayes_prompt_accuracy": mean("micro", "test_bayes_prompt_accuracy")}
    if "bt_prompt" in results:
        extra["bt_prompt_test_accuracy"] = mean("bt_prompt", "test_accuracy")
    others = ", ".join(f"{k} {v:.3f}" for k, v in extra.items())
    return [
        protocol.sanity(
            "A single BT reward of the items is <= 0.70 accurate on a mixture of 3 groups",
            max(bt.values()) <= 0.70,
            {"bt_test_accuracy_mean": float(np.mean(list(bt.values()))),
             "bt_test_accuracy_max_over_seeds": max(bt.values()), **extra},
            "holds by construction: the group rewards sum to zero, so no reward of the items "
            "alone beats chance on the population"),
        protocol.threshold(
            "MiCRo stage 1 (mixture of BT heads with a prompt gate) reaches >= 0.80 test "
            "accuracy", results, ("micro", "test_accuracy"), at_least=0.80,
            detail=f"baselines and references: {others}"),
        protocol.decide(
            f"After online routing with {n} labels every group reaches >= 0.90 test accuracy "
            f"(per seed the lowest group)", worst, kind="threshold", at_least=0.90,
            measured={**{f"group{g}": float(np.mean(list(routed[g].values()))) for g in groups},
                      "lowest_group": float(np.mean(list(worst.values()))),
                      "all_users": mean("micro", f"test_routed_accuracy_{n}"),
                      "test_bayes_group_accuracy": mean("micro", "test_bayes_group_accuracy")},
            detail="Bayes accuracy given the group "
                   f"{mean('micro', 'test_bayes_group_accuracy'):.3f}"),
    ]


def plots(results, workdir: str) -> list[str]:
    """Per-group accuracy of the routed mixture against the number of routing labels."""
    if "default" in results:  # :real: metrics only
        return []
    m = results["micro"]["metrics"]
    labels = _labels(results)
    x = np.array([max(n, 0.5) for n in labels])  # 0 labels drawn at 0.5 on the log axis
    curves = {}
    for g in _groups(results):
        mean, std = (np.array([m[f"test_routed_accuracy_{n}_group{g}"][stat] for n in labels])
                     for stat in ("mean", "std"))
        curves[f"MiCRo, group {g}"] = (x, mean, std)
    ends = x[[0, -1]]
    curves["Bayes, group known"] = (ends, [m["test_bayes_group_accuracy"]["mean"]] * 2)
    for name in ("bt", "bt_prompt"):
        if name in results:
            bt_mean = results[name]["metrics"]["test_accuracy"]["mean"]
            curves[f"single BT ({name})"] = (ends, [bt_mean] * 2)
    path = os.path.join(workdir, "plots", "micro_routing.png")
    return [plot_curves(curves, path, title="MiCRo: online routing per user",
                        xlabel="routing labels of the user (0 = stage 1 gate only, at 0.5)",
                        ylabel="held-out accuracy", xscale="log")]
