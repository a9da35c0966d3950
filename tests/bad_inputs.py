"""Every class of user mistake, made for real, with the one-line message it produces.

Not a test module (pytest does not collect it): `tests/test_bad_inputs.py` runs every case and
checks its message, and `tools/bad_inputs_table.py` renders the cases into docs/bad-inputs.md, so
the table there is what the library and the command line really print.

A case is a `Case(kind, mistake, trigger, expect)`: `kind` is one of `KINDS` (the mistake
class), `mistake` a short description, `trigger(tmp)` makes the mistake through the library or
the `alignax` command line (called in-process) and returns the message the user sees (an
exception's text, a warning's text, or the command's stderr), and `expect` the words the message
must contain. Every trigger gets the same scratch folder `tmp` (a `pathlib.Path`) and writes its
own names there; paths under it read `<tmp>/` in the message, paths in this repository are
relative to its root, and the number of devices of this process reads `<n>`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import os
import pathlib
import re
import warnings
from typing import Callable

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXPERIMENT = os.path.join(REPO, "experiments", "bt_dpo_synthetic.py")

KINDS = ("data file", "config value", "CLI flag", "checkpoint", "tokenizer/model pair",
         "device/mesh")


@dataclasses.dataclass(frozen=True)
class Case:
    kind: str
    mistake: str
    trigger: Callable[[pathlib.Path], str]
    expect: tuple[str, ...]


CASES: list[Case] = []


def case(kind: str, mistake: str, *expect: str):
    """Registers the decorated trigger as a Case."""
    assert kind in KINDS, kind

    def register(trigger):
        CASES.append(Case(kind, mistake, trigger, expect))
        return trigger

    return register


# --- helpers ---------------------------------------------------------------------------------


def _normalise(text: str, tmp: pathlib.Path) -> str:
    for root in {os.path.realpath(tmp), str(tmp)}:
        text = text.replace(root, "<tmp>")
    return text.replace(REPO + os.sep, "")


def _error(tmp, exc_type, fn, *args, **kwargs) -> str:
    """The text of the `exc_type` that `fn(*args, **kwargs)` raises (anything else propagates)."""
    try:
        fn(*args, **kwargs)
    except exc_type as e:
        return _normalise(str(e), tmp)
    raise AssertionError(f"{getattr(fn, '__name__', fn)} raised no {exc_type.__name__}")


def _warning(tmp, category, fn, *args, **kwargs) -> str:
    """The text of the one `category` warning that `fn(*args, **kwargs)` emits."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fn(*args, **kwargs)
    texts = [str(w.message) for w in caught if issubclass(w.category, category)]
    assert len(texts) == 1, f"expected one {category.__name__}, got {texts}"
    return _normalise(texts[0], tmp)


_CLI_ENV = ("ALIGNAX_COORDINATOR", "ALIGNAX_NUM_PROCESSES", "ALIGNAX_PROCESS_ID",
            "ALIGNAX_REUSE_HOST_MEMORY")


def _cli(tmp, *argv) -> str:
    """What `alignax <argv>` prints on stderr (run in-process); it must fail."""
    from alignax import cli

    err, out = io.StringIO(), io.StringIO()
    # the multi-process defaults come from the environment: this shell's must not leak in
    saved = {k: os.environ.pop(k) for k in _CLI_ENV if k in os.environ}
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
            try:
                code = cli.main([str(a) for a in argv])
            except SystemExit as e:  # argparse
                code = e.code
    finally:
        os.environ.update(saved)
    assert code not in (0, None), f"alignax {argv} succeeded: {out.getvalue()}"
    return _normalise(err.getvalue().rstrip("\n"), tmp)


def _jsonl(path: pathlib.Path, *rows) -> pathlib.Path:
    """Writes rows (dicts as JSON, str/bytes verbatim) one per line."""
    with open(path, "wb") as f:
        for row in rows:
            if isinstance(row, dict):
                row = json.dumps(row)
            f.write((row.encode() if isinstance(row, str) else row) + b"\n")
    return path


GOOD = {"prompt": "2+2?", "chosen": "4", "rejected": "five"}


