"""talker-stream: one portrait photo becomes a talking, blinking, emoting face.

The pipeline, in the order data flows: text -> sentences (text.py) -> speech (tts/,
speaker.py) -> timeline on the one audio clock (clock.py, timeline.py) -> face parameters
(face/visemes.py, face/expression.py) -> frames (face/animator.py) -> sinks (writer.py).
"""

__version__ = "0.1.0"
