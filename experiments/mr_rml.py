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

Reward model: an MLP on [x, y] (32 -> 64 -> 64 -> D), trained full batch with AdamW. Variants
per label budget:
  - `plain`: the per-rubric BT loss on the labelled pairs only;
  - `plain_aux`: the same plus the synthetic axis-ordered pairs as ordinary BT pairs on every
    rubric head (the fair baseline: the same reference answers and the same orderings as GPRC);
  - `gprc`: the labelled BT loss plus, on the synthetic pairs, `gprc_loss` for every rubric head
    (axis-similarity ranking of the response further along the axis, and a perpendicular-
    deviation penalty that compares each response's scores with those of its on-axis
    projection x + s d).
Privileged information (issue 18): the synthetic orderings come from the reference answers, and
the axis projection is 80% of every gold rubric score by construction, so against `plain` GPRC
has information the baseline lacks. The paper's GPRC also gets its orderings from reference
answers (graded corruptions of a reference), so the orderings stay as they are and the baseline
gets the same information instead: the claims compare `gprc` with `plain_aux`, i.e. they test
GPRC's use of the reference geometry, not the extra data. `plain` is reported in the details.

Splits (issue 18 protocol): the world (B, c, w_k) is seeded by the experiment seed s; labelled
and synthetic training data come from the data seed 3s, 200 labelled validation pairs (same
annotation noise as the training labels) from 3s + 1, the test prompts from 3s + 2
(`split_seeds`).

Selection (every variant the same): early stopping on validation, `fit_small(select=
("val_accuracy", "max"))`, the mean per-rubric agreement with the validation labels checked
every 25 of 600 full-batch steps; each seed keeps its best step (`chosen_step`, `val_accuracy`).
Before issue 18 every variant ran a hand-set 300 steps.

Metrics (test prompts): `test_spearman`, the mean over rubrics of Spearman(gold g_k, predicted
r_k) over responses, and `test_pair_accuracy`, the mean per-rubric accuracy on test pairs of
responses to one prompt (gold ordering).

Claims (5 seeds, paired 95% t intervals, all comparative, GPRC vs the fair `plain_aux`): at 200
labels GPRC (1) raises the test Spearman by >= 0.05 and (2) the test pair accuracy by >= 3
points; the gain shrinks with more labels: (3) Spearman gain at 200 minus gain at 5000 >= 0,
(4) the same for the pair accuracy.

    alignax run experiments/mr_rml.py            # full setting, 5 seeds
    alignax run experiments/mr_rml.py:smoke      # seconds, for the tests
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
from alignax.experiment import is_smoke
from alignax.losses.reward import bradley_terry_loss
from alignax.losses.rubric import gprc_loss, reference_projection
from alignax.models.mlp import MLPConfig, make_mlp
from alignax.ops import spearman
from alignax.tasks.splits import split_seeds
from alignax.train.small import fit_small

BUDGETS = (200, 1000, 5000)
METHODS = ("plain", "plain_aux", "gprc")
D = 3  # rubric dimensions


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    smoke = is_smoke(arg)
    c = ml_collections.ConfigDict()
    c.seeds = [0] if smoke else [0, 1, 2, 3, 4]
    c.method = "gprc"
    c.num_labels = 200
    budgets = BUDGETS if not smoke else (20, 100)
    c.variants = {f"{m}_{n}": {"method": m, "num_labels": n} for n in budgets
                  for m in METHODS}
    c.task = dict(dim=16, axis_weight=0.8, rubric_weight=0.6, response_noise=0.5,
                  label_noise=0.2)
    c.data = dict(num_synthetic=5000 if not smoke else 200, num_val_pairs=200
                  if not smoke else 50, num_eval_prompts=1000 if not smoke else 100)
    c.model = dict(hidden=[64, 64])
    c.loss = dict(axis_weight=1.0, perpendicular_weight=0.1, temperature=1.0)
    c.train = dict(steps=600 if not smoke else 20, eval_every=25 if not smoke else 10,
                   learning_rate=3e-3, weight_decay=1e-4)
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
    # numpy rounds float64 -> float32 as jax does, without an eager convert program per shape
    return [np.asarray(a, np.float32) for a in arrays]


