"""Sessions over a real multi-node Ray cluster on this machine.

Real parts: a Ray cluster of a head and two worker nodes (``ray.cluster_utils.Cluster``: a
raylet each, one CPU each), `talker-stream engines` serving SmolLM2, Piper and Whisper, and
`talker-stream serve --ray` as the front door. The visitors are aiortc WHEP peers (Python
WebRTC clients) that decode what they receive. Nothing is faked.
"""
from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

from conftest import PORTRAIT, engines_as_services, need_module, wait_for

pytestmark = pytest.mark.slow
ray_cluster = need_module("ray.cluster_utils", "pip install -e '.[cluster]'")


def start(args: list[str], pattern: str, log) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, "-m", "talker_stream.cli", *args], stdout=subprocess.PIPE,
                            stderr=log, text=True)
    line = proc.stdout.readline()
    match = re.search(pattern, line)
    assert match, f"printed {line!r}"
    return proc, match.group(0)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cluster")
    c = ray_cluster.Cluster(initialize_head=True, head_node_args={"num_cpus": 0})  # the head holds no session
    nodes = [c.add_node(num_cpus=1), c.add_node(num_cpus=1)]
    c.wait_for_nodes()
    engines, url = start(["engines", "--port", "0"], r"http://[\d.]+:\d+/v1", open(folder / "engines.log", "w"))
    cfg = folder / "config.toml"
    cfg.write_text(f"""
[avatar]
portrait = "{PORTRAIT}"
{engines_as_services(url, max_tokens=20)}
[serve]
max_sessions = 3
per_address = 3
session_cpus = 0.5
""")
    front, front_url = start(["-c", str(cfg), "serve", "--ray", c.address, "--port", "0"], r"http://[\d.]+:\d+/",
                             open(folder / "serve.log", "w"))
    try:
        yield c, nodes, front_url
    finally:
        for proc in (front, engines):
            proc.send_signal(2)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        c.shutdown()


class Viewer:
    """A WHEP peer that counts the video frames it decodes."""

    def __init__(self, url: str) -> None:
        self.url, self.frames, self.pc, self.location = url, 0, None, ""

    async def start(self) -> int:
        from aiortc import RTCPeerConnection, RTCSessionDescription

        self.pc = pc = RTCPeerConnection()
        pc.addTransceiver("audio", direction="recvonly")
        pc.addTransceiver("video", direction="recvonly")

        @pc.on("track")
        def on_track(track) -> None:
            async def drain() -> None:
                try:
                    while True:
                        await track.recv()
                        if track.kind == "video":
                            self.frames += 1
                except Exception:  # noqa: BLE001 - the track ended
                    pass
            asyncio.ensure_future(drain())

        await pc.setLocalDescription(await pc.createOffer())
        req = urllib.request.Request(self.url + "whep", pc.localDescription.sdp.encode(),
                                     {"Content-Type": "application/sdp"}, method="POST")
        try:
            resp = await asyncio.get_running_loop().run_in_executor(None, lambda: urllib.request.urlopen(req, timeout=120))
        except urllib.error.HTTPError as exc:
            await pc.close()
            return exc.code
        self.location = resp.headers["Location"]
        await pc.setRemoteDescription(RTCSessionDescription(resp.read().decode(), "answer"))
        return resp.status


def sessions(url: str) -> list[dict]:
    with urllib.request.urlopen(url + "api/sessions", timeout=30) as r:
        return json.load(r)["each"]


def test_sessions_spread_over_nodes_and_a_dead_node_ends_only_its_own(cluster):
    c, nodes, url = cluster

    async def scenario() -> None:
        viewers = [Viewer(url) for _ in range(3)]
        for v in viewers:
            assert await v.start() == 201
        assert await Viewer(url).start() == 503, "the cap holds across the cluster"
        await asyncio.sleep(4)
        assert all(v.frames > 25 for v in viewers), [v.frames for v in viewers]
        each = await asyncio.get_running_loop().run_in_executor(None, sessions, url)
        placed = {s["id"]: s["node"] for s in each}
        assert len(set(placed.values())) == 2, f"sessions on both worker nodes: {placed}"
        # kill the node holding two sessions: its sessions end, the third goes on
        by_node: dict[str, list[str]] = {}
        for sid, node in placed.items():
            by_node.setdefault(node, []).append(sid)
        doomed = max(by_node, key=lambda n: len(by_node[n]))
        victim = next(n for n in nodes if n.node_id.startswith(doomed))
        c.remove_node(victim)
        survivor = next(v for v in viewers if v.location.split("/")[-1][:6] not in by_node[doomed])
        before = survivor.frames
        ok = await asyncio.get_running_loop().run_in_executor(
            None, lambda: wait_for(lambda: len(sessions(url)) == 1, 30, 0.5))
        assert ok, sessions(url)
        await asyncio.sleep(2)
        assert survivor.frames - before > 40, "the session on the live node never noticed"
        # a new visitor (a page reconnecting) lands on the live node
        again = Viewer(url)
        assert await again.start() == 201
        each = await asyncio.get_running_loop().run_in_executor(None, sessions, url)
        assert {s["node"] for s in each} == set(by_node) - {doomed}, each
        for v in [*viewers, again]:
            await v.pc.close()

    t0 = time.monotonic()
    asyncio.run(scenario())
    assert time.monotonic() - t0 < 240
