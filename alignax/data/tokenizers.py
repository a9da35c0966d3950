"""Tokenizers that need no files and no network."""

from __future__ import annotations

import json
import os
from typing import Any, Iterable, Mapping, Sequence

from alignax.data.chat_template import (
    SPECIAL_TOKEN_NAMES,
    load_chat_template,
    render_chat_template,
    select_chat_template,
)
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
    add_bos: bool = True  # `tokenize_pair` prepends bos_id
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

    chat_template = None  # no model template: conversations use alignax's minimal one

    def apply_chat_template(self, messages: Sequence[Mapping[str, Any]], *,
                            add_generation_prompt: bool = False,
                            tokenize: bool = False) -> str | list[int]:
        """A conversation in alignax's minimal template (`render_chat`), as text or byte ids.

        Args:
          messages: a list of `{"role": str, "content": str}`.
          add_generation_prompt: end with the assistant cue "<|assistant|>\\n".
          tokenize: return ids (no bos/eos added) instead of the text.
        """
        text = render_chat(messages, add_generation_cue=add_generation_prompt)
        return self.encode(text) if tokenize else text

    def __len__(self) -> int:
        return self.vocab_size

    def __repr__(self) -> str:
        return "ByteTokenizer(vocab_size=259)"


class HFTokenizer:
    """A `tokenizers` tokenizer.json with alignax's encode/decode interface and a chat template.

    Special tokens are looked up by their strings (`bos_token`, `eos_token`, `pad_token`); when a
    folder has a tokenizer_config.json, its `bos_token`/`eos_token`/`pad_token` are used by
    default.

    Chat template: the model's own jinja template when the folder has one (chat_template.jinja,
    additional_chat_templates/, or tokenizer_config.json's `chat_template`: see
    `alignax.data.chat_template`), rendered exactly as transformers' `apply_chat_template`;
    otherwise alignax's minimal one (`alignax.data.readers.render_chat`): "<|role|>\ncontent\n"
    per message, then "<|assistant|>\n" as the generation prompt.

    Absent special tokens (e.g. Qwen2 has no bos_token) leave `bos_id`/`eos_id` None:
    `alignax.data.tokenize.tokenize_pair` then prepends no bos, and refuses a tokenizer without
    eos with a one-line `DataError`. `add_bos` says whether the tokenizer prepends its bos to a
    plain text itself (its tokenizer.json post-processor does: Llama, Mistral, Gemma; not
    GPT-2, whose bos_token exists but is never added; detected by encoding a probe text, or
    given): `tokenize_pair` prepends the bos only then, as transformers' `tokenizer(text)` and
    TRL do. Without a pad token `pad_id` is `eos_id`, else 0 (padding
    is masked out, so any valid id does).

    `encode` never adds the tokenizer's own post-processing specials (the BOS a Llama
    tokenizer.json's post-processor would prepend): alignax adds bos/eos explicitly
    (`add_bos`/`add_eos`), and text rendered by a chat template already holds the specials the
    template writes (Llama-3's `<|begin_of_text|>`), so tokenising it adds no second BOS.

    Args:
      tokenizer: a `tokenizers.Tokenizer`.
      bos_token, eos_token, pad_token: special-token strings (None: absent).
      chat_template: a jinja template string, a dict name -> template (several named ones), or
        None (the minimal fallback template).
      special_tokens: every special-token string the template may read (`bos_token`,
        `eos_token`, `unk_token`, `sep_token`, `pad_token`, `cls_token`, `mask_token`); the
        three above always come from their own arguments (None: absent).
      add_bos: whether plain texts get the bos prepended (None: what the tokenizer.json's
        post-processor does; always False without a bos_token).
    """

    def __init__(self, tokenizer, *, bos_token: str | None = None,
                 eos_token: str | None = None, pad_token: str | None = None,
                 chat_template: str | Mapping[str, str] | None = None,
                 special_tokens: Mapping[str, str] | None = None,
                 add_bos: bool | None = None):
        self._tok = tokenizer
        self.bos_id = self._special_id(bos_token, "bos_token")
        self.eos_id = self._special_id(eos_token, "eos_token")
        self.pad_id = self._special_id(pad_token, "pad_token")
        if self.pad_id is None:
            self.pad_id = self.eos_id if self.eos_id is not None else 0
        self.vocab_size = tokenizer.get_vocab_size(with_added_tokens=True)
        if add_bos is None:
            probe = "a"
            bare = tokenizer.encode(probe, add_special_tokens=False).ids
            full = tokenizer.encode(probe, add_special_tokens=True).ids
            add_bos = (self.bos_id is not None and len(full) > len(bare)
                       and full[0] == self.bos_id)
        elif add_bos and self.bos_id is None:
            raise ValueError("add_bos=True needs a bos_token")
        self.add_bos = bool(add_bos)
        if chat_template is not None and not isinstance(chat_template, (str, Mapping)):
            raise ValueError(f"chat_template must be a string, a dict of named templates or None, "
                             f"got {type(chat_template).__name__}")
        self.chat_template = (dict(chat_template) if isinstance(chat_template, Mapping)
                              else chat_template)
        tokens = {k: v for k, v in dict(special_tokens or {}).items() if v is not None}
        for key, value in (("bos_token", bos_token), ("eos_token", eos_token),
                           ("pad_token", pad_token)):
            if value is not None:
                tokens[key] = value
            else:
                tokens.pop(key, None)
        self.special_tokens = {k: tokens[k] for k in SPECIAL_TOKEN_NAMES if k in tokens}

    @property
    def backend(self):
        """The underlying `tokenizers.Tokenizer` (e.g. its `to_str()` serialisation fingerprints
        a token cache: alignax.data.token_cache.tokenizer_fingerprint)."""
        return self._tok

    @property
    def has_chat_template(self) -> bool:
        """Whether the tokenizer carries its own chat template (else the minimal fallback)."""
        return self.chat_template is not None

    def _special_id(self, token, what):
        if token is None:
            return None
        i = self._tok.token_to_id(token)
        if i is None:
            raise ValueError(f"{what} {token!r} is not in the vocabulary")
        return i

    @classmethod
    def from_file(cls, path: str, *, chat_template: str | Mapping[str, str] | None = None,
                  add_bos: bool | None = None, **special_tokens) -> "HFTokenizer":
        """Loads `path` (a tokenizer.json, or a folder holding tokenizer.json and optionally
        tokenizer_config.json and a chat template); keyword arguments override the special
        tokens (bos_token, eos_token, pad_token), the folder's chat template and `add_bos`
        (see the class docstring). A missing or
        unreadable tokenizer.json is a one-line ValueError naming it."""
        from tokenizers import Tokenizer  # the HF tokenizers library: only this loader needs it

        folder = path if os.path.isdir(path) else os.path.dirname(path)
        file = os.path.join(path, "tokenizer.json") if os.path.isdir(path) else path
        defaults = {}
        config = os.path.join(folder, "tokenizer_config.json")
        if os.path.exists(config):
            with open(config) as f:
                cfg = json.load(f)
            for key in SPECIAL_TOKEN_NAMES:
                value = cfg.get(key)
                if isinstance(value, dict):  # {"content": ...} form
                    value = value.get("content")
                if isinstance(value, str):
                    defaults[key] = value
        named = {k: defaults.pop(k) for k in ("bos_token", "eos_token", "pad_token")
                 if k in defaults}
        try:
            tokenizer = Tokenizer.from_file(file)
        except Exception as e:  # noqa: BLE001 - tokenizers raises a bare Exception
            raise ValueError(f"{file}: not a tokenizer.json the tokenizers library can read "
                             f"({e})") from None
        if chat_template is None:
            chat_template = load_chat_template(folder)
        unknown = set(special_tokens) - {"bos_token", "eos_token", "pad_token"}
        if unknown:
            raise TypeError(f"HFTokenizer.from_file got unexpected keywords {sorted(unknown)}")
        return cls(tokenizer, **{**named, **special_tokens}, chat_template=chat_template,
                   special_tokens=defaults, add_bos=add_bos)

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

    def apply_chat_template(self, messages: Sequence[Mapping[str, Any]], *,
                            add_generation_prompt: bool = False, tokenize: bool = False,
                            continue_final_message: bool = False,
                            chat_template: str | None = None,
                            tools: Sequence[Mapping[str, Any]] | None = None,
                            **kwargs: Any) -> str | list[int]:
        """Renders (and optionally tokenises) a conversation with the tokenizer's chat template.

        Same text and ids as transformers' `tokenizer.apply_chat_template(messages,
        add_generation_prompt=..., tokenize=...)`; unlike transformers, text is the default
        (`tokenize=False`), as before. Without a template of its own the tokenizer renders
        alignax's minimal one (`render_chat`).

        Args:
          messages: a list of `{"role": str, "content": str, ...}`.
          add_generation_prompt: end with the header that opens an assistant turn (use it for a
            prompt to be answered).
          tokenize: return token ids (the rendered text encoded WITHOUT the tokenizer's own
            special tokens: a template writes its BOS itself), else the text.
          continue_final_message: end inside the final message (model template only).
          chat_template: a template name (among several) or a whole template string, used in
            place of the tokenizer's own.
          tools: JSON-schema tool descriptions for templates that render them (model template
            only).
          **kwargs: extra template variables (e.g. `enable_thinking=False`).

        Returns:
          The rendered text, or its token ids with `tokenize=True`.
        """
        if chat_template is None and self.chat_template is None:
            if continue_final_message or tools is not None or kwargs:
                raise ValueError("continue_final_message, tools and template variables need a "
                                 "model chat template; this tokenizer has none (minimal fallback)")
            text = render_chat(messages, add_generation_cue=add_generation_prompt)
        else:
            template = select_chat_template(self.chat_template, chat_template, tools=tools)
            text = render_chat_template(template, messages,
                                        add_generation_prompt=add_generation_prompt,
                                        continue_final_message=continue_final_message,
                                        special_tokens=self.special_tokens, tools=tools, **kwargs)
        return self.encode(text) if tokenize else text

    def __len__(self) -> int:
        return self.vocab_size
