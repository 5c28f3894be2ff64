#!/usr/bin/env bash
# The portable llama.cpp build (what scripts/setup.sh installs) against a -march=native build
# of the same llama-cpp-python release, on this machine: bench/llm_speed.py on each.
# The native copy goes to a temporary folder put first on PYTHONPATH; the venv is untouched.
# Usage: bench/llm_builds.sh        (builds for ~5-12 minutes on 2 cores, then measures)
set -euo pipefail
cd "$(dirname "$0")/.."
version=$(.venv/bin/python -c 'import llama_cpp; print(llama_cpp.__version__)')
native=$(mktemp -d /tmp/llama-native-XXXX)
trap 'rm -rf "$native"' EXIT
echo "building llama-cpp-python $version with -march=native (GGML_NATIVE=ON) into $native" >&2
CMAKE_ARGS="-DGGML_NATIVE=ON" CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" \
  .venv/bin/pip install -q --no-cache-dir --no-deps --no-binary llama-cpp-python --target "$native" \
  "llama-cpp-python==$version"
.venv/bin/python bench/llm_speed.py --label "portable (AVX2/FMA/F16C)"
PYTHONPATH="$native" .venv/bin/python bench/llm_speed.py --label "native (-march=native)"
