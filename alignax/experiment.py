"""Experiments as config modules: loading, overrides, variants x seeds, summary and claims.

An experiment module (experiments/<name>.py) defines:

- `get_config(arg: str | None) -> ml_collections.ConfigDict`, with at least `seeds` (a list of ints)
  and optionally `variants` (a dict: variant name -> dict of dotted-key overrides);
- `run(config, workdir) -> dict[str, float]`, one seed of one variant (`config.seed` is set);
  or, for small models whose seeds train as one vmapped program (`alignax.train.small`),
  `run_seeds(config, workdir) -> {seed: dict[str, float]}`, all of `config.seeds` of one variant
  at once in `<workdir>/<variant>/` (the runner uses it when the module defines it);
- optionally `claims(results) -> list[Claim]`, the paper's claims checked on the measured numbers
  (with `alignax.protocol`'s `compare`, `threshold` and `sanity`: intervals over seeds and a
  PASS / FAIL / INCONCLUSIVE status; see docs/protocol.md);
- optionally `plots(results, workdir) -> list[str]`, experiment-level figures (process 0 only).

`run_experiment` runs every variant and seed in `<workdir>/<variant>/seed_<s>/`, aggregates each
metric into mean and std over seeds, checks the claims and writes `<workdir>/summary.json` (with
the command, commit, seeds and the paper's status, from which tools/results_table.py generates
experiments/RESULTS.md).

Command-line overrides (`--config.a.b=value`) are parsed by ml_collections' own `config_flags`
machinery: the field's type comes from `config_path.get_type`, the string is parsed by the parser
`config_flags` registers for that type (absl's int/float/bool/str parsers, `TupleParser` for
tuples, and for fields whose value is None the literal parser it uses for untyped new attributes;
types added with `config_flags.register_flag_parser_for_type` work too), and the value is stored
with `config_path.set_value`, as `DEFINE_config_file` does. Kept here, because `config_flags` has no
equivalent or does something else: a misspelt key fails in one line naming the closest valid keys
(difflib) instead of a KeyError; setting a whole group (`--config.train=...`) is refused instead of
replacing it from a dict literal; list fields (e.g. `seeds=[3, 4]`), which `config_flags` does not
override, are parsed like tuples and stored as lists; and no absl flag is defined, so parsing leaves
the global flag state alone. Variants set Python values directly (`set_key(..., parse=False)`).
"""

from __future__ import annotations

import ast
import difflib
import enum
import importlib.util
import json
import math
import os
from typing import Any, Callable, Mapping, Sequence

import ml_collections
import numpy as np
from absl import flags
from ml_collections.config_flags import config_flags, config_path, tuple_parser

from alignax._src import faults
from alignax._src.config import check_values
from alignax.protocol import Claim, paper_verdict


CONFIG_FILE = "config.json"  # the config a workdir was first run with (check_workdir_config)
SUMMARY_FILE = "summary.json"  # written by run_experiment


class ExperimentError(Exception):
    """A user-facing problem with an experiment module, its argument or an override (one line)."""


def is_smoke(arg: str | None) -> bool:
    """`get_config`'s argument: True for "smoke", False for the full setting (None or "");
    anything else raises ValueError."""
    if arg not in (None, "", "smoke"):
        raise ValueError(f"unknown argument {arg!r}; use nothing or 'smoke'")
    return arg == "smoke"


def split_spec(spec: str) -> tuple[str, str | None]:
    """'experiments/x.py:smoke' -> ('experiments/x.py', 'smoke')."""
    path, sep, arg = spec.rpartition(":")
    if sep and path.endswith(".py") and "/" not in arg:
        return path, arg or None
    return spec, None


