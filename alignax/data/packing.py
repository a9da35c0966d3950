r"""Sequence packing: many variable-length tokenised examples in one fixed-length row.

A packed row of length T holds whole examples back to back, each one a *segment*:

    input_ids [T] int32   the examples' tokens, then `pad_id` up to T
    mask      [T] int32   segment ids: 1..k for the k examples in order, 0 on padding

`mask` is the model's mask argument: with integer segment ids each token attends only to the
earlier tokens of its own segment and positions restart at 0 per segment
(`alignax.models.transformer.positions_from_mask`), so every example is computed exactly as if
it were alone in a padded row. What else a row holds depends on what is packed:

- sequences (SFT; `pack_sequences`): `loss_mask` [T] int32, the example's own loss mask (its
  completion tokens for prompt/completion rows, TRL's `completion_only_loss`; all its tokens
  when it has none). The SFT loss (`alignax.algorithms.sft.make_sft_loss`) reads the next-token
  target of position t only when t and t + 1 lie in the same segment, so a segment's last token
  never predicts the next segment's first one, and the token mean runs over exactly the target
  tokens of the same examples unpacked.
- preference pairs (reward models; `pack_pairs`): pair j's chosen and rejected sequences are the
  adjacent segments 2j + 1 and 2j + 2 of one row, and `chosen_end`, `rejected_end` [S] int32
  hold the position of each side's last token (-1 in the unused slots of S = max pairs per
  row). The reward model is read there (`ScalarRewardModel(..., reward_positions=...)`), which
  is where it pools an unpacked row (its last valid token).
- preference pairs for direct alignment (DPO family; `pack_pairs(..., response=True)`, kind
  "direct_pair"): the reward-model row plus `response_mask` [T] int32, each side's own
  response mask (1 on the tokens whose log-probs count), and, for each name of `pair_fields`,
  an [S] float32 per-pair value (0 in unused slots), e.g. the precomputed
  `ref_chosen_logps` / `ref_rejected_logps` or a loss's per-pair input. The direct loss
  (`alignax.algorithms.direct.packed_pair_logps`) reads a token's log-prob from the previous
  position of the same segment and sums each segment's response tokens, which equals the
  padded row's sum (TRL's DPOConfig `padding_free`).

Example formats (variable length, no padding): a sequence is `{"input_ids": [n],
"loss_mask": [n] (optional)}`; a pair is `{"chosen_ids": [n], "rejected_ids": [m], ...}` (other
keys, e.g. `*_response_mask`, are ignored by `pack_pairs` unless `response=True`; a
"direct_pair" example, `as_example`'s cut of a padded row, keeps its 0-d fields for
`pair_fields`). `unpad_sequence` / `unpad_pair` cut
the fixed-length rows of `tokenize_pair` and the SFT record format down to these;
`pad_example` does the reverse (the fixed-length format back from a cached example).

Bin packing (`plan_bins`): which examples share a row. Two strategies over *windows* of
`window` consecutive examples (bins never span windows, so planning needs only a window's
lengths at a time and a row's examples are near each other in the source):

- "bfd" (default): best-fit decreasing. The window's examples sorted by length, longest first
  (ties: source order), each placed in the open bin whose free space is the smallest that still
  fits it, else in a new bin. This is TRL's default (`SFTConfig.packing_strategy="bfd"`, which
  applies it per `datasets.map` batch, i.e. per window), and it wastes less than first-fit: BFD
  uses at most 11/9 OPT + 6/9 bins (Dosa 2007), and sorting keeps long examples from being
  stranded in nearly empty rows at the end.
- "first_fit": source order, each example in the first open bin (by creation) with room.
  Keeps the examples nearly in source order; use it when order matters (curricula). Its cost
  grows with window x rows per window (100k lengths, window 10000: about 10 s on a loaded
  2-core CPU, against under 1 s for "bfd"; `benchmarks/packing.py`).

An example longer than T is an error (TRL's "bfd" truncates it; here tokenisation already
refuses or truncates at `max_length`, and T defaults to at least that). TRL's "bfd_split" and
"wrapped", which cut examples across rows, are not implemented: they break conversations.

Bins are emitted in creation order; within a bin, examples in the order they were placed.

Sources and iterators (both deterministic, so runs resume exactly):

- `PackedSource(source, length, kind=...)`: a random-access source of packed rows over a
  random-access source of examples (e.g. an `HFSource`, a `TokenCache`): the plan is made once
  at construction from every example's length (`source.lengths()` when the source has it, as a
  `TokenCache` does, else by reading each example once), and `packed[i]` packs bin i. It is what
  the SFT and RM recipes use (`packing.enabled`): `make_batch_iterator` then shuffles packed
  rows, splits them over processes and resumes exactly as for any source (its state counts
  batches).
- `PackIterDataset(parent, length, kind=...)`: a grain `IterDataset` transform that packs a
  stream of examples (any grain `IterDataset`, e.g. `MapDataset.source(...).to_iter_dataset()`)
  window by window with the same plan, so in source order it yields exactly `PackedSource`'s
  rows. Its state is the parent's position at the start of the current window plus the number
  of the window's rows already emitted: restoring re-reads that window (at most `window`
  examples; the parent must be deterministic) and re-plans it, so the open window (the "partial
  bins") is rebuilt exactly without storing any tokens in the checkpoint.

Why not grain's own packers (`grain.experimental.FirstFitPackIterDataset` /
`BestFitPackIterDataset`, grain 0.2.18, read in grain/_src/python/dataset/transformations/
packing.py): they pack each feature independently (a feature's own segment ids and positions),
so they cannot keep a pair's chosen and rejected together nor report the segments' last
positions a reward model pools at; they emit whole batches of `num_packing_bins` rows (our
batches are formed later, by `make_batch_iterator`, over shuffled rows); and they have no
random-access form, which the recipes' shuffled, process-split pipeline reads.
"""

