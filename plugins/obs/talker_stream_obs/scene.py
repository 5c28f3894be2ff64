"""What the sink builds inside OBS: one scene with the avatar feed and a caption.

`ensure_scene` asks OBS what exists and only creates what is missing, so one function
serves the first connect, a reconnect after OBS restarted (with or without its saved
scene collection) and a user who deleted a source by hand. Asking first also matters
because obsws-python logs a full traceback for every request that fails.
"""
from __future__ import annotations

import re
from typing import Any

AVATAR = "talker avatar"
CAPTION = "talker caption"
FONT = "DejaVu Sans"
ALIGN_TOP_LEFT = 5  # OBS_ALIGN_TOP | OBS_ALIGN_LEFT
ALIGN_BOTTOM = 8  # OBS_ALIGN_BOTTOM, centred horizontally
TEXT_KINDS = ("text_ft2_source_v2", "text_gdiplus_v3", "text_gdiplus_v2")  # Linux/macOS, then Windows


def caption_text(caption: str, question: str) -> str:
    """The caption as shown: who asked what (if anyone did), then the answer being spoken."""
    lines = []
    if question.strip():
        q = " ".join(question.split())
        named = re.match(r"([^\s:]{1,40})\s*:\s*(.+)", q)
        if " asks:" in q or not named:
            lines.append(q if " asks:" in q else f"Asked: {q}")
        else:
            lines.append(f"{named.group(1)} asks: {named.group(2)}")
    if caption.strip():
        lines.append(caption.strip())
    return "\n".join(lines)


def feed_settings(url: str) -> dict[str, Any]:
    """An OBS media source that listens for our MPEG-TS and restarts whenever shown.

    buffering_mb 0 makes OBS open the stream with ffmpeg's NOBUFFER flag: it then plays
    about 0.3 s behind us instead of about 1 s (see the sink module for the numbers).
    """
    return {"is_local_file": False, "input": url, "input_format": "mpegts", "restart_on_activate": True,
            "buffering_mb": 0, "reconnect_delay_sec": 1, "clear_on_media_end": False, "hw_decode": False,
            "close_when_inactive": False}


def caption_settings(text: str, width: int, height: int) -> dict[str, Any]:
    size = max(12, height // 20)
    return {"text": text, "font": {"face": FONT, "size": size, "style": "Regular", "flags": 0},
            "outline": True, "drop_shadow": True, "word_wrap": True, "custom_width": max(64, width - 2 * size),
            "color1": 0xFFFFFFFF, "color2": 0xFFFFFFFF}


def ensure_scene(client: Any, scene: str, feed_url: str, caption: str | None) -> str:
    """Create or update the scene, its two inputs and their layout; make it the program scene.

    *caption* None leaves the caption out (and hides one left from an earlier run). Returns
    the OBS version, for the log line.
    """
    def req(kind: str, data: dict | None = None) -> dict:
        return client.send(kind, data, raw=True) or {}

    version = req("GetVersion").get("obsVersion", "?")
    if scene not in {s["sceneName"] for s in req("GetSceneList")["scenes"]}:
        req("CreateScene", {"sceneName": scene})
    video = req("GetVideoSettings")
    w, h = int(video["baseWidth"]), int(video["baseHeight"])
    inputs = {i["inputName"]: i["inputKind"] for i in req("GetInputList")["inputs"]}
    items = {i["sourceName"]: i["sceneItemId"] for i in req("GetSceneItemList", {"sceneName": scene})["sceneItems"]}
    fit = {"positionX": 0.0, "positionY": 0.0, "alignment": ALIGN_TOP_LEFT, "boundsType": "OBS_BOUNDS_SCALE_INNER",
           "boundsWidth": float(w), "boundsHeight": float(h), "boundsAlignment": 0}
    wanted = [(AVATAR, ("ffmpeg_source",), feed_settings(feed_url), fit)]
    if caption is not None:
        bottom = {"positionX": w / 2, "positionY": h - max(4, h // 40), "alignment": ALIGN_BOTTOM,
                  "boundsType": "OBS_BOUNDS_NONE"}
        wanted.append((CAPTION, TEXT_KINDS, caption_settings(caption, w, h), bottom))
    elif CAPTION in items:
        req("SetSceneItemEnabled", {"sceneName": scene, "sceneItemId": items[CAPTION], "sceneItemEnabled": False})
    available: set[str] | None = None
    for name, kinds, settings, transform in wanted:
        if name in inputs and inputs[name] not in kinds:  # same name, wrong kind: replace it
            req("RemoveInput", {"inputName": name})
            inputs.pop(name)
            items.pop(name, None)
        if name not in inputs:
            if len(kinds) > 1:
                if available is None:
                    available = set(req("GetInputKindList", {"unversioned": False})["inputKinds"])
                kinds = tuple(k for k in kinds if k in available) or kinds
            item = req("CreateInput", {"sceneName": scene, "inputName": name, "inputKind": kinds[0],
                                       "inputSettings": settings, "sceneItemEnabled": True})["sceneItemId"]
        else:
            req("SetInputSettings", {"inputName": name, "inputSettings": settings, "overlay": True})
            item = items.get(name)
            if item is None:
                item = req("CreateSceneItem", {"sceneName": scene, "sourceName": name})["sceneItemId"]
            req("SetSceneItemEnabled", {"sceneName": scene, "sceneItemId": item, "sceneItemEnabled": True})
        req("SetSceneItemTransform", {"sceneName": scene, "sceneItemId": item, "sceneItemTransform": transform})
        if name == AVATAR:  # the picture at the bottom, whatever order the items were restored in
            req("SetSceneItemIndex", {"sceneName": scene, "sceneItemId": item, "sceneItemIndex": 0})
    req("SetCurrentProgramScene", {"sceneName": scene})
    return version


def set_caption(client: Any, text: str) -> None:
    client.send("SetInputSettings", {"inputName": CAPTION, "inputSettings": {"text": text}, "overlay": True}, raw=True)
