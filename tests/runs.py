"""Helpers for tests that run `alignax run` in subprocesses."""

import glob
import os
import socket
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMOKE = "experiments/bt_dpo_synthetic.py:smoke"


def env(devices: int = 1, **extra) -> dict:
    e = dict(os.environ)
    # keep the suite's compile flags (tests/conftest.py), add the host device count
    e["XLA_FLAGS"] = " ".join(f for f in e.get("XLA_FLAGS", "").split()
                              if not f.startswith("--xla_force_host_platform_device_count")
                              ) + f" --xla_force_host_platform_device_count={devices}"
    e["JAX_PLATFORMS"] = "cpu"
    e["PYTHONUNBUFFERED"] = "1"
    e.update(extra)
    return e


def command(workdir, *overrides, spec=SMOKE):
    return [sys.executable, "-m", "alignax.cli", "run", spec, "--workdir", str(workdir),
            "--config.sft.train.progress=False", "--config.rm.train.progress=False",
            "--config.dpo.train.progress=False", *overrides]


def run(workdir, *overrides, devices=1, timeout=600, check=True, extra_env=None):
    out = subprocess.run(command(workdir, *overrides), cwd=REPO,
                         env=env(devices, **(extra_env or {})),
                         capture_output=True, text=True, timeout=timeout)
    if check and out.returncode != 0:
        raise AssertionError(f"alignax run failed ({out.returncode}):\n{out.stdout}\n{out.stderr}")
    return out


def metrics_files(workdir) -> dict[str, str]:
    """{relative path: text} of every metrics.jsonl under a workdir."""
    out = {}
    for path in sorted(glob.glob(os.path.join(workdir, "**", "metrics.jsonl"), recursive=True)):
        with open(path) as f:
            out[os.path.relpath(path, workdir)] = f.read()
    return out


def count_metric_lines(workdir) -> int:
    return sum(text.count("\n") for text in metrics_files(workdir).values())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def check_smoke_workdir(workdir) -> dict:
    """What every `:smoke` run must leave behind: summary.json with per-seed results for every
    variant, each claim with a status and its numbers, config.json, and metric plots. Returns
    the summary."""
    import json

    with open(os.path.join(workdir, "summary.json")) as f:
        summary = json.load(f)
    assert summary["results"], "no results"
    for variant, res in summary["results"].items():
        assert res["per_seed"], variant
        for name, stats in res["metrics"].items():
            assert stats["n"] == len(res["per_seed"]), name
    for claim in summary["claims"]:
        assert isinstance(claim["passed"], bool) and claim["measured"], claim
        # protocol claims only (docs/protocol.md): a kind, a status, and an interval's fields
        assert claim.get("kind") in ("comparative", "threshold", "sanity"), claim
        assert claim["status"] in ("PASS", "FAIL", "INCONCLUSIVE"), claim
    assert summary["paper_status"]["status"] in ("REPRODUCED", "NOT REPRODUCED",
                                                 "INCONCLUSIVE"), summary["paper_status"]
    assert os.path.exists(os.path.join(workdir, "config.json"))
    assert glob.glob(os.path.join(workdir, "**", "plots", "*.png"), recursive=True)
    return summary


def load_tool(name: str):
    """The module `tools/<name>.py` (tools/ is a folder of scripts, not a package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, os.path.join(REPO, "tools",
                                                                     f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_processes(argv, num_processes: int = 2, devices: int = 1, timeout=600,
                  extra_env=None) -> list[tuple[str, str]]:
    """Runs `argv` as the `num_processes` processes of one jax.distributed job on this machine
    (each given `--coordinator 127.0.0.1:PORT --num-processes N --process-id i`, as `alignax
    run` takes them, and `devices` CPU devices); returns each one's (stdout, stderr), raising
    AssertionError with the output of any that failed."""
    port = free_port()
    procs = [
        subprocess.Popen(
            list(argv) + ["--coordinator", f"127.0.0.1:{port}",
                          "--num-processes", str(num_processes), "--process-id", str(i)],
            cwd=REPO, env=env(devices, **(extra_env or {})), stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True)
        for i in range(num_processes)
    ]
    try:
        outs = [p.communicate(timeout=timeout) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for i, (p, (out, err)) in enumerate(zip(procs, outs)):
        if p.returncode != 0:
            raise AssertionError(f"process {i} failed ({p.returncode}):\n{out}\n{err[-4000:]}")
    return outs
