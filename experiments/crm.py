"""Collaborative reward modeling (CRM): two reward models that pick each other's training pairs.

Paper: "Two Minds Better Than One: Collaborative Reward Modeling for LLM Alignment" (2025).

Setting (feature-vector testbed): responses are vectors x ~ N(0, I_16) with a frozen non-linear
gold reward (a random tanh MLP, `alignax.tasks.features.MLPReward`). 20k training pairs are
labelled by Bradley-Terry draws from the gold reward (temperature `task.label_temperature`), then
a fraction `flip_rate` (20% or 40%) of the labels is flipped at random
(`alignax.tasks.simulators.flip_labels`). Reward models are 2-layer MLPs (128-128 GELU) trained
with minibatch Adam for many epochs (`alignax.train.small.fit_small`: every seed of a
variant in one vmapped program), long enough to start fitting the flipped labels. Methods:
  - `bt`: plain Bradley-Terry on every pair;
  - `small_loss`: one model that trains only on the (1 - tau_t) fraction of each minibatch with
    its own largest margins (small-loss filtering);
  - `crm`: two models; on each minibatch each one keeps its (1 - tau_t) most confident pairs and
    hands them to its peer, which trains on them (`alignax.losses.reward.peer_review_masks`); the
    drop rate ramps up on a curriculum tau_t = tau_max min(1, t / T_warm)
    (`curriculum_drop_rate`). The CRM reward is the mean of the two models' rewards.
tau_max is set to the flip rate (as in co-teaching, the noise rate is assumed known).

Splits (issue 18 protocol, `alignax.tasks.splits.split_seeds`): the gold MLP is the "world" of
experiment seed s (seeded by s); the 20k training pairs, 2k validation pairs and 10k test pairs
are drawn with the data seeds 3s, 3s + 1, 3s + 2. The validation pairs carry the same label
noise as the training pairs (BT draws, then `flip_rate` of them flipped): a practitioner has no
clean labels, and with symmetric flips the noisy validation accuracy, (1 - 2p) acc + p in
expectation, ranks models as the clean accuracy does. The test pairs are clean (gold ordering).

Selection (every variant the same): early stopping on validation, `fit_small(select=
("val_accuracy", "max"))` over the checkpoints every `eval_every` updates of the `steps`-update
run (the same grid and budget for bt, small_loss and crm). The selected step is recorded
(`chosen_step`, `val_accuracy`); test metrics are those of the selected params. The final
params' test accuracy is reported too (`test_gold_accuracy_final`): before issue 18 the BT
baseline was read at the end of a run long enough to overfit the flips.

Metrics: `test_gold_accuracy` (clean held-out pairs), and for the filtering methods
`kept_flip_rate`, the planted-flip rate among the training pairs the selected models would keep
at tau_max (on the whole training set).

Claims (5 seeds, paired 95% t intervals, `alignax.protocol`): at 40% flips (1, comparative) CRM's
test gold accuracy beats the early-stopped plain BT by >= 3 points; (2, threshold) the pairs CRM
keeps have a flip rate <= 25%. The 20% setting and single-model small-loss filtering are reported
in the details (no threshold).

    alignax run experiments/crm.py            # full setting, 5 seeds
    alignax run experiments/crm.py:smoke      # seconds, for the tests

`:real` runs CRM on a Hugging Face checkpoint and a user's preference pairs
(`alignax.algorithms.co_reward_model`, on the library's one trainer: mesh, LoRA, resume,
logging): two reward models on the backbone of the causal LM `model.path`, each with a new
score head (drawn from the run seed and from seed + `PEER_SEED_OFFSET`), trained on the paired
rows of `data.path` (TRL's paired formats, rendered with the checkpoint's chat template) with
peer review and the drop-rate curriculum tau_t = `crm.max_drop_rate` min(1, t / T_warm),
T_warm = `crm.warmup_fraction` x `rm.train.steps` (the toy's rule). As in co-teaching,
tau_max should be about the labels' noise rate, which a user's data does not state: set it
to the known or estimated rate. `crm.label_noise` p > 0 flips a fraction p of the TRAINING
pairs (each independently, `flip_labels`, seeded by the run seed) to emulate noisy annotation
(the paper's synthetic-noise setting); the validation and test pairs (the last
`data.eval_fraction` of the rows are test, as many before them validation) keep their labels.
The baseline is a single reward model trained as `reward_model.train` trains one (its model,
`make_reward_loss` and `common.fit_recipe`; here with the split held-out evaluation) from the
same checkpoint, its head drawn as model a's, on the same (noisy) training pairs with the same
`rm` optimizer, loss, steps, batch and evaluation schedule (CRM trains two models: twice the
compute per step). With LoRA (`lora.rank` > 0) the new heads of every model are trained in
full beside the adapters.

Selection (both sides alike): every `rm.train.eval_every` steps and at the end the held-out
pairs are scored; the step with the best validation accuracy (ties: the earliest) is chosen
(CRM: the accuracy of its reward, the mean (r_a + r_b) / 2; the baseline: its own), the
choice is recorded in `selection.json`, and the test accuracy is read at that step only. The
last step's test accuracy is reported beside it. Metrics: `test_crm_accuracy` (the pair's
mean), `test_a_accuracy`, `test_b_accuracy`, `test_bt_accuracy` (the baseline), their
validation values and chosen steps, and `train_flip_rate` (the flipped share of the
training pairs). A user's pairs have no gold reward, so no claim is evaluated:

    alignax run experiments/crm.py:real --config.model.path=/ckpt --config.data.path=/pairs

with the memory levers `model.*` (dtype, remat, scan_layers, logits_chunk), `lora.rank` and
`mesh.*`, e.g. `--config.crm.label_noise=0.4 --config.crm.max_drop_rate=0.4`.
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
from alignax.algorithms import co_reward_model, common, pretrained, real, reward_model
from alignax.protocol import choose_on_validation, seed_mean
from alignax.experiment import is_smoke
from alignax.losses import pairwise_accuracy
from alignax.losses.reward import bradley_terry_loss, curriculum_drop_rate, peer_review_masks
from alignax.models.mlp import MLPConfig, make_mlp
from alignax.tasks.features import MLPReward
from alignax.tasks.simulators import bradley_terry, flip_labels
from alignax.tasks.splits import split_seeds
from alignax.train.plots import plot_curves
from alignax.train.small import fit_small, stack_seeds
from alignax.train.writers import read_metrics

METHODS = ("bt", "small_loss", "crm")
TEST_KEYS = ("test_a", "test_b", "test_a_better")
VAL_KEYS = ("val_chosen", "val_rejected")
NOISE = {"20": 0.2, "40": 0.4}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    if arg == "real":
        return _real_config()
    smoke = is_smoke(arg)
    c = ml_collections.ConfigDict()
    c.seeds = [0] if smoke else [0, 1, 2, 3, 4]
    c.method = "crm"
    c.variants = {f"{m}_{n}": {"method": m, "flip_rate": r}
                  for n, r in NOISE.items() for m in METHODS}
    c.flip_rate = 0.4  # fraction of labels flipped at random
    c.task = dict(dim=16, gold_hidden=32, label_temperature=0.1)
    c.data = dict(num_pairs=20_000 if not smoke else 500,
                  num_val_pairs=2000 if not smoke else 200,
                  num_test_pairs=10_000 if not smoke else 300)
    c.model = dict(hidden=(128, 128) if not smoke else (32, 32))
    c.train = dict(steps=2000 if not smoke else 30, batch_size=256 if not smoke else 64,
                   learning_rate=1e-3, eval_every=100 if not smoke else 10)
    # drop rate: tau_max = flip_rate * drop_scale, reached after warmup_fraction of the steps
    c.crm = dict(drop_scale=1.0, warmup_fraction=0.25)
    return c


def noisy_pairs(config, gold, n: int, rng) -> dict:
    """n BT-labelled pairs from the gold reward with `flip_rate` of the labels flipped."""
    task = config.task
    xa, xb = rng.standard_normal((2, n, task.dim))
    a_pref = bradley_terry(gold(xa), gold(xb), rng=rng, temperature=task.label_temperature)
    noisy, flipped = flip_labels(a_pref.astype(np.int32), rate=config.flip_rate, rng=rng)
    a_chosen = noisy.astype(bool)
    chosen = np.where(a_chosen[:, None], xa, xb).astype(np.float32)
    rejected = np.where(a_chosen[:, None], xb, xa).astype(np.float32)
    return {"chosen": chosen, "rejected": rejected, "flipped": flipped,
            "label_gold_wrong": gold(chosen) < gold(rejected)}


def make_data(config, seed: int) -> dict:
    """Experiment seed `seed`: noisy BT training pairs (with the planted-flip mask), noisy
    validation pairs (same noise) and clean test pairs, from the disjoint data seeds
    `split_seeds(seed)`; the gold MLP (the world) is seeded by `seed`."""
    task = config.task
    gold = MLPReward(dim=task.dim, hidden=task.gold_hidden, seed=seed)
    seeds = split_seeds(seed)
    out = noisy_pairs(config, gold, config.data.num_pairs,
                      np.random.default_rng([seeds.train, 1001]))
    val = noisy_pairs(config, gold, config.data.num_val_pairs,
                      np.random.default_rng([seeds.validation, 1001]))
    out.update(val_chosen=val["chosen"], val_rejected=val["rejected"],
               val_flipped=val["flipped"])
    rng = np.random.default_rng([seeds.test, 1001])
    ta, tb = rng.standard_normal((2, config.data.num_test_pairs, task.dim))
    out.update(test_a=ta.astype(np.float32), test_b=tb.astype(np.float32),
               test_a_better=gold(ta) > gold(tb))
    return out


def make_model(config):
    """One reward model: a GELU MLP dim -> hidden... -> 1 (`alignax.models.mlp`)."""
    return make_mlp(MLPConfig(in_dim=config.task.dim, hidden=tuple(config.model.hidden),
                              out_dim=1))


def num_models(method: str) -> int:
    """CRM trains two peer models; `bt` and `small_loss` one."""
    return 2 if method == "crm" else 1


def ensemble_score(score, params, x):
    """The method's reward: the mean of its models' rewards (both for CRM, the one model
    otherwise). `score(params, x)` -> [M, N]; returns [N]."""
    return jnp.mean(score(params, x), 0)


def training_masks(margins, drop_rate, method: str):
    """The pairs each model trains on, [M, B] from its margins [M, B] at drop rate tau.

    crm: each model keeps its (1 - tau) most confident pairs for its peer
    (`peer_review_masks`); small_loss: the model keeps its own most confident pairs; bt: all.
    """
    if method == "crm":
        return jnp.stack(peer_review_masks(margins[0], margins[1], drop_rate=drop_rate))
    if method == "small_loss":
        return peer_review_masks(margins[0], margins[0], drop_rate=drop_rate)[0][None]
    return jnp.ones_like(margins)


def train(config, workdir: str, data: dict):
    """Minibatch Adam on the method's masked BT loss for every seed at once (`fit_small`).

    data: [S, ...] arrays of the seeds in `config.seeds`: chosen, rejected [S, N, D] and the
    noisy validation pairs val_chosen, val_rejected [S, V, D]. The drop rate follows the
    curriculum tau_t = tau_max min(1, t / T_warm) over the updates t. Every `eval_every` updates
    the method's reward is scored on the validation pairs (agreement with their noisy labels)
    and each seed keeps its best params (`select`). Returns (SmallFit with params and
    best_params [S, M, ...], validation accuracy every `eval_every` updates [S, E]).
    """
    method, tr = config.method, config.train
    model = make_model(config)
    score = jax.vmap(model.apply, in_axes=(0, None))  # [M, ...] params, shared inputs -> [M, N]
    max_rate = float(config.flip_rate * config.crm.drop_scale)
    warmup = int(config.crm.warmup_fraction * tr.steps)
    batch_size, m = int(tr.batch_size), num_models(method)

    def init(key):
        return jax.vmap(model.init)(jax.random.split(key, m))

    def batch_fn(d, rng, step):
        idx = jax.random.randint(rng, (batch_size,), 0, d["chosen"].shape[0])
        return {"chosen": d["chosen"][idx], "rejected": d["rejected"][idx], "step": step}

    def loss_fn(p, batch):
        rc, rr = score(p, batch["chosen"]), score(p, batch["rejected"])  # [M, B]
        losses = jax.vmap(bradley_terry_loss)(rc, rr)  # [M, B]
        tau = curriculum_drop_rate(batch["step"], max_rate=1.0, warmup_steps=warmup) * max_rate
        masks = training_masks(jax.lax.stop_gradient(rc - rr), tau, method)
        per_model = jnp.sum(masks * losses, 1) / jnp.maximum(jnp.sum(masks, 1), 1.0)
        return jnp.sum(per_model), {"drop_rate": tau if method != "bt" else jnp.float32(0.0),
                                    "updates": (batch["step"] + 1).astype(jnp.float32)}

    def eval_fn(p, val):
        r = (ensemble_score(score, p, val["val_chosen"])
             - ensemble_score(score, p, val["val_rejected"]))
        return {"val_accuracy": jnp.mean(r > 0)}

    fit = fit_small(workdir, loss_fn=loss_fn, init_params=init,
                    tx=optax.adam(float(tr.learning_rate)), num_steps=int(tr.steps),
                    data={k: data[k] for k in ("chosen", "rejected")},
                    seeds=list(config.seeds), per_seed_data=True, batch_fn=batch_fn,
                    with_step=True, has_aux=True, steps_per_log=int(tr.eval_every),
                    eval_fn=eval_fn, eval_data={k: data[k] for k in VAL_KEYS},
                    select=("val_accuracy", "max"))
    curves = np.array([[row[f"seed_{s}/eval/val_accuracy"] for row in fit.history]
                       for s in fit.seeds])
    return fit, curves


def pair_margins(config, params, chosen, rejected) -> np.ndarray:
    """Every model's margins r(chosen) - r(rejected) [S, M, N] of the stacked params [S, M, ...]
    on the seeds' pairs chosen, rejected [S, N, D]."""
    score = jax.vmap(make_model(config).apply, in_axes=(0, None))

    @jax.jit
    @jax.vmap
    def margins(p, c, r):
        return score(p, c) - score(p, r)

    return np.asarray(margins(params, jnp.asarray(chosen), jnp.asarray(rejected)))


