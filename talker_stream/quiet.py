"""Native libraries' chatter kept off a newcomer's terminal.

MediaPipe (TFLite, absl, glog) prints from C++ straight to file descriptor 2 when its graph
starts: "Created TensorFlow Lite XNNPACK delegate", "All log messages before
absl::InitializeLog()", "W0000 ... inference_feedback_manager". Python's logging cannot
reach that. Around the calls that print it, fd 2 goes to a temporary file; afterwards every
line that is not known noise is written back, so a real error is delayed, never lost.
``-v`` (or TALKER_NATIVE_LOGS=1) lets everything through.
"""
from __future__ import annotations

import os
import re
import sys
import tempfile
import threading
from contextlib import contextmanager

NOISE = re.compile(rb"^(INFO: Created TensorFlow Lite|WARNING: All log messages before absl::InitializeLog"
                   rb"|[IW]0000 .*\b(inference_feedback_manager|landmark_projection_calculator|gl_context"
                   rb"|face_landmarker_graph)\.cc)")
_lock = threading.Lock()  # fd 2 is process-wide: one quiet block at a time


@contextmanager
def native_stderr_quiet():
    if os.environ.get("TALKER_NATIVE_LOGS") == "1":
        yield
        return
    with _lock:
        try:
            sys.stderr.flush()
            saved = os.dup(2)
        except (OSError, ValueError):  # no real fd 2 (an embedding app): nothing to quiet
            yield
            return
        with tempfile.TemporaryFile() as caught:
            os.dup2(caught.fileno(), 2)
            try:
                yield
            finally:
                try:
                    sys.stderr.flush()
                except ValueError:
                    pass
                os.dup2(saved, 2)
                os.close(saved)
                caught.seek(0)
                kept = [line for line in caught.read().splitlines(keepends=True) if not NOISE.match(line)]
                if kept:
                    os.write(2, b"".join(kept))
