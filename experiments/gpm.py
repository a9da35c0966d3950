"""General preference embeddings (GPM) against Bradley-Terry on cyclic and transitive preferences.

Paper: Zhang et al. 2024, "General Preference Modeling with Preference Representations for
Aligning Language Models" (arXiv 2410.02197). GPM embeds each response as a unit vector
v in R^{2k} and scores a pair with the skew-symmetric form s(y_i > y_j) = <R v_i, v_j>,
R = diag(lambda_1 J, ..., lambda_k J), J = [[0, -1], [1, 0]], lambda_l >= 0, so that
P(y_i > y_j) = sigmoid(s) can express intransitive (cyclic) preferences that no scalar reward
can; the loss is the pairwise cross-entropy (`alignax.losses.reward.gpm_loss`).

Setting: 900 items with features x in R^8 (three clusters: x = centre of the cluster + noise).
Two preference datasets over the same items:
  * cyclic: a rock-paper-scissors tournament over the clusters
    (`alignax.tasks.simulators.CyclicTournament`): cluster 0 beats 1 beats 2 beats 0 with
    probability `dominance` = 0.9; two items of the same cluster tie (P = 1/2);
  * transitive: Bradley-Terry labels from a frozen random MLP reward of the features.
Items are split at the item level, stratified by cluster: two thirds train, one third held
out. Training pairs (9000) are drawn among training items only and ties are not sampled; the
held-out metric is the accuracy, against the generating model's preferred direction, on every
pair of two held-out items that has one (pairs and items never seen in training). With equal
cluster sizes a scalar reward agrees with at most 2/3 of the cyclic held-out pairs; the run
reports that ceiling exactly (`cyclic_scalar_ceiling`). Both models get the same fixed budget of
500 full-batch AdamW steps; longer training overfits the item-level noise (GPM more than BT).
Models share the same MLP trunk (8 -> 64 -> 64 -> out): BT has out = 1 (a reward), GPM has
out = 2k (normalised to the unit sphere) and k learned eigenvalues lambda = softplus(theta) (the
items have no prompt, so the paper's prompt-dependent eigenvalue gate reduces to constants).

Claims checked: on cyclic data GPM (k = 2) reaches >= 0.95 held-out pair accuracy while BT
stays <= 0.70; on transitive data GPM (k = 2) is within 1 point of BT.

    alignax run experiments/gpm.py              # full setting, 5 seeds, 3 variants
    alignax run experiments/gpm.py:smoke        # seconds, for the tests
"""

from __future__ import annotations

import itertools
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from alignax.experiment import Claim, is_smoke, metric
from alignax.losses.reward import bradley_terry_loss, gpm_loss
from alignax.models.heads import gpm_score
from alignax.models.mlp import MLPConfig, make_mlp
from alignax.tasks import simulators as sim
from alignax.tasks.features import MLPReward
from alignax.train.plots import plot_grouped_bars
from alignax.train.small import fit_small, stack_seeds

VARIANTS = ("bt", "gpm_k2", "gpm_k4")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    smoke = is_smoke(arg)
    c = ml_collections.ConfigDict()
    c.seeds = [0] if smoke else [0, 1, 2, 3, 4]
    c.model = "gpm"  # "bt" or "gpm"
    c.k = 2  # GPM: number of 2-d blocks (embedding dimension 2k)
    c.variants = {
        "bt": {"model": "bt"},
        "gpm_k2": {"model": "gpm", "k": 2},
        "gpm_k4": {"model": "gpm", "k": 4},
    }
    c.data = dict(
        num_items=60 if smoke else 900, dim=8, num_clusters=3, cluster_scale=3.0,
        noise_scale=1.0, dominance=0.9, train_fraction=2 / 3,
        num_train_pairs=200 if smoke else 9000,
        reward_hidden=32, label_temperature=0.5,  # transitive data
    )
    c.hidden = (64, 64)
    c.train = dict(steps=50 if smoke else 500, learning_rate=3e-3, weight_decay=1e-4)
    return c