def gold_accuracy(config, params, data) -> np.ndarray:
    """[S] clean test gold accuracy of the method's reward with the stacked params [S, M, ...]."""
    score = jax.vmap(make_model(config).apply, in_axes=(0, None))

    @jax.jit
    @jax.vmap
    def accuracy(p, a, b, a_better):
        r = ensemble_score(score, p, a) - ensemble_score(score, p, b)
        return jnp.mean((r > 0) == a_better)

    return np.asarray(accuracy(params, *(data[k] for k in TEST_KEYS)))


def run_seeds(config: ml_collections.ConfigDict, workdir: str) -> dict[int, dict[str, float]]:
    """Every seed of one variant trained in one program (early-stopped on validation), then each
    seed's test metrics of the selected params (`:real`: one run per seed, `_run_real`)."""
    if real.is_real(config):
        return {int(s): _run_real(config, os.path.join(workdir, f"seed_{s}"), int(s))
                for s in config.seeds}
    method = config.method
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; one of {METHODS}")
    seeds = [int(s) for s in config.seeds]
    per_seed = [make_data(config, s) for s in seeds]
    data = stack_seeds(per_seed, ("chosen", "rejected", *VAL_KEYS, *TEST_KEYS))
    fit, curves = train(config, os.path.join(workdir, "reward_models"), data)
    best = gold_accuracy(config, fit.best_params, data)
    final = gold_accuracy(config, fit.params, data)
    margins = pair_margins(config, fit.best_params, data["chosen"], data["rejected"])  # [S,M,N]
    max_rate = float(config.flip_rate * config.crm.drop_scale)
    out = {}
    for i, (seed, d) in enumerate(zip(seeds, per_seed)):
        flipped = d["flipped"]
        res = {"test_gold_accuracy": float(best[i]), "test_gold_accuracy_final": float(final[i]),
               "val_accuracy": float(fit.best_score[i]), "chosen_step": float(fit.best_step[i]),
               "val_accuracy_final": float(curves[i, -1]),
               "observed_flip_rate": float(flipped.mean()),
               "val_observed_flip_rate": float(d["val_flipped"].mean())}
        m0 = margins[i].mean(0)  # the method's reward margin (the ensemble for CRM)
        res["train_fit_flipped"] = float(np.mean(m0[flipped] > 0))  # memorised wrong labels
        res["train_fit_clean"] = float(np.mean(m0[~flipped] > 0))
        if method != "bt":
            kept = np.asarray(training_masks(jnp.asarray(margins[i]), max_rate, method), bool)
            res["kept_flip_rate"] = float(np.mean([flipped[k].mean() for k in kept]))
            res["kept_gold_wrong_rate"] = float(np.mean([d["label_gold_wrong"][k].mean()
                                                         for k in kept]))
            res["kept_fraction"] = float(kept.mean())
        out[seed] = res
    return out


