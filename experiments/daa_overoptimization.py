"""DAA over-optimisation: DPO, IPO and SLiC on the paper's tree MDP, gold vs sqrt(KL) over training.

Paper: Rafailov, Chittepu, Park, Sikchi, Hejna, Knox, Finn, Niekum 2024, "Scaling Laws for Reward
Model Overoptimization in Direct Alignment Algorithms" (arXiv 2406.02900).

Setting (the paper's own toy): a depth-3 tree MDP with 3 actions per node, i.e. the 27
sequences of length 3 over 3 tokens (`alignax.models.sequence_table.SequenceSpace(3, 3)`), with a
gold reward on the leaves, N(0, 1) per leaf. The policy is the exact prefix-tree softmax of
`sequence_table` (one logit table per node, 13 nodes x 3 actions), so every quantity below is an
exact sum over the 27 leaves, not an estimate. The reference policy pi_ref has N(0, ref_scale^2)
node logits. The offline data cover only a subset of the leaves: `support_size` leaves are drawn
from pi_ref without replacement (the responses a data collection happened to produce), and the
training pairs are drawn from pi_ref restricted to them, labelled by Bradley-Terry draws from the
gold reward. A leaf is "unseen" when no training pair contains it. Every DAA trains on the same
pairs (full batch, Adam, `train.steps` updates) with the unified loss
g(beta (h_w - h_l)), h = log pi - log pi_ref (`alignax.losses.daa.daa_loss`: g_DPO(u) =
-log sigma(u), g_IPO(u) = (u - 1)^2, g_SLiC(u) = max(0, 1 - u)).

Variants: loss in {dpo, ipo, slic} x beta in {0.01, 0.05, 0.1, 0.5} (12 variants) with the
tabular tree policy (the paper's toy), and the same losses at the small betas with a
shared-parameter policy (`<loss>_b<beta>_shared`, 6 variants): pi_ref's node logits plus a
position and a bigram residual shared across prefixes (`alignax.models.shared_tree`, started at
zero), the simplest form of the function approximation of an LM (an update raises a token after
every similar prefix, also off the data's support). Every seed of a variant is vmapped in one
`fit_small` program.

Logged along training (every `train.log_every` updates, exact): the gold win rate against pi_ref
(P(gold(y) > gold(y')) + ties / 2, y ~ pi, y' ~ pi_ref; `alignax.eval.overoptimization.
exact_win_rate`, the paper's metric), E_pi[gold], d = sqrt(KL(pi || pi_ref)) and the mass on
unseen leaves (`unseen_mass`). Per seed, from the trajectory (the reference point d = 0, win rate
1/2 first): the hump of the win rate (`hump`: drop = (peak - final) / peak, the fraction of the
peak win rate lost by the end of training, the notes' "drop >= 10% from peak"; the same on
E_pi[gold] relative to the gain over pi_ref is reported as `test_gold_drop`), the least-squares
fit of R(d) = d (alpha - b log d) to R = win rate - 1/2 over the trajectory
(`fit_overoptimization`, its R^2), and the rise of the unseen-leaf mass (final - pi_ref's).

Budget: 3000 full-batch Adam updates at learning rate 1e-2 for every variant; by then the
smaller betas have pushed the policy close to the largest KL a policy on these leaves reaches
(d near sqrt(-log pi_ref(y)) of the leaves it concentrates on), so the end of training is near
the end of the trajectory, not an arbitrary early point. The budget was set before the claims'
numbers were read, for the resolution of the trajectory (100 logged points); an earlier trial at
learning rate 3e-3 (a shorter trajectory in d) is not part of the results. Whether a run ends
below its peak depends on that budget, so the claim is about this budget.

What the tabular tree can and cannot show (the mechanism behind the unseen-mass claim): for a
prefix-tree softmax the gradient of h_w - h_l at a node both responses pass through is e_w - e_l
on that node's logits (the unseen children's logits do not move), at a node only the winner
passes through it raises the winner's child against all others, unseen ones included, and only at
nodes below the divergence on the loser's path does it lift the unseen children. With the data's
winners concentrated on a few leaves the first two effects can dominate, so the mass on unseen
leaves can fall rather than rise (trial runs before the final one did show it falling); the
paper's explanation (mass moving off the data's support) rests on function approximation shared
across responses, which a table does not have. The claims are tested as stated on the paper's
toy (the tabular policy) and the unseen-mass claim again on the shared-parameter policy, added
after those trials and before its own numbers were seen; both are reported as measured.

Splits (`alignax.tasks.splits.split_seeds`): the world of experiment seed s (gold reward, pi_ref,
the covered leaves) is seeded by s; training pairs, validation pairs and test pairs come from the
data seeds 3s, 3s + 1, 3s + 2. The gold metrics are exact expectations and need no test sample.

Selection: none for the claims. The claims are about the training trajectory itself (the paper's
question is whether the gold quality of a DAA rises and then falls as training moves the policy
away from pi_ref), so no step is selected: the hump compares the trajectory's own peak with the
end of training, which needs no tuning on test, and every variant runs the same number of updates
with the same optimiser. Validation is used only where a choice is made, and the only choice here
is the reported (not claimed) early-stopping point a practitioner would pick: the step of best
validation pair accuracy (the first logged step with the highest accuracy of the implicit reward
h = log pi - log pi_ref on the validation pairs, read off the logged trajectory), recorded as
`chosen_step`, `val_accuracy` and `test_win_rate_at_chosen`.

Claims (5 seeds, 95% t intervals over the per-seed values, `protocol.decide`, threshold kind),
the notes' pass criterion "for small beta every loss has a hump-shaped gold(d) curve (drop >= 10%
from peak), the fit d(alpha - b log d) has R^2 >= 0.8, and probability mass on unseen leaves
rises during training", with small beta fixed before the runs as the two smallest of the grid
{0.01, 0.05} and each per-seed value the worse of the two betas: for each loss (dpo, ipo, slic)
(1) drop >= 0.10, (2) R^2 >= 0.8, (3) unseen-leaf mass at the end minus pi_ref's >= 0, all three
with the tabular policy, and (4) claim 3 with the shared-parameter policy. The larger betas and
the shared policy's drop and R^2 are reported in the details. Sanity (not counted): the
trajectory starts at win rate 1/2 and d = 0 (by construction).

    alignax run experiments/daa_overoptimization.py            # full setting, 5 seeds
    alignax run experiments/daa_overoptimization.py:smoke      # seconds, for the tests
"""

