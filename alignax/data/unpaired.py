"""Unpaired preference records (KTO) -> fixed-length token rows, and TRL's mismatched KL rows.

A row is one (prompt, completion, label) example (`alignax.data.hf_datasets.UnpairedRecord`,
TRL's unpaired format), right-padded to `max_length` = T:

- `ids` [T] int32, `mask` [T] int32 (1 on real tokens), `response_mask` [T] int32 (1 on the
  completion tokens: the ones whose log-probs KTO sums), `label` [] bool (desirable or not).

The token layout is `alignax.data.tokenize.tokenize_pair`'s for one side:

- standard records: `[bos] + prompt + completion + [eos]` (no bos when the tokenizer has none;
  `special_ids` decides), prompt and completion encoded separately. TRL's KTOTrainer appends the
  eos as text and encodes prompt + completion as one string, the completion starting where the
  two token sequences diverge; the ids are the same whenever the tokenizer does not merge tokens
  across the prompt/completion boundary (end the prompt on a token boundary, e.g. a space or a
  newline, as TRL also advises).
- conversational records (`record.extras["messages"] = {"prompt": [...], "completion":
  [...]}`, as `hf_datasets` stores them) with a tokenizer that has its own chat template: the
  prompt messages rendered with `add_generation_prompt=True`, the whole conversation rendered
  without it, both tokenised without added specials; the prompt is their longest common prefix
  and the completion the rest of the conversation (TRL 1.16 `KTOTrainer._prepare_dataset`,
  `common_prefix_length`); nothing is added, the template closes the turn itself.

An example longer than T is a `DataError` naming the field "completion" (TRL would truncate it).
A dataset streams as `HFSource(dataset, functools.partial(tokenize_unpaired, tokenizer=tok,
max_length=T), kinds=(UnpairedRecord,))`, the `train_source` of `alignax.algorithms.kto.train`.

TRL's KL batch (`mismatched_rows`): KTO's reference point z0 = KL(pi || pi_ref) is estimated on
mismatched (prompt, completion) pairs of the same batch. TRL rotates the completions by one
within each batch, (x_1, y_1), ..., (x_n, y_n) -> (x_1, y_n), (x_2, y_1), ..., (x_n, y_{n-1}),
concatenates prompt and donor completion and truncates to max_length (keep the start); the
KL is mean_i [log pi(y_{i-1}|x_i) - log pi_ref(y_{i-1}|x_i)] over the batch, detached, averaged
over processes and clamped at 0 (`alignax.algorithms.kto`). Here the rotation is done on the
device from the batch's own rows, so it follows the shuffled batches of the grain pipeline (TRL
precomputes it on the dataset order with a sequential sampler).
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import jax.numpy as jnp
import numpy as np

from alignax.data.errors import DataError
from alignax.data.hf_datasets import UnpairedRecord
from alignax.data.tokenize import _common_prefix, special_ids

ROW_KEYS = ("ids", "mask", "response_mask", "label")


def _uses_template(record, tokenizer, use_chat_template: bool) -> bool:
    messages = record.extras.get("messages") if isinstance(record.extras, Mapping) else None
    return (use_chat_template and isinstance(messages, Mapping) and "completion" in messages
            and getattr(tokenizer, "chat_template", None) is not None)


def _template_ids(messages: Mapping[str, Any], tokenizer) -> tuple[list[int], list[int]]:
    """(prompt, completion) ids of a conversational record (TRL's common-prefix split)."""
    prompt = list(messages["prompt"])
    prompt_ids = list(tokenizer.apply_chat_template(prompt, add_generation_prompt=True,
                                                    tokenize=True))
    full = list(tokenizer.apply_chat_template(prompt + list(messages["completion"]),
                                              tokenize=True))
    n = _common_prefix(prompt_ids, full)
    return prompt_ids[:n], full[n:]


def tokenize_unpaired(record: UnpairedRecord, tokenizer, *, max_length: int,
                      use_chat_template: bool = True) -> dict[str, np.ndarray]:
    """One UnpairedRecord -> `ids`, `mask`, `response_mask` [max_length] int32 and `label` []
    bool (see the module docstring).

    Args:
      record: the example (prompt, completion, label, extras).
      tokenizer: `encode`, `bos_id`/`eos_id`/`pad_id`, and for conversational records
        `chat_template`/`apply_chat_template` (as for `tokenize_pair`).
      max_length: T, the padded length.
      use_chat_template: render a conversational record with the tokenizer's own chat template
        when it has one; False: `[bos] + prompt + completion + [eos]` with the record's prompt
        string (the minimal template's).

    Raises:
      DataError: the tokenizer has no eos; the example is longer than `max_length` (field
        "completion").
    """
    bos, eos, pad = special_ids(tokenizer)
    if _uses_template(record, tokenizer, use_chat_template):
        prompt, completion = _template_ids(record.extras["messages"], tokenizer)
        specials = "the chat template"
    else:
        prompt = ([] if bos is None else [bos]) + list(tokenizer.encode(record.prompt))
        completion = list(tokenizer.encode(record.completion)) + [eos]
        specials = "eos" if bos is None else "bos/eos"
    n = len(prompt) + len(completion)
    if n > max_length:
        raise DataError(f"completion: {n} tokens with {specials} exceed max_length={max_length}",
                        field="completion")
    ids = np.full(max_length, pad, np.int32)
    ids[:n] = prompt + completion
    mask = np.zeros(max_length, np.int32)
    mask[:n] = 1
    response_mask = np.zeros(max_length, np.int32)
    response_mask[len(prompt):n] = 1
    return {"ids": ids, "mask": mask, "response_mask": response_mask,
            "label": np.asarray(bool(record.label))}


def tokenize_unpaireds(records: Sequence[UnpairedRecord], tokenizer, *, max_length: int,
                       use_chat_template: bool = True) -> list[dict[str, np.ndarray]]:
    """`tokenize_unpaired` over records; only UnpairedRecords are accepted."""
    special_ids(tokenizer)  # a tokenizer without eos fails once, before any record
    out = []
    for i, record in enumerate(records):
        if not isinstance(record, UnpairedRecord):
            raise DataError(f"record {i} is a {type(record).__name__}, expected an unpaired "
                            f"(prompt, completion, label) example")
        out.append(tokenize_unpaired(record, tokenizer, max_length=max_length,
                                     use_chat_template=use_chat_template))
    return out


def kl_donors(batch_size: int, group_size: int | None = None) -> np.ndarray:
    """Which row gives its completion to each KL row: donor[i] = the previous row of i's group,
    the first row of a group taking the group's last (TRL's rotation by +1).

    Args:
      batch_size: B.
      group_size: rows rotate within consecutive groups of this size (TRL rotates within each
        per-device batch of `per_device_train_batch_size`); None: the whole batch.

    Returns:
      donor [B] int32.
    """
    g = batch_size if group_size is None else int(group_size)
    if g < 2 or batch_size % g:
        raise ValueError(f"KL rows: a group of {g} rows in a batch of {batch_size}: need a "
                         f"divisor of the batch of at least 2 (with one row the mismatched "
                         f"pair is the example itself)")
    i = np.arange(batch_size)
    return ((i // g) * g + (i % g - 1) % g).astype(np.int32)


def mismatched_rows(ids, mask, response_mask, *, group_size: int | None = None):
    """TRL's KL rows: row i's prompt followed by its donor's completion (`kl_donors`), truncated
    to T (keep the start) and right-padded.

    Rows are right-padded with the prompt first (`tokenize_unpaired`'s layout): the prompt of a
    row is its valid tokens outside the response, the completion its response tokens. Works
    under jit (the shapes are static); padding positions keep the row's own ids (masked).

    Args:
      ids, mask, response_mask: [B, T] rows of one batch.
      group_size: as for `kl_donors`.

    Returns:
      (kl_ids, kl_mask, kl_response_mask) [B, T], int32 like the inputs' ids and masks.
    """
    ids = jnp.asarray(ids)
    b, t = ids.shape
    mask = jnp.asarray(mask).astype(jnp.int32)
    response = jnp.asarray(response_mask).astype(jnp.int32)
    donor = jnp.asarray(kl_donors(b, group_size))
    prompt_len = (mask * (1 - response)).sum(-1)  # [B]
    comp_len = response.sum(-1)
    p, pd, cd = prompt_len[:, None], prompt_len[donor][:, None], comp_len[donor][:, None]
    pos = jnp.arange(t)[None, :]
    in_prompt = pos < p
    in_comp = (pos >= p) & (pos < p + cd)
    src = jnp.clip(pd + pos - p, 0, t - 1)
    comp_ids = jnp.take_along_axis(ids[donor], src, axis=1)
    kl_ids = jnp.where(in_comp, comp_ids, ids)
    return (kl_ids, (in_prompt | in_comp).astype(jnp.int32), in_comp.astype(jnp.int32))
