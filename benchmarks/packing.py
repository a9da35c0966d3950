"""Sequence packing (alignax.data.packing): bin fill and planning time, and the SFT step time on
padded rows vs the same examples packed.

    python -m benchmarks.packing --examples 128 --length 512 --rounds 3

Lengths are drawn from a log-normal (median `--median` tokens, sigma 0.9, clipped to [8, T]),
like chat data. Reported: the fraction of real tokens in padded and packed rows, the plan's
rows and time for 100k lengths (BFD and first-fit, windows 1000 and 10000), and the median
time of one jitted SFT value-and-grad on the padded batch and on the packed batch (same
examples, same loss to float rounding), alternating over `--rounds` rounds.
"""

from __future__ import annotations

import argparse
import time

import jax
import numpy as np

from alignax.algorithms.sft import make_sft_loss
from alignax.data.packing import PackedSource, pad_example, plan_bins
from alignax.models.transformer import TransformerConfig, make_lm


def _lengths(rng, n, median, t):
    return np.clip(rng.lognormal(np.log(median), 0.9, n), 8, t).astype(int)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--examples", type=int, default=128)
    p.add_argument("--length", type=int, default=512)
    p.add_argument("--median", type=int, default=80)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--d_model", type=int, default=128)
    args = p.parse_args(argv)
    rng = np.random.default_rng(0)
    t = args.length

    many = _lengths(rng, 100_000, args.median, t)
    for strategy in ("bfd", "first_fit"):
        for window in (1000, 10000):
            start = time.perf_counter()
            bins = plan_bins(many, t, strategy=strategy, window=window)
            print(f"plan 100k lengths, T={t}, {strategy}, window {window}: {len(bins)} rows, "
                  f"fill {many.sum() / (len(bins) * t):.4f}, {time.perf_counter() - start:.2f} s")

    lengths = _lengths(rng, args.examples, args.median, t)
    examples = [{"input_ids": rng.integers(1, 1000, n).astype(np.int32),
                 "loss_mask": np.ones(n, np.int32)} for n in lengths]
    keys = ("input_ids", "mask", "loss_mask")
    padded = {k: np.stack([pad_example(e, t, pad_id=0)[k] for e in examples]) for k in keys}
    source = PackedSource(examples, t)
    packed = {k: np.stack([source[i][k] for i in range(len(source))]) for k in keys}
    print(f"{args.examples} examples, {lengths.sum()} tokens: padded rows {args.examples} "
          f"(fill {lengths.sum() / (args.examples * t):.3f}), packed rows {len(source)} "
          f"(fill {source.fill():.3f})")
    model = make_lm(TransformerConfig(vocab_size=1000, d_model=args.d_model, n_layers=2,
                                      n_heads=4, d_ff=4 * args.d_model))
    params = jax.jit(model.init)(jax.random.key(0))
    grad = jax.jit(jax.value_and_grad(make_sft_loss(model.apply), has_aux=True))
    for batch in (padded, packed):
        jax.block_until_ready(grad(params, batch, None))
    times = {"padded": [], "packed": []}
    losses = {}
    for _ in range(args.rounds):
        for name, batch in (("padded", padded), ("packed", packed)):
            start = time.perf_counter()
            (loss, _), g = grad(params, batch, None)
            jax.block_until_ready(g)
            times[name].append(time.perf_counter() - start)
            losses[name] = float(loss)
    med = {k: float(np.median(v)) for k, v in times.items()}
    print(f"SFT value_and_grad on {jax.devices()[0].platform}: padded {med['padded']:.3f} s, "
          f"packed {med['packed']:.3f} s (x{med['padded'] / med['packed']:.2f}); losses "
          f"{losses['padded']:.6f} / {losses['packed']:.6f}")


if __name__ == "__main__":
    main()
