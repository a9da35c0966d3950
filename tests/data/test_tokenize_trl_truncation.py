"""`tokenize_pair(truncation_mode=...)` truncates over-long pairs exactly as TRL's DPOTrainer.

TRL (trl 1.16) tokenises a pair in `DPOTrainer._prepare_dataset` (prompt ids, then each response
as the rest of prompt + response; the eos appended to standard pairs), drops the pairs whose
prompt alone has >= max_length tokens when truncation_mode is "keep_start", and cuts each side's
prompt + response to max_length in `DataCollatorForPreference` (keep_start: the first tokens;
keep_end: the last). The test runs both of TRL's functions on the parity fixtures' 32 pairs
(word-level tokenizer with Qwen's specials; the conversational pairs in Qwen2.5's template) at
lengths where some pairs fit, some are cut and (keep_start) some are dropped, and checks that
alignax keeps the same pairs (a dropped pair is alignax's DataError on field "prompt") with the
same ids, attention masks and completion masks.
"""

import types

import numpy as np
import pytest

pytest.importorskip("trl")

from datasets import Dataset  # noqa: E402
from trl import DPOConfig, DPOTrainer  # noqa: E402
from trl.trainer.dpo_trainer import DataCollatorForPreference  # noqa: E402

from alignax.data import DataError, HFTokenizer  # noqa: E402
from alignax.data.hf_datasets import parse_hf_row  # noqa: E402
from alignax.data.tokenize import tokenize_pair  # noqa: E402
from tests.data import QWEN25  # noqa: E402
from tests.parity.trl_fixtures import (  # noqa: E402
    conversational_pairs,
    standard_pairs,
    write_tokenizer,
)

# (pairs, max_length, truncation_mode): standard pairs have 2-6 prompt and 6-15 total tokens,
# conversational ones 25-29 and 29-38 (Qwen2.5's default system prompt)
CASES = [(standard_pairs, 5, "keep_start"), (standard_pairs, 11, "keep_start"),
         (standard_pairs, 11, "keep_end"), (conversational_pairs, 28, "keep_start"),
         (conversational_pairs, 33, "keep_end")]


@pytest.fixture(scope="module")
def tokenizers(tmp_path_factory):
    path = tmp_path_factory.mktemp("tok")
    hf = write_tokenizer(path, chat_template=QWEN25)
    return hf, HFTokenizer.from_file(str(path))


def _trl_rows(records, hf, max_length, mode):
    """TRL's kept rows (their index in `records`) and each one collated alone: {index: batch}."""
    args = DPOConfig(output_dir="unused", max_length=max_length, truncation_mode=mode,
                     report_to="none", use_cpu=True)
    trainer = types.SimpleNamespace(_tokenizer=hf, _is_vision_dataset=False)
    dataset = Dataset.from_list([{**r, "index": i} for i, r in enumerate(records)])
    tokenized = DPOTrainer._prepare_dataset(trainer, dataset, hf, args, "train")
    collate = DataCollatorForPreference(pad_token_id=hf.pad_token_id, max_length=max_length,
                                        truncation_mode=mode)
    return {row["index"]: {k: v.numpy() for k, v in collate([row]).items()}
            for row in tokenized}


@pytest.mark.parametrize("make_pairs, max_length, mode", CASES,
                         ids=[f"{m.__name__}-{n}-{t}" for m, n, t in CASES])
def test_truncation_equals_trl(tokenizers, make_pairs, max_length, mode):
    hf, tok = tokenizers
    records = make_pairs()
    trl = _trl_rows(records, hf, max_length, mode)
    cut = 0
    for i, row in enumerate(records):
        try:
            ours = tokenize_pair(parse_hf_row(row), tok, max_length=max_length,
                                 truncation_mode=mode)
        except DataError as e:
            assert e.field == "prompt" and i not in trl, (i, str(e))
            continue
        assert i in trl, i
        theirs = trl[i]  # [2, T']: chosen, rejected, right-padded to the longer of the two
        for j, side in enumerate(("chosen", "rejected")):
            n = int(theirs["attention_mask"][j].sum())
            cut += n == max_length
            np.testing.assert_array_equal(ours[f"{side}_mask"][:n], 1)
            np.testing.assert_array_equal(ours[f"{side}_mask"][n:], 0)
            np.testing.assert_array_equal(ours[f"{side}_ids"][:n], theirs["input_ids"][j][:n])
            np.testing.assert_array_equal(ours[f"{side}_response_mask"][:n],
                                          theirs["completion_mask"][j][:n])
    dropped = len(records) - len(trl)
    assert cut > 0 and (dropped > 0) == (mode == "keep_start" and max_length in (5, 28))
