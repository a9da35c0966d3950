"""`alignax eval` sharded over a device mesh and in bfloat16.

Mesh: one subprocess with 8 simulated CPU devices (XLA_FLAGS is read when jax is imported) runs
the CLI on two meshes (the checkpoint streamed onto the mesh by `import_hf(mesh=)`, the batches
split by rows, other batch sizes than the one-device run's); every per-pair score equals the
one-device run's (in the test process) in fp32 (rtol/atol 1e-5; measured 9e-8) and the
accuracies, subsets and sections are identical.

bfloat16: `--dtype bfloat16` rounds every parameter and every activation to bf16 (8 significant
bits: the relative rounding error of round-to-nearest is delta = e / m with e uniform in
[-u, u], u = 2^-8, and m the significand, log-uniform on [1, 2), so E[delta^2] = u^2 E[1/m^2] / 3
with E[1/m^2] = 3 / (8 ln 2)). To first order a score moves by sum_k c_k delta_k, where for a
weight theta_k the coefficient is c_k = theta_k ds/dtheta_k; the roundings are independent, so
the weights alone move it by a standard deviation sigma_w = u ||c||_2 sqrt(1 / (8 ln 2)). Each
projection also rounds its input and its output, terms of the same size as its weight term
(both are partial sums of the c_k), so the total variance is about 3 sigma_w^2:

    sigma = u ||theta * ds/dtheta||_2 sqrt(3 / (8 ln 2)) ~= 0.74 u ||c||_2,   bound = 6 sigma

per score, with the gradient of the fp32 model (each row's own jit(grad): jit(jacrev) of the
whole batch returns wrong rows on XLA:CPU, jax 0.10.2, for batches of this size). Measured on
this model (48 scores): |s_bf16 - s_fp32| / sigma has rms about 0.8 and max 2.4 (the normal law
predicts rms 1, max about 2.3 of 48). Rounding only the weights (fp32 compute) gives rms
0.67 sigma_w, and the full bf16 error's rms is 2.1x the weights-only one (not sqrt(3) = 1.7:
the activations add a little more than the weights' variance twice), so the 6 sigma bound has
room. A pair is a clear margin when |s_c - s_r| in fp32 exceeds the sum of its two bounds
(20 of the 24 pairs here); the bf16 run must decide each of them as fp32 does (so the accuracy
on them is unchanged).
"""

import json
import math
import os
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

from alignax import cli
from alignax.data.readers import read_preferences
from alignax.data.tokenize import tokenize_pair
from alignax.data.tokenizers import ByteTokenizer
from alignax.eval import rewardbench
from alignax.models.hf import export_hf, import_hf
from alignax.models.transformer import TransformerConfig, make_reward_model

CFG = TransformerConfig(vocab_size=259, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2,
                        d_ff=64, max_len=64)
SUBSETS = ("math-prm", "hep-go", "alpacaeval-easy", "mt-bench-med", "mt-bench-hard",
           "llmbar-natural", "donotanswer", "xstest-should-respond")
WORDS = "the cat sat on a mat dog ran far away quick brown fox yes no maybe".split()
MAX_LENGTH = 48
# (mesh, batch size): rows over data x fsdp, parameters over fsdp and tensor
MESHES = [("data=2,fsdp=2,tensor=2", 8), ("fsdp=4,tensor=2", 12)]
BF16_SIGMA = math.sqrt(3 / (8 * math.log(2)))  # sigma / (u ||c||_2), see the docstring
U = 2.0 ** -8


def _rows(seed=0, per_subset=3):
    rng = np.random.default_rng(seed)
    sentence = lambda lo, hi: " ".join(rng.choice(WORDS, int(rng.integers(lo, hi))))  # noqa: E731
    return [{"prompt": sentence(2, 5), "chosen": sentence(1, 7), "rejected": sentence(1, 7),
             "subset": s} for s in SUBSETS for _ in range(per_subset)]


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """The checkpoint (random weights drawn with numpy: no init to compile) and the pairs."""
    root = tmp_path_factory.mktemp("sharded")
    model = make_reward_model(CFG)
    rng = np.random.default_rng(5)
    params = jax.tree.map(lambda a: (rng.normal(size=a.shape) * (0.3 if a.ndim == 1 else 0.1)
                                     + (a.ndim == 1)).astype(np.float32),
                          jax.eval_shape(model.init, jax.random.key(0)))
    params["score"]["bias"] = np.zeros_like(params["score"]["bias"])  # HF's score has none
    export_hf(model, params, str(root / "rm"), model_type="llama")
    return root, _write(root / "pairs.jsonl", _rows())


@pytest.fixture(scope="module")
def one_device(files, tmp_path_factory):
    """The fp32 one-device run (the checkpoint's dtype is the default): (results, scores)."""
    root, data = files
    return _eval(root / "rm", data, tmp_path_factory.mktemp("one") / "fp32")


