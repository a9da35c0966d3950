"""XLA:CPU flags alignax sets before jax starts its CPU backend.

XLA:CPU in jaxlib 0.10.2 hands fused dot / elementwise / reduce computations to YNNPACK
(`--xla_cpu_experimental_ynn_fusion_type`, on by default). Those fusions return wrong numbers
for ordinary programs, differently from run to run (reads of memory nothing wrote):

- the cosine sum(a b) / (|a| |b|) over broadcast shapes [1, 1728, 1, 16] x [128, 1, 1, 16]
  under jit: errors up to 1.9 (float64 reference);
- `sequence_table.sequence_log_probs` of a table of zeros made inside jit: NaN and values of
  1e38 in place of -L log V;
- `jit(jacrev)` of a reward model over a batch: wrong rows.

With the YNNPACK fusions off (an empty list) all three are exact to float32 rounding, and the
compile and run times of the smoke experiments are unchanged within noise (measured on a 2-core
CPU). `ensure_cpu_flags` therefore adds `--xla_cpu_experimental_ynn_fusion_type=` to
`XLA_FLAGS` when alignax is imported, unless the variable already names that flag (a user who
sets it keeps their choice). The flag is read when jax creates its CPU client, so it must be
set before the first computation; importing alignax first does that. It only concerns XLA:CPU:
GPU and TPU programs are compiled by their own backends and do not read it.
"""

from __future__ import annotations

import os

YNN_FLAG = "--xla_cpu_experimental_ynn_fusion_type="


def ensure_cpu_flags(environ=os.environ) -> bool:
    """Adds `YNN_FLAG` (YNNPACK fusions off) to `environ["XLA_FLAGS"]` unless it names the flag.

    Returns True when the flag was added. Call before jax initialises its backends.
    """
    flags = environ.get("XLA_FLAGS", "")
    if "xla_cpu_experimental_ynn_fusion_type" in flags:
        return False
    environ["XLA_FLAGS"] = f"{flags} {YNN_FLAG}".strip()
    return True
