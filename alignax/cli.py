"""Command line: `alignax run | list | eval`.

    alignax run experiments/<name>.py[:arg] [--workdir DIR] [--config.a.b=value ...]
    alignax list [--dir experiments]
    alignax eval --model DIR --data FILE [--tokenizer PATH|bytes] [--max-length N]
                 [--batch-size B] [--skip-invalid] [--json OUT] [--no-chat-template]
                 [--system TEXT] [--dtype float32|bfloat16] [--mesh data=D,fsdp=F,tensor=T]
                 [--truncation error|keep_end|keep_start] [--scores OUT]

`alignax eval` scores a reward model (a Hugging Face *ForSequenceClassification checkpoint
folder of the Llama 2/3.x, Mistral, Qwen2/2.5, Qwen3 or GPT-2 family (Gemma is refused by name;
alignax.models.hf), e.g. one written by alignax.models.hf.export_hf) on a
preference file in the RewardBench layout (prompt, chosen, rejected, subset) and prints per-subset
and overall accuracy (alignax.eval.rewardbench); the numbers do not depend on --batch-size. With a
tokenizer that has a chat template (an instruct model's folder), every pair is scored as the
conversation [user: prompt, assistant: response] in the model's own template. A bad
row is an error naming <file>:<line>, or with --skip-invalid is skipped and counted; token ids
outside the model's vocabulary and a --max-length above its learned positions are errors.
--dtype sets the parameter and compute dtype (default: the checkpoint's, config.json torch_dtype;
float16 checkpoints run in float32); --mesh streams the checkpoint straight onto a device mesh
(the axes of alignax.train.sharding.make_mesh; one size may be -1) and splits every batch by rows
over data x fsdp (--batch-size must be divisible by data x fsdp); the scores equal the one-device
scores. --truncation keep_end scores an over-long sequence by its last --max-length tokens, as
RewardBench's pipeline does (default: error, a bad row). --scores writes the per-pair scores.

Multi-process (one command per process, e.g. 2 processes on localhost):
    alignax run ... --coordinator 127.0.0.1:12345 --num-processes 2 --process-id 0
    alignax eval ... --mesh data=-1 --coordinator 127.0.0.1:12345 --num-processes 2 --process-id 0
(or the environment variables ALIGNAX_COORDINATOR, ALIGNAX_NUM_PROCESSES, ALIGNAX_PROCESS_ID).
`alignax eval` on several processes needs --mesh (over every process's devices): each process
reads the whole file, each device scores its rows of each batch, and process 0 alone prints and
writes --json / --scores (the scores equal the one-device ones).
"""

from __future__ import annotations

import argparse
import datetime
import errno
import os
import re
import sys

USAGE_RUN = "alignax run experiments/<name>.py[:arg] [--workdir DIR] [--config.a.b=value ...]"

# The commands import the library (and with it JAX) inside their bodies: `alignax list` and
# `--help` stay fast, and `alignax run` sets up host memory reuse before JAX computes anything.


# a full disk (ENOSPC), a quota (EDQUOT) or a file-size limit (EFBIG): the run stops with one
# line and resumes from its last complete checkpoint once there is space
_DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})


def _one_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def _err(message: str, code: int) -> int:
    print(f"alignax: {message}", file=sys.stderr)
    return code


class _ArgumentParser(argparse.ArgumentParser):
    """argparse with its errors in one line (argparse prints the usage block first)."""

    def error(self, message):
        self.exit(2, f"alignax: {message} (see {self.prog} --help)\n")


def _fresh_workdir(path: str, arg: str | None) -> str:
    name = os.path.splitext(os.path.basename(path))[0] + (f"-{arg}" if arg else "")
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    base = os.path.join("runs", f"{name}-{stamp}")
    candidate, i = base, 1
    while os.path.exists(candidate):
        candidate, i = f"{base}-{i}", i + 1
    return candidate


