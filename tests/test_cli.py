"""The `alignax` command line: overrides, error messages, list."""

import os
import subprocess
import sys
import textwrap

import pytest

from alignax import cli
from alignax import experiment as ex

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXPERIMENT = os.path.join(REPO, "experiments", "bt_dpo_synthetic.py")


def _alignax(*args, cwd=REPO, timeout=120):
    return subprocess.run([sys.executable, "-m", "alignax.cli", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=timeout)


def test_split_spec():
    assert ex.split_spec("experiments/x.py:smoke") == ("experiments/x.py", "smoke")
    assert ex.split_spec("experiments/x.py") == ("experiments/x.py", None)
    assert ex.split_spec("/tmp/a:b/x.py") == ("/tmp/a:b/x.py", None)


def test_override_typo_lists_close_keys():
    module = ex.load_module(EXPERIMENT)
    config = ex.load_config(module, "smoke", EXPERIMENT)
    with pytest.raises(ex.ExperimentError, match=r"unknown config key 'dpo.loss_kwargs.betta'.*"
                                                 r"dpo.loss_kwargs.beta"):
        ex.apply_overrides(config, ["dpo.loss_kwargs.betta=0.2"])


def test_overrides_are_typed():
    module = ex.load_module(EXPERIMENT)
    config = ex.load_config(module, "smoke", EXPERIMENT)
    ex.apply_overrides(config, ["dpo.loss_kwargs.beta=1", "sft.train.steps=7",
                                "sft.train.progress=false", "seeds=[3, 4]"])
    assert config.dpo.loss_kwargs.beta == 1.0 and isinstance(config.dpo.loss_kwargs.beta, float)
    assert config.sft.train.steps == 7
    assert config.sft.train.progress is False
    assert list(config.seeds) == [3, 4]
    with pytest.raises(ex.ExperimentError, match="cannot parse 'abc' as int"):
        ex.apply_overrides(config, ["sft.train.steps=abc"])
    with pytest.raises(ex.ExperimentError, match="cannot parse '1.5' as int"):
        ex.apply_overrides(config, ["sft.train.steps=1.5"])
    assert config.sft.train.steps == 7
    with pytest.raises(ex.ExperimentError, match="is a group"):
        ex.apply_overrides(config, ["sft.train=3"])


def test_missing_module_is_one_clear_line(tmp_path):
    out = _alignax("run", str(tmp_path / "nope.py"))
    assert out.returncode == 2
    assert out.stderr.strip().count("\n") == 0
    assert "no such experiment file" in out.stderr


def test_broken_module_is_one_clear_line(tmp_path):
    bad = tmp_path / "broken.py"
    bad.write_text("def get_config(arg):\n    return 1 +\n")
    out = _alignax("run", str(bad))
    assert out.returncode == 2
    assert out.stderr.strip().count("\n") == 0
    assert "broken.py:2: syntax error" in out.stderr
    raising = tmp_path / "raising.py"
    raising.write_text("import not_a_module_anywhere\n")
    out = _alignax("run", str(raising))
    assert out.returncode == 2 and "import failed: ModuleNotFoundError" in out.stderr
    assert out.stderr.strip().count("\n") == 0


def test_bad_override_from_the_command_line(tmp_path):
    out = _alignax("run", "experiments/bt_dpo_synthetic.py:smoke", "--workdir",
                   str(tmp_path / "w"), "--config.sft.train.stepz=3")
    assert out.returncode == 2
    assert "unknown config key 'sft.train.stepz'" in out.stderr
    assert "sft.train.steps" in out.stderr


def test_list_shows_experiments_papers_and_results(tmp_path, capsys):
    exp = tmp_path / "experiments"
    exp.mkdir()
    (exp / "foo.py").write_text('"""Foo: a paper title (arXiv 1234.5678)."""\n')
    (exp / "RESULTS.md").write_text(textwrap.dedent("""\
        | experiment | paper | claim | measured | pass | command | commit |
        |---|---|---|---|---|---|---|
        | `foo.py` | Foo | it works | 0.91 | PASS | alignax run experiments/foo.py | abc |
        """))
    assert cli.main(["list", "--dir", str(exp)]) == 0
    out = capsys.readouterr().out
    assert "foo" in out and "Foo: a paper title" in out and "it works | 0.91 | PASS" in out
    assert "status:" not in out  # a hand-written page has no per-paper status


def test_list_shows_each_papers_status_from_a_generated_page(tmp_path, capsys, monkeypatch):
    import importlib.util
    import json

    from alignax import protocol

    spec = importlib.util.spec_from_file_location(
        "results_table", os.path.join(REPO, "tools", "results_table.py"))
    table = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(table)
    exp = tmp_path / "experiments"
    exp.mkdir()
    for name, doc in [("foo", "Foo 2024"), ("bar", "Bar 2023"), ("baz", "Baz 2025")]:
        (exp / f"{name}.py").write_text(f'"""{doc}: a paper."""\n')
    results = {"a": {"per_seed": {s: {"m": 1.0 + 0.01 * s} for s in range(5)}}}
    passing = protocol.threshold("m >= 0.5", results, ("a", "m"), at_least=0.5)
    other = protocol.threshold("m >= 2", results, ("a", "m"), at_least=2.0, paper="Other 2022")
    for name, claims in [("foo", [passing, protocol.sanity("planted", True, {"x": 1.0}), other]),
                         ("bar", [ex.Claim("bar | works", False, {"gap": -0.01})])]:
        (tmp_path / name).mkdir()
        (tmp_path / name / "summary.json").write_text(json.dumps({
            "experiment": f"experiments/{name}.py", "arg": None, "paper": f"{name} paper",
            "results": results, "claims": [c.to_json() for c in claims]}))
    monkeypatch.chdir(tmp_path)
    assert table.main(["foo", "bar", "--out", str(exp / "RESULTS.md")]) == 0
    assert cli.main(["list", "--dir", str(exp)]) == 0
    out = capsys.readouterr().out
    assert out == (
        "bar\n    paper: Bar 2023: a paper.\n"
        "    status: NOT REPRODUCED; 1 of 1 claims FAIL (legacy claims, no intervals)\n"
        "    last result: bar | works | gap -0.01 | FAIL\n"
        "baz\n    paper: Baz 2025: a paper.\n    status: no recorded run\n"
        "    last result: no recorded result\n"
        "foo\n    paper: Foo 2024: a paper.\n    status:\n"
        "      foo paper: REPRODUCED; all 1 claims PASS\n"
        "      Other 2022: NOT REPRODUCED; 1 of 1 claims FAIL\n"
        "    last result: m >= 2 | a/m 1.02 [1, 1.04] (95% t, n=5; claimed >= 2) | FAIL\n")


def test_workdir_with_a_different_config_is_refused(tmp_path):
    w = tmp_path / "w"
    w.mkdir()
    (w / "config.json").write_text('{"something": "else"}\n')
    out = _alignax("run", "experiments/bt_dpo_synthetic.py:smoke", "--workdir", str(w))
    assert out.returncode == 2 and "different config" in out.stderr
