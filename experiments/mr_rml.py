"""MR-RML: a multi-dimensional rubric reward model with geometric projection reference constraints.

Paper: Jin et al. 2025, "Multidimensional Rubric-oriented Reward Model Learning via Geometric
Projection Reference Constraints" (arXiv 2511.16139). The GPRC loss is a reconstruction from the
paper's description (`alignax.losses.rubric`).

Setting (feature-vector testbed): prompts x and responses y are embeddings in R^16. Every prompt
has a hidden reference (ideal) answer ref(x) = B x + c (B, c fixed random), so the
prompt -> reference axis d(x) = ref(x) - x, u = d / |d|, varies with the prompt. The D = 3 gold
rubric scores are projections of y - x on hidden directions tied to that axis,
g_k(x, y) = <y - x, 0.8 u(x) + 0.6 w_k> (w_k fixed random unit vectors). Responses are
y = x + t d(x) + 0.5 eps with t ~ U(0, 1). Labelled data: pairs of responses to one prompt with
per-rubric verdicts from the gold scores (plus annotation noise); a label budget of 200, 1000 or
5000 pairs. Synthetic data: 5000 pairs of responses to other prompts, each with the prompt's
reference answer, but no rubric labels; they are ordered by their projection s on the
prompt -> reference axis (`reference_projection`).

Reward model: an MLP on [x, y] (32 -> 64 -> 64 -> D), trained full batch with AdamW. `plain`: the
per-rubric BT loss on the labelled pairs. `gprc`: the same plus, on the synthetic pairs,
`gprc_loss` for every rubric head (axis-similarity ranking of the response further along the
axis, and a small perpendicular-deviation penalty that compares each response's scores with
those of its on-axis projection x + s d).

Metrics (held-out prompts): mean over rubrics of Spearman(gold g_k, predicted r_k) over responses,
and mean per-rubric pair accuracy on held-out pairs of responses to one prompt.

Claims checked: (1) at 200 labels GPRC improves the mean Spearman by >= 0.05 and the pair
accuracy by >= 3 points; (2) the gap shrinks with more labels (the 5000-label gaps are smaller
than the 200-label gaps).

    alignax run experiments/mr_rml.py            # full setting, 5 seeds
    alignax run experiments/mr_rml.py:smoke      # seconds, for the tests
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from alignax.experiment import Claim, is_smoke, metric
from alignax.losses.reward import bradley_terry_loss
from alignax.losses.rubric import gprc_loss, reference_projection
from alignax.models.mlp import MLPConfig, make_mlp
from alignax.ops import spearman
from alignax.train.small import fit_small

BUDGETS = (200, 1000, 5000)
D = 3  # rubric dimensions


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    smoke = is_smoke(arg)
    c = ml_collections.ConfigDict()
    c.seeds = [0] if smoke else [0, 1, 2, 3, 4]
    c.method = "gprc"
    c.num_labels = 200
    budgets = BUDGETS if not smoke else (20, 100)
    c.variants = {f"{m}_{n}": {"method": m, "num_labels": n} for n in budgets
                  for m in ("plain", "gprc")}
    c.task = dict(dim=16, axis_weight=0.8, rubric_weight=0.6, response_noise=0.5,
                  label_noise=0.2)
    c.data = dict(num_synthetic=5000 if not smoke else 200, num_eval_prompts=1000
                  if not smoke else 100)
    c.model = dict(hidden=[64, 64])
    c.loss = dict(axis_weight=1.0, perpendicular_weight=0.1, temperature=1.0)
    c.train = dict(steps=300 if not smoke else 20, learning_rate=3e-3, weight_decay=1e-4)
    return c


class Task:
    def __init__(self, cfg, seed: int):
        rng = np.random.default_rng([seed, 38])
        n = cfg.dim
        self.b = rng.standard_normal((n, n)) / np.sqrt(n)
        self.c = rng.standard_normal(n)
        w = rng.standard_normal((n, D))
        self.w = w / np.linalg.norm(w, axis=0)
        self.cfg = cfg

    def reference(self, x):
        return x @ self.b.T + self.c

    def gold(self, x, y):  # [N, n] x2 -> [N, D]
        d = self.reference(x) - x
        u = d / np.linalg.norm(d, axis=-1, keepdims=True)
        v = y - x
        return (self.cfg.axis_weight * np.sum(v * u, -1, keepdims=True)
                + self.cfg.rubric_weight * v @ self.w)

    def responses(self, x, rng):
        t = rng.uniform(size=(len(x), 1))
        return (x + t * (self.reference(x) - x)
                + self.cfg.response_noise * rng.standard_normal(x.shape))


def _f32(*arrays):
    return [jnp.asarray(a, jnp.float32) for a in arrays]


def make_seed_data(config, seed: int) -> dict:
    """One seed's labelled pairs, synthetic axis-ordered pairs and held-out prompts (arrays)."""
    cfg = config.task
    task = Task(cfg, seed)
    rng = np.random.default_rng([seed, 39])
    n = cfg.dim

    # labelled pairs (per-rubric verdicts); the first 200 are shared by every budget
    num = int(config.num_labels)
    lx = rng.standard_normal((max(num, max(BUDGETS)), n))[:num]
    ya, yb = task.responses(lx, rng), task.responses(lx, rng)
    gap = task.gold(lx, ya) - task.gold(lx, yb)
    a_wins = gap + cfg.label_noise * rng.standard_normal(gap.shape) > 0  # [N, D]
    lx, ya, yb, a_wins = _f32(lx, ya, yb, a_wins)

    # synthetic pairs on other prompts, ordered by the projection on the prompt -> reference axis
    m = config.data.num_synthetic
    sx = rng.standard_normal((m, n))
    sref = task.reference(sx)
    s1, s2 = task.responses(sx, rng), task.responses(sx, rng)
    sx, sref, s1, s2 = _f32(sx, sref, s1, s2)
    t1, _ = reference_projection(sx, sref, s1)
    t2, _ = reference_projection(sx, sref, s2)
    first_higher = (t1 > t2)[:, None]
    hi, lo = jnp.where(first_higher, s1, s2), jnp.where(first_higher, s2, s1)
    t_hi, t_lo = jnp.maximum(t1, t2)[:, None], jnp.minimum(t1, t2)[:, None]
    hi_axis = sx + t_hi * (sref - sx)  # on-axis projections
    lo_axis = sx + t_lo * (sref - sx)

    # held-out prompts: two responses each
    k = config.data.num_eval_prompts
    ex = rng.standard_normal((k, n))
    ea, eb = task.responses(ex, rng), task.responses(ex, rng)
    return {"lx": lx, "ya": ya, "yb": yb, "a_wins": a_wins, "sx": sx, "hi": hi, "lo": lo,
            "hi_axis": hi_axis, "lo_axis": lo_axis, "ex": ex, "ea": ea, "eb": eb,
            "ga": task.gold(ex, ea), "gb": task.gold(ex, eb)}


