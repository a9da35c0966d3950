r"""Readers for preference and rating files (JSONL, Parquet) that name the culprit of bad input.

Files: `.jsonl` or `.json` with one JSON object per line (blank lines are ignored, a UTF-8 BOM
is allowed), or `.parquet` (read with pyarrow in batches; nested columns become lists/dicts, and
a null column value counts as an absent key, so one file can mix the formats below).

Row formats, detected per row (a file may mix them):

(a) pairwise, strings::

      {"prompt": str, "chosen": str, "rejected": str, ...}

(b) pairwise, chat (a message is `{"role": str, "content": str}`; other message keys are
    ignored)::

      {"chosen": [messages], "rejected": [messages], ...}                    # HH / TRL implicit
      {"prompt": [messages], "chosen": [messages], "rejected": [messages]}   # TRL conversational

    Implicit prompt: the prompt is the longest common prefix of the two conversations, which must
    then differ only in their final message, an assistant message: that message is the response.
    Explicit prompt: `chosen` and `rejected` each hold exactly one assistant message. The prompt
    messages are rendered to a string by `render_chat`::

      <|user|>\nHi\n<|assistant|>\nHello!\n<|user|>\nHow are you?\n<|assistant|>\n

    i.e. `"<|{role}|>\n{content}\n"` per message, then the generation cue `"<|assistant|>\n"`.
    The raw messages are kept in `extras["messages"]` as `{"prompt": [...], "chosen": [...],
    "rejected": [...]}` (for an implicit prompt, `chosen`/`rejected` are the full conversations).

(c) pointwise ratings -> `RatingRecord`::

      {"prompt": str, "response": str, "rating": number}
      {"prompt": str, "response": str, "ratings": {attribute: number, ...}}   # multi-attribute

    A single `rating` is stored as `ratings={"rating": value}`.

Keys other than the ones a format consumes (e.g. "id", "subset", "margin") are kept, unchanged,
in `extras`.

Validation. A bad row raises `DataError` with the message `<file>:<line>: field '<field>':
<problem>` (the file's base name; the full path is `DataError.path`; Parquet: the 1-based row
number in place of the line), e.g.
`prefs.jsonl:7: field 'chosen': expected a string or a list of messages, got int`. Checked:
non-UTF-8 bytes, invalid JSON, a row that is not an object, a missing field, a wrong type,
a text with a lone surrogate (valid JSON such as "\ud800", but not encodable as UTF-8, so no
tokenizer can read it; checked in prompts, responses and message roles and contents), an empty
response (empty or whitespace-only string or message content; prompts may not be empty
either), a non-finite rating, and, with `max_length`, an over-long prompt + response. With
`skip_invalid=True` bad rows are skipped and counted instead. A file without any valid row is
an error in both modes.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from typing import Any, Callable, Iterator, Mapping, Sequence

from alignax.data.errors import DataError

_PAIR_KEYS = ("prompt", "chosen", "rejected")
_RATING_KEYS = ("prompt", "response", "rating", "ratings")
_PARQUET_BATCH_ROWS = 4096


@dataclasses.dataclass
class PreferenceRecord:
    """One preference pair: `chosen` is preferred to `rejected` as an answer to `prompt`."""

    prompt: str
    chosen: str
    rejected: str
    extras: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class RatingRecord:
    """One pointwise rating: `ratings` maps attribute -> score ({"rating": x} for one score)."""

    prompt: str
    response: str
    ratings: dict[str, float]
    extras: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class ReadResult:
    """What `read_preferences` read from one file.

    Attributes:
      path: the file read.
      records: the valid rows, in file order (`PreferenceRecord` or `RatingRecord`).
      num_skipped: number of invalid rows skipped (only with `skip_invalid=True`).
      skipped: the `DataError` message of each skipped row, in file order.
      lines: the 1-based line (Parquet: row) of each record, parallel to `records`, so that a
        later step (tokenizing, checking against a model) can name `<file>:<line>` too.
    """

    path: str
    records: list[PreferenceRecord | RatingRecord]
    num_skipped: int = 0
    skipped: list[str] = dataclasses.field(default_factory=list)
    lines: list[int] = dataclasses.field(default_factory=list)

    @property
    def num_preferences(self) -> int:
        """Number of `PreferenceRecord`s."""
        return sum(isinstance(r, PreferenceRecord) for r in self.records)

    @property
    def num_ratings(self) -> int:
        """Number of `RatingRecord`s."""
        return sum(isinstance(r, RatingRecord) for r in self.records)

    def summary(self) -> str:
        """A one-line report of what was read and skipped.

        E.g. `prefs.jsonl: 40 valid rows, 1 skipped (40 preference pairs, 0 ratings; first
        skipped: prefs.jsonl:3: field 'rejected': missing)`.
        """
        detail = f"{self.num_preferences} preference pairs, {self.num_ratings} ratings"
        if self.skipped:
            detail += f"; first skipped: {self.skipped[0]}"
        return (f"{os.path.basename(self.path)}: {len(self.records)} valid rows, "
                f"{self.num_skipped} skipped ({detail})")


def render_chat(messages: Sequence[Mapping[str, str]], *, add_generation_cue: bool = True) -> str:
    r"""Renders chat messages to one string with the reader's template.

    Each message becomes `"<|{role}|>\n{content}\n"`; with `add_generation_cue` the string ends
    with `"<|assistant|>\n"`, the cue after which a response follows.

    Args:
      messages: a list of `{"role": str, "content": str}`.
      add_generation_cue: append the assistant cue.

    Returns:
      The rendered text.
    """
    text = "".join(f"<|{m['role']}|>\n{m['content']}\n" for m in messages)
    return text + "<|assistant|>\n" if add_generation_cue else text


class _RowError(Exception):
    """A problem with one row; `read_preferences` adds the file and line."""

    def __init__(self, field: str | None, problem: str):
        super().__init__(problem)
        self.field = field
        self.problem = problem


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (list, tuple)):
        return "list"
    if isinstance(value, Mapping):
        return "object"
    return type(value).__name__


def _encodable(value: str, field: str) -> None:
    """Rejects a string UTF-8 cannot encode: a lone surrogate such as JSON's "\\ud800"."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as e:
        raise _RowError(field, f"lone surrogate U+{ord(value[e.start]):04X} at character "
                               f"{e.start + 1}: not valid Unicode text (cannot be encoded as "
                               f"UTF-8)") from None