def _reward_model(tmp: pathlib.Path, name: str) -> pathlib.Path:
    """A tiny Hugging Face reward-model folder (written once per `tmp`):
    "llama" (259-token vocabulary, the byte tokenizer's), "small_vocab" (100 tokens) or "gpt2"
    (16 learned positions)."""
    import jax

    from alignax.models.hf import export_hf
    from alignax.models.transformer import TransformerConfig, make_reward_model

    path = tmp / f"model_{name}"
    if not path.exists():
        small = dict(d_model=16, n_layers=1, n_heads=2, d_ff=32)
        cfg, model_type = {
            "llama": (TransformerConfig(vocab_size=259, max_len=96, **small), "llama"),
            "small_vocab": (TransformerConfig(vocab_size=100, max_len=96, **small), "llama"),
            "gpt2": (TransformerConfig.gpt2_style(vocab_size=259, max_len=16, **small), "gpt2"),
        }[name]
        model = make_reward_model(cfg)
        export_hf(model, model.init(jax.random.key(0)), str(path), model_type=model_type)
    return path


def _device_count(text: str) -> str:
    import jax

    n = jax.device_count()
    text = re.sub(rf"\bhave {n}\b", "have <n>", text)
    return re.sub(rf"(^|: ){n} devices\b", r"\1<n> devices", text)


# --- data file -------------------------------------------------------------------------------


@case("data file", "a row without one of its fields", "prefs.jsonl:2:", "field 'rejected'",
      "missing")
def _missing_field(tmp):
    from alignax.data import DataError, read_preferences

    path = _jsonl(tmp / "prefs.jsonl", GOOD, {"prompt": "p", "chosen": "a"})
    return _error(tmp, DataError, read_preferences, path)


@case("data file", 'a lone surrogate (`"\\ud800"`: valid JSON, not text) in a response',
      "surrogate.jsonl:1:", "field 'chosen'", "lone surrogate U+D800")
def _lone_surrogate(tmp):
    from alignax.data import DataError, read_preferences

    path = _jsonl(tmp / "surrogate.jsonl", r'{"prompt": "p", "chosen": "a\ud800", "rejected": "b"}')
    return _error(tmp, DataError, read_preferences, path)


@case("data file", "a file cut short in its last line (not JSON)", "cut.jsonl:2:",
      "invalid JSON", "Unterminated string")
def _bad_json(tmp):
    from alignax.data import DataError, read_preferences

    path = tmp / "cut.jsonl"
    path.write_text(json.dumps(GOOD) + '\n{"prompt": "p", "chosen": "a", "rejec')
    return _error(tmp, DataError, read_preferences, path)


@case("data file", "a pair longer than max_length", "long.jsonl:1:", "too long",
      "max_length=16")
def _too_long(tmp):
    from alignax.data import DataError, read_preferences

    path = _jsonl(tmp / "long.jsonl", {"prompt": "p", "chosen": "x" * 40, "rejected": "b"})
    return _error(tmp, DataError, read_preferences, path, max_length=16)


@case("data file", "only invalid rows, read with skip_invalid", "no valid rows",
      "all 2 rows are invalid", "empty.jsonl:1:")
def _all_invalid(tmp):
    from alignax.data import DataError, read_preferences

    path = _jsonl(tmp / "empty.jsonl", {"prompt": "p", "chosen": " ", "rejected": "b"},
                  {"prompt": "p", "chosen": "a"})
    return _error(tmp, DataError, read_preferences, path, skip_invalid=True)


@case("data file", "a rating row in the file given to `alignax eval`", "alignax: ",
      "ratings.jsonl:2:", "a rating row")
def _eval_rating_row(tmp):
    path = _jsonl(tmp / "ratings.jsonl", GOOD, {"prompt": "p", "response": "r", "rating": 3})
    return _cli(tmp, "eval", "--model", _reward_model(tmp, "llama"), "--data", path,
                "--tokenizer", "bytes", "--max-length", "64")


@case("data file", "a dataset written again under the same name and version with other "
      "examples", "holds other examples", "overwrite=True")
def _dataset_exists(tmp):
    from alignax.data.tfds_builder import write_preference_dataset

    features = {"ids": ((4,), np.int32)}

    def write(value):
        return write_preference_dataset(
            tmp / "datasets", name="prefs", features=features,
            splits={"train": [{"ids": np.full(4, value, np.int32)}] * 2})

    write(1)
    return _error(tmp, FileExistsError, write, 2)


