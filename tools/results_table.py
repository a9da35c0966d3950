"""Writes experiments/RESULTS.md from the summary.json files of experiment runs.

Run: python tools/results_table.py RUN [RUN ...]      writes the page from these run folders
     python tools/results_table.py --check [RUN ...]  exit status 1 if the page is out of date
     (without RUNs, --check uses the folders the page was generated from; it records them)

A RUN is a workdir of `alignax run` (or its summary.json). The page has a per-paper status
section (REPRODUCED / NOT REPRODUCED / INCONCLUSIVE, decided by `alignax.protocol.paper_verdict`
on all claims of a paper's runs, sanity checks excluded) and one row per claim with its kind,
mean, interval, n, status, and the command and commit of the run. Nothing is typed by hand, so
the table cannot drift from what was run (docs/protocol.md, rule 5). `:smoke` runs are refused
unless --allow-smoke.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import sys

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, HERE)

from alignax import protocol  # noqa: E402
from alignax.protocol import Claim  # noqa: E402

PAGE = os.path.join(HERE, "experiments", "RESULTS.md")
RUNS_MARK = "<!-- generated from runs:"
CLAIM_COLUMNS = ("experiment", "paper", "claim", "kind", "measured", "status", "command",
                 "commit")


class TableError(Exception):
    """A run folder that cannot go into the table (one line)."""


def load_summary(run: str) -> dict:
    """The summary.json of a run folder (or the file itself)."""
    path = run if run.endswith(".json") else os.path.join(run, "summary.json")
    try:
        with open(path, encoding="utf-8") as f:
            summary = json.load(f)
    except FileNotFoundError:
        raise TableError(f"{path}: no summary.json (has the run finished?)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise TableError(f"{path}: unreadable ({e})") from None
    if not isinstance(summary, dict) or "claims" not in summary or "experiment" not in summary:
        raise TableError(f"{path}: not a summary.json of alignax run (no experiment/claims)")
    return summary


def collect(runs: list[str], *, allow_smoke: bool = False) -> list[dict]:
    """The runs' summaries, sorted by experiment and argument; one run per (experiment, arg)."""
    seen: dict[tuple[str, str], str] = {}
    out = []
    for run in runs:
        summary = load_summary(run)
        arg = summary.get("arg") or ""
        if arg == "smoke" and not allow_smoke:
            raise TableError(f"{run}: a :smoke run (RESULTS.md holds full runs; pass "
                             "--allow-smoke to include it)")
        key = (os.path.basename(summary["experiment"]), arg)
        if key in seen:
            raise TableError(f"two runs of {key[0]}{':' + arg if arg else ''}: {seen[key]} and "
                             f"{run}")
        seen[key] = run
        out.append(summary)
    return sorted(out, key=lambda s: (os.path.basename(s["experiment"]), s.get("arg") or ""))


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def _code(text: str) -> str:
    """`text` as inline code, delimited by more backticks than any run of them inside it."""
    runs = re.findall(r"`+", text)
    fence = "`" * (max(map(len, runs), default=0) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{_cell(text)}{pad}{fence}"


def _num(x, sign: bool = False) -> str:
    if isinstance(x, str):  # "nan"/"inf" as summary.json stores them
        return x
    return f"{x:+.4g}" if sign else f"{x:.4g}"


def _measured(claim: Claim) -> str:
    """mean [low, high] (level method, n; claimed bound) and the claim's other numbers."""
    parts = []
    if claim.kind in (protocol.COMPARATIVE, protocol.THRESHOLD):
        what = "difference" if claim.kind == protocol.COMPARATIVE else "mean"
        if claim.kind == protocol.THRESHOLD and len(claim.measured) == 1 and \
                claim.mean is not None and list(claim.measured.values())[0] == claim.mean:
            what = next(iter(claim.measured))  # threshold(): {"<variant>/<metric>": mean}
        others = ", ".join(f"{k} {_num(v)}" for k, v in claim.measured.items()
                           if k not in (what, "difference"))
        bound = f"claimed {'>=' if claim.direction == protocol.AT_LEAST else '<='} " \
                f"{_num(claim.threshold)}"
        if claim.mean is None:
            parts.append(f"no value (n={claim.n}; {bound})")
        elif claim.interval is None:
            parts.append(f"{what} {_num(claim.mean, sign=claim.kind == protocol.COMPARATIVE)} "
                         f"(n={claim.n}, no interval; {bound})")
        else:
            low, high = claim.interval
            level = f"{100 * claim.level:g}%"
            parts.append(f"{what} {_num(claim.mean, sign=claim.kind == protocol.COMPARATIVE)} "
                         f"[{_num(low)}, {_num(high)}] ({level} {claim.method}, n={claim.n}; "
                         f"{bound})")
        if others:
            parts.append(others)
    else:
        parts.append(", ".join(f"{k} {_num(v)}" for k, v in claim.measured.items()) or "-")
    if claim.detail:
        parts.append(claim.detail)
    return "; ".join(parts)


def _status(claim: Claim) -> str:
    return f"{claim.status} ({claim.reason})" if claim.reason else claim.status


def _experiment(summary: dict) -> str:
    name = os.path.basename(summary["experiment"])
    arg = summary.get("arg")
    return f"{name}:{arg}" if arg else name


def _command(summary: dict) -> str:
    if summary.get("command"):
        return summary["command"]
    arg = summary.get("arg")
    return f"alignax run {summary['experiment']}{':' + arg if arg else ''}"


def _claim_paper(claim: Claim, summary: dict) -> str:
    return claim.paper or summary.get("paper") or _experiment(summary)


def render(summaries: list[dict], runs: list[str]) -> str:
    """The markdown page of `summaries` (from `collect`); `runs` are recorded for --check."""
    # a claim is about its own `paper` when it names one (an experiment covering two papers),
    # else about its run's paper; each paper is decided on the claims about it
    papers: dict[str, list[dict]] = {}
    paper_claims: dict[str, list[Claim]] = {}
    for s in summaries:
        for c in map(Claim.from_json, s["claims"]):
            paper = _claim_paper(c, s)
            paper_claims.setdefault(paper, []).append(c)
            if not any(x is s for x in papers.setdefault(paper, [])):
                papers[paper].append(s)
        if not s["claims"]:
            papers.setdefault(s.get("paper") or _experiment(s), []).append(s)
    verdicts = {paper: protocol.paper_verdict(paper_claims.get(paper, []))
                for paper in papers}
    totals = {status: sum(v.status == status for v in verdicts.values())
              for status in protocol.PAPER_STATUSES}
    sources = shlex.join(sorted(runs))
    command = f"python tools/results_table.py {sources}"
    lines = [
        "# Measured results",
        "",
        f"Generated by `{command}` from the runs' summary.json files: do not edit by hand",
        "(`python tools/results_table.py --check` exits with status 1 when this page differs "
        "from the runs).",
        "Claims are decided by the protocol of docs/protocol.md: a comparative or threshold "
        "claim PASSes when its",
        "whole 95% interval over >= 5 seeds clears the threshold, FAILs when it lies wholly on "
        "the wrong side, and",
        "is INCONCLUSIVE otherwise; sanity checks hold by construction and are never counted.",
        "",
        f"{RUNS_MARK} {sources} -->",
        "",
        "## Paper status",
        "",
        ", ".join(f"{status}: {totals[status]}" for status in protocol.PAPER_STATUSES)
        + f" ({len(papers)} papers)",
        "",
        "| " + " | ".join(protocol.STATUS_COLUMNS) + " |",
        "|" + "---|" * len(protocol.STATUS_COLUMNS),
    ]
    for paper, group in papers.items():
        v = verdicts[paper]
        counts = (f"{v.counts['PASS']} PASS, {v.counts['FAIL']} FAIL, "
                  f"{v.counts['INCONCLUSIVE']} INCONCLUSIVE; {v.counts['sanity']} sanity")
        experiments = ", ".join(f"`{_experiment(s)}`" for s in group)
        lines.append(f"| {_cell(paper)} | {v.status} | {counts} | {experiments} | "
                     f"{_cell(v.reason)} |")
    lines += ["", "## Claims", "", "| " + " | ".join(CLAIM_COLUMNS) + " |",
              "|" + "---|" * len(CLAIM_COLUMNS)]
    for s in summaries:
        commit = s.get("commit") or "unknown"
        for c in map(Claim.from_json, s["claims"]):
            lines.append(" | ".join([
                f"| `{_experiment(s)}`", _cell(_claim_paper(c, s)), _cell(c.name), c.kind,
                _cell(_measured(c)), _cell(_status(c)), _code(_command(s)),
                f"{_cell(commit)} |"]))
    return "\n".join(lines) + "\n"


def recorded_runs(page: str) -> list[str]:
    """The run folders a generated page records (empty if it records none)."""
    for line in page.splitlines():
        if line.startswith(RUNS_MARK) and line.endswith("-->"):
            return shlex.split(line[len(RUNS_MARK):-len("-->")])
    return []


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="*", help="run folders (workdirs of alignax run)")
    parser.add_argument("--out", default=PAGE, help="the page (default: experiments/RESULTS.md)")
    parser.add_argument("--check", action="store_true",
                        help="do not write; exit with status 1 if the page is out of date")
    parser.add_argument("--allow-smoke", action="store_true", help="accept :smoke runs")
    args = parser.parse_args(argv)
    current = None
    if os.path.exists(args.out):
        with open(args.out, encoding="utf-8") as f:
            current = f.read()
    runs = args.runs
    if not runs and args.check and current is not None:
        runs = recorded_runs(current)
    if not runs:
        parser.error("give the run folders (RESULTS.md is generated from their summary.json)")
    try:
        page = render(collect(runs, allow_smoke=args.allow_smoke), runs)
    except TableError as e:
        print(f"results_table: {e}", file=sys.stderr)
        return 2
    if args.check:
        if current != page:
            print(f"{args.out} is out of date: run python tools/results_table.py "
                  f"{shlex.join(sorted(runs))}", file=sys.stderr)
            return 1
        return 0
    with open(args.out, "w", encoding="utf-8") as f:
        f.write(page)
    return 0


if __name__ == "__main__":
    sys.exit(main())