TRAIN_KEYS = ("lx", "ya", "yb", "a_wins", "sx", "hi", "lo", "hi_axis", "lo_axis")


def run_seeds(config: ml_collections.ConfigDict, workdir: str) -> dict[int, dict[str, float]]:
    """Every seed of one (method, label budget): one `fit_small` program, then the held-out
    Spearman and pair accuracy of each seed."""
    if config.method not in ("plain", "gprc"):
        raise ValueError(f"unknown method {config.method!r}; 'plain' or 'gprc'")
    seeds = [int(s) for s in config.seeds]
    n = config.task.dim
    per_seed = [make_seed_data(config, s) for s in seeds]
    use_gprc = config.method == "gprc"
    keys = TRAIN_KEYS if use_gprc else TRAIN_KEYS[:4]
    data = {k: jnp.stack([p[k] for p in per_seed]) for k in keys}

    model = make_mlp(MLPConfig(in_dim=2 * n, hidden=tuple(config.model.hidden), out_dim=D,
                               activation="gelu"))

    def scores(p, x, y):
        return model.apply(p, jnp.concatenate([x, y], axis=-1))  # [N, D]

    lw = config.loss

    def loss_fn(p, d):
        ra, rb = scores(p, d["lx"], d["ya"]), scores(p, d["lx"], d["yb"])
        rc, rr = jnp.where(d["a_wins"] > 0, ra, rb), jnp.where(d["a_wins"] > 0, rb, ra)
        loss = jnp.mean(bradley_terry_loss(rc.reshape(-1), rr.reshape(-1)))
        if use_gprc:
            rh, rl = scores(p, d["sx"], d["hi"]), scores(p, d["sx"], d["lo"])
            rh_par, rl_par = scores(p, d["sx"], d["hi_axis"]), scores(p, d["sx"], d["lo_axis"])
            axis = gprc_loss(rh.reshape(-1), rl.reshape(-1), rh_par.reshape(-1),
                             rl_par.reshape(-1), temperature=lw.temperature,
                             perpendicular_weight=lw.perpendicular_weight)
            loss = loss + lw.axis_weight * jnp.mean(axis)
        return loss

    tr = config.train
    fit = fit_small(os.path.join(workdir, "reward_model"), loss_fn=loss_fn,
                    init_params=model.init,
                    tx=optax.adamw(float(tr.learning_rate), weight_decay=float(tr.weight_decay)),
                    num_steps=int(tr.steps), data=data, seeds=seeds, per_seed_data=True)

    predict = jax.jit(jax.vmap(scores))
    ex, ea, eb = (jnp.asarray(np.stack([p[k] for p in per_seed]), jnp.float32)
                  for k in ("ex", "ea", "eb"))
    all_pa, all_pb = np.asarray(predict(fit.params, ex, ea)), np.asarray(
        predict(fit.params, ex, eb))
    out = {}
    for i, (s, p) in enumerate(zip(seeds, per_seed)):
        pa, pb, ga, gb = all_pa[i], all_pb[i], p["ga"], p["gb"]
        rhos, accs = [], []
        for j in range(D):
            g, r = np.concatenate([ga[:, j], gb[:, j]]), np.concatenate([pa[:, j], pb[:, j]])
            rhos.append(float(spearman(g, r)))
            accs.append(float(np.mean((pa[:, j] > pb[:, j]) == (ga[:, j] > gb[:, j]))))
        out[s] = {"final_train_loss": float(fit.final_loss[i]), "spearman": float(np.mean(rhos)),
                  "pair_accuracy": float(np.mean(accs))}
    return out