@case("data file", "a dataset folder whose features.json names a class alignax does not write",
      "features.json", "'os.system'", "refusing to let tfds import it")
def _foreign_feature_class(tmp):
    from alignax.data import DataError
    from alignax.data.safety import check_features_json

    folder = tmp / "foreign_dataset"
    folder.mkdir()
    (folder / "features.json").write_text(json.dumps(
        {"pythonClassName": "os.system", "featuresDict": {}}))
    return _error(tmp, DataError, check_features_json, folder)


@case("data file", "fewer records than one batch", "source has 3 records",
      "fewer than one batch of 8")
def _fewer_than_a_batch(tmp):
    from alignax.data.pipeline import make_batch_iterator

    records = [{"x": np.zeros(2, np.float32)} for _ in range(3)]
    return _error(tmp, ValueError, make_batch_iterator, records, global_batch_size=8,
                  seed=0)


# --- config value ----------------------------------------------------------------------------


@case("config value", "a step count that is not positive", "train.steps=-3",
      "must be a positive int")
def _negative_steps(tmp):
    from alignax.algorithms import direct

    return _error(tmp, ValueError, direct.validate, {"train": {"steps": -3}})


@case("config value", "a bool where an int belongs", "train.batch_size=True",
      "like its default 16")
def _bool_for_int(tmp):
    from alignax.algorithms import reward_model

    return _error(tmp, ValueError, reward_model.validate, {"train": {"batch_size": True}})


@case("config value", "a misspelt recipe key", "unknown policy-gradient config key 'kl_coeff'",
      "did you mean 'kl_coef'")
def _misspelt_key(tmp):
    from alignax.algorithms import policy_gradient

    return _error(tmp, ValueError, policy_gradient.validate, {"kl_coeff": 0.05})


@case("config value", "an unknown loss name", "unknown loss 'dpoo'", "did you mean", "'dpo'")
def _unknown_loss(tmp):
    from alignax.algorithms import direct

    return _error(tmp, ValueError, direct.validate, {"loss": "dpoo"})


@case("config value", "a loss_kwargs key the loss does not take", "loss_kwargs",
      "takes no ['betta']", "'beta'")
def _loss_kwargs_typo(tmp):
    from alignax.algorithms import direct

    return _error(tmp, ValueError, direct.validate, {"loss": "dpo",
                                                     "loss_kwargs": {"betta": 0.1}})


@case("config value", "an optimizer optax does not have", "optax has no optimizer 'adamm'")
def _unknown_optimizer(tmp):
    from alignax.algorithms import sft

    return _error(tmp, ValueError, sft.validate, {"optimizer": {"name": "adamm"}})


def _experiment_config():
    from alignax import experiment as ex

    module = ex.load_module(EXPERIMENT)
    return ex.load_config(module, "smoke", EXPERIMENT)


@case("config value", "a `--config.` key the experiment does not have",
      "unknown config key 'dpo.loss_kwargs.betta'", "did you mean", "dpo.loss_kwargs.beta")
def _unknown_override(tmp):
    from alignax import experiment as ex

    return _error(tmp, ex.ExperimentError, ex.apply_overrides, _experiment_config(),
                  ["dpo.loss_kwargs.betta=0.2"])


@case("config value", "a `--config.` value that does not parse as the field's type",
      "--config.sft.train.steps", "cannot parse 'abc' as int")
def _unparsable_override(tmp):
    from alignax import experiment as ex

    return _error(tmp, ex.ExperimentError, ex.apply_overrides, _experiment_config(),
                  ["sft.train.steps=abc"])


@case("config value", "a `--config.` value for a group of keys", "'sft.train' is a group")
def _group_override(tmp):
    from alignax import experiment as ex

    return _error(tmp, ex.ExperimentError, ex.apply_overrides, _experiment_config(),
                  ["sft.train=3"])


# --- CLI flag --------------------------------------------------------------------------------


@case("CLI flag", "`alignax run` of a file that does not exist", "alignax: ",
      "no such experiment file")
def _no_experiment(tmp):
    return _cli(tmp, "run", tmp / "nope.py")


@case("CLI flag", "`alignax run` of a module with a syntax error", "broken.py:2: syntax error")
def _broken_experiment(tmp):
    path = tmp / "broken.py"
    path.write_text("def get_config(arg):\n    return 1 +\n")
    return _cli(tmp, "run", path)