def labelled_pairs(task, num: int, rng) -> tuple:
    """num pairs of responses to one prompt with noisy per-rubric verdicts a_wins [N, D]."""
    cfg = task.cfg
    lx = rng.standard_normal((max(num, max(BUDGETS)), cfg.dim))[:num]
    ya, yb = task.responses(lx, rng), task.responses(lx, rng)
    gap = task.gold(lx, ya) - task.gold(lx, yb)
    a_wins = gap + cfg.label_noise * rng.standard_normal(gap.shape) > 0  # [N, D]
    return _f32(lx, ya, yb, a_wins)


def make_seed_data(config, seed: int) -> dict:
    """One seed's labelled pairs and synthetic axis-ordered pairs (data seed 3s), labelled
    validation pairs (3s + 1) and test prompts (3s + 2); the world is seeded by `seed`."""
    cfg = config.task
    task = Task(cfg, seed)
    seeds = split_seeds(seed)
    rng = np.random.default_rng([seeds.train, 39])
    n = cfg.dim

    # labelled pairs (per-rubric verdicts)
    lx, ya, yb, a_wins = labelled_pairs(task, int(config.num_labels), rng)
    vx, va, vb, v_wins = labelled_pairs(task, int(config.data.num_val_pairs),
                                        np.random.default_rng([seeds.validation, 39]))

    # synthetic pairs on other prompts, ordered by the projection on the prompt -> reference axis
    m = config.data.num_synthetic
    sx = rng.standard_normal((m, n))
    sref = task.reference(sx)
    s1, s2 = task.responses(sx, rng), task.responses(sx, rng)
    sx, sref, s1, s2 = _f32(sx, sref, s1, s2)
    # eager on purpose: the projections jitted into one program round differently (fused
    # reductions and multiply-adds), which would change the full run's data
    t1, _ = reference_projection(sx, sref, s1)
    t2, _ = reference_projection(sx, sref, s2)
    first_higher = (t1 > t2)[:, None]
    hi, lo = jnp.where(first_higher, s1, s2), jnp.where(first_higher, s2, s1)
    t_hi, t_lo = jnp.maximum(t1, t2)[:, None], jnp.minimum(t1, t2)[:, None]
    hi_axis = sx + t_hi * (sref - sx)  # on-axis projections
    lo_axis = sx + t_lo * (sref - sx)

    # test prompts: two responses each
    rng = np.random.default_rng([seeds.test, 39])
    k = config.data.num_eval_prompts
    ex = rng.standard_normal((k, n))
    ea, eb = task.responses(ex, rng), task.responses(ex, rng)
    return {"lx": lx, "ya": ya, "yb": yb, "a_wins": a_wins, "vx": vx, "va": va, "vb": vb,
            "v_wins": v_wins, "sx": sx, "hi": hi, "lo": lo,
            "hi_axis": hi_axis, "lo_axis": lo_axis, "ex": ex, "ea": ea, "eb": eb,
            "ga": task.gold(ex, ea), "gb": task.gold(ex, eb)}


@functools.lru_cache(maxsize=None)
def _model(in_dim: int, hidden: tuple):
    """(the rubric MLP [N, in_dim] -> [N, D], its jitted test prediction `(params [S, ...],
    x [S, N, n], y [S, N, n]) -> [S, N, D]`), built once per architecture so that every variant
    of a run reuses the compiled prediction."""
    model = make_mlp(MLPConfig(in_dim=in_dim, hidden=hidden, out_dim=D, activation="gelu"))
    return model, jax.jit(jax.vmap(
        lambda p, x, y: model.apply(p, jnp.concatenate([x, y], axis=-1))))


TRAIN_KEYS = ("lx", "ya", "yb", "a_wins", "sx", "hi", "lo", "hi_axis", "lo_axis")
VAL_KEYS = ("vx", "va", "vb", "v_wins")


