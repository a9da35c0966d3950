"""The documentation site's generators: the paper index, the API pages, the docstring check.

The site itself is built by `make docs` (CI); these tests run the pieces on fakes in tmp_path.
"""

import importlib.util
import json
import os
import sys
import textwrap

import pytest

from alignax import protocol

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _tool(name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(REPO, "tools", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


gen_docs = _tool("gen_docs")
check_docstrings = _tool("check_docstrings")


def _write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")
    return path


def _claim(name, mean, low, high, status, kind=protocol.COMPARATIVE, paper=""):
    return protocol.Claim(
        name=name, passed=status == protocol.PASS, measured={"difference": mean}, kind=kind,
        status=status, mean=mean, interval=(low, high), n=5, level=0.95, threshold=0.0,
        direction=protocol.AT_LEAST, method="t", seeds=[0, 1, 2, 3, 4], paper=paper).to_json()


def _summary(path, module, commit, claims, arg=None, mtime=None):
    summary = {"experiment": f"experiments/{module}.py", "arg": arg, "commit": commit,
               "command": f"alignax run experiments/{module}.py", "seeds": [0, 1, 2, 3, 4],
               "results": {}, "claims": claims}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(summary), encoding="utf-8")
    if mtime is not None:
        os.utime(path, (mtime, mtime))
    return path


@pytest.fixture
def fake_world(tmp_path):
    papers = _write(tmp_path / "papers.txt", """
        # a comment line
        1. $i$REPO: $i$mplicit Reward Pairwise Difference
        2. SALMON: Self-Alignment with Principle-Following Reward Models
        3. PrefPaint: Aligning Image Inpainting
    """)
    exp = tmp_path / "experiments"
    # the title across a line break, without the `$`s: matched on letters and digits
    _write(exp / "irepo.py", '''
        """iREPO: implicit reward regression.

        Paper: "iREPO: implicit Reward Pairwise
        difference" (2024, arXiv 2405.15230).
        """
    ''')
    # another title: matched by the name before the colon, in the docstring's opening
    _write(exp / "salmon.py", '''
        """SALMON: an instructable reward model.

        Paper: Sun et al. 2023, "SALMON: Self-Alignment with Instructable Reward Models".
        """
    ''')
    _write(exp / "bt_toy.py", '''
        """Bradley-Terry reward model on a toy (a foundational method, no paper of the list)."""
    ''')
    _write(exp / "_helpers.py", '"""Not an experiment."""\n')
    summaries = exp / "summaries"
    _summary(summaries / "irepo-aaaaaaa.json", "irepo", "aaaaaaa",
             [_claim("old claim", -0.2, -0.3, -0.1, protocol.FAIL)], mtime=1_000_000)
    _summary(summaries / "irepo-bbbbbbb.json", "irepo", "bbbbbbb",
             [_claim("iREPO beats DPO", 0.1234, 0.05, 0.2, protocol.PASS),
              _claim("a planted check", 1.0, 1.0, 1.0, protocol.PASS, kind=protocol.SANITY)],
             mtime=2_000_000)
    _summary(summaries / "irepo-ccccccc.json", "irepo", "ccccccc",
             [_claim("smoke claim", 0.0, -1.0, 1.0, protocol.INCONCLUSIVE)], arg="smoke",
             mtime=3_000_000)
    _summary(summaries / "bt_toy-ddddddd.json", "bt_toy", "ddddddd",
             [_claim("BT accuracy", 0.01, -0.02, 0.04, protocol.INCONCLUSIVE,
                     paper="Ouyang et al. 2022")])
    return {"papers": papers, "experiments": exp, "summaries": summaries, "repo": tmp_path}


def test_papers_match_modules_by_title_then_by_name(fake_world):
    papers = gen_docs.read_papers(fake_world["papers"])
    assert [p.number for p in papers] == [1, 2, 3]
    docs = gen_docs.module_docstrings(fake_world["experiments"])
    assert sorted(docs) == ["bt_toy", "irepo", "salmon"]
    assert gen_docs.match_papers(papers, docs) == {1: ["irepo"], 2: ["salmon"], 3: []}


def test_read_papers_names_a_bad_line(tmp_path):
    bad = _write(tmp_path / "papers.txt", "1. A paper\nno number here\n")
    with pytest.raises(ValueError, match=r"papers.txt:2: expected 'N. Title'"):
        gen_docs.read_papers(bad)


def test_newest_full_run_of_each_module(fake_world):
    # no git history in tmp_path: the newest file wins; the :smoke run is not a result
    results = gen_docs.newest_results(fake_world["summaries"], repo=fake_world["repo"])
    assert sorted(results) == ["bt_toy", "irepo"]
    assert os.path.basename(results["irepo"].path) == "irepo-bbbbbbb.json"
    assert results["irepo"].verdict.status == protocol.REPRODUCED  # the sanity claim not counted


def test_paper_index_page(fake_world):
    page = gen_docs.paper_index(gen_docs.read_papers(fake_world["papers"]),
                                fake_world["experiments"], fake_world["summaries"],
                                repo=fake_world["repo"])
    rows = {line.split(" | ")[0]: line for line in page.splitlines() if line.startswith("| ")}
    assert "{ref}`irepo <paper-1-irepo>` | REPRODUCED |" in rows["| 1"]
    assert "{ref}`salmon <paper-2-salmon>` | no full run recorded |" in rows["| 2"]
    assert rows["| 3"].endswith("| - | not yet implemented |")
    assert "REPRODUCED: 1, no full run recorded: 1, not yet implemented: 1 (3 papers)" in page
    # the newest run's claims with mean, interval, bound and status; older and smoke runs absent
    assert "| iREPO beats DPO | comparative | 0.1234 | [0.05, 0.2] | >= 0 | 5 | PASS |" in page
    assert "| a planted check | sanity |" in page
    assert "old claim" not in page and "smoke claim" not in page
    assert "- command: `alignax run experiments/irepo.py`" in page
    assert "commit bbbbbbb" in page
    assert "### 3. PrefPaint: Aligning Image Inpainting\n\nNot yet implemented." in page
    # a module that matches no paper of the list has a section of its own, with its claims
    other = page.split("## Other experiments", 1)[1]
    assert "### `bt_toy`: Bradley-Terry reward model on a toy" in other
    assert "| BT accuracy (Ouyang et al. 2022) | comparative | 0.01 |" in other
    assert "INCONCLUSIVE" in other


def test_api_pages_cover_public_modules_only(tmp_path):
    pkg = tmp_path / "pkg"
    for rel in ("__init__.py", "core.py", "_private.py", "sub/__init__.py", "sub/mod.py",
                "_src/__init__.py", "_src/impl.py"):
        _write(pkg / rel, '"""A module."""\n')
    modules = gen_docs.public_modules(str(pkg))
    assert modules == ["pkg", "pkg.core", "pkg.sub", "pkg.sub.mod"]
    pages = gen_docs.api_pages(modules)
    assert sorted(pages) == ["api/index.md", "api/pkg.core.md", "api/pkg.md", "api/pkg.sub.md",
                             "api/pkg.sub.mod.md"]
    assert ".. automodule:: pkg.sub.mod" in pages["api/pkg.sub.mod.md"]
    index = pages["api/index.md"]
    # top-level modules under the package's caption, a sub-package's modules under its own
    assert ":caption: pkg\n:maxdepth: 1\n\npkg\npkg.core\n```" in index
    assert ":caption: pkg.sub\n:maxdepth: 1\n\npkg.sub\npkg.sub.mod\n```" in index


def test_rst_math_blocks_become_myst_math():
    text = ("Loss.\n\n.. math::\n    d = r_c - r_r, \\quad\n    L = -\\log \\sigma(d)\n\n"
            "Args:\n  x: [B].\n")
    out = gen_docs.rst_math_to_myst(text)
    assert "```{math}\nd = r_c - r_r, \\quad\nL = -\\log \\sigma(d)\n```\n\nArgs:" in out
    assert ".. math::" not in out


def test_docstring_prose_is_escaped_and_code_kept():
    out = gen_docs.docstring_to_rst([
        "Mean of |E cap U_w| / |E| over val_ and test_ rows, 2*x; `a|b*c` is code; see",
        "`rubric_score`(phi) and `fn(a,",
        "b)` across a line.",
    ])
    assert out == [
        "Mean of \\|E cap U_w\\| / \\|E\\| over val\\_ and test\\_ rows, 2\\*x; `a|b*c` is "
        "code; see",
        "`rubric_score`\\ (phi) and `fn(a,",
        "b)` across a line.",
    ]


def test_docstring_layout_becomes_rst_blocks():
    out = gen_docs.docstring_to_rst([
        "Summary line.",
        "",
        "The gold reward is linear in the features,",
        "    r(s, a) = phi(s, a) . w,",
        "      phi: [S, A, F].",
        "Terminal states are absorbing.",
        "",
        "Run:",
        "",
        "    alignax run experiments/x.py",
        "",
        "- first item with a",
        "   continuation",
        "  - a nested item",
        "- second item",
        "After the list.",
        "",
        ".. math::",
        "    L = -\\log \\sigma(h)",
        "",
        "Args:",
        "  a, b,",
        "  c: [B] values, `x` * 2.",
        "",
        "Returns:",
        "  [B] losses.",
    ])
    assert out == [
        "Summary line.",
        "",
        "The gold reward is linear in the features,",
        "",
        "::",
        "",
        "        r(s, a) = phi(s, a) . w,",
        "          phi: [S, A, F].",
        "",
        "Terminal states are absorbing.",
        "",
        "Run::",
        "",
        "        alignax run experiments/x.py",
        "",
        "- first item with a",
        "  continuation",
        "",
        "  - a nested item",
        "",
        "- second item",
        "",
        "After the list.",
        "",
        ".. math::",
        "    L = -\\log \\sigma(h)",
        "",
        "Args:",
        "  a, b, c: [B] values, `x` \\* 2.",
        "",
        "Returns:",
        "  [B] losses.",
    ]


def test_converted_docstrings_parse_without_warnings():
    import docutils.core as docutils_core  # the `dev` extra (and sphinx's dependency)
    import docutils.utils

    text = "\n".join(gen_docs.docstring_to_rst([
        "Two models as one over params {\"rm_a\": ..., \"rm_b\": ...}; `apply(params,",
        "ids [B, T]) -> [2, B]`; |E cap U_w| / |E|; `adapters -> ` the merged W; *args.",
        "The MDP has",
        "    r = phi . w",
        "(1) first, with",
        "a lazy line",
        "(2) second",
        "--config.x=1 is an option-like line.",
    ]))
    doctree = docutils_core.publish_doctree(
        text, settings_overrides={"report_level": docutils.utils.Reporter.WARNING_LEVEL,
                                  "halt_level": docutils.utils.Reporter.WARNING_LEVEL})
    assert "rm_a" in doctree.astext() and "r = phi . w" in doctree.astext()


def test_property_first_line_has_no_type_split():
    line = "The dataset's name in messages (`<name>:<index>: field ...`): text."
    assert gen_docs.protect_colons(line) == \
        "The dataset's name in messages (``<name>:<index>: field ...``)\\: text."


def _fake_package(root):
    _write(root / "pkg" / "__init__.py", '"""Package."""\n')
    _write(root / "pkg" / "mod.py", '''
        """Module."""

        def documented(x):
            """[B] -> [B]."""
            def nested():
                pass
            return x

        def undocumented(x):
            return x

        class Undocumented:
            def method(self):
                pass

        def _private():
            pass
    ''')
    _write(root / "pkg" / "_src" / "impl.py", "def internal():\n    pass\n")
    return str(root / "pkg")


def test_check_docstrings_finds_public_names_without_one(tmp_path):
    pkg = _fake_package(tmp_path)
    defs = {d.name: d.documented for d in check_docstrings.public_definitions(pkg)}
    assert defs == {"pkg.mod.documented": True, "pkg.mod.undocumented": False,
                    "pkg.mod.Undocumented": False}
    problems, total, missing = check_docstrings.check(pkg, [])
    assert (total, missing) == (3, 2)
    assert [p.split(": ", 1)[1] for p in problems] == [
        "pkg.mod.undocumented: no docstring", "pkg.mod.Undocumented: no docstring"]
    assert problems[0].endswith("mod.py:9: pkg.mod.undocumented: no docstring")


def test_check_docstrings_allow_list_only_shrinks(tmp_path, capsys):
    pkg = _fake_package(tmp_path)
    allow = _write(tmp_path / "allow.txt", """
        # still without a docstring
        pkg.mod.undocumented
        pkg.mod.Undocumented  # a class
    """)
    assert check_docstrings.main(["--package", pkg, "--allow", str(allow)]) == 0
    assert "3 public functions and classes, 2 without a docstring, 0 problems" in \
        capsys.readouterr().out
    # an entry that has a docstring now, or no longer exists, fails the check
    allow.write_text("pkg.mod.undocumented\npkg.mod.Undocumented\npkg.mod.documented\n"
                     "pkg.mod.gone\n")
    assert check_docstrings.main(["--package", pkg, "--allow", str(allow)]) == 1
    err = capsys.readouterr().err
    assert "allow-list: pkg.mod.documented: has a docstring now" in err
    assert "allow-list: pkg.mod.gone: no such public function or class" in err
    # without the allow-list the two undocumented names fail it
    assert check_docstrings.main(["--package", pkg, "--allow", str(tmp_path / "none")]) == 1


def test_repository_allow_list_is_current():
    """The committed allow-list names exactly the public names of alignax without a docstring
    (what `make docs` checks), so a new undocumented function fails here as well."""
    allow = check_docstrings.read_allowlist(check_docstrings.DEFAULT_ALLOW)
    problems, _, missing = check_docstrings.check(os.path.join(REPO, "alignax"), allow)
    assert problems == []
    assert missing == len(allow)
