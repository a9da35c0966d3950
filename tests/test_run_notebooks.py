"""tools/run_notebooks.py: notebooks executed in place, outputs kept, volatile metadata gone."""

import json

import nbformat
import pytest

from tests.runs import load_tool


@pytest.fixture(scope="module")
def tool():
    return load_tool("run_notebooks")


def _notebook(path, *sources):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(s) for s in sources]
    for cell in nb.cells:  # what an editor leaves behind
        cell.metadata["execution"] = {"iopub.status.busy": "2020-01-01T00:00:00Z"}
        del cell["id"]
    nb.metadata["language_info"] = {"name": "python", "version": "3.0.0"}
    nb.metadata["widgets"] = {"state": {}}
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    with open(path, "w", encoding="utf-8") as f:
        json.dump(nb, f)
    return path


def test_executes_in_place_and_strips_volatile_metadata(tool, tmp_path, capsys):
    path = _notebook(tmp_path / "two.ipynb", "import os\nx = 6 * 7\nprint(os.getcwd())", "x")
    assert tool.main([str(path)]) == 0
    first = path.read_bytes()
    nb = nbformat.read(str(path), as_version=4)
    printed, value = nb.cells[0].outputs, nb.cells[1].outputs
    assert printed[0]["text"].strip() == str(tmp_path)  # the notebook's folder is its cwd
    assert value[0]["data"]["text/plain"] == "42"
    assert [c.execution_count for c in nb.cells] == [1, 2]
    assert [c["id"] for c in nb.cells] == ["cell-0", "cell-1"]
    assert all("execution" not in c.metadata for c in nb.cells)
    assert dict(nb.metadata) == {"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                "language": "python"},
                                 "language_info": {"name": "python"}}
    assert "two.ipynb: executed in" in capsys.readouterr().out
    # a second run of the unchanged notebook writes the same bytes
    assert tool.main([str(path)]) == 0
    assert path.read_bytes() == first


def test_a_failing_cell_leaves_the_file_unchanged(tool, tmp_path, capsys):
    path = _notebook(tmp_path / "bad.ipynb", "1 + 1", "raise ValueError('broken cell')")
    before = path.read_bytes()
    assert tool.main([str(path)]) == 1
    assert path.read_bytes() == before
    err = capsys.readouterr().err
    assert "bad.ipynb: a cell failed" in err and "broken cell" in err


def test_size_limit_and_bad_paths(tool, tmp_path, capsys):
    path = _notebook(tmp_path / "big.ipynb", "print('x' * 3000)")
    assert tool.main([str(path), "--max-kb", "1"]) == 1  # written, but reported too large
    assert "> --max-kb 1" in capsys.readouterr().err
    assert nbformat.read(str(path), as_version=4).cells[0].outputs
    assert tool.main([str(tmp_path / "missing.ipynb")]) == 1
    assert "not a notebook file" in capsys.readouterr().err
