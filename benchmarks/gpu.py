"""One-GPU benchmark: W1-W4 at Llama-3.2-1B's shape in bfloat16, alignax against TRL on one GPU.

    bash benchmarks/gpu.sh                          # on a machine with one NVIDIA GPU
    bash benchmarks/gpu.sh --size tiny              # the same harness on the CPU, in seconds
    bash benchmarks/gpu.sh --dry-run                # device, plan and formulas; runs nothing
    python -m benchmarks.gpu --workloads w2 w3 --steps 3 --json out.json

Each workload runs in a fresh subprocess per side (`benchmarks.ours --dtype bfloat16`,
`benchmarks.peers --dtype bfloat16`: TRL's Trainer with bf16 autocast over float32 parameters,
the precision policy of alignax's bf16 compute over float32 parameters; W3 generates with bf16
weights on both sides), alignax first, in the order W2, W3, W1, W4 (the two with targets first),
within a time budget. Reported per side and workload (benchmarks/README.md, "GPU"):

  step s          median wall time of the timed steps (each ended by a device sync);
  tokens/s        spec.tokens_per_step / step s;
  MFU             spec.step_flops / step s / peak, against the device's dense bf16 datasheet peak
                  (`DEVICES`) and against the bf16 matmul rate measured in the same run;
  HBM roofline    W3 only: t_roof / step s, with t_roof = sum over the prefill and each decode
                  step of max(bytes / HBM bandwidth, FLOPs / peak), bytes = the matmul weights in
                  the compute dtype (read once per forward) + the KV cache read (2 L K E ctx rows
                  x dtype bytes); against the datasheet bandwidth and the copy rate measured here.

Targets of issue 20 are printed as PASS / FAIL lines, never asserted: W2 (1B DPO step) MFU >= 45%
of the datasheet peak, W3 decode >= 50% of the HBM roofline, both ahead of the peer.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import time

from benchmarks import run, spec

ATTENTION_ENV = "ALIGNAX_BENCH_ATTENTION"  # = benchmarks.ours.ATTENTION_ENV (no jax import here)

# Dense (no sparsity) bf16 tensor-core peak and HBM bandwidth by datasheet; the first entry whose
# key is in `jax.devices()[0].device_kind` wins. KINDS.md of the lending workplace measured
# 798 TFLOP/s (bf16 8192^3 matmul) and 3.0 TB/s (copy) on an H100 SXM, 769-798 TFLOP/s and
# 4.3 TB/s on an H200: the run measures both again (the "measured" columns).
DEVICES = (
    ("H100 PCIe", "NVIDIA H100 PCIe", 756e12, 2.0e12),
    ("H100", "NVIDIA H100 SXM", 989e12, 3.35e12),
    ("H200", "NVIDIA H200", 989e12, 4.8e12),
    ("A100", "NVIDIA A100", 312e12, 2.0e12),
)
ORDER = ("w2", "w3", "w1", "w4")
TARGET_MFU = 0.45       # W2 at 1B, of the datasheet bf16 peak
TARGET_ROOFLINE = 0.50  # W3 decode, of the HBM roofline

CEILINGS_CODE = r"""
import json, time, jax, jax.numpy as jnp
dev = jax.devices()[0]
gpu = dev.platform == "gpu"
n, dtype = (8192, jnp.bfloat16) if gpu else (1024, jnp.float32)
a = jax.random.normal(jax.random.key(0), (n, n), dtype)
b = jax.random.normal(jax.random.key(1), (n, n), dtype)
mm = jax.jit(jnp.dot)
def best(f, *args, reps):
    jax.block_until_ready(f(*args))
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        jax.block_until_ready(f(*args))
        times.append(time.perf_counter() - t0)
    return min(times)
flops = 2 * n ** 3 / best(mm, a, b, reps=10)
m = (1 << 29) if gpu else (1 << 24)   # 1 GiB of bf16 on a GPU, 64 MiB of fp32 on a CPU
x = jnp.ones((m,), dtype)
copy = jax.jit(lambda x: x * 2)
bw = 2 * m * x.dtype.itemsize / best(copy, x, reps=10)   # bytes read + bytes written
print(json.dumps({"kind": dev.device_kind, "platform": dev.platform, "matmul_flops": flops,
                  "matmul": f"{n}^3 {jnp.dtype(dtype).name}", "copy_bytes_s": bw,
                  "jax": jax.__version__}))
