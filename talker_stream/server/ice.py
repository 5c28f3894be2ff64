"""STUN and TURN for `talker-stream serve`: what both ends of a session use to find a path.

The page asks ``GET /ice`` before it makes its peer connection and gets an RTCConfiguration
(``{"iceServers": [...], "iceTransportPolicy": ...}``); the server's own peer connection for
that session is built from the same ``[serve]`` settings. TURN credentials come from the
environment, never from the config file:

* ``$TALKER_TURN_SECRET`` (``[serve] turn_secret_env``): the shared secret of a TURN server
  that implements the TURN REST API (coturn: ``use-auth-secret`` + ``static-auth-secret``).
  Each page and each session gets credentials of its own: username
  ``"<expiry, unix time>:talker-<page|server>-<random>"``, password
  base64(HMAC-SHA1(secret, username)). They can start a relay for ``[serve] turn_ttl``
  seconds; a relay once started lives on (coturn checks the expiry when the allocation is
  made). The secret itself never leaves the server.
* otherwise ``$TALKER_TURN_USERNAME`` / ``$TALKER_TURN_PASSWORD``: one static TURN account,
  handed to every page as it is (prefer the secret where the TURN server supports it).

``[serve] relay_only`` makes both ends gather relay candidates only (iceTransportPolicy
"relay", which aiortc/aioice honour too): all media goes through the TURN server and neither
end learns the other's addresses. Credentials are never logged. (aiortc uses the first STUN
and the first TURN URL of the list; browsers try them all.)
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import os
import secrets
import time

log = logging.getLogger(__name__)


def rest_credentials(secret: str, name: str, ttl: float, now: float | None = None) -> tuple[str, str]:
    """TURN REST API credentials (draft-uberti-behave-turn-rest): ``expiry:name`` and
    base64(HMAC-SHA1(secret, username)), as coturn's ``use-auth-secret`` checks them."""
    expiry = int((time.time() if now is None else now) + ttl)
    username = f"{expiry}:{name}"
    digest = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return username, base64.b64encode(digest).decode()


def turn_credentials(cfg, who: str) -> tuple[str | None, str | None]:
    """(username, credential) for *who* ("page", "server"): short-lived ones from the shared
    secret when ``$turn_secret_env`` is set, else the static account, else none."""
    secret = os.environ.get(cfg.turn_secret_env) if cfg.turn_secret_env else None
    if secret:
        return rest_credentials(secret, f"talker-{who}-{secrets.token_hex(4)}", cfg.turn_ttl)
    user = os.environ.get(cfg.turn_username_env) if cfg.turn_username_env else None
    password = os.environ.get(cfg.turn_password_env) if cfg.turn_password_env else None
    return user or None, password or None


def _servers(cfg, who: str) -> list[dict]:
    """[serve] ice_servers as RTCIceServer dictionaries; one set of TURN credentials for all
    the TURN URLs (they name one TURN service). A browser refuses a TURN URL without
    credentials: the page gets none then (the server's end tries it without)."""
    user = password = None
    if any(url.startswith("turn") for url in cfg.ice_servers):
        user, password = turn_credentials(cfg, who)
    out = []
    for url in cfg.ice_servers:
        if not url.startswith("turn"):
            out.append({"urls": url})
        elif user is not None:
            out.append({"urls": url, "username": user, "credential": password or ""})
        elif who != "page":
            out.append({"urls": url})
    return out


def policy(cfg) -> str:
    return "relay" if cfg.relay_only else "all"


def browser_config(cfg) -> dict:
    """The RTCConfiguration a page passes to ``new RTCPeerConnection(...)`` (fresh credentials)."""
    return {"iceServers": _servers(cfg, "page"), "iceTransportPolicy": policy(cfg)}


def server_config(cfg):
    """The aiortc RTCConfiguration for the server's end of one session."""
    from aiortc import RTCConfiguration, RTCIceServer, RTCIceTransportPolicy

    servers = [RTCIceServer(**s) for s in _servers(cfg, "server")]
    return RTCConfiguration(iceServers=servers, iceTransportPolicy=RTCIceTransportPolicy(policy(cfg)))


def has_relay(sdp: str) -> bool:
    """Whether a description carries a relay candidate (a TURN allocation succeeded)."""
    return " typ relay" in sdp


def check_credentials(cfg) -> None:
    """Before anything loads: relaying only needs TURN credentials in the environment; TURN
    without them is worth a warning (a TURN server without authentication is rare)."""
    if not any(url.startswith("turn") for url in cfg.ice_servers) or turn_credentials(cfg, "check")[0]:
        return
    wanted = f"${cfg.turn_secret_env} (the TURN REST API secret) or ${cfg.turn_username_env} and ${cfg.turn_password_env}"
    if cfg.relay_only:
        from ..errors import ConfigError

        raise ConfigError(f"[serve] relay_only = true needs TURN credentials: set {wanted}")
    log.warning("[serve] ice_servers names a TURN server but no credentials are set (%s): "
                "pages get no TURN server", wanted)


def describe(cfg) -> str:
    """What the log may say about the TURN set-up: where credentials come from, never them."""
    turn = [u for u in cfg.ice_servers if u.startswith("turn")]
    if not cfg.ice_servers:
        return "no STUN/TURN servers (host candidates only)"
    if not turn:
        how = "no TURN"
    elif cfg.turn_secret_env and os.environ.get(cfg.turn_secret_env):
        how = f"TURN with short-lived credentials from ${cfg.turn_secret_env} (valid {cfg.turn_ttl} s)"
    elif cfg.turn_username_env and os.environ.get(cfg.turn_username_env):
        how = f"TURN with the static account in ${cfg.turn_username_env}/${cfg.turn_password_env}"
    else:
        how = (f"TURN without credentials (set ${cfg.turn_secret_env}, or ${cfg.turn_username_env} "
               f"and ${cfg.turn_password_env})")
    return f"ICE servers {', '.join(cfg.ice_servers)}; {how}{'; relay only' if cfg.relay_only else ''}"
