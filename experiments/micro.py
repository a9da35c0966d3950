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

Claims checked: a single BT reward of the items is <= 0.70 accurate (irreducible error of one
reward under a mixture of groups); MiCRo after stage 1 (gate only) reaches >= 0.80; after
routing with 50 labels every group reaches >= 0.90. The prompt-aware BT is reported, not
claimed: it uses the same prompt signal as the gate and lands near stage 1 (see RESULTS).

    alignax run experiments/micro.py            # full setting, 3 seeds
    alignax run experiments/micro.py:smoke      # seconds, for the tests
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
from alignax.losses.reward import (bradley_terry_loss, hedge_routing_update,
                                   mixture_bradley_terry_loss)
from alignax.models.mlp import MLPConfig, make_mlp
from alignax.tasks import simulators as sim
from alignax.train.plots import plot_curves
from alignax.train.small import fit_small

METHODS = ("micro", "bt", "bt_prompt")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    smoke = is_smoke(arg)
    c = ml_collections.ConfigDict()
    c.seeds = [0] if smoke else [0, 1, 2]
    c.method = "micro"
    c.variants = {m: {"method": m} for m in METHODS}
    c.data = dict(
        dim=8, prompt_dim=3, num_groups=3, prompt_signal=2.0, label_scale=6.0,
        num_train=600 if smoke else 6000, train_users=120,
        test_users_per_group=4 if smoke else 20, route_labels=50,
        test_per_user=50 if smoke else 200,
    )
    c.micro = dict(num_heads=3, head_hidden=(), gate_hidden=(32,), steps=100 if smoke else 1500,
                   learning_rate=1e-2, hedge_rate=1.0,
                   eval_labels=[0, 1, 2, 5, 10, 20, 50])
    c.bt = dict(hidden=(32,), steps=100 if smoke else 500, learning_rate=3e-3)
    return c


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

    stream: [U, L] comparisons of each user (chosen/rejected [U, L, D]); test: [U, N]. Returns
    [len(eval_labels), U] accuracies of the routed mixture softmax(g(c) + h_u) on the tests.
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
        logw = gate_test + states[:, n][:, None]
        accs.append(jnp.mean(mixture_correct(d_test, logw), axis=-1))
    return jnp.stack(accs)


def make_data(config, seed: int) -> dict[str, dict[str, np.ndarray]]:
    """One seed's stage-1 training comparisons (train [M]), each test user's routing stream
    (stream [U, L]) and held-out comparisons (test [U, N])."""
    data = config.data
    rng = np.random.default_rng([seed, 61])
    w = group_rewards(data, seed)
    g_num = data.num_groups
    train_groups = rng.integers(0, g_num, data.train_users)[
        rng.integers(0, data.train_users, data.num_train)]
    train = comparisons(w, train_groups, data, rng)
    test_groups = np.repeat(np.arange(g_num), data.test_users_per_group)
    stream = comparisons(w, np.repeat(test_groups[:, None], data.route_labels, 1), data, rng)
    test = comparisons(w, np.repeat(test_groups[:, None], data.test_per_user, 1), data, rng)
    return {"train": train, "stream": stream, "test": test}


def _stack(per_seed: list[dict], part: str, keys) -> dict[str, jax.Array]:
    return {k: jnp.asarray(np.stack([d[part][k] for d in per_seed])) for k in keys}


def fit_bt(config, workdir: str, train: dict, seeds, *, with_prompt: bool):
    """A single BT reward of the item (or of [prompt, item]) on all comparisons, full-batch
    Adam for every seed at once. train: [S, M, ...]. Returns (reward model, SmallFit)."""
    data = config.data
    in_dim = data.dim + (data.prompt_dim if with_prompt else 0)
    r = make_mlp(MLPConfig(in_dim=in_dim, hidden=tuple(config.bt.hidden), out_dim=1))

    def loss_fn(p, d):
        def reward(y):
            return r.apply(p, jnp.concatenate([d["prompt"], y], -1) if with_prompt else y)
        return bradley_terry_loss(reward(d["chosen"]), reward(d["rejected"])).mean()

    fit = fit_small(workdir, loss_fn=loss_fn, init_params=r.init,
                    tx=optax.adam(float(config.bt.learning_rate)),
                    num_steps=int(config.bt.steps), data=train, seeds=seeds, per_seed_data=True)
    return r, fit


