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
# The same two builds on another CPU: QEMU's user-mode Intel Haswell (AVX2, no AVX-512/AMX).
if command -v qemu-x86_64 >/dev/null; then
  probe='from llama_cpp import Llama; from talker_stream.llm.llamacpp import bundled_model
llm = Llama(model_path=str(bundled_model()), n_ctx=512, n_threads=2, verbose=False)
print(repr(llm.create_chat_completion(messages=[{"role": "user", "content": "Say hi."}], max_tokens=4, temperature=0)["choices"][0]["message"]["content"]))'
  for build in portable native; do
    path=""; [ "$build" = native ] && path="$native"
    set +e
    out=$(PYTHONPATH="$path" timeout 600 qemu-x86_64 -cpu Haswell .venv/bin/python -c "$probe" 2>/dev/null)
    code=$?
    set -e
    if [ $code -eq 0 ]; then echo "emulated Haswell, $build build: answered $out"
    elif [ $code -gt 128 ]; then echo "emulated Haswell, $build build: killed by $(kill -l $((code - 128)))"
    else echo "emulated Haswell, $build build: exit code $code"; fi
  done
fi