def _text(value: Any, field: str, *, what: str = "a string") -> str:
    if not isinstance(value, str):
        raise _RowError(field, f"expected {what}, got {_kind(value)}")
    _encodable(value, field)
    if not value.strip():
        raise _RowError(field, "empty (or whitespace-only) string")
    return value


def _messages(value: Any, field: str) -> list[dict[str, Any]]:
    """Checks a list of chat messages (roles and contents strings, roles non-empty)."""
    if not isinstance(value, (list, tuple)):
        raise _RowError(field, f"expected a list of messages, got {_kind(value)}")
    if not value:
        raise _RowError(field, "empty list of messages")
    out = []
    for i, m in enumerate(value):
        where = f"{field}[{i}]"
        if not isinstance(m, Mapping):
            raise _RowError(where, f"expected a message {{'role': ..., 'content': ...}}, got "
                                   f"{_kind(m)}")
        for key in ("role", "content"):
            if key not in m:
                raise _RowError(f"{where}.{key}", "missing")
            if not isinstance(m[key], str):
                raise _RowError(f"{where}.{key}", f"expected a string, got {_kind(m[key])}")
            _encodable(m[key], f"{where}.{key}")
        if not m["role"].strip():
            raise _RowError(f"{where}.role", "empty (or whitespace-only) string")
        out.append(dict(m))
    return out


def _response(message: Mapping[str, Any], field: str) -> str:
    if message["role"] != "assistant":
        raise _RowError(f"{field}.role", f"the response must be an assistant message, got role "
                                         f"{message['role']!r}")
    if not message["content"].strip():
        raise _RowError(f"{field}.content", "empty response (empty or whitespace-only content)")
    return message["content"]


def _require(row: Mapping[str, Any], *fields: str) -> None:
    for field in fields:
        if field not in row:
            raise _RowError(field, "missing")


