r"""Hugging Face `datasets` -> alignax records and grain sources, in TRL's dataset formats.

Loading (`load_hf_dataset`): a `datasets.Dataset` or `DatasetDict` object; a folder written by
`save_to_disk` (a Dataset or a DatasetDict; read with `datasets.load_from_disk`, memory-mapped);
a local data file or a folder of them (`.arrow`, `.parquet`, `.json`/`.jsonl`, `.csv`; read with
`datasets.load_dataset`, e.g. a downloaded Hub snapshot); or a Hub dataset name, only where the
Hub can be reached (with `HF_HUB_OFFLINE=1`, or when the download fails, a one-line `DataError`
says so).

Row formats (TRL's; detected per row from its keys, values are strings or chat messages
`{"role", "content"}`):

==========================  =====================================  ==========================
TRL dataset type            keys                                   record
==========================  =====================================  ==========================
preference, explicit        prompt, chosen, rejected               `PreferenceRecord`
preference, implicit        chosen, rejected                       `PreferenceRecord`
unpaired preference (KTO)   prompt, completion, label (bool)       `UnpairedRecord`
prompt-completion (SFT)     prompt, completion (no label)          `SFTRecord`
language modeling (SFT)     text, or messages (conversational)     `SFTRecord` (prompt None)
prompt-only (online RL)     prompt                                 `PromptRecord`
pointwise ratings           prompt, response, rating / ratings     `RatingRecord`
==========================  =====================================  ==========================

Detection, in this order: chosen or rejected -> preference; response -> rating; completion and
label -> unpaired (KTO); completion -> prompt-completion; prompt -> prompt-only; messages ->
language modeling, conversational; text -> language modeling, standard. So, as in TRL's dataset
types, prompt + completion + label is KTO's unpaired preference and prompt + completion alone is
SFT's prompt-completion type; a `label` without a completion is an extra (a prompt-only row's
safety label, a text row's class), and a row with both `messages` and `text` is conversational
(TRL's `is_conversational` reads `messages`; `text` stays in the extras).

Preference and rating rows are validated by `alignax.data.readers.parse_row` (the JSONL/Parquet
reader's rules: conversational pairs keep their messages in `extras["messages"]`, which
`alignax.data.tokenize.tokenize_pair` renders with the model's chat template). A standard
(string) preference row without a prompt gets TRL's implicit prompt (`extract_prompt`): the
longest common character prefix of chosen and rejected, less a final space, which stays with the
responses. Conversational KTO and prompt-only rows keep theirs in `extras["messages"]`
(`{"prompt": [...], "completion": [...]}` / `{"prompt": [...]}`); their `prompt` string is the
minimal template's (`render_chat`), the generation cue included.

SFT rows (`SFTRecord`, tokenised by `alignax.data.tokenize.tokenize_sft` as TRL's SFTTrainer
does): standard ones hold their strings (`prompt`, `completion`; a language-modeling `text` is
the `completion` of a record whose `prompt` is None). Conversational ones keep their messages in
`extras["messages"]` under their column names (`{"messages": [...]}` or `{"prompt": [...],
"completion": [...]}`; a completion may hold several messages, e.g. a tool call, its result and
the answer); their strings are the minimal template's split of the conversation (`prompt +
completion` is `render_chat` of all the messages; the prompt ends with the generation cue when
the completion starts with an assistant message), what a tokenizer without a chat template
reads. Other columns pass through to `extras`, among them TRL's per-row `tools` (a list of JSON
schemas or its JSON string) and `chat_template_kwargs`, which `tokenize_sft` hands to the
template.

User ids (per-user preference learning: PAL, MiCRo): a preference row (explicit or implicit,
standard or conversational) may carry a `user_id` column, a string or an int naming who made the
comparison. Like every column a format does not consume it passes through unchanged to
`record.extras["user_id"]` (a null, Arrow's fill for a row without one, counts as absent).
`user_ids(records)` maps the names to contiguous indices 0..U-1 in first-seen order; a row
without one is a `DataError` naming the row and the field when users are required.

Errors: a bad row raises `DataError` `<dataset>:<index>: field '<field>': <problem>` with
<dataset> the folder's (or file's) base name, or `name`, and <index> the 0-based row index
(`dataset[index]` is the culprit). `read_hf_dataset(..., skip_invalid=True)` skips and counts
bad rows instead.

Pipeline: `HFSource` is a random-access grain source over the dataset (each `source[i]` parses
and transforms one row when read, e.g. `tokenize_pair`), so `make_batch_iterator` streams it
with exact resume (its state counts batches; a row is a pure function of its index).

Why `datasets` (not pyarrow alone): it reads every layout a Hub dataset comes in (save_to_disk
folders with their features, sharded Arrow/Parquet/JSON snapshots, the Hub), memory-maps Arrow so
a large dataset is not read into host memory, and is what TRL users already hold their data in.
It is imported lazily, only by `load_hf_dataset`: requirement `datasets>=3,<6`.
"""

