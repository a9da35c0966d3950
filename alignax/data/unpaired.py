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

TRL's fixed KL rows (`KLRowsSource`, `alignax.algorithms.kto`'s kl_pairs="dataset", which
`precompute_ref_logps` needs): the donors are fixed once, in dataset order, before any
shuffling, as TRL's `dataset.map(..., batched=True, batch_size=per_device_train_batch_size)`
fixes them: the rows are cut into consecutive blocks of `block_size` (the last block may be
shorter) and the completions rotate by one within each block (`dataset_kl_donors`); each
record then carries its own KL row (`kl_ids`, `kl_mask`, `kl_response_mask` [T], built as
`mismatched_rows` builds it, `kl_row`). A shuffled batch's KL rows are then those of its rows'
fixed donors, which are in general not the batch's own completions (TRL keeps them together
with its sequential sampler); a last block of one row is its own donor, as in TRL.
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


KL_FIELDS = ("kl_ids", "kl_mask", "kl_response_mask")


def dataset_kl_donors(num_rows: int, block_size: int) -> np.ndarray:
    """TRL's fixed donors in dataset order: rows are cut into consecutive blocks of
    `block_size` (the last one has the remaining num_rows % block_size rows, if any) and row n
    of a block of m rows starting at s takes the completion of row s + (n - s - 1) mod m.

    This is `kl_donors` applied block by block, also to a last, shorter block (a block of one
    row is its own donor, as TRL's batched map leaves it).

    Args:
      num_rows: N, the rows of the dataset.
      block_size: rows per block (TRL's per_device_train_batch_size), >= 2.

    Returns:
      donor [N] int32.
    """
    if isinstance(block_size, bool) or not isinstance(block_size, (int, np.integer)) \
            or block_size < 2:
        raise ValueError(f"KL rows: block_size must be an int >= 2, got {block_size!r}")
    if num_rows < 1:
        raise ValueError(f"KL rows: a dataset of {num_rows} rows")
    i = np.arange(num_rows)
    start = (i // block_size) * block_size
    size = np.minimum(block_size, num_rows - start)
    return (start + (i - start - 1) % size).astype(np.int32)


def kl_row(row: Mapping[str, Any], donor: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """The KL row of one record: its prompt followed by `donor`'s completion, truncated to T
    (keep the start) and right-padded; the host-side twin of one row of `mismatched_rows`
    (the same ids, masks and padding, position by position).

    Args:
      row, donor: records with `ids`, `mask`, `response_mask` [T] (`tokenize_unpaired`'s
        layout: the prompt first, then the completion).

    Returns:
      {"kl_ids": [T] (the dtype of row's ids), "kl_mask", "kl_response_mask": [T] int32}.
    """
    ids, donor_ids = np.asarray(row["ids"]), np.asarray(donor["ids"])
    t = ids.shape[-1]
    mask = np.asarray(row["mask"]).astype(np.int32)
    response = np.asarray(row["response_mask"]).astype(np.int32)
    donor_mask = np.asarray(donor["mask"]).astype(np.int32)
    donor_response = np.asarray(donor["response_mask"]).astype(np.int32)
    p = int((mask * (1 - response)).sum())
    pd, cd = int((donor_mask * (1 - donor_response)).sum()), int(donor_response.sum())
    pos = np.arange(t)
    in_prompt = pos < p
    in_comp = (pos >= p) & (pos < p + cd)
    src = np.clip(pd + pos - p, 0, t - 1)
    kl_ids = np.where(in_comp, donor_ids[src], ids).astype(ids.dtype)
    return {"kl_ids": kl_ids, "kl_mask": (in_prompt | in_comp).astype(np.int32),
            "kl_response_mask": in_comp.astype(np.int32)}


class KLRowsSource:
    """A random-access source of unpaired rows that also carry their fixed KL rows.

    Record n is `source[n]` plus `kl_row(source[n], source[donor[n]])`, donor =
    `dataset_kl_donors(len(source), block_size)` (see the module docstring).

    Attributes:
      source: the wrapped source (`len`, `source[i]` -> a row with ids, mask, response_mask).
      block_size: the rows of a rotation block.
      donors: [N] int32.
    """

    def __init__(self, source, block_size: int):
        self.source, self.block_size = source, block_size
        self.donors = dataset_kl_donors(len(source), block_size)

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, i):
        record = self.source[i]
        d = int(self.donors[i])
        return {**record, **kl_row(record, record if d == i else self.source[d])}

    def __getitems__(self, indices):
        indices = [int(i) for i in indices]
        needed = list(dict.fromkeys(indices + [int(self.donors[i]) for i in indices]))
        getitems = getattr(self.source, "__getitems__", None)
        records = getitems(needed) if callable(getitems) else [self.source[i] for i in needed]
        by_index = dict(zip(needed, records))
        return [{**by_index[i], **kl_row(by_index[i], by_index[int(self.donors[i])])}
                for i in indices]