def _parse_pair(row: Mapping[str, Any]) -> PreferenceRecord:
    _require(row, "chosen", "rejected")
    chosen, rejected = row["chosen"], row["rejected"]
    extras = {k: v for k, v in row.items() if k not in _PAIR_KEYS}
    for field, value in (("chosen", chosen), ("rejected", rejected)):
        if not isinstance(value, (str, list, tuple)):
            raise _RowError(field, f"expected a string or a list of messages, got {_kind(value)}")
    if isinstance(chosen, str) or isinstance(rejected, str):  # format (a)
        for field, value in (("chosen", chosen), ("rejected", rejected)):
            if not isinstance(value, str):
                raise _RowError(field, f"expected a string like the other response, got "
                                       f"{_kind(value)}")
        _require(row, "prompt")
        prompt = _text(row["prompt"], "prompt")
        return PreferenceRecord(prompt, _text(chosen, "chosen"), _text(rejected, "rejected"),
                                extras)

    # Format (b): chat messages.
    if "messages" in extras:
        raise _RowError("messages", "reserved in chat rows (the reader stores the raw messages "
                                    "there); rename it")
    chosen = _messages(chosen, "chosen")
    rejected = _messages(rejected, "rejected")
    if "prompt" in row:  # TRL conversational: explicit prompt, one-message completions.
        prompt = _messages(row["prompt"], "prompt")
        responses = []
        for field, completion in (("chosen", chosen), ("rejected", rejected)):
            if len(completion) != 1:
                raise _RowError(field, f"expected exactly one assistant message after an explicit "
                                       f"prompt, got {len(completion)} messages")
            responses.append(_response(completion[0], f"{field}[0]"))
    else:  # Implicit prompt: the longest common prefix of the two conversations.
        n = 0
        while n < min(len(chosen), len(rejected)) - 1 and chosen[n] == rejected[n]:
            n += 1
        if n == 0:
            raise _RowError("chosen", "chosen and rejected share no prompt messages (their first "
                                      "messages differ, or one has a single message)")
        responses = []
        for field, conversation in (("chosen", chosen), ("rejected", rejected)):
            if len(conversation) != n + 1:
                raise _RowError(field, f"the conversations share {n} prompt messages and must then "
                                       f"differ only in one final assistant message; {field} has "
                                       f"{len(conversation) - n}")
            responses.append(_response(conversation[n], f"{field}[{n}]"))
        prompt = chosen[:n]
    for i, m in enumerate(prompt):
        if m["role"] != "system" and not m["content"].strip():
            raise _RowError(f"prompt[{i}].content" if "prompt" in row else f"chosen[{i}].content",
                            "empty (or whitespace-only) prompt message")
    extras["messages"] = {"prompt": prompt, "chosen": chosen, "rejected": rejected}
    return PreferenceRecord(render_chat(prompt), responses[0], responses[1], extras)


