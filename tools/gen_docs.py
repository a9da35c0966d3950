"""Assembles the documentation site's sources: hand-written pages, notebooks, paper index, API.

Run: python tools/gen_docs.py [OUT]      (default docs/_build/src; `make docs` runs it, then
     sphinx-build -c docs OUT docs/_build/html)

OUT receives
- every page of docs/ (Markdown, sub-folders included), with the `.. math::` blocks that
  tools/gen_loss_docs.py copies from docstrings turned into MyST math blocks;
- the committed notebooks (notebooks/*.ipynb), rendered by myst-nb with their stored outputs;
- experiments/RESULTS.md and benchmarks/{README,RESULTS,SCALE}.md as pages of their own;
- papers.md, the paper index, generated from the experiment modules and their newest results;
- api/, one page per public module of alignax (no path component starting with "_"), each an
  `automodule` of the module's docstrings.

The paper index lists the papers of docs/papers.txt (`N. Title`, one per line) in order. A paper
is implemented by the experiment modules whose docstring contains its title (compared on letters
and digits only, case-folded), or, when none does, whose docstring's opening contains the title's
name before its colon ("SALMON", "Writing-Zero"). Per module it gives the command, the paper's
status decided by `alignax.protocol.paper_verdict` on the claims of the module's newest summary
(experiments/summaries/<module>-<commit>.json, newest by commit time in git, by file time
otherwise; `:smoke` and `:real` runs are not claims) and every claim's mean, interval and status.
Papers without a module are listed as not yet implemented; modules that match no paper (the
foundational methods) follow in a section of their own.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import glob
import json
import os
import re
import shutil
import subprocess  # noqa: S404 (git, for the commit times of summaries)
import sys

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, HERE)

from alignax import protocol  # noqa: E402
from alignax.protocol import Claim  # noqa: E402

DEFAULT_OUT = os.path.join(HERE, "docs", "_build", "src")
NOT_IMPLEMENTED = "not yet implemented"
NO_RUN = "no full run recorded"
# pages copied from outside docs/: (source relative to the repository, page in the site)
EXTRA_PAGES = (
    ("experiments/RESULTS.md", "results.md"),
    ("benchmarks/README.md", "benchmarks/index.md"),
    ("benchmarks/RESULTS.md", "benchmarks/results.md"),
    ("benchmarks/SCALE.md", "benchmarks/scale.md"),
)
_NOT_PAGES = ("conf.py", "papers.txt", "docstring-allowlist.txt")


# --- the paper index ---------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Paper:
    """One paper of docs/papers.txt: its number and title."""

    number: int
    title: str


@dataclasses.dataclass(frozen=True)
class Result:
    """The newest full run of an experiment module: its summary.json and where it was read."""

    path: str
    summary: dict

    @property
    def claims(self) -> list[Claim]:
        """The run's claims (`alignax.protocol.Claim`), in the summary's order."""
        return [Claim.from_json(c) for c in self.summary.get("claims", [])]

    @property
    def verdict(self) -> protocol.PaperVerdict:
        """REPRODUCED / NOT REPRODUCED / INCONCLUSIVE of the run's claims (sanity excluded)."""
        return protocol.paper_verdict(self.claims)


def read_papers(path: str) -> list[Paper]:
    """The numbered papers of a list file: lines `N. Title`; blank and `#` lines skipped."""
    papers = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            m = re.fullmatch(r"(\d+)\.\s+(.+)", line)
            if not m:
                raise ValueError(f"{path}:{lineno}: expected 'N. Title', got {line!r}")
            papers.append(Paper(int(m.group(1)), m.group(2)))
    return papers


def module_docstrings(experiments_dir: str) -> dict[str, str]:
    """{module name: module docstring} of every experiment module (read, never imported)."""
    out = {}
    for path in sorted(glob.glob(os.path.join(experiments_dir, "*.py"))):
        name = os.path.basename(path)[:-3]
        if name.startswith("_"):
            continue
        with open(path, encoding="utf-8") as f:
            out[name] = ast.get_docstring(ast.parse(f.read(), path)) or ""
    return out


def _letters(text: str) -> str:
    """Lower-case letters and digits only: titles match across line breaks, `$`, dashes."""
    return re.sub(r"[^a-z0-9]", "", text.lower())


