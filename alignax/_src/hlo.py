"""Reading compiled HLO text: the largest array with a given dimension (memory checks in tests
and in benchmarks.aot)."""

from __future__ import annotations

import math
import re

SHAPE_RE = re.compile(r"\b(f32|bf16|f16|s32|pred)\[([0-9,]+)\]")
ITEMSIZE = {"f32": 4, "bf16": 2, "f16": 2, "s32": 4, "pred": 1}


def largest_array_with_dim(hlo_text: str, size: int) -> tuple[str, int]:
    """The largest array in the HLO text with a dimension of `size` (e.g. the vocabulary):
    (its shape as written, e.g. "f32[16,256,32000]", its bytes); ("", 0) if there is none."""
    best, best_bytes = "", 0
    for m in SHAPE_RE.finditer(hlo_text):
        dims = [int(d) for d in m.group(2).split(",")]
        if size in dims:
            n = math.prod(dims) * ITEMSIZE[m.group(1)]
            if n > best_bytes:
                best, best_bytes = f"{m.group(1)}[{m.group(2)}]", n
    return best, best_bytes
