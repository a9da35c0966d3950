#!/usr/bin/env bash
# One-GPU benchmark: W1-W4 at Llama-3.2-1B's shape in bfloat16, alignax against TRL on the same
# GPU (benchmarks/README.md, "GPU"; the measurement itself is benchmarks/gpu.py).
#
#   bash benchmarks/gpu.sh                      # on a machine with one NVIDIA GPU (~5-7 min)
#   bash benchmarks/gpu.sh --size tiny          # the same harness on the CPU (seconds)
#   bash benchmarks/gpu.sh --dry-run            # device, ceilings and plan; runs nothing
#   bash benchmarks/gpu.sh --fetch-wheels       # here, with network: wheels of what the GPU
#                                               # machine lacks, into .whl/ (carry it there)
#   PYTHON=/path/to/python bash benchmarks/gpu.sh --workloads w2 w3 --steps 5 --json out.json
#
# Every other argument goes to `python -m benchmarks.gpu` (--help lists them).
#
# The python is $PYTHON, else `python3` if it imports jax (a GPU image's), else .venv/bin/python.
# alignax runs from this checkout (no install: a GPU image's jax/flax stay as they are). Python
# packages that python lacks (TRL and its datasets for the peer; grain, array_record,
# ml_collections, portpicker, nest_asyncio for alignax's imports) are installed from the
# wheels in $ALIGNAX_WHEELS (default .whl/) into a temporary folder on PYTHONPATH, without
# network (`--no-index`); without wheels, a missing peer is reported ("peer: not installed")
# and the alignax rows name what failed to import.
set -euo pipefail
cd "$(dirname "$0")/.."

WHEELS=${ALIGNAX_WHEELS:-.whl}
# module name = wheel name prefix, pinned to the versions this project is tested with
PINNED="trl==1.16.0 datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19 grain==0.2.18
array-record==0.8.6 ml-collections==1.1.0 portpicker==1.6.0 nest-asyncio==1.6.0"
MODULES="trl datasets dill multiprocess grain array_record ml_collections portpicker nest_asyncio"

if [[ "${1:-}" == "--fetch-wheels" ]]; then
  # Python 3.12 x86-64 manylinux wheels, no dependencies (the GPU image has the rest)
  PYV=${WHEEL_PYTHON:-3.12}
  python3 -m pip download --no-deps --only-binary=:all: --python-version "$PYV" \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
    --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d "$WHEELS" $PINNED
  du -sh "$WHEELS"
  exit 0
fi

PY=${PYTHON:-}
if [[ -z "$PY" ]]; then
  if python3 -c "import jax" >/dev/null 2>&1; then
    PY=python3
  elif [[ -x .venv/bin/python ]]; then
    PY=.venv/bin/python
  else
    echo "gpu.sh: no python with jax found (set PYTHON=...)" >&2
    exit 2
  fi
fi

# find_spec: no import is run (importing trl alone takes seconds)
read -r -a missing <<< "$("$PY" -c 'import importlib.util as u, sys
print(" ".join(m for m in sys.argv[1:] if u.find_spec(m) is None))' $MODULES)"
if (( ${#missing[@]} )); then
  wheels=()
  for m in "${missing[@]}"; do
    for f in "$WHEELS"/"$m"-*.whl; do [[ -e "$f" ]] && wheels+=("$f"); done
  done
  if (( ${#wheels[@]} )); then
    site=$(mktemp -d /tmp/alignax-site.XXXXXX)
    echo "gpu.sh: installing ${#wheels[@]} wheel(s) from $WHEELS into $site: ${missing[*]}"
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$site" \
      "${wheels[@]}"
    export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
  else
    echo "gpu.sh: $PY lacks ${missing[*]} and $WHEELS/ has no wheels of them" \
         "(bash benchmarks/gpu.sh --fetch-wheels where there is network, or pip install them)"
  fi
fi

# one process uses the GPU at a time: let JAX take 90% of it (W4 at 1B needs more than 75%)
export XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.9}
export PYTHONUNBUFFERED=1 TQDM_DISABLE=1
exec "$PY" -m benchmarks.gpu "$@"
