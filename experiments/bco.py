"""Binary Classifier Optimization (BCO): thumbs-up / thumbs-down alignment with a reward shift.

Paper: Jung et al. 2024, "Binary Classifier Optimization for Large Language Model Alignment"
(arXiv 2404.04656).

Mechanism. With the implicit reward r(x, y) = beta (log pi(y|x) - log pi_ref(y|x)), BCO trains a
binary classifier, thumbs-up (label 1) against thumbs-down (label 0):

    L = -E_{D+}[log s(r - delta)] - E_{D-}[w(x) log s(-(r - delta))],

where delta is the running mean of every reward seen so far (no gradient; the paper's shift that
tightens the bound of the BCE loss on the DPO loss) and w(x) the underlying-distribution-matching
(UDM) weights of the rejected examples, w(x) = clip(p(+|x) / (1 - p(+|x)), 0.5, 10), from a
class-balanced logistic classifier on prompt features separating thumbs-up from thumbs-down
prompts (`alignax.ops.density_ratio.matching_weights`, Newton/IRLS; TRL's clip defaults). The
shift delta is `alignax.losses.direct.RunningMean` carried by the trainer
(`fit_small(loss_state=...)`): it lives in the checkpointed loop state, so a stopped run resumes
with the same delta (tests/train/test_small.py). The running mean
is updated with the batch's rewards before the loss reads it (TRL's BCOTrainer order).

Toy (notes' design). A tiny LM: `alignax.models.sequence_table` over all 4^4 = 256 sequences
(vocabulary 4, length 4), log-linear in F = 4 prompt features phi(x), so the policy generalises
across prompts. Prompts come from two clusters, phi = +-sep u + noise (u a random unit vector);
the gold reward g(x, y) = sum_t e_{t, y_t} . [1, phi(x)] + sum_t c(y_t, y_{t+1}) (standardised)
prefers different responses in the two clusters. pi_ref is a random log-linear table; the
policy starts at pi_ref. Responses are drawn from pi_ref.
  (i) paired: each training prompt gets two pi_ref responses, the higher-gold one is chosen.
      DPO trains on the pairs; BCE (delta = 0) and BCO treat chosen as thumbs-up and rejected as
      thumbs-down (the same batches).
  (ii) divergent: single pi_ref responses labelled thumbs-up when their gold exceeds the median
      gold of pi_ref (a global threshold); 85% of the thumbs-up prompts come from cluster A and
      85% of the thumbs-down prompts from cluster B. BCE (delta = 0), BCO, and BCO + UDM.
The world (cluster axis, gold, pi_ref) is seeded by the experiment seed s; training, validation
and test prompts and responses by the data seeds `split_seeds(s)`. Validation and test prompts
are drawn 50/50 from the two clusters (the underlying distribution). Every metric is exact
(sums over the 256 sequences): gold gain E_pi[g] - E_ref[g], gold win rate against pi_ref
(P(g(y) > g(y')) + ties/2, y ~ pi, y' ~ pi_ref; `alignax.eval.exact`), KL(pi || pi_ref).

Selection (every variant the same): Adam, `train.steps` updates of minibatches, early stopping
on the validation gold E_pi[g] every `eval_every` updates (`fit_small(select=("val_gold",
"max"))`), for each beta in `train.betas`; then beta is chosen per seed on the same validation
score (`choose_on_validation`, recorded as `chosen_beta`, `chosen_step`, `val_gold`, and the
`val_gold_beta_<b>` scores). Validation uses the gold reward (an oracle every variant gets
equally); test prompts are never seen before the final measurement.

Claims (>= 5 seeds, paired 95% t intervals):
  1-2 (threshold, per-seed ratio, `protocol.decide`): in the paired setting BCO's test gold gain
      is 90-110% of DPO's: ratio >= 0.9 and ratio <= 1.1 (both must PASS).
  3 (comparative): in the divergent setting BCO+UDM's test gold win rate vs pi_ref beats BCO's by
      >= 3 points;
  4 (comparative): and beats BCE-without-shift by >= 3 points.
  Reported: the paired BCE, each variant's KL, the per-cluster win rates, the mean UDM weight of
  the rejected examples in each cluster.

Pilots (4 seeds, before the full run): with Adam lr 0.03 and betas {0.1, 0.3, 1} every variant
chose the smallest beta and DPO stopped at the last step, so the grid was moved down to
{0.01, 0.03, 0.1, 0.3} and lr raised to 0.1 for every variant alike. BCO then still chose the
smallest beta (its classifier loss is nearly linear in the log-ratio there) and reached about
0.86 of DPO's gold gain; in the divergent setting (lr 0.03) BCO+UDM led BCO by about 2 points
and BCE by about 4. The toy (clusters, gold, 85% divergence) was fixed before these pilots.

Outcome of the full run (8 seeds; experiments/summaries/bco-114912b.json). Paired: BCO's gain is
0.87 of DPO's (95% interval 0.81-0.92): the <= 110% half PASSes, the >= 90% half is INCONCLUSIVE
(the interval straddles 0.9). BCO and BCE choose the grid's smallest beta on every seed; a
validation-only check with beta = 0.003 added gave BCO a validation gold of 1.19 against 1.17 at
0.01 (DPO 1.36), so the grid's edge does not explain the gap: at these betas BCO's loss is
nearly linear in the log-ratio and a smaller beta gives nearly the same Adam updates. Paired
BCO's mean gain is above BCE's (1.16 vs 1.09; not claimed). Divergent: BCO+UDM leads BCO by 2.5
points of win rate (-0.5 to 5.4) and BCE without the shift by 4.0 (1.6 to 6.4): both in the
paper's direction, but neither interval clears the 3-point bar (INCONCLUSIVE); the UDM gain is
largest on the cluster-A prompts, whose rejected examples are rare and get weights ~4.

    alignax run experiments/bco.py            # full setting
    alignax run experiments/bco.py:smoke      # seconds, for the tests
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
from alignax.protocol import seed_mean
from alignax.eval.exact import win_probabilities
from alignax.experiment import is_smoke
from alignax.losses.direct import RunningMean, bco_loss, dpo_loss
from alignax.models import sequence_table as st
from alignax.ops.density_ratio import matching_weights
from alignax.tasks.splits import choose_on_validation, split_seeds
from alignax.train.plots import plot_curves
from alignax.train.small import fit_small
from alignax.train.writers import read_metrics

METHODS = ("dpo", "bce", "bco", "bco_udm")
SETTINGS = ("paired", "divergent")
TRAIN_KEYS = ("pos_phi", "pos_y", "pos_ref", "neg_phi", "neg_y", "neg_ref", "neg_w")
EVAL_KEYS = ("phi", "gold", "ref_logp", "win")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    smoke = is_smoke(arg)
    c = ml_collections.ConfigDict()
    c.seeds = [0] if smoke else [0, 1, 2, 3, 4, 5, 6, 7]
    c.setting = "paired"
    c.method = "bco"
    c.variants = {
        "paired_dpo": {"setting": "paired", "method": "dpo"},
        "paired_bce": {"setting": "paired", "method": "bce"},
        "paired_bco": {"setting": "paired", "method": "bco"},
        "divergent_bce": {"setting": "divergent", "method": "bce"},
        "divergent_bco": {"setting": "divergent", "method": "bco"},
        "divergent_bco_udm": {"setting": "divergent", "method": "bco_udm"},
    }
    if smoke:  # the paired BCE is reported only (no claim): left out of the test suite's run
        del c.variants["paired_bce"]
    c.task = dict(vocab_size=4, length=4, num_features=4, cluster_sep=1.0, feature_noise=0.7,
                  pair_scale=0.5, ref_scale=0.7)
    # smoke: validation and test sets of one size (one log-prob / win-table program for both)
    c.data = dict(num_train=1024 if not smoke else 128, num_val=256 if not smoke else 64,
                  num_test=1024 if not smoke else 64, majority=0.85)
    c.fit_plots = not smoke  # each fit's metric PNGs (~1 s each; the smoke run draws its own)
    c.udm = dict(w_min=0.5, w_max=10.0, l2=1e-2)
    c.train = dict(steps=400 if not smoke else 20, batch_size=64 if not smoke else 16,
                   learning_rate=0.1, eval_every=20 if not smoke else 10,
                   betas=(0.01, 0.03, 0.1, 0.3) if not smoke else (0.3,))
    return c


# ----------------------------------------------------------------------------------------------
# The world and the data


def space_of(config) -> st.SequenceSpace:
    return st.SequenceSpace(int(config.task.vocab_size), int(config.task.length))


class World:
    """Experiment seed s's cluster axis, gold reward and reference policy."""

    def __init__(self, config, seed: int):
        t = self.task = config.task
        self.space = space = space_of(config)
        f = int(t.num_features)
        rng = np.random.default_rng([seed, 9001])
        axis = rng.standard_normal(f)
        self.axis = axis / np.linalg.norm(axis)
        emb = rng.standard_normal((space.length, space.vocab_size, f + 1))
        seqs = space.sequences
        self.token_part = emb[np.arange(space.length), seqs].sum(1)  # [N, F + 1]
        pair = rng.standard_normal((space.vocab_size, space.vocab_size)) * t.pair_scale
        self.pair_part = pair[seqs[:, :-1], seqs[:, 1:]].sum(1)  # [N]
        self.scale = 1.0
        probe = self.prompts(np.random.default_rng([seed, 9002]), 512)[0]
        self.scale = float(self.gold(probe).std())
        self.ref = st.init_table(space, f, key=jax.random.key(seed), scale=float(t.ref_scale))
        # the thumbs-up threshold: the median gold of pi_ref over the prompt distribution
        self.threshold = float(np.median(self._ref_gold_draws(probe, rng)))

    def prompts(self, rng, n: int, clusters=None):
        """n prompts (features [n, F], cluster [n] in {0 = A, 1 = B}); clusters 50/50 unless
        given."""
        sep, noise = float(self.task.cluster_sep), float(self.task.feature_noise)
        if clusters is None:
            clusters = rng.integers(0, 2, n)
        sign = np.where(clusters == 0, 1.0, -1.0)
        phi = sign[:, None] * sep * self.axis + noise * rng.standard_normal((n, len(self.axis)))
        return phi.astype(np.float32), clusters

    def gold(self, phi) -> np.ndarray:
        """[n, N] standardised gold of every sequence for prompts phi [n, F]."""
        phi1 = np.concatenate([np.ones((len(phi), 1)), phi], 1)
        return ((phi1 @ self.token_part.T + self.pair_part) / self.scale).astype(np.float32)

    def ref_logp(self, phi) -> np.ndarray:
        return np.asarray(_log_probs(self.space, self.ref, phi))

    def _ref_gold_draws(self, phi, rng) -> np.ndarray:
        y = sample_rows(rng, np.exp(self.ref_logp(phi)))
        return self.gold(phi)[np.arange(len(phi)), y]


