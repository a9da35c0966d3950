"""Bradley-Terry reward model and DPO on a synthetic language with a known gold reward.

Papers: Ouyang et al. 2022 (arXiv 2203.02155), reward model with the Bradley-Terry loss; Rafailov
et al. 2023 (arXiv 2305.18290), Direct Preference Optimization.

Setting: a random bigram language over 30 tokens (alignax.tasks.language.BigramLanguage); the gold
reward of a response is its mean token score; preference labels are Bradley-Terry draws from it.
Per seed: (1) SFT a tiny Llama-style policy on the language (the reference), (2) train a BT reward
model on the preference pairs and measure its accuracy on held-out pairs against the gold ordering,
(3) train a DPO policy from the reference on the same pairs and measure the gold reward of its
samples and its KL to the reference.

Claims checked: the reward model's held-out gold accuracy is well above chance (>= 0.75), and DPO
raises the gold reward over the reference on every seed.

    alignax run experiments/bt_dpo_synthetic.py            # full setting, 3 seeds
    alignax run experiments/bt_dpo_synthetic.py:smoke      # seconds, for the tests

The same pipeline runs on a preference file (JSONL/Parquet, prompt/chosen/rejected strings or chat
messages) with a byte-level tokenizer; there is no gold reward then, so the claims are not checked
and the metrics are held-out pair accuracies (last `data.eval_fraction` of the file):

    alignax run experiments/bt_dpo_synthetic.py --config.data.path=prefs.jsonl \
        --config.model.max_len=512 --config.data.skip_invalid=True
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from alignax.algorithms import direct, reward_model, sft
from alignax.algorithms.common import stack_records
from alignax.data import (ByteTokenizer, DataError, load_preference_source, read_preferences,
                          write_preference_dataset)
from alignax.data.tokenize import tokenize_pairs
from alignax.eval.policy import make_policy_eval
from alignax.experiment import Claim, is_smoke, metric
from alignax.tasks.language import BOS_ID, BigramLanguage


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    smoke = is_smoke(arg)
    c = ml_collections.ConfigDict()
    c.seeds = [0] if smoke else [0, 1, 2]
    c.task = dict(vocab_size=32, prompt_len=4, response_len=12, concentration=0.5,
                  label_temperature=0.05, seed=0)
    c.data = dict(num_sft=4096 if not smoke else 256, num_pairs=4096 if not smoke else 128,
                  num_eval_pairs=512 if not smoke else 64,
                  num_eval_prompts=256 if not smoke else 32,
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


def _write_data(task: BigramLanguage, data_cfg, seed: int, data_dir: str) -> None:
    t = task.seq_len
    seq_features = {"input_ids": ((t,), np.int32)}
    pair_features = {k: ((t,), np.int32) for k in (
        "chosen_ids", "rejected_ids", "chosen_mask", "rejected_mask", "chosen_response_mask",
        "rejected_response_mask")}
    pair_features.update({k: ((), np.float32) for k in
                          ("chosen_gold", "rejected_gold", "label_correct")})
    write_preference_dataset(
        data_dir, name="bigram_sft",
        splits={"train": task.sft_examples(data_cfg.num_sft, seed)}, features=seq_features)
    pairs = [_pair_record(task, ex) for ex in task.preference_examples(data_cfg.num_pairs, seed)]
    eval_pairs = [_pair_record(task, ex)
                  for ex in task.preference_examples(data_cfg.num_eval_pairs, 10_000 + seed)]
    write_preference_dataset(
        data_dir, name="bigram_preferences",
        splits={"train": pairs, "eval": eval_pairs}, features=pair_features)


def _file_data(config, data_dir: str) -> dict:
    """Reads, validates and tokenizes a user preference file into train/eval pair datasets."""
    tok = ByteTokenizer()
    t = int(config.model.max_len)
    result = read_preferences(config.data.path, skip_invalid=config.data.skip_invalid,
                              max_length=t - 2, tokenize=tok.encode)
    if jax.process_index() == 0 and result.num_skipped:
        print(f"alignax: {result.summary()}", flush=True)
    pairs = tokenize_pairs(result.records, tok, max_length=t)
    n_eval = max(1, int(round(config.data.eval_fraction * len(pairs))))
    if len(pairs) - n_eval < 1:
        raise DataError(f"{config.data.path}: {len(pairs)} valid pairs are too few to hold out "
                        f"{n_eval} for evaluation")
    features = {k: ((t,), np.int32) for k in pairs[0]}
    if jax.process_index() == 0 and not os.path.exists(os.path.join(data_dir, "COMPLETE")):
        write_preference_dataset(data_dir, name="file_preferences", features=features,
                                 splits={"train": pairs[:-n_eval], "eval": pairs[-n_eval:]})
        open(os.path.join(data_dir, "COMPLETE"), "w").close()
    return {"vocab_size": tok.vocab_size, "num_skipped": result.num_skipped,
            "name": "file_preferences"}


def _stage_cfg(config, stage, vocab_size: int | None = None) -> dict:
    model_cfg = config.model.to_dict()
    if vocab_size is not None:
        model_cfg["vocab_size"] = vocab_size
    return {**stage.to_dict(), "model": model_cfg, "mesh": config.mesh.to_dict()}


def validate(config: ml_collections.ConfigDict) -> None:
    """Checks the three stages' configs and the data file before anything trains."""
    sft.validate(_stage_cfg(config, config.sft))
    reward_model.validate(_stage_cfg(config, config.rm))
    direct.validate(_stage_cfg(config, config.dpo))
    if config.data.path and not os.path.exists(config.data.path):
        raise ValueError(f"data.path {config.data.path!r} does not exist")
    if not 0 < config.data.eval_fraction < 1:
        raise ValueError(f"data.eval_fraction={config.data.eval_fraction} must be in (0, 1)")


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
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
    eval_pairs = stack_records(load_preference_source(data_dir, name=pairs_name, split="eval"))

    def stage_cfg(stage):
        return _stage_cfg(config, stage, vocab_size)

    if from_file:  # the reference policy is SFT on the chosen responses of the training pairs
        sft_source = _ChosenAsSequences(pair_source)
    else:
        sft_source = load_preference_source(data_dir, name="bigram_sft", split="train")
    ref = sft.train(stage_cfg(config.sft), os.path.join(workdir, "sft"),
                    train_source=sft_source, seed=seed)

    rm = reward_model.train(
        stage_cfg(config.rm), os.path.join(workdir, "rm"), train_source=pair_source,
        eval_pairs=eval_pairs,
        gold_better=None if from_file else eval_pairs["label_correct"], seed=seed)

    beta = direct.loss_beta(config.dpo.loss, config.dpo.loss_kwargs)
    pair_eval = direct.make_pair_eval(ref["model"].apply, ref["params"], eval_pairs, beta=beta)
    if from_file:
        eval_fn = pair_eval
    else:
        scores = jnp.asarray(task.token_scores())
        prompts = task.eval_prompts(config.data.num_eval_prompts, seed)
        policy_eval = make_policy_eval(
            ref["model"].apply, ref["params"], prompts,
            lambda responses: scores[responses].mean(axis=-1),
            num_new_tokens=task.response_len, seed=seed,
            prefix_ids=np.full((len(prompts), 1), BOS_ID, np.int32))

        def eval_fn(params):
            return {**policy_eval(params), **pair_eval(params)}

    dpo = direct.train(
        stage_cfg(config.dpo), os.path.join(workdir, "dpo"), train_source=pair_source,
        ref_params=ref["params"], eval_fn=eval_fn, seed=seed)

    out = {
        "sft_nll": ref["metrics"]["nll"],
        "rm_label_accuracy": rm["eval"]["eval/label_accuracy"],
        "dpo_pair_accuracy": dpo["eval"]["eval/pair_accuracy"],
    }
    if from_file:
        out["data_skipped"] = float(info["num_skipped"])
    else:
        out.update({
            "rm_gold_accuracy": rm["eval"]["eval/gold_accuracy"],
            "dpo_gold_reward": dpo["eval"]["eval/gold_reward"],
            "ref_gold_reward": dpo["eval"]["eval/ref_gold_reward"],
            "dpo_gold_gain": dpo["eval"]["eval/gold_gain"],
            "dpo_kl_ref": dpo["eval"]["eval/kl_ref"],
        })
    return out


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
    if "rm_gold_accuracy" not in res["metrics"]:
        return []  # a user file has no gold reward: nothing to check
    acc = metric(results, "default", "rm_gold_accuracy")
    gains = [m["dpo_gold_gain"] for m in res["per_seed"].values()]
    threshold = 0.75
    return [
        Claim(
            name=f"BT reward model's held-out gold accuracy is well above chance (>= {threshold})",
            passed=acc >= threshold,
            measured={"rm_gold_accuracy": acc},
        ),
        Claim(
            name="DPO raises the gold reward over the reference policy on every seed",
            passed=all(g > 0 for g in gains),
            measured={"dpo_gold_gain_mean": float(np.mean(gains)),
                      "dpo_gold_gain_min": float(np.min(gains)),
                      "dpo_kl_ref": metric(results, "default", "dpo_kl_ref")},
        ),
    ]


def plots(results, workdir: str) -> list[str]:
    """Gold reward against KL(pi || ref) along DPO training, one curve per seed."""
    from alignax.train.plots import plot_curves
    from alignax.train.writers import read_metrics

    curves = {}
    for variant, res in results.items():
        for seed in res["per_seed"]:
            path = os.path.join(workdir, variant, f"seed_{seed}", "dpo", "metrics.jsonl")
            rows = [r for r in read_metrics(path) if "eval/kl_ref" in r]
            if rows:
                curves[f"{variant} seed {seed}"] = (
                    np.array([0.0] + [r["eval/kl_ref"] for r in rows]),
                    np.array([rows[0]["eval/ref_gold_reward"]] + [r["eval/gold_reward"]
                                                                   for r in rows]))
    if not curves:
        return []
    path = os.path.join(workdir, "gold_reward_vs_kl.png")
    plot_curves(curves, path, title="DPO: gold reward vs KL to the reference",
                xlabel="KL(pi || ref) [nats]", ylabel="gold reward of samples")
    return [path]
