"""Contact sheets of the mesh animator's mouth: every viseme x a few emotions, per face.

For each face, every viseme group of ``talker_stream.face.visemes`` (plus rest) is said in
context, between two "a" vowels at a loudness typical of its kind, and the frame in its
middle is rendered through ``MeshAnimator`` with the emotion's expression and head pose
(``EMOTION_FACES``). Each cell shows the mouth twice: at 1:1 (the portrait's own pixels)
and as a viewer sees it in a 1280x720 stream (the frame scaled, bilinear as OBS does, so
that the portrait fills the canvas height). One PNG per face goes to docs/, plus
docs/still.png (the README's picture: four whole frames of the sample portrait).

Faces: the sample portrait; portraits shipped inside installed packages (Debian's
``opencv-doc`` has one: ``apt-get install opencv-doc``); and variants of those photos,
mirrored, relit and rescaled, so that there are always at least three faces.

Usage:  .venv/bin/python bench/contact_sheet.py [--out docs] [--faces PATH ...] [--no-still]
"""
from __future__ import annotations

import os

os.environ.setdefault("GLOG_minloglevel", "2")

import argparse  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from talker_stream.face.animator import MeshAnimator  # noqa: E402
from talker_stream.face.expression import EMOTION_FACES  # noqa: E402
from talker_stream.face.params import FaceParams  # noqa: E402
from talker_stream.face.visemes import VISEME_GROUPS, in_context  # noqa: E402
from talker_stream.face.portrait import load_portrait  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "examples" / "portrait.png"
# portraits that installed packages ship (checked in this order; missing ones are skipped)
PACKAGED = [
    ("opencv-doc", Path("/usr/share/doc/opencv-doc/opencv4/html/face_swapped.jpg")),
]
EMOTIONS = ["neutral", "happy", "sad", "surprised"]
# a readable name for each viseme group (ARPAbet-like), in VISEME_GROUPS order
NAMES = {"pbm": "M B P", "fv": "F V", "θð": "TH", "aɑæɐʌ": "AA", "ɛeɜ": "EH", "ɪiɨᵻj": "IY",
         "ɔɒoɵ": "AO", "uʊʉ": "UW", "əɚ": "AX", "wʍ": "W", "rɹɾɻ": "R", "lɫ": "L", "szç": "S",
         "ʃʒ": "SH", "tdnɗ": "T D N", "kgɡŋxq": "K G", "hɦ": "H"}
STREAM_H = 720
BG = (24, 24, 28)
FG = (235, 235, 235)
DIM = (150, 150, 160)


def relit(rgb: np.ndarray, warm: bool, side: float) -> np.ndarray:
    """The photo under other light: a colour cast and a soft gradient from one side."""
    h, w = rgb.shape[:2]
    x = np.linspace(-1.0, 1.0, w)[None, :, None]
    ramp = 0.82 + 0.22 * side * x
    cast = np.array([1.06, 0.98, 0.86]) if warm else np.array([0.9, 0.97, 1.08])
    return np.clip(rgb.astype(np.float32) * ramp * cast, 0, 255).astype(np.uint8)


def rescaled(rgb: np.ndarray, k: float) -> np.ndarray:
    h, w = rgb.shape[:2]
    size = (int(round(w * k / 2)) * 2, int(round(h * k / 2)) * 2)
    return np.asarray(Image.fromarray(rgb).resize(size, Image.LANCZOS))


def faces(extra: list[str]) -> list[tuple[str, str, np.ndarray]]:
    """(file stem, caption, RGB) for every face on the sheets."""
    sample = load_portrait(SAMPLE)
    out = [("sample", f"sample portrait ({SAMPLE.relative_to(ROOT)})", sample)]
    found = []
    for package, path in PACKAGED:
        if path.is_file():
            found.append((f"{package}-{path.stem}".replace("_", "-"), f"{path.name} from the {package} package",
                          load_portrait(path)))
    for p in extra:
        found.append((Path(p).stem, Path(p).name, load_portrait(p)))
    out += found
    out.append(("sample-variant", "the sample mirrored, relit (warm, from the left) and rescaled 1.5x",
                relit(rescaled(sample[:, ::-1], 1.5), warm=True, side=-1.0)))
    if found:
        stem, caption, rgb = found[0]
        out.append((f"{stem}-variant", f"{caption}: mirrored, relit (cool, from the right), rescaled 0.75x",
                    relit(rescaled(rgb[:, ::-1], 0.75), warm=False, side=1.0)))
    else:
        out.append(("sample-small", "the sample relit (cool, from the right) and rescaled 0.75x",
                    relit(rescaled(sample, 0.75), warm=False, side=1.0)))
    return out


def params_for(emotion: str, group: str | None) -> FaceParams:
    p = FaceParams(**EMOTION_FACES[emotion])
    if group is not None:
        jaw, wide, rnd, tongue = in_context(group[0])
        p.jaw_open += jaw
        p.mouth_wide += wide
        p.mouth_round += rnd
        p.tongue += tongue
    return p