def _eval(model_dir, data, out, *extra):
    code = cli.main(["eval", "--model", str(model_dir), "--data", str(data), "--tokenizer",
                     "bytes", "--max-length", str(MAX_LENGTH), "--json", f"{out}.json",
                     "--scores", f"{out}.scores.json", *extra])
    assert code == 0
    with open(f"{out}.json") as f, open(f"{out}.scores.json") as g:
        return json.load(f), json.load(g)


SCRIPT = textwrap.dedent("""
    import json, sys
    from alignax import cli
    root, data, runs = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    for i, (mesh, batch) in enumerate(runs):
        args = ["eval", "--model", root + "/rm", "--data", data, "--tokenizer", "bytes",
                "--max-length", "%d", "--batch-size", str(batch), "--json",
                f"{root}/run{i}.json", "--scores", f"{root}/run{i}.scores.json"]
        assert cli.main(args + ["--mesh", mesh]) == 0, (mesh, batch)
    # the streaming import places each weight with its logical axes' sharding
    from alignax.models.hf import import_hf
    from alignax.train.sharding import make_mesh
    _, params = import_hf(root + "/rm", kind="reward", mesh=make_mesh(2, 2, 2))
    up = params["decoder"]["layers"][0]["mlp"]["up"]["kernel"]  # [D, F]: (fsdp, tensor)
    print("up kernel", up.shape, up.sharding.spec, up.addressable_shards[0].data.shape)
    # a batch that does not split over the mesh's rows: one line, before any import
    assert cli.main(["eval", "--model", root + "/rm", "--data", data, "--tokenizer", "bytes",
                     "--mesh", "data=4,fsdp=2", "--batch-size", "12"]) == 2
    assert cli.main(["eval", "--model", root + "/rm", "--data", data, "--tokenizer", "bytes",
                     "--mesh", "data=3"]) == 2
""" % MAX_LENGTH)


@pytest.mark.slow
def test_mesh_scores_equal_the_one_device_scores(files, one_device):
    root, data = files
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8",
           "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(root), str(data),
                           json.dumps(MESHES)], env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "on mesh {'data': 2, 'fsdp': 2, 'tensor': 2}" in proc.stdout
    assert "up kernel (32, 64) P('fsdp', 'tensor') (16, 32)" in proc.stdout
    errors = [line for line in proc.stderr.splitlines() if line.startswith("alignax:")]
    assert errors == [
        "alignax: --batch-size 12 does not split over the mesh's data x fsdp = 8 shards; pass "
        "a multiple of 8",
        "alignax: --mesh data=3: mesh {'data': 3, 'fsdp': 1, 'tensor': 1} needs 3 devices, "
        "have 8"]
    runs = [(json.loads((root / f"run{i}.json").read_text()),
             json.loads((root / f"run{i}.scores.json").read_text())) for i in range(len(MESHES))]
    one, one_scores = one_device
    assert one["num_pairs"] == len(SUBSETS) * 3 and len(one["sections"]) == 4
    for (mesh, _), (result, scores) in zip(MESHES, runs):
        for side in ("chosen_scores", "rejected_scores"):
            np.testing.assert_allclose(scores[side], one_scores[side], rtol=1e-5, atol=1e-5,
                                       err_msg=f"{mesh} {side}")
        assert result == one, mesh


