"""Online vs offline alignment: the performance gap at matched KL budgets.

Paper: Tang et al. 2024, "Understanding the performance gap between online and offline alignment
algorithms" (arXiv 2405.08448).

Setting (a tiny LM with exact expectations, `alignax.models.sequence_table`): responses are all
8^4 = 4096 token sequences (the notes' toy has vocabulary 8 and length 6, 262,144 sequences per
prompt: too many to enumerate for 5 seeds x 4 betas x 4 variants on this CPU); a prompt is a
feature vector z ~ N(0, I_4) and the policy is a prefix-tree policy log-linear in z. The world of
experiment seed s (`alignax.tasks.sequence_prefs.PreferenceWorld`, seeded by s) has a gold reward
with prompt-dependent token utilities and adjacent-token interactions, and a random log-linear
reference policy pi_ref (unrelated to the gold; logit scale 2, a peaked "SFT" policy). A proxy
preference model, a BT reward model (MLP on the prompt features and one-hot tokens), is trained
on 2048 pairs drawn from pi_ref on the training prompts with Bradley-Terry labels from the gold
(early-stopped on validation pairs); it labels every pair the policies train on (the higher
proxy reward is chosen).

Why the toy's space is this size: with 4^5 = 1024 sequences and a reference of logit scale 1
(the first version, explored on seeds 0-1) offline IPO matched online IPO at every KL budget.
In an exact, well-covered toy that is expected: offline IPO's population optimum,
pi ∝ pi_ref exp(P_proxy(y beats pi_ref) / beta'), is the KL-optimal policy for the proxy's win
rate against pi_ref, the very quantity evaluated, while online IPO targets the win rate against
itself. The paper's gap needs the offline data to cover the space sparsely; the 4096-sequence
space with a peaked reference (the setting here, fixed after that exploration and before the
5-seed run) showed an online lead of a few points on seeds 0-1.

Variants (IPO, Azar et al. 2023, `alignax.losses.direct.ipo_loss`, on exact sequence
log-probs; the same 240 updates of 32 pairs, Adam learning rate 0.05, beta grid {0.05, 0.1,
0.25, 0.5} and checkpoints every 12 updates):
  - `online`: every update draws fresh pairs y, y' ~ pi_theta(.|x) from the current policy
    (stop-gradient sampling inside the loss, `alignax.algorithms.small_direct.online_pair_loss`)
    and labels them with the proxy;
  - `offline`: a fixed dataset of steps x batch pairs from pi_ref on the same prompts, labelled
    by the same proxy (`offline_pair_loss`): as many distinct pairs as the online run draws;
  - `offline_broad` (the paper's data-coverage ablation): the same, with the pairs drawn from
    a broader policy, pi_ref at temperature 2;
  - `online_sft` (the paper's non-contrastive ablation, reported): SFT on the proxy's best of
    two on-policy draws (`best_of_k_sft_loss`, k = 2), no beta (one run, its checkpoints).
Every beta of the grid trains in one program with the seeds (vmapped).

Splits: experiment seed s draws its training prompts and the proxy's training pairs from data
seed 3s, the validation prompts and pairs (proxy early stopping, checkpoint choice) from 3s + 1,
and the test prompts and held-out pairs from 3s + 2 (`split_seeds`).

Evaluation (exact, no sampling): KL(pi || pi_ref) averaged over prompts; the gold win rate
against pi_ref, E_{y ~ pi, y' ~ pi_ref}[1(gold(y) > gold(y')) + 1/2 1(=)]
(`alignax.eval.frontier.ref_win_table`); the pairwise-classification accuracy of the policy's
implicit reward h = log pi - log pi_ref on held-out pairs drawn from pi_ref and labelled by the
gold (`implicit_reward_accuracy`). Each is logged every `eval_every` updates on the validation
prompts (val_*) and on the test prompts (test_*).

Selection on validation (the same for every variant): for a KL budget B, the candidates are every
(beta, checkpoint) of the variant and the reference itself (KL 0, win 1/2); the one with the
highest validation win rate among those whose validation KL is <= B is chosen
(`frontier.budget_choice`, recorded as chosen_*), and its test metrics are reported
(test_win_kl<B>, test_kl_kl<B>, test_acc_kl<B>). test_area is the mean of the chosen test win
rates over the budget grid (the area under the validation-selected frontier).

Claims (5 seeds, paired 95% Student t intervals):
  - comparative (the paper's main finding, its +10-point pass criterion): at each KL budget of
    `claim_budgets` the online test win rate beats the offline one by >= 0.10;
  - comparative (the discriminative/generative dissociation): at the middle budget the offline
    policy's held-out pairwise-classification accuracy is higher than the online one's (>= 0);
  - comparative (coverage ablation): at the middle budget online beats the broad-coverage
    offline variant (>= 0: the gap is not explained by the coverage of pi_ref's samples).
  - sanity: the proxy's test accuracy against the gold is above chance (it is a trained model).

    alignax run experiments/online_offline_gap.py            # full setting, 5 seeds
    alignax run experiments/online_offline_gap.py:smoke      # seconds, for the tests
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
from alignax.protocol import seed_mean
from alignax.algorithms import small_direct
from alignax.algorithms.small_pg import rl_batch
from alignax.eval import frontier
from alignax.experiment import is_smoke
from alignax.losses.direct import ipo_loss
from alignax.losses.reward import bradley_terry_loss
from alignax.models import sequence_table as st
from alignax.models.mlp import MLPConfig, make_mlp
from alignax.tasks.sequence_prefs import PreferenceWorld, sample_pairs
from alignax.tasks.simulators import bradley_terry
from alignax.tasks.splits import split_seeds
from alignax.train.plots import plot_curves
from alignax.train.small import fit_small

METHODS = ("online", "offline", "online_sft")
EVAL_METRICS = ("kl", "win", "acc", "gold", "proxy")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    smoke = is_smoke(arg)
    c = ml_collections.ConfigDict()
    c.seeds = [0] if smoke else [0, 1, 2, 3, 4]
    c.method = "online"
    c.data_temperature = 1.0  # the offline data's sampling temperature (pi_ref^(1/T))
    c.variants = {"online": {"method": "online"}, "offline": {"method": "offline"},
                  "offline_broad": {"method": "offline", "data_temperature": 2.0},
                  "online_sft": {"method": "online_sft"}}
    c.space = dict(vocab_size=4 if smoke else 8, length=3 if smoke else 4)
    c.world = dict(dim=4, unary_scale=1.0, pair_scale=0.5, ref_scale=2.0)
    # smoke: 16 prompts per split and 16 pairs per prompt everywhere (the offline data too:
    # steps * batch_size / train_prompts = 16), so that every split's log-prob table and every
    # pair draw of one temperature is one compiled program
    c.data = dict(train_prompts=16 if smoke else 64, val_prompts=16 if smoke else 32,
                  test_prompts=16 if smoke else 64, rm_pairs_per_prompt=16 if smoke else 32,
                  rm_val_pairs_per_prompt=16, eval_pairs_per_prompt=16,
                  label_temperature=1.0)
    c.rm = dict(hidden=16 if smoke else 64, steps=20 if smoke else 400,
                learning_rate=1e-2, eval_every=10 if smoke else 20)
    c.train = dict(steps=16 if smoke else 240, batch_size=16 if smoke else 32,
                   learning_rate=0.05, eval_every=8 if smoke else 12,
                   betas=(0.25, 1.0) if smoke else (0.05, 0.1, 0.25, 0.5))
    c.budgets = (0.5, 1.0, 2.0, 3.0)  # KL budgets (nats) at which the variants are compared
    c.claim_budgets = (0.5, 1.0, 2.0)
    c.middle_budget = 1.0
    return c


# ---------------------------------------------------------------------------------------------
# Data


def make_world(config, seed: int) -> PreferenceWorld:
    return PreferenceWorld(st.SequenceSpace(int(config.space.vocab_size),
                                            int(config.space.length)), seed=seed,
                           **config.world.to_dict())


def labelled_pairs(world, ref, z, per_prompt, seed, values, *, stream=0, temperature=1.0,
                   label_temperature=None):
    """Pairs from pi_ref^(1/temperature) on prompts z (data seed `seed`, draw stream `stream`);
    labels: BT draws from `values` [P, N] with `label_temperature` (None: the higher value,
    ties to a)."""
    pairs = sample_pairs(world.space, ref, z, per_prompt, seed, stream=stream,
                         temperature=temperature)
    va = values[pairs["prompt"], pairs["a"]]
    vb = values[pairs["prompt"], pairs["b"]]
    if label_temperature is None:
        a_better = va >= vb
    else:
        a_better = bradley_terry(va, vb, rng=np.random.default_rng([seed, stream, 47]),
                                 temperature=label_temperature).astype(bool)
    return {**pairs, "a_better": a_better}


_log_probs = jax.jit(st.sequence_log_probs, static_argnums=0)


def make_data(config, seed: int) -> dict:
    """The world of seed `seed` and its train / validation / test data (`split_seeds`)."""
    world = make_world(config, seed)
    space, dc = world.space, config.data
    splits = split_seeds(seed)
    ref = world.reference_params()  # float32 host arrays (the jitted programs take them)
    out = {"ref": ref}
    for name, n, s in (("train", dc.train_prompts, splits.train),
                       ("val", dc.val_prompts, splits.validation),
                       ("test", dc.test_prompts, splits.test)):
        z = world.prompts(int(n), s)
        gold = world.gold(z)
        ref_logp = np.asarray(_log_probs(space, ref, z))
        out[f"{name}_z"], out[f"{name}_gold"], out[f"{name}_ref"] = z, gold, ref_logp
        if name != "train":
            out[f"{name}_wintable"] = np.asarray(frontier.ref_win_table(gold, ref_logp))
            ev = labelled_pairs(world, ref, z, int(dc.eval_pairs_per_prompt), s, gold, stream=1)
            out.update({f"{name}_pair_{k}": v for k, v in ev.items()})
    rm_train = labelled_pairs(world, ref, out["train_z"], int(dc.rm_pairs_per_prompt),
                              splits.train, out["train_gold"],
                              label_temperature=float(dc.label_temperature))
    rm_val = labelled_pairs(world, ref, out["val_z"], int(dc.rm_val_pairs_per_prompt),
                            splits.validation, out["val_gold"],
                            label_temperature=float(dc.label_temperature))
    out.update({f"rm_{k}": v for k, v in rm_train.items()})
    out.update({f"rmval_{k}": v for k, v in rm_val.items()})
    out["features"] = world.token_features()
    return out


# ---------------------------------------------------------------------------------------------
# The proxy preference model


def rm_inputs(z, features):
    """[..., P, N, D + L V] inputs of the reward model for prompts z [..., P, D]."""
    zz = jnp.broadcast_to(z[..., :, None, :], (*z.shape[:-1], features.shape[0], z.shape[-1]))
    ff = jnp.broadcast_to(features, (*z.shape[:-1], *features.shape))
    return jnp.concatenate([zz, ff], -1)


def train_proxy(config, workdir, data):
    """The proxy BT reward model of every seed (one vmapped fit_small, early stopping on the
    validation pairs' BT labels); returns its reward tables for the training and test prompts
    and its test accuracy against the gold."""
    features = jnp.asarray(data["features"][0])
    d_in = data["train_z"].shape[-1] + features.shape[-1]
    model = make_mlp(MLPConfig(in_dim=d_in, hidden=(int(config.rm.hidden),), out_dim=1))

    def score_pairs(params, z, prompt, a, b):
        zp = z[prompt]
        xa = jnp.concatenate([zp, features[a]], -1)
        xb = jnp.concatenate([zp, features[b]], -1)
        return model.apply(params, xa), model.apply(params, xb)

    def loss_fn(params, d):
        ra, rb = score_pairs(params, d["train_z"], d["rm_prompt"], d["rm_a"], d["rm_b"])
        lab = d["rm_a_better"]
        return bradley_terry_loss(jnp.where(lab, ra, rb), jnp.where(lab, rb, ra)).mean()

    def eval_fn(params, d):
        ra, rb = score_pairs(params, d["val_z"], d["rmval_prompt"], d["rmval_a"],
                             d["rmval_b"])
        return {"val_accuracy": jnp.mean((ra > rb) == d["rmval_a_better"])}

    train_keys = ("train_z", "rm_prompt", "rm_a", "rm_b", "rm_a_better")
    val_keys = ("val_z", "rmval_prompt", "rmval_a", "rmval_b", "rmval_a_better")
    fit = fit_small(workdir, loss_fn=loss_fn, init_params=model.init,
                    tx=optax.adam(float(config.rm.learning_rate)),
                    num_steps=int(config.rm.steps), data={k: data[k] for k in train_keys},
                    seeds=list(config.seeds), per_seed_data=True,
                    steps_per_log=int(config.rm.eval_every), eval_fn=eval_fn,
                    eval_data={k: data[k] for k in val_keys}, select=("val_accuracy", "max"),
                    desc="proxy RM", plots=False)

    @jax.jit
    @jax.vmap
    def tables(params, d):
        tr = model.apply(params, rm_inputs(d["train_z"], features))
        te = model.apply(params, rm_inputs(d["test_z"], features))
        # accuracy on the held-out test pairs (from pi_ref, labelled by the gold)
        pr, a, b = d["test_pair_prompt"], d["test_pair_a"], d["test_pair_b"]
        acc = jnp.mean((te[pr, a] > te[pr, b]) == d["test_pair_a_better"])
        return tr, te, acc

    tr, te, acc = tables(fit.best_params, {k: data[k] for k in (
        "train_z", "test_z", "test_pair_prompt", "test_pair_a", "test_pair_b",
        "test_pair_a_better")})
    return np.asarray(tr), np.asarray(te), np.asarray(acc), fit


_SHARED: dict = {}  # the data and the proxy of a run, shared by its variants (one process)


def shared_world(config, workdir):
    """make_data for every seed and the proxy trained on it: computed by the first variant of a
    run (the proxy in its folder) and reused by the others in the same process (the variants
    differ in the policy's training only; a resumed run in a new process retrains the proxy,
    deterministically, in the variant's own folder)."""
    key = json.dumps({k: config[k].to_dict() if hasattr(config[k], "to_dict") else config[k]
                      for k in ("seeds", "space", "world", "data", "rm")}, sort_keys=True)
    if key not in _SHARED:
        seeds = [int(s) for s in config.seeds]
        per_seed = [make_data(config, s) for s in seeds]
        # host arrays: no device transfer program per field (the jitted programs take them)
        data = {k: np.stack([np.asarray(d[k]) for d in per_seed])
                for k in per_seed[0] if k != "ref"}
        proxy = train_proxy(config, os.path.join(workdir, "proxy"), data)[:3]
        _SHARED.clear()
        _SHARED[key] = (per_seed, data, proxy)
    return _SHARED[key]


# ---------------------------------------------------------------------------------------------
# The policies


def make_loss(config, space):
    method, batch = config.method, int(config.train.batch_size)
    if method == "online":
        return small_direct.online_pair_loss(space, ipo_loss, num_pairs=batch)
    if method == "offline":
        return small_direct.offline_pair_loss(space, ipo_loss, num_pairs=batch)
    if method == "online_sft":
        return small_direct.best_of_k_sft_loss(space, num_prompts=batch, k=2)
    raise ValueError(f"unknown method {config.method!r}; one of {METHODS}")


def policy_eval_fn(space):
    def split_metrics(params, e, name):
        lp = st.sequence_log_probs(space, params, e[f"{name}_z"])
        ref = e[f"{name}_ref"]
        p = jnp.exp(lp)
        kl = jnp.mean(jnp.sum(p * (lp - ref), -1))
        pr, a, b = (e[f"{name}_pair_{k}"] for k in ("prompt", "a", "b"))
        acc = frontier.implicit_reward_accuracy(lp[pr, a], ref[pr, a], lp[pr, b], ref[pr, b],
                                                e[f"{name}_pair_a_better"])
        out = {f"{name}_kl": kl, f"{name}_win": jnp.mean(jnp.sum(p * e[f"{name}_wintable"], -1)),
               f"{name}_acc": acc, f"{name}_gold": jnp.mean(jnp.sum(p * e[f"{name}_gold"], -1))}
        if f"{name}_proxy" in e:
            out[f"{name}_proxy"] = jnp.mean(jnp.sum(p * e[f"{name}_proxy"], -1))
        return out

    def eval_fn(params, e):
        return {**split_metrics(params, e, "val"), **split_metrics(params, e, "test")}

    return eval_fn


def eval_keys(split: str) -> tuple[str, ...]:
    keys = ("z", "ref", "wintable", "gold", "pair_prompt", "pair_a", "pair_b", "pair_a_better")
    return tuple(f"{split}_{k}" for k in keys)


def run_seeds(config: ml_collections.ConfigDict, workdir: str) -> dict[int, dict[str, float]]:
    """Every seed (and every beta) of one variant: the proxy, then the policies, then the
    KL-budget choice on validation and the test metrics of the chosen checkpoints."""
    seeds = [int(s) for s in config.seeds]
    space = make_world(config, seeds[0]).space
    per_seed, data, (proxy_train, proxy_test, proxy_acc) = shared_world(config, workdir)

    method = config.method
    betas = [None] if method == "online_sft" else [float(b) for b in config.train.betas]
    nb, steps, batch = len(betas), int(config.train.steps), int(config.train.batch_size)
    # pseudo-seeds: (seed, beta) pairs, every beta of a seed with the seed's own key
    ids = [1000 * s + j for s in seeds for j in range(nb)]
    rep = lambda x: np.repeat(np.asarray(x), nb, axis=0)  # noqa: E731
    train_data = {"z": rep(data["train_z"]), "ref_logp": rep(data["train_ref"]),
                  "score": rep(proxy_train),
                  "beta": np.tile(np.asarray([b or 1.0 for b in betas], np.float32),
                                  len(seeds))}
    if method == "offline":
        per_prompt = -(-steps * batch // int(config.data.train_prompts))
        ds = []
        for i, s in enumerate(seeds):
            world = make_world(config, s)
            ref = per_seed[i]["ref"]
            ds.append(labelled_pairs(world, ref, per_seed[i]["train_z"], per_prompt,
                                     split_seeds(s).train, proxy_train[i], stream=2,
                                     temperature=float(config.data_temperature)))
        chosen = [np.where(d["a_better"], d["a"], d["b"]) for d in ds]
        rejected = [np.where(d["a_better"], d["b"], d["a"]) for d in ds]
        train_data.update(prompt=rep(np.stack([d["prompt"] for d in ds])),
                          chosen=rep(np.stack(chosen)), rejected=rep(np.stack(rejected)))
    eval_data = {k: rep(data[k]) for k in (*eval_keys("val"), *eval_keys("test"))}
    eval_data["test_proxy"] = rep(proxy_test)
    ref_params = jax.tree.map(lambda *x: np.stack(x), *[d["ref"] for d in per_seed])
    init = jax.tree.map(rep, ref_params)
    fit = fit_small(os.path.join(workdir, "policy"), loss_fn=make_loss(config, space),
                    init_params=init, per_seed_init=True,
                    tx=optax.adam(float(config.train.learning_rate)), num_steps=steps,
                    data=train_data, seeds=ids, per_seed_data=True,
                    seed_keys=jnp.stack([jax.random.key(i // 1000) for i in ids]),
                    batch_fn=rl_batch, has_aux=True, steps_per_log=int(config.train.eval_every),
                    eval_fn=policy_eval_fn(space), eval_data=eval_data, desc=method,
                    plots=False)  # metrics.jsonl, TensorBoard and trajectories.json keep all

    budgets = [float(b) for b in config.budgets]
    out, trajectories = {}, {}
    for i, s in enumerate(seeds):
        names, traj = ["reference"], {f"{sp}_{m}": [ref_value(m)] for sp in ("val", "test")
                                      for m in EVAL_METRICS}
        for j, b in enumerate(betas):
            pid = 1000 * s + j
            for t, row in enumerate(fit.history):
                names.append(f"beta={b},step={(t + 1) * int(config.train.eval_every)}"
                             if b is not None else
                             f"step={(t + 1) * int(config.train.eval_every)}")
                for key in traj:
                    traj[key].append(row.get(f"seed_{pid}/eval/{key}", np.nan))
        traj = {k: np.asarray(v, np.float64) for k, v in traj.items()}
        # the reference's own values (KL 0, win 1/2, accuracy 1/2; gold and proxy exact)
        for sp in ("val", "test"):
            traj[f"{sp}_gold"][0] = float(np.mean(np.sum(np.exp(per_seed[i][f"{sp}_ref"])
                                                         * per_seed[i][f"{sp}_gold"], -1)))
        traj["test_proxy"][0] = float(np.mean(np.sum(np.exp(per_seed[i]["test_ref"])
                                                     * proxy_test[i], -1)))
        traj["val_proxy"][:] = np.nan
        res = {"test_proxy_accuracy": float(proxy_acc[i]),
               "max_val_kl": float(np.nanmax(traj["val_kl"]))}
        chosen_test = []
        for bud in budgets:
            tag = f"kl{bud:g}"
            name, record = frontier.budget_choice(names, traj["val_kl"], traj["val_win"], bud)
            k = names.index(name)
            res[f"val_win_{tag}"] = float(traj["val_win"][k])
            res[f"val_kl_{tag}"] = float(traj["val_kl"][k])
            res[f"chosen_index_{tag}"] = float(k)
            res[f"chosen_step_{tag}"] = float(name.split("step=")[-1]) if "step=" in name else 0.
            if betas[0] is not None:
                res[f"chosen_beta_{tag}"] = (float(name.split(",")[0].split("=")[1])
                                             if name != "reference" else float("nan"))
            for m in EVAL_METRICS:
                res[f"test_{m}_{tag}"] = float(traj[f"test_{m}"][k])
            chosen_test.append(res[f"test_win_{tag}"])
        res["test_area"] = float(np.mean(chosen_test))
        out[s] = res
        trajectories[str(s)] = {"names": names,
                                **{k: [None if not np.isfinite(x) else float(x) for x in v]
                                   for k, v in traj.items()}}
    with open(os.path.join(workdir, "trajectories.json"), "w") as f:
        json.dump(trajectories, f)
    return out


def ref_value(metric: str) -> float:
    """The reference policy's value of an evaluation metric (gold and proxy: filled in later)."""
    return {"kl": 0.0, "win": 0.5, "acc": 0.5}.get(metric, np.nan)


# ---------------------------------------------------------------------------------------------
# Claims and plots


def claims(results) -> list[protocol.Claim]:
    cfg = get_config()
    mid = f"kl{cfg.middle_budget:g}"
    out = []
    for bud in cfg.claim_budgets:
        tag = f"kl{bud:g}"
        detail = ", ".join(f"{v} {seed_mean(results, v, f'test_win_{tag}'):.3f} (test KL "
                           f"{seed_mean(results, v, f'test_kl_{tag}'):.2f})" for v in results)
        out.append(protocol.compare(
            f"at a KL budget of {bud:g} nats online IPO's test gold win rate against pi_ref "
            f"beats offline IPO's by >= 0.10 (checkpoint and beta chosen on validation under "
            f"the budget)", results, ("online", f"test_win_{tag}"),
            ("offline", f"test_win_{tag}"), at_least=0.10, detail=detail))
    out.append(protocol.compare(
        f"at a KL budget of {cfg.middle_budget:g} nats the offline policy's implicit reward "
        f"classifies held-out gold-labelled pairs better than the online policy's (>= 0)",
        results, ("offline", f"test_acc_{mid}"), ("online", f"test_acc_{mid}"), at_least=0.0,
        detail=", ".join(f"{v} {seed_mean(results, v, f'test_acc_{mid}'):.3f}" for v in results)))
    out.append(protocol.compare(
        f"coverage ablation: at a KL budget of {cfg.middle_budget:g} nats online IPO still "
        f"beats offline IPO on data from a broader policy (pi_ref at temperature 2) (>= 0)",
        results, ("online", f"test_win_{mid}"), ("offline_broad", f"test_win_{mid}"),
        at_least=0.0,
        detail=f"offline_broad {seed_mean(results, 'offline_broad', f'test_win_{mid}'):.3f}, "
               f"offline {seed_mean(results, 'offline', f'test_win_{mid}'):.3f}, online_sft "
               f"{seed_mean(results, 'online_sft', f'test_win_{mid}'):.3f}; test area: "
               + ", ".join(f"{v} {seed_mean(results, v, 'test_area'):.3f}" for v in results)))
    if "online" in results:
        out.append(protocol.sanity(
            "the proxy preference model ranks test responses better than chance",
            seed_mean(results, "online", "test_proxy_accuracy") > 0.5,
            {"test_proxy_accuracy": seed_mean(results, "online", "test_proxy_accuracy")},
            "a BT reward model trained on 2048 gold-labelled pairs"))
    return out


def plots(results, workdir: str) -> list[str]:
    """Test gold win rate vs test KL at the validation-chosen checkpoints of each budget."""
    cfg = get_config()
    curves = {}
    for v in results:
        xs = [0.0] + [seed_mean(results, v, f"test_kl_kl{b:g}") for b in cfg.budgets]
        ys = [0.5] + [seed_mean(results, v, f"test_win_kl{b:g}") for b in cfg.budgets]
        curves[v] = (xs, np.asarray(ys), np.zeros(len(ys)))
    out = os.path.join(workdir, "plots", "online_offline_frontier.png")
    plot_curves(curves, out, title="gold win rate vs KL at the validation-chosen checkpoints",
                xlabel="KL(pi || pi_ref) on test prompts", ylabel="gold win rate vs pi_ref")
    return [out]
