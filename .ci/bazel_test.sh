#!/usr/bin/env bash
# Builds the CLI and runs the unit tests with Bazel, offline, using the project's .venv.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v bazel >/dev/null 2>&1 || [ ! -d /usr/share/bazel/rules/java ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bazel-bootstrap bazel-rules-java >/dev/null
fi

python="$(pwd)/.venv/bin/python"
[ -x "$python" ] || { echo "bazel_test: $python missing; run 'make install' first" >&2; exit 1; }

# A py_runtime toolchain pointing at this checkout's interpreter (the path differs per checkout,
# so it is generated here rather than committed).
gen=.bazel_gen/venv_python
mkdir -p "$gen"
echo 'workspace(name = "venv_python")' > "$gen/WORKSPACE"
cat > "$gen/BUILD" <<BUILD
load("@bazel_tools//tools/python:toolchain.bzl", "py_runtime_pair")

py_runtime(
    name = "py3",
    interpreter_path = "$python",
    python_version = "PY3",
)

py_runtime_pair(
    name = "pair",
    py3_runtime = ":py3",
)

toolchain(
    name = "python_toolchain",
    toolchain = ":pair",
    toolchain_type = "@bazel_tools//tools/python:toolchain_type",
)
BUILD

bazel build //:alignax_cli
bazel test //:all --test_tag_filters=unit
