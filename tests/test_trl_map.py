"""docs/trl.md: the TRL option map is current, complete for the installed TRL, and every alignax
config key it names exists."""

import dataclasses
import inspect
import os

import pytest

from tests import runs

trl_map = runs.load_tool("trl_map")


def test_page_is_current():
    with open(os.path.join(runs.REPO, "docs", "trl.md")) as f:
        assert f.read() == trl_map.render(), "run: python tools/trl_map.py"


def _recipes():
    from alignax.algorithms import direct, kto, policy_gradient, reward_model
    from alignax.losses import DIRECT_LOSSES, REFERENCE_FREE_LOSSES, REWARD_LOSSES

    return {
        "direct": (direct.default_config().to_dict(),
                   {**DIRECT_LOSSES, **REFERENCE_FREE_LOSSES}),
        "reward_model": (reward_model.default_config().to_dict(), REWARD_LOSSES),
        "kto": (kto.default_config().to_dict(), {}),
        "policy_gradient": (policy_gradient.default_config().to_dict(), {}),
    }


def test_every_named_alignax_key_exists():
    from alignax.models.transformer import TransformerConfig

    recipes = _recipes()
    model_fields = {f.name for f in dataclasses.fields(TransformerConfig)}
    checked = 0
    for config_name, table in trl_map.CONFIGS.items():
        for field, (kind, text) in table.items():
            assert kind in trl_map.KINDS, (config_name, field)
            assert text.strip(), (config_name, field)
            if kind != "key":
                continue
            recipe, _, path = text.split("|")[0].strip().partition(":")
            defaults, losses = recipes[recipe]
            head, *rest = path.split(".")
            where = f"{config_name}.{field} -> {recipe}:{path}"
            assert head in defaults, where
            if head == "model":
                assert rest and rest[0] in model_fields, where
            elif head == "loss_kwargs":
                assert any(rest[0] in inspect.signature(fn).parameters
                           for fn in losses.values()), where
            else:
                node = defaults[head]
                for part in rest:
                    assert isinstance(node, dict) and part in node, where
                    node = node[part]
            checked += 1
    assert checked > 30


def test_every_field_of_the_installed_trl_is_listed():
    transformers = pytest.importorskip("transformers")
    trl = pytest.importorskip("trl")
    base = {f.name for f in dataclasses.fields(transformers.TrainingArguments)}
    for name, table in trl_map.CONFIGS.items():
        cls = getattr(trl, name, None)
        if cls is None:
            from trl.experimental import kto

            cls = getattr(kto, name)
        own = {f.name for f in dataclasses.fields(cls)} - base
        assert sorted(own - set(table)) == [], f"{name}: fields not in tools/trl_map.py"
        assert sorted(set(table) - own) == [], f"{name}: fields TRL no longer has"
