"""benchmarks/gpu.sh works on the CPU (tiny size) and its formulas are the documented ones; no
timing or target is asserted (speed lives in benchmarks/)."""

import os
import subprocess

import pytest

from benchmarks import gpu, spec

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize("kind,name", [("NVIDIA H100 80GB HBM3", "NVIDIA H100 SXM"),
                                       ("NVIDIA H100 PCIe", "NVIDIA H100 PCIe"),
                                       ("NVIDIA H200", "NVIDIA H200"),
                                       ("NVIDIA A100-SXM4-80GB", "NVIDIA A100"), ("cpu", None)])
def test_datasheet_by_device_kind(kind, name):
    sheet = gpu.datasheet(kind)
    assert (sheet and sheet["name"]) == name
    if name == "NVIDIA H100 SXM":
        assert sheet["peak_flops"] == 989e12 and sheet["hbm_bytes_s"] == 3.35e12


def test_llama1b_shape_and_flops():
    # Llama-3.2-1B: 1.236B parameters, all of them in the matmuls once the tied head is counted
    assert spec.matmul_params("llama1b", lm_head=True) == 1_235_746_816
    assert spec.kv_width("llama1b") == 512 and spec.kv_width("tiny") == 64


def test_decode_roofline_by_hand():
    w, m = spec.workload("w3", "tiny"), spec.SIZES["tiny"]
    weights = spec.matmul_params("tiny", lm_head=True) * 2
    kv = 2 * m["n_layers"] * m["d_model"] * 2  # k and v, no GQA at tiny, bf16
    total = weights + w.batch * w.prompt_len * kv + sum(
        weights + w.batch * (w.prompt_len + t) * kv for t in range(w.new_tokens))
    # a huge peak: every forward is memory-bound, t_roof = bytes / bandwidth
    r = gpu.decode_roofline("tiny", 2, bandwidth=1e9, peak=1e30)
    assert r["bytes"] == total and r["steps"] == w.new_tokens + 1
    assert r["memory_bound_steps"] == r["steps"] and r["seconds"] == pytest.approx(total / 1e9)
    # a tiny bandwidth-free device: compute-bound, t_roof = FLOPs / peak = spec's W3 count
    r = gpu.decode_roofline("tiny", 2, bandwidth=1e30, peak=1e9)
    assert r["seconds"] == pytest.approx(spec.step_flops("w3", "tiny") / 1e9)


def test_summary_table_and_targets_without_a_peer():
    device = {"kind": "NVIDIA H100 80GB HBM3", "platform": "gpu", "matmul_flops": 8e14,
              "matmul": "8192^3 bfloat16", "copy_bytes_s": 3e12,
              "datasheet": gpu.datasheet("NVIDIA H100 80GB HBM3")}
    result = {"workload": "w2", "step_times": [0.2, 0.1, 0.3], "tokens_per_step": 4096,
              "flops_per_step": 4.45e13, "compile_s": 30.0}
    ours = gpu.summarize(result, device, "llama1b", "bfloat16")
    assert ours["step_s"] == 0.2 and ours["tok_s"] == 4096 / 0.2
    assert ours["mfu"] == pytest.approx(4.45e13 / 0.2 / 989e12)
    assert ours["mfu_measured"] == pytest.approx(4.45e13 / 0.2 / 8e14)
    w3 = gpu.summarize({**result, "workload": "w3"}, device, "llama1b", "bfloat16")
    t_roof = gpu.decode_roofline("llama1b", 2, 3.35e12, 989e12)["seconds"]
    assert w3["roofline"] == pytest.approx(t_roof / 0.2)
    missing = {"error": "peer: not installed (no trl)"}
    rows = {"w2": (ours, missing), "w3": (w3, missing)}

    class Args:
        size, dtype, steps, warmup = "llama1b", "bfloat16", 3, 1

    text = gpu.table(rows, device, Args, "no trl")
    assert "peer: not installed (no trl)" in text and "| w2 | alignax | 0.2000 |" in text
    assert "target W2 DPO MFU >= 45%: FAIL (22.5% vs 45%)" in text
    assert "target W2 ahead of the peer: n/a (not measured)" in text
    # no datasheet (a CPU): targets are not judged
    assert all("n/a" in line for line in gpu.targets(rows, {"kind": "cpu"}))


@pytest.mark.slow  # an end-to-end training run: the system tier (make test-slow)
def test_gpu_sh_runs_the_tiny_size_on_the_cpu(tmp_path):
    out = tmp_path / "r.json"
    proc = subprocess.run(
        ["bash", "benchmarks/gpu.sh", "--size", "tiny", "--workloads", "w3", "--steps", "1",
         "--warmup", "1", "--peer", "none", "--budget", "200", "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:] + proc.stdout[-2000:]
    text = proc.stdout
    assert '"platform": "cpu"' in text and "w3 roofline:" in text  # probe and plan
    assert "| w3 | alignax |" in text and "peer: not installed (--peer none)" in text
    assert "target W3 decode >= 50% of HBM roofline: n/a" in text
    assert out.exists()
