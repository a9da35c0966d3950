"""Every experiment follows the protocol of docs/protocol.md: data from disjoint split seeds,
>= 5 seeds in the full setting and one in `:smoke`, and protocol claims (no legacy claims)
with at least one falsifiable claim. Static checks on the modules; the smoke runs
(tests/experiments/test_smoke.py, tests/faults) check the claims they write."""

import ast
import glob
import os

import pytest

from alignax import experiment, protocol

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXPERIMENTS = sorted(glob.glob(os.path.join(REPO, "experiments", "*.py")))
# experiments whose toy allows no honest falsifiable claim (their docstring says why): the
# paper's status is INCONCLUSIVE ("no falsifiable claim") until one is found
ONLY_SANITY = {"mj_bench.py"}


def _calls(path: str) -> set[str]:
    with open(path) as f:
        tree = ast.parse(f.read())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            fn = node.func
            names.add(fn.id if isinstance(fn, ast.Name) else
                      fn.attr if isinstance(fn, ast.Attribute) else "")
    return names


@pytest.mark.parametrize("path", EXPERIMENTS, ids=os.path.basename)
def test_full_setting_has_enough_seeds_and_smoke_one(path):
    module = experiment.load_module(path)
    full = experiment.load_config(module, None, path)
    smoke = experiment.load_config(module, "smoke", path)
    assert len(set(int(s) for s in full.seeds)) >= protocol.MIN_SEEDS, list(full.seeds)
    assert len(smoke.seeds) == 1, list(smoke.seeds)


@pytest.mark.parametrize("path", EXPERIMENTS, ids=os.path.basename)
def test_data_from_split_seeds_and_protocol_claims(path):
    calls = _calls(path)
    assert "split_seeds" in calls, "the data must come from alignax.tasks.splits.split_seeds"
    assert "Claim" not in calls, "legacy Claim(...): use protocol.compare/threshold/decide"
    falsifiable = bool(calls & {"compare", "threshold", "decide"})
    assert falsifiable != (os.path.basename(path) in ONLY_SANITY), (
        "no falsifiable claim" if not falsifiable else "listed in ONLY_SANITY but has one")