_log_probs = jax.jit(st.sequence_log_probs, static_argnums=0)
_win_probabilities = jax.jit(win_probabilities)
_matching_weights = jax.jit(matching_weights, static_argnames=("l2", "w_min", "w_max"))


def sample_rows(rng, probs) -> np.ndarray:
    """One index per row of probs [n, N] (inverse CDF)."""
    cdf = np.cumsum(probs / probs.sum(1, keepdims=True), 1)
    u = rng.random((len(probs), 1))
    return np.minimum((cdf < u).sum(1), probs.shape[1] - 1).astype(np.int32)


def paired_data(world: World, config, rng) -> dict:
    """(i) two pi_ref responses per prompt, chosen = the higher gold one."""
    n = int(config.data.num_train)
    phi, _ = world.prompts(rng, n)
    ref = np.exp(world.ref_logp(phi))
    y1, y2 = sample_rows(rng, ref), sample_rows(rng, ref)
    g = world.gold(phi)
    first = g[np.arange(n), y1] >= g[np.arange(n), y2]
    pos, neg = np.where(first, y1, y2), np.where(first, y2, y1)
    return {"pos_phi": phi, "pos_y": pos, "neg_phi": phi, "neg_y": neg}


def divergent_data(world: World, config, rng) -> dict:
    """(ii) single pi_ref responses labelled by the global gold threshold; thumbs-up prompts
    mostly from cluster A, thumbs-down prompts mostly from cluster B."""
    n, major = int(config.data.num_train), float(config.data.majority)
    out = {}
    for name, up in (("pos", True), ("neg", False)):
        clusters = np.where(rng.random(n) < major, 0 if up else 1, 1 if up else 0)
        phi, _ = world.prompts(rng, n, clusters)
        good = world.gold(phi) > world.threshold
        ref = np.exp(world.ref_logp(phi)) * (good if up else ~good)
        out[f"{name}_phi"], out[f"{name}_y"] = phi, sample_rows(rng, ref + 1e-30)
        out[f"{name}_cluster"] = clusters
    return out


