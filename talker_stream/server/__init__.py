"""The local HTTP API and preview page (docs/api.md).

Served on 127.0.0.1 by default. Reading (the page, the preview, stats) is open to the
local machine; acting (say, interrupt) needs the token as ``Authorization: Bearer ...``.
Browsers cannot send that header cross-site without a CORS preflight, which this server
never grants, so another web page cannot make the avatar talk.
"""
from __future__ import annotations

import hmac
import ipaddress
import json
import logging
import queue
import secrets
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib.resources import files

from ..errors import TalkerError
from ..frames import Interrupt

log = logging.getLogger(__name__)

MAX_BODY = 64 * 1024
MAX_SAY_CHARS = 10_000
DRAIN_LIMIT = 1024 * 1024  # an oversized body up to this is read and thrown away, so the client sees our answer


def _is_loopback(name: str) -> bool:
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


class ControlServer:
    """The HTTP server on its own thread; ``start()``/``stop()``, ``url`` and ``token`` for the CLI."""

    def __init__(self, avatar, preview=None, host: str = "127.0.0.1", port: int = 8765, token: str | None = None):
        self.avatar = avatar
        self.preview = preview
        self.token = token or secrets.token_urlsafe(18)
        self.loopback_only = _is_loopback(host)  # then only loopback names are accepted in Host
        handler = type("Handler", (_Handler,), {"server_ref": self})
        try:
            self.httpd = ThreadingHTTPServer((host, port), handler)
        except OSError as exc:
            raise TalkerError(f"cannot serve the control page on {host}:{port}: {exc}; set [server] port") from None
        self.httpd.daemon_threads = True
        self.host, self.port = self.httpd.server_address[:2]
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="http", daemon=True)
        self._closing = threading.Event()
        self._whep = None  # WHEP viewers: the operator hears the avatar too
        self._whep_lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/"

    def start(self) -> "ControlServer":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._closing.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        if self._whep is not None:
            self._whep.stop()

    def whep(self):
        """The WebRTC bridge, started with the first viewer (aiortc loads only then)."""
        with self._whep_lock:
            if self._whep is None:
                from .whep import WhepBridge

                self._whep = WhepBridge(self.avatar)
            return self._whep


