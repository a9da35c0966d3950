"""Text pairs -> fixed-length token arrays."""

import numpy as np
import pytest

from alignax.data import ByteTokenizer, DataError, PreferenceRecord, RatingRecord
from alignax.data.tokenize import tokenize_pair, tokenize_pairs


def test_layout_of_a_tokenized_pair():
    tok = ByteTokenizer()
    out = tokenize_pair(PreferenceRecord("ab", "c", "de"), tok, max_length=8)
    a, b, c, d, e = (ord(ch) + 3 for ch in "abcde")
    np.testing.assert_array_equal(out["chosen_ids"], [1, a, b, c, 2, 0, 0, 0])
    np.testing.assert_array_equal(out["chosen_mask"], [1, 1, 1, 1, 1, 0, 0, 0])
    np.testing.assert_array_equal(out["chosen_response_mask"], [0, 0, 0, 1, 1, 0, 0, 0])
    np.testing.assert_array_equal(out["rejected_ids"], [1, a, b, d, e, 2, 0, 0])
    np.testing.assert_array_equal(out["rejected_response_mask"], [0, 0, 0, 1, 1, 1, 0, 0])


def test_too_long_and_wrong_record_type():
    tok = ByteTokenizer()
    with pytest.raises(DataError, match="rejected: 10 tokens"):
        tokenize_pair(PreferenceRecord("ab", "c", "defghi"), tok, max_length=8)
    with pytest.raises(DataError, match="record 0 is a RatingRecord"):
        tokenize_pairs([RatingRecord("p", "r", {"rating": 1.0})], tok, max_length=8)
