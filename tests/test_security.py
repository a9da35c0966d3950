"""Nothing alignax reads runs code: no pickle, no eval/exec, tfds feature classes allow-listed."""

import ast
import glob
import json
import os
import pickle
import tomllib

import numpy as np
import pytest

from alignax.data import DataError
from alignax.data.safety import ALLOWED_FEATURE_CLASSES, check_features_json

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SOURCES = sorted(glob.glob(os.path.join(REPO, "alignax", "**", "*.py"), recursive=True)
                 + glob.glob(os.path.join(REPO, "experiments", "*.py")))

UNSAFE_MODULES = {"pickle", "cPickle", "_pickle", "marshal", "shelve", "dill", "cloudpickle",
                  "joblib"}
UNSAFE_CALLS = {"eval", "exec", "compile", "__import__"}


def _violations(path: str) -> list[str]:
    tree = ast.parse(open(path, encoding="utf-8").read(), path)
    found = []
    for node in ast.walk(tree):
        where = f"{os.path.relpath(path, REPO)}:{getattr(node, 'lineno', 0)}"
        if isinstance(node, ast.Import):
            found += [f"{where} imports {a.name}" for a in node.names
                      if a.name.split(".")[0] in UNSAFE_MODULES]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in \
                UNSAFE_MODULES:
            found.append(f"{where} imports from {node.module}")
        elif isinstance(node, ast.Call):
            func = node.func
            name = func.id if isinstance(func, ast.Name) else (
                func.attr if isinstance(func, ast.Attribute) else "")
            owner = func.value.id if isinstance(func, ast.Attribute) and isinstance(
                func.value, ast.Name) else ""
            if isinstance(func, ast.Name) and name in UNSAFE_CALLS:
                found.append(f"{where} calls {name}()")
            if owner in ("np", "numpy") and name == "load":
                safe = any(k.arg == "allow_pickle" and isinstance(k.value, ast.Constant)
                           and k.value.value is False for k in node.keywords)
                if not safe:
                    found.append(f"{where} calls np.load without allow_pickle=False")
            if owner == "torch" and name == "load":
                found.append(f"{where} calls torch.load (pickle)")
            if owner == "yaml" and name in ("load", "unsafe_load", "full_load"):
                found.append(f"{where} calls yaml.{name}")
    return found


def test_no_module_imports_pickle_or_evaluates_code():
    assert len(SOURCES) > 50
    found = [v for path in SOURCES for v in _violations(path)]
    assert not found, "\n".join(found)


def test_the_scan_catches_what_it_looks_for(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("import pickle\nfrom marshal import loads\nimport numpy as np\n"
                   "eval('1')\nnp.load('x.npy')\nnp.load('y.npy', allow_pickle=False)\n")
    found = _violations(str(bad))
    assert len(found) == 4, found
    assert any("imports pickle" in v for v in found) and any("calls eval()" in v for v in found)
    assert sum("np.load" in v for v in found) == 1


def test_ruff_security_rules_are_on_for_the_library():
    with open(os.path.join(REPO, "pyproject.toml"), "rb") as f:
        lint = tomllib.load(f)["tool"]["ruff"]["lint"]
    assert "S" in lint["select"]
    ignored = lint.get("per-file-ignores", {})
    assert not any(k.startswith("alignax") for k in ignored), ignored


def _features(class_name: str) -> dict:
    return {"pythonClassName": "tensorflow_datasets.core.features.features_dict.FeaturesDict",
            "featuresDict": {"features": {"x": {"pythonClassName": class_name,
                                                "tensor": {"dtype": "int32"}}}}}


@pytest.mark.parametrize("spec", [
    _features("os.path.Evil"),
    _features("tensorflow_datasets.core.features.image_feature.Image"),
    {"type": "my_project.xyz.MyFeature", "content": {}},
    {"pythonClassName": "tensorflow_datasets.core.features.features_dict.FeaturesDict",
     "proto_cls": "some.module.Proto"},
])
def test_features_json_naming_another_class_is_refused(tmp_path, spec):
    (tmp_path / "features.json").write_text(json.dumps(spec))
    with pytest.raises(DataError, match="is not a feature class alignax writes") as info:
        check_features_json(tmp_path)
    assert str(tmp_path / "features.json") in str(info.value)
    assert "\n" not in str(info.value)


def test_features_json_of_our_own_datasets_passes(tmp_path):
    from alignax.data import write_preference_dataset

    write_preference_dataset(
        str(tmp_path), name="toy",
        splits={"train": [{"ids": np.arange(4, dtype=np.int32)}] * 3},
        features={"ids": ((4,), np.int32)})
    folders = glob.glob(str(tmp_path / "toy" / "*"))
    assert len(folders) == 1
    spec = json.load(open(os.path.join(folders[0], "features.json")))
    assert {v for k, v in _walk(spec)} <= ALLOWED_FEATURE_CLASSES
    check_features_json(folders[0])


def _walk(node):
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "pythonClassName":
                yield k, v
            else:
                yield from _walk(v)


def test_loading_a_dataset_with_a_foreign_feature_class_is_refused(tmp_path):
    from alignax.data import load_preference_source, write_preference_dataset

    write_preference_dataset(
        str(tmp_path), name="toy",
        splits={"train": [{"ids": np.arange(4, dtype=np.int32)}] * 3},
        features={"ids": ((4,), np.int32)})
    folder = glob.glob(str(tmp_path / "toy" / "*"))[0]
    path = os.path.join(folder, "features.json")
    spec = json.load(open(path))
    spec["featuresDict"]["features"]["ids"]["pythonClassName"] = "not_a_module_here.Feature"
    with open(path, "w") as f:
        json.dump(spec, f)
    with pytest.raises(DataError, match="not_a_module_here.Feature"):
        load_preference_source(str(tmp_path), name="toy")


def test_checkpoints_and_datasets_round_trip_without_unpickling(tmp_path, monkeypatch):
    import jax
    import jax.numpy as jnp

    from alignax.data import load_preference_source, write_preference_dataset
    from alignax.train.checkpoint import Checkpointer, abstract_like

    def refuse(*args, **kwargs):
        raise AssertionError("pickle was used")

    for name in ("load", "loads", "Unpickler"):
        monkeypatch.setattr(pickle, name, refuse)
    state = {"w": jnp.arange(6.0).reshape(2, 3), "step": jnp.asarray(3)}
    ckpt = Checkpointer(str(tmp_path / "ckpt"), every=1)
    ckpt.save(1, state, force=True)
    ckpt.close()
    restored, step = Checkpointer(str(tmp_path / "ckpt"), every=1).restore(abstract_like(state))
    assert step == 1
    np.testing.assert_array_equal(jax.device_get(restored["w"]), np.arange(6.0).reshape(2, 3))
    write_preference_dataset(
        str(tmp_path / "data"), name="toy",
        splits={"train": [{"ids": np.arange(4, dtype=np.int32)}] * 3},
        features={"ids": ((4,), np.int32)})
    source = load_preference_source(str(tmp_path / "data"), name="toy")
    np.testing.assert_array_equal(source[1]["ids"], np.arange(4))
