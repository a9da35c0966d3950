"""Executes notebooks in place, keeping their outputs, so that they can be committed executed.

Run: python tools/run_notebooks.py notebooks/quickstart.ipynb [...]   (from the repository root)

Each notebook runs top to bottom in a fresh kernel (nbclient, the library nbmake and Jupyter
use) with its own folder as the working directory, as Jupyter and the test suite
(`pytest --nbmake`) run it. On success the notebook is written back with its outputs, and with
what changes from one run to the next removed, so that re-running an unchanged notebook gives a
small diff (ideally none):

- per-cell execution metadata (start / end timestamps) and Jupyter's `ExecuteTime`;
- notebook metadata other than the kernel spec and the language name (the Python version,
  widget state);
- cell ids: a cell without one gets `cell-<index>` instead of a random id.

A cell that raises leaves the file untouched and the command exits with status 1, naming the
notebook and the error. For each notebook it prints the wall time of the run, the CPU time the
kernel used (on a busy machine a steadier measure of the notebook's cost than the wall time) and
the size of the written file; `--max-kb` (default 400) fails a notebook whose file, outputs
included, is larger (a figure at too high a dpi, a long printed array). Use small settings: the
suite executes every notebook.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time

import nbformat

VOLATILE_CELL_METADATA = ("execution", "ExecuteTime")
KEPT_NOTEBOOK_METADATA = ("kernelspec",)


def strip_volatile(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """The notebook with its run-to-run volatile metadata removed (module docstring), in place.

    Args:
      nb: an nbformat v4 notebook.

    Returns:
      `nb` itself.
    """
    language = nb.metadata.get("language_info", {}).get("name")
    kept = {k: nb.metadata[k] for k in KEPT_NOTEBOOK_METADATA if k in nb.metadata}
    if language:
        kept["language_info"] = {"name": language}
    nb.metadata = nbformat.from_dict(kept)
    seen = set()
    for i, cell in enumerate(nb.cells):
        for key in VOLATILE_CELL_METADATA:
            cell.metadata.pop(key, None)
        if not cell.get("id") or cell["id"] in seen:
            cell["id"] = f"cell-{i}"
        seen.add(cell["id"])
    return nb


def read(path: str) -> nbformat.NotebookNode:
    """The notebook at `path` as nbformat v4.5 (cell ids), a cell without an id given
    `cell-<index>` (nbformat's own reader would draw a random one)."""
    import json

    with open(path, encoding="utf-8") as f:
        raw = json.load(f)
    if raw.get("nbformat") == 4:
        raw["nbformat_minor"] = max(int(raw.get("nbformat_minor", 0)), 5)
        for i, cell in enumerate(raw.get("cells", [])):
            cell.setdefault("id", f"cell-{i}")
    return strip_volatile(nbformat.reads(json.dumps(raw), as_version=4))


def execute(path: str, *, timeout: int = 600, kernel_name: str = "python3"
            ) -> nbformat.NotebookNode:
    """Runs the notebook at `path` in a fresh kernel (working directory: its folder) and
    returns it with its outputs and without volatile metadata; the file is not written.

    Args:
      path: a .ipynb file.
      timeout: seconds one cell may run.
      kernel_name: the Jupyter kernel.

    Raises:
      nbclient.exceptions.CellExecutionError: a cell raised (the message names it).
    """
    from nbclient import NotebookClient

    nb = read(path)
    folder = os.path.dirname(os.path.abspath(path))
    client = NotebookClient(nb, timeout=timeout, kernel_name=kernel_name,
                            resources={"metadata": {"path": folder}}, record_timing=False)
    client.execute()
    return strip_volatile(nb)


def write(nb: nbformat.NotebookNode, path: str) -> None:
    """Writes the notebook as nbformat v4 JSON (one-space indent, as Jupyter saves it)."""
    nbformat.validate(nb)
    with open(path, "w", encoding="utf-8") as f:
        nbformat.write(nb, f)


def _children_cpu() -> float:
    """User + system CPU seconds of this process's finished children (the kernels)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("notebooks", nargs="+", help=".ipynb files, executed in place")
    parser.add_argument("--timeout", type=int, default=600, help="seconds per cell")
    parser.add_argument("--kernel", default="python3", help="Jupyter kernel name")
    parser.add_argument("--max-kb", type=float, default=400.0,
                        help="fail a notebook whose written file is larger (KB)")
    args = parser.parse_args(argv)
    from nbclient.exceptions import CellExecutionError

    failed = []
    for path in args.notebooks:
        if not path.endswith(".ipynb") or not os.path.isfile(path):
            print(f"{path}: not a notebook file", file=sys.stderr)
            failed.append(path)
            continue
        start = time.perf_counter()
        cpu_start = _children_cpu()
        try:
            nb = execute(path, timeout=args.timeout, kernel_name=args.kernel)
        except CellExecutionError as e:
            print(f"{path}: a cell failed, file left unchanged\n{e}", file=sys.stderr)
            failed.append(path)
            continue
        seconds, cpu = time.perf_counter() - start, _children_cpu() - cpu_start
        write(nb, path)
        kb = os.path.getsize(path) / 1024
        print(f"{path}: executed in {seconds:.1f} s ({cpu:.1f} s CPU in the kernel), "
              f"{kb:.0f} KB", flush=True)
        if kb > args.max_kb:
            print(f"{path}: {kb:.0f} KB > --max-kb {args.max_kb:g} (smaller figures or "
                  "fewer printed rows)", file=sys.stderr)
            failed.append(path)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
