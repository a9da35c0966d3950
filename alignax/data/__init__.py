"""Data: readers with validation, tokenizers, tfds array_record datasets, grain pipelines."""

from alignax.data.errors import DataError
from alignax.data.pipeline import make_batch_iterator
from alignax.data.readers import (
    PreferenceRecord,
    RatingRecord,
    ReadResult,
    read_preferences,
    render_chat,
)
from alignax.data.tfds_builder import load_preference_source, write_preference_dataset
from alignax.data.tokenizers import ByteTokenizer

__all__ = [
    "ByteTokenizer",
    "DataError",
    "PreferenceRecord",
    "RatingRecord",
    "ReadResult",
    "load_preference_source",
    "make_batch_iterator",
    "read_preferences",
    "render_chat",
    "write_preference_dataset",
]