def run_seeds(config: ml_collections.ConfigDict, workdir: str) -> dict[int, dict[str, float]]:
    """Every seed of one (method, label budget): one `fit_small` program early-stopped on
    validation, then the test Spearman and pair accuracy of each seed's selected params."""
    if config.method not in METHODS:
        raise ValueError(f"unknown method {config.method!r}; one of {METHODS}")
    seeds = [int(s) for s in config.seeds]
    n = config.task.dim
    per_seed = [make_seed_data(config, s) for s in seeds]
    use_aux = config.method != "plain"
    keys = TRAIN_KEYS if config.method == "gprc" else (
        TRAIN_KEYS[:7] if use_aux else TRAIN_KEYS[:4])
    # jax.device_put: jnp.asarray of a host array compiles a staging program per shape
    data = {k: jax.device_put(np.stack([p[k] for p in per_seed])) for k in keys}
    val = {k: jax.device_put(np.stack([p[k] for p in per_seed])) for k in VAL_KEYS}

    model, predict = _model(2 * n, tuple(int(h) for h in config.model.hidden))

    def scores(p, x, y):
        return model.apply(p, jnp.concatenate([x, y], axis=-1))  # [N, D]

    lw = config.loss

    def loss_fn(p, d):
        ra, rb = scores(p, d["lx"], d["ya"]), scores(p, d["lx"], d["yb"])
        rc, rr = jnp.where(d["a_wins"] > 0, ra, rb), jnp.where(d["a_wins"] > 0, rb, ra)
        loss = jnp.mean(bradley_terry_loss(rc.reshape(-1), rr.reshape(-1)))
        if use_aux:
            rh, rl = scores(p, d["sx"], d["hi"]), scores(p, d["sx"], d["lo"])
            if config.method == "gprc":
                rh_par = scores(p, d["sx"], d["hi_axis"])
                rl_par = scores(p, d["sx"], d["lo_axis"])
                axis = gprc_loss(rh.reshape(-1), rl.reshape(-1), rh_par.reshape(-1),
                                 rl_par.reshape(-1), temperature=lw.temperature,
                                 perpendicular_weight=lw.perpendicular_weight)
            else:  # the same ordered pairs as plain BT pairs on every head
                axis = bradley_terry_loss(rh.reshape(-1), rl.reshape(-1))
            loss = loss + lw.axis_weight * jnp.mean(axis)
        return loss

    def eval_fn(p, v):  # mean per-rubric agreement with the (noisy) validation verdicts
        va, vb = scores(p, v["vx"], v["va"]), scores(p, v["vx"], v["vb"])
        return {"val_accuracy": jnp.mean((va > vb) == (v["v_wins"] > 0))}

    tr = config.train
    fit = fit_small(os.path.join(workdir, "reward_model"), loss_fn=loss_fn,
                    init_params=model.init,
                    tx=optax.adamw(float(tr.learning_rate), weight_decay=float(tr.weight_decay)),
                    num_steps=int(tr.steps), data=data, seeds=seeds, per_seed_data=True,
                    eval_fn=eval_fn, eval_data=val, steps_per_log=int(tr.eval_every),
                    select=("val_accuracy", "max"))

    ex, ea, eb = (jax.device_put(np.stack([p[k] for p in per_seed]).astype(np.float32))
                  for k in ("ex", "ea", "eb"))
    all_pa = np.asarray(predict(fit.best_params, ex, ea))
    all_pb = np.asarray(predict(fit.best_params, ex, eb))
    out = {}
    for i, (s, p) in enumerate(zip(seeds, per_seed)):
        pa, pb, ga, gb = all_pa[i], all_pb[i], p["ga"], p["gb"]
        rhos, accs = [], []
        for j in range(D):
            g, r = np.concatenate([ga[:, j], gb[:, j]]), np.concatenate([pa[:, j], pb[:, j]])
            rhos.append(float(spearman(g, r)))
            accs.append(float(np.mean((pa[:, j] > pb[:, j]) == (ga[:, j] > gb[:, j]))))
        out[s] = {"final_train_loss": float(fit.final_loss[i]),
                  "test_spearman": float(np.mean(rhos)),
                  "test_pair_accuracy": float(np.mean(accs)),
                  "val_accuracy": float(fit.best_score[i]),
                  "chosen_step": float(fit.best_step[i])}
    return out