def claims(results) -> list[protocol.Claim]:
    if "default" in results:  # :real: metrics on a user's pairs, no gold reward
        return []
    acc = {v: seed_mean(results, v, "test_gold_accuracy") for v in results}
    final = {v: seed_mean(results, v, "test_gold_accuracy_final") for v in results}
    kept20 = seed_mean(results, "crm_20", "kept_flip_rate")
    kept_sl = seed_mean(results, "small_loss_40", "kept_flip_rate")
    return [
        protocol.compare(
            "at 40% flipped labels CRM's test gold accuracy beats plain BT by >= 3 points "
            "(every variant early-stopped on noisy validation labels)", results,
            ("crm_40", "test_gold_accuracy"), ("bt_40", "test_gold_accuracy"), at_least=0.03,
            detail=f"40%: CRM {acc['crm_40']:.3f} vs BT {acc['bt_40']:.3f}, single-model "
                   f"small-loss {acc['small_loss_40']:.3f} (all early-stopped the same way; "
                   f"at the last step BT {final['bt_40']:.3f}, CRM {final['crm_40']:.3f}); "
                   f"20%: CRM {acc['crm_20']:.3f} vs BT {acc['bt_20']:.3f}, small-loss "
                   f"{acc['small_loss_20']:.3f}"),
        protocol.threshold(
            "at 40% flipped labels the pairs CRM keeps have a flip rate <= 25%", results,
            ("crm_40", "kept_flip_rate"), at_most=0.25,
            detail=f"training pairs the selected CRM models keep at tau_max; at 20% flips "
                   f"{kept20:.3f}; single-model small-loss at 40% {kept_sl:.3f}"),
    ]