from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from alignax import protocol
from alignax.eval.overoptimization import (exact_win_rate, fit_overoptimization, hump,
                                           unseen_mass)
from alignax.experiment import is_smoke
from alignax.losses.daa import DAA_KINDS, daa_loss
from alignax.models import sequence_table as st
from alignax.models.shared_tree import init_shared, shared_node_logits
from alignax.tasks.simulators import bradley_terry
from alignax.tasks.splits import split_seeds
from alignax.train.plots import plot_curves
from alignax.train.small import fit_small, stack_seeds

BETAS = (0.01, 0.05, 0.1, 0.5)
SMALL_BETAS = (0.01, 0.05)  # "small beta" of the pass criterion, fixed before the runs
TRAJECTORY = ("win_rate", "gold", "d", "unseen")
TRAJECTORY_FILE = "trajectory.json"


POLICIES = ("table", "shared")


def variant_name(loss: str, beta: float, policy: str = "table") -> str:
    """e.g. dpo_b0p05, dpo_b0p05_shared (config keys take no dots)."""
    return f"{loss}_b{beta:g}".replace(".", "p") + ("" if policy == "table" else f"_{policy}")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    smoke = is_smoke(arg)
    c = ml_collections.ConfigDict()
    c.seeds = [0] if smoke else [0, 1, 2, 3, 4]
    c.loss = "dpo"
    c.beta = 0.05
    betas = (0.05,) if smoke else BETAS
    c.policy = "table"
    # :smoke runs DPO with both policies only (IPO and SLiC differ by the link g alone, which
    # tests/losses/test_daa.py covers)
    losses = ("dpo",) if smoke else DAA_KINDS
    c.variants = {variant_name(k, b): {"loss": k, "beta": b} for k in losses for b in betas}
    # the shared-parameter policy at the small betas (see the docstring)
    c.variants.update({variant_name(k, b, "shared"): {"loss": k, "beta": b, "policy": "shared"}
                       for k in losses for b in ((0.05,) if smoke else SMALL_BETAS)})
    # the tree MDP: vocab ** length leaves; pi_ref node logits N(0, ref_scale^2); the data cover
    # `support_size` leaves drawn from pi_ref; gold N(0, 1) per leaf, BT labels at temperature 1
    c.task = dict(vocab=3, length=3, ref_scale=1.0, support_size=9, label_temperature=1.0)
    c.data = dict(num_pairs=32, num_val_pairs=64, num_test_pairs=256)
    c.train = dict(steps=150 if smoke else 3000, learning_rate=1e-2,
                   log_every=50 if smoke else 30, checkpoint_every=50,
                   plots=not smoke)  # the trainer's per-run PNGs (not in :smoke: they cost CPU)
    return c