def _budgets(results) -> list[int]:
    return sorted({int(v.rsplit("_", 1)[1]) for v in results})


def _gaps(results, name: str, budget: int, baseline: str = "plain_aux") -> dict:
    """{seed: gprc - baseline} of one metric at one budget."""
    a = protocol.per_seed(results, f"gprc_{budget}", name)
    b = protocol.per_seed(results, f"{baseline}_{budget}", name)
    return {s: a[s] - b[s] for s in a if s in b}


def claims(results) -> list[protocol.Claim]:
    budgets = _budgets(results)
    low, high = budgets[0], budgets[-1]
    mean = lambda d: float(np.mean(list(d.values())))  # noqa: E731

    def context(name):
        return ", ".join(
            f"{b}: GPRC {mean(protocol.per_seed(results, f'gprc_{b}', name)):.3f}, plain_aux "
            f"{mean(protocol.per_seed(results, f'plain_aux_{b}', name)):.3f}, labels-only plain "
            f"{mean(protocol.per_seed(results, f'plain_{b}', name)):.3f}" for b in budgets)

    privileged = ("baseline plain_aux gets the same synthetic reference-ordered pairs as BT "
                  "pairs; against labels-only plain (which lacks the reference answers, whose "
                  "axis carries 80% of the gold score) GPRC gains ")
    out = []
    for name, threshold, label in (("test_spearman", 0.05, "mean Spearman(gold, pred) by >= "
                                    "0.05"),
                                   ("test_pair_accuracy", 0.03, "pair accuracy by >= 3 points")):
        vs_plain = mean(_gaps(results, name, low, "plain"))
        out.append(protocol.compare(
            f"at {low} labels GPRC raises the test {label} over BT with the same synthetic "
            f"pairs", results, (f"gprc_{low}", name), (f"plain_aux_{low}", name),
            at_least=threshold,
            detail=f"{privileged}{vs_plain:+.3f} at {low} labels; {context(name)}"))
    for name in ("test_spearman", "test_pair_accuracy"):
        g_low, g_high = _gaps(results, name, low), _gaps(results, name, high)
        shrink = {s: g_low[s] - g_high[s] for s in g_low if s in g_high}
        out.append(protocol.decide(
            f"the GPRC gain in {name} over plain_aux shrinks with more labels (gain at {low} "
            f"minus gain at {high} >= 0)", shrink, kind=protocol.COMPARATIVE, at_least=0.0,
            measured={f"gain_{b}": mean(_gaps(results, name, b)) for b in budgets}
            | {"shrink": mean(shrink)},
            detail=", ".join(f"gain over plain_aux at {b}: {mean(_gaps(results, name, b)):+.4f}"
                             f" (over plain {mean(_gaps(results, name, b, 'plain')):+.4f})"
                             for b in budgets)))
    return out


def plots(results, workdir: str) -> list[str]:
    """Held-out Spearman and pair accuracy against the label budget, with and without GPRC."""
    from alignax.train.plots import plot_curves

    budgets = _budgets(results)
    paths = []
    for name, label in (("test_spearman", "mean Spearman(gold, pred)"),
                        ("test_pair_accuracy", "test pair accuracy")):
        curves = {}
        for m in METHODS:
            stats = [results[f"{m}_{b}"]["metrics"][name] for b in budgets]
            curves[m] = (np.log10(budgets), [s["mean"] for s in stats],
                         [s["std"] for s in stats])
        path = os.path.join(workdir, "plots", f"mr_rml_{name}.png")
        paths.append(plot_curves(curves, path, title=f"MR-RML: {label} vs labels",
                                 xlabel="log10(labelled pairs)", ylabel=label))
    return paths
