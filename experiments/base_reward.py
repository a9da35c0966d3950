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

Heads on h (trained with the BT loss, full-batch AdamW, 800 steps, `alignax.train.small`): `linear`
r = w . h + c, and `mlp`, the paper's two-layer head r = W2 SiLU(W1 h) (64 hidden units).
Data mixtures: multimodal pairs only (`mm`, 400 pairs) or the same plus 8000 text-only pairs
(`mix`). Optional: the average of 3 independently initialised MLP heads (`mlp_mix_ensemble`).

Splits (issue 18 protocol): the world (gold reward, views, backbone) belongs to experiment seed
s; training pairs, validation pairs and test pairs are drawn with the data seeds
`split_seeds(s)` = (3s, 3s + 1, 3s + 2). Validation: 200 multimodal pairs with the same
Bradley-Terry labels as the training pairs (no gold ordering: what a practitioner has). Test:
4000 multimodal (and 4000 text-only) pairs against the gold ordering.

Selection (every variant the same): before issue 18 the learning rate and weight decay of each
head (linear 1e-2 / 1e-3, MLP 2e-3 / 3.0) were set by hand after seeing test accuracy. Now every
variant searches the same grid, learning rate x weight decay in {2e-3, 1e-2} x {1e-3, 3.0}
(the two hand-picked settings and their crossings), each with early stopping on validation
(`fit_small(select=("val_accuracy", "max"))`, a check every 50 of the 800 steps); each seed
keeps the candidate with the best validation accuracy (`choose_on_validation`; records in
`<variant>/selection.json`, and `chosen_learning_rate`, `chosen_weight_decay`, `chosen_step`,
`val_accuracy` in the per-seed metrics). Test metrics are those of the chosen params.

Claims (5 seeds, paired 95% t intervals, `alignax.protocol`): (1, comparative) the 2-layer head
beats the linear head by >= 2 points of multimodal test accuracy (both on the mixture); (2,
comparative) adding the text-only pairs raises the MLP head's multimodal test accuracy by >= 1
point.

    alignax run experiments/base_reward.py            # full setting, 5 seeds
    alignax run experiments/base_reward.py:smoke      # seconds, for the tests
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

import json

from alignax import protocol
from alignax.protocol import seed_mean
from alignax.experiment import is_smoke
from alignax.losses.reward import bradley_terry_loss
from alignax.models.mlp import MLPConfig, make_mlp
from alignax.tasks.features import MLPReward
from alignax.tasks.splits import choose_on_validation, split_seeds
from alignax.train.small import fit_small

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
    c.seeds = [0] if smoke else [0, 1, 2, 3, 4]
    c.head = "mlp"
    c.mix = "mix"
    c.ensemble = 1
    c.variants = {name: dict(v) for name, v in VARIANTS.items()}
    c.task = dict(latent_dim=8, gold_hidden=32, gold_input_scale=3.0, view_dim=16,
                  view_noise=0.3, backbone_dim=64, label_beta=4.0)
    c.data = dict(num_mm_pairs=400 if not smoke else 100,
                  num_text_pairs=8000 if not smoke else 300,
                  num_val_pairs=200 if not smoke else 100,
                  num_test_pairs=4000 if not smoke else 300)
    c.head_hidden = 64
    # the same (learning rate, weight decay) grid for every head, chosen per seed on validation
    c.train = dict(steps=800 if not smoke else 50, eval_every=50 if not smoke else 25,
                   learning_rates=[2e-3, 1e-2] if not smoke else [1e-2],
                   weight_decays=[1e-3, 3.0] if not smoke else [1e-3])
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


def make_head(head: str, in_dim: int, hidden: int):
    """A `linear` (w . h + c) or `mlp` (W2 SiLU(W1 h + b1) + b2) reward head on features h."""
    if head == "linear":
        return make_mlp(MLPConfig(in_dim=in_dim, hidden=(), out_dim=1))
    if head == "mlp":
        return make_mlp(MLPConfig(in_dim=in_dim, hidden=(hidden,), out_dim=1, activation="silu"))
    raise ValueError(f"unknown head {head!r}; use 'linear' or 'mlp'")