def eval_set(world: World, rng, n: int) -> dict:
    phi, clusters = world.prompts(rng, n)
    gold, ref_logp = world.gold(phi), world.ref_logp(phi)
    return {"phi": phi, "gold": gold, "ref_logp": ref_logp, "cluster": clusters,
            "win": np.asarray(_win_probabilities(gold, ref_logp))}


def make_data(config, seed: int) -> dict:
    """Experiment seed `seed`: the training examples of `config.setting` (with their reference
    log-probs and UDM weights), validation and test prompts, from `split_seeds(seed)`."""
    world = World(config, seed)
    seeds = split_seeds(seed)
    rng = np.random.default_rng([seeds.train, 1901])
    d = (paired_data if config.setting == "paired" else divergent_data)(world, config, rng)
    for side in ("pos", "neg"):
        ref = world.ref_logp(d[f"{side}_phi"])
        d[f"{side}_ref"] = ref[np.arange(len(ref)), d[f"{side}_y"]]
    u = config.udm
    d["neg_w"] = np.asarray(_matching_weights(d["pos_phi"], d["neg_phi"], l2=float(u.l2),
                                             w_min=float(u.w_min), w_max=float(u.w_max)))
    for split, s, n in (("val", seeds.validation, config.data.num_val),
                        ("test", seeds.test, config.data.num_test)):
        for k, v in eval_set(world, np.random.default_rng([s, 1902]), int(n)).items():
            d[f"{split}_{k}"] = v
    d["ref_params"] = world.ref
    return d


