"""What every implementation of a workload must run: model sizes, workload shapes, inputs, FLOPs.

The alignax side (benchmarks/ours.py) and the peers (benchmarks/peers.py) read the same spec and
the same input arrays, so the ratio compares equal work. FLOPs are counted analytically:

  forward FLOPs per token = 2 N_matmul + 4 L d T_ctx
    N_matmul: parameters of the matmuls (attention q/k/v/o, SwiGLU gate/up/down, and the LM head
      when logits are computed; embeddings are lookups and norms are negligible);
    4 L d T_ctx: QK^T and attention-times-V, 2 d T_ctx multiply-adds each per layer, counted over
      the full context T_ctx (no causal halving, as in the usual MFU convention).
  training step = 3 x forward (backward = 2 x forward) of the trained model;
  W2 adds one forward of the frozen reference; W3 counts one forward per generated token with
  the KV cache (T_ctx = the current length).
"""

from __future__ import annotations

import dataclasses

import numpy as np

SIZES = {
    # quick checks (seconds)
    "tiny": dict(vocab_size=512, d_model=64, n_layers=2, n_heads=4, d_ff=176),
    # the benchmark model: Llama-style, about 30M parameters
    "base": dict(vocab_size=8192, d_model=512, n_layers=8, n_heads=8, d_ff=1408),
    # for a GPU
    "1b": dict(vocab_size=32000, d_model=2048, n_layers=16, n_heads=16, d_ff=5632),
    # Llama-3.2-1B's shape (1.24B parameters): grouped-query attention (8 kv heads of 64),
    # tied embeddings, RoPE base 5e5; benchmarks/gpu.sh runs it in bfloat16
    "llama1b": dict(vocab_size=128256, d_model=2048, n_layers=16, n_heads=32, n_kv_heads=8,
                    d_ff=8192, tie_embeddings=True, rope_theta=500000.0),
}


@dataclasses.dataclass(frozen=True)
class Workload:
    name: str
    description: str
    batch: int            # W1/W2: pairs; W3: prompts; W4: prompts
    seq_len: int = 0      # W1/W2: tokens per sequence
    prompt_len: int = 0   # W2: prompt part of each sequence; W3/W4: prompt tokens
    new_tokens: int = 0   # W3/W4: generated tokens
    samples: int = 1      # W4: samples per prompt


WORKLOADS = {
    "w1": Workload("w1", "reward-model step (BT loss, AdamW)", batch=8, seq_len=256),
    "w2": Workload("w2", "DPO step (sigmoid, frozen reference in the step)", batch=8, seq_len=256,
                   prompt_len=64),
    "w3": Workload("w3", "sampling (temperature 1, top-p 1, KV cache)", batch=16, prompt_len=64,
                   new_tokens=128),
    "w4": Workload("w4", "GRPO iteration (rollouts + scoring + one update)", batch=8,
                   prompt_len=64, new_tokens=128, samples=8),
}

# Tiny size shrinks the shapes too, so a check runs in seconds.
TINY_SHAPES = dict(batch=2, seq_len=32, prompt_len=8, new_tokens=8, samples=2)


def workload(name: str, size: str) -> Workload:
    w = WORKLOADS[name]
    if size == "tiny":  # shrink the shapes the workload uses (nonzero, or > 1 for samples)
        used = {k: v for k, v in TINY_SHAPES.items() if getattr(w, k) > (k == "samples")}
        w = dataclasses.replace(w, **used)
    return w