def load_module(path: str):
    """Imports an experiment module from a file path; errors become one-line ExperimentError."""
    if not path.endswith(".py"):
        raise ExperimentError(f"{path}: an experiment is a Python file (experiments/<name>.py)")
    if not os.path.isfile(path):
        raise ExperimentError(f"{path}: no such experiment file")
    name = "alignax_experiment_" + os.path.splitext(os.path.basename(path))[0]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except SyntaxError as e:
        raise ExperimentError(f"{path}:{e.lineno}: syntax error: {e.msg}") from None
    except Exception as e:  # noqa: BLE001 - any import-time failure is reported in one line
        raise ExperimentError(f"{path}: import failed: {type(e).__name__}: {e}") from None
    if not callable(getattr(module, "get_config", None)):
        raise ExperimentError(f"{path}: an experiment module must define get_config()")
    if not (callable(getattr(module, "run", None)) or callable(getattr(module, "run_seeds", None))):
        raise ExperimentError(f"{path}: an experiment module must define run() or run_seeds()")
    return module


def load_config(module, arg: str | None, path: str = "") -> ml_collections.ConfigDict:
    try:
        config = module.get_config(arg)
    except Exception as e:  # noqa: BLE001
        raise ExperimentError(
            f"{path}: get_config({arg!r}) failed: {type(e).__name__}: {e}"
        ) from None
    if not isinstance(config, ml_collections.ConfigDict):
        raise ExperimentError(f"{path}: get_config must return an ml_collections.ConfigDict")
    if "seeds" not in config:
        raise ExperimentError(f"{path}: the config needs a `seeds` list")
    config.lock()
    return config


def flat_keys(config: ml_collections.ConfigDict, prefix: str = "") -> list[str]:
    keys = []
    for k, v in config.items():
        full = f"{prefix}{k}"
        keys.append(full)
        if isinstance(v, ml_collections.ConfigDict):
            keys.extend(flat_keys(v, full + "."))
    return keys


def _type_name(t) -> str:
    return getattr(t, "__name__", str(t))


def _override_parser(field_type: type, key: str) -> flags.ArgumentParser:
    """The parser `config_flags` uses for a field of `field_type` (see `_ConfigFlag._parse`)."""
    # the registry that config_flags.register_flag_parser_for_type fills
    registry = config_flags._FIELD_TYPE_TO_PARSER  # noqa: SLF001 - ml-collections 1.1
    if field_type is type(None):
        return registry[object]  # a literal, else the plain string
    if field_type is list:
        return tuple_parser.TupleParser()  # config_flags has no list parser; stored as a list
    if field_type in registry:
        return registry[field_type]
    origin = config_path.get_origin(field_type)
    if origin in registry:
        return registry[origin]
    if isinstance(field_type, type) and issubclass(field_type, enum.Enum):
        return flags.EnumClassParser(field_type, case_sensitive=False)
    raise ExperimentError(f"--config.{key}: a field of type {_type_name(field_type)} cannot be "
                          "set from the command line")


def _parse_override(config: ml_collections.ConfigDict, key: str, text: str) -> Any:
    field_type = config_path.get_type(key, config)
    parser = _override_parser(field_type, key)
    try:
        value = parser.parse(text)
    except (ValueError, TypeError, SyntaxError) as e:
        reason = e.args[0] if e.args and isinstance(e.args[0], str) else str(e)
        reason = " ".join(reason.split())
        raise ExperimentError(
            f"--config.{key}: cannot parse {text!r} as {_type_name(field_type)} ({reason})"
        ) from None
    return list(value) if field_type is list else value


def set_key(config: ml_collections.ConfigDict, key: str, value: Any, *, parse: bool) -> None:
    """Sets a dotted key that must already exist; unknown keys list the closest valid ones.

    With `parse`, `value` is a command-line string parsed for the field's type (see the module
    docstring); without, it is stored as given (ConfigDict's own type checks apply).
    """
    node = config
    for part in key.split("."):
        if not isinstance(node, ml_collections.ConfigDict) or part not in node:
            close = difflib.get_close_matches(key, flat_keys(config), n=5, cutoff=0.5)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise ExperimentError(f"unknown config key {key!r}{hint}")
        node = node[part]
    if isinstance(node, ml_collections.ConfigDict):
        raise ExperimentError(f"config key {key!r} is a group; set one of its fields")
    if parse:
        value = _parse_override(config, key, value)
    elif isinstance(value, (bool, np.bool_)) and not isinstance(node, (bool, np.bool_)) and \
            isinstance(node, (int, np.integer)):
        raise ExperimentError(f"config key {key!r}: {value!r} is a bool; the field is an int")
    try:
        config_path.set_value(key, config, value)
    except TypeError as e:
        raise ExperimentError(f"config key {key!r}: {e}") from None


