"""`evaluate_preference_file` scores a chat model's pairs in its own chat template."""

import json

import numpy as np
import pytest
from tokenizers import Tokenizer, models, pre_tokenizers

from alignax.data.tokenizers import HFTokenizer
from alignax.eval import rewardbench

WORDS = ["<pad>", "<eos>", "<bos>", "<user>", "<assistant>", "<system>", "what", "is", "two",
         "plus", "four", "five", "be", "kind"]
TEMPLATE = ("{{ bos_token }} {% for m in messages %}<{{ m['role'] }}> {{ m['content'] }} "
            "{% if m['role'] == 'assistant' %}{{ eos_token }} {% endif %}{% endfor %}"
            "{% if add_generation_prompt %}<assistant> {% endif %}")


def _tokenizer(template=TEMPLATE):
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="<pad>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return HFTokenizer(tok, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>",
                       chat_template=template)


def _file(tmp_path):
    path = tmp_path / "pairs.jsonl"
    rows = [{"prompt": "what is two plus two", "chosen": "four", "rejected": "five",
             "subset": "math-prm"}]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return str(path)


def _scored_ids(path, tokenizer, **kw):
    seen = []

    def score_fn(ids, mask):
        seen.extend(np.asarray(i)[np.asarray(m) > 0].tolist() for i, m in zip(ids, mask))
        return np.zeros(len(ids), np.float32)

    rewardbench.evaluate_preference_file(path, score_fn, tokenizer, max_length=24,
                                         batch_size=2, **kw)
    return seen


def test_pairs_are_scored_as_the_rendered_conversation(tmp_path):
    tok = _tokenizer()
    path = _file(tmp_path)
    ids = _scored_ids(path, tok)
    want = [tok.apply_chat_template([{"role": "user", "content": "what is two plus two"},
                                     {"role": "assistant", "content": answer}], tokenize=True)
            for answer in ("four", "five")]
    assert ids[:2] == [list(w) for w in want]
    with_system = _scored_ids(path, tok, system="be kind")
    assert with_system[0][:4] == [WORDS.index(w) for w in ("<bos>", "<system>", "be", "kind")]
    plain = _scored_ids(path, tok, chat_template=False)
    assert WORDS.index("<user>") not in plain[0]


def test_template_options_are_checked(tmp_path):
    path = _file(tmp_path)
    with pytest.raises(ValueError, match="no chat template"):
        _scored_ids(path, _tokenizer(template=None), chat_template=True)
    with pytest.raises(ValueError, match="system message"):
        _scored_ids(path, _tokenizer(), chat_template=False, system="be kind")