# --- data -------------------------------------------------------------------------------------

def make_items(data, seed: int):
    """Item features [N, D], cluster ids [N] and the item-level train/test split."""
    rng = np.random.default_rng([seed, 61])
    n, d, k = data.num_items, data.dim, data.num_clusters
    cluster = np.arange(n) % k
    centres = data.cluster_scale * rng.standard_normal((k, d))
    x = centres[cluster] + data.noise_scale * rng.standard_normal((n, d))
    train, test = [], []
    for c in range(k):  # stratified: every cluster is split in the same proportion
        members = rng.permutation(np.flatnonzero(cluster == c))
        n_train = int(round(data.train_fraction * len(members)))
        train.append(members[:n_train])
        test.append(members[n_train:])
    return x.astype(np.float32), cluster, np.sort(np.concatenate(train)), np.sort(
        np.concatenate(test))


def cyclic_tournament(cluster, data) -> sim.CyclicTournament:
    """Rock-paper-scissors over clusters; items of one cluster tie (score 0 -> P = 1/2)."""
    return sim.CyclicTournament(cluster, np.zeros(len(cluster)), data.num_clusters,
                                float(data.dominance), 1.0)


def sample_train_pairs(prob_fn, items, num_pairs, rng):
    """Pairs of distinct training items with labels drawn from `prob_fn(i, j) = P(i beats j)`.

    Pairs whose gold probability is exactly 1/2 (two items of one cyclic cluster) are ties,
    not binary comparisons, and are not sampled.

    Returns (chosen item ids [P], rejected item ids [P]).
    """
    m = len(items)
    a = rng.integers(0, m, size=4 * num_pairs)
    b = (a + rng.integers(1, m, size=4 * num_pairs)) % m
    i, j = items[a], items[b]
    p = prob_fn(i, j)
    keep = np.flatnonzero(p != 0.5)[:num_pairs]  # ties are not binary comparisons
    if len(keep) < num_pairs:
        raise ValueError(f"only {len(keep)} of {num_pairs} pairs have a strict preference")
    i, j, p = i[keep], j[keep], p[keep]
    label = rng.random(num_pairs) < p
    return np.where(label, i, j), np.where(label, j, i)


def heldout_pairs(prob_fn, items):
    """Every pair (i, j) of held-out items and its gold direction: +1 (i wins), -1, or 0 (tie).

    Returns (first ids [Q], second ids [Q], gold [Q]); ties are not scored.
    """
    i, j = np.array(list(itertools.combinations(items, 2))).T
    p = prob_fn(i, j)
    return i, j, np.sign(p - 0.5).astype(np.float32)


def scalar_ceiling(cluster, first, second, gold, num_clusters: int) -> float:
    """Best accuracy any scalar reward can reach on cyclic pairs: max over orders of clusters.

    Within a cluster all pairs tie and are not scored, so a scalar reward acts on the scored
    cyclic pairs only through an order of the clusters.
    """
    keep = gold != 0
    winners = np.where(gold > 0, first, second)[keep]
    losers = np.where(gold > 0, second, first)[keep]
    best = 0.0
    for order in itertools.permutations(range(num_clusters)):
        rank = np.argsort(order)
        best = max(best, float(np.mean(rank[cluster[winners]] > rank[cluster[losers]])))
    return best


# --- models -----------------------------------------------------------------------------------

def gpm_embed(trunk, params, x):
    """Unit preference embeddings [N, 2k] and eigenvalues lambda = softplus(theta) [k]."""
    v = trunk.apply(params["trunk"], x)
    v = v / jnp.maximum(jnp.linalg.norm(v, axis=-1, keepdims=True), 1e-6)
    return v, jax.nn.softplus(params["theta"])


