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


def _typed_config():
    import enum

    import ml_collections

    class Mode(enum.Enum):
        FAST = "fast"
        SLOW = "slow"

    c = ml_collections.ConfigDict()
    c.seeds = [0, 1]
    c.train = ml_collections.ConfigDict(dict(steps=10, lr=0.1, progress=True, name="run",
                                             dims=(4, 8), extra=None))
    c.mode = Mode.FAST
    c.lock()
    return c, Mode


@pytest.mark.parametrize("text, value", [("true", True), ("False", False), ("1", True),
                                         ("0", False), ("t", True), ("f", False)])
def test_override_bool_uses_the_absl_boolean_parser(text, value):
    config, _ = _typed_config()
    ex.apply_overrides(config, [f"train.progress={text}"])
    assert config.train.progress is value


def test_override_values_follow_the_field_type():
    config, mode = _typed_config()
    ex.apply_overrides(config, ["train.steps=20", "train.lr=1", "train.name=12",
                                "train.dims=(2, 3, 5)", "seeds=[5, 6, 7]", "mode=slow"])
    assert config.train.steps == 20 and type(config.train.steps) is int
    assert config.train.lr == 1.0 and type(config.train.lr) is float
    assert config.train.name == "12"  # a str field keeps the text, even if it looks numeric
    assert config.train.dims == (2, 3, 5)
    assert config.seeds == [5, 6, 7] and type(config.seeds) is list
    assert config.mode is mode.SLOW
    ex.apply_overrides(config, ["train.dims=16", "seeds=(1, 2)"])  # tuple parser: one element
    assert config.train.dims == (16,)
    assert config.seeds == [1, 2] and type(config.seeds) is list


@pytest.mark.parametrize("text, value", [("[1, 2]", [1, 2]), ("3", 3), ("0.5", 0.5),
                                         ("true", True), ("None", None), ("adamw", "adamw"),
                                         ("'3'", "3"), ("(1, 'a')", (1, "a"))])
def test_override_a_none_field_takes_a_literal_or_a_string(text, value):
    config, _ = _typed_config()
    ex.apply_overrides(config, [f"train.extra={text}"])
    assert config.train.extra == value and type(config.train.extra) is type(value)


@pytest.mark.parametrize("override, message", [
    ("train.steps=1.5", r"--config.train.steps: cannot parse '1.5' as int \("),
    ("train.lr=fast", "--config.train.lr: cannot parse 'fast' as float"),
    ("train.progress=yes", "--config.train.progress: cannot parse 'yes' as bool"),
    ("train.dims=1 2", "--config.train.dims: cannot parse '1 2' as tuple"),
    ("mode=medium", "--config.mode: cannot parse 'medium' as Mode"),
    ("train.stepz=3", r"unknown config key 'train.stepz'; did you mean train.steps"),
    ("train=3", "config key 'train' is a group; set one of its fields"),
    ("train.steps.x=3", "unknown config key 'train.steps.x'"),
    ("train.steps", r"--config.train.steps: expected --config.<key>=<value>"),
])
def test_bad_overrides_fail_in_one_line_and_change_nothing(override, message):
    config, _ = _typed_config()
    before = config.to_dict()
    with pytest.raises(ex.ExperimentError, match=message) as info:
        ex.apply_overrides(config, [override])
    assert "\n" not in str(info.value)
    assert config.to_dict() == before


def test_override_uses_parsers_registered_with_config_flags():
    import ml_collections
    from absl import flags
    from ml_collections import config_flags

    class Interval:
        def __init__(self, lo, hi):
            self.lo, self.hi = lo, hi

    class IntervalParser(flags.ArgumentParser):
        def parse(self, argument):
            lo, hi = argument.split(":")
            return Interval(float(lo), float(hi))

    config_flags.register_flag_parser_for_type(Interval, IntervalParser())
    config = ml_collections.ConfigDict({"seeds": [0], "band": Interval(0.0, 1.0)})
    config.lock()
    ex.apply_overrides(config, ["band=0.25:0.75"])
    assert (config.band.lo, config.band.hi) == (0.25, 0.75)


def test_overrides_define_no_absl_flags():
    from absl import flags

    before = set(flags.FLAGS)
    config, _ = _typed_config()
    ex.apply_overrides(config, ["train.steps=3", "train.extra=1"])
    assert set(flags.FLAGS) == before


def test_variants_set_python_values_without_parsing():
    config, _ = _typed_config()
    ex.set_key(config, "train.extra", [1, "b"], parse=False)
    assert config.train.extra == [1, "b"]
    ex.set_key(config, "train.name", "'quoted'", parse=False)
    assert config.train.name == "'quoted'"  # stored as given, not literal-evaluated
    with pytest.raises(ex.ExperimentError, match="config key 'train.steps': .*cannot be casted"):
        ex.set_key(config, "train.steps", 1.5, parse=False)
    with pytest.raises(ex.ExperimentError, match="unknown config key 'train.nme'"):
        ex.set_key(config, "train.nme", "x", parse=False)