def text(img: np.ndarray, s: str, org: tuple[int, int], scale: float = 0.42, colour=FG, thick: int = 1) -> None:
    cv2.putText(img, s, org, cv2.FONT_HERSHEY_SIMPLEX, scale, colour, thick, cv2.LINE_AA)


def sheet(animator: MeshAnimator, caption: str, rgb: np.ndarray) -> tuple[np.ndarray, dict]:
    t0 = time.perf_counter()
    avatar = animator.prepare(rgb, source=caption)
    prep_ms = (time.perf_counter() - t0) * 1e3
    mouth = avatar.mouth
    mw = avatar.rig.mouth_width
    h, w = rgb.shape[:2]
    k = STREAM_H / h
    centre = avatar.rig.rest[[13, 14]].mean(axis=0) + np.array([0.0, 0.12 * mw])
    half_w, half_h = 0.85 * mw, 0.62 * mw
    bx0, by0 = int(round(centre[0] - half_w)), int(round(centre[1] - half_h))
    bw, bh = int(round(2 * half_w)), int(round(2 * half_h))
    sw, sh = int(round(bw * k)), int(round(bh * k))
    groups = [None] + list(VISEME_GROUPS)
    cell_w = max(sw, bw) + 8
    label_w = 96
    header_h = 64
    row_h = bh + sh + 26
    W = label_w + cell_w * len(groups) + 8
    H = header_h + 18 + row_h * len(EMOTIONS) + 8
    out = np.full((H, W, 3), BG, np.uint8)
    source = "the photo's own teeth (upper row)" if mouth.photo_teeth is not None else "the shaded model"
    text(out, caption, (10, 22), 0.6, FG, 1)
    text(out, f"{w}x{h} px, face {avatar.face.width:.0f} px wide, mouth {mw:.0f} px; teeth: {source}; "
              f"each cell: 1:1 (top) and as in a 1280x720 stream ({k:.2f}x, bottom)", (10, 46), 0.45, DIM)
    for j, g in enumerate(groups):
        x = label_w + j * cell_w
        text(out, "rest" if g is None else NAMES.get(g, g), (x + 4, header_h + 10), 0.45, FG)
    frame = rgb.copy()
    for i, emo in enumerate(EMOTIONS):
        y = header_h + 18 + i * row_h
        text(out, emo, (8, y + bh // 2 + 4), 0.5, FG)
        text(out, "1:1", (8, y + bh // 2 + 22), 0.4, DIM)
        text(out, "stream", (8, y + bh + sh // 2 + 4), 0.4, DIM)
        for j, g in enumerate(groups):
            animator.render(avatar, params_for(emo, g), out=frame)
            x = label_w + j * cell_w
            native = frame[max(by0, 0) : by0 + bh, max(bx0, 0) : bx0 + bw]
            out[y : y + native.shape[0], x : x + native.shape[1]] = native
            big = cv2.resize(frame, (int(round(w * k)), STREAM_H), interpolation=cv2.INTER_LINEAR)
            sx0, sy0 = int(round(bx0 * k)), int(round(by0 * k))
            crop = big[max(sy0, 0) : sy0 + sh, max(sx0, 0) : sx0 + sw]
            out[y + bh + 4 : y + bh + 4 + crop.shape[0], x : x + crop.shape[1]] = crop
    info = {"prepare_ms": prep_ms, "teeth": source, "mouth_px": mw, "size": f"{w}x{h}", "scale": k}
    return out, info


def still(animator: MeshAnimator, path: Path) -> None:
    """The README's picture: four whole frames of the sample portrait, 320 px each."""
    rgb = load_portrait(SAMPLE)
    avatar = animator.prepare(rgb)
    frames = []
    shots = [("neutral", None, {}), ("happy", "aɑæɐʌ", {}), ("neutral", "uʊʉ", {"blink_l": 1.0, "blink_r": 1.0}),
             ("questioning", "ɪiɨᵻj", {})]
    for emo, g, extra in shots:
        p = params_for(emo, g)
        for n, v in extra.items():
            setattr(p, n, v)
        f = animator.render(avatar, p)
        frames.append(np.asarray(Image.fromarray(f).resize((320, 320), Image.LANCZOS)))
    Image.fromarray(np.hstack(frames)).save(path, optimize=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=str(ROOT / "docs"), help="folder for the PNGs (default: docs/)")
    ap.add_argument("--faces", nargs="*", default=[], help="more portraits to include")
    ap.add_argument("--no-still", action="store_true", help="do not rewrite docs/still.png")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    animator = MeshAnimator()
    for stem, caption, rgb in faces(args.faces):
        img, info = sheet(animator, caption, rgb)
        path = out / f"mouth-{stem}.png"
        Image.fromarray(img).save(path, optimize=True)
        print(f"{path}: {caption}; {info['size']}, mouth {info['mouth_px']:.0f} px, teeth from {info['teeth']}, "
              f"stream scale {info['scale']:.2f}x, prepare {info['prepare_ms']:.0f} ms")
    if not args.no_still:
        still(animator, out / "still.png")
        print(f"{out / 'still.png'}: rest, 'ah' (happy), 'oo' mid-blink, 'ee' asking a question")
    animator.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
