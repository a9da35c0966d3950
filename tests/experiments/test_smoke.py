"""Every experiment module runs its `:smoke` setting end to end and writes a complete summary."""

import glob
import os

import pytest

from alignax import cli
from tests import runs

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXPERIMENTS = sorted(glob.glob(os.path.join(REPO, "experiments", "*.py")))


def test_there_are_experiments():
    assert any(p.endswith("bt_dpo_synthetic.py") for p in EXPERIMENTS)


# every experiment, the ones that tests/faults/test_kill_resume.py kills and resumes too: that
# test is a system test (marker `slow`, `make test-slow`), and `make test` smoke-runs them here
# experiments whose only figures are the per-run metric plots, which the suite turns off
# (tests/conftest.py, ALIGNAX_RUN_PLOTS=0): their smoke draws them, as `alignax run` does
RUN_PLOTS = {"bt_dpo_synthetic.py"}


@pytest.mark.parametrize("path", EXPERIMENTS, ids=os.path.basename)
def test_smoke(path, tmp_path, capsys, monkeypatch):
    if os.path.basename(path) in RUN_PLOTS:
        monkeypatch.setenv("ALIGNAX_RUN_PLOTS", "1")
    code = cli.main(["run", f"{path}:smoke", "--workdir", str(tmp_path)])
    out = capsys.readouterr()
    assert code == 0, out.err
    assert f"workdir {tmp_path}" in out.out
    runs.check_smoke_workdir(tmp_path)
