#!/usr/bin/env bash
# One-time set-up on a fresh Debian/Ubuntu machine, safe to run again (it skips what is done):
# Debian packages, a virtual environment in .venv, and the project installed into it.
# Usage: scripts/setup.sh [extra ...]   e.g. scripts/setup.sh test
#   "test" also installs every plugin in plugins/ and the real services the tests start
#   (OBS Studio under Xvfb, nginx with RTMP, Chromium, PulseAudio, ngircd, coturn).
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages: espeak-ng is the fallback voice (and Piper's phonemizer data comes in
# its wheel); libgl1/libglib2.0-0 are what OpenCV's wheel links against.
APT_PACKAGES=(espeak-ng libgl1 libglib2.0-0)
testing=false
for arg in "$@"; do [ "$arg" = test ] && testing=true; done
if $testing; then
  APT_PACKAGES+=(obs-studio xvfb xauth nginx libnginx-mod-rtmp chromium pulseaudio pulseaudio-utils ffmpeg fonts-dejavu-core ngircd libopus0 openssl libportaudio2 coturn)
  # qemu-user runs the installed llama.cpp on an emulated AVX2-only CPU (Haswell): the portability test
  APT_PACKAGES+=(qemu-user binutils)
fi
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if ((${#missing[@]})); then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  echo "installing Debian packages: ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi
# the TURN test starts its own coturn on a free port: Debian's coturn service need not run
if $testing && command -v systemctl >/dev/null && systemctl is-enabled coturn >/dev/null 2>&1; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO systemctl disable --now coturn >/dev/null 2>&1 || true
fi

PY=${PYTHON:-python3}
if ! "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  echo "talker-stream needs Python 3.11 or newer (found $("$PY" --version 2>&1)); set PYTHON=/path/to/python3.11" >&2
  exit 1
fi
[ -x .venv/bin/python ] || "$PY" -m venv .venv

extras=$(IFS=,; echo "$*")
brain=false
case ",$extras," in *,brain,*|*,test,*) brain=true ;; esac

# llama.cpp is compiled from source by llama-cpp-python. Its default (-march=native, AMX and
# AVX-512 kernels picked at build time) crashes on CPUs other than the one it was built on,
# and pip's wheel cache hands such a wheel to the next machine. One portable build instead:
# AVX2/FMA/F16C on x86-64 (every x86-64 CPU since 2013), generic on other architectures,
# compiled here with pip's cache off so that no native wheel is ever reused.
LLAMA_VERSION=0.3.36
if [ "$(uname -m)" = x86_64 ]; then
  LLAMA_CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AVX512=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF"
else
  LLAMA_CMAKE_ARGS="-DGGML_NATIVE=OFF"
fi
LLAMA_STAMP=".venv/.llama-portable-$(echo "$LLAMA_VERSION $LLAMA_CMAKE_ARGS" | sha1sum | cut -c1-12)"
install_portable_llama() {
  echo "building llama-cpp-python $LLAMA_VERSION for any $(uname -m) CPU (about 4-12 minutes on 2 cores)"
  CMAKE_ARGS="$LLAMA_CMAKE_ARGS" CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" FORCE_CMAKE=1 \
    .venv/bin/pip install -q --no-cache-dir --force-reinstall --no-deps --no-binary llama-cpp-python \
    "llama-cpp-python==$LLAMA_VERSION"
  rm -f .venv/.llama-portable-*
  touch "$LLAMA_STAMP"
}
spec="."; [ -n "$extras" ] && spec=".[$extras]"
stamp=".venv/.installed-$(cat pyproject.toml plugins/*/pyproject.toml 2>/dev/null | sha1sum | cut -c1-12)-${extras:-base}"
if [ ! -f "$stamp" ]; then
  echo "installing talker-stream${extras:+ with $extras} into .venv (first time: a few minutes)"
  .venv/bin/pip install -q --upgrade pip
  # one resolver run for the project and its plugins, so that no plugin can pull in a
  # release another part excludes (mediapipe needs protobuf < 5; coqui-tts would take 7)
  targets=(-e "$spec")
  if $testing; then
    for plugin in plugins/*/pyproject.toml; do
      targets+=(-e "$(dirname "$plugin")")
    done
  fi
  if $brain; then install_portable_llama; fi
  .venv/bin/pip install -q "${targets[@]}"
  touch "$stamp"
fi
# A venv made before the portable build (or by hand) may still hold a native one: rebuild it.
if $brain && [ ! -f "$LLAMA_STAMP" ]; then install_portable_llama; fi
