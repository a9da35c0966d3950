"""Preference datasets as tensorflow-datasets builders writing array_record (no TensorFlow).

`write_preference_dataset` builds a `tfds.core.GeneratorBasedBuilder` for given in-memory
examples (dicts of fixed-shape numpy arrays) with `file_format="array_record"`;
`load_preference_source` reads it back with `tfds.data_source`, a random-access source
(len, __getitem__) that grain pipelines consume directly.
"""

from __future__ import annotations

import contextlib
import io
import os
import types
from typing import Mapping, Sequence

import numpy as np


def _tfds():
    import tensorflow_datasets as tfds

    return tfds


def _class_name(name: str) -> str:
    return "".join(part.capitalize() for part in name.split("_")) or "Dataset"


def write_preference_dataset(
    data_dir: str,
    *,
    name: str = "synthetic_preferences",
    splits: Mapping[str, Sequence[Mapping[str, np.ndarray]]],
    features: Mapping[str, tuple[tuple[int, ...], type]],
    version: str = "1.0.0",
    description: str = "",
) -> str:
    """Writes `splits` as a tfds dataset in array_record files; returns the dataset directory.

    Args:
      data_dir: tfds data_dir (the dataset lands in data_dir/name/version).
      name: dataset name (snake_case).
      splits: split name -> list of examples, each a dict feature -> numpy array.
      features: feature -> (shape, numpy dtype); every example must match.
      version: dataset version "x.y.z".
      description: free text stored in dataset_info.json.
    """
    tfds = _tfds()
    feature_dict = tfds.features.FeaturesDict({
        key: tfds.features.Tensor(shape=tuple(shape), dtype=np.dtype(dtype))
        for key, (shape, dtype) in features.items()
    })

    def body(ns):
        ns["VERSION"] = tfds.core.Version(version)
        ns["RELEASE_NOTES"] = {version: "written by alignax"}

        def _info(self):
            # disable_shuffling keeps record i == example i of the split.
            return tfds.core.DatasetInfo(builder=self, description=description,
                                         features=feature_dict, disable_shuffling=True)

        def _split_generators(self, dl_manager):
            del dl_manager
            return {split: self._generate_examples(split) for split in splits}

        def _generate_examples(self, split):
            for i, example in enumerate(splits[split]):
                missing = set(features) - set(example)
                if missing:
                    raise ValueError(f"example {i} of split {split!r} lacks {sorted(missing)}")
                yield i, {k: np.asarray(example[k], dtype=np.dtype(features[k][1]))
                          for k in features}

        ns.update(_info=_info, _split_generators=_split_generators,
                  _generate_examples=_generate_examples)

    cls = types.new_class(_class_name(name), (tfds.core.GeneratorBasedBuilder,),
                          {"skip_registration": True}, body)
    cls.name = name
    builder = cls(data_dir=data_dir, file_format="array_record")
    from tensorflow_datasets.core.utils import tqdm_utils

    was_enabled = tqdm_utils._active  # noqa: SLF001 - restore the user's setting afterwards
    tfds.display_progress_bar(False)
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # tfds prints "Downloading ..." lines
            builder.download_and_prepare()
    finally:
        tfds.display_progress_bar(was_enabled)
    return builder.data_dir


def load_preference_source(data_dir: str, *, name: str = "synthetic_preferences",
                           split: str = "train", version: str | None = None):
    """Random-access source of a dataset written by `write_preference_dataset`.

    Reads with `tfds.data_source` (array_record, no TensorFlow): `len(src)` and `src[i]`, a dict of
    numpy arrays, record i being example i of the split. The dataset class need not be imported:
    tfds rebuilds it from the files' metadata.
    """
    tfds = _tfds()
    root = os.path.join(data_dir, name)
    if not os.path.isdir(root) or not any(v[:1].isdigit() for v in os.listdir(root)):
        raise FileNotFoundError(f"no dataset {name!r} in {data_dir}")
    spec = f"{name}:{version}" if version else name
    return tfds.data_source(spec, data_dir=data_dir, split=split)
