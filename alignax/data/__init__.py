"""Data: validated readers, tokenizers, tfds array_record datasets and grain pipelines.

- `read_preferences`: JSONL/Parquet preference pairs (strings or chat messages) and pointwise
  ratings -> `PreferenceRecord` / `RatingRecord`; bad input raises `DataError` naming file, line
  and field, or is skipped and counted with `skip_invalid=True`.
- `ByteTokenizer`: dependency-free byte-level tokenizer (vocab 259).
- `write_preference_dataset` / `load_preference_source`: tfds builders writing array_record,
  read back as random-access sources without TensorFlow.
- `make_batch_iterator`: checkpointable grain iterator of per-process batches whose
  concatenation over processes does not depend on the process count.
"""

from alignax.data.curation import pairwise_win_counts, random_pairs, rank_then_sift
from alignax.data.errors import DataError
from alignax.data.pair_builders import select_top_fraction, tie_disentangled_pairs
from alignax.data.pipeline import make_batch_iterator
from alignax.data.readers import (
    PreferenceRecord,
    RatingRecord,
    ReadResult,
    read_preferences,
    render_chat,
)
from alignax.data.tfds_builder import (
    PreferenceSource,
    load_preference_source,
    write_preference_dataset,
)
from alignax.data.tokenizers import ByteTokenizer, HFTokenizer

__all__ = [
    "pairwise_win_counts",
    "random_pairs",
    "rank_then_sift",
    "select_top_fraction",
    "tie_disentangled_pairs",
    "ByteTokenizer",
    "HFTokenizer",
    "DataError",
    "PreferenceRecord",
    "PreferenceSource",
    "RatingRecord",
    "ReadResult",
    "load_preference_source",
    "make_batch_iterator",
    "read_preferences",
    "render_chat",
    "write_preference_dataset",
]