def make_world(config, seed: int) -> dict:
    """The MDP of experiment seed `seed`: gold reward [N], pi_ref's node logits [M, V], and the
    leaves the data collection covered (a boolean support [N])."""
    task = config.task
    space = st.SequenceSpace(int(task.vocab), int(task.length))
    rng = np.random.default_rng([seed, 2100])
    gold = rng.standard_normal(space.num_sequences).astype(np.float32)
    ref_bias = (task.ref_scale * rng.standard_normal((space.num_nodes, space.vocab_size))
                ).astype(np.float32)
    ref_probs = np.exp(np.asarray(log_probs(space, ref_bias), np.float64))
    ref_probs /= ref_probs.sum()
    covered = rng.choice(space.num_sequences, int(task.support_size), replace=False,
                         p=ref_probs)
    support = np.zeros(space.num_sequences, bool)
    support[covered] = True
    return {"gold": gold, "ref_bias": ref_bias, "ref_probs": ref_probs, "support": support}


def _table(bias) -> dict:
    """sequence_table params of one shared (prompt-free) table with node logits `bias` [M, V]."""
    bias = jnp.asarray(bias, jnp.float32)
    return {"bias": bias, "weight": jnp.zeros((bias.shape[0], 0, bias.shape[1]), jnp.float32)}


def log_probs(space: st.SequenceSpace, bias) -> jax.Array:
    """log pi(y) [..., N] of every leaf for node logits bias [..., M, V] (seeds stacked or not)."""
    bias = jnp.asarray(bias, jnp.float32)
    f = lambda b: st.sequence_log_probs(space, _table(b))  # noqa: E731
    for _ in range(bias.ndim - 2):
        f = jax.vmap(f)
    return f(bias)


def draw_pairs(world: dict, n: int, temperature: float, rng) -> tuple[np.ndarray, np.ndarray]:
    """n preference pairs (chosen, rejected leaf indices) drawn from pi_ref on the covered leaves
    (two distinct leaves), labelled by Bradley-Terry draws from the gold reward."""
    q = np.where(world["support"], world["ref_probs"], 0.0)
    q = q / q.sum()
    a = np.empty(n, np.int64)
    b = np.empty(n, np.int64)
    for i in range(n):
        a[i], b[i] = rng.choice(q.size, 2, replace=False, p=q)
    gold = world["gold"]
    a_wins = bradley_terry(gold[a], gold[b], rng=rng, temperature=temperature).astype(bool)
    return np.where(a_wins, a, b).astype(np.int32), np.where(a_wins, b, a).astype(np.int32)