def kv_width(size: str) -> int:
    """K E: the width of the key (and of the value) projection; d_model without GQA."""
    m = SIZES[size]
    return m.get("n_kv_heads", m["n_heads"]) * (m["d_model"] // m["n_heads"])


def matmul_params(size: str, *, lm_head: bool) -> int:
    """Parameters of the matmuls: q, o (D x D), k, v (D x K E), SwiGLU (3 D F) per layer, and
    the LM head (V x D, tied or not) when `lm_head`."""
    m = SIZES[size]
    d, f, layers = m["d_model"], m["d_ff"], m["n_layers"]
    per_layer = 2 * d * d + 2 * d * kv_width(size) + 3 * d * f
    return layers * per_layer + (m["vocab_size"] * d if lm_head else 0)


def forward_flops(size: str, tokens: int, ctx: int, *, lm_head: bool) -> float:
    """Forward FLOPs of `tokens` tokens each attending over `ctx` positions."""
    m = SIZES[size]
    per_token = 2 * matmul_params(size, lm_head=lm_head) + 4 * m["n_layers"] * m["d_model"] * ctx
    return float(per_token) * tokens


def step_flops(name: str, size: str) -> float:
    """Analytic FLOPs of one step (W1, W2), one generation call (W3) or one iteration (W4)."""
    w = workload(name, size)
    if name == "w1":
        return 3 * forward_flops(size, 2 * w.batch * w.seq_len, w.seq_len, lm_head=False)
    if name == "w2":
        fwd = forward_flops(size, 2 * w.batch * w.seq_len, w.seq_len, lm_head=True)
        return 3 * fwd + fwd  # policy forward + backward, reference forward
    if name in ("w3", "w4"):
        rows = w.batch * w.samples
        prefill = forward_flops(size, rows * w.prompt_len, w.prompt_len, lm_head=True)
        decode = sum(forward_flops(size, rows, w.prompt_len + t, lm_head=True)
                     for t in range(w.new_tokens))
        if name == "w3":
            return prefill + decode
        total = w.prompt_len + w.new_tokens
        # old-policy and reference log-probs (2 forwards) + one update (3 forwards)
        update = 5 * forward_flops(size, rows * total, total, lm_head=True)
        return prefill + decode + update
    raise ValueError(f"unknown workload {name!r}")


def tokens_per_step(name: str, size: str) -> int:
    """Tokens processed per step: sequence tokens (W1, W2) or generated tokens (W3, W4)."""
    w = workload(name, size)
    if name in ("w1", "w2"):
        return 2 * w.batch * w.seq_len
    return w.batch * w.samples * w.new_tokens


def inputs(name: str, size: str, *, num_batches: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Pre-tokenized inputs (ids in [3, V), no padding), identical for every implementation.

    W1/W2: chosen_ids, rejected_ids [num_batches, B, T] (W2's first prompt_len tokens of a pair
    are the same prompt). W3/W4: prompt_ids [B, P].
    """
    w = workload(name, size)
    v = SIZES[size]["vocab_size"]
    rng = np.random.default_rng(seed)
    if name in ("w1", "w2"):
        shape = (num_batches, w.batch, w.seq_len)
        chosen = rng.integers(3, v, shape, dtype=np.int64).astype(np.int32)
        rejected = rng.integers(3, v, shape, dtype=np.int64).astype(np.int32)
        if w.prompt_len:
            rejected[..., :w.prompt_len] = chosen[..., :w.prompt_len]
        return {"chosen_ids": chosen, "rejected_ids": rejected}
    return {"prompt_ids": rng.integers(3, v, (w.batch, w.prompt_len), dtype=np.int64
                                       ).astype(np.int32)}


def w4_reward(response_ids: np.ndarray, vocab_size: int) -> np.ndarray:
    """W4's rule reward, the same for every implementation: share of even token ids. [N, R]."""
    return (np.asarray(response_ids) % 2 == 0).mean(axis=-1).astype(np.float32)


def reuse_host_memory() -> bool:
    """alignax.train.host_memory.reuse_host_memory, loaded from its file so that the peer's
    process does not import alignax (and with it jax)."""
    import importlib.util
    import os

    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "alignax",
                        "train", "host_memory.py")
    module_spec = importlib.util.spec_from_file_location("_alignax_host_memory", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module.reuse_host_memory()


def add_host_memory_argument(parser) -> None:
    """`--host-memory reuse|default`, shared by every benchmark command (benchmarks/README.md)."""
    parser.add_argument("--host-memory", choices=("reuse", "default"), default="reuse",
                        help="reuse: glibc keeps freed memory (alignax.train.host_memory), "
                             "applied before anything runs, the same for both sides; default: "
                             "glibc as it is")


def run_cli(workloads, description: str, argv=None, *, min_steps: int = 0,
            setup=None, with_seed: bool = False, dtypes: tuple = ("float32",)) -> None:
    """The command line both sides share: run one workload, write (or print) its JSON result.

    `python -m benchmarks.<side> --workload w1 --size tiny --steps 3 --warmup 1 --out r.json`
    """
    import argparse
    import json
    import os

    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--workload", required=True, choices=sorted(workloads))
    parser.add_argument("--size", default="tiny", choices=sorted(SIZES))
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    if with_seed:
        parser.add_argument("--seed", type=int, default=0)
    if len(dtypes) > 1:
        parser.add_argument("--dtype", default=dtypes[0], choices=dtypes,
                            help="compute dtype (parameters stay float32)")
    parser.add_argument("--out", default="")
    add_host_memory_argument(parser)
    args = parser.parse_args(argv)
    if args.host_memory == "reuse":
        reuse_host_memory()
    if args.warmup < min_steps or args.steps < max(min_steps, 1):
        parser.error(f"--warmup must be >= {min_steps} and --steps >= {max(min_steps, 1)}")
    if setup is not None:
        setup()
    kwargs = {"seed": args.seed} if with_seed else {}
    if len(dtypes) > 1:
        kwargs["dtype"] = args.dtype
    result = workloads[args.workload](args.size, steps=args.steps, warmup=args.warmup, **kwargs)
    text = json.dumps(result, indent=1)
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            f.write(text)
    else:
        print(text)
