"""Data errors whose messages name the file, the line (or row) and the field at fault."""

from __future__ import annotations


class DataError(ValueError):
    """Malformed input: bad JSON or UTF-8, a missing field, a wrong type, empty or over-long text.

    The message reads `<file>:<line>: field '<field>': <problem>` (Parquet: the 1-based row in
    place of the line; no field part when the whole line is at fault), so it can be read as is
    and grepped like a compiler error. The parts are also kept as attributes.

    Attributes:
      path: the file, or None.
      line: 1-based line (JSONL) or row (Parquet), or None for a file-level problem.
      field: the offending field (e.g. "chosen", "chosen[1].content"), or None.
    """

    def __init__(self, message: str, *, path: str | None = None, line: int | None = None,
                 field: str | None = None):
        super().__init__(message)
        self.path = path
        self.line = line
        self.field = field
