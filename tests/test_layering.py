"""The package layering the folder tree promises: a module of alignax/ imports only packages of
lower layers (and its own), at module level and inside functions alike."""

import ast
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(ROOT, "alignax")

# Layer of every top-level module or package of alignax (lower never imports higher). Packages
# of one layer are peers and do not import each other, except as PEER_IMPORTS allows.
# "__init__" is alignax/__init__.py, which every import of alignax runs first.
LAYERS = {
    "__init__": 0, "_src": 0, "types": 0,
    "protocol": 0,  # claim statistics (NumPy only): experiment and the tools build on it
    "ops": 1,
    "losses": 2,
    "models": 3,
    "sampling": 4,
    "rewards": 5, "data": 5, "tasks": 5, "eval": 5,  # tasks use models (gold reward models),
    "train": 6,                                     # eval uses sampling
    "algorithms": 7,
    "experiment": 8, "cli": 8,
}
PEER_IMPORTS = {
    ("eval", "data"),        # evaluators read benchmark files with data's readers
    ("eval", "rewards"),     # the image judges (eval.image_judges) score with rewards.image_rm
    ("cli", "experiment"),   # `alignax run` runs experiment modules
    ("__init__", "_src"),    # the package sets XLA:CPU flags before any computation (xla_flags)
}


def _layer_of_module(module: str) -> str:
    """The LAYERS key of a dotted alignax module name ("alignax.losses.reward" -> "losses")."""
    parts = module.split(".")
    if len(parts) == 1:
        return "__init__"
    top = parts[1]
    if os.path.isdir(os.path.join(PACKAGE, top)) or os.path.exists(
            os.path.join(PACKAGE, top + ".py")):
        return top
    return "__init__"  # a name defined in alignax/__init__.py (e.g. __version__)


def _imported_modules(node: ast.AST, package: str) -> list[str]:
    """The alignax modules an import statement names (relative imports resolved)."""
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
    else:
        if node.level:
            base = package.split(".")[:len(package.split(".")) - node.level + 1]
            module = ".".join(base + ([node.module] if node.module else []))
        else:
            module = node.module or ""
        # `from alignax import losses` imports the package alignax.losses
        names = [f"{module}.{a.name}" for a in node.names] if module == "alignax" else [module]
    return [n for n in names if n == "alignax" or n.startswith("alignax.")]


def _imports(source: str, package: str):
    """(line, imported module, inside a function) for every alignax import of `source`."""
    out = []

    def visit(node, in_function):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                out.extend((child.lineno, m, in_function)
                           for m in _imported_modules(child, package))
            inner = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef,
                                                       ast.Lambda))
            visit(child, inner)

    visit(ast.parse(source), False)
    return out


def violations(relpath: str, source: str) -> list[str]:
    """The imports of the file `relpath` (e.g. "alignax/losses/reward.py") that go up a layer
    or sideways to a peer, as "file:line: message"."""
    parts = relpath[:-len(".py")].split("/")
    is_package = parts[-1] == "__init__"
    module_parts = parts[:-1] if is_package else parts
    package = ".".join(module_parts if is_package else module_parts[:-1])
    own = parts[1]  # the top-level module or package the file belongs to
    if own not in LAYERS:
        return [f"{relpath}:1: {own} has no layer; add it to LAYERS in tests/test_layering.py"]
    found = []
    for line, module, in_function in _imports(source, package):
        layer = _layer_of_module(module)
        if layer == own:
            continue
        if layer not in LAYERS:
            found.append(f"{relpath}:{line}: imports {module}, whose package {layer} has no "
                         "layer; add it to LAYERS in tests/test_layering.py")
        elif LAYERS[layer] > LAYERS[own] or (
                LAYERS[layer] == LAYERS[own] and (own, layer) not in PEER_IMPORTS):
            where = "inside a function " if in_function else ""
            relation = "a higher layer" if LAYERS[layer] > LAYERS[own] else "a peer layer"
            found.append(f"{relpath}:{line}: {own} imports {module} {where}({layer} is "
                         f"{relation})")
    return found


def _sources():
    for folder, _, files in os.walk(PACKAGE):
        for name in sorted(files):
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                with open(path) as f:
                    yield os.path.relpath(path, ROOT).replace(os.sep, "/"), f.read()


def test_no_module_imports_a_higher_layer():
    sources = list(_sources())
    assert len(sources) > 50
    found = [v for relpath, source in sources for v in violations(relpath, source)]
    assert not found, "upward or sideways imports:\n" + "\n".join(found)


def test_the_check_sees_every_kind_of_import():
    source = ("import alignax.models.heads\n"
              "from alignax import algorithms\n"
              "from alignax.ops import masked_mean\n"
              "def f():\n"
              "    from alignax.train.loop import fit\n"
              "    g = lambda: __import__('os')\n"
              "    from ..tasks import policies\n"
              "    from . import direct\n"
              "    return fit, g, policies, direct\n")
    assert violations("alignax/losses/reward.py", source) == [
        "alignax/losses/reward.py:1: losses imports alignax.models.heads (models is a higher "
        "layer)",
        "alignax/losses/reward.py:2: losses imports alignax.algorithms (algorithms is a higher "
        "layer)",
        "alignax/losses/reward.py:5: losses imports alignax.train.loop inside a function "
        "(train is a higher layer)",
        "alignax/losses/reward.py:7: losses imports alignax.tasks inside a function (tasks is "
        "a higher layer)",
    ]
    assert violations("alignax/eval/rewardbench.py", "from alignax.data import errors\n") == []
    assert violations("alignax/rewards/model.py", "from alignax.tasks import gold\n") == [
        "alignax/rewards/model.py:1: rewards imports alignax.tasks (tasks is a peer layer)"]
    # function-level imports count in every file, the loop and the recipes included
    hidden = "from alignax import cli\ndef f():\n    from alignax import experiment\n"
    assert violations("alignax/train/loop.py", hidden) == [
        "alignax/train/loop.py:1: train imports alignax.cli (cli is a higher layer)",
        "alignax/train/loop.py:3: train imports alignax.experiment inside a function "
        "(experiment is a higher layer)"]
    assert violations("alignax/newpkg/x.py", "") == [
        "alignax/newpkg/x.py:1: newpkg has no layer; add it to LAYERS in tests/test_layering.py"]