from __future__ import annotations

import bisect
from typing import Any, Callable, Mapping, Sequence

import grain
import numpy as np

STRATEGIES = ("bfd", "first_fit")
KINDS = ("sequence", "pair", "direct_pair")
PAIR_KINDS = ("pair", "direct_pair")  # kinds whose rows have S pair slots


# ----------------------------------------------------------------------------- planning


def _check_positive(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return int(value)


def plan_bins(lengths: Sequence[int], capacity: int, *, strategy: str = "bfd",
              window: int = 1000, max_items: int | None = None,
              offset: int = 0) -> list[list[int]]:
    """Groups examples into bins of total length <= `capacity` (see the module docstring).

    Args:
      lengths: [N] the examples' lengths (tokens; a pair's is len(chosen) + len(rejected)).
      capacity: T, the packed row length.
      strategy: "bfd" (best-fit decreasing) or "first_fit", applied per window.
      window: examples planned together; bins never span two windows.
      max_items: at most this many examples per bin (None: no limit); e.g. the S pair slots of
        a reward-model row.
      offset: added to every returned index (the window's start in a stream).

    Returns:
      Bins in creation order, each a list of example indices (into `lengths`, plus `offset`).

    Raises:
      ValueError: a bad argument, or an example longer than `capacity` (naming its index).
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown packing strategy {strategy!r}; valid: {list(STRATEGIES)}")
    capacity = _check_positive("capacity", capacity)
    window = _check_positive("window", window)
    if max_items is not None:
        max_items = _check_positive("max_items", max_items)
    lengths = [int(n) for n in lengths]
    for i, n in enumerate(lengths):
        if n <= 0 or n > capacity:
            raise ValueError(f"example {i + offset} has length {n}; packing needs 1 <= length <= "
                             f"the row length {capacity}")
    bins: list[list[int]] = []
    for start in range(0, len(lengths), window):
        items = range(start, min(start + window, len(lengths)))
        if strategy == "bfd":
            bins.extend(_best_fit_decreasing(lengths, items, capacity, max_items))
        else:
            bins.extend(_first_fit(lengths, items, capacity, max_items))
    return [[i + offset for i in b] for b in bins] if offset else bins


def _best_fit_decreasing(lengths, items, capacity, max_items) -> list[list[int]]:
    order = sorted(items, key=lambda i: (-lengths[i], i))
    bins: list[list[int]] = []
    free: list[tuple[int, int]] = []  # (free space, bin number), sorted; only bins with room
    for i in order:
        n = lengths[i]
        k = bisect.bisect_left(free, (n, -1))  # the smallest free space >= n (oldest bin on ties)
        if k == len(free):
            bins.append([i])
            slot = (capacity - n, len(bins) - 1)
        else:
            space, b = free.pop(k)
            bins[b].append(i)
            slot = (space - n, b)
        if slot[0] > 0 and (max_items is None or len(bins[slot[1]]) < max_items):
            bisect.insort(free, slot)
    return bins


def _first_fit(lengths, items, capacity, max_items) -> list[list[int]]:
    bins: list[list[int]] = []
    space: list[int] = []
    for i in items:
        n = lengths[i]
        for b, s in enumerate(space):
            if s >= n and (max_items is None or len(bins[b]) < max_items):
                bins[b].append(i)
                space[b] -= n
                break
        else:
            bins.append([i])
            space.append(capacity - n)
    return bins


# ----------------------------------------------------------------------------- examples


def _ids(example: Mapping[str, Any], key: str) -> np.ndarray:
    ids = np.asarray(example[key])
    if ids.ndim != 1:
        raise ValueError(f"{key} must be a 1-d array of one example, got shape {ids.shape}")
    return ids


def sequence_length(example: Mapping[str, Any]) -> int:
    """Tokens of a sequence example: len(input_ids)."""
    return int(_ids(example, "input_ids").shape[0])


def pair_length(example: Mapping[str, Any]) -> int:
    """Tokens of a pair example in a packed row: len(chosen_ids) + len(rejected_ids)."""
    return int(_ids(example, "chosen_ids").shape[0] + _ids(example, "rejected_ids").shape[0])


LENGTH_FNS: dict[str, Callable[[Mapping[str, Any]], int]] = {
    "sequence": sequence_length, "pair": pair_length, "direct_pair": pair_length}
# the kind whose lengths a source's `lengths(kind)` reports for each packing kind (a direct
# pair is as long as a reward-model pair)
LENGTH_KINDS = {"sequence": "sequence", "pair": "pair", "direct_pair": "pair"}


def unpad_sequence(row: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """A fixed-length SFT row -> a sequence example: the tokens where `mask` is set.

    Args:
      row: `input_ids` [T], optional `mask` [T] (valid tokens; default all) and `loss_mask` [T]
        (default: the valid tokens).

    Returns:
      `input_ids` [n] int32 and `loss_mask` [n] int32, n = sum(mask).
    """
    ids = _ids(row, "input_ids")
    mask = np.asarray(row.get("mask", np.ones_like(ids))).astype(bool)
    loss_mask = np.asarray(row.get("loss_mask", mask))
    return {"input_ids": ids[mask].astype(np.int32), "loss_mask": loss_mask[mask].astype(np.int32)}


def unpad_pair(row: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """A fixed-length pair row (`alignax.data.tokenize.tokenize_pair`'s) -> a pair example.

    Args:
      row: `chosen_ids`, `chosen_mask`, `rejected_ids`, `rejected_mask` [T] and optionally
        `chosen_response_mask`, `rejected_response_mask` [T].

    Returns:
      `chosen_ids` [n], `rejected_ids` [m] int32 (the valid tokens) and, when given, the
      response masks cut the same way.
    """
    out = {}
    for side in ("chosen", "rejected"):
        ids = _ids(row, f"{side}_ids")
        mask = np.asarray(row[f"{side}_mask"]).astype(bool)
        out[f"{side}_ids"] = ids[mask].astype(np.int32)
        if f"{side}_response_mask" in row:
            out[f"{side}_response_mask"] = np.asarray(
                row[f"{side}_response_mask"])[mask].astype(np.int32)
    return out


def _mask_key(ids_key: str) -> str:
    return "mask" if ids_key == "input_ids" else ids_key[: -len("ids")] + "mask"


def pad_example(example: Mapping[str, Any], length: int, *, pad_id: int) -> dict[str, np.ndarray]:
    """An unpadded example -> the fixed-length format (right padding to `length`).

    Every `*_ids` field [n] becomes [T] int32 padded with `pad_id`, plus its mask (`input_ids`
    -> `mask`, `chosen_ids` -> `chosen_mask`, ...: 1 on the n tokens); every other field is
    padded with 0. So `pad_example(unpad_pair(row), T, pad_id=pad) == row` for a
    `tokenize_pair` row, and likewise for SFT rows.

    Raises:
      ValueError: a field longer than `length`.
    """
    out = {}
    for key, value in example.items():
        value = np.asarray(value)
        n = value.shape[0]
        if n > length:
            raise ValueError(f"{key} has {n} tokens, more than the padded length {length}")
        if key.endswith("ids"):
            ids = np.full(length, pad_id, np.int32)
            ids[:n] = value
            mask = np.zeros(length, np.int32)
            mask[:n] = 1
            out[key], out[_mask_key(key)] = ids, mask
        else:
            padded = np.zeros(length, np.int32)
            padded[:n] = value
            out[key] = padded
    return out


# ----------------------------------------------------------------------------- rows


def pack_sequences(examples: Sequence[Mapping[str, Any]], length: int, *,
                   pad_id: int = 0) -> dict[str, np.ndarray]:
    """Sequence examples -> one packed row (see the module docstring).

    Args:
      examples: k examples, `input_ids` [n_j] and optional `loss_mask` [n_j] (default all 1).
      length: T >= sum_j n_j.
      pad_id: the id of the padding tokens (masked out; any valid id).

    Returns:
      `input_ids` [T] int32, `mask` [T] int32 segment ids (example j's tokens hold j + 1, padding
      0), `loss_mask` [T] int32 (each example's own, 0 on padding).
    """
    ids = np.full(length, pad_id, np.int32)
    seg = np.zeros(length, np.int32)
    loss = np.zeros(length, np.int32)
    at = 0
    for j, ex in enumerate(examples):
        x = _ids(ex, "input_ids")
        n = x.shape[0]
        if at + n > length:
            raise ValueError(f"examples hold {at + n}+ tokens, more than the row length {length}")
        ids[at:at + n] = x
        seg[at:at + n] = j + 1
        loss[at:at + n] = np.asarray(ex["loss_mask"]) if "loss_mask" in ex else 1
        at += n
    return {"input_ids": ids, "mask": seg, "loss_mask": loss}


def pack_pairs(pairs: Sequence[Mapping[str, Any]], length: int, *, max_pairs: int,
               pad_id: int = 0, response: bool = False,
               pair_fields: Sequence[str] = ()) -> dict[str, np.ndarray]:
    """Pair examples -> one packed row (see the module docstring).

    Args:
      pairs: k <= S examples, `chosen_ids` [n_j] and `rejected_ids` [m_j]; with `response`
        also `chosen_response_mask` [n_j] and `rejected_response_mask` [m_j]; each name of
        `pair_fields` a scalar.
      length: T >= sum_j (n_j + m_j).
      max_pairs: S, the static number of pair slots per row.
      pad_id: the id of the padding tokens.
      response: also return the response masks (a direct-alignment row).
      pair_fields: per-pair scalar fields to carry into [S] slots.

    Returns:
      `input_ids` [T] int32; `mask` [T] int32 segment ids (pair j's chosen 2j + 1, its rejected
      2j + 2, padding 0); `chosen_end`, `rejected_end` [S] int32: the position of each side's
      last token, -1 in slots j >= k. With `response`: `response_mask` [T] int32, each side's
      response mask at its tokens, 0 on padding. Each name of `pair_fields`: [S] float32, pair
      j's value in slot j, 0 in slots j >= k. Without `response` and `pair_fields`, the
      reward-model row (these four arrays only).

    Raises:
      ValueError: more than S pairs, more than T tokens, or a missing response mask or field
        (naming the pair).
    """
    if len(pairs) > max_pairs:
        raise ValueError(f"{len(pairs)} pairs do not fit max_pairs={max_pairs} slots")
    ids = np.full(length, pad_id, np.int32)
    seg = np.zeros(length, np.int32)
    resp = np.zeros(length, np.int32)
    ends = {side: np.full(max_pairs, -1, np.int32) for side in ("chosen", "rejected")}
    fields = {name: np.zeros(max_pairs, np.float32) for name in pair_fields}
    at, s = 0, 0
    for j, pair in enumerate(pairs):
        for side in ("chosen", "rejected"):
            x = _ids(pair, f"{side}_ids")
            n = x.shape[0]
            if at + n > length:
                raise ValueError(f"pairs hold {at + n}+ tokens, more than the row length "
                                 f"{length}")
            s += 1
            ids[at:at + n] = x
            seg[at:at + n] = s
            if response:
                resp[at:at + n] = _side_response(pair, side, j, n)
            at += n
            ends[side][j] = at - 1
        for name in pair_fields:
            fields[name][j] = _pair_scalar(pair, name, j)
    out = {"input_ids": ids, "mask": seg, "chosen_end": ends["chosen"],
           "rejected_end": ends["rejected"]}
    if response:
        out["response_mask"] = resp
    return {**out, **fields}


def _side_response(pair: Mapping[str, Any], side: str, j: int, n: int) -> np.ndarray:
    key = f"{side}_response_mask"
    if key not in pair:
        raise ValueError(f"pair {j} has no {key!r}: packing for direct alignment needs each "
                         "side's response mask")
    mask = np.asarray(pair[key])
    if mask.shape != (n,):
        raise ValueError(f"pair {j}: {key} has shape {mask.shape}, its ids ({n},)")
    return mask


def _pair_scalar(pair: Mapping[str, Any], name: str, j: int) -> np.float32:
    if name not in pair:
        raise ValueError(f"pair {j} has no field {name!r} to carry (pair_fields)")
    value = np.asarray(pair[name])
    if value.size != 1:
        raise ValueError(f"pair {j}: field {name!r} must be a scalar, got shape {value.shape}")
    return np.float32(value.reshape(()))


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"unknown packing kind {kind!r}; valid: {list(KINDS)}")


def _check_pair_fields(kind: str, pair_fields: Sequence[str]) -> None:
    if isinstance(pair_fields, str):
        raise ValueError(f"pair_fields must be a sequence of field names, got {pair_fields!r}")
    if pair_fields and kind != "direct_pair":
        raise ValueError(f"pair_fields {list(pair_fields)} apply to kind 'direct_pair', not "
                         f"{kind!r}")


def as_example(row: Mapping[str, Any], kind: str) -> Mapping[str, Any]:
    """`row` as an unpadded example of `kind`: fixed-length rows (with `mask` / `chosen_mask`)
    are cut by `unpad_sequence` / `unpad_pair` (kind "direct_pair" also keeps the row's 0-d
    numeric fields, e.g. precomputed reference log-probs); unpadded ones are returned as they
    are."""
    if kind == "sequence":
        return unpad_sequence(row) if "mask" in row else row
    if "chosen_mask" not in row:
        return row
    if kind == "pair":
        return unpad_pair(row)
    scalars = {k: v for k, v in row.items()
               if np.ndim(v) == 0 and np.issubdtype(np.asarray(v).dtype, np.number)}
    return {**unpad_pair(row), **scalars}


def _pack(kind: str, examples, length: int, pad_id: int, max_pairs: int | None,
          pair_fields: Sequence[str] = ()):
    if kind == "sequence":
        return pack_sequences(examples, length, pad_id=pad_id)
    if kind == "direct_pair":
        return pack_pairs(examples, length, max_pairs=max_pairs, pad_id=pad_id, response=True,
                          pair_fields=pair_fields)
    return pack_pairs(examples, length, max_pairs=max_pairs, pad_id=pad_id)


# ----------------------------------------------------------------------------- sources


class PackedSource:
    """A random-access source of packed rows over a random-access source of examples.

    `len(packed)` is the number of bins of `plan_bins(lengths, length, ...)` and `packed[i]` the
    row of bin i (`pack_sequences` / `pack_pairs` of its examples), a pure function of i; so
    `alignax.data.pipeline.make_batch_iterator` shuffles, splits and resumes it exactly.

    Args:
      source: `len(source)` and `source[i]` -> an example of `kind`, unpadded or fixed-length
        (cut by `as_example`), e.g. an `HFSource` with `tokenize_pair`, or a `TokenCache`.
      length: T, the packed row length.
      kind: "sequence" (SFT rows), "pair" (reward-model rows) or "direct_pair" (pair rows
        with response masks, for the direct-alignment losses).
      strategy, window: see `plan_bins`.
      pad_id: the padding token id.
      max_pairs: S for the pair kinds (None: the largest bin of the plan, so no pair is left
        out).
      lengths: [N] the examples' lengths, if known (else `source.lengths(kind)` when the source
        has that method, else every example is read once here to measure it).
      pair_fields: kind "direct_pair": per-pair scalar fields carried into [S] slots
        (`pack_pairs`).

    Attributes:
      bins: the plan (lists of example indices).
      max_pairs: S (the pair kinds).
    """

    def __init__(self, source, length: int, *, kind: str = "sequence", strategy: str = "bfd",
                 window: int = 1000, pad_id: int = 0, max_pairs: int | None = None,
                 lengths: Sequence[int] | None = None, pair_fields: Sequence[str] = ()):
        _check_kind(kind)
        _check_pair_fields(kind, pair_fields)
        self._source = source
        self._kind = kind
        self._length = _check_positive("length", length)
        self._pad_id = int(pad_id)
        self._pair_fields = tuple(pair_fields)
        if lengths is None:
            if callable(getattr(source, "lengths", None)):
                lengths = source.lengths(LENGTH_KINDS[kind])
            else:
                measure = LENGTH_FNS[kind]
                lengths = [measure(as_example(source[i], kind)) for i in range(len(source))]
        if len(lengths) != len(source):
            raise ValueError(f"lengths has {len(lengths)} entries for {len(source)} examples")
        limit = max_pairs if kind in PAIR_KINDS else None
        self.bins = plan_bins(lengths, self._length, strategy=strategy, window=window,
                              max_items=limit)
        self.max_pairs = None
        if kind in PAIR_KINDS:
            self.max_pairs = (max(len(b) for b in self.bins) if max_pairs is None
                              else int(max_pairs))

    def __len__(self) -> int:
        return len(self.bins)

    def __getitem__(self, i: int) -> dict[str, np.ndarray]:
        examples = [as_example(self._source[j], self._kind) for j in self.bins[i]]
        return _pack(self._kind, examples, self._length, self._pad_id, self.max_pairs,
                     self._pair_fields)

    def fill(self) -> float:
        """The fraction of the rows' token slots holding tokens (1.0: no padding)."""
        if callable(getattr(self._source, "lengths", None)):
            total = int(np.sum(self._source.lengths(LENGTH_KINDS[self._kind])))
        else:
            total = sum(LENGTH_FNS[self._kind](as_example(self._source[j], self._kind))
                        for b in self.bins for j in b)
        return total / (len(self.bins) * self._length)


class PaddedSource:
    """A random-access source of fixed-length rows over one of unpadded examples (`pad_example`
    of each), e.g. a `TokenCache` read back in `tokenize_pair`'s format.

    Args:
      source: `len` and `source[i]` -> an unpadded example.
      length: T, the padded length.
      pad_id: the padding token id.
    """

    def __init__(self, source, length: int, *, pad_id: int):
        self._source = source
        self._length = _check_positive("length", length)
        self._pad_id = int(pad_id)

    def __len__(self) -> int:
        return len(self._source)

    def __getitem__(self, i: int) -> dict[str, np.ndarray]:
        return pad_example(self._source[i], self._length, pad_id=self._pad_id)


# ----------------------------------------------------------------------------- streaming


class PackIterDataset(grain.IterDataset):
    """Packs a grain stream of examples into rows, window by window (see the module docstring).

    Args:
      parent: a grain `IterDataset` of examples of `kind` (unpadded or fixed-length); it must be
        deterministic (the same elements after `set_state` to a saved state) for exact resume.
      length: T, the packed row length.
      kind: "sequence", "pair" or "direct_pair".
      strategy, window: see `plan_bins`.
      pad_id: the padding token id.
      max_pairs: S, required for the pair kinds (a stream's largest bin is not known in
        advance).
      pair_fields: kind "direct_pair": per-pair scalar fields carried into [S] slots.
    """

    def __init__(self, parent: grain.IterDataset, length: int, *, kind: str = "sequence",
                 strategy: str = "bfd", window: int = 1000, pad_id: int = 0,
                 max_pairs: int | None = None, pair_fields: Sequence[str] = ()):
        super().__init__(parent)
        _check_kind(kind)
        _check_pair_fields(kind, pair_fields)
        if strategy not in STRATEGIES:
            raise ValueError(f"unknown packing strategy {strategy!r}; valid: {list(STRATEGIES)}")
        if kind in PAIR_KINDS and max_pairs is None:
            raise ValueError(f"kind={kind!r} needs max_pairs (the static pair slots per row)")
        self._options = dict(length=_check_positive("length", length), kind=kind,
                             strategy=strategy, window=_check_positive("window", window),
                             pad_id=int(pad_id),
                             max_pairs=None if max_pairs is None else
                             _check_positive("max_pairs", max_pairs),
                             pair_fields=tuple(pair_fields))

    def __iter__(self) -> grain.DatasetIterator:
        return _PackIterator(self._parent.__iter__(), **self._options)

    def __str__(self) -> str:
        return f"PackIterDataset({self._options})"


class _PackIterator(grain.DatasetIterator):
    """State: {"parent": the parent's state at the current window's start, "emitted": rows of
    that window already returned}."""

    def __init__(self, parent: grain.DatasetIterator, *, length, kind, strategy, window, pad_id,
                 max_pairs, pair_fields=()):
        super().__init__(parent)
        self._length, self._kind, self._strategy = length, kind, strategy
        self._window, self._pad_id, self._max_pairs = window, pad_id, max_pairs
        self._pair_fields = pair_fields
        self._window_state = parent.get_state()
        self._rows: list[dict[str, np.ndarray]] = []
        self._emitted = 0
        self._loaded = False

    def _load_window(self) -> None:
        examples = []
        for _ in range(self._window):
            try:
                examples.append(as_example(next(self._parent), self._kind))
            except StopIteration:
                break
        measure = LENGTH_FNS[self._kind]
        bins = plan_bins([measure(e) for e in examples], self._length, strategy=self._strategy,
                         window=self._window,
                         max_items=self._max_pairs if self._kind in PAIR_KINDS else None)
        self._rows = [_pack(self._kind, [examples[j] for j in b], self._length, self._pad_id,
                            self._max_pairs, self._pair_fields) for b in bins]
        self._loaded = True

    def __next__(self) -> dict[str, np.ndarray]:
        if not self._loaded:
            self._load_window()
        if self._emitted == len(self._rows):
            if not self._rows:  # the parent is exhausted
                raise StopIteration
            self._window_state = self._parent.get_state()
            self._emitted = 0
            self._load_window()
            if not self._rows:
                raise StopIteration
        row = self._rows[self._emitted]
        self._emitted += 1
        return row

    def get_state(self) -> dict[str, Any]:
        return {"parent": self._window_state, "emitted": self._emitted}

    def set_state(self, state: dict[str, Any]) -> None:
        self._parent.set_state(state["parent"])
        self._window_state = state["parent"]
        self._load_window()
        self._emitted = int(state["emitted"])


# ----------------------------------------------------------------------------- recipe config

PACKING_DEFAULTS = dict(enabled=False, length=0, strategy="bfd", window=1000)
"""The `packing` section of the SFT, reward-model and direct recipes (see `packed_train_source`;
the reward model's and the direct recipe's add `max_pairs`):

- enabled: pack the training examples into rows (False: one padded example per row).
- length: T of a packed row; 0 = the source's own row length (SFT: len(input_ids); RM and
  direct: twice len(chosen_ids), so that any pair fits), which needs fixed-length rows.
- strategy, window: the bin plan (`plan_bins`): "bfd" (best-fit decreasing, TRL's) or
  "first_fit", over windows of `window` examples.
- max_pairs: RM and direct only, S pair slots per row (0: the plan's largest bin).
"""


def check_packing(cfg: Mapping[str, Any] | None, label: str) -> None:
    """Checks a resolved `packing` section; ValueError (one line, naming `label`) if bad."""
    if not cfg:
        return
    if cfg["strategy"] not in STRATEGIES:
        raise ValueError(f"{label}: unknown packing.strategy {cfg['strategy']!r}; valid: "
                         f"{list(STRATEGIES)}")
    for key, low in (("length", 0), ("window", 1), ("max_pairs", 0)):
        if key not in cfg:
            continue
        value = cfg[key]
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise ValueError(f"{label}: packing.{key} must be an int >= {low}, got {value!r}")


def packed_train_source(source, cfg: Mapping[str, Any], kind: str, *, pad_id: int = 0,
                        pair_fields: Sequence[str] = ()):
    """The recipes' training source with packing on: `PackedSource(source, T, kind=kind, ...)`
    with T = `cfg["length"]` or, when 0, the source's own row length (see PACKING_DEFAULTS).

    Args:
      source: the recipe's train_source (fixed-length rows, or unpadded examples with `length`
        set, e.g. a `TokenCache`).
      cfg: a resolved `packing` section.
      kind: "sequence" (SFT), "pair" (RM) or "direct_pair" (the direct recipe).
      pad_id: the padding token id (masked out; 0 fits any vocabulary).
      pair_fields: kind "direct_pair": per-pair scalar fields carried into [S] slots (e.g.
        precomputed reference log-probs).

    Raises:
      ValueError: length 0 with a source of unpadded examples.
    """
    length = int(cfg["length"])
    if length == 0:
        first = source[0]
        key, mask = (("input_ids", "mask") if kind == "sequence" else ("chosen_ids", "chosen_mask"))
        if mask not in first:
            raise ValueError(f"packing.length=0 takes the rows' padded length, but the source's "
                             f"examples are unpadded (no {mask!r}): set packing.length")
        length = int(np.asarray(first[key]).shape[-1]) * (1 if kind == "sequence" else 2)
    max_pairs = int(cfg.get("max_pairs", 0)) or None
    return PackedSource(source, length, kind=kind, strategy=cfg["strategy"],
                        window=int(cfg["window"]), pad_id=pad_id, max_pairs=max_pairs,
                        pair_fields=pair_fields)