def make_data(config, seed: int) -> dict:
    """The world of experiment seed `seed` and its training / validation / test pairs, drawn
    with the disjoint data seeds of `split_seeds(seed)`."""
    world = make_world(config, seed)
    seeds = split_seeds(seed)
    temp = float(config.task.label_temperature)
    out = {k: world[k] for k in ("gold", "ref_bias")}
    out["chosen"], out["rejected"] = draw_pairs(world, int(config.data.num_pairs), temp,
                                                np.random.default_rng([seeds.train, 2101]))
    out["val_chosen"], out["val_rejected"] = draw_pairs(
        world, int(config.data.num_val_pairs), temp,
        np.random.default_rng([seeds.validation, 2101]))
    out["test_chosen"], out["test_rejected"] = draw_pairs(
        world, int(config.data.num_test_pairs), temp, np.random.default_rng([seeds.test, 2101]))
    seen = np.zeros(world["gold"].size, bool)
    seen[out["chosen"]] = True
    seen[out["rejected"]] = True
    out["seen"] = seen
    return out


def pair_accuracy(logp, ref_logp, chosen, rejected):
    """Fraction of pairs whose implicit reward h = log pi - log pi_ref ranks chosen over
    rejected (ties count 1/2)."""
    h = logp - ref_logp
    m = h[chosen] - h[rejected]
    return jnp.mean(jnp.where(m > 0, 1.0, jnp.where(m == 0, 0.5, 0.0)))


def policy_logits(config, params, ref_bias) -> jax.Array:
    """[M, V] node logits of one seed's policy: the table itself (`table`: params {"bias"},
    started at pi_ref's logits) or pi_ref's logits plus the shared position / bigram residual
    (`shared`: `alignax.models.shared_tree`, started at zero)."""
    if config.policy == "table":
        return params["bias"]
    space = st.SequenceSpace(int(config.task.vocab), int(config.task.length))
    return shared_node_logits(space, params, ref_bias)


def initial_params(config, ref_bias) -> dict:
    """Every seed's starting params (pi_ref in both parameterisations), leaves [S, ...]."""
    if config.policy == "table":
        return {"bias": jnp.array(ref_bias, copy=True)}
    if config.policy != "shared":
        raise ValueError(f"unknown policy {config.policy!r}; one of {POLICIES}")
    space = st.SequenceSpace(int(config.task.vocab), int(config.task.length))
    s = np.asarray(ref_bias).shape[0]
    return jax.tree.map(lambda x: jnp.zeros((s, *x.shape), x.dtype), init_shared(space))


def train(config, workdir: str, data: dict):
    """Full-batch Adam on g(beta (h_w - h_l)) for every seed at once (`fit_small`), starting at
    pi_ref. eval_fn logs the exact trajectory (win rate, E[gold], d, unseen mass) and the
    validation pair accuracy every `log_every` updates."""
    task, tr = config.task, config.train
    space = st.SequenceSpace(int(task.vocab), int(task.length))
    kind, beta = str(config.loss), float(config.beta)
    if kind not in DAA_KINDS:
        raise ValueError(f"unknown loss {kind!r}; one of {DAA_KINDS}")

    def loss_fn(params, batch):
        logp = log_probs(space, policy_logits(config, params, batch["ref_bias"]))
        ref = log_probs(space, batch["ref_bias"])
        c, r = batch["chosen"], batch["rejected"]
        return daa_loss(logp[c], logp[r], ref[c], ref[r], kind=kind, beta=beta)[0].mean()

    def eval_fn(params, ev):
        logp = log_probs(space, policy_logits(config, params, ev["ref_bias"]))
        ref = log_probs(space, ev["ref_bias"])
        p, q = jnp.exp(logp), jnp.exp(ref)
        kl = jnp.sum(p * (logp - ref))
        return {"val_accuracy": pair_accuracy(logp, ref, ev["val_chosen"], ev["val_rejected"]),
                "win_rate": exact_win_rate(p, q, ev["gold"]),
                "gold": jnp.sum(p * ev["gold"]),
                "d": jnp.sqrt(jnp.maximum(kl, 0.0)),
                "unseen": unseen_mass(p, ev["seen"])}

    train_data = {k: data[k] for k in ("chosen", "rejected", "ref_bias")}
    eval_data = {k: data[k] for k in ("ref_bias", "gold", "seen", "val_chosen",
                                      "val_rejected")}
    # the trained params are the node logits (or the shared residual) only: a zero-width
    # feature weight is added inside (orbax cannot checkpoint zero-size arrays); every seed
    # starts at its pi_ref
    init = initial_params(config, data["ref_bias"])
    return fit_small(workdir, loss_fn=loss_fn, init_params=init, per_seed_init=True,
                     tx=optax.adam(float(tr.learning_rate)), num_steps=int(tr.steps),
                     data=train_data, seeds=list(config.seeds), per_seed_data=True,
                     steps_per_log=int(tr.log_every),
                     checkpoint_every=int(tr.checkpoint_every), eval_fn=eval_fn,
                     eval_data=eval_data, plots=bool(tr.plots))