"""


def datasheet(kind: str) -> dict | None:
    """{"name", "peak_flops", "hbm_bytes_s"} of a device kind, or None (CPU, unknown GPU)."""
    for key, name, peak, bandwidth in DEVICES:
        if key.lower() in kind.lower():
            return {"name": name, "peak_flops": peak, "hbm_bytes_s": bandwidth}
    return None


def measure_device(timeout: int = 300) -> dict:
    """Device kind and measured ceilings (bf16 matmul FLOP/s, copy bytes/s), in a subprocess
    so that this process holds no accelerator memory while the workloads run."""
    try:
        proc = subprocess.run([sys.executable, "-c", CEILINGS_CODE],  # noqa: S603 (fixed argv)
                              capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"device probe timed out after {timeout} s"}
    if proc.returncode:
        return {"error": "device probe failed: " + " | ".join(
            (proc.stderr or proc.stdout).strip().splitlines()[-3:])}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def nvidia_smi() -> str:
    """`nvidia-smi --query-gpu=name,memory.total,driver_version`, or why not."""
    try:
        proc = subprocess.run(["nvidia-smi",  # noqa: S603, S607 (fixed argv, PATH's)
                               "--query-gpu=name,memory.total,driver_version",
                               "--format=csv,noheader"], capture_output=True, text=True,
                              timeout=30)
        return proc.stdout.strip() or proc.stderr.strip()
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"nvidia-smi: {e.__class__.__name__}"


def decode_roofline(size: str, dtype_bytes: int, bandwidth: float, peak: float) -> dict:
    """The fastest W3 call the device allows: sum over the prefill and each decode step of
    max(bytes / bandwidth, FLOPs / peak).

    bytes of a forward = matmul weights x dtype_bytes (read once, shared by the batch; the
    embedding lookup reads B rows only) + the KV cache: 2 (k, v) x L x K E x ctx x rows x
    dtype_bytes read (decode) or written (prefill). FLOPs as `spec.forward_flops`.
    Returns {"seconds", "bytes", "memory_bound_steps", "steps"}.
    """
    w = spec.workload("w3", size)
    m = spec.SIZES[size]
    rows = w.batch * w.samples
    weights = spec.matmul_params(size, lm_head=True) * dtype_bytes
    kv_per_token = 2 * m["n_layers"] * spec.kv_width(size) * dtype_bytes
    steps = [(rows * w.prompt_len, w.prompt_len, weights + rows * w.prompt_len * kv_per_token)]
    steps += [(rows, w.prompt_len + t, weights + rows * (w.prompt_len + t) * kv_per_token)
              for t in range(w.new_tokens)]
    seconds, total_bytes, memory_bound = 0.0, 0, 0
    for tokens, ctx, nbytes in steps:
        t_mem = nbytes / bandwidth
        t_flop = spec.forward_flops(size, tokens, ctx, lm_head=True) / peak
        seconds += max(t_mem, t_flop)
        total_bytes += nbytes
        memory_bound += t_mem >= t_flop
    return {"seconds": seconds, "bytes": total_bytes, "memory_bound_steps": memory_bound,
            "steps": len(steps)}


def summarize(result: dict, device: dict, size: str, dtype: str) -> dict:
    """Step time, tokens/s, MFU and (W3) roofline fraction of one side's result."""
    if "error" in result:
        return {"error": result["error"]}
    import numpy as np

    step = float(np.median(result["step_times"]))
    out = {"step_s": step, "tok_s": result["tokens_per_step"] / step,
           "first_s": result["compile_s"], "steps": len(result["step_times"])}
    sheet = device.get("datasheet")
    for key, peak in (("mfu", sheet and sheet["peak_flops"]),
                      ("mfu_measured", device.get("matmul_flops"))):
        out[key] = result["flops_per_step"] / step / peak if peak else None
    if result["workload"] == "w3":
        nbytes = 2 if dtype == "bfloat16" else 4
        for key, bw, peak in (
                ("roofline", sheet and sheet["hbm_bytes_s"], sheet and sheet["peak_flops"]),
                ("roofline_measured", device.get("copy_bytes_s"), device.get("matmul_flops"))):
            out[key] = (decode_roofline(size, nbytes, bw, peak)["seconds"] / step
                        if bw and peak else None)
    return out