def _add_distributed_args(parser) -> None:
    """--coordinator / --num-processes / --process-id (defaults from ALIGNAX_* variables)."""
    parser.add_argument("--coordinator", default=os.environ.get("ALIGNAX_COORDINATOR"))
    parser.add_argument("--num-processes", type=int,
                        default=int(os.environ.get("ALIGNAX_NUM_PROCESSES", "1")))
    parser.add_argument("--process-id", type=int,
                        default=int(os.environ.get("ALIGNAX_PROCESS_ID", "0")))


def _init_distributed(args) -> str | None:
    """`jax.distributed.initialize` for --num-processes > 1; an error message, or None."""
    if args.num_processes > 1:
        if not args.coordinator:
            return "--num-processes > 1 needs --coordinator HOST:PORT"
        import jax

        jax.distributed.initialize(
            coordinator_address=args.coordinator,
            num_processes=args.num_processes,
            process_id=args.process_id,
        )
    return None


def _parse_run_args(argv: list[str]):
    """Splits `--config.a.b=v` / `--config.a.b v` overrides from the other arguments."""
    parser = _ArgumentParser(prog="alignax run", usage=USAGE_RUN)
    parser.add_argument("experiment")
    parser.add_argument("--workdir", default=None)
    _add_distributed_args(parser)
    overrides, rest = [], []
    i = 0
    while i < len(argv):
        item = argv[i]
        if item.startswith("--config."):
            if "=" not in item and i + 1 < len(argv):
                item = f"{item}={argv[i + 1]}"
                i += 1
            overrides.append(item[len("--config."):])
        else:
            rest.append(item)
        i += 1
    return parser.parse_args(rest), overrides


def cmd_run(argv: list[str]) -> int:
    from alignax import experiment as ex
    from alignax.train.host_memory import reuse_host_memory

    args, overrides = _parse_run_args(argv)
    if os.environ.get("ALIGNAX_REUSE_HOST_MEMORY") == "1":
        reuse_host_memory()  # before any jax computation
    path, arg = ex.split_spec(args.experiment)
    try:
        module = ex.load_module(path)
        config = ex.load_config(module, arg, path)
        ex.apply_overrides(config, overrides)
    except ex.ExperimentError as e:
        return _err(str(e), 2)

    problem = _init_distributed(args)
    if problem:
        return _err(problem, 2)
    import jax

    try:  # every variant, before any work or workdir (after distributed init: meshes are global)
        ex.validate(module, config, path)
    except ex.ExperimentError as e:
        return _err(str(e), 2)
    if os.environ.get("ALIGNAX_COMPILATION_CACHE", "1") != "0":
        from alignax.train.compilation_cache import enable_compilation_cache

        enable_compilation_cache()  # a resumed or repeated run does not compile again
    is_main = jax.process_index() == 0
    workdir = args.workdir or _fresh_workdir(path, arg)
    try:
        os.makedirs(workdir, exist_ok=True)
    except OSError as e:  # a file of that name, no permission: one line, not a traceback
        return _err(f"--workdir {workdir}: cannot create the folder ({e.strerror})", 2)
    config_json = config.to_json_best_effort(indent=2, sort_keys=True)
    try:  # config.json is written atomically; a different or unreadable one is refused
        ex.check_workdir_config(workdir, config_json, write=is_main)
    except ex.ExperimentError as e:
        return _err(str(e), 2)
    if is_main:
        print(f"alignax: workdir {workdir}", flush=True)

    from alignax.data.errors import DataError
    from alignax.train.checkpoint import CheckpointError
    from alignax.train.loop import Interrupted, NonFiniteError

    try:
        summary = ex.run_experiment(module, config, workdir, path=path, arg=arg)
    except NonFiniteError as e:
        return _err(str(e), 1)
    except Interrupted as e:
        return _err(str(e), 143)
    except (ex.ExperimentError, DataError) as e:
        return _err(str(e), 2)
    except CheckpointError as e:
        return _err(_one_line(e), 2)
    except OSError as e:
        if e.errno not in _DISK_ERRNOS:
            raise
        where = e.filename or "the workdir"
        return _err(f"{os.strerror(e.errno).lower()} writing {where} ({workdir}); free space "
                    "and run the same command again to resume from the last checkpoint", 74)
    if is_main:
        _print_summary(summary, workdir)
    return 0


