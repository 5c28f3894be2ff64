"""Speech: text to sentences (emotion tags), sentences to voice (tts/), voice onto the one
clock (audio, clock), and the timeline that lays speech out frame by frame for the face."""
