"""WHEP on the live control page: the operator watches *and hears* the avatar over WebRTC.

The control server is a plain threaded HTTP server; WebRTC needs an event loop. This bridge
runs one asyncio loop on a thread of its own: each viewer's offer becomes a peer connection
whose tracks come from a WebRTCSink attached to the running avatar, and detached again when
the viewer leaves (DELETE, the closing page's beacon, or ICE failing). MJPEG stays for
clients that want a plain picture stream (OBS's media source).
"""
from __future__ import annotations

import asyncio
import logging
import secrets
import threading

log = logging.getLogger(__name__)

MAX_VIEWERS = 8


class WhepBridge:
    def __init__(self, avatar, max_viewers: int = MAX_VIEWERS) -> None:
        self.avatar = avatar
        self.max_viewers = max_viewers
        self.loop = asyncio.new_event_loop()
        self._viewers: dict[str, tuple] = {}  # id -> (peer connection, sink)
        self._thread = threading.Thread(target=self.loop.run_forever, name="whep", daemon=True)
        self._thread.start()

    def offer(self, sdp: str, timeout: float = 15.0) -> tuple[int, str, str]:
        """(HTTP status, body, session path) for a viewer's SDP offer."""
        from .webapp import _check_offer

        problem = _check_offer(sdp)
        if problem:
            return 400, f"bad SDP offer: {problem}", ""
        if len(self._viewers) >= self.max_viewers:
            return 503, f"busy: {self.max_viewers} viewers already watch", ""
        future = asyncio.run_coroutine_threadsafe(self._answer(sdp), self.loop)
        try:
            vid, answer = future.result(timeout)
        except Exception as exc:  # noqa: BLE001 - the viewer gets the reason
            return 400, f"could not answer the offer: {exc}", ""
        return 201, answer, f"/whep/{vid}"

    async def _answer(self, sdp: str) -> tuple[str, str]:
        from aiortc import RTCPeerConnection, RTCSessionDescription

        from ..outputs.webrtc import WebRTCSink
        from .ice import server_config

        vid = secrets.token_urlsafe(9)
        pc = RTCPeerConnection(server_config(self.avatar.settings.serve))
        sink = WebRTCSink(self.loop)

        @pc.on("connectionstatechange")
        async def on_state() -> None:
            if pc.connectionState in ("failed", "closed"):
                await self._close(vid)

        await pc.setRemoteDescription(RTCSessionDescription(sdp, "offer"))
        kinds = {t.kind for t in pc.getTransceivers()}
        if "video" in kinds:
            pc.addTrack(sink.video)
        if "audio" in kinds:
            pc.addTrack(sink.audio)
        await pc.setLocalDescription(await pc.createAnswer())
        self.avatar.attach(sink)
        self._viewers[vid] = (pc, sink)
        return vid, pc.localDescription.sdp

    def end(self, vid: str) -> bool:
        if vid not in self._viewers:
            return False
        asyncio.run_coroutine_threadsafe(self._close(vid), self.loop).result(10)
        return True

    async def _close(self, vid: str) -> None:
        viewer = self._viewers.pop(vid, None)
        if viewer is None:
            return
        pc, sink = viewer
        await asyncio.get_running_loop().run_in_executor(None, self.avatar.detach, sink)
        await pc.close()

    @property
    def viewers(self) -> int:
        return len(self._viewers)

    def stop(self) -> None:
        for vid in list(self._viewers):
            try:
                self.end(vid)
            except Exception:  # noqa: BLE001 - stopping anyway
                pass
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)