@pytest.mark.slow
def test_two_processes_score_as_one_device(files, one_device):
    """`alignax eval` on 2 processes x 4 CPU devices (one 2x2x2 mesh over both): every process
    reads the file, each device scores its rows, process 0 alone writes the results; they
    equal the one-device run's."""
    from tests import runs

    root, data = files
    out = root / "two_processes"
    port = runs.free_port()
    procs = [subprocess.Popen(
        [sys.executable, "-m", "alignax.cli", "eval", "--model", str(root / "rm"), "--data",
         str(data), "--tokenizer", "bytes", "--max-length", str(MAX_LENGTH), "--batch-size", "8",
         "--mesh", "data=2,fsdp=2,tensor=2", "--json", f"{out}.json", "--scores",
         f"{out}.scores.json", "--coordinator", f"127.0.0.1:{port}", "--num-processes", "2",
         "--process-id", str(i)],
        cwd=runs.REPO, env=runs.env(4), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True) for i in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (stdout, stderr) in zip(procs, outs):
        assert p.returncode == 0, f"{stdout}\n{stderr[-3000:]}"
    assert "on mesh {'data': 2, 'fsdp': 2, 'tensor': 2}" in outs[0][0]
    assert "model " not in outs[1][0] and "accuracy" not in outs[1][0]  # process 1: silent
    result = json.loads((root / "two_processes.json").read_text())
    scores = json.loads((root / "two_processes.scores.json").read_text())
    one, one_scores = one_device
    for side in ("chosen_scores", "rejected_scores"):
        np.testing.assert_allclose(scores[side], one_scores[side], rtol=1e-5, atol=1e-5)
    assert result == one


def test_eval_on_several_processes_needs_a_mesh(files, capsys):
    root, data = files
    assert cli.main(["eval", "--model", str(root / "rm"), "--data", str(data), "--tokenizer",
                     "bytes", "--num-processes", "2", "--coordinator", "127.0.0.1:1"]) == 2
    assert "--num-processes > 1 needs --mesh" in capsys.readouterr().err


def test_bf16_scores_within_the_rounding_bound_and_clear_margins_decided_alike(
        files, one_device, tmp_path, capsys):
    root, data = files
    fp32, fp32_scores = one_device  # the default dtype: the checkpoint's, float32
    bf16, bf16_scores = _eval(root / "rm", data, tmp_path / "bf16", "--dtype", "bfloat16")
    # the gradient of every fp32 score with respect to the weights: sigma of each score
    model, params = import_hf(str(root / "rm"), kind="reward")
    records = read_preferences(str(data)).records
    rows = [tokenize_pair(r, ByteTokenizer(), max_length=MAX_LENGTH) for r in records]
    ids = np.stack([r["chosen_ids"] for r in rows] + [r["rejected_ids"] for r in rows])
    mask = np.stack([r["chosen_mask"] for r in rows] + [r["rejected_mask"] for r in rows])
    # one row at a time: jit(jacrev) of the batch gives wrong rows on XLA:CPU (jax 0.10.2) for
    # batches this large, while jit(grad) of one row equals the eager gradient
    grad = jax.jit(jax.grad(lambda p, i, m: model.apply(p, i, m)[0]))
    c2 = np.zeros(len(ids))
    for r in range(len(ids)):
        g = grad(params, ids[r:r + 1], mask[r:r + 1].astype(bool))
        c2[r] = sum(((np.asarray(a, np.float64) * np.asarray(b, np.float64)) ** 2).sum()
                    for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(params)))
    sigma = U * BF16_SIGMA * np.sqrt(c2)
    s32 = np.concatenate([fp32_scores["chosen_scores"], fp32_scores["rejected_scores"]])
    s16 = np.concatenate([bf16_scores["chosen_scores"], bf16_scores["rejected_scores"]])
    z = np.abs(s16 - s32) / sigma
    assert z.max() <= 6.0, z.max()  # measured: 2.4
    assert 0 < np.mean(z) < 2  # bf16 does round (not an fp32 run); errors of the expected size
    # clear margins: the bf16 run decides them as fp32 does
    n = len(records)
    bound = 6 * sigma
    clear = np.abs(s32[:n] - s32[n:]) > bound[:n] + bound[n:]
    assert clear.sum() >= n // 2, clear.sum()
    np.testing.assert_array_equal((s16[:n] > s16[n:])[clear], (s32[:n] > s32[n:])[clear])
    subsets = [r["subset"] for r in _rows()]
    keep = [s for s, k in zip(subsets, clear) if k]
    a32 = rewardbench.pairwise_result(s32[:n][clear], s32[n:][clear], keep)
    a16 = rewardbench.pairwise_result(s16[:n][clear], s16[n:][clear], keep)
    assert (a16.accuracy, a16.subsets, a16.sections) == (a32.accuracy, a32.subsets, a32.sections)
    assert fp32["num_pairs"] == bf16["num_pairs"] == n
    # the checkpoint's dtype is the default: a bf16 export runs in bf16, with the same rounded
    # weights as --dtype bfloat16 on the fp32 checkpoint
    export_hf(model, params, str(tmp_path / "rm16"), model_type="llama", dtype="bfloat16")
    capsys.readouterr()
    _, stored = _eval(tmp_path / "rm16", data, tmp_path / "stored")
    assert "(bfloat16)" in capsys.readouterr().out
    assert stored == bf16_scores


def test_mesh_flag_errors_are_one_line(files, capsys):
    root, data = files
    for mesh, message in [("data", "expected axis=size pairs like data=2,fsdp=2,tensor=2, got "
                                   "'data'"),
                          ("data=x", "size of data must be an integer, got 'x'"),
                          ("data=0", "size of data must be positive or -1, got 0"),
                          ("pipe=1", "unknown mesh axes ['pipe']; valid: ('data', 'fsdp', "
                                     "'tensor')")]:
        assert cli.main(["eval", "--model", str(root / "rm"), "--data", str(data),
                         "--tokenizer", "bytes", "--mesh", mesh]) == 2
        assert capsys.readouterr().err == f"alignax: --mesh {mesh}: {message}\n"