def trajectories(fit, data: dict, seeds: list[int]) -> dict:
    """{metric: [S, K + 1]} of the K logged points of the run with pi_ref's point first."""
    out = {}
    ref_probs = np.exp(np.asarray(log_probs(_space_of(data), data["ref_bias"]), np.float64))
    gold = np.asarray(data["gold"], np.float64)
    seen = np.asarray(data["seen"], bool)
    start = {"win_rate": np.full(len(seeds), 0.5),
             "gold": (ref_probs * gold).sum(-1),
             "d": np.zeros(len(seeds)),
             "unseen": np.where(seen, 0.0, ref_probs).sum(-1),
             "val_accuracy": np.full(len(seeds), np.nan)}  # pi_ref: h = 0 on every pair
    for name in (*TRAJECTORY, "val_accuracy"):
        logged = np.array([[row[f"seed_{s}/eval/{name}"] for row in fit.history]
                           for s in seeds], np.float64)
        out[name] = np.concatenate([start[name][:, None], logged], axis=1)
    return out


def _space_of(data) -> st.SequenceSpace:
    n = np.asarray(data["gold"]).shape[-1]
    v = np.asarray(data["ref_bias"]).shape[-1]
    return st.SequenceSpace(v, int(round(np.log(n) / np.log(v))))


