"""Bradley-Terry reward model and DPO on a synthetic language with a known gold reward.

Papers: Ouyang et al. 2022 (arXiv 2203.02155), reward model with the Bradley-Terry loss;
Rafailov et al. 2023 (arXiv 2305.18290), Direct
Preference Optimization (each claim names its paper: `paper="Ouyang et al. 2022 (BT reward
model)"`, `paper="Rafailov et al. 2023 (DPO)"`).

Setting: a random bigram language over 30 tokens (alignax.tasks.language.BigramLanguage); the gold
reward of a response is its mean token score; preference labels are Bradley-Terry draws from it
(temperature 0.05: about 87% of the labels agree with the gold ordering). Per seed: (1) SFT a tiny
Llama-style policy on the language (the reference), (2) train a BT reward model on the preference
pairs, (3) train a DPO policy from the reference on the same pairs.

Splits (docs/protocol.md): experiment seed s draws its SFT sequences and training pairs from data
seed 3s, its validation pairs from 3s + 1, its test pairs and test prompts from 3s + 2
(`alignax.tasks.splits.split_seeds`); the language itself (the "world") is `task.seed`. Model
initialisation and batch order use s.

Selection on validation (recorded in each seed's `selection.json` and as `*_chosen_step`): the
reward model keeps the logged step (every `rm.train.eval_every`) with the best validation label
accuracy, DPO the logged step (every `dpo.train.eval_every`) with the best validation implicit-
reward pair accuracy (`beta log pi/ref`); both are scored on labelled validation pairs only (no
gold), the way a practitioner would stop. Every logged step is also evaluated on test, and the
test numbers of the chosen step are reported (`test_*`); the choice never sees them. The SFT
reference has no choice to make (600 steps, fixed). The step counts, learning rates and beta are
those of the first version of this experiment, not re-tuned.

Claims (5 seeds, 95% Student t intervals over seeds):
- threshold (Ouyang et al.): the RM's test gold accuracy (agreement with the gold ordering of
  held-out pairs) is >= 0.75;
- comparative (Rafailov et al.): DPO's test gold reward minus the reference's (same test prompts,
  same sampling key) is > 0 (interval >= 0).

    alignax run experiments/bt_dpo_synthetic.py            # full setting, 5 seeds
    alignax run experiments/bt_dpo_synthetic.py:smoke      # seconds, for the tests

The same pipeline runs on a preference file (JSONL/Parquet, prompt/chosen/rejected strings or chat
messages) with a byte-level tokenizer; there is no gold reward then, so the claims are not checked
and the metrics are pair accuracies on the last `data.eval_fraction` of the file (test), the
`data.eval_fraction` before it being the validation pairs the steps are chosen on:

    alignax run experiments/bt_dpo_synthetic.py --config.data.path=prefs.jsonl \
        --config.model.max_len=512 --config.data.skip_invalid=True

`:real` runs the same three stages and the same validation choices on a Hugging Face checkpoint
and dataset (docs/byom.md): SFT on the chosen responses from `model.path` (the reference; or
`reference=checkpoint`: the checkpoint itself is the reference, as for an instruct model), a
Bradley-Terry reward model on the checkpoint's backbone with a new score head
(`alignax.algorithms.pretrained`), and DPO from the reference. The pairs are the paired rows of
`data.path` (TRL's explicit / implicit prompt, standard or conversational, rendered with the
checkpoint's chat template); the last `data.eval_fraction` of the rows are test, the
`data.eval_fraction` before them validation. The metrics are the held-out label accuracy of the
RM and the implicit-reward pair accuracy of DPO at the steps chosen on validation; a user's
pairs have no gold reward, so no claim is evaluated. The memory levers are `model.*` (dtype,
remat, scan_layers, logits_chunk), `lora.rank` and `mesh.*`:

    alignax run experiments/bt_dpo_synthetic.py:real --workdir runs/bt_real \
        --config.model.path=/ckpt/Qwen2.5-0.5B-Instruct --config.data.path=/data/prefs \
        --config.model.dtype=bfloat16 --config.model.remat=full --config.model.logits_chunk=8192
"""