@case("CLI flag", "`--config.a.b` without a value", "--config.seeds",
      "expected --config.<key>=<value>")
def _override_without_value(tmp):
    return _cli(tmp, "run", f"{EXPERIMENT}:smoke", "--workdir", tmp / "w", "--config.seeds")


@case("CLI flag", "`--config.data.path` naming a file that does not exist",
      "bt_dpo_synthetic.py", "data.path '<tmp>/missing.jsonl' does not exist")
def _missing_data_path(tmp):
    return _cli(tmp, "run", f"{EXPERIMENT}:smoke", "--workdir", tmp / "w",
                f"--config.data.path={tmp / 'missing.jsonl'}")


@case("CLI flag", "`--num-processes 2` without `--coordinator`", "--num-processes > 1",
      "--coordinator HOST:PORT")
def _no_coordinator(tmp):
    return _cli(tmp, "run", f"{EXPERIMENT}:smoke", "--workdir", tmp / "w",
                "--num-processes", "2")


@case("CLI flag", "a misspelt flag (`--workdri`)", "alignax: ",
      "unrecognized arguments: --workdri", "alignax run --help")
def _misspelt_flag(tmp):
    return _cli(tmp, "run", f"{EXPERIMENT}:smoke", "--workdri", tmp / "w")


@case("CLI flag", "`--workdir` naming a file", "--workdir <tmp>/a_file", "cannot create the folder")
def _workdir_is_a_file(tmp):
    path = tmp / "a_file"
    path.write_text("")
    return _cli(tmp, "run", f"{EXPERIMENT}:smoke", "--workdir", path)


@case("CLI flag", "`alignax eval --json` into a folder that does not exist",
      "--json <tmp>/no_folder/r.json", "no such folder")
def _json_folder_missing(tmp):
    path = _jsonl(tmp / "prefs.jsonl", GOOD)
    return _cli(tmp, "eval", "--model", _reward_model(tmp, "llama"), "--data", path,
                "--tokenizer", "bytes", "--json", tmp / "no_folder" / "r.json")


@case("CLI flag", "`alignax eval --max-length` above GPT-2's learned positions",
      "--max-length 64 exceeds the 16 learned positions", "--max-length 16 or less")
def _max_length_beyond_positions(tmp):
    path = _jsonl(tmp / "prefs.jsonl", GOOD)
    return _cli(tmp, "eval", "--model", _reward_model(tmp, "gpt2"), "--data", path,
                "--tokenizer", "bytes", "--max-length", "64")


@case("CLI flag", "`alignax eval --model` of a folder without tokenizer.json and no "
      "`--tokenizer`", "no tokenizer.json", "--tokenizer bytes")
def _no_tokenizer(tmp):
    path = _jsonl(tmp / "prefs.jsonl", GOOD)
    return _cli(tmp, "eval", "--model", _reward_model(tmp, "llama"), "--data", path)


# --- checkpoint ------------------------------------------------------------------------------


def _ckpt_state(value):
    import jax.numpy as jnp

    return {"w": jnp.full((3,), float(value))}


def _corrupt(step_dir: pathlib.Path) -> None:
    for root, _, files in os.walk(step_dir / "state"):
        for name in files:
            pathlib.Path(root, name).write_bytes(b"\x00garbage")


def _saved_steps(directory: pathlib.Path, steps, corrupt):
    from alignax.train.checkpoint import Checkpointer

    ckpt = Checkpointer(str(directory), every=1)
    for step in steps:
        ckpt.save(step, _ckpt_state(step))
    ckpt.close()
    for step in corrupt:
        _corrupt(directory / str(step))
    return Checkpointer(str(directory), every=1)


@case("checkpoint", "every checkpoint of a run unreadable", "none of the 2 checkpoints",
      "(steps 4, 2) can be restored", "move or delete <tmp>/ckpt_all/checkpoints")
def _no_readable_checkpoint(tmp):
    from alignax.train.checkpoint import CheckpointError, abstract_like

    ckpt = _saved_steps(tmp / "ckpt_all" / "checkpoints", (2, 4), corrupt=(2, 4))
    try:
        text = _error(tmp, CheckpointError, ckpt.restore, abstract_like(_ckpt_state(0)))
    finally:
        ckpt.close()
    # orbax's own reason for the newest step varies with its version: keep its exception type
    return re.sub(r"(\(newest: step \d+: \w+): .*\)$", r"\1: ...)", text)