def _number(value: Any, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _RowError(field, f"expected a number, got {_kind(value)}")
    value = float(value)
    if not math.isfinite(value):
        raise _RowError(field, f"expected a finite number, got {value}")
    return value


def _parse_rating(row: Mapping[str, Any]) -> RatingRecord:
    _require(row, "prompt")
    prompt = _text(row["prompt"], "prompt")
    response = _text(row["response"], "response")
    if "rating" in row and "ratings" in row:
        raise _RowError("ratings", "give either 'rating' or 'ratings', not both")
    if "ratings" in row:
        ratings = row["ratings"]
        if not isinstance(ratings, Mapping):
            raise _RowError("ratings", f"expected an object attribute -> number, got "
                                       f"{_kind(ratings)}")
        if not ratings:
            raise _RowError("ratings", "empty object")
        parsed = {str(k): _number(v, f"ratings.{k}") for k, v in ratings.items()}
    elif "rating" in row:
        parsed = {"rating": _number(row["rating"], "rating")}
    else:
        raise _RowError("rating", "missing (a rating row needs 'rating' or 'ratings')")
    extras = {k: v for k, v in row.items() if k not in _RATING_KEYS}
    return RatingRecord(prompt, response, parsed, extras)


def parse_row(row: Any) -> PreferenceRecord | RatingRecord:
    """Validates one decoded row and converts it to a record (format detected from its keys).

    Raises:
      _RowError: the field and the problem (`read_preferences` adds file and line).
    """
    if not isinstance(row, Mapping):
        raise _RowError(None, f"expected a JSON object per line, got {_kind(row)}")
    if "chosen" in row or "rejected" in row:
        return _parse_pair(row)
    if "response" in row:
        return _parse_rating(row)
    raise _RowError("chosen", "missing: a row needs 'chosen' and 'rejected' (a preference pair) "
                              "or 'response' and 'rating'/'ratings' (a rating)")


def _check_length(record: PreferenceRecord | RatingRecord, max_length: int,
                  tokenize: Callable[[str], Sequence[int]] | None) -> None:
    measure = (lambda s: len(tokenize(s))) if tokenize is not None else len
    unit = "tokens" if tokenize is not None else "characters"
    prompt_length = measure(record.prompt)
    if isinstance(record, PreferenceRecord):
        responses = (("chosen", record.chosen), ("rejected", record.rejected))
    else:
        responses = (("response", record.response),)
    for field, response in responses:
        length = prompt_length + measure(response)
        if length > max_length:
            raise _RowError(field, f"too long: prompt + response is {length} {unit} > "
                                   f"max_length={max_length}")


def _jsonl_rows(path: str) -> Iterator[tuple[int, Any]]:
    """Yields (line number, decoded row or _RowError); blank lines are skipped."""
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            try:
                text = raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
            except UnicodeDecodeError as e:
                yield lineno, _RowError(None, f"invalid UTF-8: byte 0x{raw[e.start]:02x} at "
                                              f"offset {e.start} of the line")
                continue
            if not text.strip():
                continue
            try:
                row = json.loads(text)
            except json.JSONDecodeError as e:
                problem = f"invalid JSON: {e.msg} (column {e.colno})"
                if lineno == 1 and text.lstrip().startswith("["):
                    problem += "; a JSON array file is not supported, write one object per line"
                yield lineno, _RowError(None, problem)
                continue
            yield lineno, row


def _parquet_rows(path: str) -> Iterator[tuple[int, Any]]:
    """Yields (1-based row number, row dict)."""
    # pyarrow is imported lazily: it is heavy, and only Parquet files need it.
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as e:
        raise DataError(f"{path}: not a readable Parquet file: {e}", path=path) from None
    row_number = 0
    for batch in parquet.iter_batches(batch_size=_PARQUET_BATCH_ROWS):
        for row in batch.to_pylist():
            row_number += 1
            # A Parquet schema has every column in every row: null means "absent here".
            yield row_number, {k: v for k, v in row.items() if v is not None}


def read_preferences(
    path: str | os.PathLike,
    *,
    skip_invalid: bool = False,
    max_length: int | None = None,
    tokenize: Callable[[str], Sequence[int]] | None = None,
) -> ReadResult:
    """Reads and validates a preference or rating file (JSONL or Parquet).

    See the module docstring for the accepted row formats and the checks.

    Args:
      path: a `.jsonl`/`.json` (one JSON object per line) or `.parquet` file.
      skip_invalid: skip invalid rows, counting them in `num_skipped` and keeping their messages
        in `skipped`, instead of raising at the first one.
      max_length: if given, the longest allowed prompt + response, each response counted with
        the prompt separately: in tokens of `tokenize` (prompt and response tokenized
        separately) if given, else in characters.
      tokenize: text -> token ids (e.g. `ByteTokenizer().encode`), used for `max_length`.

    Returns:
      A `ReadResult` with the records in file order.

    Raises:
      DataError: `<file>:<line>: field '<field>': <problem>` for the first invalid row (unless
        `skip_invalid`); an unreadable or unsupported file; `no valid rows in <file>` when no
        row is valid (an empty file, or only invalid rows under `skip_invalid`).
    """
    path = os.fspath(path)
    if max_length is not None and (isinstance(max_length, bool) or max_length <= 0):
        raise ValueError(f"max_length must be a positive int or None, got {max_length!r}")
    if not os.path.isfile(path):
        raise DataError(f"{path}: no such file", path=path)
    ext = os.path.splitext(path)[1].lower()
    if ext in (".jsonl", ".json"):
        rows = _jsonl_rows(path)
    elif ext == ".parquet":
        rows = _parquet_rows(path)
    else:
        raise DataError(f"{path}: unsupported file type {ext!r} (expected .jsonl, .json or "
                        f".parquet)", path=path)

    def parse(row):
        record = parse_row(row)
        if max_length is not None:
            _check_length(record, max_length, tokenize)
        return record

    return collect_rows(rows, parse, path=path, name=os.path.basename(path),
                        skip_invalid=skip_invalid, container="file")


def collect_rows(rows: Iterator[tuple[int, Any]], parse: Callable[[Any], Any], *, path: str,
                 name: str, skip_invalid: bool, container: str) -> ReadResult:
    """Parses numbered rows into a `ReadResult`, raising or skipping bad ones.

    Args:
      rows: (line or index, row) pairs; a row may be a `_RowError` (e.g. invalid JSON).
      parse: row -> record, raising `_RowError(field, problem)` for a bad row.
      path: `ReadResult.path` and the `DataError.path` of errors.
      name: the name messages start with (`<name>:<line>: field '<field>': <problem>`).
      skip_invalid: skip and count bad rows instead of raising at the first.
      container: what holds the rows, for the "empty" message ("file", "dataset").

    Raises:
      DataError: the first bad row (unless `skip_invalid`); no valid row at all.
    """
    result = ReadResult(path=path, records=[])
    for line, row in rows:
        try:
            if isinstance(row, _RowError):
                raise row
            record = parse(row)
        except _RowError as e:
            where = f" field '{e.field}':" if e.field is not None else ""
            message = f"{name}:{line}:{where} {e.problem}"
            if not skip_invalid:
                raise DataError(message, path=path, line=line, field=e.field) from None
            result.num_skipped += 1
            result.skipped.append(message)
            continue
        result.records.append(record)
        result.lines.append(line)
    if not result.records:
        detail = (f": all {result.num_skipped} rows are invalid, the first: {result.skipped[0]}"
                  if result.num_skipped else f" (the {container} is empty)")
        raise DataError(f"no valid rows in {path}{detail}", path=path)
    return result
