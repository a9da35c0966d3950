"""benchmarks.aot: the real 1B DPO step compiled for 8 simulated devices (FSDP), nothing allocated;
the tiny DPO step with and without the row constraint.

The subprocess compile takes about 25-35 s on the 2-core CPU (1B Llama-3 shape, 8 pairs x 256
tokens, layers scanned when the checkout has `scan_layers`), the tiny pair about 10 s."""

import json
import os
import subprocess
import sys

import pytest

from benchmarks import aot

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _lever_flags() -> list[str]:
    have = aot.available_levers()
    flags = []
    if have["scan"]:
        flags.append("--scan")
    if have["remat"]:
        flags += ["--remat", "full"]
    if have["param_dtype"]:
        flags += ["--param-dtype", "bfloat16"]
    if have["logits_chunk"]:
        flags += ["--logits-chunk", "16384"]
    return flags


@pytest.mark.slow
def test_1b_dpo_on_8_devices(tmp_path):
    out = tmp_path / "report.json"
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8",
               JAX_PLATFORMS="cpu")
    cmd = [sys.executable, "-m", "benchmarks.aot", "--model", "1b", "--step", "dpo",
           "--devices", "8", "--seq", "256", "--json", str(out), *_lever_flags()]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = json.loads(out.read_text())
    c = r["case"]
    assert (r["layout"], r["pairs"], r["backend"]) == ("fsdp=8", 8, "cpu")
    assert r["params"] == 1_235_814_400  # Llama-3.2-1B (tied embeddings)
    m = r["memory"]
    assert m["argument"] > 0 and m["temp"] > 0 and m["output"] > 0
    assert r["peak"] == m["argument"] + m["output"] - m["alias"] + m["temp"]
    # donated state: every output byte of the new state reuses an input buffer
    assert 0 < m["alias"] <= m["output"]
    # arguments per device = the shards of state + batch + reference, exactly as XLA counts them
    assert m["argument"] == r["expected_args_bytes"]
    # ~ params / 8 x (param + 2 fp32 Adam moments + the reference's param bytes); the norm
    # scales are replicated, the batch is ids/masks: within 1%
    p_bytes = 2 if c["param_dtype"] == "bfloat16" else 4
    formula = r["params"] * (p_bytes + 8 + p_bytes) / 8
    assert abs(m["argument"] - formula) / formula < 0.01
    assert r["base_copies_in_args"] == pytest.approx(2.0, abs=0.01)  # policy + reference
    for name, capacity in aot.TARGETS.items():
        assert r["fits"][name] == (r["peak"] <= capacity)
    assert r["collectives"]["all-gather"] > 0  # FSDP gathers the sharded weights
    assert set(r["collectives"]) == set(aot.COLLECTIVES)
    assert r["flops"] > 0 and r["analytic_flops_per_device"] > 0
    assert r["compile_s"] > 0
    if c["logits_chunk"]:  # chunked log-probs: no [B, T, V] logits buffer in the program
        assert not r["vocab_buffer"]["has_btv"], r["vocab_buffer"]


def test_count_collectives_and_vocab_buffers():
    text = ("  %all-gather.1 = f32[8,4]{1,0} all-gather(f32[1,4]{1,0} %p), dimensions={0}\n"
            "  %ags = (f32[1,4], f32[8,4]) all-gather-start(f32[1,4]{1,0} %p)\n"
            "  %all-reduce.2 = f32[16,32000]{1,0} all-reduce(f32[16,32000]{1,0} %x)\n"
            "  %cp = bf16[2,32000,7]{2,1,0} collective-permute(bf16[2,32000,7] %y)\n")
    counts = aot.count_collectives(text)
    assert counts == {"all-gather": 2, "reduce-scatter": 0, "all-reduce": 1, "all-to-all": 0,
                      "collective-permute": 1}
    assert aot.vocab_buffers(text, 32000) == ("f32[16,32000]", 16 * 32000 * 4)


def test_case_validation():
    with pytest.raises(ValueError, match="model"):
        aot.Case("2b", "dpo", 8)
    with pytest.raises(ValueError, match="step"):
        aot.Case("1b", "sft", 8)
    with pytest.raises(ValueError, match="tensor"):
        aot.Case("1b", "dpo", 8, tensor=3)
    with pytest.raises(ValueError, match="row shards"):
        aot.Case("1b", "dpo", 64, batch=8)
    with pytest.raises(ValueError, match="remat"):
        aot.Case("1b", "dpo", 8, remat="some")
    assert aot.Case("8b", "dpo", 64, tensor=8, accum=4).pairs == 32
    assert aot.Case("8b", "grpo", 8).pairs == 16


_ROWS_SCRIPT = """
import json
from benchmarks import aot
out = {}
for pinned in (True, False):
    case = aot.Case("tiny", "dpo", 8, batch=8, seq=64, row_constraint=pinned)
    r = aot.compile_case(case)
    out[str(pinned)] = dict(buffer=r["global_batch_buffer"], args=r["memory"]["argument"],
                            temp=r["memory"]["temp"], attention=r["attention"])
print(json.dumps(out))
"""


@pytest.mark.slow
def test_row_constraint_and_the_what_if_without_it():
    """The library's step on a mesh pins the activations' rows (no buffer of the 16 global rows
    x 64 tokens on a device); `row_constraint=False` (rows_on_batch_axes patched to the identity
    while lowering) brings back the library before the fix, and the patch is undone after."""
    from alignax.models import transformer

    pinned = transformer.rows_on_batch_axes
    with aot.no_row_constraint():
        assert transformer.rows_on_batch_axes(3) == 3
    assert transformer.rows_on_batch_axes is pinned
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8",
               JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, "-c", _ROWS_SCRIPT], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    now, before = r["True"], r["False"]
    assert now["attention"] == "xla"  # "auto" on CPU
    assert now["args"] == before["args"]  # same shardings of the arguments
    assert before["buffer"]["bytes"] > 0 and before["buffer"]["rows"] == 16
    assert now["buffer"]["bytes"] < before["buffer"]["bytes"], r
    assert now["temp"] < before["temp"], r
