"""Where one step of a workload spends its wall time, by XLA op: the profile behind RESULTS.md.

    python -m benchmarks.profile --workload w1 --size base --top 30

Runs the alignax side of the workload (benchmarks/ours.py) for `--warmup` steps, then one step
under `jax.profiler.trace`, and reads the trace back. XLA:CPU runs independent ops of a step
concurrently, so summing op durations overstates the busy ones; instead the step's wall time is
swept and every interval is split evenly between the ops running in it (time with no op
running is reported as idle: host work, dispatch, thread hand-offs). Each op is named by its
kind (the fusion name without its number), output shape and the jax operation it came from
(`op_name`, read from the optimized HLO that XLA dumps into `--dump-dir`).
"""

from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import os
import re
import tempfile

from benchmarks import spec

# events of the runtime and of Python, not of XLA ops
_NOT_OPS = re.compile(r"^(\$|ThunkExecutor|PjitFunction|SlinkyThreadPool|end: |CommonPjRt|"
                      r"ParseArguments|Execute)")


def hlo_ops(dump_dir: str) -> dict[tuple[str, str], tuple[str, str]]:
    """(module name, instruction name) -> (output shape, jax op_name), from the optimized HLO
    text files in `dump_dir` (the latest dump of each module wins)."""
    out = {}
    for path in sorted(glob.glob(os.path.join(dump_dir, "*cpu_after_optimizations.txt"))):
        module = re.sub(r"^module_\d+\.", "", os.path.basename(path)).split(
            ".cpu_after_optimizations")[0]
        with open(path) as f:
            for line in f:
                m = re.match(r"\s*(?:ROOT )?%?([\w.\-]+) = (\S+) ", line)
                if m:
                    op = re.search(r'op_name="([^"]*)"', line)
                    name = re.sub(r"jit\(\w+\)/", "", op.group(1)) if op else ""
                    out[(module, m.group(1))] = (m.group(2), name[:90])
    return out


def attribute(events: list[dict]) -> tuple[dict, float]:
    """Wall time per op (split evenly among concurrent ops) and the idle time, in microseconds,
    from complete ("X") trace events."""
    edges = []
    for e in events:
        if e.get("ph") != "X" or _NOT_OPS.match(e["name"]):
            continue
        key = (e.get("args", {}).get("hlo_module", ""), e["name"])
        edges += [(e["ts"], 1, key), (e["ts"] + e["dur"], -1, key)]
    edges.sort(key=lambda x: (x[0], x[1]))
    active: collections.Counter = collections.Counter()
    spent: collections.Counter = collections.Counter()
    idle, last = 0.0, edges[0][0] if edges else 0.0
    for t, kind, key in edges:
        dt = t - last
        if dt > 0:
            running = sum(active.values())
            if running == 0:
                idle += dt
            for k, c in active.items():
                spent[k] += dt * c / max(running, 1)
        active[key] += kind
        if active[key] <= 0:
            del active[key]
        last = t
    return spent, idle


def report(spent: dict, idle: float, ops: dict, top: int) -> str:
    total = sum(spent.values()) + idle
    kinds: collections.Counter = collections.Counter()
    rows: collections.Counter = collections.Counter()
    for (module, name), us in spent.items():
        kind = re.sub(r"\.\d+$", "", name)
        shape, op = ops.get((module, name), ("", ""))
        kinds[kind] += us
        rows[(kind, shape, op)] += us
    lines = [f"wall {total / 1e3:.0f} ms, of which no XLA op running {idle / 1e3:.0f} ms", "",
             "by kind: " + ", ".join(f"{k} {v / 1e3:.0f} ms" for k, v in kinds.most_common(10)),
             "", f"{'ms':>8}  {'kind':24} {'shape':32} jax op"]
    for (kind, shape, op), us in rows.most_common(top):
        lines.append(f"{us / 1e3:8.1f}  {kind:24} {shape:32} {op}")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workload", required=True)
    parser.add_argument("--size", default="base")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--dump-dir", default="", help="XLA dump folder (default: a temp dir)")
    spec.add_host_memory_argument(parser)
    args = parser.parse_args(argv)
    if args.host_memory == "reuse":
        spec.reuse_host_memory()
    dump = args.dump_dir or tempfile.mkdtemp(prefix="alignax_hlo_")
    # before jax is imported: the optimized HLO names the ops of the trace
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                               f" --xla_dump_to={dump} --xla_dump_hlo_as_text").strip()
    import jax

    # the op table reads shapes from the HLO dump, which only a compilation writes: a program
    # loaded from a persistent compilation cache would leave the dump empty
    jax.config.update("jax_enable_compilation_cache", False)

    from benchmarks import ours

    if args.workload not in ours.WORKLOADS:
        parser.error(f"--workload must be one of {sorted(ours.WORKLOADS)}")
    captured = {}

    def capture(run_one, num_batches, *, steps, warmup):
        captured["run"] = (run_one, num_batches)
        return 0.0, [0.0]

    ours.WORKLOADS[args.workload](args.size, steps=1, warmup=0, timer=capture)
    run_one, num_batches = captured["run"]
    for i in range(args.warmup + 1):
        jax.block_until_ready(run_one(i % num_batches))
    trace_dir = tempfile.mkdtemp(prefix="alignax_trace_")
    with jax.profiler.trace(trace_dir, create_perfetto_trace=True):
        jax.block_until_ready(run_one((args.warmup + 1) % num_batches))
    path = glob.glob(os.path.join(trace_dir, "**", "*.trace.json.gz"), recursive=True)[0]
    with gzip.open(path) as f:
        trace = json.load(f)
    events = trace["traceEvents"] if isinstance(trace, dict) else trace
    spent, idle = attribute(events)
    print(f"{args.workload} ({args.size}), one step after {args.warmup + 1}; HLO in {dump}")
    print(report(spent, idle, hlo_ops(dump), args.top))


if __name__ == "__main__":
    main()
