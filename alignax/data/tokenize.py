"""Text preference records -> fixed-length token arrays in the pair format the recipes read.

A sequence is `[bos] + prompt + response + [eos]`, right-padded with pad ids to `max_length`:

- `*_ids` [T] int32, `*_mask` [T] (1 on real tokens), `*_response_mask` [T] (1 on the response
  tokens and the eos: the tokens whose log-probs a policy objective counts).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from alignax.data.errors import DataError
from alignax.data.readers import PreferenceRecord


def tokenize_pair(record: PreferenceRecord, tokenizer, *, max_length: int) -> dict[str, np.ndarray]:
    """One PreferenceRecord -> dict of [max_length] arrays (see module docstring)."""
    prompt = [tokenizer.bos_id] + tokenizer.encode(record.prompt)
    out = {}
    for side, text in (("chosen", record.chosen), ("rejected", record.rejected)):
        response = tokenizer.encode(text) + [tokenizer.eos_id]
        n = len(prompt) + len(response)
        if n > max_length:
            raise DataError(f"{side}: {n} tokens with bos/eos exceed max_length={max_length}")
        ids = np.full(max_length, tokenizer.pad_id, np.int32)
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
    out = []
    for i, record in enumerate(records):
        if not isinstance(record, PreferenceRecord):
            raise DataError(f"record {i} is a {type(record).__name__}, expected a preference pair")
        out.append(tokenize_pair(record, tokenizer, max_length=max_length))
    return out
