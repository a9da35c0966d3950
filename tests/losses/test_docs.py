"""docs/losses.md lists every loss with its docstring, and is up to date."""

import importlib.util
import inspect
import os

from alignax import losses

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _generator():
    spec = importlib.util.spec_from_file_location("gen_loss_docs",
                                                  os.path.join(REPO, "tools", "gen_loss_docs.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_docs_page_is_current_and_complete():
    with open(os.path.join(REPO, "docs", "losses.md")) as f:
        page = f.read()
    assert page == _generator().render(), "run: python tools/gen_loss_docs.py"
    for registry in losses.LOSSES.values():
        for name, fn in registry.items():
            assert f"### `{name}`" in page, name
            doc = fn.__doc__ or ""
            assert "arXiv" in doc or "et al." in doc, f"{name}: docstring names no paper"
    # every public function of alignax.losses, registered or not, has its entry
    for name in losses.__all__:
        fn = getattr(losses, name)
        if inspect.isfunction(fn):
            assert f"`{fn.__module__}.{fn.__name__}(" in page, name