def _print_summary(summary: dict, workdir: str) -> None:
    for variant, res in summary["results"].items():
        parts = [f"{k}={v['mean']:.4g}±{v['std']:.2g}" for k, v in res["metrics"].items()]
        print(f"  {variant}: " + ", ".join(parts))
    for c in summary["claims"]:
        status = c.get("status") or ("PASS" if c["passed"] else "FAIL")
        measured = ", ".join(f"{k}={v:.4g}" for k, v in c["measured"].items())
        print(f"  [{status}] {c['name']} ({measured})")
    print(f"alignax: results in {workdir} (summary.json, metrics.jsonl, plots/)")


def _results_rows(results_md: str) -> dict[str, list[str]]:
    rows: dict[str, list[str]] = {}
    if not os.path.exists(results_md):
        return rows
    with open(results_md) as f:
        for line in f:
            if not line.startswith("|") or set(line.strip()) <= set("|-: "):
                continue
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            m = re.search(r"`?([\w\-]+)\.py`?", cells[0]) if cells else None
            if m:
                rows[m.group(1)] = cells  # the last row of an experiment wins
    return rows


def _markdown_tables(results_md: str) -> list[list[dict[str, str]]]:
    """The tables of a markdown file, each a list of {header: cell} rows."""
    tables: list[list[dict[str, str]]] = []
    if not os.path.exists(results_md):
        return tables
    header: list[str] | None = None
    with open(results_md, encoding="utf-8") as f:
        for line in f:
            if not line.startswith("|"):
                header = None
                continue
            if set(line.strip()) <= set("|-: "):
                continue
            cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip().strip("|"))]
            if header is None:
                header = cells
                tables.append([])
            else:
                tables[-1].append({h: c.replace("\\|", "|") for h, c in zip(header, cells)})
    return tables


def _generated_results(results_md: str
                       ) -> tuple[dict[str, list[tuple[str, str]]], dict[str, str]] | None:
    """From a page written by tools/results_table.py: ({experiment name: [(paper,
    "STATUS; reason")] of its per-paper status table}, {experiment name: "claim | measured |
    status"} of its last claim row); None when the page has no status table (a hand-written
    page)."""
    from alignax.protocol import STATUS_COLUMNS

    statuses: dict[str, list[tuple[str, str]]] | None = None
    last: dict[str, str] = {}
    for table in _markdown_tables(results_md):
        for row in table:
            names = re.findall(r"`([\w\-]+)\.py(?::[\w\-]+)?`", row.get("experiments",
                                                                     row.get("experiment", "")))
            if tuple(row) == STATUS_COLUMNS:
                statuses = {} if statuses is None else statuses
                for name in names:  # an experiment covering two papers has two rows
                    statuses.setdefault(name, []).append(
                        (row["paper"], f"{row['status']}; {row['reason']}"))
            elif {"claim", "measured", "status"} <= set(row) and names:
                last[names[0]] = f"{row['claim']} | {row['measured']} | {row['status']}"
    return None if statuses is None else (statuses, last)


def cmd_list(argv: list[str]) -> int:
    from alignax.experiment import paper_of

    parser = _ArgumentParser(prog="alignax list")
    parser.add_argument("--dir", default="experiments")
    args = parser.parse_args(argv)
    if not os.path.isdir(args.dir):
        return _err(f"{args.dir}: no experiments folder here", 2)
    results_md = os.path.join(args.dir, "RESULTS.md")
    generated = _generated_results(results_md)
    rows = _results_rows(results_md) if generated is None else {}
    names = sorted(f[:-3] for f in os.listdir(args.dir) if f.endswith(".py") and f[0] != "_")
    for name in names:
        paper = paper_of(os.path.join(args.dir, f"{name}.py"))
        if generated is None:  # a hand-written page: | experiment | paper | claim | measured |
            row = rows.get(name)  # pass | ...
            last = " | ".join(row[2:5]) if row and len(row) >= 5 else "no recorded result"
            print(f"{name}\n    paper: {paper}\n    last result: {last}")
            continue
        statuses, last_rows = generated
        found = statuses.get(name, [])
        if len(found) == 1:
            status = f" {found[0][1]}"
        elif found:  # one line per paper
            status = "".join(f"\n      {p}: {st}" for p, st in found)
        else:
            status = " no recorded run"
        last = last_rows.get(name, "no recorded result")
        print(f"{name}\n    paper: {paper}\n    status:{status}\n    last result: {last}")
    return 0


