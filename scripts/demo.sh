#!/usr/bin/env bash
# Render the demo video with the embedded defaults: the sample portrait, the bundled
# Piper voice, the built-in face animator. Nothing is downloaded at run time; no GPU.
# Usage: scripts/demo.sh [talker-stream render options...]   (output: out/talker.mp4)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/talker-stream render "$@"