from __future__ import annotations

import dataclasses
import numbers
import os
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from alignax.data.errors import DataError
from alignax.data.readers import (
    PreferenceRecord,
    RatingRecord,
    ReadResult,
    _check_length,
    collect_rows,
    _kind,
    _messages,
    _response,
    _RowError,
    _text,
    parse_row,
    render_chat,
)

_DATA_EXTENSIONS = {".arrow": "arrow", ".parquet": "parquet", ".json": "json", ".jsonl": "json",
                    ".csv": "csv"}


@dataclasses.dataclass
class UnpairedRecord:
    """One unpaired preference (KTO): `completion` to `prompt` is desirable iff `label`."""

    prompt: str
    completion: str
    label: bool
    extras: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class SFTRecord:
    """One supervised fine-tuning example (TRL's language-modeling or prompt-completion type).

    `prompt` None: language modeling, every token is trained on (`completion` is the text);
    else a prompt-completion pair, by default trained on the completion only (TRL's
    `completion_only_loss`). Conversational rows keep their messages in `extras["messages"]`
    (see the module docstring).
    """

    prompt: str | None
    completion: str
    extras: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def target_field(self) -> str:
        """The row's column that holds what is trained on ("text", "messages" or
        "completion"), the field a tokenisation error names."""
        if self.prompt is not None:
            return "completion"
        messages = self.extras.get("messages")
        return "messages" if isinstance(messages, Mapping) and "messages" in messages else "text"


@dataclasses.dataclass
class PromptRecord:
    """One prompt to be answered (online RL: GRPO, RLOO, online DPO)."""

    prompt: str
    extras: dict[str, Any] = dataclasses.field(default_factory=dict)


Record = PreferenceRecord | RatingRecord | UnpairedRecord | PromptRecord | SFTRecord


def load_hf_dataset(source: Any, *, split: str | None = "train", cache_dir: str | None = None):
    """A `datasets.Dataset` from an object, a local folder or file, or a Hub name.

    Args:
      source: a `datasets.Dataset` (returned as is) or `DatasetDict`; a `save_to_disk` folder;
        a data file or a folder of data files (.arrow, .parquet, .json/.jsonl, .csv); or a Hub
        dataset name ("org/name"), read only when the Hub can be reached.
      split: the split to return from a DatasetDict or a file/Hub load ("train", "test", ...).
        None: a save_to_disk DatasetDict with exactly one split returns that split.
      cache_dir: where `datasets.load_dataset` writes its Arrow cache (None: the library's
        default, `HF_DATASETS_CACHE`); unused by `save_to_disk` folders, read in place.

    Returns:
      A `datasets.Dataset`.

    Raises:
      DataError: an unknown split (naming the available ones); a local path that holds no
        dataset; a Hub name while offline or unreachable (one line).
    """
    import datasets

    if isinstance(source, datasets.DatasetDict):
        return _split(source, split, "the DatasetDict")
    if isinstance(source, datasets.Dataset):
        return source
    if not isinstance(source, (str, os.PathLike)):
        raise TypeError(f"source must be a datasets.Dataset/DatasetDict or a path/name, got "
                        f"{type(source).__name__}")
    path = os.fspath(source)
    if os.path.isdir(path):
        if any(os.path.isfile(os.path.join(path, f)) for f in ("state.json",
                                                                 "dataset_dict.json")):
            loaded = datasets.load_from_disk(path)
            if isinstance(loaded, datasets.DatasetDict):
                return _split(loaded, split, path)
            return loaded
        found = {os.path.splitext(f)[1].lower() for _, _, fs in os.walk(path) for f in fs}
        if not found & set(_DATA_EXTENSIONS):
            raise DataError(f"{path}: no dataset here (no save_to_disk files, no "
                            f"{'/'.join(sorted(_DATA_EXTENSIONS))} files)", path=path)
        # datasets infers the file type and the splits from the file names (train-*, test-*,
        # data/train/..., as in a Hub snapshot)
        return _load(datasets, (path,), {}, split, cache_dir, path)
    if os.path.isfile(path):
        ext = os.path.splitext(path)[1].lower()
        if ext not in _DATA_EXTENSIONS:
            raise DataError(f"{path}: unsupported file type {ext!r} (expected one of "
                            f"{sorted(_DATA_EXTENSIONS)})", path=path)
        return _load(datasets, (_DATA_EXTENSIONS[ext],), {"data_files": {"train": [path]}},
                     split, cache_dir, path)
    if os.path.isabs(path) or path.startswith(".") or path.count("/") > 1:
        raise DataError(f"{path}: no such file or folder", path=path)
    if datasets.config.HF_HUB_OFFLINE:
        raise DataError(f"{path!r} is not a local path, and the Hub is offline (HF_HUB_OFFLINE "
                        f"is set): download the dataset and pass its folder", path=path)
    try:
        return datasets.load_dataset(path, split=split, cache_dir=cache_dir)
    except Exception as e:  # noqa: BLE001 - network, auth and missing-repo errors vary
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DataError(f"{path!r} is not a local path, and loading it from the Hub failed "
                        f"({type(e).__name__}: {first})", path=path) from None