# ----------------------------------------------------------------------------------------------
# Training


def make_loss(config, beta: float):
    """(params, batch, running shift) -> (loss, metrics, new running shift) of the method."""
    space, method = space_of(config), config.method

    def logps(p, phi, y):
        lp = st.sequence_log_probs(space, p, phi)
        return jnp.take_along_axis(lp, y[:, None], axis=-1)[:, 0]

    def loss_fn(p, b, running):
        pc, pr = logps(p, b["pos_phi"], b["pos_y"]), logps(p, b["neg_phi"], b["neg_y"])
        rc, rr = b["pos_ref"], b["neg_ref"]
        rewards = beta * jnp.concatenate([pc - rc, pr - rr])
        running = running.update(rewards)
        if method == "dpo":
            losses, m = dpo_loss(pc, pr, rc, rr, beta=beta)
        else:
            delta = running.mean if method in ("bco", "bco_udm") else 0.0
            w = b["neg_w"] if method == "bco_udm" else None
            losses, m = bco_loss(pc, pr, rc, rr, delta=delta, beta=beta, rejected_weights=w)
        return losses.mean(), {"shift": running.mean,
                               "reward_margin": m["reward_margins"].mean()}, running

    return loss_fn


def eval_metrics(space, params, e, prefix: str) -> dict:
    """Exact gold, gain over pi_ref, win rate vs pi_ref and KL on the prompts of e."""
    lp = st.sequence_log_probs(space, params, e["phi"])
    p, q = jnp.exp(lp), jnp.exp(e["ref_logp"])
    gold = (p * e["gold"]).sum(-1)
    return {f"{prefix}_gold": gold.mean(),
            f"{prefix}_gold_gain": (gold - (q * e["gold"]).sum(-1)).mean(),
            f"{prefix}_win_rate": (p * e["win"]).sum(-1).mean(),
            f"{prefix}_kl": (p * (lp - e["ref_logp"])).sum(-1).mean()}


