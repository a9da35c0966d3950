"""Runs the workloads for alignax and its peer, alternating, and writes the comparison table.

    python -m benchmarks.run                       # all workloads, base size, print the table
    python -m benchmarks.run --workloads w1 w3 --size tiny --steps 3
    python -m benchmarks.run --write               # also write benchmarks/RESULTS.md

Every measurement runs in a fresh subprocess (so peak memory and compile time are per run), and
the implementations alternate (alignax, peer, alignax, peer, ...) over `--rounds` rounds on the
same inputs, so a slow phase of the machine hits both. Tokens per second is the median over all
timed steps of all rounds (min and max shown). MFU divides the analytic FLOPs of a step
(benchmarks/spec.py) by its time and by the matmul peak measured in the same run (the faster of
a jitted jnp.dot and torch.mm on 2048x2048 float32 matrices, best of several).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile

import numpy as np

from benchmarks import spec

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

PEERS = {"w1": "TRL RewardTrainer", "w2": "TRL DPOTrainer", "w2_pre": "TRL DPOTrainer",
         "w3": "transformers generate", "w4": "TRL GRPOTrainer"}
ALL = ("w1", "w2", "w2_pre", "w3", "w4")


def _run(module: str, workload: str, size: str, steps: int, warmup: int, timeout: int,
         host_memory: str = "reuse", extra: tuple[str, ...] = ()):
    """Runs `python -m benchmarks.<module>` for one workload (`extra`: more arguments, e.g.
    `("--dtype", "bfloat16")`); the result dict, or an error."""
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "r.json")
        cmd = [sys.executable, "-m", f"benchmarks.{module}", "--workload", workload, "--size",
               size, "--steps", str(steps), "--warmup", str(warmup), "--out", out,
               "--host-memory", host_memory, *extra]
        try:
            proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return {"error": f"timed out after {timeout} s"}
        if proc.returncode != 0 or not os.path.exists(out):
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
            return {"error": " | ".join(tail) or f"exit {proc.returncode}"}
        with open(out) as f:
            return json.load(f)


def _peer_available() -> str | None:
    """None if torch, transformers and trl import, else the reason."""
    code = "import torch, transformers, trl"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if proc.returncode:
        return ("peer not installed (pip install torch==2.13.0, then pip install -e '.[peers]'): "
                + proc.stderr.strip().splitlines()[-1])
    return None


PEAK_CODE = {
    "jax": """
import time, jax, jax.numpy as jnp
n = 2048
a = jax.random.normal(jax.random.key(0), (n, n)); b = jax.random.normal(jax.random.key(1), (n, n))
f = jax.jit(jnp.dot); f(a, b).block_until_ready()
best = min((lambda t0: (f(a, b).block_until_ready(), time.perf_counter() - t0)[1])(
    time.perf_counter()) for _ in range(10))
print(2 * n ** 3 / best)
""",
    "torch": """
import os, time, torch
torch.set_num_threads(os.cpu_count())
n = 2048
a = torch.randn(n, n); b = torch.randn(n, n); torch.mm(a, b)
best = min((lambda t0: (torch.mm(a, b), time.perf_counter() - t0)[1])(time.perf_counter())
           for _ in range(10))
