"""Configs are checked whole, before any work: types, ranges, names, the mesh, every variant."""

import glob
import os
import subprocess
import sys

import ml_collections
import pytest

from alignax import experiment as ex
from alignax._src.config import check_values, resolve_config
from alignax.algorithms import (direct, online_dpo, policy_gradient, ppo, rejection,
                                reward_model, sft)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXPERIMENT = os.path.join(REPO, "experiments", "bt_dpo_synthetic.py")


@pytest.mark.parametrize("config,message", [
    ({"train": {"steps": -3}}, r"train.steps=-3 must be a positive int"),
    ({"train": {"steps": 0}}, r"train.steps=0 must be a positive int"),
    ({"train": {"batch_size": True}}, r"train.batch_size=True must be an int"),
    ({"train": {"eval_every": -1}}, r"train.eval_every=-1 must be an int >= 0"),
    ({"optimizer": {"learning_rate": "1e-3"}}, r"optimizer.learning_rate='1e-3' must be a float"),
    ({"optimizer": {"learning_rate": -1e-3}}, r"learning_rate=-0.001 must be a finite number"),
    ({"optimizer": {"name": "adamz"}}, r"optax has no optimizer 'adamz'"),
    ({"optimizer": {"kwargs": {"weight_decy": 0.1}}}, r"adamw takes no \['weight_decy'\]"),
    ({"loss": "dpoo"}, r"unknown loss 'dpoo'; did you mean 'dpo'"),
    ({"loss_kwargs": {"betta": 0.1}}, r"dpo_loss takes no \['betta'\]"),
    ({"mesh": {"data": 4}}, r"mesh \{'data': 4\}: mesh .* needs 4 devices, have 1"),
])
def test_direct_config_mistakes_are_one_line_naming_the_key(config, message):
    with pytest.raises(ValueError, match=message) as info:
        direct.validate(config)
    assert "\n" not in str(info.value)
    assert str(info.value).startswith("direct config")


def test_every_recipe_validates_its_defaults_and_rejects_a_bad_value():
    for recipe in (sft, reward_model, direct, policy_gradient, ppo, online_dpo, rejection):
        resolved = recipe.validate(None)
        assert isinstance(resolved, dict) and resolved
    with pytest.raises(ValueError, match="unknown loss 'hinge'"):
        reward_model.validate({"loss": "hinge"})
    with pytest.raises(ValueError, match="unknown advantage 'grpoo'; did you mean 'grpo'"):
        policy_gradient.validate({"advantage": "grpoo"})
    with pytest.raises(ValueError, match="24 rows per iteration do not split into minibatches=5"):
        policy_gradient.validate({"prompts_per_iteration": 3, "num_samples": 8, "minibatches": 5})
    with pytest.raises(ValueError, match="num_samples=1 must be >= 2"):
        online_dpo.validate({"num_samples": 1})
    with pytest.raises(ValueError, match=r"top_p=1.5 must be a number in \(0, 1\]"):
        ppo.validate({"top_p": 1.5})
    with pytest.raises(ValueError, match="iterations=0 must be a positive int"):
        rejection.validate({"iterations": 0})


def test_int_fields_take_no_bools_and_float_fields_take_ints():
    defaults = {"steps": 10, "lr": 1e-3, "flag": False, "name": "x", "opt": None}
    assert resolve_config(defaults, {"lr": 1, "opt": "anything"}, "c")["lr"] == 1
    with pytest.raises(ValueError, match="c: steps=True must be an int"):
        resolve_config(defaults, {"steps": True}, "c")
    with pytest.raises(ValueError, match="c: flag=1 must be a bool"):
        resolve_config(defaults, {"flag": 1}, "c")
    with pytest.raises(ValueError, match="c: name=3 must be a str"):
        resolve_config(defaults, {"name": 3}, "c")


def test_seeds_must_be_distinct_non_negative_ints():
    for seeds in ([], [0, 0], [-1], [0.5], [True]):
        with pytest.raises(ValueError, match="seeds="):
            check_values({"seeds": seeds}, "config")
    check_values({"seeds": [0, 1, 2]}, "config")


def test_a_variant_setting_a_bool_into_an_int_field_is_refused():
    config = ml_collections.ConfigDict({"seeds": [0], "steps": 3})
    config.lock()
    with pytest.raises(ex.ExperimentError, match="True is a bool; the field is an int"):
        ex.set_key(config, "steps", True, parse=False)


def test_experiment_validation_names_the_variant_and_runs_the_module_hook():
    module = ex.load_module(EXPERIMENT)
    config = ex.load_config(module, "smoke", EXPERIMENT)
    ex.apply_overrides(config, ["dpo.train.steps=-3"])
    with pytest.raises(ex.ExperimentError, match=r"bt_dpo_synthetic.py: config: "
                                                 r"dpo.train.steps=-3 must be a positive int"):
        ex.validate(module, config, EXPERIMENT)
    config = ex.load_config(module, "smoke", EXPERIMENT)
    ex.apply_overrides(config, ["rm.loss=hinge"])  # the hook's reward_model.validate
    with pytest.raises(ex.ExperimentError, match="reward-model config: unknown loss 'hinge'"):
        ex.validate(module, config, EXPERIMENT)

    class WithVariants:
        @staticmethod
        def validate(config):
            if config.lr > 1:
                raise ValueError(f"lr={config.lr} is too large")

    config = ml_collections.ConfigDict({"seeds": [0], "lr": 0.1,
                                        "variants": {"ok": {}, "big": {"lr": 2.0}}})
    with pytest.raises(ex.ExperimentError, match=r"x.py \[big\]: lr=2.0 is too large"):
        ex.validate(WithVariants, config, "x.py")


def test_every_experiment_config_validates():
    for path in sorted(glob.glob(os.path.join(REPO, "experiments", "*.py"))):
        if os.path.basename(path).startswith("_"):
            continue
        module = ex.load_module(path)
        for arg in (None, "smoke"):
            ex.validate(module, ex.load_config(module, arg, path), path)


def test_cli_refuses_a_bad_value_before_creating_the_workdir(tmp_path):
    workdir = tmp_path / "w"
    out = subprocess.run(
        [sys.executable, "-m", "alignax.cli", "run", "experiments/bt_dpo_synthetic.py:smoke",
         "--workdir", str(workdir), "--config.dpo.train.steps=-3"],
        cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2, out.stderr
    assert out.stderr.strip() == ("alignax: experiments/bt_dpo_synthetic.py: config: "
                                  "dpo.train.steps=-3 must be a positive int")
    assert not workdir.exists()  # nothing trained, nothing written
