"""Concurrent browser sessions on one machine: frames received, drops, CPU, answer latency.

Starts `talker-stream serve` exactly as a user does (its own process, the default engines:
SmolLM2, Piper, Whisper tiny.en, the mesh face), then opens N WebRTC peers against it with
aiortc, each a WHEP client like a browser tab (a Python peer, not Chromium: eight Chromium
tabs would measure Chromium on two cores). Each peer decodes the avatar's VP8 and Opus.

Each peer also keeps the session's caption stream open (``/whep/ID/events``), as the page does.

- idle: N sessions connected, nobody asks anything, for --seconds.
- speaking: the same, while every session is asked a question every few seconds (typed, via
  ``/ask``), so all N avatars talk at once and share the one LLM and voice.
- latency: one session; a spoken question is sent as the peer's microphone track (Piper's
  voice, real time); the time from the last voiced sample sent to the first loud audio
  received back (--asks of them, median and worst).

Reported per N: median and worst received video fps, server-side dropped pictures, CPU of
the server (all its processes, engines included) and of the peers, in % of one core.

The cluster overhead (issue 17): ``--engines remote`` puts the LLM, ear and voice behind
`talker-stream engines` (as a cluster needs them), and ``--ray CPUS`` runs the sessions on a
local Ray cluster (``ray.cluster_utils.Cluster``: a head that holds no session and one node
with CPUS CPUs, as `serve --ray` is deployed), so the two rows of each N differ only by Ray.
The server CPU is then everything the benchmark started (front door, Ray's processes and
actors, the engines), the peers excepted.

Usage:
  .venv/bin/python bench/sessions.py                 # --counts 1 2 4 8 --seconds 30 --asks 10
  .venv/bin/python bench/sessions.py --engines remote --counts 1 2 4 --asks 0
  .venv/bin/python bench/sessions.py --engines remote --ray 2 --counts 1 2 4 --asks 0
"""
from __future__ import annotations

import argparse
import asyncio
import fractions
import json
import statistics
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np

from _load import OtherLoad, tree_cpu_seconds
from _serve import start_cli

ROOT = Path(__file__).resolve().parent.parent
QUESTIONS = ["What is your favourite colour?", "Can you tell me a joke?", "Why is the sky blue?",
             "What games do you play?", "Where do you live?", "Do you like music?"]


class Peer:
    """One WHEP client: receives the avatar, counts frames, notes loud audio."""

    def __init__(self, url: str, mic=None) -> None:
        self.url, self.mic = url, mic
        self.video_times: list[float] = []
        self.loud_at: list[float] = []
        self.session = ""
        self.events: asyncio.Future | None = None
        self.pc = None

    async def start(self) -> None:
        from aiortc import RTCPeerConnection, RTCSessionDescription

        self.pc = pc = RTCPeerConnection()
        if self.mic is not None:
            pc.addTransceiver(self.mic, direction="sendrecv")
        else:
            pc.addTransceiver("audio", direction="recvonly")
        pc.addTransceiver("video", direction="recvonly")

        @pc.on("track")
        def on_track(track) -> None:
            asyncio.ensure_future(self._drain(track))

        await pc.setLocalDescription(await pc.createOffer())
        req = urllib.request.Request(self.url + "whep", pc.localDescription.sdp.encode(),
                                     {"Content-Type": "application/sdp"}, method="POST")
        resp = await asyncio.get_running_loop().run_in_executor(None, urllib.request.urlopen, req)
        self.session = resp.headers["Location"]
        await pc.setRemoteDescription(RTCSessionDescription(resp.read().decode(), "answer"))
        self.events = asyncio.ensure_future(self._captions())

    async def _captions(self) -> None:
        """The caption stream a session page keeps open for as long as it lives."""
        import aiohttp

        async with aiohttp.ClientSession() as http:
            async with http.get(self.url.rstrip("/") + self.session + "/events") as resp:
                async for _ in resp.content:
                    pass

    async def _drain(self, track) -> None:
        from aiortc.mediastreams import MediaStreamError

        try:
            while True:
                frame = await track.recv()
                now = time.monotonic()
                if track.kind == "video":
                    self.video_times.append(now)
                else:
                    pcm = frame.to_ndarray().astype(np.float32) / 32768
                    if np.sqrt(np.mean(pcm ** 2)) > 0.02:
                        self.loud_at.append(now)
        except MediaStreamError:
            pass

    def ask(self, text: str) -> None:
        body = json.dumps({"text": text}).encode()
        req = urllib.request.Request(self.url.rstrip("/") + self.session + "/ask", body,
                                     {"Content-Type": "application/json"}, method="POST")
        urllib.request.urlopen(req, timeout=30).read()

    async def stop(self) -> None:
        if self.events is not None:
            self.events.cancel()
        req = urllib.request.Request(self.url.rstrip("/") + self.session, method="DELETE")
        try:
            await asyncio.get_running_loop().run_in_executor(None, urllib.request.urlopen, req)
        except Exception:  # noqa: BLE001 - it may have ended already
            pass
        await self.pc.close()

    def fps(self, since: float, until: float) -> float:
        return sum(since <= t < until for t in self.video_times) / (until - since)


