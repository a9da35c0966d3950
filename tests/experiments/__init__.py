"""Shared pieces of the experiment tests: the tiny world of the `:real` configs."""

import json
import os
from pathlib import Path

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _words(rng, n):
    return " ".join(f"w{i}" for i in rng.integers(0, 26, n))


def write_real_world(root):
    """One LM checkpoint, one reward (sequence-classification) checkpoint, and datasets in
    TRL's paired (conversational) and prompt-only (with answer / reference columns) formats."""
    import datasets

    from tests.test_utils import write_tiny_checkpoint

    root = Path(root)
    # one layer: every program compiles about twice as fast as with two
    out = {"lm": write_tiny_checkpoint(root / "lm", n_layers=1),
           "rm": write_tiny_checkpoint(root / "rm", kind="reward", seed=1, n_layers=1)}
    rng = np.random.default_rng(0)
    datasets.Dataset.from_list([
        {"prompt": [{"role": "user", "content": _words(rng, 3)}],
         "chosen": [{"role": "assistant", "content": _words(rng, 2)}],
         "rejected": [{"role": "assistant", "content": _words(rng, 2)}]} for _ in range(16)]
    ).save_to_disk(str(root / "pairs"))
    datasets.Dataset.from_list([
        {"prompt": [{"role": "user", "content": _words(rng, 3)}], "answer": _words(rng, 1),
         "reference": _words(rng, 3)} for _ in range(16)]
    ).save_to_disk(str(root / "prompts"))
    out["pairs"], out["prompts"] = str(root / "pairs"), str(root / "prompts")
    return out


def run_real(name, world, tmp_path, data, *overrides):
    """`alignax run experiments/<name>.py:real` on the tiny world; returns summary.json."""
    argv = ["run", os.path.join(REPO, "experiments", f"{name}.py:real"),
            "--workdir", str(tmp_path / name), f"--config.model.path={world['lm']}",
            f"--config.data.path={world[data]}", "--config.data.eval_fraction=0.125", *overrides]
    from alignax import cli

    assert cli.main(argv) == 0
    with open(tmp_path / name / "summary.json") as f:
        return json.load(f)