def _split(dataset_dict, split: str | None, where: str):
    if split is None:
        if len(dataset_dict) != 1:
            raise DataError(f"{where} has splits {sorted(dataset_dict)}: pass split=...",
                            path=where)
        return next(iter(dataset_dict.values()))
    if split not in dataset_dict:
        raise DataError(f"{where} has no split {split!r} (splits: {sorted(dataset_dict)})",
                        path=where)
    return dataset_dict[split]


def _load(datasets, args: tuple, kwargs: dict, split: str | None, cache_dir: str | None,
          where: str):
    """`datasets.load_dataset(*args, **kwargs)`, then the split; read errors -> DataError."""
    try:
        loaded = datasets.load_dataset(*args, **kwargs, cache_dir=cache_dir)
    except Exception as e:  # noqa: BLE001 - datasets wraps pyarrow/json errors in several types
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise DataError(f"{where}: the data files could not be read ({type(e).__name__}: "
                        f"{first})", path=where) from None
    return _split(loaded, split, where)


def _implicit_text_prompt(chosen: str, rejected: str) -> tuple[str, str, str]:
    """TRL's `extract_prompt` on strings: the common character prefix, a final space given back
    to the responses."""
    n = 0
    for a, b in zip(chosen, rejected):
        if a != b:
            break
        n += 1
    if n and n < min(len(chosen), len(rejected)) and chosen[n - 1] == " ":
        n -= 1
    return chosen[:n], chosen[n:], rejected[n:]


def _parse_unpaired(row: Mapping[str, Any]) -> UnpairedRecord:
    for field in ("prompt", "completion", "label"):
        if field not in row:
            raise _RowError(field, "missing")
    label = row["label"]
    if not isinstance(label, bool):
        raise _RowError("label", f"expected a bool (desirable or not), got {_kind(label)}")
    extras = {k: v for k, v in row.items() if k not in ("prompt", "completion", "label")}
    prompt, completion = row["prompt"], row["completion"]
    if isinstance(prompt, str) or isinstance(completion, str):
        return UnpairedRecord(_text(prompt, "prompt"), _text(completion, "completion"), label,
                              extras)
    if "messages" in extras:
        raise _RowError("messages", "reserved in chat rows (the reader stores the raw messages "
                                    "there); rename it")
    prompt = _messages(prompt, "prompt")
    completion = _messages(completion, "completion")
    if len(completion) != 1:
        raise _RowError("completion", f"expected exactly one assistant message, got "
                                      f"{len(completion)} messages")
    response = _response(completion[0], "completion[0]")
    extras["messages"] = {"prompt": prompt, "completion": completion}
    return UnpairedRecord(render_chat(prompt), response, label, extras)