from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from alignax import protocol
from alignax.algorithms import common, direct, pretrained, real, reward_model, sft
from alignax.algorithms.common import stack_records
from alignax.data import (ByteTokenizer, DataError, load_preference_source, read_preferences,
                          write_preference_dataset)
from alignax.data.tokenize import tokenize_pairs
from alignax.eval.policy import make_policy_eval
from alignax.experiment import Claim
from alignax.losses import pairwise_accuracy
from alignax.tasks.language import BOS_ID, BigramLanguage
from alignax.tasks.splits import choose_on_validation, split_seeds

DPO_PAPER = "Rafailov et al. 2023 (DPO)"
RM_PAPER = "Ouyang et al. 2022 (BT reward model)"


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    mode = real.config_mode(arg)
    smoke = mode == "smoke"
    c = ml_collections.ConfigDict()
    c.seeds = [0] if smoke else [0, 1, 2, 3, 4]
    c.task = dict(vocab_size=32, prompt_len=4, response_len=12, concentration=0.5,
                  label_temperature=0.05, seed=0)
    # train (SFT sequences, pairs) / validation (pairs) / test (pairs, prompts): split_seeds
    c.data = dict(num_sft=4096 if not smoke else 256, num_pairs=4096 if not smoke else 128,
                  num_val_pairs=512 if not smoke else 32,
                  num_test_pairs=512 if not smoke else 32,
                  num_test_prompts=256 if not smoke else 32,
                  # A preference file instead of the synthetic task ("" = synthetic):
                  path="", skip_invalid=False, eval_fraction=0.1)
    # vocab_size comes from the task (or the tokenizer); max_len is the sequence length T.
    c.model = dict(d_model=64, n_layers=2, n_heads=4, d_ff=176, max_len=17)
    c.mesh = dict(data=-1, fsdp=1, tensor=1)

    def stage(steps, batch, lr, every):
        return dict(
            optimizer=dict(name="adamw", learning_rate=lr, warmup_steps=0, schedule="constant",
                           clip_norm=1.0, kwargs=dict(weight_decay=0.0)),
            train=dict(steps=steps, batch_size=batch, checkpoint_every=every, log_every=1,
                       eval_every=every, progress=True),
        )

    c.sft = stage(600 if not smoke else 20, 64 if not smoke else 16, 3e-3, 200 if not smoke else 10)
    c.rm = stage(400 if not smoke else 20, 32 if not smoke else 8, 1e-3, 100 if not smoke else 10)
    c.rm.loss = "bradley_terry"
    c.rm.loss_kwargs = dict()
    c.dpo = stage(300 if not smoke else 20, 32 if not smoke else 8, 3e-4, 100 if not smoke else 10)
    c.dpo.train.eval_every = 25 if not smoke else 5
    c.dpo.loss = "dpo"
    c.dpo.loss_kwargs = dict(beta=0.1)
    if mode == "real":  # a user's checkpoint and pairs: see the module docstring
        del c.task
        real.add_real_fields(c, max_length=1024)
        c.seeds = [0]
        c.reference = "sft"  # or "checkpoint": DPO's reference is model.path itself
        c.sft = stage(200, 32, 1e-5, 100)
        c.rm = stage(200, 32, 1e-5, 50)
        c.rm.loss, c.rm.loss_kwargs = "bradley_terry", dict()
        c.dpo = stage(200, 32, 5e-7, 50)
        c.dpo.loss, c.dpo.loss_kwargs = "dpo", dict(beta=0.1)
    return c