@functools.partial(jax.jit, static_argnums=0)
def _test_eval(space, params, e):
    return jax.vmap(lambda p, x: eval_metrics(space, p, x, "test"))(params, e)


@functools.partial(jax.jit, static_argnums=0)
def _prompt_win_rates(space, params, e):
    """[S, P] each test prompt's exact win rate vs pi_ref (for the per-cluster rates)."""
    def one(p, x):
        return (jnp.exp(st.sequence_log_probs(space, p, x["phi"])) * x["win"]).sum(-1)
    return jax.vmap(one)(params, e)


def train(config, workdir: str, data: dict, beta: float):
    """Every seed at once for one beta, early-stopped on the validation gold."""
    tr, space = config.train, space_of(config)
    paired = config.setting == "paired"
    bs = int(tr.batch_size)

    def batch_fn(d, rng):
        k1, k2 = jax.random.split(rng)
        i = jax.random.randint(k1, (bs,), 0, d["pos_y"].shape[0])
        j = i if paired else jax.random.randint(k2, (bs,), 0, d["neg_y"].shape[0])
        return {**{k: d[k][i] for k in TRAIN_KEYS if k.startswith("pos")},
                **{k: d[k][j] for k in TRAIN_KEYS if k.startswith("neg")}}

    def eval_fn(p, e):
        return eval_metrics(space, p, e, "val")

    return fit_small(workdir, loss_fn=make_loss(config, beta), init_params=data["ref_params"],
                     per_seed_init=True, tx=optax.adam(float(tr.learning_rate)),
                     num_steps=int(tr.steps), data={k: data[k] for k in TRAIN_KEYS},
                     seeds=list(config.seeds), per_seed_data=True, batch_fn=batch_fn,
                     steps_per_log=int(tr.eval_every), eval_fn=eval_fn,
                     eval_data={k: data[f"val_{k}"] for k in EVAL_KEYS},
                     select=("val_gold", "max"), loss_state=RunningMean.create(),
                     plots=bool(config.fit_plots))


def run_seeds(config: ml_collections.ConfigDict, workdir: str) -> dict[int, dict[str, float]]:
    """Every seed of one variant: one early-stopped fit per beta, beta chosen per seed on
    validation, test metrics of the chosen params."""
    if config.method not in METHODS or config.setting not in SETTINGS:
        raise ValueError(f"unknown method/setting {config.method!r}/{config.setting!r}")
    if config.method == "dpo" and config.setting != "paired":
        raise ValueError("DPO needs the paired setting")
    seeds = [int(s) for s in config.seeds]
    per_seed = [make_data(config, s) for s in seeds]
    keys = [*TRAIN_KEYS, *(f"{p}_{k}" for p in ("val", "test") for k in EVAL_KEYS)]
    # host arrays: no device transfer / stacking program per field
    data = {k: np.stack([np.asarray(d[k]) for d in per_seed]) for k in keys}
    data["ref_params"] = jax.tree.map(lambda *x: np.stack(x),
                                      *[d["ref_params"] for d in per_seed])
    space = space_of(config)
    fits = {float(b): train(config, os.path.join(workdir, f"beta_{b:g}"), data, float(b))
            for b in config.train.betas}
    test_e = {k: data[f"test_{k}"] for k in EVAL_KEYS}
    out = {}
    tests = {b: jax.device_get(_test_eval(space, f.best_params, test_e)) for b, f in fits.items()}
    wins = {b: np.asarray(_prompt_win_rates(space, f.best_params, test_e))
            for b, f in fits.items()}
    for i, seed in enumerate(seeds):
        name, record = choose_on_validation(
            {f"beta={b:g}": b for b in fits}, lambda b, i=i: float(fits[b].best_score[i]))
        b = float(record["chosen"].split("=")[1])
        fit = fits[b]
        res = {k: float(v[i]) for k, v in tests[b].items()}
        cl = per_seed[i]["test_cluster"]
        res.update(test_win_rate_a=float(wins[b][i][cl == 0].mean()),
                   test_win_rate_b=float(wins[b][i][cl == 1].mean()),
                   chosen_beta=b, chosen_step=float(fit.best_step[i]),
                   val_gold=float(fit.best_score[i]),
                   final_shift=float(fit.loss_state.mean[i]))
        res.update({f"val_gold_beta_{k:g}": float(f.best_score[i]) for k, f in fits.items()})
        if config.setting == "divergent":
            w, c = per_seed[i]["neg_w"], per_seed[i]["neg_cluster"]
            res.update(udm_weight_a=float(w[c == 0].mean()), udm_weight_b=float(w[c == 1].mean()))
        out[seed] = res
    return out