class _Handler(BaseHTTPRequestHandler):
    server_ref: ControlServer
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt: str, *args) -> None:  # requests go to debug, never the token
        log.debug("%s %s", self.address_string(), fmt % args)

    # -- helpers ---------------------------------------------------------------------------
    def _send(self, status: int, body: bytes, ctype: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: int, data: dict) -> None:
        self._send(status, json.dumps(data).encode(), "application/json")

    def _reject(self, status: int, error: str) -> None:
        """Answer early, before the body was read: drop the body (bounded) and close the connection.

        Closing a socket with unread data makes the kernel send a reset, and the client
        may then lose our answer; an unread body on a kept-alive connection would be
        parsed as the next request.
        """
        self.close_connection = True
        try:
            left = min(int(self.headers.get("Content-Length", "0")), DRAIN_LIMIT)
        except ValueError:
            left = 0
        try:
            self.connection.settimeout(2.0)
            while left > 0:
                chunk = self.rfile.read(min(left, 65536))
                if not chunk:
                    break
                left -= len(chunk)
        except OSError:
            pass
        self._json(status, {"error": error})

    def _host_ok(self) -> bool:
        """Refuse a foreign Host name when bound to loopback: a DNS-rebinding page cannot read us."""
        srv = self.server_ref
        host = self.headers.get("Host")
        if host is None or not srv.loopback_only:
            return True
        name = host if host.endswith("]") else host.rsplit(":", 1)[0]
        if _is_loopback(name.strip("[]").lower()):
            return True
        self._reject(HTTPStatus.FORBIDDEN, "unexpected Host header; open the page as http://127.0.0.1:PORT/")
        return False

    def _authorised(self) -> bool:
        given = self.headers.get("Authorization", "")
        expected = f"Bearer {self.server_ref.token}"
        if hmac.compare_digest(given.encode(), expected.encode()):
            return True
        self._reject(HTTPStatus.UNAUTHORIZED, "missing or wrong token (Authorization: Bearer TOKEN)")
        return False

    def _body(self) -> dict | None:
        if "Transfer-Encoding" in self.headers:
            self._reject(HTTPStatus.LENGTH_REQUIRED, "send the body with a Content-Length")
            return None
        try:
            length = int(self.headers.get("Content-Length", "0"))
        except ValueError:
            length = -1
        if length < 0:
            self._reject(HTTPStatus.BAD_REQUEST, "bad Content-Length")
            return None
        if length > MAX_BODY:
            self._reject(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"body must be at most {MAX_BODY} bytes")
            return None
        raw = self.rfile.read(length) if length else b"{}"
        try:
            data = json.loads(raw or b"{}")
        except (json.JSONDecodeError, UnicodeDecodeError):
            self._json(HTTPStatus.BAD_REQUEST, {"error": "body must be JSON"})
            return None
        if not isinstance(data, dict):
            self._json(HTTPStatus.BAD_REQUEST, {"error": "body must be a JSON object"})
            return None
        return data

    # -- routes ----------------------------------------------------------------------------
    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        path = self.path.split("?", 1)[0]
        srv = self.server_ref
        if not self._host_ok():
            return
        if path == "/":
            page = files("talker_stream.server").joinpath("page.html").read_bytes()
            self._send(HTTPStatus.OK, page, "text/html; charset=utf-8")
        elif path == "/api/stats":
            self._json(HTTPStatus.OK, srv.avatar.stats())
        elif path == "/ice":  # the preview's STUN/TURN servers ([serve]), readable like the preview
            from .ice import browser_config

            self._json(HTTPStatus.OK, browser_config(srv.avatar.settings.serve))  # sent with no-store
        elif path == "/preview.jpg" and srv.preview is not None:
            _, jpeg = srv.preview.latest(after=0, timeout=2.0)  # sequence 0: nothing yet
            if jpeg is None:
                self._json(HTTPStatus.SERVICE_UNAVAILABLE, {"error": "no frame yet"})
            else:
                self._send(HTTPStatus.OK, jpeg, "image/jpeg")
        elif path == "/preview.mjpg" and srv.preview is not None:
            self._mjpeg()
        else:
            self._json(HTTPStatus.NOT_FOUND, {"error": f"no such page: {path}"})

    def do_DELETE(self) -> None:  # noqa: N802
        path = self.path.split("?", 1)[0]
        if not self._host_ok():
            return
        if path.startswith("/whep/"):
            self._end_viewer(path)
        else:
            self._reject(HTTPStatus.NOT_FOUND, f"no such endpoint: {path}")

    def _end_viewer(self, path: str) -> None:
        vid = path.split("/")[2]
        bridge = self.server_ref._whep
        if bridge is not None and bridge.end(vid):
            self._json(HTTPStatus.OK, {"ended": vid})
        else:
            self._json(HTTPStatus.NOT_FOUND, {"error": "no such viewer"})

    def _whep_offer(self) -> None:
        """A viewer's SDP offer (WHEP): 201 with the answer and the viewer's URL. Watching
        is reading, like the preview: open to this machine, no token."""
        if self.headers.get("Content-Type", "").split(";")[0].strip() != "application/sdp":
            self._reject(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, "send the SDP offer as application/sdp")
            return
        try:
            length = int(self.headers.get("Content-Length", "-1"))
        except ValueError:
            length = -1
        if not 0 < length <= MAX_BODY:
            self._reject(HTTPStatus.BAD_REQUEST, f"send the offer with a Content-Length of at most {MAX_BODY}")
            return
        sdp = self.rfile.read(length).decode("utf-8", "replace")
        status, body, location = self.server_ref.whep().offer(sdp)
        self.send_response(status)
        self.send_header("Content-Type", "application/sdp" if status == 201 else "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body.encode())))
        if location:
            self.send_header("Location", location)
        if status == 503:
            self.send_header("Retry-After", "30")
        self.end_headers()
        self.wfile.write(body.encode())

    def do_POST(self) -> None:  # noqa: N802
        path = self.path.split("?", 1)[0]
        if not self._host_ok():
            return
        if path == "/whep":
            self._whep_offer()
            return
        if path.startswith("/whep/") and path.endswith("/close"):  # a closing page's beacon
            self._end_viewer(path)
            return
        if path not in ("/api/say", "/api/interrupt"):
            self._reject(HTTPStatus.NOT_FOUND, f"no such endpoint: {path}")
            return
        if not self._authorised():
            return
        body = self._body()
        if body is None:
            return
        avatar = self.server_ref.avatar
        if path == "/api/interrupt":
            spoken = avatar.interrupt(Interrupt("operator", "http"))
            self._json(HTTPStatus.OK, {"interrupted": spoken.utterance, "spoken": spoken.text})
            return
        text = body.get("text")
        if not isinstance(text, str) or not text.strip():
            self._json(HTTPStatus.BAD_REQUEST, {"error": "give the text to say: {\"text\": \"...\"}"})
            return
        if len(text) > MAX_SAY_CHARS:
            self._json(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, {"error": f"text is over {MAX_SAY_CHARS} characters"})
            return
        question = body.get("question", "")
        try:
            utterance = avatar.say(text, question if isinstance(question, str) else "")
        except queue.Full:
            self._json(HTTPStatus.TOO_MANY_REQUESTS, {"error": "the avatar's queue is full; try again shortly"})
            return
        self._json(HTTPStatus.ACCEPTED, {"utterance": utterance})

    def _mjpeg(self) -> None:
        preview = self.server_ref.preview
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
        self.send_header("Cache-Control", "no-store")
        self.send_header("Connection", "close")
        self.end_headers()
        seq = -1
        try:
            while not self.server_ref._closing.is_set():
                newest, jpeg = preview.latest(after=seq, timeout=2.0)
                if jpeg is None or newest == seq:  # nothing new (avatar stopped?): send nothing
                    continue
                seq = newest
                self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: "
                                 + str(len(jpeg)).encode() + b"\r\n\r\n" + jpeg + b"\r\n")
                self.wfile.flush()
        except OSError:  # the viewer went away
            pass
        self.close_connection = True