def fit_mixture(config, workdir: str, train: dict, seeds):
    """Stage 1: full-batch Adam on the mixture-BT likelihood for every seed at once.

    train: chosen/rejected [S, M, D], prompt [S, M, P]. Returns (heads, gate, SmallFit).
    """
    data, mc = config.data, config.micro
    k = int(mc.num_heads)
    heads = make_mlp(MLPConfig(in_dim=data.dim, hidden=tuple(mc.head_hidden), out_dim=k))
    gate = make_mlp(MLPConfig(in_dim=data.prompt_dim, hidden=tuple(mc.gate_hidden), out_dim=k))

    def init(key):
        k_heads, k_gate = jax.random.split(key)
        return {"heads": heads.init(k_heads), "gate": gate.init(k_gate)}

    def loss_fn(p, d):
        rc, rr = heads.apply(p["heads"], d["chosen"]), heads.apply(p["heads"], d["rejected"])
        return mixture_bradley_terry_loss(rc, rr, gate.apply(p["gate"], d["prompt"])).mean()

    fit = fit_small(workdir, loss_fn=loss_fn, init_params=init,
                    tx=optax.adam(float(mc.learning_rate)), num_steps=int(mc.steps), data=train,
                    seeds=seeds, per_seed_data=True)
    return heads, gate, fit


def run_seeds(config: ml_collections.ConfigDict, workdir: str) -> dict[int, dict[str, float]]:
    """Every seed of one variant: one fit_small program for the seeds, then each seed's
    held-out accuracies (routed after 0..50 labels for MiCRo)."""
    if config.method not in METHODS:
        raise ValueError(f"unknown method {config.method!r}; valid: {METHODS}")
    data = config.data
    labels = tuple(int(n) for n in config.micro.eval_labels)
    if config.method == "micro" and max(labels) > data.route_labels:
        raise ValueError(f"eval_labels {labels} exceed route_labels={data.route_labels}")
    seeds = [int(s) for s in config.seeds]
    per_seed = [make_data(config, s) for s in seeds]
    train = _stack(per_seed, "train", ("chosen", "rejected", "prompt"))
    test = _stack(per_seed, "test", ("chosen", "rejected", "prompt"))
    test_groups = np.repeat(np.arange(data.num_groups), data.test_users_per_group)
    out = {s: {"bayes_prompt_accuracy": float(d["test"]["bayes_prompt"].mean()),
               "bayes_group_accuracy": float(d["test"]["bayes_group"].mean())}
           for s, d in zip(seeds, per_seed)}

    if config.method in ("bt", "bt_prompt"):
        with_prompt = config.method == "bt_prompt"
        r, fit = fit_bt(config, os.path.join(workdir, "reward_model"), train, seeds,
                        with_prompt=with_prompt)

        @jax.jit
        @jax.vmap
        def correct(p, t):
            def reward(y):
                return r.apply(p, jnp.concatenate([t["prompt"], y], -1) if with_prompt else y)
            return (reward(t["chosen"]) > reward(t["rejected"])).astype(jnp.float32)

        hits = np.asarray(correct(fit.params, test))  # [S, U, N]
        for i, s in enumerate(seeds):
            out[s].update(accuracy=float(hits[i].mean()), final_loss=float(fit.final_loss[i]))
            for g in range(data.num_groups):
                out[s][f"accuracy_group{g}"] = float(hits[i][test_groups == g].mean())
        return out

    heads, gate, fit = fit_mixture(config, os.path.join(workdir, "mixture"), train, seeds)
    stream = _stack(per_seed, "stream", ("chosen", "rejected"))
    route = jax.jit(jax.vmap(functools.partial(
        route_and_eval, heads=heads, gate=gate, eval_labels=labels,
        rate=float(config.micro.hedge_rate))))
    accs = np.asarray(route(fit.params, stream, test))  # [S, len(labels), U]
    for i, s in enumerate(seeds):
        out[s].update(final_loss=float(fit.final_loss[i]), accuracy=float(accs[i, 0].mean()))
        for j, n in enumerate(labels):
            out[s][f"routed_accuracy_{n}"] = float(accs[i, j].mean())
            for g in range(data.num_groups):
                out[s][f"routed_accuracy_{n}_group{g}"] = float(
                    accs[i, j][test_groups == g].mean())
    return out


