"""alignax.train.host_memory: glibc keeps XLA:CPU's freed temporaries, so steps stop faulting."""

import json
import os
import subprocess
import sys

import pytest

from alignax.train import host_memory

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# First a plain 256 MB malloc/touch/free, four times (deterministic: one thread, no XLA); then a
# jitted function whose temporaries are about 200 MB (above glibc's largest mmap threshold, 32 MB),
# with the minor page faults of each of its 3rd-18th calls.
PROBE = """
import ctypes, json, resource, sys
from alignax.train.host_memory import reuse_host_memory
applied = reuse_host_memory() if sys.argv[1] == "on" else False

def minflt():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt

libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = (ctypes.c_size_t,)
libc.free.argtypes = (ctypes.c_void_p,)
n = 256 << 20
malloc_faults = []
for _ in range(4):
    before = minflt()
    p = libc.malloc(n)
    ctypes.memset(p, 1, n)
    libc.free(p)
    malloc_faults.append(minflt() - before)

import jax, jax.numpy as jnp

@jax.jit
def f(x):
    y = jnp.tanh(x[:, None, :] * x[None, :4, :])  # [N, 4, D] temporary
    return (y * y).sum() + jnp.exp(y).sum()

x = jnp.ones((3000, 4000), jnp.float32) * 0.01
for _ in range(2):
    f(x).block_until_ready()
faults = []
for _ in range(16):
    before = minflt()
    f(x).block_until_ready()
    faults.append(minflt() - before)
print(json.dumps({"applied": applied, "malloc": malloc_faults, "faults": faults}))
"""


def _probe(mode: str) -> dict:
    env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu")
    out = subprocess.run([sys.executable, "-c", PROBE, mode], env=env, capture_output=True,
                         text=True, timeout=300, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


@pytest.mark.slow
@pytest.mark.skipif(host_memory._glibc() is None, reason="needs Linux with glibc")
def test_steps_stop_page_faulting_their_temporaries():
    off, on = _probe("off"), _probe("on")
    assert on["applied"] is True and off["applied"] is False
    # a freed 256 MB block: without the settings every malloc maps and faults all 65536 pages
    # afresh; with them only the first one does, later ones reuse the heap
    assert min(off["malloc"]) > 60_000, off
    assert on["malloc"][0] > 60_000 and max(on["malloc"][1:]) < 100, on
    # XLA's temporaries: without the settings every call maps its ~200 MB afresh (about 47k
    # faults of 4 KB per call). With them most calls take none; how many calls still grow the
    # heap depends on how XLA's threads interleave the frees of one call with the next call's
    # allocations (0 to 9 of 24 calls in runs with 6 processes sharing 2 cores), so this only
    # checks that the settings reach XLA's threads at all: a quarter of the calls fault-free.
    assert min(off["faults"]) > 20_000, off
    quiet = sum(f < min(off["faults"]) / 20 for f in on["faults"])
    assert quiet >= len(on["faults"]) // 4, (on, off)


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