def plots(results, workdir: str) -> list[str]:
    """Validation accuracy (noisy labels) along training, per variant (mean +- std over
    seeds)."""
    if "default" in results:  # :real: the runs' own metrics.jsonl
        return []
    curves = {}
    for variant, res in results.items():
        path = os.path.join(workdir, variant, "reward_models", "metrics.jsonl")
        if not os.path.exists(path):
            continue
        rows = read_metrics(path)
        ys = np.array([[row[f"seed_{s}/eval/val_accuracy"] for row in rows]
                       for s in res["per_seed"]])
        curves[variant] = ([row["updates"] for row in rows], ys.mean(0), ys.std(0))
    out = os.path.join(workdir, "plots", "crm_accuracy.png")
    plot_curves(curves, out, title="CRM vs BT under flipped labels: validation accuracy",
                xlabel="training step", ylabel="agreement with noisy validation labels")
    return [out]


# ----------------------------------------------------------------------------- :real


def _real_config() -> ml_collections.ConfigDict:
    """The `:real` config (module docstring)."""
    c = ml_collections.ConfigDict()
    c.seeds = [0]
    real.add_real_fields(c, max_length=1024)
    # label_noise: share of training labels flipped; tau_t = max_drop_rate min(1, t / T_warm),
    # T_warm = warmup_fraction * rm.train.steps
    c.crm = dict(label_noise=0.0, max_drop_rate=0.2, warmup_fraction=0.25)
    # the optimizer, budget and loss of every reward model (CRM's two and the baseline)
    c.rm = dict(
        optimizer=dict(name="adamw", learning_rate=1e-5, warmup_steps=0, schedule="constant",
                       clip_norm=1.0, kwargs=dict(weight_decay=0.0)),
        train=dict(steps=200, batch_size=32, grad_accum_steps=1, checkpoint_every=50,
                   eval_every=50, log_every=1, progress=True),
        loss="bradley_terry", loss_kwargs={})
    return c