def apply_overrides(config: ml_collections.ConfigDict, overrides: Sequence[str]) -> None:
    """Applies `a.b=value` strings (from `--config.a.b=value`), each parsed for its field's type."""
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep:
            raise ExperimentError(f"--config.{item}: expected --config.<key>=<value>")
        set_key(config, key, text, parse=True)


def _variant_configs(config) -> dict[str, ml_collections.ConfigDict]:
    variants = config.get("variants") or {}
    if not variants:
        return {"default": config}
    out = {}
    for name, overrides in variants.items():
        cfg = ml_collections.ConfigDict(config.to_dict())
        cfg.lock()
        for key, value in dict(overrides).items():
            set_key(cfg, key, value, parse=False)
        out[name] = cfg
    return out


def validate(module, config: ml_collections.ConfigDict, path: str = "") -> None:
    """Checks every variant's config before any work starts (`alignax run` calls it before
    creating the workdir; `run_experiment` again): the value rules of
    `alignax._src.config.check_values` (steps and batch sizes positive, `seeds` a non-empty list
    of distinct ints, ...), then the module's own `validate(config)` if it defines one (an
    experiment checks its recipe stages there, e.g. with `direct.validate`, so a bad loss name
    or mesh fails now, not after earlier stages trained). Any ValueError, TypeError or
    KeyError becomes an ExperimentError naming the module and the variant.
    """
    hook = getattr(module, "validate", None)
    for variant, vcfg in _variant_configs(config).items():
        where = f"{path} [{variant}]" if variant != "default" else path
        try:
            check_values(vcfg, "config")
            if callable(hook):
                hook(vcfg)
        except (ValueError, TypeError, KeyError) as e:
            reason = e.args[0] if e.args and isinstance(e.args[0], str) else str(e)
            raise ExperimentError(f"{where}: {' '.join(reason.split())}") from None


def aggregate(per_seed: Mapping[int, Mapping[str, float]]) -> dict[str, dict[str, float]]:
    """{seed: {metric: x}} -> {metric: {mean, std, n}} (std with ddof=0 over the seeds)."""
    keys = sorted({k for m in per_seed.values() for k in m})
    out = {}
    for k in keys:
        xs = np.array([float(m[k]) for m in per_seed.values() if k in m], np.float64)
        out[k] = {"mean": float(xs.mean()), "std": float(xs.std()), "n": int(len(xs))}
    return out


