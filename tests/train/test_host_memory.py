"""alignax.train.host_memory: glibc keeps XLA:CPU's freed temporaries, so steps stop faulting."""

import json
import os
import subprocess
import sys

import pytest

from alignax.train import host_memory

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# A jitted function whose temporaries are about 200 MB (above glibc's largest mmap threshold,
# 32 MB); prints the minor page faults of each of its 3rd-10th calls.
PROBE = """
import json, resource, sys
from alignax.train.host_memory import reuse_host_memory
applied = reuse_host_memory() if sys.argv[1] == "on" else False
import jax, jax.numpy as jnp

@jax.jit
def f(x):
    y = jnp.tanh(x[:, None, :] * x[None, :4, :])  # [N, 4, D] temporary
    return (y * y).sum() + jnp.exp(y).sum()

x = jnp.ones((3000, 4000), jnp.float32) * 0.01
for _ in range(2):
    f(x).block_until_ready()
faults = []
for _ in range(8):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    f(x).block_until_ready()
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(json.dumps({"applied": applied, "faults": faults}))
"""


def _probe(mode: str) -> dict:
    env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu")
    out = subprocess.run([sys.executable, "-c", PROBE, mode], env=env, capture_output=True,
                         text=True, timeout=300, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


@pytest.mark.skipif(host_memory._glibc() is None, reason="needs Linux with glibc")
def test_steps_stop_page_faulting_their_temporaries():
    off, on = _probe("off"), _probe("on")
    assert on["applied"] is True and off["applied"] is False
    # without it every call maps its ~200 MB afresh: about 47k faults of 4 KB per call
    assert min(off["faults"]) > 20_000, off
    # with it calls take none, except the few that grow the fragmented heap
    assert sorted(on["faults"])[4] < min(off["faults"]) / 20, (on, off)


def test_not_glibc_is_a_no_op(monkeypatch):
    monkeypatch.setattr(host_memory, "_applied", False)
    monkeypatch.setattr(host_memory, "_glibc", lambda: None)
    assert host_memory.reuse_host_memory() is False


def test_warns_after_the_backend_exists(monkeypatch):
    calls = []

    class FakeLibc:
        def mallopt(self, param, value):
            calls.append((param, value))
            return 1

    monkeypatch.setattr(host_memory, "_applied", False)
    monkeypatch.setattr(host_memory, "_glibc", lambda: FakeLibc())
    monkeypatch.setattr(host_memory, "_backends_initialized", lambda: True)
    with pytest.warns(UserWarning, match="before the first jax computation"):
        assert host_memory.reuse_host_memory() is True
    assert calls == [(-8, 1), (-4, 0), (-1, -1)]  # arena max first
    assert host_memory.reuse_host_memory() is True and len(calls) == 3  # idempotent
    monkeypatch.setattr(host_memory, "_applied", False)
