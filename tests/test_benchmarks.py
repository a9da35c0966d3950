"""The benchmark harness works (no timings are asserted: speed lives in benchmarks/)."""

import numpy as np
import pytest

from benchmarks import ours, spec


def test_flop_count_matches_a_hand_count():
    m = spec.SIZES["tiny"]
    d, f, layers, v = m["d_model"], m["d_ff"], m["n_layers"], m["vocab_size"]
    w = spec.workload("w1", "tiny")
    body = layers * (4 * d * d + 3 * d * f)
    per_token = 2 * body + 4 * layers * d * w.seq_len
    assert spec.step_flops("w1", "tiny") == 3 * per_token * 2 * w.batch * w.seq_len
    w2 = spec.workload("w2", "tiny")
    fwd = (2 * (body + v * d) + 4 * layers * d * w2.seq_len) * 2 * w2.batch * w2.seq_len
    assert spec.step_flops("w2", "tiny") == 4 * fwd
    assert spec.tokens_per_step("w3", "tiny") == spec.workload("w3", "tiny").batch * 8


def test_inputs_are_shared_and_w2_pairs_share_their_prompt():
    a = spec.inputs("w2", "tiny", num_batches=2)
    b = spec.inputs("w2", "tiny", num_batches=2)
    np.testing.assert_array_equal(a["chosen_ids"], b["chosen_ids"])
    p = spec.workload("w2", "tiny").prompt_len
    np.testing.assert_array_equal(a["chosen_ids"][..., :p], a["rejected_ids"][..., :p])
    assert a["chosen_ids"].min() >= 3 and a["chosen_ids"].max() < spec.SIZES["tiny"]["vocab_size"]


@pytest.mark.parametrize("name,dtype", [("w1", "float32"), ("w3", "float32"),
                                        ("w2", "bfloat16")])
def test_alignax_side_runs_and_reports_every_field(name, dtype):
    result = ours.WORKLOADS[name]("tiny", steps=2, warmup=0, dtype=dtype)
    assert result["dtype"] == dtype and dtype in result["notes"]
    assert len(result["step_times"]) == 2 and all(t > 0 for t in result["step_times"])
    for key in ("compile_s", "tokens_per_step", "flops_per_step", "peak_rss_mb", "notes"):
        assert key in result
    assert result["flops_per_step"] == spec.step_flops(name, "tiny")


def test_summary_separates_compile_time_from_the_first_step():
    from benchmarks import run

    results = [{"step_times": [1.0, 1.2, 1.1], "compile_s": 5.1, "tokens_per_step": 100,
                "flops_per_step": 2e9, "peak_rss_mb": 10.0},
               {"step_times": [0.9, 1.0, 1.1], "compile_s": 4.0, "tokens_per_step": 100,
                "flops_per_step": 2e9, "peak_rss_mb": 12.0}]
    s = run.summarize(results, peak=4e9)
    assert s["step_s"] == 1.05 and s["tok_s"] == 100 / 1.05
    assert s["compile_s"] == 4.55  # median first step
    assert abs(s["setup_s"] - 3.5) < 1e-12  # median of (5.1 - 1.1, 4.0 - 1.0)
    assert abs(s["mfu"] - 2e9 / 1.05 / 4e9) < 1e-12 and s["peak_rss_mb"] == 12.0


def test_profile_splits_concurrent_ops_and_counts_idle_time():
    from benchmarks import profile

    def op(name, ts, dur, module="jit_step"):
        return {"ph": "X", "name": name, "ts": ts, "dur": dur, "args": {"hlo_module": module}}

    events = [op("dot.1", 0, 10), op("fusion.2", 5, 10),  # overlap in [5, 10)
              op("ThunkExecutor::Execute", 0, 30),          # runtime event: not an op
              op("dot.1", 20, 5, module="jit_other")]       # same name, other module
    spent, idle = profile.attribute(events)
    assert spent[("jit_step", "dot.1")] == pytest.approx(5 + 2.5)
    assert spent[("jit_step", "fusion.2")] == pytest.approx(2.5 + 5)
    assert spent[("jit_other", "dot.1")] == pytest.approx(5)
    assert idle == pytest.approx(5)  # [15, 20)
    text = profile.report(spent, idle, {("jit_step", "dot.1"): ("f32[4,4]", "dot_general")}, 5)
    assert "f32[4,4]" in text and "dot_general" in text
    # microseconds in, milliseconds out
    assert text.splitlines()[0] == "wall 0 ms, of which no XLA op running 0 ms"


@pytest.mark.slow
def test_profile_runs_a_tiny_workload(tmp_path):
    import os
    import subprocess
    import sys

    # a subprocess: the profiler sets XLA_FLAGS (an HLO dump) before jax starts
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.run([sys.executable, "-m", "benchmarks.profile", "--workload", "w1",
                           "--size", "tiny", "--warmup", "0", "--top", "5", "--dump-dir",
                           str(tmp_path)], cwd=root, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "by kind:" in proc.stdout
    # the op table names shapes from the HLO dump (e.g. "f32[...]")
    table = proc.stdout.split("jax op", 1)[1]
    assert "f32[" in table


def test_host_memory_policy_is_applied_without_importing_jax():
    import os
    import subprocess
    import sys

    from alignax.train import host_memory

    # the peer's process loads the policy without alignax's package (and so without jax)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    code = ("import sys; from benchmarks import spec; ok = spec.reuse_host_memory(); "
            "print(ok, 'jax' in sys.modules, 'alignax' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    applied = host_memory._glibc() is not None
    assert proc.stdout.split() == [str(applied), "False", "False"]


def test_loop_overhead_benchmark_measures_both_sides():
    from benchmarks import loop

    out = loop.measure("tiny", steps=3, rounds=1)
    assert len(out["bare_step_s"]) == len(out["loop_step_s"]) == 1
    assert all(t > 0 for t in out["bare_step_s"] + out["loop_step_s"] + out["loop_fixed_s"])
    assert out["ratio"] == out["loop_median_s"] / out["bare_median_s"]
    with pytest.raises(ValueError, match="--steps must be >= 2"):
        loop.measure("tiny", steps=1, rounds=1)