def run_seeds(config: ml_collections.ConfigDict, workdir: str) -> dict[int, dict[str, float]]:
    """Every seed of one (loss, beta) variant trained in one program; per-seed hump, fit and
    unseen-mass statistics of its exact trajectory."""
    seeds = [int(s) for s in config.seeds]
    per_seed = [make_data(config, s) for s in seeds]
    data = stack_seeds(per_seed)
    fit = train(config, os.path.join(workdir, "policy"), data)
    traj = trajectories(fit, data, seeds)
    log_every = int(config.train.log_every)
    updates = [0] + [min((i + 1) * log_every, int(config.train.steps))
                     for i in range(len(fit.history))]
    with open(os.path.join(workdir, TRAJECTORY_FILE), "w") as f:
        json.dump({"updates": updates, "seeds": seeds,
                   **{k: v.tolist() for k, v in traj.items()}}, f)
    space = _space_of(data)
    final_logp = log_probs(space, jax.vmap(lambda p, r: policy_logits(config, p, r))(
        fit.params, data["ref_bias"]))
    ref_logp = log_probs(space, data["ref_bias"])
    out = {}
    for i, seed in enumerate(seeds):
        win, d, unseen, gold = (traj[k][i] for k in ("win_rate", "d", "unseen", "gold"))
        h = hump(win, baseline=0.0)  # the drop as a fraction of the peak win rate
        hg = hump(gold)
        ff = fit_overoptimization(d, win - 0.5)
        chosen = 1 + int(np.argmax(traj["val_accuracy"][i, 1:]))  # first best logged step
        res = {
            "test_win_rate_peak": h.peak, "test_win_rate_final": h.final, "test_drop": h.drop,
            "test_d_at_peak": float(d[h.peak_index]), "test_d_final": float(d[-1]),
            "test_peak_update": float(updates[h.peak_index]),
            "test_gold_ref": float(gold[0]), "test_gold_peak": hg.peak,
            "test_gold_final": hg.final, "test_gold_drop": hg.drop,
            "test_fit_r2": ff.r2, "test_fit_alpha": ff.alpha, "test_fit_b": ff.b,
            "test_fit_peak_d": ff.peak_d,
            "test_unseen_ref": float(unseen[0]), "test_unseen_final": float(unseen[-1]),
            "test_unseen_max": float(unseen.max()),
            "test_unseen_rise": float(unseen[-1] - unseen[0]),
            "test_pair_accuracy_final": float(pair_accuracy(
                final_logp[i], ref_logp[i], data["test_chosen"][i], data["test_rejected"][i])),
            "num_seen_leaves": float(np.asarray(data["seen"][i]).sum()),
            "val_accuracy": float(traj["val_accuracy"][i, chosen]),
            "chosen_step": float(updates[chosen]),
            "test_win_rate_at_chosen": float(win[chosen]),
            "start_win_rate": float(win[0]), "start_d": float(d[0]),
        }
        out[seed] = res
    return out


def _worst(results, loss: str, metric: str, policy: str = "table") -> dict:
    """{seed: min over the small betas of the metric} of one loss (the claim must hold at
    every small beta); {} if no such variant ran (e.g. in :smoke)."""
    names = [n for n in (variant_name(loss, b, policy) for b in SMALL_BETAS) if n in results]
    if not names:
        return {}
    per = [protocol.per_seed(results, n, metric) for n in names]
    seeds = set(per[0]).intersection(*per[1:])
    return {s: min(p[s] for p in per) for s in seeds}


def _grid(results, loss: str, metric: str, policy: str = "table") -> str:
    """The metric's mean over seeds at each beta (non-finite seeds left out, counted)."""
    parts = []
    for b in BETAS:
        v = variant_name(loss, b, policy)
        if v not in results:
            continue
        x = np.array(list(protocol.per_seed(results, v, metric).values()), np.float64)
        ok = np.isfinite(x)
        mean = float(x[ok].mean()) if ok.any() else float("nan")
        parts.append(f"b={b:g}: {mean:.3f}" + (f" ({int((~ok).sum())} seeds n/a)"
                                               if not ok.all() else ""))
    return ", ".join(parts) or "n/a"


def _unseen_detail(results, loss: str, policy: str) -> str:
    return (f"per seed the worse beta; mean unseen mass at pi_ref "
            f"{_grid(results, loss, 'test_unseen_ref', policy)}, at the end "
            f"{_grid(results, loss, 'test_unseen_final', policy)}, its maximum along training "
            f"{_grid(results, loss, 'test_unseen_max', policy)}")