def _levers(config) -> dict:
    """model, mesh and lora of every reward model; with LoRA the new score heads train in
    full."""
    out = real.levers(config)
    if out["lora"]:
        out["lora"] = {**out["lora"], "full": "score/"}
    return out


def _bt_cfg(config) -> dict:
    return {**config.rm.to_dict(), **_levers(config)}


def _crm_cfg(config) -> dict:
    warmup = int(float(config.crm.warmup_fraction) * int(config.rm.train.steps))
    return {**_bt_cfg(config), "peer_review": dict(
        max_drop_rate=float(config.crm.max_drop_rate), warmup_steps=warmup)}


def validate(config: ml_collections.ConfigDict) -> None:
    """`:real`: the paths, crm.* and both recipes' configs, before any work (the toy's
    settings are checked by its own code)."""
    if not real.is_real(config):
        return
    real.require(config, "model.path", "data.path")
    noise, frac = float(config.crm.label_noise), float(config.crm.warmup_fraction)
    if not 0.0 <= noise < 0.5:
        raise ValueError(f"crm.label_noise={noise} must be in [0, 0.5)")
    if not 0.0 <= frac <= 1.0:
        raise ValueError(f"crm.warmup_fraction={frac} must be in [0, 1]")
    co_reward_model.validate(_crm_cfg(config))
    reward_model.validate(_bt_cfg(config))


