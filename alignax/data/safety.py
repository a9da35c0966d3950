"""What alignax refuses to execute from data files: the feature classes a tfds folder names.

A tfds dataset folder describes its features in `features.json`, where every feature carries a
Python class name (`"pythonClassName": "tensorflow_datasets.core.features.tensor_feature.Tensor"`).
`tfds.builder_from_directory` imports the module of any name it does not know
(`FeatureConnector.cls_from_name` -> `importlib.import_module`), so a dataset folder from
elsewhere could make the reader run the top-level code of any module importable here. alignax
writes only `FeaturesDict` of `Tensor` features (`write_preference_dataset`), so
`check_features_json` allows exactly those before tfds reads the folder, and refuses anything
else (a legacy `"type"` entry or a `"proto_cls"` included) with one line naming the file.

The rest of the reading path executes nothing: checkpoints are orbax (tensorstore/OCDBT, JSON
metadata), data are array_record/JSONL/Parquet/safetensors, and tests/test_security.py checks
that no module of alignax imports pickle, marshal or shelve or calls eval/exec.
"""

from __future__ import annotations

import json
import os
from typing import Any

from alignax.data.errors import DataError

ALLOWED_FEATURE_CLASSES = frozenset({
    "tensorflow_datasets.core.features.features_dict.FeaturesDict",
    "tensorflow_datasets.core.features.tensor_feature.Tensor",
})
# keys of features.json that name something tfds would import or construct by name
_CLASS_KEYS = ("pythonClassName", "type", "proto_cls")


def _class_names(node: Any):
    if isinstance(node, dict):
        for key, value in node.items():
            if key in _CLASS_KEYS and isinstance(value, str):
                yield key, value
            else:
                yield from _class_names(value)
    elif isinstance(node, list):
        for item in node:
            yield from _class_names(item)


def check_features_json(dataset_dir: str | os.PathLike) -> None:
    """Raises DataError unless every class named in `<dataset_dir>/features.json` is one that
    alignax writes (ALLOWED_FEATURE_CLASSES). A missing file passes (tfds reports it)."""
    path = os.path.join(os.fspath(dataset_dir), "features.json")
    if not os.path.exists(path):
        return
    try:
        with open(path, encoding="utf-8") as f:
            spec = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"{path}: unreadable ({type(e).__name__}: {e}); delete the dataset "
                        "folder to have it written again") from None
    for key, name in _class_names(spec):
        if key != "pythonClassName" or name not in ALLOWED_FEATURE_CLASSES:
            raise DataError(
                f"{path}: {key} {name!r} is not a feature class alignax writes; refusing to let "
                f"tfds import it (allowed: {sorted(ALLOWED_FEATURE_CLASSES)})")