def _parse_prompt_only(row: Mapping[str, Any]) -> PromptRecord:
    prompt = row["prompt"]
    extras = {k: v for k, v in row.items() if k != "prompt"}
    if isinstance(prompt, str):
        return PromptRecord(_text(prompt, "prompt"), extras)
    if not isinstance(prompt, (list, tuple)):
        raise _RowError("prompt", f"expected a string or a list of messages, got {_kind(prompt)}")
    if "messages" in extras:
        raise _RowError("messages", "reserved in chat rows (the reader stores the raw messages "
                                    "there); rename it")
    messages = _messages(prompt, "prompt")
    extras["messages"] = {"prompt": messages}
    return PromptRecord(render_chat(messages), extras)


def _reserved_messages(extras: Mapping[str, Any]) -> None:
    if "messages" in extras:
        raise _RowError("messages", "reserved in chat rows (the reader stores the raw messages "
                                    "there); rename it")


def _parse_prompt_completion(row: Mapping[str, Any]) -> SFTRecord:
    """TRL's prompt-completion type (SFT): strings, or two lists of messages."""
    if "prompt" not in row:
        raise _RowError("prompt", "missing (a prompt-completion row needs 'prompt' and "
                                  "'completion'; add 'label' for an unpaired preference)")
    prompt, completion = row["prompt"], row["completion"]
    extras = {k: v for k, v in row.items() if k not in ("prompt", "completion")}
    if isinstance(prompt, str) or isinstance(completion, str):
        for field, value in (("prompt", prompt), ("completion", completion)):
            if not isinstance(value, str):
                raise _RowError(field, f"expected a string like the other field, got "
                                       f"{_kind(value)}")
        return SFTRecord(_text(prompt, "prompt"), _text(completion, "completion"), extras)
    _reserved_messages(extras)
    prompt = _messages(prompt, "prompt")
    completion = _messages(completion, "completion")
    full = render_chat(prompt + completion, add_generation_cue=False)
    head = render_chat(prompt, add_generation_cue=completion[0]["role"] == "assistant")
    if not full[len(head):].strip():
        raise _RowError("completion", "empty completion (its messages have no content)")
    extras["messages"] = {"prompt": prompt, "completion": completion}
    return SFTRecord(head, full[len(head):], extras)


def _parse_language_modeling(row: Mapping[str, Any]) -> SFTRecord:
    """TRL's language-modeling type (SFT): `messages` (conversational) or `text`."""
    if "messages" in row:
        extras = {k: v for k, v in row.items() if k != "messages"}
        messages = _messages(row["messages"], "messages")
        if not any(m["content"].strip() for m in messages):
            raise _RowError("messages", "every message is empty (nothing to train on)")
        extras["messages"] = {"messages": messages}
        return SFTRecord(None, render_chat(messages, add_generation_cue=False), extras)
    extras = {k: v for k, v in row.items() if k != "text"}
    return SFTRecord(None, _text(row["text"], "text"), extras)


def parse_hf_row(row: Any) -> Record:
    """Validates one dataset row and converts it to a record (TRL format detected from keys).

    A null value (Arrow's fill for a column a row does not use) counts as an absent key.

    Raises:
      _RowError: the field and the problem (`read_hf_dataset`/`HFSource` add dataset and index).
    """
    if not isinstance(row, Mapping):
        raise _RowError(None, f"expected a row mapping column -> value, got {_kind(row)}")
    row = {k: v for k, v in row.items() if v is not None}
    if "chosen" in row or "rejected" in row:
        if ("prompt" not in row and isinstance(row.get("chosen"), str)
                and isinstance(row.get("rejected"), str)):
            prompt, chosen, rejected = _implicit_text_prompt(row["chosen"], row["rejected"])
            row = {**row, "prompt": prompt, "chosen": chosen, "rejected": rejected}
        return parse_row(row)
    if "response" in row:
        return parse_row(row)
    if "label" in row and "completion" in row:
        return _parse_unpaired(row)
    if "completion" in row:
        return _parse_prompt_completion(row)
    if "prompt" in row:
        return _parse_prompt_only(row)
    if "messages" in row or "text" in row:
        return _parse_language_modeling(row)
    raise _RowError("prompt", f"missing: no TRL format matches the columns {sorted(row)} "
                              f"(preference: chosen/rejected; KTO: prompt/completion/label; "
                              f"SFT: prompt/completion, messages or text; prompt-only: prompt; "
                              f"rating: prompt/response/rating)")