def make_seed_data(config, seed: int) -> dict:
    """One seed's training pairs (by the data mixture), labelled multimodal validation pairs and
    gold-ordered multimodal and text test pairs, from the data seeds `split_seeds(seed)`."""
    task, data = config.task, config.data
    world = make_world(task, seed)
    seeds = split_seeds(seed)
    rng = np.random.default_rng([seeds.train, 650])
    mm = sample_pairs(world, task, data.num_mm_pairs, True, rng)
    text = sample_pairs(world, task, data.num_text_pairs, False, rng)
    val = sample_pairs(world, task, data.num_val_pairs, True,
                       np.random.default_rng([seeds.validation, 650]))
    rng = np.random.default_rng([seeds.test, 650])
    test = sample_pairs(world, task, data.num_test_pairs, True, rng, labelled=False)
    text_test = sample_pairs(world, task, data.num_test_pairs, False, rng, labelled=False)
    if config.mix == "mix":
        chosen = np.concatenate([mm["chosen"], text["chosen"]])
        rejected = np.concatenate([mm["rejected"], text["rejected"]])
    else:
        chosen, rejected = mm["chosen"], mm["rejected"]
    return {"chosen": chosen, "rejected": rejected, "val_chosen": val["chosen"],
            "val_rejected": val["rejected"], "test": test, "text_test": text_test}


def grid(config) -> dict[str, tuple[float, float]]:
    """The (learning rate, weight decay) candidates every variant searches, by name."""
    tc = config.train
    return {f"lr={lr:g},wd={wd:g}": (float(lr), float(wd))
            for lr in tc.learning_rates for wd in tc.weight_decays}