def cmd_eval(argv: list[str]) -> int:
    import json

    parser = _ArgumentParser(prog="alignax eval")
    parser.add_argument("--model", required=True,
                        help="Hugging Face reward-model folder (config.json + *.safetensors)")
    parser.add_argument("--data", required=True, help="preference file (.jsonl/.json/.parquet)")
    parser.add_argument("--tokenizer", default=None,
                        help="tokenizer.json or folder (default: the model folder), or 'bytes'")
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--skip-invalid", action="store_true",
                        help="skip bad rows (reported as <file>:<line>) and count them, instead "
                             "of stopping at the first")
    parser.add_argument("--json", default=None, help="also write the results to this file")
    parser.add_argument("--no-chat-template", action="store_true",
                        help="score plain prompt + response text even when the tokenizer has "
                             "a chat template (default: the model's template, as RewardBench "
                             "scores chat models)")
    parser.add_argument("--system", default=None,
                        help="a system message before each prompt (with the chat template)")
    parser.add_argument("--dtype", default=None, choices=("float32", "bfloat16"),
                        help="parameter and compute dtype (default: the checkpoint's; float16 "
                             "checkpoints run in float32)")
    parser.add_argument("--mesh", default=None, metavar="data=D,fsdp=F,tensor=T",
                        help="shard the model and the batches over a device mesh (axes data, "
                             "fsdp, tensor; omitted axes are 1, one size may be -1)")
    parser.add_argument("--truncation", default="error",
                        choices=("error", "keep_end", "keep_start"),
                        help="an over-long sequence: error (a bad row), keep_end (its last "
                             "--max-length tokens, as RewardBench) or keep_start")
    parser.add_argument("--pool", default="last", choices=("last", "last_non_pad"),
                        help="the token the score is read at: last (the last real token, as "
                             "alignax trains reward models) or last_non_pad (the last token "
                             "that is not config.json's pad_token_id, as transformers and "
                             "RewardBench read it: they differ when pad == eos)")
    parser.add_argument("--scores", default=None,
                        help="write the per-pair scores (JSON: chosen_scores, rejected_scores, "
                             "in file order) to this file")
    _add_distributed_args(parser)
    args = parser.parse_args(argv)
    if args.num_processes > 1 and args.mesh is None:
        return _err("--num-processes > 1 needs --mesh (the devices of every process)", 2)
    problem = _init_distributed(args)
    if problem:
        return _err(problem, 2)
    import jax

    from alignax.data.errors import DataError
    from alignax.data.tokenizers import ByteTokenizer, HFTokenizer
    from alignax.eval import rewardbench
    from alignax.models.hf import import_hf

    if not os.path.isdir(args.model):
        return _err(f"{args.model}: no such model folder", 2)
    for flag, out in (("--json", args.json), ("--scores", args.scores)):
        if out and not os.path.isdir(os.path.dirname(os.path.abspath(out))):
            return _err(f"{flag} {out}: no such folder to write it in", 2)  # before scoring
    mesh = None
    if args.mesh is not None:
        try:
            mesh = _parse_mesh(args.mesh)
        except ValueError as e:
            return _err(f"--mesh {args.mesh}: {e}", 2)
        shards = int(mesh.shape["data"]) * int(mesh.shape["fsdp"])
        if args.batch_size % shards:
            return _err(f"--batch-size {args.batch_size} does not split over the mesh's "
                        f"data x fsdp = {shards} shards; pass a multiple of {shards}", 2)
    tok_path = args.model if args.tokenizer is None else args.tokenizer
    try:
        if tok_path == "bytes":
            tokenizer = ByteTokenizer()
        else:
            if os.path.isdir(tok_path) and not os.path.exists(
                    os.path.join(tok_path, "tokenizer.json")):
                return _err(f"{tok_path}: no tokenizer.json (pass --tokenizer PATH or "
                            f"--tokenizer bytes)", 2)
            tokenizer = HFTokenizer.from_file(tok_path)
        dtype = args.dtype or _checkpoint_dtype(args.model)
        model, params = import_hf(args.model, kind="reward", mesh=mesh, dtype=dtype,
                                  param_dtype=dtype, pool=args.pool)
        cfg = model.config
        max_positions = cfg.max_len if cfg.positions == "learned" else None
        if max_positions is not None and args.max_length > max_positions:
            return _err(f"--max-length {args.max_length} exceeds the {max_positions} learned "
                        f"positions of the model in {args.model} (config.json); pass "
                        f"--max-length {max_positions} or less", 2)
        result = rewardbench.evaluate_preference_file(
            args.data, rewardbench.reward_score_fn(model, params, mesh=mesh), tokenizer,
            max_length=args.max_length, batch_size=args.batch_size,
            skip_invalid=args.skip_invalid, vocab_size=cfg.vocab_size,
            max_positions=max_positions,
            chat_template=False if args.no_chat_template else None, system=args.system,
            truncation_mode=args.truncation)
    except (DataError, ValueError, FileNotFoundError, KeyError) as e:
        return _err(str(e).splitlines()[0] if str(e) else type(e).__name__, 2)
    if jax.process_index() != 0:  # every process scored every pair; process 0 reports
        return 0
    skipped = (f", {result.num_skipped} invalid rows skipped (first: {result.skipped[0]})"
               if result.num_skipped else "")
    placed = f" on mesh {dict(mesh.shape)}" if mesh is not None else ""
    print(f"model {args.model} ({dtype}{placed})\ndata {args.data}: {result.num_pairs} "
          f"pairs{skipped}")
    print(result.table())
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result.to_json(), f, indent=2)
    if args.scores:
        with open(args.scores, "w") as f:
            json.dump({"chosen_scores": result.chosen_scores.tolist(),
                       "rejected_scores": result.rejected_scores.tolist()}, f)
    return 0


