"""The first experiment on a user preference file: bad rows fail in one line or are skipped."""

import pytest
import json

from alignax import cli


def _write(path, bad_line: int):
    rows = []
    for i in range(40):
        a, b = i % 7, i % 5
        rows.append({"prompt": f"{a}+{b}=", "chosen": f"{a + b}", "rejected": f"{a + b + 1}!"})
    rows.insert(bad_line - 1, {"prompt": "1+1=", "chosen": "2"})  # no "rejected"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_bad_row_is_one_clear_line(tmp_path, capsys):
    data = tmp_path / "prefs.jsonl"
    _write(data, bad_line=3)
    code = cli.main(["run", "experiments/bt_dpo_synthetic.py:smoke", "--workdir",
                     str(tmp_path / "w"), f"--config.data.path={data}",
                     "--config.model.max_len=32"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.strip() == "alignax: prefs.jsonl:3: field 'rejected': missing"


@pytest.mark.slow  # an end-to-end training run: the system tier (make test-slow)
def test_skip_invalid_skips_counts_and_trains(tmp_path, capsys):
    data = tmp_path / "prefs.jsonl"
    _write(data, bad_line=3)
    workdir = tmp_path / "w"
    # The smallest transformer (one layer, d_model 32): the property (bad rows skipped and
    # counted, the three stages train and evaluate) does not depend on its size, and every
    # program the run compiles (SFT, RM and DPO steps, their evaluations) is about half as big.
    code = cli.main(["run", "experiments/bt_dpo_synthetic.py:smoke", "--workdir", str(workdir),
                     f"--config.data.path={data}", "--config.model.max_len=32",
                     "--config.model.n_layers=1", "--config.model.d_model=32",
                     "--config.model.n_heads=2", "--config.model.d_ff=64",
                     "--config.data.skip_invalid=True"])
    out = capsys.readouterr()
    assert code == 0, out.err
    assert "prefs.jsonl: 40 valid rows, 1 skipped" in out.out
    summary = json.loads((workdir / "summary.json").read_text())
    seed = summary["results"]["default"]["per_seed"]["0"]
    assert seed["data_skipped"] == 1.0
    assert 0.0 <= seed["test_rm_label_accuracy"] <= 1.0
    assert 0.0 <= seed["test_dpo_pair_accuracy"] <= 1.0
    assert summary["claims"] == []  # no gold reward in a user file