def _pair_scores(trunk, model, params, x, first, second):
    """Model score of `first` over `second` [P] (BT: reward gap; GPM: s(first > second))."""
    if model == "bt":
        r = trunk.apply(params["trunk"], x)
        return r[first] - r[second]
    v, lam = gpm_embed(trunk, params, x)
    return gpm_score(v[first], v[second], lam)


def train_and_eval(config, workdir: str, data: dict, keys) -> list[dict[str, float]]:
    """Full-batch AdamW on the pairwise loss for every seed at once (`fit_small`), then each
    seed's held-out accuracy. `data` holds [S, ...] arrays: x, chosen, rejected, first, second,
    gold."""
    model = config.model
    out_dim = 1 if model == "bt" else 2 * int(config.k)
    trunk = make_mlp(MLPConfig(in_dim=data["x"].shape[-1], hidden=tuple(config.hidden),
                               out_dim=out_dim))

    def init(key):
        params = {"trunk": trunk.init(key)}
        if model == "gpm":
            params["theta"] = jnp.zeros((int(config.k),), jnp.float32)
        return params

    def loss_fn(p, d):
        if model == "bt":
            r = trunk.apply(p["trunk"], d["x"])
            return bradley_terry_loss(r[d["chosen"]], r[d["rejected"]]).mean()
        v, lam = gpm_embed(trunk, p, d["x"])
        return gpm_loss(v[d["chosen"]], v[d["rejected"]], lam).mean()

    tc = config.train
    fit = fit_small(workdir, loss_fn=loss_fn, init_params=init,
                    tx=optax.adamw(float(tc.learning_rate), weight_decay=float(tc.weight_decay)),
                    num_steps=int(tc.steps), data={k: data[k] for k in ("x", "chosen", "rejected")},
                    seeds=list(config.seeds), seed_keys=keys, per_seed_data=True)

    @jax.jit
    @jax.vmap
    def evaluate(p, d):
        train = _pair_scores(trunk, model, p, d["x"], d["chosen"], d["rejected"])
        return jnp.mean(train > 0), _pair_scores(trunk, model, p, d["x"], d["first"],
                                                 d["second"])

    train_acc, scores = map(np.asarray, evaluate(fit.params, data))
    out = []
    for i in range(len(fit.seeds)):
        gold = np.asarray(data["gold"][i])
        keep = gold != 0
        correct = np.where(scores[i] * gold > 0, 1.0, np.where(scores[i] == 0, 0.5, 0.0))
        out.append({"accuracy": float(correct[keep].mean()),
                    "train_label_accuracy": float(train_acc[i]),
                    "final_loss": float(fit.final_loss[i]), "num_test_pairs": float(keep.sum())})
    return out


def make_seed_data(config, seed: int) -> tuple[dict, dict, float]:
    """One seed's cyclic and transitive datasets (dicts of arrays) and the scalar ceiling."""
    data = config.data
    x, cluster, train_items, test_items = make_items(data, seed)
    rng = np.random.default_rng([seed, 62])
    tour = cyclic_tournament(cluster, data)
    c_ch, c_rj = sample_train_pairs(tour.probability, train_items, data.num_train_pairs, rng)
    first, second, c_gold = heldout_pairs(tour.probability, test_items)
    reward = MLPReward(data.dim, data.reward_hidden, "tanh", seed)(x)
    temp = float(data.label_temperature)
    bt_prob = lambda i, j: sim.bt_probability(reward[i], reward[j], temp)  # noqa: E731
    t_ch, t_rj = sample_train_pairs(bt_prob, train_items, data.num_train_pairs, rng)
    _, _, t_gold = heldout_pairs(bt_prob, test_items)
    common = {"x": x, "first": first, "second": second}
    cyclic = {**common, "chosen": c_ch, "rejected": c_rj, "gold": c_gold}
    transitive = {**common, "chosen": t_ch, "rejected": t_rj, "gold": t_gold}
    return cyclic, transitive, scalar_ceiling(cluster, first, second, c_gold, data.num_clusters)


