"""Small test helpers shared across the suite."""

from __future__ import annotations

import contextlib
import logging

import jax
import numpy as np


@contextlib.contextmanager
def count_compilations(name: str | None = None):
    """Counts XLA compilations inside the block: `with count_compilations("f") as n: ...; n()`.

    Uses jax's own "Finished XLA compilation of jit(<name>)" log records (jax.log_compiles);
    with `name`, only compilations of functions of that name count (creating inputs such as
    `jnp.ones` compiles small programs of its own).
    """
    records = []

    class Handler(logging.Handler):
        def emit(self, record):
            message = record.getMessage()
            if "Finished XLA compilation" in message and (
                    name is None or f"jit({name})" in message):
                records.append(record.getMessage())

    handler = Handler(level=logging.DEBUG)
    logger = logging.getLogger("jax")
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        with jax.log_compiles(True):
            yield lambda: len(records)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)


class ListSource:
    """A random-access data source over a list of records (what grain's MapDataset reads)."""

    def __init__(self, records):
        self.records = records

    def __len__(self):
        return len(self.records)

    def __getitem__(self, i):
        return self.records[i]


def pair_source(seed: int = 0, n: int = 22, t: int = 8, vocab: int = 32) -> ListSource:
    """`n` random preference pairs of length `t` (prompt 1-3 tokens, responses of 1 to t - 4,
    right-padded), in the recipes' pair record format, plus an extra `gold` field."""
    rng = np.random.default_rng(seed)
    records = []
    for _ in range(n):
        prompt, lc, lr = rng.integers(1, 4), rng.integers(1, t - 3), rng.integers(1, t - 3)
        rec = {}
        for side, length in (("chosen", lc), ("rejected", lr)):
            valid = prompt + length
            rec[f"{side}_ids"] = np.where(np.arange(t) < valid, rng.integers(1, vocab, t),
                                          0).astype(np.int32)
            rec[f"{side}_mask"] = (np.arange(t) < valid).astype(np.int32)
            rec[f"{side}_response_mask"] = ((np.arange(t) >= prompt) & (np.arange(t) < valid)
                                            ).astype(np.int32)
        rec["gold"] = np.float32(rng.normal())  # an extra field passes through
        records.append(rec)
    return ListSource(records)


# A tiny Qwen2-style checkpoint with a ChatML WordLevel tokenizer, written without torch
# (alignax's own export_hf): the `:real` configs' smoke tests and anyone needing a checkpoint.
TINY_WORDS = ["<pad>", "<|im_start|>", "<|im_end|>", "system", "user", "assistant"] + [
    f"w{i}" for i in range(26)]  # 32 tokens
CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
          "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def write_tiny_tokenizer(path) -> None:
    """tokenizer.json (WordLevel over TINY_WORDS, whitespace split) and tokenizer_config.json
    (eos <|im_end|>, pad <pad>, the ChatML template) into folder `path`."""
    import json
    import os

    from tokenizers import AddedToken, Tokenizer, models, pre_tokenizers

    os.makedirs(path, exist_ok=True)
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(TINY_WORDS)},
                                     unk_token="<pad>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.add_special_tokens([AddedToken("<|im_start|>", special=True),
                            AddedToken("<|im_end|>", special=True)])
    tok.save(os.path.join(path, "tokenizer.json"))
    with open(os.path.join(path, "tokenizer_config.json"), "w") as f:
        json.dump({"eos_token": "<|im_end|>", "pad_token": "<pad>", "chat_template": CHATML}, f)


def write_tiny_checkpoint(path, *, kind: str = "lm", seed: int = 0, d_model: int = 32,
                          n_layers: int = 2) -> str:
    """A random Qwen2-style checkpoint folder (config.json, model.safetensors and the tiny
    ChatML tokenizer) of `kind` "lm" (Qwen2ForCausalLM) or "reward" (a one-label
    Qwen2ForSequenceClassification, head without bias); returns `path` as a string."""
    from alignax.models.hf import export_hf
    from alignax.models.transformer import TransformerConfig, make_lm, make_reward_model

    cfg = TransformerConfig(vocab_size=len(TINY_WORDS), d_model=d_model, n_layers=n_layers,
                            n_heads=4, n_kv_heads=2, d_ff=48, max_len=128, qkv_bias=True)
    model = (make_lm if kind == "lm" else make_reward_model)(cfg)
    rng = np.random.default_rng(seed)

    def draw(path, leaf):  # numpy, not model.init: nothing to compile
        name = jax.tree_util.keystr(path)
        if "bias" in name:
            return np.zeros(leaf.shape, leaf.dtype)
        if "scale" in name or "norm" in name:
            return np.ones(leaf.shape, leaf.dtype)
        std = 1.0 if "score" in name else 0.1  # a visible reward head
        return (std * rng.standard_normal(leaf.shape)).astype(leaf.dtype)

    params = jax.tree_util.tree_map_with_path(draw, jax.eval_shape(model.init,
                                                                   jax.random.key(0)))
    tok_dir = str(path) + "_tokenizer"
    write_tiny_tokenizer(tok_dir)
    export_hf(model, params, str(path), model_type="qwen2", tokenizer_dir=tok_dir,
              config_extra={"eos_token_id": 2, "pad_token_id": 0})
    return str(path)
