"""Preference datasets as tensorflow-datasets builders writing array_record (no TensorFlow).

`write_preference_dataset` defines a `tfds.core.GeneratorBasedBuilder` for in-memory examples
(dicts of fixed-shape numpy arrays) and builds it with `file_format="array_record"`:
`<data_dir>/<name>/<version>/` then holds `<name>-<split>.array_record-0000X-of-0000Y` shards,
`dataset_info.json` and `features.json`.

`load_preference_source` reads a split back as a random-access source for grain. It uses
`tfds.builder_from_directory(<data_dir>/<name>/<version>).as_data_source(split)`: the builder is
rebuilt from the metadata files, so the class that wrote the data need not exist in the reading
process, and no registered tfds dataset of the same name can shadow it (`tfds.data_source(name,
data_dir=...)` would look the name up in the tfds registry first). Reading needs no TensorFlow.

One builder class is created per call, named after the dataset and never put in the tfds
registry (`skip_registration=True`), so datasets of different names, features or data_dirs
coexist in one process.

Writing is atomic and idempotent. tfds builds the version folder under a temporary name and
renames it into place when complete, so a kill mid-write leaves no `<name>/<version>` folder (only
an `incomplete.*` one, ignored by readers). The folder's `metadata.json` holds a SHA-256
fingerprint of everything written (name, version, description, features, and every example of
every split in order); writing the same examples again returns the existing folder instead of
failing, so a preparation of several datasets killed half-way is simply run again (each
experiment's data preparation gets this), while different examples under the same name and
version still raise FileExistsError.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
import types
from typing import Any, Mapping, Sequence

import numpy as np

from alignax._src import faults
from alignax.data.safety import check_features_json

_NAME_RE = re.compile(r"^[a-z][a-z0-9_]*$")
_FINGERPRINT_KEY = "alignax_fingerprint"  # in <dataset>/metadata.json (tfds MetadataDict)
_VERSION_RE = re.compile(r"^\d+\.\d+\.\d+$")


def _tfds():
    import tensorflow_datasets as tfds  # Imported lazily: it takes ~0.3 s.

    return tfds


def _feature_specs(features: Mapping[str, tuple[Sequence[int], Any]]
                   ) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    specs = {}
    for key, spec in features.items():
        if not isinstance(key, str) or not key:
            raise ValueError(f"feature names must be non-empty strings, got {key!r}")
        try:
            shape, dtype = spec
            shape = tuple(int(d) for d in shape)
            dtype = np.dtype(dtype)
        except (TypeError, ValueError) as e:
            raise ValueError(f"feature {key!r}: expected (shape, dtype) with a fixed shape, got "
                             f"{spec!r} ({e})") from None
        if any(d < 0 for d in shape):
            raise ValueError(f"feature {key!r}: shape {shape} has a negative dimension")
        if dtype.kind not in "biuf":
            raise ValueError(f"feature {key!r}: dtype {dtype} is not a bool, int or float type")
        specs[key] = (shape, dtype)
    if not specs:
        raise ValueError("features is empty")
    return specs


def _check_example(example: Any, specs, split: str, index: int) -> dict[str, np.ndarray]:
    where = f"split {split!r}, example {index}"
    if not isinstance(example, Mapping):
        raise ValueError(f"{where}: expected a dict of arrays, got {type(example).__name__}")
    missing = sorted(set(specs) - set(example))
    unknown = sorted(set(example) - set(specs))
    if missing or unknown:
        raise ValueError(f"{where}: missing features {missing}, unknown features {unknown}")
    out = {}
    for key, (shape, dtype) in specs.items():
        value = np.asarray(example[key])
        if value.shape != shape:
            raise ValueError(f"{where}, feature {key!r}: shape {value.shape} != declared {shape}")
        if not np.can_cast(value.dtype, dtype, casting="same_kind"):
            raise ValueError(f"{where}, feature {key!r}: dtype {value.dtype} cannot be stored as "
                             f"{dtype}")
        out[key] = value.astype(dtype, copy=False)
    return out


def _fingerprint(name: str, version: str, description: str, specs, splits) -> str:
    """SHA-256 of everything `write_preference_dataset` writes (checked examples, in order)."""
    h = hashlib.sha256()
    header = {"name": name, "version": version, "description": description,
              "features": {k: [list(shape), dtype.str] for k, (shape, dtype) in specs.items()},
              "splits": {split: len(examples) for split, examples in splits.items()}}
    h.update(json.dumps(header, sort_keys=True).encode())
    for split in sorted(splits):
        h.update(split.encode() + b"\0")
        for example in splits[split]:
            for key in specs:
                h.update(np.ascontiguousarray(example[key]).tobytes())
    return "sha256:" + h.hexdigest()


def _stored_fingerprint(dataset_dir: str) -> str | None:
    try:
        with open(os.path.join(dataset_dir, "metadata.json"), encoding="utf-8") as f:
            value = json.load(f).get(_FINGERPRINT_KEY)
    except (OSError, ValueError, AttributeError):
        return None
    return value if isinstance(value, str) else None


def _builder_class(name: str, version: str, description: str, specs, splits, fingerprint: str):
    """A fresh GeneratorBasedBuilder subclass for these checked examples (not registered)."""
    tfds = _tfds()
    feature_dict = tfds.features.FeaturesDict({
        key: tfds.features.Tensor(shape=shape, dtype=dtype) for key, (shape, dtype) in specs.items()
    })

    def _info(self):
        # disable_shuffling: record i of a split is example i, in the order given.
        # metadata.json is written inside tfds' temporary folder: the fingerprint arrives with
        # the data, atomically.
        return tfds.core.DatasetInfo(
            builder=self, description=description, features=feature_dict,
            disable_shuffling=True,
            metadata=tfds.core.MetadataDict({_FINGERPRINT_KEY: fingerprint}))

    def _split_generators(self, dl_manager):
        del dl_manager  # Nothing to download.
        return {split: self._generate_examples(split) for split in splits}

    def _generate_examples(self, split):
        for i, example in enumerate(splits[split]):
            if i == len(splits[split]) // 2:  # a kill here leaves tfds' incomplete.* folder
                faults.point("dataset_write", name, split)
            yield i, example

    def _quiet(self):  # tfds prints "Downloading and preparing ..." lines to stdout.
        del self

    def body(namespace):
        namespace.update(
            name=name,
            VERSION=tfds.core.Version(version),
            RELEASE_NOTES={version: "Written by alignax.data.write_preference_dataset."},
            __module__=__name__,
            # No code file to look up checksums next to; tfds' own lookup would also import the
            # `importlib_resources` backport, which tfds does not declare (not installed here).
            code_path=None,
            _info=_info,
            _split_generators=_split_generators,
            _generate_examples=_generate_examples,
            _log_download_bytes=_quiet,
            _log_download_done=_quiet,
        )

    class_name = "".join(part.capitalize() for part in name.split("_"))
    return types.new_class(class_name, (tfds.core.GeneratorBasedBuilder,),
                           {"skip_registration": True}, body)


def write_preference_dataset(
    data_dir: str | os.PathLike,
    *,
    name: str = "synthetic_preferences",
    splits: Mapping[str, Sequence[Mapping[str, np.ndarray]]],
    features: Mapping[str, tuple[Sequence[int], Any]],
    version: str = "1.0.0",
    description: str = "",
    overwrite: bool = False,
) -> str:
    """Writes in-memory examples as a tfds dataset in array_record files.

    Example::

      features = {"prompt": ((8,), np.int32), "chosen": ((16,), np.int32),
                  "rejected": ((16,), np.int32), "chosen_gold": ((), np.float32)}
      path = write_preference_dataset(data_dir, splits={"train": examples}, features=features)

    Args:
      data_dir: the tfds data_dir; the dataset goes to `<data_dir>/<name>/<version>`.
      name: dataset name, snake_case (`[a-z][a-z0-9_]*`).
      splits: split name -> examples; each example is a dict with exactly the keys of `features`,
        arrays of the declared shape and of a dtype castable to the declared one ("same_kind").
        Record i of a split is example i.
      features: feature name -> (shape, numpy dtype), fixed shapes, bool/int/float dtypes.
      version: "x.y.z".
      description: stored in dataset_info.json.
      overwrite: replace an existing dataset of this name and version. Otherwise an existing
        one is kept if it holds exactly these examples (its fingerprint matches: nothing is
        written) and is an error if not (tfds would silently keep the old data).

    Returns:
      The dataset directory `<data_dir>/<name>/<version>`.

    Raises:
      ValueError: a bad name, version, feature spec or example, or an empty split.
      FileExistsError: the dataset exists with other examples (or without a fingerprint: written
        by an older alignax) and `overwrite` is False.
    """
    tfds = _tfds()
    data_dir = os.fspath(data_dir)
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise ValueError(f"dataset name must be snake_case ([a-z][a-z0-9_]*), got {name!r}")
    if not isinstance(version, str) or not _VERSION_RE.match(version):
        raise ValueError(f"version must look like '1.0.0', got {version!r}")
    specs = _feature_specs(features)
    if not splits:
        raise ValueError("splits is empty")
    for split, examples in splits.items():
        if not isinstance(split, str) or not re.match(r"^\w+$", split):
            raise ValueError(f"split names must be word characters, got {split!r}")
        if len(examples) == 0:
            raise ValueError(f"split {split!r} has no examples")
    dataset_dir = os.path.join(data_dir, name, version)

    # Check every example before tfds starts writing, so a bad one leaves no partial files.
    checked = {split: [_check_example(e, specs, split, i) for i, e in enumerate(examples)]
               for split, examples in splits.items()}
    fingerprint = _fingerprint(name, version, description, specs, checked)
    if os.path.exists(dataset_dir) and not overwrite:
        stored = _stored_fingerprint(dataset_dir)
        if stored == fingerprint:
            return dataset_dir  # written before with exactly these examples
        what = "other examples" if stored else "no fingerprint (written by an older alignax)"
        raise FileExistsError(f"dataset {name!r} version {version} at {dataset_dir} holds "
                              f"{what}; pass overwrite=True or delete {dataset_dir} to replace it")
    cls = _builder_class(name, version, description, specs, checked, fingerprint)
    builder = cls(data_dir=data_dir, file_format="array_record")
    config = tfds.download.DownloadConfig(
        download_mode=tfds.download.GenerateMode.FORCE_REDOWNLOAD if overwrite else
        tfds.download.GenerateMode.REUSE_DATASET_IF_EXISTS)
    from tensorflow_datasets.core.utils import tqdm_utils  # lazily, as in _tfds

    progress_was_on = getattr(tqdm_utils, "_active", True)
    tfds.display_progress_bar(False)
    try:
        # Nothing is downloaded, but tfds would create `<data_dir>/downloads/`.
        with tempfile.TemporaryDirectory(prefix="alignax_tfds_") as download_dir:
            builder.download_and_prepare(download_dir=download_dir, download_config=config)
    finally:
        tfds.display_progress_bar(progress_was_on)
    return os.fspath(builder.data_dir)


class PreferenceSource:
    """Random-access source of one split of a dataset written by `write_preference_dataset`.

    `len(source)` records; `source[i]` is record i as a dict feature -> numpy array of the
    declared shape and dtype (tfds alone returns Python scalars for 0-d features);
    `source.__getitems__(indices)` reads several records in one array_record call. Safe to read
    from several threads (grain prefetch threads).

    Attributes:
      info: the `tfds.core.DatasetInfo` read from the dataset directory.
      split: the split name.
    """

    def __init__(self, data_source, info, split: str):
        self._source = data_source
        self.info = info
        self.split = split
        self._specs = {key: (tuple(f.shape), np.dtype(f.np_dtype))
                       for key, f in sorted(info.features.items())}
        self._length = len(data_source)

    @property
    def features(self) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
        """Feature name -> (shape, dtype), as declared when the dataset was written."""
        return dict(self._specs)

    def __len__(self) -> int:
        return self._length

    def _index(self, i) -> int:
        i = int(np.asarray(i).item()) if not isinstance(i, int) else i
        if i < 0:
            i += self._length
        if not 0 <= i < self._length:
            raise IndexError(f"index out of range for {self._length} records")
        return i

    def _convert(self, example: Mapping[str, Any]) -> dict[str, np.ndarray]:
        return {key: np.asarray(example[key], dtype=dtype)
                for key, (_, dtype) in self._specs.items()}

    def __getitem__(self, i) -> dict[str, np.ndarray]:
        return self._convert(self._source[self._index(i)])

    def __getitems__(self, indices: Sequence[int]) -> list[dict[str, np.ndarray]]:
        indices = [self._index(i) for i in indices]
        return [self._convert(e) for e in self._source.__getitems__(indices)] if indices else []

    def __repr__(self) -> str:
        return (f"PreferenceSource(name={self.info.name!r}, split={self.split!r}, "
                f"len={self._length})")


def _latest_version(root: str) -> str:
    versions = [v for v in os.listdir(root) if _VERSION_RE.match(v)
                and os.path.isfile(os.path.join(root, v, "dataset_info.json"))]
    if not versions:
        raise FileNotFoundError(f"no complete version of the dataset in {root}")
    return max(versions, key=lambda v: tuple(int(p) for p in v.split(".")))


def load_preference_source(
    data_dir: str | os.PathLike,
    *,
    name: str = "synthetic_preferences",
    split: str = "train",
    version: str | None = None,
) -> PreferenceSource:
    """Opens one split of a dataset written by `write_preference_dataset` for random access.

    Reads with `tfds.builder_from_directory(...).as_data_source(split)` (array_record, no
    TensorFlow) and wraps it in a `PreferenceSource` that returns numpy arrays of the declared
    dtypes.

    Args:
      data_dir: the tfds data_dir given to `write_preference_dataset`.
      name: dataset name.
      split: split name.
      version: "x.y.z"; None reads the highest version present.

    Returns:
      A `PreferenceSource` (len, __getitem__, __getitems__).

    Raises:
      FileNotFoundError: no such dataset or version.
      ValueError: no such split, or the files are not array_record.
    """
    tfds = _tfds()
    root = os.path.join(os.fspath(data_dir), name)
    if not os.path.isdir(root):
        raise FileNotFoundError(f"no dataset {name!r} in {os.fspath(data_dir)}")
    version = version or _latest_version(root)
    dataset_dir = os.path.join(root, version)
    if not os.path.isfile(os.path.join(dataset_dir, "dataset_info.json")):
        raise FileNotFoundError(f"no version {version} of dataset {name!r} in {root}")
    check_features_json(dataset_dir)  # tfds would import any module features.json names
    builder = tfds.builder_from_directory(dataset_dir)
    info = builder.info
    if split not in info.splits:
        raise ValueError(f"dataset {name!r} has no split {split!r}; splits: "
                         f"{sorted(info.splits.keys())}")
    file_format = getattr(info.file_format, "value", info.file_format)
    if file_format != "array_record":
        raise ValueError(f"dataset {name!r} is stored as {file_format}, not array_record")
    return PreferenceSource(builder.as_data_source(split=split), info, split)
