"""Collaborative reward modeling (CRM): two reward models that pick each other's training pairs.

Paper: "Two Minds Better Than One: Collaborative Reward Modeling for LLM Alignment" (2025).

Setting (feature-vector testbed): responses are vectors x ~ N(0, I_16) with a frozen non-linear
gold reward (a random tanh MLP, `alignax.tasks.features.MLPReward`). 20k training pairs are
labelled by Bradley-Terry draws from the gold reward (temperature `task.label_temperature`), then
a fraction `flip_rate` (20% or 40%) of the labels is flipped at random
(`alignax.tasks.simulators.flip_labels`). Reward models are 2-layer MLPs (128-128 GELU) trained
with minibatch Adam for many epochs (lax.scan), long enough to start fitting the
flipped labels. Methods:
  - `bt`: plain Bradley-Terry on every pair;
  - `small_loss`: one model that trains only on the (1 - tau_t) fraction of each minibatch with
    its own largest margins (small-loss filtering);
  - `crm`: two models; on each minibatch each one keeps its (1 - tau_t) most confident pairs and
    hands them to its peer, which trains on them (`alignax.losses.reward.peer_review_masks`); the
    drop rate ramps up on a curriculum tau_t = tau_max min(1, t / T_warm)
    (`curriculum_drop_rate`). The CRM reward is the mean of the two models' rewards.
tau_max is set to the flip rate (as in co-teaching, the noise rate is assumed known).
Metrics: gold-preference accuracy on 10k fresh clean pairs (gold ordering), and, for the
filtering methods, the planted-flip rate among the pairs kept at the end of training (on the
whole training set, at tau_max).

Claims checked: at 40% flips (1) CRM's held-out gold accuracy beats plain BT by >= 3 points
(mean of 3 seeds) and (2) the pairs CRM keeps have a flip rate <= 25%. The 20% setting is
reported alongside (no threshold).

    alignax run experiments/crm.py            # full setting, 3 seeds
    alignax run experiments/crm.py:smoke      # seconds, for the tests
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
from alignax.losses.reward import bradley_terry_loss, curriculum_drop_rate, peer_review_masks
from alignax.tasks.features import MLPReward
from alignax.tasks.simulators import bradley_terry, flip_labels

METHODS = ("bt", "small_loss", "crm")
NOISE = {"20": 0.2, "40": 0.4}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    smoke = is_smoke(arg)
    c = ml_collections.ConfigDict()
    c.seeds = [0] if smoke else [0, 1, 2]
    c.method = "crm"
    c.variants = {f"{m}_{n}": {"method": m, "flip_rate": r}
                  for n, r in NOISE.items() for m in METHODS}
    c.flip_rate = 0.4  # fraction of labels flipped at random
    c.task = dict(dim=16, gold_hidden=32, label_temperature=0.1)
    c.data = dict(num_pairs=20_000 if not smoke else 500,
                  num_test_pairs=10_000 if not smoke else 300)
    c.model = dict(hidden=(128, 128) if not smoke else (32, 32))
    c.train = dict(steps=2000 if not smoke else 30, batch_size=256 if not smoke else 64,
                   learning_rate=1e-3, eval_every=250 if not smoke else 10)
    # drop rate: tau_max = flip_rate * drop_scale, reached after warmup_fraction of the steps
    c.crm = dict(drop_scale=1.0, warmup_fraction=0.25)
    return c


def make_data(config, seed: int) -> dict:
    """Noisy BT training pairs (with the planted-flip mask) and clean held-out pairs."""
    task = config.task
    gold = MLPReward(dim=task.dim, hidden=task.gold_hidden, seed=seed)
    rng = np.random.default_rng([seed, 1001])
    n = config.data.num_pairs
    xa, xb = rng.standard_normal((2, n, task.dim))
    a_pref = bradley_terry(gold(xa), gold(xb), rng=rng, temperature=task.label_temperature)
    noisy, flipped = flip_labels(a_pref.astype(np.int32), rate=config.flip_rate, rng=rng)
    a_chosen = noisy.astype(bool)
    chosen = np.where(a_chosen[:, None], xa, xb).astype(np.float32)
    rejected = np.where(a_chosen[:, None], xb, xa).astype(np.float32)
    ta, tb = rng.standard_normal((2, config.data.num_test_pairs, task.dim))
    return {"chosen": chosen, "rejected": rejected, "flipped": flipped,
            "label_gold_wrong": gold(chosen) < gold(rejected),
            "test_a": ta.astype(np.float32), "test_b": tb.astype(np.float32),
            "test_a_better": gold(ta) > gold(tb)}


@functools.partial(jax.jit, static_argnames=("hidden", "steps", "batch_size", "lr",
                                              "warmup_steps", "eval_every"))
def train(key, chosen, rejected, test_a, test_b, test_a_better, max_rate, method_id, *,
          warmup_steps, hidden, steps, batch_size, lr, eval_every):
    """Trains the two (CRM) or one (bt, small_loss) reward models -> (params [2, ...], curve).

    Both models are always carried (stacked on a leading axis of size 2) so the code path is one;
    for `bt` and `small_loss` only model 0 is used and model 1 gets no gradient. Returns the
    stacked params and the held-out gold accuracy every `eval_every` steps [steps // eval_every]
    (`steps` is rounded down to a multiple of `eval_every`).
    """
    k_init, k_data = jax.random.split(key)
    params = jax.vmap(lambda k: init_mlp(k, (chosen.shape[-1], *hidden, 1)))(
        jax.random.split(k_init, 2))
    tx = optax.adam(lr)
    opt = tx.init(params)
    n = chosen.shape[0]
    score = jax.vmap(apply_mlp, in_axes=(0, None))  # [2, ...] params, shared inputs

    def loss_fn(p, xc, xr, t):
        rc, rr = score(p, xc), score(p, xr)  # [2, B]
        losses = jax.vmap(bradley_terry_loss)(rc, rr)  # [2, B]
        margins = jax.lax.stop_gradient(rc - rr)
        tau = curriculum_drop_rate(t, max_rate=1.0, warmup_steps=warmup_steps) * max_rate
        ones, zeros = jnp.ones_like(rc[0]), jnp.zeros_like(rc[0])
        mask_a, mask_b = peer_review_masks(margins[0], margins[1], drop_rate=tau)
        own = peer_review_masks(margins[0], margins[0], drop_rate=tau)[0]
        masks = jnp.select([method_id == 2, method_id == 1, method_id == 0],  # METHODS order
                           [jnp.stack([mask_a, mask_b]), jnp.stack([own, zeros]),
                            jnp.stack([ones, zeros])])
        per_model = jnp.sum(masks * losses, 1) / jnp.maximum(jnp.sum(masks, 1), 1.0)
        return jnp.sum(per_model)

    def accuracy(p):
        r = (ensemble_score(score, p, test_a, method_id)
             - ensemble_score(score, p, test_b, method_id))
        return jnp.mean((r > 0) == test_a_better)

    def step(carry, t):
        p, o = carry
        idx = jax.random.randint(jax.random.fold_in(k_data, t), (batch_size,), 0, n)
        g = jax.grad(loss_fn)(p, chosen[idx], rejected[idx], t)
        upd, o = tx.update(g, o, p)
        return (optax.apply_updates(p, upd), o), None

    def chunk(carry, c):  # eval_every steps, then one held-out evaluation
        carry, _ = jax.lax.scan(step, carry, c * eval_every + jnp.arange(eval_every))
        return carry, accuracy(carry[0])

    (params, _), accs = jax.lax.scan(chunk, (params, opt), jnp.arange(steps // eval_every))
    return params, accs


def init_mlp(key, dims):
    """A GELU MLP dims[0] -> ... -> dims[-1] = 1 as a list of {w, b} (LeCun-normal weights)."""
    params = []
    for k, (a, b) in zip(jax.random.split(key, len(dims) - 1), zip(dims[:-1], dims[1:])):
        params.append({"w": jax.random.normal(k, (a, b), jnp.float32) / np.sqrt(a),
                       "b": jnp.zeros((b,), jnp.float32)})
    return params


def apply_mlp(params, x):
    """[..., D] -> [...] scalar rewards."""
    for layer in params[:-1]:
        x = jax.nn.gelu(x @ layer["w"] + layer["b"])
    return (x @ params[-1]["w"] + params[-1]["b"])[..., 0]


_score_both = jax.jit(jax.vmap(apply_mlp, in_axes=(0, None)))  # [2, ...] params -> [2, N]


def ensemble_score(score, params, x, method_id):
    """The method's reward: the mean of both models for CRM, model 0 otherwise. [N]."""
    r = score(params, x)
    return jnp.where(method_id == METHODS.index("crm"), jnp.mean(r, 0), r[0])


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
    seed, method = int(config.seed), config.method
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; one of {METHODS}")
    data = make_data(config, seed)
    tr = config.train
    max_rate = float(config.flip_rate * config.crm.drop_scale)
    warmup = int(config.crm.warmup_fraction * tr.steps)
    params, curve = train(
        jax.random.key(seed), data["chosen"], data["rejected"], data["test_a"], data["test_b"],
        data["test_a_better"], max_rate, METHODS.index(method), warmup_steps=warmup,
        hidden=tuple(config.model.hidden),
        steps=int(tr.steps), batch_size=int(tr.batch_size), lr=float(tr.learning_rate),
        eval_every=int(tr.eval_every))
    curve = np.asarray(curve)
    score = _score_both
    margins = np.asarray(score(params, data["chosen"]) - score(params, data["rejected"]))  # [2,N]
    out = {"gold_accuracy": float(curve[-1]), "best_gold_accuracy": float(curve.max()),
           "observed_flip_rate": float(data["flipped"].mean())}
    m0 = margins.mean(0) if method == "crm" else margins[0]
    flipped = data["flipped"]
    out["train_fit_flipped"] = float(np.mean(m0[flipped] > 0))  # memorisation of wrong labels
    out["train_fit_clean"] = float(np.mean(m0[~flipped] > 0))
    if method != "bt":
        mask_a, mask_b = (np.asarray(m, bool) for m in peer_review_masks(
            jnp.asarray(margins[0]), jnp.asarray(margins[1] if method == "crm" else margins[0]),
            drop_rate=max_rate))
        kept = [mask_a, mask_b] if method == "crm" else [mask_a]
        out["kept_flip_rate"] = float(np.mean([flipped[k].mean() for k in kept]))
        out["kept_gold_wrong_rate"] = float(np.mean([data["label_gold_wrong"][k].mean()
                                                     for k in kept]))
        out["kept_fraction"] = float(np.mean([k.mean() for k in kept]))
    os.makedirs(workdir, exist_ok=True)
    np.savez(os.path.join(workdir, "curve.npz"),
             steps=np.arange(1, len(curve) + 1) * int(tr.eval_every), accuracy=curve)
    return out


def claims(results) -> list[Claim]:
    acc = {v: metric(results, v, "gold_accuracy") for v in results}
    gain40 = acc["crm_40"] - acc["bt_40"]
    gain20 = acc["crm_20"] - acc["bt_20"]
    kept40 = metric(results, "crm_40", "kept_flip_rate")
    kept20 = metric(results, "crm_20", "kept_flip_rate")
    return [
        Claim(name="at 40% flipped labels CRM's held-out gold accuracy beats plain BT by >= 3 "
                   "points (mean of seeds)",
              passed=gain40 >= 0.03,
              measured={"crm_40": acc["crm_40"], "bt_40": acc["bt_40"],
                        "small_loss_40": acc["small_loss_40"], "gain_40": gain40,
                        "crm_20": acc["crm_20"], "bt_20": acc["bt_20"],
                        "small_loss_20": acc["small_loss_20"], "gain_20": gain20},
              detail=f"40%: CRM {acc['crm_40']:.3f} vs BT {acc['bt_40']:.3f} (small-loss "
                     f"{acc['small_loss_40']:.3f}), gain {100 * gain40:.1f} points; 20%: CRM "
                     f"{acc['crm_20']:.3f} vs BT {acc['bt_20']:.3f} (small-loss "
                     f"{acc['small_loss_20']:.3f}), gain {100 * gain20:.1f} points"),
        Claim(name="at 40% flipped labels the pairs CRM keeps have a flip rate <= 25%",
              passed=kept40 <= 0.25,
              measured={"kept_flip_rate_40": kept40, "kept_flip_rate_20": kept20,
                        "small_loss_kept_flip_rate_40":
                            metric(results, "small_loss_40", "kept_flip_rate")},
              detail=f"kept-pair flip rate {kept40:.3f} at 40% noise, {kept20:.3f} at 20%"),
    ]


def plots(results, workdir: str) -> list[str]:
    """Held-out gold accuracy along training, per variant (mean over seeds)."""
    from alignax.train.plots import plot_curves

    curves = {}
    for variant, res in results.items():
        ys = []
        for seed in res["per_seed"]:
            path = os.path.join(workdir, variant, f"seed_{seed}", "curve.npz")
            if os.path.exists(path):
                z = np.load(path)
                x = z["steps"]
                ys.append(z["accuracy"])
        if ys:
            curves[variant] = (x, np.mean(ys, 0), np.std(ys, 0))
    out = os.path.join(workdir, "plots", "crm_accuracy.png")
    plot_curves(curves, out, title="CRM vs BT under flipped labels: held-out gold accuracy",
                xlabel="training step", ylabel="gold-preference accuracy")
    return [out]