@case("checkpoint", "the newest checkpoint unreadable (warning; the run resumes)",
      "checkpoint at step 4", "resumed from step 2", "moved step 4 aside",
      "<tmp>/ckpt_newest/checkpoints/corrupt-4")
def _newest_checkpoint_unreadable(tmp):
    from alignax.train.checkpoint import CheckpointFallbackWarning, abstract_like

    ckpt = _saved_steps(tmp / "ckpt_newest" / "checkpoints", (2, 4), corrupt=(4,))
    try:
        text = _warning(tmp, CheckpointFallbackWarning, ckpt.restore,
                        abstract_like(_ckpt_state(0)))
    finally:
        ckpt.close()
    return re.sub(r"could not be restored \((\w+): .*\); resumed",
                  r"could not be restored (\1: ...); resumed", text)


class _ListIterator:
    """A plain iterator with a get_state method of its own (not a grain iterator)."""

    def __next__(self):
        return {"x": np.zeros(2, np.float32)}

    def get_state(self):
        return {}


@case("checkpoint", "a data iterator that is not grain's given to the Checkpointer",
      "data_iter of type _ListIterator cannot be checkpointed", "grain")
def _non_grain_iterator(tmp):
    from alignax.train.checkpoint import Checkpointer

    ckpt = Checkpointer(str(tmp / "ckpt_iter"), every=1)
    try:
        return _error(tmp, TypeError, ckpt.save, 1, _ckpt_state(1), _ListIterator())
    finally:
        ckpt.close()


@case("checkpoint", "a workdir whose config.json was cut short (a run killed while writing it)",
      "<tmp>/cut_workdir/config.json is unreadable", "delete")
def _truncated_config_json(tmp):
    from alignax import experiment as ex

    workdir = tmp / "cut_workdir"
    workdir.mkdir()
    (workdir / "config.json").write_text('{"seeds": [0')
    return _error(tmp, ex.ExperimentError, ex.check_workdir_config, str(workdir),
                  '{"seeds": [0]}')


@case("checkpoint", "resuming in a workdir of a different config", "alignax: ",
      "holds a run of a different config", "choose another --workdir")
def _other_config_workdir(tmp):
    workdir = tmp / "other_workdir"
    workdir.mkdir()
    (workdir / "config.json").write_text('{"something": "else"}\n')
    return _cli(tmp, "run", f"{EXPERIMENT}:smoke", "--workdir", workdir)


@case("checkpoint", "`alignax eval --model` of a causal-LM checkpoint (not a reward model)",
      "a reward model checkpoint needs num_labels == 1")
def _lm_checkpoint_as_reward_model(tmp):
    import jax

    from alignax.models.hf import export_hf
    from alignax.models.transformer import TransformerConfig, make_lm

    folder = tmp / "model_lm"
    model = make_lm(TransformerConfig(vocab_size=259, d_model=16, n_layers=1, n_heads=2, d_ff=32,
                                      max_len=32))
    export_hf(model, model.init(jax.random.key(0)), str(folder), model_type="llama")
    path = _jsonl(tmp / "prefs.jsonl", GOOD)
    return _cli(tmp, "eval", "--model", folder, "--data", path, "--tokenizer", "bytes",
                "--max-length", "32")


@case("checkpoint", "`alignax eval --model` of a folder whose model.safetensors is corrupt",
      "model.safetensors: not a readable safetensors file")
def _corrupt_safetensors(tmp):
    import shutil

    folder = tmp / "model_corrupt"
    shutil.copytree(_reward_model(tmp, "llama"), folder)
    (folder / "model.safetensors").write_bytes(b"garbage")
    path = _jsonl(tmp / "prefs.jsonl", GOOD)
    return _cli(tmp, "eval", "--model", folder, "--data", path, "--tokenizer", "bytes",
                "--max-length", "64")


# --- tokenizer/model pair --------------------------------------------------------------------


