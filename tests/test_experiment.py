"""The experiment runner: variants x seeds, aggregation, claims, plots and summary.json."""

import json
import textwrap

import pytest

from alignax import experiment as ex

MODULE = textwrap.dedent('''
    """Toy: a paper title (arXiv 0000.00000)."""
    import os
    import ml_collections
    from alignax.experiment import Claim, metric

    def get_config(arg=None):
        c = ml_collections.ConfigDict()
        c.seeds = [0, 1, 2]
        c.x = 0.0
        c.variants = {"low": {"x": 1.0}, "high": {"x": 2.0}}
        return c

    def run(config, workdir):
        os.makedirs(workdir, exist_ok=True)
        return {"m": 10 * config.x + config.seed}

    def claims(results):
        gap = metric(results, "high", "m") - metric(results, "low", "m")
        return [Claim("high beats low by 10", abs(gap - 10) < 1e-9, {"gap": gap})]

    def plots(results, workdir):
        path = os.path.join(workdir, "fig.png")
        open(path, "wb").close()
        return [path]
''')


@pytest.fixture
def toy(tmp_path):
    path = tmp_path / "toy.py"
    path.write_text(MODULE)
    return str(path)


def test_variants_seeds_aggregate_claims_and_summary(toy, tmp_path):
    module = ex.load_module(toy)
    config = ex.load_config(module, None, toy)
    workdir = tmp_path / "run"
    summary = ex.run_experiment(module, config, str(workdir), path=toy, log=lambda _: None)
    low = summary["results"]["low"]
    assert low["per_seed"] == {0: {"m": 10.0}, 1: {"m": 11.0}, 2: {"m": 12.0}}
    assert low["metrics"]["m"]["mean"] == pytest.approx(11.0)
    assert low["metrics"]["m"]["std"] == pytest.approx((2 / 3) ** 0.5)  # ddof=0
    assert summary["results"]["high"]["metrics"]["m"]["mean"] == pytest.approx(21.0)
    assert summary["claims"] == [{"name": "high beats low by 10", "passed": True,
                                  "measured": {"gap": 10.0}, "detail": ""}]
    assert summary["all_claims_passed"] is True
    assert summary["paper"] == "Toy: a paper title (arXiv 0000.00000)."
    assert summary["plots"] == ["fig.png"]
    on_disk = json.loads((workdir / "summary.json").read_text())
    assert on_disk["results"]["high"]["per_seed"]["2"] == {"m": 22.0}
    assert (workdir / "low" / "seed_1").is_dir()


def test_bad_variant_key_is_reported(toy, tmp_path):
    module = ex.load_module(toy)
    config = ex.load_config(module, None, toy)
    with config.unlocked():
        config.variants = {"bad": {"y": 1.0}}
    with pytest.raises(ex.ExperimentError, match="unknown config key 'y'"):
        ex.run_experiment(module, config, str(tmp_path / "run"), log=lambda _: None)


def test_module_without_run_or_seeds(tmp_path):
    no_run = tmp_path / "no_run.py"
    no_run.write_text("def get_config(arg=None):\n    return None\n")
    with pytest.raises(ex.ExperimentError, match="must define run"):
        ex.load_module(str(no_run))
    no_seeds = tmp_path / "no_seeds.py"
    no_seeds.write_text("import ml_collections\n"
                        "def get_config(arg=None):\n    return ml_collections.ConfigDict()\n"
                        "def run(c, w):\n    return {}\n")
    module = ex.load_module(str(no_seeds))
    with pytest.raises(ex.ExperimentError, match="needs a `seeds` list"):
        ex.load_config(module, None, str(no_seeds))


def test_is_smoke_accepts_only_the_full_setting_or_smoke():
    from alignax.experiment import is_smoke

    assert is_smoke("smoke") is True
    assert is_smoke(None) is False and is_smoke("") is False
    with pytest.raises(ValueError, match="unknown argument 'fast'"):
        is_smoke("fast")
