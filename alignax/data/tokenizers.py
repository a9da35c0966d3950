"""Tokenizers that need no files and no network."""

from __future__ import annotations

from typing import Iterable


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