def test_summary_json_is_replaced_whole_or_not_at_all(toy, tmp_path):
    module = ex.load_module(toy)
    config = ex.load_config(module, None, toy)
    workdir = tmp_path / "run"
    ex.run_experiment(module, config, str(workdir), path=toy, log=lambda _: None)
    before = (workdir / "summary.json").read_text()
    # A failure while the summary is being written (here: a value json cannot encode, after the
    # "experiment" key) used to leave a truncated summary.json; now the old file stays whole.
    with pytest.raises(TypeError, match="not JSON serializable"):
        ex.run_experiment(module, config, str(workdir), path=toy, arg=object(),
                          log=lambda _: None)
    assert (workdir / "summary.json").read_text() == before
    json.loads(before)
    assert not [p for p in workdir.iterdir() if p.name.endswith(".tmp")]


def test_workdir_config_is_written_once_and_checked(tmp_path):
    config_json = json.dumps({"seeds": [0], "x": 1.0}, indent=2, sort_keys=True)
    ex.check_workdir_config(str(tmp_path), config_json)
    assert (tmp_path / "config.json").read_text() == config_json + "\n"
    ex.check_workdir_config(str(tmp_path), config_json + "\n")  # the same config resumes
    other = json.dumps({"seeds": [0], "x": 2.0}, indent=2, sort_keys=True)
    with pytest.raises(ex.ExperimentError) as info:
        ex.check_workdir_config(str(tmp_path), other)
    assert str(info.value) == (
        f"{tmp_path} holds a run of a different config (see {tmp_path / 'config.json'}); resume "
        "with the same command or choose another --workdir")
    assert (tmp_path / "config.json").read_text() == config_json + "\n"


def test_workdir_config_is_not_written_by_other_processes(tmp_path):
    ex.check_workdir_config(str(tmp_path), "{}", write=False)
    assert not (tmp_path / "config.json").exists()


@pytest.mark.parametrize("text", ['{\n  "seeds": [\n    0,', "", "\x00\x00\x00"],
                         ids=["truncated", "empty", "zeros"])
def test_unreadable_workdir_config_says_in_one_line_what_to_delete(tmp_path, text):
    path = tmp_path / "config.json"
    path.write_text(text)
    config_json = json.dumps({"seeds": [0]}, indent=2, sort_keys=True)
    with pytest.raises(ex.ExperimentError) as info:
        ex.check_workdir_config(str(tmp_path), config_json)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{path} is unreadable (")
    assert message.endswith(f"; a run killed while writing it?): if {tmp_path} was run with this "
                            f"same config, delete {path} and run again to resume; otherwise "
                            "choose another --workdir")
    assert path.read_text() == text  # left for the user to judge


def test_a_failed_config_write_leaves_no_config_json(tmp_path, monkeypatch):
    import errno
    import os

    def full_disk(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(OSError, match="No space left"):
        ex.check_workdir_config(str(tmp_path), '{"seeds": [0]}')
    assert os.listdir(tmp_path) == []  # the next run writes it afresh


def _all_records(data_dir):
    from alignax.data import load_preference_source

    out = {}
    for name, splits in (("bigram_sft", ["train"]), ("bigram_preferences", ["train", "eval"])):
        for split in splits:
            src = load_preference_source(data_dir, name=name, split=split)
            out[name, split] = [src[i] for i in range(len(src))]
    return out


def test_bt_dpo_synthetic_data_preparation_killed_between_datasets_is_redone(tmp_path,
                                                                              monkeypatch):
    import os

    import numpy as np

    module = ex.load_module(os.path.join(os.path.dirname(__file__), "..", "experiments",
                                         "bt_dpo_synthetic.py"))
    config = module.get_config("smoke")
    task = module.BigramLanguage(**config.task)
    whole, killed = str(tmp_path / "whole"), str(tmp_path / "killed")
    module._write_data(task, config.data, 0, whole)

    real = module.write_preference_dataset

    def kill_at_the_second(data_dir, *, name, **kwargs):
        if name == "bigram_preferences":
            raise KeyboardInterrupt  # the kill, after bigram_sft was written
        return real(data_dir, name=name, **kwargs)

    monkeypatch.setattr(module, "write_preference_dataset", kill_at_the_second)
    with pytest.raises(KeyboardInterrupt):
        module._write_data(task, config.data, 0, killed)
    monkeypatch.undo()
    assert os.listdir(killed) == ["bigram_sft"]
    module._write_data(task, config.data, 0, killed)  # the resume: used to be FileExistsError

    expected, got = _all_records(whole), _all_records(killed)
    assert got.keys() == expected.keys()
    for key in expected:
        assert len(got[key]) == len(expected[key]) > 0
        for a, b in zip(got[key], expected[key]):
            assert a.keys() == b.keys()
            for feature in a:
                np.testing.assert_array_equal(a[feature], b[feature])
