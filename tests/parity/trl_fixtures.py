"""Shared fixtures of the TRL parity tests: a tiny random Qwen2-style checkpoint, a word-level
tokenizer trained in memory, 32 preference pairs, and a one-step TRL run that records what the
trainer computed (its collated batch, its loss and the gradients before the optimizer step).

Only the tests import this module, after `pytest.importorskip("trl")`.
"""

from __future__ import annotations

import jax
import numpy as np
import torch
import transformers
from tokenizers import Tokenizer, models, pre_tokenizers, trainers

from alignax.data import HFTokenizer
from alignax.data.hf_datasets import parse_hf_row
from alignax.data.tokenize import tokenize_pair
from alignax.models.hf import _export_tensors, import_hf

EOS, PAD = "<|im_end|>", "<|endoftext|>"
SPECIALS = [PAD, "<|im_start|>", EOS, "[UNK]"]
WORDS = ("the cat dog sat ran on under a mat log rug big small red blue quick slow fox jumped "
         "over what where is was who why how tell me about story joke good bad answer yes no "
         "system user assistant You are Qwen created by Alibaba Cloud helpful , .").split()
MODEL = dict(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
             num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
             rms_norm_eps=1e-6, attention_dropout=0.0, tie_word_embeddings=False)
N_PAIRS = 32
RTOL = 1e-4  # the bound (relative, fp32)


def _sentence(rng, low, high):
    return " ".join(rng.choice(WORDS[:-14], size=int(rng.integers(low, high))))


def standard_pairs(seed: int = 0) -> list[dict]:
    """32 pairs in TRL's standard format: prompt, chosen, rejected strings (responses of 1-8 words,
    so the pairs differ in length and LD-DPO's tail is not empty)."""
    rng = np.random.default_rng(seed)
    return [{"prompt": _sentence(rng, 2, 7), "chosen": " " + _sentence(rng, 1, 9),
             "rejected": " " + _sentence(rng, 1, 9)} for _ in range(N_PAIRS)]


def conversational_pairs(seed: int = 0) -> list[dict]:
    """The same pairs in TRL's conversational format (explicit prompt, one user message)."""
    return [{"prompt": [{"role": "user", "content": p["prompt"]}],
             "chosen": [{"role": "assistant", "content": p["chosen"].strip()}],
             "rejected": [{"role": "assistant", "content": p["rejected"].strip()}]}
            for p in standard_pairs(seed)]


def write_tokenizer(path, chat_template: str | None = None):
    """A word-level tokenizer (whitespace/punctuation split, 48 entries, Qwen's special tokens:
    eos <|im_end|>, pad <|endoftext|>, no bos) saved as a transformers fast tokenizer."""
    raw = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    raw.pre_tokenizer = pre_tokenizers.Whitespace()
    raw.train_from_iterator([" ".join(WORDS)], trainers.WordLevelTrainer(special_tokens=SPECIALS))
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=raw, eos_token=EOS,
                                                pad_token=PAD, chat_template=chat_template)
    fast.save_pretrained(path)
    return fast


def write_checkpoint(path, tokenizer, *, seed: int, kind: str = "lm"):
    """A random fp32 Qwen2 causal LM (kind "lm") or Qwen2ForSequenceClassification with one label
    (kind "reward"), norms and biases perturbed so they matter, saved with safetensors."""
    torch.manual_seed(seed)
    cfg = transformers.Qwen2Config(**MODEL, eos_token_id=tokenizer.eos_token_id,
                                   pad_token_id=tokenizer.pad_token_id, num_labels=1)
    cls = {"lm": transformers.AutoModelForCausalLM,
           "reward": transformers.AutoModelForSequenceClassification}[kind]
    model = cls.from_config(cfg)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name or name.endswith("bias"):
                p.add_(0.3 * torch.randn_like(p))
            if name == "score.weight":  # a larger head than TRL's init, so rewards spread out
                p.normal_(0.0, 0.5)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return model


class _Recorder(transformers.TrainerCallback):
    """Stores the gradients the optimizer is about to apply (after gradient clipping, which the
    tests switch off with max_grad_norm=1e9: the clip coefficient is then exactly 1)."""

    def __init__(self, out):
        self.out = out

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        self.out["grads"] = {n: p.grad.detach().double().numpy().copy()
                             for n, p in model.named_parameters() if p.grad is not None}


