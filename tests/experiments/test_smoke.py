"""Every experiment module runs its `:smoke` setting end to end and writes a complete summary."""

import glob
import json
import os

import pytest

from alignax import cli

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXPERIMENTS = sorted(glob.glob(os.path.join(REPO, "experiments", "*.py")))


def test_there_are_experiments():
    assert any(p.endswith("bt_dpo_synthetic.py") for p in EXPERIMENTS)


@pytest.mark.parametrize("path", EXPERIMENTS, ids=os.path.basename)
def test_smoke(path, tmp_path, capsys):
    code = cli.main(["run", f"{path}:smoke", "--workdir", str(tmp_path)])
    out = capsys.readouterr()
    assert code == 0, out.err
    assert f"workdir {tmp_path}" in out.out
    with open(tmp_path / "summary.json") as f:
        summary = json.load(f)
    assert summary["results"], "no results"
    for variant, res in summary["results"].items():
        assert res["per_seed"], variant
        for name, stats in res["metrics"].items():
            assert stats["n"] == len(res["per_seed"]), name
    for claim in summary["claims"]:
        assert isinstance(claim["passed"], bool) and claim["measured"], claim
    assert os.path.exists(tmp_path / "config.json")
    assert glob.glob(str(tmp_path / "**" / "plots" / "*.png"), recursive=True)