def _word_tokenizer(folder: pathlib.Path) -> pathlib.Path:
    """A tokenizer.json without special tokens (and no tokenizer_config.json)."""
    from tokenizers import Tokenizer, models

    folder.mkdir(exist_ok=True)
    Tokenizer(models.WordLevel({"<unk>": 0, "a": 1}, unk_token="<unk>")).save(
        str(folder / "tokenizer.json"))
    return folder


@case("tokenizer/model pair", "a tokenizer without an eos token", "has no eos token",
      "eos_token")
def _tokenizer_without_eos(tmp):
    path = _jsonl(tmp / "prefs.jsonl", GOOD)
    return _cli(tmp, "eval", "--model", _reward_model(tmp, "llama"), "--data", path,
                "--tokenizer", _word_tokenizer(tmp / "tok_no_eos"))


@case("tokenizer/model pair", "a special token that is not in the tokenizer's vocabulary",
      "eos_token '</s>' is not in the vocabulary")
def _special_token_not_in_vocab(tmp):
    from alignax.data.tokenizers import HFTokenizer

    folder = _word_tokenizer(tmp / "tok_no_eos")
    return _error(tmp, ValueError, HFTokenizer.from_file, str(folder), eos_token="</s>")


@case("tokenizer/model pair", "`alignax eval --tokenizer` of a file that is not a tokenizer.json",
      "tokenizer.json: not a tokenizer.json the tokenizers library can read")
def _not_a_tokenizer(tmp):
    folder = tmp / "tok_broken"
    folder.mkdir()
    (folder / "tokenizer.json").write_text("{}")
    path = _jsonl(tmp / "prefs.jsonl", GOOD)
    return _cli(tmp, "eval", "--model", _reward_model(tmp, "llama"), "--data", path,
                "--tokenizer", folder)


@case("tokenizer/model pair", "`alignax eval` with a tokenizer whose ids exceed the model's "
      "vocabulary", "prefs.jsonl:1:", "token id", "outside the model's vocabulary [0, 100)")
def _ids_beyond_vocab_cli(tmp):
    path = _jsonl(tmp / "prefs.jsonl", GOOD)
    return _cli(tmp, "eval", "--model", _reward_model(tmp, "small_vocab"), "--data", path,
                "--tokenizer", "bytes", "--max-length", "64")


@case("tokenizer/model pair", "sequences longer than the model's learned positions",
      "sequence length 128", "exceeds the model's max_len=96")
def _longer_than_positions(tmp):
    from alignax.data import DataError
    from alignax.data.tokenize import check_token_ids

    return _error(tmp, DataError, check_token_ids, np.zeros((2, 128), np.int32), 259, 96,
                  where="train split")


# --- device/mesh -----------------------------------------------------------------------------


@case("device/mesh", "a mesh needing more devices than there are", "direct config: mesh",
      "needs 64 devices, have <n>")
def _mesh_too_big(tmp):
    from alignax.algorithms import direct

    return _device_count(_error(tmp, ValueError, direct.validate, {"mesh": {"data": 64}}))


@case("device/mesh", "`--config.mesh.tensor` that does not divide the devices", "alignax: ",
      "bt_dpo_synthetic.py", "<n> devices cannot be split into mesh")
def _mesh_flag(tmp):
    return _device_count(_cli(tmp, "run", f"{EXPERIMENT}:smoke", "--workdir", tmp / "w",
                              "--config.mesh.tensor=64"))


@case("device/mesh", "two mesh sizes of -1", "at most one mesh size may be -1")
def _two_minus_ones(tmp):
    from alignax.train.sharding import make_mesh

    return _error(tmp, ValueError, make_mesh, data=-1, fsdp=-1)


@case("device/mesh", "a mesh axis that does not exist", "unknown mesh axes ['model']",
      "valid: ('data', 'fsdp', 'tensor')")
def _unknown_axis(tmp):
    from alignax.train.sharding import mesh_from_config

    return _error(tmp, ValueError, mesh_from_config, {"data": 1, "model": 1})


@case("device/mesh", "online rows that do not split into the minibatches",
      "24 rows per iteration", "minibatches=5")
def _rows_over_minibatches(tmp):
    from alignax.algorithms import policy_gradient

    return _error(tmp, ValueError, policy_gradient.validate,
                  {"prompts_per_iteration": 3, "num_samples": 8, "minibatches": 5})