def _pair_record(task: BigramLanguage, ex: dict) -> dict:
    chosen = task.sequences(ex["prompt"][None], ex["chosen"][None])[0]
    rejected = task.sequences(ex["prompt"][None], ex["rejected"][None])[0]
    response = np.zeros(task.seq_len, np.int32)
    response[1 + task.prompt_len:] = 1
    ones = np.ones(task.seq_len, np.int32)
    return {
        "chosen_ids": chosen, "rejected_ids": rejected,
        "chosen_mask": ones, "rejected_mask": ones,
        "chosen_response_mask": response, "rejected_response_mask": response,
        "chosen_gold": ex["chosen_gold"], "rejected_gold": ex["rejected_gold"],
        "label_correct": ex["label_correct"],
    }


# the test split of the pair datasets keeps the name it had before the validation split existed
TEST_SPLIT = "eval"


def _write_data(task: BigramLanguage, data_cfg, seed: int, data_dir: str) -> None:
    """SFT sequences and training pairs from the train data seed, validation pairs from the
    validation seed, test pairs from the test seed (`split_seeds(seed)`)."""
    data_seeds = split_seeds(seed)
    t = task.seq_len
    seq_features = {"input_ids": ((t,), np.int32)}
    pair_features = {k: ((t,), np.int32) for k in (
        "chosen_ids", "rejected_ids", "chosen_mask", "rejected_mask", "chosen_response_mask",
        "rejected_response_mask")}
    pair_features.update({k: ((), np.float32) for k in
                          ("chosen_gold", "rejected_gold", "label_correct")})
    write_preference_dataset(
        data_dir, name="bigram_sft",
        splits={"train": task.sft_examples(data_cfg.num_sft, data_seeds.train)},
        features=seq_features)

    def pairs(n, data_seed):
        return [_pair_record(task, ex) for ex in task.preference_examples(n, data_seed)]

    write_preference_dataset(
        data_dir, name="bigram_preferences",
        splits={"train": pairs(data_cfg.num_pairs, data_seeds.train),
                "validation": pairs(data_cfg.num_val_pairs, data_seeds.validation),
                TEST_SPLIT: pairs(data_cfg.num_test_pairs, data_seeds.test)},
        features=pair_features)


def _file_data(config, data_dir: str) -> dict:
    """Reads, validates and tokenizes a user preference file into train / validation / test
    pair datasets (the last `eval_fraction` of the file is test, the `eval_fraction` before it
    validation)."""
    tok = ByteTokenizer()
    t = int(config.model.max_len)
    result = read_preferences(config.data.path, skip_invalid=config.data.skip_invalid,
                              max_length=t - 2, tokenize=tok.encode)
    if jax.process_index() == 0 and result.num_skipped:
        print(f"alignax: {result.summary()}", flush=True)
    pairs = tokenize_pairs(result.records, tok, max_length=t)
    n_eval = max(1, int(round(config.data.eval_fraction * len(pairs))))
    if len(pairs) - 2 * n_eval < 1:
        raise DataError(f"{config.data.path}: {len(pairs)} valid pairs are too few to hold out "
                        f"{n_eval} for validation and {n_eval} for test")
    features = {k: ((t,), np.int32) for k in pairs[0]}
    if jax.process_index() == 0 and not os.path.exists(os.path.join(data_dir, "COMPLETE")):
        write_preference_dataset(
            data_dir, name="file_preferences", features=features,
            splits={"train": pairs[:-2 * n_eval], "validation": pairs[-2 * n_eval:-n_eval],
                    TEST_SPLIT: pairs[-n_eval:]})
        open(os.path.join(data_dir, "COMPLETE"), "w").close()
    return {"vocab_size": tok.vocab_size, "num_skipped": result.num_skipped,
            "name": "file_preferences"}


def _stage_cfg(config, stage, vocab_size: int | None = None) -> dict:
    model_cfg = config.model.to_dict()
    if vocab_size is not None:
        model_cfg["vocab_size"] = vocab_size
    return {**stage.to_dict(), "model": model_cfg, "mesh": config.mesh.to_dict()}


