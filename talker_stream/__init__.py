"""talker-stream: one portrait photo becomes a talking, blinking, emoting face.

The pipeline, in the order data flows: text -> sentences (text.py) -> speech (tts/,
speaker.py) -> timeline on the one audio clock (clock.py, timeline.py) -> face parameters
(face/visemes.py, face/expression.py) -> frames (face/animator.py) -> sinks (writer.py).
"""

import os

# Every matrix product here is small; a multi-threaded BLAS only adds threads that spin
# between frames (measured: a whole idle core). Users can still override it.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

__version__ = "0.1.0"