def _budgets(results) -> list[int]:
    return sorted({int(v.split("_")[1]) for v in results})


def claims(results) -> list[Claim]:
    budgets = _budgets(results)
    low, high = budgets[0], budgets[-1]

    def gap(name, b):
        return metric(results, f"gprc_{b}", name) - metric(results, f"plain_{b}", name)

    measured = {f"{k}_gap_{b}": gap(k, b) for b in budgets for k in ("spearman", "pair_accuracy")}
    return [
        Claim(
            name=f"at {low} labels GPRC improves held-out mean Spearman(gold, pred) by >= 0.05 and "
                 f"pair accuracy by >= 3 points",
            passed=gap("spearman", low) >= 0.05 and gap("pair_accuracy", low) >= 0.03,
            measured={"spearman_gprc": metric(results, f"gprc_{low}", "spearman"),
                      "spearman_plain": metric(results, f"plain_{low}", "spearman"),
                      "accuracy_gprc": metric(results, f"gprc_{low}", "pair_accuracy"),
                      "accuracy_plain": metric(results, f"plain_{low}", "pair_accuracy")},
            detail=f"Spearman gap {gap('spearman', low):+.4f}, accuracy gap "
                   f"{gap('pair_accuracy', low):+.4f}",
        ),
        Claim(
            name=f"the GPRC gain shrinks with more labels ({high} vs {low})",
            passed=(gap("spearman", high) < gap("spearman", low)
                    and gap("pair_accuracy", high) < gap("pair_accuracy", low)),
            measured=measured,
            detail=", ".join(f"{k} {v:+.4f}" for k, v in measured.items()),
        ),
    ]


def plots(results, workdir: str) -> list[str]:
    """Held-out Spearman and pair accuracy against the label budget, with and without GPRC."""
    from alignax.train.plots import plot_curves

    budgets = _budgets(results)
    paths = []
    for name, label in (("spearman", "mean Spearman(gold, pred)"),
                        ("pair_accuracy", "held-out pair accuracy")):
        curves = {}
        for m in ("plain", "gprc"):
            stats = [results[f"{m}_{b}"]["metrics"][name] for b in budgets]
            curves[m] = (np.log10(budgets), [s["mean"] for s in stats],
                         [s["std"] for s in stats])
        path = os.path.join(workdir, "plots", f"mr_rml_{name}.png")
        paths.append(plot_curves(curves, path, title=f"MR-RML: {label} vs labels",
                                 xlabel="log10(labelled pairs)", ylabel=label))
    return paths
