"""BaseReward: an MLP reward head on a frozen multimodal backbone, with text-only data in the mix.

Paper: Zhang et al. 2025, "BaseReward: A Strong Baseline for Multimodal Reward Model"
(arXiv 2509.16127).

Setting (feature-vector testbed): a response has a latent quality vector u ~ N(0, I_8) and a
frozen non-linear gold reward r*(u) = MLPReward(3 u) (a random tanh MLP with saturating units,
`alignax.tasks.features.MLPReward`). Two modalities observe u through fixed random linear views
with noise: text t = A_t u + noise and image v = A_v u + noise (16 dims each). The frozen
"backbone" is shared by the modalities (the shared structure): each modality is encoded into a
common space (s_t = A_t^+ t, s_v = A_v^+ v), fused by averaging (text-only: s = s_t), and
mapped to h = relu(W [s; m] + b) with 64 random units and m the modality flag. Labels are
Bradley-Terry draws sigma(4 (r*(u_a) - r*(u_b))).

Heads on h (trained with the BT loss, full-batch AdamW in lax.scan, 800 steps): `linear`
r = w . h + c (lr 1e-2, weight decay 1e-3), and `mlp`, the paper's two-layer head
r = W2 SiLU(W1 h) (64 hidden units; lr 2e-3, weight decay 3.0, which it needs not to overfit).
Data mixtures: multimodal pairs only (`mm`, 400 pairs) or the same plus 8000 text-only pairs
(`mix`). Optional:
the average of 3 independently initialised MLP heads (`mlp_mix_ensemble`). Accuracy is measured
on held-out multimodal pairs against the gold ordering.

Claims checked: (1) the 2-layer head beats the linear head by >= 2 points on the multimodal test
pairs (both trained on the mixture); (2) adding the text-only pairs raises the MLP head's
multimodal accuracy by >= 1 point.

    alignax run experiments/base_reward.py            # full setting, 3 seeds
    alignax run experiments/base_reward.py:smoke      # seconds, for the tests
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
from alignax.losses.reward import bradley_terry_loss
from alignax.tasks.features import MLPReward

VARIANTS = {
    "linear_mm": dict(head="linear", mix="mm", ensemble=1),
    "mlp_mm": dict(head="mlp", mix="mm", ensemble=1),
    "linear_mix": dict(head="linear", mix="mix", ensemble=1),
    "mlp_mix": dict(head="mlp", mix="mix", ensemble=1),
    "mlp_mix_ensemble": dict(head="mlp", mix="mix", ensemble=3),
}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    smoke = is_smoke(arg)
    c = ml_collections.ConfigDict()
    c.seeds = [0] if smoke else [0, 1, 2]
    c.head = "mlp"
    c.mix = "mix"
    c.ensemble = 1
    c.variants = {name: dict(v) for name, v in VARIANTS.items()}
    c.task = dict(latent_dim=8, gold_hidden=32, gold_input_scale=3.0, view_dim=16,
                  view_noise=0.3, backbone_dim=64, label_beta=4.0)
    c.data = dict(num_mm_pairs=400 if not smoke else 100,
                  num_text_pairs=8000 if not smoke else 300,
                  num_test_pairs=4000 if not smoke else 300)
    c.head_hidden = 64
    # per-head learning rates (the linear head is convex and needs a larger step to converge)
    c.train = dict(steps=800 if not smoke else 50, learning_rate=dict(linear=1e-2, mlp=2e-3),
                   weight_decay=dict(linear=1e-3, mlp=3.0))
    return c


def make_world(task, seed: int) -> dict:
    """The frozen pieces of one seed: gold reward, modality views and the backbone."""
    rng = np.random.default_rng([seed, 65])
    k, d, h = task.latent_dim, task.view_dim, task.backbone_dim
    view_text = rng.standard_normal((k, d)) / np.sqrt(k)
    view_image = rng.standard_normal((k, d)) / np.sqrt(k)
    return {
        "gold": MLPReward(dim=k, hidden=task.gold_hidden, seed=seed),
        "view_text": view_text, "view_image": view_image,
        # modality encoders into the shared semantic space (least-squares inverses of the views)
        "enc_text": np.linalg.pinv(view_text), "enc_image": np.linalg.pinv(view_image),
        "backbone_w": (rng.standard_normal((k + 1, h)) / np.sqrt(k)).astype(np.float32),
        "backbone_b": (0.5 * rng.standard_normal(h)).astype(np.float32),
    }


def embed(world, task, u: np.ndarray, multimodal: bool, rng: np.random.Generator) -> np.ndarray:
    """Backbone features h [N, H] of responses with latents u [N, K] (frozen, no gradients).

    Each modality is encoded into the shared space (s_text = E_t t, s_image = E_v v); the fused
    state is their mean (text only: s_text); h = relu(W [s; m] + b) with m the modality flag.
    """
    n = len(u)
    text = u @ world["view_text"] + task.view_noise * rng.standard_normal((n, task.view_dim))
    s = text @ world["enc_text"]
    if multimodal:
        image = u @ world["view_image"] + task.view_noise * rng.standard_normal(
            (n, task.view_dim))
        s = 0.5 * (s + image @ world["enc_image"])
    flag = np.full((n, 1), 1.0 if multimodal else 0.0)
    x = np.concatenate([s, flag], -1).astype(np.float32)
    return np.maximum(x @ world["backbone_w"] + world["backbone_b"], 0.0)


def gold_reward(world, task, u: np.ndarray) -> np.ndarray:
    """r*(u) = MLPReward(gold_input_scale * u): a larger scale saturates the tanh units more."""
    return world["gold"](task.gold_input_scale * u)


def sample_pairs(world, task, n: int, multimodal: bool, rng: np.random.Generator,
                 *, labelled: bool = True) -> dict:
    """n pairs: (chosen, rejected) features by a BT draw, or (a, b) with the gold order."""
    ua, ub = rng.standard_normal((n, task.latent_dim)), rng.standard_normal((n, task.latent_dim))
    ha, hb = embed(world, task, ua, multimodal, rng), embed(world, task, ub, multimodal, rng)
    ga, gb = gold_reward(world, task, ua), gold_reward(world, task, ub)
    if not labelled:
        return {"a": ha, "b": hb, "a_better": ga > gb}
    a_chosen = rng.uniform(size=n) < 1.0 / (1.0 + np.exp(-task.label_beta * (ga - gb)))
    return {"chosen": np.where(a_chosen[:, None], ha, hb),
            "rejected": np.where(a_chosen[:, None], hb, ha)}


def init_head(key, head: str, in_dim: int, hidden: int):
    """Parameters of a `linear` (w . h + c) or `mlp` (W2 SiLU(W1 h + b1) + b2) reward head."""
    k1, k2 = jax.random.split(key)
    if head == "linear":
        return {"w": jax.random.normal(k1, (in_dim,)) * 0.01, "c": jnp.zeros(())}
    if head == "mlp":
        return {"w1": jax.random.normal(k1, (in_dim, hidden)) / np.sqrt(in_dim),
                "b1": jnp.zeros((hidden,)),
                "w2": jax.random.normal(k2, (hidden,)) / np.sqrt(hidden), "b2": jnp.zeros(())}
    raise ValueError(f"unknown head {head!r}; use 'linear' or 'mlp'")


def apply_head(params, h):
    """Rewards [...] of backbone features h [..., H]."""
    if "w" in params:
        return h @ params["w"] + params["c"]
    return jax.nn.silu(h @ params["w1"] + params["b1"]) @ params["w2"] + params["b2"]


@functools.partial(jax.jit, static_argnames=("head", "hidden", "steps", "lr", "wd"))
def fit_head(key, chosen, rejected, *, head, hidden, steps, lr, wd):
    """BT training of one head on frozen features: chosen/rejected [B, H] -> params."""
    tx = optax.adamw(lr, weight_decay=wd)

    def loss_fn(p):
        return jnp.mean(bradley_terry_loss(apply_head(p, chosen), apply_head(p, rejected)))

    def step(carry, _):
        p, opt = carry
        loss, g = jax.value_and_grad(loss_fn)(p)
        upd, opt = tx.update(g, opt, p)
        return (optax.apply_updates(p, upd), opt), loss

    p0 = init_head(key, head, chosen.shape[-1], hidden)
    (p, _), losses = jax.lax.scan(step, (p0, tx.init(p0)), None, length=steps)
    return p, losses[-1]


@jax.jit
def _ensemble_score(params_list, h):
    """Average reward of the heads in `params_list` on features h [N, H] -> [N]."""
    return jnp.mean(jnp.stack([apply_head(p, h) for p in params_list]), 0)


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
    seed = int(config.seed)
    if config.mix not in ("mm", "mix"):
        raise ValueError(f"unknown data mixture {config.mix!r}; use 'mm' or 'mix'")
    task, data = config.task, config.data
    world = make_world(task, seed)
    rng = np.random.default_rng([seed, 650])
    mm = sample_pairs(world, task, data.num_mm_pairs, True, rng)
    text = sample_pairs(world, task, data.num_text_pairs, False, rng)
    test = sample_pairs(world, task, data.num_test_pairs, True, rng, labelled=False)
    text_test = sample_pairs(world, task, data.num_test_pairs, False, rng, labelled=False)
    if config.mix == "mix":
        chosen = np.concatenate([mm["chosen"], text["chosen"]])
        rejected = np.concatenate([mm["rejected"], text["rejected"]])
    else:
        chosen, rejected = mm["chosen"], mm["rejected"]
    hp = dict(head=config.head, hidden=int(config.head_hidden), steps=int(config.train.steps),
              lr=float(config.train.learning_rate[config.head]),
              wd=float(config.train.weight_decay[config.head]))
    keys = jax.random.split(jax.random.key(seed), int(config.ensemble))
    members = [fit_head(k, chosen, rejected, **hp) for k in keys]
    params = [p for p, _ in members]
    score = _ensemble_score

    def accuracy(pairs):
        sa, sb = np.asarray(score(params, pairs["a"])), np.asarray(score(params, pairs["b"]))
        return float(np.mean((sa > sb) == pairs["a_better"]))

    train_margin = np.asarray(score(params, chosen) - score(params, rejected))
    return {"mm_accuracy": accuracy(test), "text_accuracy": accuracy(text_test),
            "train_label_fit": float(np.mean(train_margin > 0)),
            "final_train_loss": float(np.mean([float(loss) for _, loss in members]))}


def claims(results) -> list[Claim]:
    acc = {v: metric(results, v, "mm_accuracy") for v in VARIANTS if v in results}
    head_gain = acc["mlp_mix"] - acc["linear_mix"]
    data_gain = acc["mlp_mix"] - acc["mlp_mm"]
    ens = acc.get("mlp_mix_ensemble", float("nan"))
    return [
        Claim(name="the two-layer MLP head beats the linear head by >= 2 points of multimodal "
                   "accuracy (both on the multimodal + text mixture)",
              passed=head_gain >= 0.02,
              measured={"mlp_mix": acc["mlp_mix"], "linear_mix": acc["linear_mix"],
                        "mlp_mm": acc["mlp_mm"], "linear_mm": acc["linear_mm"],
                        "gain": head_gain},
              detail=f"MLP {acc['mlp_mix']:.3f} vs linear {acc['linear_mix']:.3f} on the mixture "
                     f"(multimodal only: {acc['mlp_mm']:.3f} vs {acc['linear_mm']:.3f})"),
        Claim(name="adding text-only pairs raises the MLP head's multimodal accuracy by >= 1 point",
              passed=data_gain >= 0.01,
              measured={"mlp_mix": acc["mlp_mix"], "mlp_mm": acc["mlp_mm"], "gain": data_gain,
                        "mlp_mix_ensemble": ens},
              detail=f"mixture {acc['mlp_mix']:.3f} vs multimodal only {acc['mlp_mm']:.3f} "
                     f"(ensemble of 3 on the mixture: {ens:.3f})"),
    ]


def plots(results, workdir: str) -> list[str]:
    """Multimodal and text-only held-out accuracy per variant (mean +- std over seeds)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 3.8), layout="constrained")
    FigureCanvasAgg(fig)
    names = list(results)
    for i, (m, label) in enumerate([("mm_accuracy", "multimodal held-out accuracy"),
                                    ("text_accuracy", "text-only held-out accuracy")]):
        ax = fig.add_subplot(1, 2, i + 1)
        means = [results[v]["metrics"][m]["mean"] for v in names]
        ax.bar(range(len(names)), means,
               yerr=[results[v]["metrics"][m]["std"] for v in names], capsize=3)
        ax.set_xticks(range(len(names)), names, rotation=20)
        ax.set_ylim(min(means) - 0.05, min(1.0, max(means) + 0.03))
        ax.set_ylabel(label)
    fig.suptitle("BaseReward: reward heads and data mixtures on a frozen backbone")
    path = os.path.join(workdir, "plots", "base_reward.png")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fig.savefig(path, dpi=100)
    return [path]