class FlippedPairs:
    """A pair source with the labels of the rows in `flipped` swapped (chosen <-> rejected)."""

    def __init__(self, pairs, flipped):
        self.pairs, self.flipped = pairs, np.asarray(flipped, bool)
        if len(self.flipped) != len(pairs):
            raise ValueError(f"{len(self.flipped)} flip flags for {len(pairs)} pairs")

    def __len__(self):
        return len(self.pairs)

    def __getitem__(self, i):
        record = self.pairs[i]
        if not self.flipped[i]:
            return record
        swap = {"chosen": "rejected", "rejected": "chosen"}
        out = dict(record)
        for key, value in record.items():
            side, _, rest = key.partition("_")
            if side in swap and rest:
                out[f"{swap[side]}_{rest}"] = value
        return out


def _bt_eval(apply_fn, pairs, n_val: int, chunk: int):
    """Jitted `params -> {val_accuracy, test_accuracy}` of one reward model on [validation;
    test] pairs (the first `n_val` are validation)."""
    inputs = {k: np.asarray(pairs[k]) for k in
              ("chosen_ids", "chosen_mask", "rejected_ids", "rejected_mask")}

    @jax.jit
    def evaluate(params):
        chosen, rejected = real.map_in_chunks(
            lambda x: reward_model.pair_rewards(apply_fn, params, x), inputs, chunk)
        right = pairwise_accuracy(chosen, rejected)  # ties count 1/2
        return {"val_accuracy": right[:n_val].mean(), "test_accuracy": right[n_val:].mean()}

    return evaluate


