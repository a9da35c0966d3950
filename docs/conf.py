"""Sphinx configuration of the alignax documentation site (`make docs`).

Why Sphinx + myst-nb (and not MkDocs + mkdocstrings): the docstrings of alignax are written for
Sphinx (`.. math::` blocks, Google-style Args/Returns read by napoleon), which mkdocstrings would
render as plain text; the committed notebooks are rendered by myst-nb as they are, with their
stored outputs and execution off (the test suite executes them); and optax and flax, whose
documentation sites alignax's researchers know, are built the same way. All of it installs
from the package index (`pip install -e '.[docs]'`) and builds offline.

The sources are assembled by tools/gen_docs.py in docs/_build/src (the hand-written pages of
docs/, the notebooks, the generated paper index and API pages) and built from there with this
file (`sphinx-build -c docs`), so nothing generated lands in the tracked tree. The build runs
with -W: a warning fails it.
"""

from __future__ import annotations

import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
# The autodoc imports run jax on the CPU; keep them quiet and off any accelerator.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

project = "alignax"
author = "alignax authors"
copyright = "alignax authors"
release = "0.1.0"

extensions = [
    "myst_nb",  # Markdown pages (MyST) and the committed notebooks; includes myst_parser
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",  # the docstrings' Google-style Args / Returns sections
    "sphinx.ext.mathjax",  # `.. math::` in docstrings, $...$ in pages (rendered by the browser)
    "sphinx-mathjax-offline",  # ships MathJax into _static: the formulas render without network
]

exclude_patterns = ["_build", "**.ipynb_checkpoints"]
source_suffix = {".md": "myst-nb", ".ipynb": "myst-nb"}
root_doc = "index"

# Notebooks are rendered with the outputs they were committed with; the test suite runs them.
nb_execution_mode = "off"
myst_enable_extensions = ["dollarmath", "colon_fence", "deflist"]
myst_heading_anchors = 3

# Docstrings quote code with single backticks (as in Markdown): render it as code.
default_role = "code"
autodoc_default_options = {
    "members": True,
    "member-order": "bysource",
    # a package's __init__ re-exports its modules' names: they are documented where defined
    "ignore-module-all": True,
}
autodoc_typehints = "signature"
autodoc_preserve_defaults = True
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False

html_theme = "furo"
html_title = "alignax"
html_static_path: list[str] = []
html_show_sourcelink = False
# Napoleon writes a class's "Attributes:" as fields, not as attribute entries that would
# describe a NamedTuple's fields a second time.
napoleon_use_ivar = True

sys.path.insert(0, os.path.join(ROOT, "tools"))
from gen_docs import docstring_to_rst, protect_colons  # noqa: E402


def _docstring_as_rst(app, what, name, obj, options, lines):
    """alignax docstrings are plain text with `code`, `.. math::` and Google sections: escape
    the rest for reST before napoleon reads them (tools/gen_docs.py: docstring_to_rst)."""
    lines[:] = docstring_to_rst(lines)
    if what in ("attribute", "property") and lines:
        lines[0] = protect_colons(lines[0])


def _skip_field_aliases(app, what, name, obj, skip, options):
    """A NamedTuple field's generated "Alias for field number k" says nothing: skip it (the
    class docstring describes its fields)."""
    doc = getattr(obj, "__doc__", None) or ""
    if what == "class" and isinstance(doc, str) and doc.startswith("Alias for field number"):
        return True
    return None


def setup(app):
    app.connect("autodoc-process-docstring", _docstring_as_rst, priority=400)
    app.connect("autodoc-skip-member", _skip_field_aliases)