def run_one_step(trainer_cls, config_cls, dataset, tokenizer, *, output_dir, model_kwargs,
                 before_train=None, **config):
    """One optimizer step of a TRL trainer on the whole dataset as one batch, rows in the
    dataset's order (sequential sampler).

    Returns:
      dict with `inputs` (the collated batch the trainer's compute_loss received, numpy), `loss`
      (the value compute_loss returned), `grads` ({HF parameter name: float64 array}), `logs`
      (the trainer's first log entry: its metrics and grad_norm) and `trainer`.
      `model_kwargs` are the trainer's model arguments (`model`, `ref_model`, ...);
      `before_train(trainer)` may patch the trainer before its step.
    """
    out: dict = {}
    config.setdefault("per_device_train_batch_size", len(dataset))
    args = config_cls(output_dir=str(output_dir),
                      max_steps=1, learning_rate=1e-3, max_grad_norm=1e9, report_to="none",
                      logging_steps=1, save_strategy="no", use_cpu=True, bf16=False,
                      disable_tqdm=True, seed=0, train_sampling_strategy="sequential",
                      **config)
    trainer = trainer_cls(args=args, train_dataset=dataset, processing_class=tokenizer,
                          callbacks=[_Recorder(out)], **model_kwargs)
    compute_loss = trainer.compute_loss

    def recording(model, inputs, *args_, **kwargs):
        out["inputs"] = {k: v.detach().clone().numpy() for k, v in inputs.items()
                         if isinstance(v, torch.Tensor)}
        loss = compute_loss(model, inputs, *args_, **kwargs)
        out["loss"] = float(loss.detach())
        return loss

    trainer.compute_loss = recording
    if before_train is not None:
        before_train(trainer)
    trainer.train()
    out["logs"] = trainer.state.log_history[0]
    out["trainer"] = trainer
    return out


def grad_report(ours: dict, theirs: dict) -> dict:
    """Max abs / relative (to the tensor's max |g|) gradient differences over HF-named tensors,
    and the global norms of both."""
    assert set(ours) == set(theirs), set(ours) ^ set(theirs)
    diffs = {n: np.abs(np.asarray(ours[n], np.float64) - g).max() for n, g in theirs.items()}
    abs_diff = float(max(diffs.values()))
    rels = {n: float(diffs[n] / max(np.abs(g).max(), 1e-30)) for n, g in theirs.items()}
    rel = max(rels.values())
    norm_ours = float(np.sqrt(sum((np.asarray(v, np.float64) ** 2).sum() for v in ours.values())))
    norm_theirs = float(np.sqrt(sum((g ** 2).sum() for g in theirs.values())))
    return {"max_abs": abs_diff, "max_rel": rel, "worst": max(rels, key=rels.get),
            "norm_ours": norm_ours, "norm_theirs": norm_theirs}


def rel(a, b) -> float:
    """|a - b| / |b| (b the TRL value)."""
    return abs(float(a) - float(b)) / max(abs(float(b)), 1e-12)


def policy_and_reference(root, chat_template: str | None = None):
    """Tokenizer, policy (seed 0) and reference (seed 1) checkpoints under `root`, and their
    alignax imports: (tokenizer, model, params, ref_params)."""
    tokenizer = write_tokenizer(root / "tokenizer", chat_template=chat_template)
    write_checkpoint(root / "policy", tokenizer, seed=0)
    write_checkpoint(root / "ref", tokenizer, seed=1)
    model, params = import_hf(str(root / "policy"))
    _, ref_params = import_hf(str(root / "ref"))
    return tokenizer, model, params, ref_params


def hf_grads(model, grads, kind: str = "lm") -> dict:
    """alignax gradients as {HF Qwen2 parameter name: array} (the export name map)."""
    return dict(_export_tensors(model.config, kind, jax.device_get(grads), "qwen2"))


def assert_same_tokens(records, folder, batch, *, response: bool = True):
    """alignax's own tokenisation of the records (`tokenize_pair` with the folder's tokenizer and
    template) equals the pair batch built from TRL's rows: ids, masks (and response masks)."""
    tok = HFTokenizer.from_file(str(folder))
    t = batch["chosen_ids"].shape[1]
    for i, row in enumerate(records):
        ours = tokenize_pair(parse_hf_row(row), tok, max_length=t)
        for side in ("chosen", "rejected"):
            n = int(batch[f"{side}_mask"][i].sum())
            np.testing.assert_array_equal(ours[f"{side}_mask"], batch[f"{side}_mask"][i])
            np.testing.assert_array_equal(ours[f"{side}_ids"][:n], batch[f"{side}_ids"][i][:n])
            if response:
                np.testing.assert_array_equal(ours[f"{side}_response_mask"],
                                              batch[f"{side}_response_mask"][i])