def _pct(x) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def table(rows: dict, device: dict, args, peer_missing: str | None) -> str:
    """The markdown table and the target lines."""
    sheet = device.get("datasheet")
    peak = (f"datasheet {sheet['name']}: {sheet['peak_flops'] / 1e12:.0f} TFLOP/s bf16 dense, "
            f"{sheet['hbm_bytes_s'] / 1e12:.2f} TB/s HBM" if sheet else
            "no datasheet entry for this device (MFU and roofline against measured ceilings "
            "only)")
    measured = (f"measured: {device['matmul_flops'] / 1e12:.4g} TFLOP/s ({device['matmul']} "
                f"matmul), {device['copy_bytes_s'] / 1e12:.4g} TB/s copy (read + write)"
                if "matmul_flops" in device else f"measured: {device.get('error', 'not run')}")
    lines = [
        f"Run {datetime.date.today().isoformat()} at commit {run.commit()}; size `{args.size}`, "
        f"{args.dtype}, {args.steps} timed steps after {args.warmup} warm-up per side; alignax "
        f"attention `{getattr(args, 'attention', 'auto')}`.",
        "",
        f"Device: {device.get('kind', '?')} ({device.get('platform', '?')}; "
        f"{device.get('smi', '')}); jax {device.get('jax', '?')}. Ceilings: {peak}; "
        f"{measured}.",
        "",
        "| workload | implementation | step s | tokens/s | MFU (datasheet) | MFU (measured) | "
        "HBM roofline (datasheet / measured) | first step s | alignax / peer |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for w, (ours, peer) in rows.items():
        ratio = (f"**{ours['tok_s'] / peer['tok_s']:.2f}x**"
                 if "tok_s" in ours and "tok_s" in peer else "")
        for name, s in (("alignax", ours), (run.PEERS[w], peer)):
            if "error" in s:
                lines.append(f"| {w} | {name} | {s['error']} | | | | | | |")
                continue
            roof = ("" if "roofline" not in s else
                    f"{_pct(s['roofline'])} / {_pct(s['roofline_measured'])}")
            lines.append(f"| {w} | {name} | {s['step_s']:.4f} | {s['tok_s']:.0f} | "
                         f"{_pct(s['mfu'])} | {_pct(s['mfu_measured'])} | {roof} | "
                         f"{s['first_s']:.1f} | {ratio if name == 'alignax' else ''} |")
    if peer_missing:
        lines += ["", f"peer: not installed ({peer_missing})"]
    return "\n".join(lines + [""] + targets(rows, device)) + "\n"


def targets(rows: dict, device: dict) -> list[str]:
    """PASS / FAIL / n/a lines for the issue's targets (printed, never asserted)."""
    out = []
    gpu = device.get("datasheet") is not None

    def line(name, value, goal, ok_value):
        if not gpu:
            return f"target {name}: n/a (no GPU datasheet entry)"
        if value is None:
            return f"target {name}: n/a (not measured)"
        return f"target {name}: {'PASS' if ok_value else 'FAIL'} ({value} vs {goal})"

    def get(w, side, key):
        return rows.get(w, ({}, {}))[side].get(key)

    mfu = get("w2", 0, "mfu")
    out.append(line("W2 DPO MFU >= 45%", mfu and _pct(mfu), "45%",
                    mfu is not None and mfu >= TARGET_MFU))
    roof = get("w3", 0, "roofline")
    out.append(line("W3 decode >= 50% of HBM roofline", roof and _pct(roof), "50%",
                    roof is not None and roof >= TARGET_ROOFLINE))
    for w in ("w2", "w3"):
        ours, peer = get(w, 0, "tok_s"), get(w, 1, "tok_s")
        value = None if ours is None or peer is None else f"{ours / peer:.2f}x the peer"
        out.append(line(f"{w.upper()} ahead of the peer", value, "> 1.00x",
                        value is not None and ours > peer))
    return out


def plan(args, device: dict) -> str:
    """What a run would do: per workload its FLOPs and tokens per step (and W3's roofline)."""
    sheet = device.get("datasheet")
    lines = [f"size {args.size} ({spec.matmul_params(args.size, lm_head=True) / 1e6:.4g}M "
             f"matmul parameters), {args.dtype}; workloads {' '.join(args.workloads)}; "
             f"{args.warmup} warm-up + {args.steps} timed steps per side; budget {args.budget} s; "
             f"alignax attention {args.attention!r}"]
    for w in args.workloads:
        base = w.split("_")[0]
        lines.append(f"  {w}: {spec.WORKLOADS[base].description}; "
                     f"{spec.step_flops(base, args.size) / 1e9:.4g} GFLOP and "
                     f"{spec.tokens_per_step(base, args.size)} tokens per step")
    if "w3" in args.workloads:
        nbytes = 2 if args.dtype == "bfloat16" else 4
        bw = sheet["hbm_bytes_s"] if sheet else device.get("copy_bytes_s")
        peak = sheet["peak_flops"] if sheet else device.get("matmul_flops")
        if bw and peak:
            r = decode_roofline(args.size, nbytes, bw, peak)
            lines.append(f"  w3 roofline: {r['bytes'] / 1e9:.4g} GB over {r['steps']} forwards "
                         f"({r['memory_bound_steps']} memory-bound) -> {r['seconds'] * 1e3:.4g} "
                         "ms per call")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="llama1b", choices=sorted(spec.SIZES))
    parser.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float32"))
    parser.add_argument("--workloads", nargs="+", default=list(ORDER), choices=run.ALL)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--peer", choices=("trl", "none"), default="trl",
                        help="none: measure alignax only")
    parser.add_argument("--budget", type=int, default=420,
                        help="seconds for all workloads; what would start later is skipped")
    parser.add_argument("--timeout", type=int, default=300, help="seconds per measurement")
    parser.add_argument("--attention", default="auto",
                        help="alignax's attention implementation (alignax.models.attention; "
                             "auto: cuDNN flash attention on a GPU in bf16)")
    parser.add_argument("--dry-run", action="store_true", help="probe, plan, run nothing")
    parser.add_argument("--json", default="", help="also write the raw results here")
    parser.add_argument("--write", action="store_true", help="append to benchmarks/RESULTS.md")
    spec.add_host_memory_argument(parser)
    args = parser.parse_args(argv)
    if args.warmup < 1 or args.steps < 1:
        parser.error("--warmup and --steps must be >= 1 (the peers' first step is a warm-up)")
    start = time.perf_counter()

    device = measure_device()
    device["datasheet"] = datasheet(device.get("kind", ""))
    device["smi"] = nvidia_smi() if device.get("platform") == "gpu" else "no nvidia-smi query"
    print(f"device: {json.dumps(device)}", flush=True)
    print(plan(args, device), flush=True)
    if args.dry_run:
        return
    if "error" in device:
        print(f"benchmarks.gpu: {device['error']}; the workloads run without ceilings",
              flush=True)
    peer_missing = "--peer none" if args.peer == "none" else run._peer_available()
    if peer_missing and peer_missing != "--peer none":  # run's message minus its first words
        peer_missing = peer_missing.removeprefix("peer not installed ")
    if peer_missing:
        print(f"peer: not installed ({peer_missing}); only alignax is measured", flush=True)
    extra = ("--dtype", args.dtype)
    os.environ[ATTENTION_ENV] = args.attention  # read by benchmarks.ours in the subprocesses
    raw, rows = {}, {}
    for w in args.workloads:
        results = []
        for side, module in (("ours", "ours"), ("peer", "peers")):
            left = args.budget - (time.perf_counter() - start)
            if side == "peer" and peer_missing:
                res = {"error": "peer: not installed"}  # the reason is printed below the table
            elif left < 10:
                res = {"error": f"skipped: time budget of {args.budget} s spent"}
            else:
                res = run._run(module, w, args.size, args.steps, args.warmup,
                               int(min(args.timeout, left)), args.host_memory, extra)
            results.append(res)
            times = sorted(res.get("step_times", [0.0]))
            status = res.get("error") or f"median {times[len(times) // 2]:.4f} s/step"
            print(f"{w} {side}: {status} ({time.perf_counter() - start:.0f} s)", flush=True)
        raw[w] = results
        rows[w] = tuple(summarize(r, device, args.size, args.dtype) for r in results)
    text = table(rows, device, args, peer_missing)
    print(text)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": device, "raw": raw, "rows": rows}, f, indent=1)
    if args.write:
        path = os.path.join(run.HERE, "RESULTS.md")
        with open(path, "a") as f:
            f.write(f"## GPU, {args.size} {args.dtype}\n\n" + text + "\n")
        print(f"appended to {path}")


if __name__ == "__main__":
    main()
