"""Portrait in: any photo a user has, normalised to an RGB array the animator can use."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from ..errors import InputError

log = logging.getLogger(__name__)


def load_portrait(path: str | Path, max_size: int = 1024) -> np.ndarray:
    """Read *path* as RGB uint8, upright, at most *max_size* px on its long side, even-sized.

    EXIF rotation is applied (phones store portraits sideways), CMYK/grey/palette are
    converted, transparency is flattened on white, and dimensions are made even because
    H.264 in yuv420p needs them so.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise InputError(f"portrait not found: {path}")
    try:
        with Image.open(path) as im:
            im.draft("RGB", (max_size, max_size))  # JPEG: decode a huge photo at reduced size
            im = ImageOps.exif_transpose(im)
            im.load()
            if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
                rgba = im.convert("RGBA")
                flat = Image.new("RGB", rgba.size, (255, 255, 255))
                flat.paste(rgba, mask=rgba.getchannel("A"))
                im = flat
            elif im.mode != "RGB":
                im = im.convert("RGB")
            if min(im.size) < 64:
                raise InputError(f"portrait {path} is only {im.width}x{im.height} px; use a photo at least 256 px on each side")
            if max(im.size) > max_size:
                scale = max_size / max(im.size)
                size = (max(2, round(im.width * scale)), max(2, round(im.height * scale)))
                log.warning("portrait %s is %dx%d; downscaled to %dx%d", path.name, *im.size, *size)
                im = im.resize(size, Image.LANCZOS)
            rgb = np.asarray(im, dtype=np.uint8)
    except Image.DecompressionBombError:
        raise InputError(f"portrait {path} is too large to decode safely; resize it below 100 megapixels") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise InputError(f"portrait {path} is not a readable image ({exc}); use a JPEG or PNG photo") from None
    h, w = rgb.shape[:2]
    if h < 64 or w < 64:
        raise InputError(f"portrait {path} is only {w}x{h} px; use a photo at least 256 px on each side")
    return np.ascontiguousarray(rgb[: h - h % 2, : w - w % 2])
