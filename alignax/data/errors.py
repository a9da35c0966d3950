"""Data errors: messages name the file, the line and the field."""


class DataError(ValueError):
    """Malformed input data (bad JSON, missing field, wrong type, empty or over-long text, ...)."""