def _chosen_row(history, signal: str):
    """The evaluated row with the best validation `signal` (ties: the earliest step), the
    `choose_on_validation` record, and the last evaluated row."""
    rows = {f"step={r['step']}": r for r in history if signal in r}
    name, record = choose_on_validation(rows, lambda r: r[signal])
    record["metric"] = signal
    return rows[name], record, list(rows.values())[-1]


def _run_real(config, workdir: str, seed: int) -> dict[str, float]:
    """`:real` (module docstring): CRM's two reward models and the single-RM baseline on the
    same pairs, each read at its step chosen on validation."""
    tok = real.tokenizer(config)
    data = real.pair_data(config, tok)
    n_val = len(data["validation"]["chosen_ids"])
    held_out = {k: np.concatenate([data["validation"][k], data["test"][k]])
                for k in data["validation"]}
    _, flipped = flip_labels(np.ones(len(data["train"]), np.int32),
                             rate=float(config.crm.label_noise),
                             rng=np.random.default_rng([split_seeds(seed).train, 1001]))
    train_pairs = FlippedPairs(data["train"], flipped)
    chunk = int(config.data.eval_batch_size)
    crm = co_reward_model.train(_crm_cfg(config), os.path.join(workdir, "crm"),
                                train_source=train_pairs, eval_pairs=held_out,
                                validation_rows=n_val, eval_chunk=chunk, seed=seed)
    # the baseline: reward_model.train's model, loss and trainer, with the split held-out eval
    bt_cfg = reward_model.validate(_bt_cfg(config))
    model, init = pretrained.recipe_model(bt_cfg, "reward", seed=seed)
    bt = common.fit_recipe(
        bt_cfg, os.path.join(workdir, "bt"), model=model, init_params=init,
        loss_fn=reward_model.make_reward_loss(model.apply, bt_cfg["loss"],
                                              bt_cfg["loss_kwargs"]),
        train_source=train_pairs, seed=seed, desc="reward model (baseline)",
        eval_fn=_bt_eval(model.apply, held_out, n_val, chunk))
    crm_row, crm_record, crm_last = _chosen_row(crm["fit"].history, "eval/val_mean_accuracy")
    bt_row, bt_record, bt_last = _chosen_row(bt["fit"].history, "eval/val_accuracy")
    if jax.process_index() == 0:
        with open(os.path.join(workdir, "selection.json"), "w") as f:
            json.dump({"crm": crm_record, "bt": bt_record}, f, indent=1)
    return {
        "crm_chosen_step": float(crm_row["step"]),
        "val_crm_accuracy": crm_row["eval/val_mean_accuracy"],
        "test_crm_accuracy": crm_row["eval/test_mean_accuracy"],
        "test_a_accuracy": crm_row["eval/test_a_accuracy"],
        "test_b_accuracy": crm_row["eval/test_b_accuracy"],
        "test_ab_agreement": crm_row["eval/test_agreement"],
        "test_crm_accuracy_last_step": crm_last["eval/test_mean_accuracy"],
        "bt_chosen_step": float(bt_row["step"]),
        "val_bt_accuracy": bt_row["eval/val_accuracy"],
        "test_bt_accuracy": bt_row["eval/test_accuracy"],
        "test_bt_accuracy_last_step": bt_last["eval/test_accuracy"],
        "train_flip_rate": float(flipped.mean()),
    }