def spoken_question(text: str) -> tuple[np.ndarray, float]:
    """Piper's voice at 48 kHz with a second of silence before and after; and the time of
    the last voiced sample (|x| > 2 % of peak) from the start."""
    from talker_stream.speech.audio import resample
    from talker_stream.frames import AudioChunk
    from talker_stream.speech.tts.piper import PiperTTS

    chunks = list(PiperTTS().stream(text))
    pcm = resample(AudioChunk(np.concatenate([c.pcm for c in chunks]), chunks[0].sample_rate), 48000).pcm
    pcm = np.concatenate([np.zeros(48000, np.float32), pcm, np.zeros(48000 * 4, np.float32)])
    voiced = np.nonzero(np.abs(pcm) > 0.02 * np.abs(pcm).max())[0]
    return pcm, (voiced[-1] + 1) / 48000


def mic_track(pcm: np.ndarray):
    """A microphone that plays *pcm* once in real time (20 ms frames), then silence."""
    import av
    from aiortc.mediastreams import MediaStreamTrack

    class Mic(MediaStreamTrack):
        kind = "audio"

        def __init__(self) -> None:
            super().__init__()
            self.sent = 0
            self.t0 = None

        async def recv(self):
            if self.t0 is None:
                self.t0 = time.monotonic()
            due = self.t0 + self.sent / 48000
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            block = pcm[self.sent:self.sent + 960]
            block = np.pad(block, (0, 960 - len(block)))
            frame = av.AudioFrame.from_ndarray((block * 32767).astype(np.int16)[None, :], format="s16", layout="mono")
            frame.sample_rate, frame.pts, frame.time_base = 48000, self.sent, fractions.Fraction(1, 48000)
            self.sent += 960
            return frame

    return Mic()


async def run_count(url: str, n: int, seconds: float, speaking: bool, server_cpu) -> dict:
    peers = [Peer(url) for _ in range(n)]
    for p in peers:
        await p.start()
    await asyncio.sleep(3)  # connected, first frames decoded
    cpu0, mine0, t0 = server_cpu(), time.process_time(), time.monotonic()
    asked = 0
    while time.monotonic() - t0 < seconds:
        if speaking:
            for i, p in enumerate(peers):
                await asyncio.get_running_loop().run_in_executor(None, p.ask, QUESTIONS[(asked + i) % len(QUESTIONS)])
            asked += 1
        await asyncio.sleep(6.0 if speaking else 1.0)
    t1 = time.monotonic()
    cpu1, mine1 = server_cpu(), time.process_time()
    stats = json.load(urllib.request.urlopen(url + "api/sessions"))
    fps = [p.fps(t0, t1) for p in peers]
    for p in peers:
        await p.stop()
    return {"n": n, "speaking": speaking, "fps_median": statistics.median(fps), "fps_worst": min(fps),
            "dropped": sum(e["video_dropped"] for e in stats["each"]),
            "server_cpu": 100 * (cpu1 - cpu0) / (t1 - t0), "peers_cpu": 100 * (mine1 - mine0) / (t1 - t0)}