def run_seeds(config: ml_collections.ConfigDict, workdir: str) -> dict[int, dict[str, float]]:
    """Every seed of one variant: for each grid candidate the head (or the ensemble's heads) of
    all seeds in one `fit_small` program, early-stopped on validation; each seed keeps its best
    candidate on validation; then its test accuracies."""
    if config.mix not in ("mm", "mix"):
        raise ValueError(f"unknown data mixture {config.mix!r}; use 'mm' or 'mix'")
    seeds = [int(s) for s in config.seeds]
    per_seed = [make_seed_data(config, s) for s in seeds]
    head = make_head(config.head, int(config.task.backbone_dim), int(config.head_hidden))
    members = int(config.ensemble)

    def init(key):  # [E, ...]: independently initialised members
        return jax.vmap(head.init)(jax.random.split(key, members))

    def member_rewards(params, h):  # [E, N]
        return jax.vmap(head.apply, in_axes=(0, None))(params, h)

    def loss_fn(params, batch):
        # the sum of the members' losses: each member's gradient is its own loss's, so the
        # members train exactly as separate runs (AdamW is per coordinate)
        losses = jax.vmap(lambda c, r: jnp.mean(bradley_terry_loss(c, r)))(
            member_rewards(params, batch["chosen"]), member_rewards(params, batch["rejected"]))
        return jnp.sum(losses)

    def score(params, h):  # the ensemble's mean reward [N]
        return jnp.mean(member_rewards(params, h), 0)

    def eval_fn(params, val):  # agreement with the (BT-labelled) validation pairs
        return {"val_accuracy": jnp.mean(score(params, val["val_chosen"])
                                         > score(params, val["val_rejected"]))}

    stack = lambda k: jnp.asarray(np.stack([p[k] for p in per_seed]))  # noqa: E731
    data = {k: stack(k) for k in ("chosen", "rejected")}
    val = {k: stack(k) for k in ("val_chosen", "val_rejected")}
    tc = config.train
    fits = {}
    for name, (lr, wd) in grid(config).items():
        fits[name] = fit_small(os.path.join(workdir, "head", name.replace(",", "_")),
                               loss_fn=loss_fn, init_params=init,
                               tx=optax.adamw(lr, weight_decay=wd), num_steps=int(tc.steps),
                               data=data, seeds=seeds, per_seed_data=True, eval_fn=eval_fn,
                               eval_data=val, steps_per_log=int(tc.eval_every),
                               select=("val_accuracy", "max"))
    evaluate = jax.jit(jax.vmap(score))

    def stacked(name, side):
        return jnp.asarray(np.stack([p[name][side] for p in per_seed]))

    out, records = {}, {}
    for i, (s, p) in enumerate(zip(seeds, per_seed)):
        chosen, record = choose_on_validation(
            {name: fit.best_score[i] for name, fit in fits.items()}, float)
        records[s] = record
        fit = fits[chosen]
        params = jax.tree.map(lambda x, i=i: x[i:i + 1], fit.best_params)

        def accuracy(name, params=params, p=p):
            sa = np.asarray(evaluate(params, stacked(name, "a")[i:i + 1]))[0]
            sb = np.asarray(evaluate(params, stacked(name, "b")[i:i + 1]))[0]
            return float(np.mean((sa > sb) == p[name]["a_better"]))

        train_margin = np.asarray(evaluate(params, data["chosen"][i:i + 1])
                                  - evaluate(params, data["rejected"][i:i + 1]))[0]
        lr, wd = grid(config)[chosen]
        out[s] = {"test_mm_accuracy": accuracy("test"), "test_text_accuracy":
                  accuracy("text_test"), "val_accuracy": float(fit.best_score[i]),
                  "chosen_learning_rate": lr, "chosen_weight_decay": wd,
                  "chosen_step": float(fit.best_step[i]),
                  "train_label_fit": float(np.mean(train_margin > 0)),
                  "final_train_loss": float(fit.final_loss[i]) / members}
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, "selection.json"), "w") as f:
        json.dump({str(s): r for s, r in records.items()}, f, indent=1)
    return out


def claims(results) -> list[protocol.Claim]:
    acc = {v: seed_mean(results, v, "test_mm_accuracy") for v in VARIANTS}
    return [
        protocol.compare(
            "the two-layer MLP head beats the linear head by >= 2 points of multimodal test "
            "accuracy (both on the multimodal + text mixture)", results,
            ("mlp_mix", "test_mm_accuracy"), ("linear_mix", "test_mm_accuracy"), at_least=0.02,
            detail=f"MLP {acc['mlp_mix']:.3f} vs linear {acc['linear_mix']:.3f} on the mixture "
                   f"(multimodal only: MLP {acc['mlp_mm']:.3f} vs linear "
                   f"{acc['linear_mm']:.3f}); every head's lr / weight decay / step chosen on "
                   f"validation from the same grid"),
        protocol.compare(
            "adding text-only pairs raises the MLP head's multimodal test accuracy by >= 1 point",
            results, ("mlp_mix", "test_mm_accuracy"), ("mlp_mm", "test_mm_accuracy"),
            at_least=0.01,
            detail=f"mixture {acc['mlp_mix']:.3f} vs multimodal only {acc['mlp_mm']:.3f} "
                   f"(ensemble of 3 on the mixture: {acc['mlp_mix_ensemble']:.3f})"),
    ]


def plots(results, workdir: str) -> list[str]:
    """Multimodal and text-only held-out accuracy per variant (mean +- std over seeds)."""
    from alignax.train.plots import plot_variant_bars

    return [plot_variant_bars(
        results, [("test_mm_accuracy", "multimodal test accuracy"),
                  ("test_text_accuracy", "text-only test accuracy")],
        os.path.join(workdir, "plots", "base_reward.png"),
        title="BaseReward: reward heads and data mixtures on a frozen backbone", zoom=True)]