print(2 * n ** 3 / best)
""",
}


def matmul_peak() -> dict[str, float]:
    """FLOP/s of a 2048^3 float32 matmul, best of 10, per framework (those that import)."""
    out = {}
    for name, code in PEAK_CODE.items():
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        if proc.returncode == 0:
            out[name] = float(proc.stdout.strip().splitlines()[-1])
    return out


def summarize(results: list[dict], peak: float) -> dict:
    """Median/min/max tokens per second, MFU, compile time and peak memory over runs."""
    ok = [r for r in results if "error" not in r]
    if not ok:
        return {"error": results[0]["error"] if results else "not run"}
    times = np.concatenate([r["step_times"] for r in ok])
    tokens, flops = ok[0]["tokens_per_step"], ok[0]["flops_per_step"]
    med = float(np.median(times))
    return {"tok_s": tokens / med, "tok_s_min": tokens / float(times.max()),
            "tok_s_max": tokens / float(times.min()), "step_s": med,
            "mfu": flops / med / peak if peak else float("nan"),
            "compile_s": float(np.median([r["compile_s"] for r in ok])),
            # the first step minus a steady-state step: compilation and one-time set-up alone
            "setup_s": float(np.median([max(0.0, r["compile_s"] - float(np.median(
                r["step_times"]))) for r in ok])),
            "peak_rss_mb": float(max(r["peak_rss_mb"] for r in ok)),
            "steps": int(times.size), "notes": ok[0].get("notes", "")}


def machine() -> str:
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            model = next((line.split(":", 1)[1].strip() for line in f
                          if line.startswith("model name")), "")
    except OSError:
        pass
    return f"{model or platform.processor()}, {os.cpu_count()} cores, {platform.platform()}"


def commit() -> str:
    proc = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                          text=True)
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                           capture_output=True, text=True).stdout.strip()
    return proc.stdout.strip() + (" (with uncommitted changes)" if dirty else "")


def table(rows: dict, peak: dict, args) -> str:
    lines = [
        f"Run {datetime.date.today().isoformat()} at commit {commit()}; size `{args.size}`, "
        f"{args.rounds} round(s) x {args.steps} timed steps after {args.warmup} warm-up "
        f"per implementation; host memory `{args.host_memory}` on both "
        "sides.",
        "",
        f"Machine: {machine()}. Matmul peak (2048^3 fp32): "
        + ", ".join(f"{k} {v / 1e9:.0f} GFLOP/s" for k, v in peak.items()) + ".",
        "",
        "| workload | implementation | tokens/s median (min-max) | MFU | step s | "
        "first step s (compile = first - step) | peak RSS MB | alignax / peer |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for w, (ours, peer) in rows.items():
        ratio = (ours["tok_s"] / peer["tok_s"]
                 if "tok_s" in ours and "tok_s" in peer else float("nan"))
        for name, s in (("alignax", ours), (PEERS[w], peer)):
            if "error" in s:
                lines.append(f"| {w} | {name} | {s['error']} | | | | | |")
                continue
            lines.append(
                f"| {w} | {name} | {s['tok_s']:.0f} ({s['tok_s_min']:.0f}-{s['tok_s_max']:.0f})"
                f" | {100 * s['mfu']:.0f}% | {s['step_s']:.3f} | {s['compile_s']:.1f} "
                f"({s['setup_s']:.1f}) | "
                f"{s['peak_rss_mb']:.0f} | " + (f"**{ratio:.2f}x**" if name == "alignax" else "")
                + " |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workloads", nargs="+", default=list(ALL), choices=ALL)
    parser.add_argument("--size", default="base")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--timeout", type=int, default=1800)
    spec.add_host_memory_argument(parser)
    parser.add_argument("--write", action="store_true", help="append to benchmarks/RESULTS.md")
    parser.add_argument("--json", default="", help="also dump the raw results here")
    args = parser.parse_args(argv)

    peer_missing = _peer_available()
    if peer_missing:
        print(f"benchmarks: {peer_missing}; only alignax is measured", flush=True)
    peak = matmul_peak()
    best_peak = max(peak.values()) if peak else 0.0
    raw, rows = {}, {}
    for w in args.workloads:
        runs = {"ours": [], "peer": []}
        for r in range(args.rounds):
            for side, module in (("ours", "ours"), ("peer", "peers")):
                if side == "peer" and peer_missing:
                    runs["peer"].append({"error": peer_missing})
                    continue
                res = _run(module, w, args.size, args.steps, args.warmup, args.timeout,
                           args.host_memory)
                runs[side].append(res)
                status = res.get("error") or f"median {np.median(res['step_times']):.3f} s/step"
                print(f"{w} round {r + 1} {side}: {status}", flush=True)
        raw[w] = runs
        rows[w] = (summarize(runs["ours"], best_peak), summarize(runs["peer"], best_peak))
    text = table(rows, peak, args)
    print(text)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"peak": peak, "raw": raw}, f, indent=1)
    if args.write:
        path = os.path.join(HERE, "RESULTS.md")
        header = "" if os.path.exists(path) else "# Benchmark results\n\n"
        with open(path, "a") as f:
            f.write(header + f"## {args.size}\n\n" + text + "\n")
        print(f"appended to {path}")


if __name__ == "__main__":
    main()