# --- claims and plots -------------------------------------------------------------------------

def _labels(results) -> list[int]:
    names = results["micro"]["metrics"]
    return sorted({int(k.split("_")[2]) for k in names if k.startswith("routed_accuracy_")})


def _groups(results) -> list[int]:
    names = results["micro"]["metrics"]
    return sorted({int(k.rsplit("group", 1)[1]) for k in names
                   if k.startswith("routed_accuracy_") and "group" in k})


def claims(results) -> list[Claim]:
    bt = metric(results, "bt", "accuracy")
    stage1 = metric(results, "micro", "accuracy")
    n = max(_labels(results))
    per_group = {f"group{g}": metric(results, "micro", f"routed_accuracy_{n}_group{g}")
                 for g in _groups(results)}
    extra = {"bayes_prompt_accuracy": metric(results, "micro", "bayes_prompt_accuracy")}
    if "bt_prompt" in results:
        extra["bt_prompt_accuracy"] = metric(results, "bt_prompt", "accuracy")
    return [
        Claim(
            name="A single BT reward of the items is <= 0.70 accurate on a mixture of 3 groups",
            passed=bt <= 0.70,
            measured={"bt_accuracy": bt, **extra},
            detail=f"BT {bt:.3f}",
        ),
        Claim(
            name="MiCRo stage 1 (mixture of BT heads with a prompt gate) reaches >= 0.80",
            passed=stage1 >= 0.80,
            measured={"stage1_accuracy": stage1, **extra},
            detail=f"stage 1 {stage1:.3f}",
        ),
        Claim(
            name=f"After online routing with {n} labels every group reaches >= 0.90 accuracy",
            passed=min(per_group.values()) >= 0.90,
            measured={**per_group, "all_users": metric(results, "micro", f"routed_accuracy_{n}"),
                      "bayes_group_accuracy": metric(results, "micro", "bayes_group_accuracy")},
            detail=", ".join(f"{g} {v:.3f}" for g, v in per_group.items()),
        ),
    ]


def plots(results, workdir: str) -> list[str]:
    """Per-group accuracy of the routed mixture against the number of routing labels."""
    m = results["micro"]["metrics"]
    labels = _labels(results)
    x = np.array([max(n, 0.5) for n in labels])  # 0 labels drawn at 0.5 on the log axis
    curves = {}
    for g in _groups(results):
        mean, std = (np.array([m[f"routed_accuracy_{n}_group{g}"][stat] for n in labels])
                     for stat in ("mean", "std"))
        curves[f"MiCRo, group {g}"] = (x, mean, std)
    ends = x[[0, -1]]
    curves["Bayes, group known"] = (ends, [m["bayes_group_accuracy"]["mean"]] * 2)
    for name in ("bt", "bt_prompt"):
        if name in results:
            curves[f"single BT ({name})"] = (ends,
                                             [results[name]["metrics"]["accuracy"]["mean"]] * 2)
    path = os.path.join(workdir, "plots", "micro_routing.png")
    return [plot_curves(curves, path, title="MiCRo: online routing per user",
                        xlabel="routing labels of the user (0 = stage 1 gate only, at 0.5)",
                        ylabel="held-out accuracy", xscale="log")]