def _dataset_name(dataset, name: str | None) -> str:
    if name is not None:
        return name
    files = getattr(dataset, "cache_files", None) or []
    if files:
        folder = os.path.dirname(files[0].get("filename", ""))
        if folder:
            return os.path.basename(folder)
    return "dataset"


def _error(name: str, index: int, e: _RowError) -> DataError:
    where = f" field '{e.field}':" if e.field is not None else ""
    return DataError(f"{name}:{index}:{where} {e.problem}", path=name, line=index,
                     field=e.field)


def _measure_length(record: Record, max_length: int,
                    tokenize: Callable[[str], Sequence[int]] | None) -> None:
    if isinstance(record, (PreferenceRecord, RatingRecord)):
        _check_length(record, max_length, tokenize)
        return
    measure = (lambda s: len(tokenize(s))) if tokenize is not None else len
    unit = "tokens" if tokenize is not None else "characters"
    if isinstance(record, SFTRecord):
        field = record.target_field
        length = measure(record.completion) + (
            measure(record.prompt) if record.prompt is not None else 0)
    else:
        field, length = "prompt", measure(record.prompt)
    if isinstance(record, UnpairedRecord):
        field, length = "completion", length + measure(record.completion)
    if length > max_length:
        raise _RowError(field, f"too long: {length} {unit} > max_length={max_length}")


def read_hf_dataset(
    source: Any,
    *,
    split: str | None = "train",
    name: str | None = None,
    skip_invalid: bool = False,
    max_length: int | None = None,
    tokenize: Callable[[str], Sequence[int]] | None = None,
    cache_dir: str | None = None,
) -> ReadResult:
    """Reads and validates every row of a dataset into records (see the module docstring).

    Args:
      source: anything `load_hf_dataset` takes.
      split: the split (see `load_hf_dataset`).
      name: the dataset's name in messages (default: its folder's base name).
      skip_invalid: skip invalid rows, counting them, instead of raising at the first one.
      max_length: the longest allowed prompt + response (each response with the prompt), in
        tokens of `tokenize` if given, else characters (as `read_preferences`).
      tokenize: text -> ids, for `max_length`.
      cache_dir: see `load_hf_dataset`.

    Returns:
      A `ReadResult`: `records` in dataset order, `lines` their 0-based row indices (the
      `indices` an `HFSource` over only the valid rows takes), `path` the dataset's name.

    Raises:
      DataError: `<dataset>:<index>: field '<field>': <problem>` for the first invalid row
        (unless `skip_invalid`); `no valid rows in <dataset>` when none is valid.
    """
    if max_length is not None and (isinstance(max_length, bool) or max_length <= 0):
        raise ValueError(f"max_length must be a positive int or None, got {max_length!r}")
    dataset = load_hf_dataset(source, split=split, cache_dir=cache_dir)
    label = _dataset_name(dataset, name if name is not None else (
        os.path.basename(os.path.normpath(os.fspath(source)))
        if isinstance(source, (str, os.PathLike)) else None))

    def parse(row):
        record = parse_hf_row(row)
        if max_length is not None:
            _measure_length(record, max_length, tokenize)
        return record

    return collect_rows(enumerate(dataset), parse, path=label, name=label,
                        skip_invalid=skip_invalid, container="dataset")