def match_papers(papers: list[Paper], docstrings: dict[str, str]) -> dict[int, list[str]]:
    """{paper number: [modules implementing it]} (see the module docstring for the rule)."""
    full = {m: _letters(d) for m, d in docstrings.items()}
    opening = {m: _letters(d[:400]) for m, d in docstrings.items()}
    out = {}
    for p in papers:
        title = _letters(p.title)
        found = [m for m, d in full.items() if title and title in d]
        if not found and ":" in p.title:
            name = _letters(p.title.split(":", 1)[0])
            if len(name) >= 4:
                found = [m for m, d in opening.items() if name in d]
        out[p.number] = found
    return out


def _commit_time(repo: str, commit: str) -> int | None:
    try:
        done = subprocess.run(  # noqa: S603 (a fixed git command)
            ["git", "-C", repo, "show", "-s", "--format=%ct", commit],  # noqa: S607
            capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    text = done.stdout.strip()
    return int(text) if done.returncode == 0 and text.isdigit() else None


def newest_results(summaries_dir: str, repo: str = HERE) -> dict[str, Result]:
    """{module: its newest full run} from `<module>-<commit>.json` files (`:smoke`, `:real` out).

    Newest: the latest commit time in `repo`'s git history; a summary whose commit git does not
    know (or no git) is ordered by its file's modification time, after those git knows.
    """
    candidates: dict[str, list[tuple[tuple, str, dict]]] = {}
    for path in sorted(glob.glob(os.path.join(summaries_dir, "*.json"))):
        with open(path, encoding="utf-8") as f:
            summary = json.load(f)
        if summary.get("arg") or "experiment" not in summary:
            continue
        module = os.path.basename(summary["experiment"])
        module = module[:-3] if module.endswith(".py") else module
        candidates.setdefault(module, []).append((summary.get("commit") or "", path, summary))
    out = {}
    for module, runs in candidates.items():
        def order(run):
            t = _commit_time(repo, run[0]) if run[0] and len(runs) > 1 else None
            return (t is None, -(t or 0), -os.path.getmtime(run[1]), run[1])
        _, path, summary = min(runs, key=order)
        out[module] = Result(path, summary)
    return out


def _num(x) -> str:
    if x is None:
        return "-"
    if isinstance(x, str):  # "nan" / "inf" as summary.json stores them
        return x
    return f"{x:.4g}"


def _cell(text) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def _claim_row(c: Claim) -> str:
    interval = f"[{_num(c.interval[0])}, {_num(c.interval[1])}]" if c.interval else "-"
    bound = "-"
    if c.threshold is not None and c.kind in (protocol.COMPARATIVE, protocol.THRESHOLD):
        bound = f"{'>=' if c.direction == protocol.AT_LEAST else '<='} {_num(c.threshold)}"
    status = c.status or ("PASS" if c.passed else "FAIL")
    if c.reason:
        status += f" ({c.reason})"
    name = f"{c.name} ({c.paper})" if c.paper else c.name
    return (f"| {_cell(name)} | {c.kind} | {_num(c.mean)} | {interval} | {bound} | "
            f"{c.n if c.n is not None else '-'} | {_cell(status)} |")


def _module_block(module: str, result: Result | None, rel_results: str) -> list[str]:
    lines = [f"- module: `experiments/{module}.py`",
             f"- command: `alignax run experiments/{module}.py`"]
    if result is None:
        return lines + [f"- status: {NO_RUN}", ""]
    v = result.verdict
    commit = result.summary.get("commit") or "unknown"
    seeds = result.summary.get("seeds")
    lines += [f"- status: **{v.status}** ({v.reason}; commit {commit}"
              + (f", seeds {', '.join(map(str, seeds))}" if seeds else "") + ")",
              f"- results: `{os.path.join(rel_results, os.path.basename(result.path))}`", ""]
    claims = result.claims
    if claims:
        lines += ["| claim | kind | mean | 95% interval | claimed | n | status |",
                  "|---|---|---|---|---|---|---|"]
        lines += [_claim_row(c) for c in claims] + [""]
    return lines


def paper_index(papers: list[Paper], experiments_dir: str, summaries_dir: str, *,
                repo: str = HERE) -> str:
    """The Markdown page of the paper index (see the module docstring)."""
    docstrings = module_docstrings(experiments_dir)
    matches = match_papers(papers, docstrings)
    results = newest_results(summaries_dir, repo)
    rel_results = os.path.relpath(summaries_dir, repo)
    if rel_results.startswith(".."):
        rel_results = summaries_dir

    def status(modules: list[str]) -> str:
        if not modules:
            return NOT_IMPLEMENTED
        claims = [c for m in modules if m in results for c in results[m].claims]
        if not any(m in results for m in modules):
            return NO_RUN
        return protocol.paper_verdict(claims).status

    statuses = {p.number: status(matches[p.number]) for p in papers}
    counts = {s: sum(v == s for v in statuses.values())
              for s in (*protocol.PAPER_STATUSES, NO_RUN, NOT_IMPLEMENTED)}
    lines = [
        "# Paper index",
        "",
        "Generated by `python tools/gen_docs.py` (run by `make docs`) from the experiment "
        "modules' docstrings and their newest results in "
        f"`{rel_results}/`: do not edit by hand. A paper's status is decided by the protocol "
        "([the experiment protocol](protocol.md)) on the claims of its module's newest full "
        "run: REPRODUCED when every counted claim passes, NOT REPRODUCED when one fails, "
        "INCONCLUSIVE otherwise; sanity checks are shown and never counted. "
        "Every claim of every run, with its command and commit: [measured results](results.md).",
        "",
        ", ".join(f"{s}: {n}" for s, n in counts.items() if n) + f" ({len(papers)} papers)",
        "",
        "| # | paper | module | status |",
        "|---|---|---|---|",
    ]
    for p in papers:
        modules = matches[p.number]
        where = ", ".join(f"{{ref}}`{m} <{_anchor(p, m)}>`" for m in modules) or "-"
        lines.append(f"| {p.number} | {_cell(p.title)} | {where} | {statuses[p.number]} |")
    lines += ["", "## Papers", ""]
    for p in papers:
        modules = matches[p.number]
        lines += [f"### {p.number}. {p.title}", ""]
        if not modules:
            lines += [f"{NOT_IMPLEMENTED.capitalize()}.", ""]
        for m in modules:
            first = docstrings[m].strip().splitlines()[0] if docstrings[m].strip() else m
            lines += [f"({_anchor(p, m)})=", f"#### `{m}`: {first}", ""]
            lines += _module_block(m, results.get(m), rel_results)
    covered = {m for ms in matches.values() for m in ms}
    others = [m for m in docstrings if m not in covered]
    if others:
        lines += ["## Other experiments", "",
                  "Modules that reproduce foundational methods rather than one paper of the list "
                  "(their papers are named in their docstrings).", ""]
        for m in others:
            first = docstrings[m].strip().splitlines()[0] if docstrings[m].strip() else m
            lines += [f"({_anchor(None, m)})=", f"### `{m}`: {first}", ""]
            lines += _module_block(m, results.get(m), rel_results)
    return "\n".join(lines).rstrip() + "\n"


def _anchor(paper: Paper | None, module: str) -> str:
    return f"paper-{paper.number}-{module}" if paper else f"module-{module}"


# --- the API pages -----------------------------------------------------------------------------

def public_modules(package_dir: str) -> list[str]:
    """Dotted names of the public modules under `package_dir` (no component starting with "_";
    packages by their __init__.py), sorted."""
    root = os.path.dirname(os.path.abspath(package_dir))
    out = []
    for path in sorted(glob.glob(os.path.join(package_dir, "**", "*.py"), recursive=True)):
        parts = os.path.relpath(path, root)[:-3].split(os.sep)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        if any(p.startswith("_") for p in parts):
            continue
        out.append(".".join(parts))
    return sorted(out)


def api_pages(modules: list[str]) -> dict[str, str]:
    """{page path: Markdown} of the API reference: api/index.md and one page per module."""
    pages = {}
    groups: dict[str, list[str]] = {}
    packages = {m.rsplit(".", 1)[0] for m in modules if "." in m}
    for m in modules:
        parts = m.split(".")
        # top-level modules under the package's name, the rest under their sub-package
        group = ".".join(parts[:2]) if len(parts) > 2 or m in packages else parts[0]
        groups.setdefault(group, []).append(m)
        pages[f"api/{m}.md"] = (f"# `{m}`\n\n```{{eval-rst}}\n.. automodule:: {m}\n```\n")
    index = ["# API reference", "",
             "Generated from the docstrings of every public module of alignax (names not "
             "starting with `_`) by `tools/gen_docs.py`. Shapes use letters (B batch, P "
             "candidates, T tokens, V vocabulary, D model width); every loss returns "
             "per-example values. `tools/check_docstrings.py` fails the build on a public "
             "function or class without a docstring.", ""]
    for group, members in groups.items():
        index += ["```{toctree}", f":caption: {group}", ":maxdepth: 1", ""]
        index += members + ["```", ""]
    pages["api/index.md"] = "\n".join(index)
    return pages


# --- docstrings as reStructuredText -----------------------------------------------------------

# Google-style section headers that napoleon turns into fields (their content keeps its layout).
_SECTIONS = frozenset((
    "Args", "Arguments", "Attributes", "Example", "Examples", "Keyword Args", "Keyword Arguments",
    "Methods", "Note", "Notes", "Other Parameters", "Parameters", "Raises", "References",
    "Return", "Returns", "See Also", "Todo", "Warning", "Warnings", "Warns", "Yield", "Yields"))
_BULLET = re.compile(r"^(\s*)([-*+]|\d+[.)]|\(\d+\))\s+")
# a code span may wrap lines, never a paragraph
_SPAN = re.compile(r"(:[\w:+.-]+:)?(``(?:[^`\n]|\n(?!\s*\n))+?``|`(?:[^`\n]|\n(?!\s*\n))+?`(?!`))")
# sections whose entries are `name: description`, a description's lines indented under it
_ENTRY_SECTIONS = frozenset(("Args", "Arguments", "Attributes", "Keyword Args",
                             "Keyword Arguments", "Other Parameters", "Parameters"))


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _escape_text(text: str) -> str:
    """Backslash-escapes what reStructuredText reads as markup in plain prose: `*`, `|`,
    backslashes, a word's trailing `_` (a reference), stray backticks."""
    text = text.replace("\\", "\\\\").replace("*", "\\*").replace("|", "\\|")
    text = text.replace("`", "\\`")
    return re.sub(r"(?<=[\w\]\)])(_+)(?=\W|$)", lambda m: "\\_" * len(m.group(1)), text)


# what may stand before a span's opening / after its closing backtick (else reST ignores it)
_OPEN_AFTER = "-:/'\"<([{"
_CLOSE_BEFORE = "-.,:;!?\\/'\")]}>"


def escape_inline(text: str) -> str:
    """Escapes prose for reStructuredText, keeping its code spans (`x`, ``x``, :role:`x`) and
    separating a span from a letter or digit touching it (which reST would not end it at)."""
    out, pos = [], 0
    for m in _SPAN.finditer(text):
        before = _escape_text(text[pos:m.start()])
        if before and not before[-1].isspace() and before[-1] not in _OPEN_AFTER and \
                not m.group(1):
            before += "\\ "
        span = m.group(0)
        if not m.group(1) and not span.startswith("``"):
            # reST ends no span at a space: `a -> ` is `a ->`
            inner = span[1:-1]
            if inner != inner.strip() and inner.strip():
                span = f"`{inner.strip()}`"
        out += [before, span]
        pos = m.end()
        if pos < len(text) and not text[pos].isspace() and text[pos] not in _CLOSE_BEFORE:
            out.append("\\ ")
    out.append(_escape_text(text[pos:]))
    return "".join(out)


def protect_colons(line: str) -> str:
    """A line in which napoleon finds no `type: description` split (it reads the first line of
    an attribute's or property's docstring that way): colons outside code are escaped, code
    spans with a colon become double-backtick literals (which napoleon skips)."""
    out, pos = [], 0
    for m in _SPAN.finditer(line):
        out.append(line[pos:m.start()].replace(":", "\\:"))
        span = m.group(0)
        if not m.group(1) and not span.startswith("``") and ":" in span:
            span = f"``{span[1:-1]}``"
        out.append(span)
        pos = m.end()
    out.append(line[pos:].replace(":", "\\:"))
    return "".join(out)


def docstring_to_rst(lines: list[str]) -> list[str]:
    """The lines of an alignax docstring (plain text, as the source writes it) as valid reST.

    alignax's docstrings are plain text with three kinds of markup: `code` spans, `.. math::`
    (and other `..`) directives, and Google-style sections (Args:, Returns:, ...) read by
    napoleon. This keeps those, escapes every other character that reST would read as markup
    (`*`, `|`, trailing `_`, ...), and turns layout into reST blocks: a block indented under
    a line of prose (a formula, a command) becomes a literal block, a list (`-`, `*`, `1.`,
    `(1)`) gets the blank lines reST needs around it and its continuation lines (indented
    more than its marker) are indented to the item's text; a line back at the marker's
    indentation ends the list. Napoleon runs on the result.
    """
    out: list[str] = []
    n = len(lines)
    i = 0

    def blank() -> None:
        if out and out[-1].strip():
            out.append("")

    def block_end(start: int, base: int) -> int:
        """End (exclusive) of the lines after `start` indented more than `base` (blank lines
        inside included, trailing blank lines not)."""
        j, last = start, start
        while j < n and (not lines[j].strip() or _indent(lines[j]) > base):
            if lines[j].strip():
                last = j + 1
            j += 1
        return last

    def literal(start: int, end: int) -> None:
        if out and out[-1].rstrip().endswith("::"):
            blank()
        elif out and out[-1].rstrip().endswith(":"):
            out[-1] = out[-1].rstrip() + ":"
            blank()
        else:
            blank()
            out.extend(["::", ""])
        out.extend("    " + line if line.strip() else "" for line in lines[start:end])
        out.append("")

    while i < n:
        line = lines[i]
        stripped = line.strip()
        if not stripped:
            blank()
            i += 1
            continue
        ind = _indent(line)
        if stripped.startswith(".. "):  # a directive: kept as written
            end = block_end(i + 1, ind)
            blank()
            out.extend(lines[i:end])
            out.append("")
            i = end
            continue
        if stripped.endswith(":") and stripped[:-1] in _SECTIONS:  # napoleon's section
            end = block_end(i + 1, ind)
            blank()
            body_lines = lines[i + 1:end]
            if stripped[:-1] in _ENTRY_SECTIONS:
                body_lines = _join_wrapped_names(body_lines)
            body = "\n".join(body_lines)
            out.append(line)
            out.extend(escape_inline(body).split("\n") if body else [])
            out.append("")
            i = end
            continue
        m = _BULLET.match(line)
        if m:  # a list item: the lines indented more than its marker continue it
            if out and out[-1].strip() and not _BULLET.match(out[-1]) and \
                    _indent(out[-1]) <= ind:
                blank()
            col = m.end()
            item = [line[m.start(2):m.end()].rstrip() + " " + line[m.end():].strip()]
            j = i + 1
            while j < n and lines[j].strip() and not _BULLET.match(lines[j]) and \
                    _indent(lines[j]) > ind and not lines[j].strip().startswith(".. "):
                item.append(lines[j].strip())
                j += 1
            text = escape_inline("\n".join(item))
            first, *rest = text.split("\n")
            marker_end = len(m.group(2)) + 1
            out.append(" " * ind + first[:marker_end] + first[marker_end:])
            out.extend(" " * col + r for r in rest)
            if j < n and lines[j].strip() and _BULLET.match(lines[j]):
                nxt = _indent(lines[j])
                if nxt != ind:  # a nested list, or the end of one: reST wants blank lines
                    out.append("")
            elif j < n and lines[j].strip().startswith(".. "):
                out.append("")
            i = j
            if i < n and not lines[i].strip():
                # after a blank line, text indented to the item continues it
                end = block_end(i + 1, col - 1)
                if end > i + 1 and not _BULLET.match(lines[i + 1]):
                    out.append("")
                    out.extend(docstring_to_rst_block(lines[i + 1:end], col))
                    i = end
            continue
        # prose: lines at this indentation; a more indented line starts a literal block
        para = [line]
        j = i + 1
        while j < n and lines[j].strip() and _indent(lines[j]) <= ind and \
                not _BULLET.match(lines[j]) and not lines[j].strip().startswith(".. ") and \
                not (lines[j].strip().endswith(":") and lines[j].strip()[:-1] in _SECTIONS):
            para.append(lines[j])
            j += 1
        text = escape_inline("\n".join(p.strip() for p in para))
        first = text.split("\n")
        if first[0][:1] in "-+#" or re.match(r"[a-zA-Z#]\.\s|\(\w+\)\s|\w\)\s", first[0]):
            first[0] = "\\" + first[0]  # not a list / option list / enumerator in reST
        if out and out[-1].strip() and _BULLET.match(out[-1]) is None and \
                _indent(out[-1]) != ind:
            blank()
        elif out and out[-1].strip() and _BULLET.match(out[-1]):
            blank()
        out.extend(" " * ind + t for t in first)
        i = j
        if i < n and lines[i].strip() and _indent(lines[i]) > ind:
            end = block_end(i, ind)
            literal(i, end)
            i = end
        elif i < n and not lines[i].strip():
            k = i
            while k < n and not lines[k].strip():
                k += 1
            if k < n and _indent(lines[k]) > ind and not lines[k].strip().startswith(".. ") \
                    and not (stripped.endswith(":") and stripped[:-1] in _SECTIONS):
                end = block_end(k, ind)
                literal(k, end)
                i = end
    while out and not out[-1].strip():
        out.pop()
    return out


def _join_wrapped_names(lines: list[str]) -> list[str]:
    """Joins an entry line without a `name:` (a list of names wrapped onto the next line) to
    the line after it, as napoleon reads each line at the entries' indentation as an entry."""
    base = min((_indent(x) for x in lines if x.strip()), default=0)
    out: list[str] = []
    for line in lines:
        prev = out[-1] if out else ""
        if out and line.strip() and _indent(line) == base and _indent(prev) == base and \
                ":" not in prev and prev.rstrip().endswith(","):
            out[-1] = prev.rstrip() + " " + line.strip()
        else:
            out.append(line)
    return out


def docstring_to_rst_block(lines: list[str], col: int) -> list[str]:
    """`docstring_to_rst` of lines indented by `col` or more, re-indented by `col`."""
    return [" " * col + line if line else line
            for line in docstring_to_rst([line[col:] for line in lines])]


# --- assembling the sources --------------------------------------------------------------------

_RST_MATH = re.compile(r"^(?P<indent>[ \t]*)\.\. math::[ \t]*\n(?P<body>(?:(?P=indent)[ \t]+\S.*"
                       r"\n|[ \t]*\n)+)", re.MULTILINE)


def rst_math_to_myst(text: str) -> str:
    """Turns reStructuredText `.. math::` blocks (as docstrings write them) into MyST math
    fences, so Markdown pages that quote docstrings render the formula."""
    def fence(m: re.Match) -> str:
        body = [line for line in m.group("body").splitlines()]
        while body and not body[-1].strip():
            body.pop()
        width = min(len(line) - len(line.lstrip()) for line in body if line.strip())
        math = "\n".join(line[width:] for line in body)
        return f"{m.group('indent')}```{{math}}\n{math}\n```\n\n"
    return _RST_MATH.sub(fence, text)


def assemble(out: str, *, repo: str = HERE) -> list[str]:
    """Writes the site's sources into `out` (emptied first); returns the pages written."""
    if os.path.isdir(out):
        shutil.rmtree(out)
    written = []

    def write(page: str, text: str) -> None:
        path = os.path.join(out, page)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        written.append(page)

    docs = os.path.join(repo, "docs")
    for path in sorted(glob.glob(os.path.join(docs, "**", "*"), recursive=True)):
        page = os.path.relpath(path, docs)
        if os.path.isdir(path) or page.split(os.sep)[0] == "_build" or page in _NOT_PAGES:
            continue
        with open(path, encoding="utf-8") as f:
            text = f.read()
        write(page, rst_math_to_myst(text) if page.endswith(".md") else text)
    for path in sorted(glob.glob(os.path.join(repo, "notebooks", "*.ipynb"))):
        with open(path, encoding="utf-8") as f:
            write(os.path.join("notebooks", os.path.basename(path)), f.read())
    for source, page in EXTRA_PAGES:
        with open(os.path.join(repo, source), encoding="utf-8") as f:
            write(page, rst_math_to_myst(f.read()))
    write("papers.md", paper_index(read_papers(os.path.join(docs, "papers.txt")),
                                   os.path.join(repo, "experiments"),
                                   os.path.join(repo, "experiments", "summaries"), repo=repo))
    for page, text in api_pages(public_modules(os.path.join(repo, "alignax"))).items():
        write(page, text)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", nargs="?", default=DEFAULT_OUT,
                        help="folder of the assembled sources (default docs/_build/src)")
    args = parser.parse_args(argv)
    pages = assemble(args.out)
    print(f"gen_docs: {len(pages)} pages in {os.path.relpath(args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
