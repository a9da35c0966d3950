"""Every experiment module runs its `:smoke` setting end to end and writes a complete summary."""

import glob
import os

import pytest

from alignax import cli
from tests import runs

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXPERIMENTS = sorted(glob.glob(os.path.join(REPO, "experiments", "*.py")))
# run end to end (and killed and resumed) by tests/faults/test_kill_resume.py, whose reference
# run gets the same checks (runs.check_smoke_workdir)
FAULT_SUITE = {"bt_dpo_synthetic.py", "grpo_arithmetic.py", "remodetect.py"}


def test_there_are_experiments():
    assert any(p.endswith("bt_dpo_synthetic.py") for p in EXPERIMENTS)


@pytest.mark.parametrize("path", [p for p in EXPERIMENTS if os.path.basename(p) not in
                                  FAULT_SUITE], ids=os.path.basename)
def test_smoke(path, tmp_path, capsys):
    code = cli.main(["run", f"{path}:smoke", "--workdir", str(tmp_path)])
    out = capsys.readouterr()
    assert code == 0, out.err
    assert f"workdir {tmp_path}" in out.out
    runs.check_smoke_workdir(tmp_path)


def test_the_fault_suite_runs_the_experiments_it_replaces_here():
    from tests.faults import test_kill_resume

    specs = {os.path.basename(spec.split(":")[0]) for spec, _ in test_kill_resume.EXPERIMENTS}
    assert specs == FAULT_SUITE
    assert FAULT_SUITE <= {os.path.basename(p) for p in EXPERIMENTS}
