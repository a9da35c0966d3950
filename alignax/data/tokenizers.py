"""Tokenizers that need no files and no network."""

from __future__ import annotations

import json
import os
from typing import Iterable

from alignax.data.readers import render_chat


class ByteTokenizer:
    """Byte-level tokenizer: the UTF-8 bytes of the text, shifted past three special ids.

    Ids: 0 = pad, 1 = bos, 2 = eos, byte b -> b + 3, so `vocab_size` = 259. Every string
    round-trips: `decode(encode(s)) == s`.

    Attributes:
      pad_id, bos_id, eos_id: the special ids.
      vocab_size: number of ids (259).
    """

    pad_id: int = 0
    bos_id: int = 1
    eos_id: int = 2
    num_special: int = 3
    vocab_size: int = 256 + 3

    def encode(self, text: str, *, add_bos: bool = False, add_eos: bool = False) -> list[int]:
        """Token ids of `text`.

        Args:
          text: the string.
          add_bos: prepend `bos_id`.
          add_eos: append `eos_id`.

        Returns:
          A list of ints in [0, vocab_size).
        """
        if not isinstance(text, str):
            raise TypeError(f"ByteTokenizer.encode expects a str, got {type(text).__name__}")
        ids = [b + self.num_special for b in text.encode("utf-8")]
        if add_bos:
            ids.insert(0, self.bos_id)
        if add_eos:
            ids.append(self.eos_id)
        return ids

    def decode(self, ids: Iterable[int]) -> str:
        """Text of `ids` (list or 1-D array); special ids are skipped, bad UTF-8 is replaced.

        Raises:
          ValueError: an id outside [0, vocab_size).
        """
        data = bytearray()
        for i in ids:
            i = int(i)
            if not 0 <= i < self.vocab_size:
                raise ValueError(f"token id {i} outside [0, {self.vocab_size})")
            if i >= self.num_special:
                data.append(i - self.num_special)
        return data.decode("utf-8", errors="replace")

    def __len__(self) -> int:
        return self.vocab_size

    def __repr__(self) -> str:
        return "ByteTokenizer(vocab_size=259)"


class HFTokenizer:
    """A `tokenizers` tokenizer.json with alignax's encode/decode interface and a chat template.

    Special tokens are looked up by their strings (`bos_token`, `eos_token`, `pad_token`); when a
    folder has a tokenizer_config.json, its `bos_token`/`eos_token`/`pad_token` are used by
    default. The chat template is alignax's minimal one (`alignax.data.readers.render_chat`):
    "<|role|>\\ncontent\\n" per message, then "<|assistant|>\\n".

    Absent special tokens (e.g. Qwen2 has no bos_token) leave `bos_id`/`eos_id` None:
    `alignax.data.tokenize.tokenize_pair` then prepends no bos, and refuses a tokenizer without
    eos with a one-line `DataError`. Without a pad token `pad_id` is `eos_id`, else 0 (padding
    is masked out, so any valid id does).

    Args:
      tokenizer: a `tokenizers.Tokenizer`.
      bos_token, eos_token, pad_token: special-token strings (None: absent).
    """

    def __init__(self, tokenizer, *, bos_token: str | None = None,
                 eos_token: str | None = None, pad_token: str | None = None):
        self._tok = tokenizer
        self.bos_id = self._special_id(bos_token, "bos_token")
        self.eos_id = self._special_id(eos_token, "eos_token")
        self.pad_id = self._special_id(pad_token, "pad_token")
        if self.pad_id is None:
            self.pad_id = self.eos_id if self.eos_id is not None else 0
        self.vocab_size = tokenizer.get_vocab_size(with_added_tokens=True)

    def _special_id(self, token, what):
        if token is None:
            return None
        i = self._tok.token_to_id(token)
        if i is None:
            raise ValueError(f"{what} {token!r} is not in the vocabulary")
        return i

    @classmethod
    def from_file(cls, path: str, **special_tokens) -> "HFTokenizer":
        """Loads `path` (a tokenizer.json, or a folder holding tokenizer.json and optionally
        tokenizer_config.json); keyword arguments override the special tokens. A missing or
        unreadable tokenizer.json is a one-line ValueError naming it."""
        from tokenizers import Tokenizer  # the HF tokenizers library: only this loader needs it

        folder = path if os.path.isdir(path) else os.path.dirname(path)
        file = os.path.join(path, "tokenizer.json") if os.path.isdir(path) else path
        defaults = {}
        config = os.path.join(folder, "tokenizer_config.json")
        if os.path.exists(config):
            with open(config) as f:
                cfg = json.load(f)
            for key in ("bos_token", "eos_token", "pad_token"):
                value = cfg.get(key)
                if isinstance(value, dict):  # {"content": ...} form
                    value = value.get("content")
                if isinstance(value, str):
                    defaults[key] = value
        try:
            tokenizer = Tokenizer.from_file(file)
        except Exception as e:  # noqa: BLE001 - tokenizers raises a bare Exception
            raise ValueError(f"{file}: not a tokenizer.json the tokenizers library can read "
                             f"({e})") from None
        return cls(tokenizer, **{**defaults, **special_tokens})

    def encode(self, text: str, *, add_bos: bool = False, add_eos: bool = False) -> list[int]:
        """Ids of `text` without the tokenizer's own post-processing specials."""
        ids = list(self._tok.encode(text, add_special_tokens=False).ids)
        if add_bos:
            if self.bos_id is None:
                raise ValueError("this tokenizer has no bos_token")
            ids.insert(0, self.bos_id)
        if add_eos:
            if self.eos_id is None:
                raise ValueError("this tokenizer has no eos_token")
            ids.append(self.eos_id)
        return ids

    def decode(self, ids: Iterable[int], *, skip_special_tokens: bool = True) -> str:
        return self._tok.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)

    def apply_chat_template(self, messages, *, add_generation_prompt: bool = True) -> str:
        """The prompt text of a conversation (alignax's minimal template)."""
        return render_chat(messages, add_generation_cue=add_generation_prompt)

    def __len__(self) -> int:
        return self.vocab_size
