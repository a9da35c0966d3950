"""Configs and gold-labelled pairs of the language testbed's reference models."""

import pytest

from alignax.tasks.language import BigramLanguage
from alignax.tasks.policies import (gold_preference_pairs, make_gold, proxy_rm_config,
                                    sft_policy_config)


def test_configs_reject_unknown_keys():
    with pytest.raises(ValueError, match="unknown keys"):
        sft_policy_config(steps=3)
    with pytest.raises(ValueError, match="unknown keys"):
        proxy_rm_config(steps=3)


def test_gold_preference_pairs_follow_the_gold_at_low_temperature():
    task = BigramLanguage(vocab_size=12, prompt_len=3, response_len=6, concentration=0.3,
                          label_temperature=0.05, seed=0)
    pairs = gold_preference_pairs(task, make_gold(task, {"kind": "token_score"}), 400, seed=0,
                                  temperature=0.0)
    assert all(p["chosen_gold"] >= p["rejected_gold"] for p in pairs)
    assert pairs[0]["chosen_ids"].shape == (task.seq_len,)
    with pytest.raises(ValueError, match="unknown gold kind"):
        make_gold(task, {"kind": "nope"})
