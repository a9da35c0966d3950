"""Text preference records -> fixed-length token arrays in the pair format the recipes read.

A sequence is `[bos] + prompt + response + [eos]`, right-padded with pad ids to `max_length`:

- `*_ids` [T] int32, `*_mask` [T] (1 on real tokens), `*_response_mask` [T] (1 on the response
  tokens and the eos: the tokens whose log-probs a policy objective counts).

Special tokens come from the tokenizer's `bos_id`, `eos_id` and `pad_id` attributes (see
`special_ids`); any of them may be None (e.g. Qwen2's tokenizer has no bos token):

- no bos (`bos_id` None): nothing is prepended, the sequence starts with the prompt;
- no eos (`eos_id` None): a `DataError`, since a reward head reads, and a policy learns to stop
  at, the eos; give the tokenizer one (e.g. `HFTokenizer.from_file(path, eos_token=...)`);
- no pad (`pad_id` None, or no such attribute): padding uses the eos id (padding is masked out,
  so its id only has to be a valid token).

`check_token_ids` checks token arrays against a model (ids inside its vocabulary, sequences no
longer than its learned position table) before they reach it: out-of-range ids are not an error
inside jit, the embedding lookup returns NaN or a clamped row instead.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from alignax.data.errors import DataError
from alignax.data.readers import PreferenceRecord


def special_ids(tokenizer) -> tuple[int | None, int, int]:
    """The (bos, eos, pad) ids `tokenize_pair` uses (see the module docstring).

    Returns:
      bos (None: no bos is prepended), eos, and pad (the tokenizer's `pad_id`, else eos).

    Raises:
      DataError: the tokenizer has no eos (`eos_id` None or missing).
    """
    bos = getattr(tokenizer, "bos_id", None)
    eos = getattr(tokenizer, "eos_id", None)
    if eos is None:
        raise DataError(f"tokenizer {type(tokenizer).__name__} has no eos token (eos_id is None): "
                        f"every sequence ends with eos; set eos_token in the tokenizer's "
                        f"tokenizer_config.json or pass HFTokenizer.from_file(path, "
                        f"eos_token=...)")
    pad = getattr(tokenizer, "pad_id", None)
    return bos, eos, eos if pad is None else pad


def tokenize_pair(record: PreferenceRecord, tokenizer, *, max_length: int) -> dict[str, np.ndarray]:
    """One PreferenceRecord -> dict of [max_length] arrays (see module docstring).

    Raises:
      DataError: the tokenizer has no eos; a side is longer than `max_length` (its `field` is
        "chosen" or "rejected").
    """
    bos, eos, pad = special_ids(tokenizer)
    prompt = ([] if bos is None else [bos]) + list(tokenizer.encode(record.prompt))
    specials = "eos" if bos is None else "bos/eos"
    out = {}
    for side, text in (("chosen", record.chosen), ("rejected", record.rejected)):
        response = list(tokenizer.encode(text)) + [eos]
        n = len(prompt) + len(response)
        if n > max_length:
            raise DataError(f"{side}: {n} tokens with {specials} exceed max_length={max_length}",
                            field=side)
        ids = np.full(max_length, pad, np.int32)
        ids[:n] = prompt + response
        mask = np.zeros(max_length, np.int32)
        mask[:n] = 1
        response_mask = np.zeros(max_length, np.int32)
        response_mask[len(prompt):n] = 1
        out[f"{side}_ids"], out[f"{side}_mask"] = ids, mask
        out[f"{side}_response_mask"] = response_mask
    return out


def tokenize_pairs(records: Sequence[PreferenceRecord], tokenizer, *,
                   max_length: int) -> list[dict[str, np.ndarray]]:
    """`tokenize_pair` over records; only PreferenceRecords are accepted."""
    special_ids(tokenizer)  # a tokenizer without eos fails once, before any record
    out = []
    for i, record in enumerate(records):
        if not isinstance(record, PreferenceRecord):
            raise DataError(f"record {i} is a {type(record).__name__}, expected a preference pair")
        out.append(tokenize_pair(record, tokenizer, max_length=max_length))
    return out


def check_token_ids(ids, vocab_size: int, max_len: int | None = None, *,
                    where: str = "token ids") -> None:
    """Checks token ids against a model before they are fed to it (outside jit: numpy only).

    Args:
      ids: an int array [..., T], or a dict (e.g. one `tokenize_pair` row or a batch) whose keys
        ending in "_ids" hold such arrays (other keys are ignored).
      vocab_size: the model's vocabulary size; every id must lie in [0, vocab_size).
      max_len: the model's learned position table (None for RoPE models, which have none); the
        sequence length T (the last axis, padding included) must be <= max_len.
      where: what the ids are, to start the message (e.g. "prefs.jsonl:7" or a file name).

    Raises:
      DataError: one line, `<where>: token id 300 in chosen_ids is outside the model's
        vocabulary [0, 259) ...` or `<where>: sequence length 128 exceeds the model's
        max_len=96 ...`.
    """
    if isinstance(ids, Mapping):
        arrays = {k: v for k, v in ids.items() if str(k).endswith("_ids")}
        if not arrays:
            raise ValueError(f"{where}: no '*_ids' entries to check among {sorted(ids)}")
    else:
        arrays = {"": ids}
    for key, value in arrays.items():
        value = np.asarray(value)
        if not np.issubdtype(value.dtype, np.integer):
            raise ValueError(f"{where}: token ids{' ' + key if key else ''} must be integers, "
                             f"got {value.dtype}")
        name = f" in {key}" if key else ""
        if max_len is not None and value.ndim and value.shape[-1] > max_len:
            raise DataError(f"{where}: sequence length {value.shape[-1]}{name} exceeds the "
                            f"model's max_len={max_len} (its learned position table)")
        if value.size and (value.max() >= vocab_size or value.min() < 0):
            bad = int(value.max()) if value.max() >= vocab_size else int(value.min())
            raise DataError(f"{where}: token id {bad}{name} is outside the model's vocabulary "
                            f"[0, {vocab_size}) (does the tokenizer match the model?)")