def _real_stage_cfg(config, stage) -> dict:
    return {**stage.to_dict(), **real.levers(config)}


def validate(config: ml_collections.ConfigDict) -> None:
    """Checks the three stages' configs and the data file before anything trains."""
    if real.is_real(config):  # :real
        real.require(config, "model.path", "data.path")
        if config.reference not in ("sft", "checkpoint"):
            raise ValueError(f"reference={config.reference!r} must be 'sft' or 'checkpoint'")
        for recipe, stage in ((sft, config.sft), (reward_model, config.rm),
                              (direct, config.dpo)):
            recipe.validate(_real_stage_cfg(config, stage))
        return
    sft.validate(_stage_cfg(config, config.sft))
    reward_model.validate(_stage_cfg(config, config.rm))
    direct.validate(_stage_cfg(config, config.dpo))
    if config.data.path and not os.path.exists(config.data.path):
        raise ValueError(f"data.path {config.data.path!r} does not exist")
    if not 0 < config.data.eval_fraction < 0.5:
        raise ValueError(f"data.eval_fraction={config.data.eval_fraction} must be in (0, 0.5)")


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
    if real.is_real(config):
        return _run_real(config, workdir)
    seed = int(config.seed)
    data_dir = os.path.join(workdir, "data")
    from_file = bool(config.data.path)
    if from_file:
        info = _file_data(config, data_dir)
        vocab_size, pairs_name = info["vocab_size"], info["name"]
    else:
        task = BigramLanguage(**config.task)
        if task.seq_len > config.model.max_len:
            raise ValueError(f"model.max_len={config.model.max_len} < task sequence length "
                             f"{task.seq_len}")
        vocab_size, pairs_name = task.vocab_size, "bigram_preferences"
        if jax.process_index() == 0 and not os.path.exists(os.path.join(data_dir, "COMPLETE")):
            _write_data(task, config.data, seed, data_dir)
            open(os.path.join(data_dir, "COMPLETE"), "w").close()
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices("bt_dpo_synthetic data written")

    pair_source = load_preference_source(data_dir, name=pairs_name, split="train")
    val_pairs = stack_records(load_preference_source(data_dir, name=pairs_name,
                                                     split="validation"))
    test_pairs = stack_records(load_preference_source(data_dir, name=pairs_name,
                                                      split=TEST_SPLIT))
    # validation and test pairs go through one program: [validation; test]
    n_val = len(val_pairs["chosen_ids"])
    held_out = {k: np.concatenate([val_pairs[k], test_pairs[k]]) for k in val_pairs}

    def stage_cfg(stage):
        return _stage_cfg(config, stage, vocab_size)

    if from_file:  # the reference policy is SFT on the chosen responses of the training pairs
        sft_source = _ChosenAsSequences(pair_source)
    else:
        sft_source = load_preference_source(data_dir, name="bigram_sft", split="train")
    ref = sft.train(stage_cfg(config.sft), os.path.join(workdir, "sft"),
                    train_source=sft_source, seed=seed)

    # reward_model.train with an eval_fn of both held-out splits
    rm_cfg = reward_model.validate(stage_cfg(config.rm))
    rm = _fit_rm(rm_cfg, workdir, common.make_model(rm_cfg["model"], "reward"), None,
                 pair_source, held_out, n_val, seed,
                 None if from_file else test_pairs["label_correct"])

    beta = direct.loss_beta(config.dpo.loss, config.dpo.loss_kwargs)
    pair_eval = _make_dpo_pair_eval(ref["model"].apply, ref["params"], held_out, n_val, beta)
    if from_file:
        eval_fn = pair_eval
    else:
        scores = jnp.asarray(task.token_scores())
        prompts = task.eval_prompts(config.data.num_test_prompts, split_seeds(seed).test)
        policy_eval = make_policy_eval(
            ref["model"].apply, ref["params"], prompts,
            lambda responses: scores[responses].mean(axis=-1),
            num_new_tokens=task.response_len, seed=seed,
            prefix_ids=np.full((len(prompts), 1), BOS_ID, np.int32))

        def eval_fn(params):
            return {**{f"test_{k}": v for k, v in policy_eval(params).items()},
                    **pair_eval(params)}

    dpo = direct.train(
        stage_cfg(config.dpo), os.path.join(workdir, "dpo"), train_source=pair_source,
        ref_params=ref["params"], eval_fn=eval_fn, seed=seed)

    out, rm_row, dpo_row = _selected(workdir, ref, rm, dpo)
    if from_file:
        out["data_skipped"] = float(info["num_skipped"])
    else:
        last = dpo["fit"].history[-1]
        out.update({
            "test_rm_gold_accuracy": rm_row["eval/test_gold_accuracy"],
            "test_dpo_gold_reward": dpo_row["eval/test_gold_reward"],
            "test_ref_gold_reward": dpo_row["eval/test_ref_gold_reward"],
            "test_dpo_gold_gain": dpo_row["eval/test_gold_gain"],
            "test_dpo_kl_ref": dpo_row["eval/test_kl_ref"],
            # the last step, for comparison with the chosen one (not a claim)
            "test_dpo_gold_reward_last_step": last["eval/test_gold_reward"],
            "test_dpo_kl_ref_last_step": last["eval/test_kl_ref"],
        })
    return out


