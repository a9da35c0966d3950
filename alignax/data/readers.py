"""Readers for preference and rating files (JSONL, Parquet) with validation that names the culprit.

Accepted rows (detected per row):

(a) pairwise, strings:  {"prompt": str, "chosen": str, "rejected": str, ...}
(b) pairwise, chat:     {"chosen": [messages], "rejected": [messages]}          (HH / TRL implicit
                        prompt: the prompt is the longest common prefix of the two conversations)
                        {"prompt": [messages], "chosen": [messages], "rejected": [messages]}
                        (TRL conversational); a message is {"role": str, "content": str}
(c) pointwise ratings:  {"prompt": str, "response": str, "rating": number}
                        {"prompt": str, "response": str, "ratings": {attribute: number}}

Chat prompts are rendered with `render_chat` ("<|role|>\\ncontent\\n" per message, then
"<|assistant|>\\n"); responses are the final assistant message. Other keys are kept in `extras`
(the raw messages too). A bad row raises `DataError` naming file, line (Parquet: row) and field;
with `skip_invalid=True` it is skipped and counted.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from typing import Any, Callable, Iterator, Sequence

from alignax.data.errors import DataError


@dataclasses.dataclass
class PreferenceRecord:
    prompt: str
    chosen: str
    rejected: str
    extras: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class RatingRecord:
    prompt: str
    response: str
    ratings: dict[str, float]
    extras: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class ReadResult:
    """Records read from one file, and what was skipped (with `skip_invalid=True`)."""

    path: str
    records: list
    num_skipped: int = 0
    skipped: list[str] = dataclasses.field(default_factory=list)

    def summary(self) -> str:
        return (f"{os.path.basename(self.path)}: {len(self.records)} valid rows, "
                f"{self.num_skipped} skipped")


def render_chat(messages: Sequence[dict]) -> str:
    """Prompt text of a conversation: each message as "<|role|>\\ncontent\\n", then the cue."""
    parts = [f"<|{m['role']}|>\n{m['content']}\n" for m in messages]
    return "".join(parts) + "<|assistant|>\n"


class _RowError(Exception):
    def __init__(self, field: str | None, message: str):
        super().__init__(message)
        self.field = field
        self.message = message


def _type_name(x) -> str:
    return "null" if x is None else type(x).__name__


def _check_text(row: dict, field: str) -> str:
    if field not in row:
        raise _RowError(field, "missing")
    value = row[field]
    if not isinstance(value, str):
        raise _RowError(field, f"expected a string, got {_type_name(value)}")
    if not value.strip():
        raise _RowError(field, "empty")
    return value


def _check_messages(value, field: str) -> list[dict]:
    if not isinstance(value, list) or not value:
        raise _RowError(field, "expected a non-empty list of messages")
    for i, m in enumerate(value):
        if not isinstance(m, dict) or "role" not in m or "content" not in m:
            raise _RowError(f"{field}[{i}]", "expected a message {\"role\": ..., \"content\": ...}")
        if not isinstance(m["role"], str) or not isinstance(m["content"], str):
            raise _RowError(f"{field}[{i}]", "role and content must be strings")
    return value


def _response_of(messages: list[dict], field: str) -> str:
    last = messages[-1]
    if last["role"] != "assistant":
        raise _RowError(field, f"the last message must be the assistant's, got {last['role']!r}")
    if not last["content"].strip():
        raise _RowError(field, "empty response")
    return last["content"]


def _parse_pair(row: dict) -> PreferenceRecord:
    for field in ("chosen", "rejected"):
        if field not in row:
            raise _RowError(field, "missing")
    chosen, rejected = row["chosen"], row["rejected"]
    extras = {k: v for k, v in row.items() if k not in ("prompt", "chosen", "rejected")}
    if isinstance(chosen, str) or isinstance(rejected, str):
        prompt = _check_text(row, "prompt")
        return PreferenceRecord(prompt, _check_text(row, "chosen"), _check_text(row, "rejected"),
                                extras)
    for field, value in (("chosen", chosen), ("rejected", rejected)):
        if not isinstance(value, list):
            raise _RowError(field, "expected a string or a list of messages, got "
                                   f"{_type_name(value)}")
    chosen = _check_messages(chosen, "chosen")
    rejected = _check_messages(rejected, "rejected")
    if "prompt" in row:  # conversational: explicit prompt messages, responses are completions
        prompt_msgs = _check_messages(row["prompt"], "prompt")
        c = _response_of(chosen, "chosen")
        r = _response_of(rejected, "rejected")
    else:  # implicit prompt: the shared prefix of the two conversations
        n = 0
        while n < min(len(chosen), len(rejected)) - 1 and chosen[n] == rejected[n]:
            n += 1
        if n == 0:
            raise _RowError("chosen", "chosen and rejected share no prompt messages")
        prompt_msgs = chosen[:n]
        if len(chosen) != n + 1 or len(rejected) != n + 1:
            raise _RowError("rejected", "chosen and rejected must differ only in the last message")
        c = _response_of(chosen, "chosen")
        r = _response_of(rejected, "rejected")
    extras["messages"] = {"prompt": prompt_msgs, "chosen": chosen, "rejected": rejected}
    return PreferenceRecord(render_chat(prompt_msgs), c, r, extras)


def _number(value, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _RowError(field, f"expected a number, got {_type_name(value)}")
    if not math.isfinite(value):
        raise _RowError(field, f"expected a finite number, got {value}")
    return float(value)


def _parse_rating(row: dict) -> RatingRecord:
    prompt = _check_text(row, "prompt")
    response = _check_text(row, "response")
    if "ratings" in row:
        ratings = row["ratings"]
        if not isinstance(ratings, dict) or not ratings:
            raise _RowError("ratings", "expected a non-empty object of attribute -> number")
        parsed = {str(k): _number(v, f"ratings.{k}") for k, v in ratings.items()}
    elif "rating" in row:
        parsed = {"rating": _number(row["rating"], "rating")}
    else:
        raise _RowError("rating", "missing (or 'ratings')")
    extras = {k: v for k, v in row.items() if k not in ("prompt", "response", "rating", "ratings")}
    return RatingRecord(prompt, response, parsed, extras)


def parse_row(row: Any):
    """One decoded row -> PreferenceRecord or RatingRecord (raises _RowError)."""
    if not isinstance(row, dict):
        raise _RowError(None, f"expected a JSON object, got {_type_name(row)}")
    if "chosen" in row or "rejected" in row:
        return _parse_pair(row)
    if "response" in row:
        return _parse_rating(row)
    raise _RowError("chosen", "missing: a row needs chosen/rejected or response/rating")


def _length(record, tokenize) -> tuple[str, int]:
    measure = (lambda s: len(tokenize(s))) if tokenize else len
    if isinstance(record, PreferenceRecord):
        lengths = {"chosen": measure(record.prompt) + measure(record.chosen),
                   "rejected": measure(record.prompt) + measure(record.rejected)}
    else:
        lengths = {"response": measure(record.prompt) + measure(record.response)}
    field = max(lengths, key=lengths.get)
    return field, lengths[field]


def _jsonl_rows(path: str) -> Iterator[tuple[int, Any, _RowError | None]]:
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                yield lineno, None, _RowError(None, f"not valid UTF-8 (byte {e.start})")
                continue
            if not text.strip():
                continue
            try:
                yield lineno, json.loads(text), None
            except json.JSONDecodeError as e:
                yield lineno, None, _RowError(None, f"invalid JSON: {e.msg} (column {e.colno})")


def _parquet_rows(path: str) -> Iterator[tuple[int, Any, _RowError | None]]:
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    for i, row in enumerate(table.to_pylist(), start=1):
        yield i, row, None


def read_preferences(
    path: str,
    *,
    skip_invalid: bool = False,
    max_length: int | None = None,
    tokenize: Callable[[str], Sequence[int]] | None = None,
) -> ReadResult:
    """Reads and validates a JSONL (.jsonl/.json) or Parquet (.parquet) preference/rating file.

    Args:
      path: the file.
      skip_invalid: skip bad rows (counted in the result) instead of raising.
      max_length: longest allowed prompt + response, in tokens of `tokenize` if given, else in
        characters.
      tokenize: optional text -> token ids.

    Raises:
      DataError: "<file>:<line>: field '<field>': <problem>" for the first bad row (without
        skip_invalid), or when the file has no valid row.
    """
    if not os.path.isfile(path):
        raise DataError(f"{path}: no such file")
    ext = os.path.splitext(path)[1].lower()
    if ext in (".jsonl", ".json"):
        rows = _jsonl_rows(path)
    elif ext == ".parquet":
        rows = _parquet_rows(path)
    else:
        raise DataError(f"{path}: unsupported file type {ext!r} (use .jsonl or .parquet)")

    result = ReadResult(path=path, records=[])
    name = os.path.basename(path)
    for lineno, row, error in rows:
        try:
            if error is not None:
                raise error
            record = parse_row(row)
            if max_length is not None:
                field, length = _length(record, tokenize)
                if length > max_length:
                    unit = "tokens" if tokenize else "characters"
                    raise _RowError(field, f"too long: {length} {unit} of prompt + response > "
                                           f"max_length={max_length}")
        except _RowError as e:
            where = f" field '{e.field}':" if e.field else ""
            message = f"{name}:{lineno}:{where} {e.message}"
            if not skip_invalid:
                raise DataError(message) from None
            result.num_skipped += 1
            result.skipped.append(message)
            continue
        result.records.append(record)
    if not result.records:
        raise DataError(f"{name}: no valid rows in {path}"
                        + (f" ({result.num_skipped} skipped)" if result.num_skipped else ""))
    return result