class HFSource:
    """A random-access grain source over a dataset: `source[i] = transform(record of row i)`.

    Rows are parsed (and transformed, e.g. tokenised) when read, so nothing but the Arrow
    memory map is held; each item is a pure function of its index, so `make_batch_iterator`
    over this source resumes exactly. A bad row raises `DataError` `<dataset>:<index>: ...`
    when it is read (validate first with `read_hf_dataset(skip_invalid=True)` and pass its
    `lines` as `indices` to keep only the valid rows).

    Args:
      dataset: a `datasets.Dataset` (see `load_hf_dataset`).
      transform: record -> dict of numpy arrays (same keys and shapes for every record), e.g.
        `functools.partial(tokenize_pair, tokenizer=tok, max_length=T)`; it runs in grain's
        reader threads (tokenizers and compiled chat templates are thread-safe).
      indices: the dataset rows this source holds, in order (default: all).
      name: the dataset's name in messages.
      kinds: the record types accepted (default: all); another raises a `DataError` naming the
        row (e.g. a rating row in a preference source).
    """

    def __init__(self, dataset, transform: Callable[[Record], Any], *,
                 indices: Sequence[int] | None = None, name: str | None = None,
                 kinds: tuple[type, ...] | None = None):
        self._dataset = dataset
        self._transform = transform
        self._indices = None if indices is None else [int(i) for i in indices]
        if self._indices is not None and self._indices and not (
                0 <= min(self._indices) and max(self._indices) < len(dataset)):
            raise ValueError(f"indices must lie in [0, {len(dataset)})")
        self._name = _dataset_name(dataset, name)
        self._kinds = kinds

    def __len__(self) -> int:
        return len(self._dataset) if self._indices is None else len(self._indices)

    @property
    def name(self) -> str:
        """The dataset's name in error messages (`<name>:<index>: field ...`)."""
        return self._name

    def record(self, i: int) -> Record:
        """The validated record of item `i` (row `indices[i]`)."""
        index = i if self._indices is None else self._indices[i]
        try:
            record = parse_hf_row(self._dataset[index])
            if self._kinds is not None and not isinstance(record, self._kinds):
                raise _RowError(None, f"a {type(record).__name__} row; this source takes "
                                      f"{', '.join(k.__name__ for k in self._kinds)}")
        except _RowError as e:
            raise _error(self._name, index, e) from None
        return record

    def __getitem__(self, i: int) -> Any:
        index = i if self._indices is None else self._indices[i]
        try:
            return self._transform(self.record(i))
        except DataError as e:
            if e.line is not None:  # already names the row
                raise
            message, field = str(e), ""
            if e.field is not None:
                field = f" field '{e.field}':"
                message = message.removeprefix(f"{e.field}: ")
            raise DataError(f"{self._name}:{index}:{field} {message}", path=self._name,
                            line=index, field=e.field) from None


USER_FIELD = "user_id"


def user_ids(records: Sequence[Record], *, name: str = "dataset",
             indices: Sequence[int] | None = None, field: str = USER_FIELD,
             required: bool = True) -> tuple[np.ndarray, list[str | int]]:
    """Who made each comparison: the `extras[field]` of N records as contiguous user indices.

    The i-th distinct name met (in record order) gets index i, so the mapping is a pure
    function of the dataset's row order: `names[users[n]]` is record n's user.

    Args:
      records: N records (e.g. `read_hf_dataset(...).records` or `HFSource.record(i)`).
      name: the dataset's name in messages.
      indices: the dataset row index of each record, for messages (default 0..N-1; pass
        `ReadResult.lines` when invalid rows were skipped).
      field: the extras key holding the user (default "user_id").
      required: a record without a user is an error; False gives it index -1.

    Returns:
      (users [N] int32 in [0, U) (-1: no user, only without `required`), the U names in
      first-seen order, strings or ints as stored).

    Raises:
      DataError: `<name>:<index>: field 'user_id': missing (...)` for the first record without
        one (with `required`); a name that is neither a string nor an int (e.g. a float or a
        bool).
    """
    rows = range(len(records)) if indices is None else [int(i) for i in indices]
    if len(rows) != len(records):
        raise ValueError(f"indices has {len(rows)} entries for {len(records)} records")
    index: dict[str | int, int] = {}
    users = np.full(len(records), -1, np.int32)
    for n, (row, record) in enumerate(zip(rows, records)):
        user = getattr(record, "extras", {}).get(field)
        if user is None:
            if required:
                raise DataError(f"{name}:{row}: field '{field}': missing (every comparison needs "
                                f"its user here)", path=name, line=row, field=field)
            continue
        if isinstance(user, bool) or not isinstance(user, (str, numbers.Integral)):
            raise DataError(f"{name}:{row}: field '{field}': expected a string or an int, got "
                            f"{_kind(user)}", path=name, line=row, field=field)
        user = user if isinstance(user, str) else int(user)
        users[n] = index.setdefault(user, len(index))
    return users, list(index)
