"""Data errors whose messages name the file, the line (or row) and the field at fault."""

from __future__ import annotations


class DataError(ValueError):
    """Malformed input: bad JSON or UTF-8, a missing field, a wrong type, empty or over-long text.

    A row's message reads `<file>:<line>: field '<field>': <problem>`, like a compiler error:
    <file> is the file's base name, <line> the 1-based line (Parquet: the 1-based row), and the
    field part is left out when the whole line is at fault (bad UTF-8 or JSON). File-level
    problems name the full path. The parts are also kept as attributes.

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
