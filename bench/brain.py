"""Conversation brain latency (issue 4): end of a question -> first lip-synced frame at a
sink, split by stage, for typed and spoken questions.

Everything is real: SmolLM2-135M-Instruct through llama.cpp, Whisper tiny.en with Silero
VAD, the Piper voice, the mesh animator, the live frame loop and a preview sink. The chain
is the one chat.py builds: ``live.say(conversation.reply(question), on_done=reply.heard)``.
Nothing in talker_stream/ is changed; timestamps come from wrappers:

- the LLM object's ``stream`` (first piece the model writes),
- ``talker_stream.live.split_sentences`` (first clause the splitter emits, fast_start on),
- the TTS engine object's ``stream`` (first audio chunk),
- a sink that notes the first speaking frame with audio energy (RMS > 0.02),
- for spoken questions, the ASR object's ``transcribe`` (start = VAD saw the pause that
  ``[asr] speculate_ms`` waits for, end = Whisper done) and the moment the Listener
  confirms the question (``end_of_turn_ms`` of silence). The chain is chat.py's: the
  answer is drafted from the pause on (talker_stream.brain.drafts) and spoken once confirmed.

Typed: "end of question" is the moment the question is handed over. Spoken: each question
is synthesised with Piper, resampled to 16 kHz and fed through the Listener in 32 ms
blocks paced in real time; "end of question" is the wall time at which the last voiced
sample (|x| > 2 % of peak) would have been recorded. Each question gets its own memory
channel so prompts do not grow from one question to the next.

Usage:
  .venv/bin/python bench/brain.py            # --count 10 --modes typed spoken --llm-process worker
  .venv/bin/python bench/brain.py --llm-process inline   # llama.cpp inside the avatar's process
  .venv/bin/python bench/brain.py --engines remote       # every engine behind `talker-stream engines`
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("GLOG_minloglevel", "2")

import numpy as np  # noqa: E402

import talker_stream.live as live_mod  # noqa: E402
from talker_stream.brain.asr import Listener  # noqa: E402
from talker_stream.speech.audio import resample  # noqa: E402
from talker_stream.config import load_settings  # noqa: E402
from talker_stream.brain.conversation import Question, open_conversation  # noqa: E402
from talker_stream.brain.drafts import Drafts  # noqa: E402
from talker_stream.face.animator import MeshAnimator  # noqa: E402
from talker_stream.frames import AudioChunk  # noqa: E402
from talker_stream.outputs import open_sinks  # noqa: E402
from talker_stream.speech.tts import open_tts  # noqa: E402

from _load import OtherLoad, cpu_model  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
QUESTIONS = [
    "What is your favourite colour?", "How are you today?", "Can you tell me a joke?",
    "What is the capital of France?", "Do you like music?", "What should I cook for dinner?",
    "Where do you live?", "What is the weather like?", "Who is your best friend?",
    "Why is the sky blue?", "What games do you play?", "How old are you?",
]
LABELS = {"vad": "VAD pause (speech end -> speculate_ms of silence)", "whisper": "Whisper transcription",
          "confirmed": "turn confirmed (end_of_turn_ms of silence)",
          "llm": "first LLM token", "sentence": "first sentence out of the splitter",
          "tts": "first TTS audio chunk", "frame": "first lip-synced frame at a sink"}


class Marks:
    """Timestamps of the question in flight: each stage keeps its first time only."""

    def __init__(self) -> None:
        self.current: dict[str, float] | None = None
        self.done = threading.Event()

    def begin(self, **t: float) -> dict[str, float]:
        self.current = dict(t)
        self.done.clear()
        return self.current

    def mark(self, stage: str) -> None:
        cur = self.current
        if cur is not None and stage not in cur:
            cur[stage] = time.monotonic()


def instrument(marks: Marks, conversation, tts, asr=None) -> None:
    llm = conversation.llm

    class TimedLLM:
        name = getattr(llm, "name", "llm")

        def count_tokens(self, text):
            return llm.count_tokens(text)

        def stream(self, messages, params):
            for piece in llm.stream(messages, params):
                marks.mark("llm")
                yield piece

    conversation.llm = TimedLLM()
    split = live_mod.split_sentences

    def timed_split(pieces, fast_start=False):
        for sentence in split(pieces, fast_start=fast_start):
            marks.mark("sentence")
            yield sentence

    live_mod.split_sentences = timed_split
    tts_stream = tts.stream

    def timed_tts(text):
        for chunk in tts_stream(text):
            if len(chunk.pcm):
                marks.mark("tts")
            yield chunk

    tts.stream = timed_tts
    if asr is not None:
        transcribe = asr.transcribe

        def timed_transcribe(pcm, language=None):
            marks.mark("turn")
            text = transcribe(pcm, language)
            marks.mark("asr")
            return text

        asr.transcribe = timed_transcribe


class FirstFrameSink:
    """Notes the first speaking frame with audio energy of the question in flight."""

    name = "timed"

    def __init__(self, marks: Marks) -> None:
        self.marks = marks

    def open(self, size, clock) -> None:
        pass

    def write(self, frame) -> None:
        if frame.speaking and frame.utterance is not None and float(np.sqrt(np.mean(frame.audio**2))) > 0.02:
            self.marks.mark("frame")

    def close(self) -> None:
        pass


def ask(live, conversation, marks: Marks, text: str, channel: str, reply=None) -> None:
    reply = reply or conversation.reply(Question(text, channel=channel))

    def finished(spoken) -> None:
        reply.heard(spoken.text)
        marks.done.set()

    live.say(reply, question=text, on_done=finished)


def spoken_pcm(tts, text: str) -> tuple[np.ndarray, int]:
    chunks = list(tts.stream(text))
    pcm = resample(AudioChunk(np.concatenate([c.pcm for c in chunks]), chunks[0].sample_rate), 16000).pcm
    voiced = np.flatnonzero(np.abs(pcm) > 0.02 * np.abs(pcm).max())
    return pcm, int(voiced[-1]) + 1


def run_typed(live, conversation, marks: Marks, count: int) -> list[dict[str, float]]:
    out = []
    for i in range(count):
        text = QUESTIONS[i % len(QUESTIONS)]
        t = marks.begin(end=time.monotonic())
        ask(live, conversation, marks, text, f"typed-{i}")
        marks.done.wait(60)
        time.sleep(0.5)
        out.append(t)
    return out


def run_spoken(live, conversation, listener: Listener, marks: Marks, tts, count: int) -> list[dict[str, float]]:
    clips = [spoken_pcm(tts, QUESTIONS[i % len(QUESTIONS)]) for i in range(count)]
    results: list[dict[str, float]] = []
    heard: list[str] = []
    drafts = Drafts(conversation, lambda text: Question(text, channel=f"spoken-{len(results)}"))

    def on_question(text, start, end) -> None:
        marks.mark("confirmed")
        heard.append(text.strip())
        ask(live, conversation, marks, text, "", reply=drafts.confirm(text, start, end))

    listener.on_question = on_question
    listener.on_guess = drafts.guess
    listener.on_resumed = drafts.resumed
    block = 512

    def source():
        t0, sent = time.monotonic(), 0

        def paced(pcm):
            nonlocal sent
            for i in range(0, len(pcm), block):
                piece = pcm[i : i + block]
                sent += len(piece)
                ahead = t0 + sent / 16000 - time.monotonic()
                if ahead > 0:
                    time.sleep(ahead)
                yield AudioChunk(piece, 16000)

        yield from paced(np.zeros(16000, np.float32))
        for pcm, last in clips:
            results.append(marks.begin(end=t0 + (sent + last) / 16000))
            yield from paced(pcm)
            deadline = time.monotonic() + 60
            while not marks.done.is_set() and time.monotonic() < deadline:
                yield from paced(np.zeros(1536, np.float32))
            yield from paced(np.zeros(8000, np.float32))

    listener.run(source())
    print("heard: " + " | ".join(heard), file=sys.stderr)
    print(f"drafts used {drafts.used}, wasted {drafts.wasted}", file=sys.stderr)
    return results


def table(name: str, runs: list[dict[str, float]], spoken: bool) -> list[float]:
    """Median time of each stage since end of question, and the step from the stage before."""
    print(f"\n{name}: {len(runs)} questions (median ms after the end of the question)\n")
    print("| stage | since end of question | step | min | max |")
    print("|---|---|---|---|---|")
    rows = [("vad", "turn"), ("whisper", "asr"), ("confirmed", "confirmed")] if spoken else []
    rows += [(s, s) for s in ["llm", "sentence", "tts", "frame"]]
    prev = None
    totals = []
    for label, key in rows:
        vals = [(r[key] - r["end"]) * 1000 for r in runs if key in r]
        steps = [(r[key] - r[prev]) * 1000 for r in runs if key in r and prev in r] if prev else vals
        print(f"| {LABELS[label]} | {statistics.median(vals):.0f} | {statistics.median(steps):.0f} | "
              f"{min(vals):.0f} | {max(vals):.0f} |")
        prev = key
        totals = vals
    missing = sum("frame" not in r for r in runs)
    if missing:
        print(f"\n{missing} question(s) never reached a sink")
    return totals


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--count", type=int, default=10)
    ap.add_argument("--modes", nargs="+", default=["typed", "spoken"], choices=["typed", "spoken"])
    ap.add_argument("--llm-process", choices=["worker", "inline"], default="worker",
                    help="worker: llama.cpp in its supervised process, as shipped ([llm] isolate = true); "
                         "inline: inside the avatar's process, as before issue 11")
    ap.add_argument("--engines", choices=["local", "remote"], default="local",
                    help="remote: the LLM, Whisper and the voice behind `talker-stream engines` on loopback, "
                         "reached through the openai engines (the service hop)")
    a = ap.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="bench-brain-"))
    server = None
    try:
        overrides = {"avatar.portrait": str(ROOT / "examples/portrait.png"), "live.sinks": ["preview"],
                     "llm.isolate": a.llm_process == "worker"}
        cfg = None
        if a.engines == "remote":
            from _serve import start_cli

            server, url = start_cli("engines", "--port", "0")
            cfg = folder / "remote.toml"
            cfg.write_text(f'[llm]\nengine = "openai"\n[llm.openai]\nbase_url = "{url}"\n[asr]\nengine = "openai"\n'
                           f'[asr.openai]\nbase_url = "{url}"\n[tts]\nengine = "openai"\nfallback = ""\n'
                           f'[tts.openai]\nbase_url = "{url}"\n')
        s = load_settings(cfg, overrides)
        marks = Marks()
        tts = open_tts(s, live=True)  # as the live avatar opens it: Piper on one thread
        conversation = open_conversation(s)
        llm_kind = type(conversation.llm).__name__  # IsolatedLLM (worker) or LlamaCppLLM (inline)
        conversation.warm_up()
        listener = Listener.from_settings(s) if "spoken" in a.modes else None
        if listener is not None:
            listener.barge_in = False  # the avatar's voice is not fed back into this "microphone"
            listener.asr.transcribe(spoken_pcm(tts, "Hello there.")[0], "en")  # load Whisper once
        instrument(marks, conversation, tts, listener.asr if listener else None)
        live = live_mod.LiveAvatar(s, open_sinks(s) + [FirstFrameSink(marks)], tts=tts,
                                   engine=MeshAnimator()).start()
        time.sleep(2)
        load = OtherLoad().start()
        summary = {}
        if "typed" in a.modes:
            summary["typed"] = table("Typed", run_typed(live, conversation, marks, a.count), False)
        if "spoken" in a.modes:
            summary["spoken"] = table("Spoken", run_spoken(live, conversation, listener, marks, tts, a.count), True)
        live.stop()
        print(f"\nother load while measuring: {load.stop()}")
        print(f"LLM engine object: {llm_kind} ([llm] isolate = {s.llm.isolate}), engines {a.engines}; "
              f"CPU: {cpu_model()}")
        goals = {"typed": 600, "spoken": 1000}
        for mode, totals in summary.items():
            med = statistics.median(totals)
            over = sum(t > goals[mode] for t in totals)
            print(f"{mode}: median end of question -> first lip-synced frame {med:.0f} ms, goal {goals[mode]} ms: "
                  f"{'met' if med <= goals[mode] else 'NOT met'}; {over} of {len(totals)} over the goal "
                  f"(each: {', '.join(f'{t:.0f}' for t in totals)})")
    finally:
        if server is not None:
            server.send_signal(2)
            server.wait(30)
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