def _selected(workdir: str, ref, rm, dpo):
    """The RM's and DPO's steps, chosen on validation pairs only, and the held-out metrics of
    the chosen steps (selection.json records the choice); returns (metrics, rm row, dpo row)."""
    rm_row, rm_record = _choose_step(rm["fit"].history, "eval/val_label_accuracy")
    dpo_row, dpo_record = _choose_step(dpo["fit"].history, "eval/val_pair_accuracy")
    if jax.process_index() == 0:
        with open(os.path.join(workdir, "selection.json"), "w") as f:
            json.dump({"rm": rm_record, "dpo": dpo_record}, f, indent=1)
    out = {
        "rm_chosen_step": rm_row["step"],
        "val_rm_label_accuracy": rm_row["eval/val_label_accuracy"],
        "test_rm_label_accuracy": rm_row["eval/test_label_accuracy"],
        "dpo_chosen_step": dpo_row["step"],
        "val_dpo_pair_accuracy": dpo_row["eval/val_pair_accuracy"],
        "test_dpo_pair_accuracy": dpo_row["eval/test_pair_accuracy"],
    }
    if ref is not None:
        out["sft_nll"] = ref["metrics"]["nll"]
    return out, rm_row, dpo_row


def _fit_rm(rm_cfg, workdir, model, init_params, pair_source, held_out, n_val, seed,
            gold_better_test=None, chunk: int = 0):
    """The BT reward model with the held-out eval (label accuracy on [validation; test])."""
    return common.fit_recipe(
        rm_cfg, os.path.join(workdir, "rm"), model=model, init_params=init_params,
        loss_fn=reward_model.make_reward_loss(model.apply, rm_cfg["loss"],
                                              rm_cfg["loss_kwargs"]),
        train_source=pair_source, seed=seed, desc="reward model",
        eval_fn=_make_rm_eval(model.apply, held_out, n_val, gold_better_test, chunk))