def run_experiment(
    module, config: ml_collections.ConfigDict, workdir: str, *, path: str = "", arg=None,
    log: Callable[[str], None] = print, command: str | None = None,
) -> dict:
    """Runs all variants x seeds, checks claims, writes summary.json; returns the summary.

    Besides the results and claims (`Claim.to_json`: kind, status, interval, ...), summary.json
    records how to get them again: `command` (default: `command_line`, the `alignax run` form
    without the workdir), `commit` (`git_commit`), `seeds`, and `paper_status`
    (`alignax.protocol.paper_verdict` of the claims). Nothing in it depends on the workdir or
    the time, so a resumed run writes the same bytes as an uninterrupted one.
    """
    import jax

    is_main = jax.process_index() == 0
    validate(module, config, path)
    results: dict[str, Any] = {}
    vmapped = callable(getattr(module, "run_seeds", None))
    for variant, vcfg in _variant_configs(config).items():
        per_seed = {}
        if vmapped:  # all seeds of the variant in one program (alignax.train.small)
            vdir = os.path.join(workdir, variant)
            if is_main:
                log(f"[{variant}] seeds {list(config.seeds)} at once -> {vdir}")
            out = module.run_seeds(vcfg, vdir)
            missing = sorted(set(int(s) for s in config.seeds) - set(int(s) for s in out))
            if missing:
                raise ExperimentError(f"{path}: run_seeds returned no metrics for seeds {missing}")
            for seed in config.seeds:
                per_seed[int(seed)] = {k: float(v) for k, v in out[int(seed)].items()}
        for seed in [] if vmapped else list(config.seeds):
            cfg = ml_collections.ConfigDict(vcfg.to_dict())
            with cfg.unlocked():
                cfg.seed = int(seed)
            cfg.lock()
            subdir = os.path.join(workdir, variant, f"seed_{seed}")
            if is_main:
                log(f"[{variant}] seed {seed} -> {subdir}")
            metrics = module.run(cfg, subdir)
            per_seed[int(seed)] = {k: float(v) for k, v in metrics.items()}
            faults.point("seed_done", variant, seed)
        results[variant] = {"per_seed": per_seed, "metrics": aggregate(per_seed)}

    claims: list[Claim] = []
    if callable(getattr(module, "claims", None)):
        claims = list(module.claims(results))
    plots = []
    if is_main and callable(getattr(module, "plots", None)):
        plots = [os.path.relpath(p, workdir) for p in module.plots(results, workdir)]
    summary = {
        "experiment": path,
        "arg": arg,
        "paper": paper_of(path) if path else "",
        "command": command if command is not None else command_line(module, config, path, arg),
        "commit": git_commit(path),
        "seeds": [int(s) for s in config.seeds],
        "results": results,
        "claims": [c.to_json() for c in claims],
        "paper_status": paper_verdict(claims).to_json(),
        "plots": plots,
        "all_claims_passed": all(c.passed for c in claims) if claims else None,
    }
    if is_main:
        # alignax.train imports JAX (2 s); this module is imported without it by the CLI.
        from alignax.train.writers import atomic_write_text

        faults.point("summary", workdir)
        atomic_write_text(os.path.join(workdir, SUMMARY_FILE), json.dumps(
            _finite_or_str(summary), indent=2, allow_nan=False, default=_json_default))
    return summary