def claims(results) -> list[protocol.Claim]:
    out = []
    small = "/".join(f"{b:g}" for b in SMALL_BETAS)
    for loss in DAA_KINDS:
        name = loss.upper() if loss != "slic" else "SLiC"
        out.append(protocol.decide(
            f"{name} at small beta ({small}): the gold win rate vs pi_ref is hump-shaped along "
            f"training (by the end it has lost >= 10% of its peak)",
            _worst(results, loss, "test_drop"), at_least=0.10,
            detail=f"tabular tree policy; per seed the worse of the small betas; drop = (peak - "
                   f"final) / peak of the exact win rate; mean drop by beta: "
                   f"{_grid(results, loss, 'test_drop')}; peak win rate "
                   f"{_grid(results, loss, 'test_win_rate_peak')}; final "
                   f"{_grid(results, loss, 'test_win_rate_final')}; E[gold] drop relative to "
                   f"the gain over pi_ref (seeds whose E[gold] never rose left out) "
                   f"{_grid(results, loss, 'test_gold_drop')}; shared-parameter policy: drop "
                   f"{_grid(results, loss, 'test_drop', 'shared')}"))
        out.append(protocol.decide(
            f"{name} at small beta ({small}): R(d) = d (alpha - b log d) fits the win-rate gain "
            f"along training with R^2 >= 0.8",
            _worst(results, loss, "test_fit_r2"), at_least=0.8,
            detail=f"tabular tree policy; least squares over the logged trajectory, R = win "
                   f"rate - 1/2, d = sqrt(KL); per seed the worse beta; mean R^2 by beta: "
                   f"{_grid(results, loss, 'test_fit_r2')}; fitted b "
                   f"{_grid(results, loss, 'test_fit_b')}; d at the end "
                   f"{_grid(results, loss, 'test_d_final')}; shared-parameter policy: R^2 "
                   f"{_grid(results, loss, 'test_fit_r2', 'shared')}"))
        out.append(protocol.decide(
            f"{name} at small beta ({small}): the probability mass on leaves unseen in the data "
            f"rises during training (end minus pi_ref's >= 0)",
            _worst(results, loss, "test_unseen_rise"), at_least=0.0,
            detail="tabular tree policy (the paper's toy); " + _unseen_detail(results, loss,
                                                                              "table")))
        out.append(protocol.decide(
            f"{name} at small beta ({small}), shared-parameter policy: the probability mass on "
            f"leaves unseen in the data rises during training (end minus pi_ref's >= 0)",
            _worst(results, loss, "test_unseen_rise", "shared"), at_least=0.0,
            detail="position + bigram logits shared across prefixes on top of pi_ref "
                   "(alignax.models.shared_tree), the function approximation the paper's "
                   "explanation rests on; " + _unseen_detail(results, loss, "shared")))
    # a claim whose variants did not run (in :smoke) is left out rather than shown empty
    out = [c for c in out if c.n > 0]
    starts = [v for variant in results for v in
              protocol.per_seed(results, variant, "start_win_rate").values()]
    d0 = [v for variant in results for v in
          protocol.per_seed(results, variant, "start_d").values()]
    out.append(protocol.sanity(
        "every trajectory starts at pi_ref: win rate 1/2 and d = 0",
        bool(np.allclose(starts, 0.5) and np.allclose(d0, 0.0)),
        {"max_abs_start_win_rate_minus_half": float(np.max(np.abs(np.subtract(starts, 0.5)))),
         "max_start_d": float(np.max(d0))}, "by construction"))
    return out


def plots(results, workdir: str) -> list[str]:
    """Gold win rate vs d = sqrt(KL) along training and the unseen-leaf mass vs updates, mean
    over seeds, one curve per variant."""
    win, unseen = {}, {}
    for variant in results:
        path = os.path.join(workdir, variant, TRAJECTORY_FILE)
        if not os.path.exists(path):
            continue
        with open(path) as f:
            t = json.load(f)
        d, w, u = (np.asarray(t[k]) for k in ("d", "win_rate", "unseen"))
        win[variant] = (d.mean(0), w.mean(0), w.std(0))
        unseen[variant] = (np.asarray(t["updates"], float), u.mean(0), u.std(0))
    out = [plot_curves(win, os.path.join(workdir, "plots", "win_rate_vs_sqrt_kl.png"),
                       title="DAA over-optimisation on the tree MDP",
                       xlabel="d = sqrt(KL(pi || pi_ref))", ylabel="gold win rate vs pi_ref"),
           plot_curves(unseen, os.path.join(workdir, "plots", "unseen_mass.png"),
                       title="probability mass on leaves unseen in the data",
                       xlabel="update", ylabel="mass on unseen leaves")]
    return out