def run_seeds(config: ml_collections.ConfigDict, workdir: str) -> dict[int, dict[str, float]]:
    """Every seed of one variant: both datasets, each trained for all seeds in one program."""
    if config.model not in ("bt", "gpm"):
        raise ValueError(f"unknown model {config.model!r}; valid: 'bt', 'gpm'")
    seeds = [int(s) for s in config.seeds]
    per_seed = [make_seed_data(config, s) for s in seeds]
    keys = jnp.stack([jax.random.split(jax.random.key(s)) for s in seeds])  # [S, 2]
    out = {s: {"cyclic_scalar_ceiling": ceiling} for s, (_, _, ceiling) in zip(seeds, per_seed)}
    for j, name in enumerate(("cyclic", "transitive")):
        stacked = stack_seeds([p[j] for p in per_seed])
        results = train_and_eval(config, os.path.join(workdir, name), stacked, keys[:, j])
        for s, res in zip(seeds, results):
            out[s].update({f"{name}_{k}": v for k, v in res.items()})
    return out


# --- claims and plots -------------------------------------------------------------------------

def claims(results) -> list[Claim]:
    gpm_c = metric(results, "gpm_k2", "cyclic_accuracy")
    bt_c = metric(results, "bt", "cyclic_accuracy")
    ceiling = metric(results, "bt", "cyclic_scalar_ceiling")
    gpm_t = metric(results, "gpm_k2", "transitive_accuracy")
    bt_t = metric(results, "bt", "transitive_accuracy")
    measured_c = {"gpm_k2_cyclic_accuracy": gpm_c, "bt_cyclic_accuracy": bt_c,
                  "scalar_ceiling": ceiling}
    measured_t = {"gpm_k2_transitive_accuracy": gpm_t, "bt_transitive_accuracy": bt_t,
                  "difference": gpm_t - bt_t}
    if "gpm_k4" in results:
        measured_c["gpm_k4_cyclic_accuracy"] = metric(results, "gpm_k4", "cyclic_accuracy")
        measured_t["gpm_k4_transitive_accuracy"] = metric(results, "gpm_k4",
                                                          "transitive_accuracy")
    return [
        Claim(
            name="On cyclic preferences GPM (k=2) reaches >= 0.95 held-out pair accuracy while "
                 "BT stays <= 0.70",
            passed=gpm_c >= 0.95 and bt_c <= 0.70,
            measured=measured_c,
            detail=f"GPM k=2 {gpm_c:.3f}, BT {bt_c:.3f} (best scalar order {ceiling:.3f})",
        ),
        Claim(
            name="On transitive (BT-generated) preferences GPM (k=2) is within 1 point of BT",
            passed=abs(gpm_t - bt_t) <= 0.01,
            measured=measured_t,
            detail=f"GPM k=2 {gpm_t:.3f}, BT {bt_t:.3f}, difference {gpm_t - bt_t:+.3f}",
        ),
    ]


def plots(results, workdir: str) -> list[str]:
    """Held-out pair accuracy of each variant on both datasets (bars, +- std over seeds), with
    the best accuracy any scalar reward can reach on the cyclic pairs as its own bar."""
    names = [v for v in VARIANTS if v in results] or list(results)
    datasets = ("cyclic", "transitive")
    series = {}
    for name in names:
        m = results[name]["metrics"]
        series[name] = ([m[f"{d}_accuracy"]["mean"] for d in datasets],
                        [m[f"{d}_accuracy"]["std"] for d in datasets])
    first = results[names[0]]["metrics"]
    if "cyclic_scalar_ceiling" in first:
        series["best scalar order"] = ([first["cyclic_scalar_ceiling"]["mean"], float("nan")],
                                       [first["cyclic_scalar_ceiling"]["std"], 0.0])
    path = os.path.join(workdir, "plots", "gpm_accuracy.png")
    return [plot_grouped_bars(list(datasets), series, path, title="GPM vs BT on held-out items",
                              ylabel="held-out pair accuracy", ylim=(0.4, 1.1))]