def _override_text(value) -> str:
    """A config value as `--config.k=<text>` parses it back (see `apply_overrides`)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, (list, tuple)):
        inner = ", ".join(repr(v) for v in value)
        if isinstance(value, list):
            return f"[{inner}]"
        return f"({inner},)" if len(value) == 1 else f"({inner})"
    return repr(value)


def _leaves(d: Mapping, prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        if isinstance(v, Mapping):
            out.update(_leaves(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def command_line(module, config: ml_collections.ConfigDict, path: str, arg=None) -> str:
    """The `alignax run` command that reproduces `config`: the experiment spec and a
    `--config.<key>=<value>` for every field that differs from `module.get_config(arg)`.

    The workdir and process flags are left out: they say where and how a run happened, not what
    it computed (and a resume in another folder must write the same summary).
    """
    import shlex

    spec = f"{path}:{arg}" if arg else path
    parts = ["alignax", "run", shlex.quote(spec or "<experiment>")]
    try:
        default = _leaves(module.get_config(arg).to_dict())
    except Exception:  # noqa: BLE001 - no defaults to compare with: the spec alone
        return " ".join(parts)
    for key, value in _leaves(config.to_dict()).items():
        if key not in default or default[key] != value or type(default[key]) is not type(value):
            parts.append(shlex.quote(f"--config.{key}={_override_text(value)}"))
    return " ".join(parts)


def git_commit(path: str = "") -> str | None:
    """`git rev-parse --short HEAD` of the checkout holding the experiment file `path` (else of
    the one holding alignax), with "-dirty" when tracked files differ from that commit
    (untracked files do not count, as in `git describe --dirty`); None without git or outside a
    checkout. Uses no optional locks, so it never blocks a concurrent `git commit`.
    """
    import shutil
    import subprocess  # noqa: S404 - fixed argv of git, no shell

    git = shutil.which("git")
    if git is None:
        return None
    folders = [os.path.dirname(os.path.abspath(path))] if path else []
    folders.append(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, GIT_OPTIONAL_LOCKS="0")
    for folder in folders:
        if not os.path.isdir(folder):
            continue
        try:
            head = subprocess.run(  # noqa: S603 - fixed argv, no shell
                [git, "-C", folder, "rev-parse", "--short", "HEAD"], capture_output=True,
                text=True, timeout=30, env=env)
            if head.returncode != 0:
                continue
            diff = subprocess.run(  # noqa: S603 - fixed argv, no shell
                [git, "-C", folder, "diff", "--quiet", "HEAD", "--"], capture_output=True,
                timeout=30, env=env)
        except (OSError, subprocess.SubprocessError):
            return None
        commit = head.stdout.strip()
        return commit + ("-dirty" if diff.returncode == 1 else "")
    return None


def check_workdir_config(workdir: str, config_json: str, *, write: bool = True) -> None:
    """Claims `workdir` for the config serialised as `config_json`, or checks it is the same.

    The first run writes `<workdir>/config.json` (atomically: a kill or a full disk leaves no
    partial file); a later run in the same workdir must bring the same text (whitespace at the
    ends aside), so a resume never continues another config's checkpoints.

    Args:
      workdir: the run folder (exists).
      config_json: the config as JSON text (`config.to_json_best_effort(indent=2,
        sort_keys=True)`).
      write: write config.json when it is missing (process 0 only in a multi-process run).

    Raises:
      ExperimentError: config.json holds another config, or is not readable JSON (one line
        naming the file to delete or the workdir to change).
    """
    config_path = os.path.join(workdir, CONFIG_FILE)
    if not os.path.exists(config_path):
        if write:
            from alignax.train.writers import atomic_write_text  # JAX: see run_experiment

            atomic_write_text(config_path, config_json.strip() + "\n")
        return
    try:
        with open(config_path, encoding="utf-8") as f:
            previous = f.read()
        json.loads(previous)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        reason = f"{e.msg} at line {e.lineno}" if isinstance(e, json.JSONDecodeError) else (
            getattr(e, "strerror", None) or type(e).__name__)
        raise ExperimentError(
            f"{config_path} is unreadable ({reason}; a run killed while writing it?): if "
            f"{workdir} was run with this same config, delete {config_path} and run again to "
            "resume; otherwise choose another --workdir") from None
    if previous.strip() != config_json.strip():
        raise ExperimentError(
            f"{workdir} holds a run of a different config (see {config_path}); resume with the "
            "same command or choose another --workdir")


def _finite_or_str(x):
    """NaN/inf become the strings "nan"/"inf"/"-inf" so summary.json stays strict JSON."""
    if isinstance(x, dict):
        return {k: _finite_or_str(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_finite_or_str(v) for v in x]
    if isinstance(x, (float, np.floating)) and not math.isfinite(float(x)):
        return str(float(x))
    return x


def _json_default(x):
    if isinstance(x, (np.floating, np.integer)):
        return x.item()
    raise TypeError(f"not JSON serializable: {type(x).__name__}")


def paper_of(path: str) -> str:
    """First line of an experiment module's docstring (without importing it)."""
    try:
        with open(path) as f:
            doc = ast.get_docstring(ast.parse(f.read())) or ""
    except (OSError, SyntaxError):
        return ""
    return doc.strip().splitlines()[0] if doc.strip() else ""


def metric(results: Mapping, variant: str, name: str) -> float:
    """Mean over seeds of one metric of one variant (for claims)."""
    value = results[variant]["metrics"][name]["mean"]
    if not math.isfinite(value):
        raise ValueError(f"{variant}/{name} is not finite: {value}")
    return value

