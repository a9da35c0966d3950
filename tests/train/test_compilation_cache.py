"""alignax.train.compilation_cache: where the persistent cache lives, and that it is used."""

import os
import subprocess
import sys

import pytest

from alignax.train import compilation_cache as cc

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_folder_precedence(monkeypatch, tmp_path):
    for var in ("ALIGNAX_COMPILATION_CACHE_DIR", "JAX_COMPILATION_CACHE_DIR", "ALIGNAX_CACHE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cc.default_cache_dir() == str(tmp_path / "home" / ".cache" / "alignax" / "jax")
    monkeypatch.setenv("ALIGNAX_CACHE", str(tmp_path / "c"))
    assert cc.default_cache_dir() == str(tmp_path / "c" / "jax")
    monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", str(tmp_path / "j"))
    assert cc.default_cache_dir() == str(tmp_path / "j")
    monkeypatch.setenv("ALIGNAX_COMPILATION_CACHE_DIR", str(tmp_path / "a"))
    assert cc.default_cache_dir() == str(tmp_path / "a")


PROBE = """
import sys

import pytest
import jax, jax.numpy as jnp
from alignax.train.compilation_cache import enable_compilation_cache
hits = []
jax.monitoring.register_event_listener(
    lambda name, **kw: hits.append(name) if name.endswith("cache_hits") else None)
enable_compilation_cache(sys.argv[1])
print(float(jax.jit(lambda x: jnp.tanh(x) * 3.0 + x.sum())(jnp.arange(5.0)).sum()), len(hits))
"""


@pytest.mark.slow
def test_a_second_process_reads_the_programs_the_first_wrote(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_PERSISTENT")}
    env.update(PYTHONPATH=ROOT, JAX_PLATFORMS="cpu")
    env.pop("JAX_COMPILATION_CACHE_DIR", None)
    folder = str(tmp_path / "cache")
    outs = [subprocess.run([sys.executable, "-c", PROBE, folder], env=env, capture_output=True,
                           text=True, timeout=120, check=True).stdout for _ in range(2)]
    entries = [f for f in os.listdir(folder) if not f.endswith("-atime")]
    assert entries, "nothing was cached"
    (value0, hits0), (value1, hits1) = (out.split() for out in outs)
    assert int(hits0) == 0 and int(hits1) >= 1, outs  # the second process compiled nothing
    assert value0 == value1  # the cached program computes what the compiled one did
