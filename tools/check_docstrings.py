"""Fails when a public function or class of alignax has no docstring.

Run: python tools/check_docstrings.py [--package alignax] [--allow docs/docstring-allowlist.txt]
     (`make docs` runs it before building the site)

Public: a function or class defined at the top level of a module (not nested) whose name does
not start with "_", in a module no component of whose dotted path starts with "_" (so
alignax/_src is internal; a package's __init__.py counts as the package). The modules are read
with `ast`, never imported. The docstring is the API reference's text (`make docs`), so it
should give the shapes, the math and the paper (docs/howto/add-a-loss.md); that is reviewed, and
this check enforces that there is one.

The allow-list names the exceptions, one dotted name per line (`alignax.models.mlp.MLP`), `#`
comments allowed. It may only shrink: an entry that now has a docstring or no longer exists is
an error too, so the list says exactly which names still lack one.

Exit status 0 when every public name has a docstring or is allowed; 1 otherwise, with one line
per problem (`path:line: name: no docstring`).
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import glob
import os
import sys

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_ALLOW = os.path.join(HERE, "docs", "docstring-allowlist.txt")


@dataclasses.dataclass(frozen=True)
class Definition:
    """A public top-level function or class: its dotted name, where it is, and if documented."""

    name: str
    path: str
    line: int
    documented: bool


def _module_name(path: str, root: str) -> str | None:
    parts = os.path.relpath(path, root)[:-3].split(os.sep)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    if any(p.startswith("_") for p in parts):
        return None
    return ".".join(parts)


def public_definitions(package_dir: str) -> list[Definition]:
    """Every public top-level function and class of the package's public modules, by file and
    line."""
    root = os.path.dirname(os.path.abspath(package_dir))
    out = []
    for path in sorted(glob.glob(os.path.join(os.path.abspath(package_dir), "**", "*.py"),
                            recursive=True)):
        module = _module_name(path, root)
        if module is None:
            continue
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read(), path)
        for node in tree.body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and \
                    not node.name.startswith("_"):
                doc = ast.get_docstring(node)
                out.append(Definition(f"{module}.{node.name}", path, node.lineno,
                                      bool(doc and doc.strip())))
    return out


def read_allowlist(path: str) -> list[str]:
    """The dotted names of an allow-list file (blank lines and `#` comments skipped); a
    missing file is an empty list."""
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as f:
        lines = [line.split("#", 1)[0].strip() for line in f]
    return [line for line in lines if line]


def check(package_dir: str, allow: list[str]) -> tuple[list[str], int, int]:
    """(problems, public names, names without a docstring) of the package against `allow`."""
    defs = public_definitions(package_dir)
    allowed = set(allow)
    problems = []
    for d in defs:
        if not d.documented and d.name not in allowed:
            rel = os.path.relpath(d.path, os.getcwd())
            problems.append(f"{rel}:{d.line}: {d.name}: no docstring")
    by_name = {d.name: d for d in defs}
    for name in allow:
        if name not in by_name:
            problems.append(f"allow-list: {name}: no such public function or class "
                            "(remove the entry)")
        elif by_name[name].documented:
            problems.append(f"allow-list: {name}: has a docstring now (remove the entry)")
    return problems, len(defs), sum(not d.documented for d in defs)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--package", default=os.path.join(HERE, "alignax"),
                        help="the package folder (default: alignax/)")
    parser.add_argument("--allow", default=DEFAULT_ALLOW,
                        help="allow-list file (default: docs/docstring-allowlist.txt)")
    args = parser.parse_args(argv)
    if not os.path.isdir(args.package):
        parser.error(f"--package: {args.package} is not a folder")
    problems, total, missing = check(args.package, read_allowlist(args.allow))
    for p in problems:
        print(p, file=sys.stderr)
    print(f"check_docstrings: {total} public functions and classes, {missing} without a "
          f"docstring, {len(problems)} problems")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
