"""Data: validated readers, tokenizers, tfds array_record datasets and grain pipelines.

- `read_preferences`: JSONL/Parquet preference pairs (strings or chat messages) and pointwise
  ratings -> `PreferenceRecord` / `RatingRecord`; bad input raises `DataError` naming file, line
  and field, or is skipped and counted with `skip_invalid=True`.
- `ByteTokenizer`: dependency-free byte-level tokenizer (vocab 259); `HFTokenizer`: a
  tokenizer.json with the model's own chat template (`render_chat_template`,
  `load_chat_template`: rendered as transformers renders it, sandboxed).
- `load_hf_dataset` / `read_hf_dataset` / `HFSource`: Hugging Face `datasets` (local Arrow,
  Parquet, JSON folders, `save_to_disk`; the Hub where a network exists) in TRL's formats
  (paired, unpaired, SFT, prompt-only, ratings) -> records or a lazy random-access source.
- `SFTRecord` / `tokenize_sft`: TRL's SFT formats (`text`, `messages`, prompt-completion as
  strings or messages) tokenised as TRL's SFTTrainer does, with its completion-only and
  assistant-only (`{% generation %}` blocks) loss masks.
- `tokenize_prompt` / `as_conversation`: prompts for online sampling rendered as TRL does, and
  string pairs as one-turn conversations; `tokenize_unpaired` / `mismatched_rows`: KTO rows and
  TRL's KL rows (each prompt with another row's completion).
- `write_preference_dataset` / `load_preference_source`: tfds builders writing array_record,
  read back as random-access sources without TensorFlow.
- `build_token_cache` / `TokenCache` / `cache_key`: tokenisation streamed into an on-disk cache
  keyed by dataset, tokenizer, chat template and settings, resumable chunk by chunk;
  `PackedSource` / `PackIterDataset` / `plan_bins`: sequence packing (best-fit decreasing) for SFT,
  reward-model pairs and DPO-family pairs, with segment ids, each segment's end for pooling and
  (DPO) the response tokens the log-probs sum over.
- `make_batch_iterator`: checkpointable grain iterator of per-process batches whose
  concatenation over processes does not depend on the process count.
"""

from alignax.data.chat_template import load_chat_template, render_chat_template
from alignax.data.curation import pairwise_win_counts, random_pairs, rank_then_sift
from alignax.data.errors import DataError
from alignax.data.hf_datasets import (HFSource, PromptRecord, SFTRecord, UnpairedRecord,
                                      load_hf_dataset, read_hf_dataset)
from alignax.data.packing import PackedSource, PackIterDataset, PaddedSource, plan_bins
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
from alignax.data.token_cache import TokenCache, build_token_cache, cache_key
from alignax.data.tokenize import as_conversation, tokenize_prompt, tokenize_sft
from alignax.data.tokenizers import ByteTokenizer, HFTokenizer
from alignax.data.unpaired import mismatched_rows, tokenize_unpaired

__all__ = [
    "PackIterDataset",
    "PackedSource",
    "PaddedSource",
    "TokenCache",
    "build_token_cache",
    "cache_key",
    "plan_bins",
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
    "HFSource",
    "PromptRecord",
    "SFTRecord",
    "UnpairedRecord",
    "as_conversation",
    "load_chat_template",
    "load_hf_dataset",
    "read_hf_dataset",
    "render_chat_template",
    "tokenize_prompt",
    "tokenize_sft",
    "tokenize_unpaired",
    "mismatched_rows",
]