# ----------------------------------------------------------------------------------------------
# Claims and plots


def claims(results) -> list[protocol.Claim]:
    dpo = protocol.per_seed(results, "paired_dpo", "test_gold_gain")
    bco = protocol.per_seed(results, "paired_bco", "test_gold_gain")
    ratio = {s: bco[s] / dpo[s] for s in bco if s in dpo}
    m = {v: {k: seed_mean(results, v, k) for k in ("test_gold_gain", "test_win_rate", "test_kl",
                                                "test_win_rate_a", "test_win_rate_b")}
         for v in results}
    gains = ", ".join(f"{v} {m[v]['test_gold_gain']:.3f} (KL {m[v]['test_kl']:.3f})"
                      for v in results if v.startswith("paired"))
    detail_i = (f"paired setting, test gold gain over pi_ref: {gains}; the ratio is per seed, "
                f"each variant's beta and stopping step chosen on validation gold")
    wins = ", ".join(f"{v} {m[v]['test_win_rate']:.3f} (A {m[v]['test_win_rate_a']:.3f}, "
                     f"B {m[v]['test_win_rate_b']:.3f}; KL {m[v]['test_kl']:.3f})"
                     for v in results if v.startswith("divergent"))
    wa = seed_mean(results, "divergent_bco_udm", "udm_weight_a")
    wb = seed_mean(results, "divergent_bco_udm", "udm_weight_b")
    detail_ii = (f"divergent setting, test gold win rate vs pi_ref (50/50 clusters): {wins}; "
                 f"mean UDM weight of rejected examples from cluster A {wa:.2f}, B {wb:.2f}")
    return [
        protocol.decide("paired: BCO's test gold gain is >= 90% of DPO's (ratio >= 0.9)", ratio,
                        at_least=0.9, detail=detail_i,
                        measured={"ratio": float(np.mean(list(ratio.values())))}),
        protocol.decide("paired: BCO's test gold gain is <= 110% of DPO's (ratio <= 1.1)", ratio,
                        at_most=1.1, detail=detail_i,
                        measured={"ratio": float(np.mean(list(ratio.values())))}),
        protocol.compare("divergent: BCO+UDM's test gold win rate vs pi_ref beats BCO's by "
                         ">= 3 points", results, ("divergent_bco_udm", "test_win_rate"),
                         ("divergent_bco", "test_win_rate"), at_least=0.03, detail=detail_ii),
        protocol.compare("divergent: BCO+UDM's test gold win rate vs pi_ref beats BCE without "
                         "the shift by >= 3 points", results,
                         ("divergent_bco_udm", "test_win_rate"),
                         ("divergent_bce", "test_win_rate"), at_least=0.03, detail=detail_ii),
    ]


def plots(results, workdir: str) -> list[str]:
    """Validation gold along training at each variant's most chosen beta (mean over seeds)."""
    curves = {}
    for variant, res in results.items():
        betas = [m["chosen_beta"] for m in res["per_seed"].values()]
        b = max(set(betas), key=betas.count)
        path = os.path.join(workdir, variant, f"beta_{b:g}", "metrics.jsonl")
        if not os.path.exists(path):
            continue
        rows = read_metrics(path)
        ys = np.array([row["eval/val_gold"] for row in rows])
        curves[f"{variant} (beta {b:g})"] = (list(range(1, len(rows) + 1)), ys,
                                              np.zeros_like(ys))
    out = os.path.join(workdir, "plots", "bco_val_gold.png")
    plot_curves(curves, out, title="BCO toy: validation gold E_pi[g] along training",
                xlabel="logged step", ylabel="validation gold (mean over seeds)")
    return [out]