def _parse_mesh(text: str):
    """`data=2,fsdp=2,tensor=2` -> `alignax.train.sharding.make_mesh` (omitted axes: data -1,
    fsdp 1, tensor 1, as `mesh_from_config`); ValueError with the reason."""
    from alignax.train.sharding import mesh_from_config

    sizes = {}
    for part in text.split(","):
        name, eq, value = part.partition("=")
        name = name.strip()
        if not eq or name in sizes:
            raise ValueError(f"expected axis=size pairs like data=2,fsdp=2,tensor=2, got {part!r}")
        try:
            sizes[name] = int(value)
        except ValueError:
            raise ValueError(f"size of {name} must be an integer, got {value!r}") from None
        if sizes[name] == 0 or sizes[name] < -1:
            raise ValueError(f"size of {name} must be positive or -1, got {sizes[name]}")
    return mesh_from_config(sizes)


def _checkpoint_dtype(path: str) -> str:
    """The dtype a checkpoint folder is stored in (config.json `torch_dtype`, or `dtype` in newer
    transformers): "bfloat16", else "float32" (float16 and unknown ones run in float32)."""
    import json

    try:
        with open(os.path.join(path, "config.json"), encoding="utf-8") as f:
            hf = json.load(f)
    except (OSError, ValueError):
        return "float32"  # import_hf reports the unreadable config.json
    stored = hf.get("torch_dtype") or hf.get("dtype")
    return "bfloat16" if stored == "bfloat16" else "float32"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    commands = {"run": cmd_run, "list": cmd_list, "eval": cmd_eval}
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in commands:
        print(__doc__.strip())
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    return commands[argv[0]](argv[1:])


if __name__ == "__main__":
    sys.exit(main())