async def run_latency(url: str, asks: int) -> list[float]:
    pcm, last_voiced = spoken_question("What is the capital of France?")
    out = []
    for _ in range(asks):
        mic = mic_track(pcm)
        peer = Peer(url, mic)
        await peer.start()
        await asyncio.sleep(len(pcm) / 48000 + 8)  # the question, the answer's start
        if mic.t0 is not None:
            end = mic.t0 + last_voiced
            after = [t for t in peer.loud_at if t > end]
            if after:
                out.append((after[0] - end) * 1000)
        await peer.stop()
        await asyncio.sleep(2)
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--counts", type=int, nargs="+", default=[1, 2, 4, 8])
    ap.add_argument("--seconds", type=float, default=30)
    ap.add_argument("--asks", type=int, default=10)
    ap.add_argument("--engines", choices=("local", "remote"), default="local",
                    help="remote: LLM, ear and voice behind `talker-stream engines` on loopback")
    ap.add_argument("--ray", type=float, metavar="CPUS", help="sessions on a local Ray cluster node with CPUS CPUs")
    a = ap.parse_args()
    from talker_stream.server.engines import client_config

    if a.ray and a.engines != "remote":
        ap.error("--ray needs --engines remote (sessions on a cluster reach the engines as services)")
    started: list = []
    cluster = None
    cfg = Path("/tmp/bench-sessions.toml")
    text = (f'[avatar]\nportrait = "{ROOT / "examples/portrait.png"}"\n[serve]\nmax_sessions = {max(a.counts)}\n'
            f'per_address = {max(a.counts)}\n')
    if a.engines == "remote":
        engines, engines_url = start_cli("engines", "--port", "0")
        started.append(engines)
        text = client_config(engines_url) + text
    args = ["-c", str(cfg), "serve", "--port", "0"]
    if a.ray:
        from ray.cluster_utils import Cluster

        cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
        cluster.add_node(num_cpus=a.ray)
        cluster.wait_for_nodes()
        args += ["--ray", cluster.address]
        text += f"session_cpus = {a.ray / max(a.counts)}\n"
    cfg.write_text(text)
    proc, url = start_cli(*args)
    started.append(proc)
    own = time.process_time

    def server_cpu() -> float:  # everything this benchmark started: front door, engines, Ray
        return tree_cpu_seconds() - own()

    load = OtherLoad().start()
    rows = []
    try:
        for n in a.counts:
            for speaking in (False, True):
                rows.append(asyncio.run(run_count(url, n, a.seconds, speaking, server_cpu)))
                print(rows[-1], file=sys.stderr, flush=True)
        latency = asyncio.run(run_latency(url, a.asks)) if a.asks else []
    finally:
        for p in reversed(started):
            p.send_signal(2)
            try:
                p.wait(30)
            except Exception:  # noqa: BLE001 - a benchmark cleans up as it can
                p.kill()
        if cluster is not None:
            cluster.shutdown()
    print(f"front: {'serve --ray (one node, ' + str(a.ray) + ' CPUs)' if a.ray else 'serve'}; engines: {a.engines}")
    other = load.stop()
    print("| sessions | state | received fps (median) | worst session fps | pictures dropped | server CPU % of a core | peers CPU % |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['n']} | {'speaking' if r['speaking'] else 'idle'} | {r['fps_median']:.1f} | {r['fps_worst']:.1f} | "
              f"{r['dropped']} | {r['server_cpu']:.0f} | {r['peers_cpu']:.0f} |")
    if latency:
        print(f"\nspoken question (end of voice) -> first answer sound at the peer: median {statistics.median(latency):.0f} ms, "
              f"worst {max(latency):.0f} ms, {len(latency)} of {a.asks} answered ({', '.join(f'{x:.0f}' for x in latency)})")
    print(other)
    return 0


if __name__ == "__main__":
    sys.exit(main())