def _run_real(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
    """`:real`: SFT (or the checkpoint) as the reference, a BT RM on the checkpoint's backbone
    and DPO, on the pairs of `data.path` (module docstring)."""
    import dataclasses

    seed = int(config.seed)
    tok = real.tokenizer(config)
    data = real.pair_data(config, tok)
    n_val = len(data["validation"]["chosen_ids"])
    held_out = {k: np.concatenate([data["validation"][k], data["test"][k]])
                for k in data["validation"]}
    ref = None
    if config.reference == "sft":
        ref = sft.train(_real_stage_cfg(config, config.sft), os.path.join(workdir, "sft"),
                        train_source=_ChosenAsSequences(data["train"]), seed=seed)
    rm_cfg = reward_model.validate(_real_stage_cfg(config, config.rm))
    rm_model, rm_init = pretrained.recipe_model(rm_cfg, "reward", seed=seed)
    chunk = int(config.data.eval_batch_size)
    rm = _fit_rm(rm_cfg, workdir, rm_model, rm_init, data["train"], held_out, n_val, seed,
                 chunk=chunk)
    dpo_cfg = _real_stage_cfg(config, config.dpo)
    # the reference (and DPO's start): the SFT policy, or the checkpoint (one import)
    model, ref_params = ((ref["model"], ref["params"]) if ref is not None else
                         pretrained.load_pretrained(dpo_cfg["model"], "lm"))
    dpo_cfg["model"] = {f.name: getattr(model.config, f.name)
                        for f in dataclasses.fields(model.config)}
    beta = direct.loss_beta(config.dpo.loss, config.dpo.loss_kwargs)
    dpo = direct.train(dpo_cfg, os.path.join(workdir, "dpo"), train_source=data["train"],
                       ref_params=ref_params, seed=seed,
                       eval_fn=_make_dpo_pair_eval(model.apply, ref_params, held_out, n_val,
                                                   beta, chunk, model.config.logits_chunk > 0))
    return _selected(workdir, ref, rm, dpo)[0]


def _make_rm_eval(apply_fn, pairs, n_val: int, gold_better_test=None, chunk: int = 0):
    """Jitted `params -> metrics` of a reward model on [validation; test] pairs (the first
    `n_val` are validation): label accuracy on each, and on test the agreement with the gold
    ordering (`gold_better_test` [N_test], 1 where the chosen response has the higher gold).
    `chunk` > 0 scores the pairs in chunks of that many (`real.map_in_chunks`)."""
    inputs = {k: np.asarray(pairs[k]) for k in
              ("chosen_ids", "chosen_mask", "rejected_ids", "rejected_mask")}
    gold = None if gold_better_test is None else np.asarray(gold_better_test, np.float32)

    @jax.jit
    def evaluate(params):
        chosen, rejected = real.map_in_chunks(
            lambda x: reward_model.pair_rewards(apply_fn, params, x), inputs, chunk)
        right = pairwise_accuracy(chosen, rejected)
        out = {"val_label_accuracy": right[:n_val].mean(),
               "test_label_accuracy": right[n_val:].mean()}
        if gold is not None:
            better = chosen[n_val:] > rejected[n_val:]
            out["test_gold_accuracy"] = jnp.where(better, gold, 1.0 - gold).mean()
        return out

    return evaluate


def _make_dpo_pair_eval(apply_fn, ref_params, pairs, n_val: int, beta: float, chunk: int = 0,
                        token_logps: bool = False):
    """`params -> metrics` of the implicit reward beta log(pi / ref) on [validation; test] pairs
    (the first `n_val` are validation): pair accuracy (margin > 0) and mean margin of each.
    `chunk` > 0 scores the pairs in chunks of that many (`real.map_in_chunks`);
    `token_logps` asks the model for token log-probs (a model with `logits_chunk` > 0)."""
    keys = ("chosen_ids", "rejected_ids", "chosen_mask", "rejected_mask",
            "chosen_response_mask", "rejected_response_mask")
    inputs = {k: np.asarray(pairs[k]) for k in keys}

    @jax.jit
    def _evaluate(params, ref_params):
        def logps(x):
            return (*direct.pair_logps(apply_fn, params, x, token_logps=token_logps),
                    *direct.pair_logps(apply_fn, ref_params, x, token_logps=token_logps))

        pc, pr, rc, rr = real.map_in_chunks(logps, inputs, chunk)
        margins = beta * ((pc - rc) - (pr - rr))
        right = (margins > 0).astype(jnp.float32)
        return {"val_pair_accuracy": right[:n_val].mean(),
                "val_pair_margin": margins[:n_val].mean(),
                "test_pair_accuracy": right[n_val:].mean(),
                "test_pair_margin": margins[n_val:].mean()}

    return lambda params: _evaluate(params, ref_params)


def _choose_step(history, key: str):
    """The logged row with the best validation score `key` (max; ties: the earliest step) among
    the evaluated steps of a run, and the `choose_on_validation` record of the choice."""
    rows = {f"step={r['step']}": r for r in history if key in r}
    chosen, record = choose_on_validation(rows, lambda r: r[key])
    record["metric"] = key
    return rows[chosen], record


class _ChosenAsSequences:
    """SFT view of a pair source: the chosen sequences, loss on their responses."""

    def __init__(self, pairs):
        self.pairs = pairs

    def __len__(self):
        return len(self.pairs)

    def __getitem__(self, i):
        r = self.pairs[i]
        return {"input_ids": r["chosen_ids"], "mask": r["chosen_mask"],
                "loss_mask": r["chosen_response_mask"]}


def claims(results) -> list[Claim]:
    res = results["default"]
    if "test_rm_gold_accuracy" not in res["metrics"]:
        return []  # a user file has no gold reward: nothing to check
    threshold = 0.75
    m = {k: v["mean"] for k, v in res["metrics"].items()}
    return [
        protocol.threshold(
            f"BT reward model's test gold accuracy is well above chance (>= {threshold})",
            results, ("default", "test_rm_gold_accuracy"), at_least=threshold, paper=RM_PAPER,
            detail="accuracy against the gold ordering of held-out test pairs, at the logged "
                   "step with the best validation label accuracy "
                   f"(mean chosen step {m['rm_chosen_step']:.0f}); test label accuracy "
                   f"(noisy BT labels) {m['test_rm_label_accuracy']:.3f}"),
        protocol.compare(
            "DPO raises the test gold reward over the reference (SFT) policy", results,
            ("default", "test_dpo_gold_reward"), ("default", "test_ref_gold_reward"),
            at_least=0.0, paper=DPO_PAPER,
            detail="gold reward of one sample per test prompt (same prompts and sampling key "
                   "for both), DPO at the logged step with the best validation implicit-reward "
                   f"pair accuracy (mean chosen step {m['dpo_chosen_step']:.0f}, KL to the "
                   f"reference {m['test_dpo_kl_ref']:.2f} nats; at the last step gold "
                   f"{m['test_dpo_gold_reward_last_step']:.3f}, KL "
                   f"{m['test_dpo_kl_ref_last_step']:.2f}); baseline: the reference policy"),
    ]


def plots(results, workdir: str) -> list[str]:
    """Test gold reward against KL(pi || ref) along DPO training, one curve per seed."""
    from alignax.train.plots import plot_curves
    from alignax.train.writers import read_metrics

    curves = {}
    for variant, res in results.items():
        for seed in res["per_seed"]:
            path = os.path.join(workdir, variant, f"seed_{seed}", "dpo", "metrics.jsonl")
            rows = [r for r in read_metrics(path) if "eval/test_kl_ref" in r]
            if rows:
                curves[f"{variant} seed {seed}"] = (
                    np.array([0.0] + [r["eval/test_kl_ref"] for r in rows]),
                    np.array([rows[0]["eval/test_ref_gold_reward"]]
                             + [r["eval/test_gold_reward"] for r in rows]))
    if not curves:
        return []
    path = os.path.join(workdir, "gold_reward_vs_kl.png")
    plot_curves(curves, path, title="DPO: gold reward vs KL to the reference",
                xlabel="KL(pi || ref) [nats]", ylabel="gold reward of samples")
    return [path]
