"""Picture input and output exactly as diffusers prepares it (see ../shared/DIFFUSERS-PARITY.md)."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from edge_cer.errors import EdgeCerError
from edge_cer.picture_file import MAX_PICTURE_PIXELS, open_picture

# OpenAI CLIP's pixel normalisation (CLIPImageProcessor's defaults), used by every SD-family IP-Adapter encoder.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def load_image(path: str | Path) -> Image.Image:
    """`diffusers.utils.load_image`: EXIF orientation applied, then `convert("RGB")` (an RGBA picture keeps the
    colour hidden under transparent pixels; it is not composited on white)."""
    try:
        with open_picture(path) as im:
            im.load()
            return ImageOps.exif_transpose(im).convert("RGB")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise EdgeCerError(f"{path}: not a readable picture ({exc}); re-export it as PNG or JPEG") from exc


def decode_image(data: bytes, name: str) -> Image.Image:
    """`load_image` of a picture sent as bytes (to `edge-cer serve`), under the same pixel limit; `name` for errors."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            if im.width * im.height > MAX_PICTURE_PIXELS:
                raise EdgeCerError(f"{name}: {im.width} x {im.height} pixels, over the "
                                   f"{MAX_PICTURE_PIXELS / 1e6:.0f}-megapixel limit; resize it")
            im.load()
            return ImageOps.exif_transpose(im).convert("RGB")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise EdgeCerError(f"{name}: not a readable picture ({exc}); re-export it as PNG or JPEG") from exc


def rgb(image: Image.Image) -> Image.Image:
    """Any PIL mode (greyscale, RGBA, palette) as RGB, as `load_image` gives it; RGB is returned as is."""
    return image if image.mode == "RGB" else image.convert("RGB")


def init_image(image: Image.Image, height: int, width: int) -> np.ndarray:
    """img2img input: stretched to W x H with Lanczos, scaled to [-1, 1], shaped (1, 3, H, W)."""
    if image.size != (width, height):
        image = image.resize((width, height), resample=Image.LANCZOS)
    x = np.asarray(image, dtype=np.float32) / 255.0
    return (x * 2.0 - 1.0).transpose(2, 0, 1)[None].copy()


def clip_pixels(image: Image.Image, size: int, mean, std) -> np.ndarray:
    """CLIPImageProcessor's PIL path: shortest side to `size` (bicubic), centre crop, /255, CLIP normalisation."""
    w, h = image.size
    short, long = (w, h) if w <= h else (h, w)
    new_long = int(size * long / short)
    new_w, new_h = (size, new_long) if w <= h else (new_long, size)
    if (new_w, new_h) != (w, h):
        image = image.resize((new_w, new_h), resample=Image.BICUBIC)
    top, left = (new_h - size) // 2, (new_w - size) // 2
    x = np.asarray(image, dtype=np.float32)[top : top + size, left : left + size] / 255.0
    x = (x - np.asarray(mean, dtype=np.float32)) / np.asarray(std, dtype=np.float32)
    return x.transpose(2, 0, 1)[None].astype(np.float32)


def to_uint8(image: np.ndarray) -> np.ndarray:
    """[0, 1] float (H, W, 3) -> uint8 as diffusers' `numpy_to_pil` rounds it."""
    return (image * 255).round().astype(np.uint8)


def png_bytes(image: np.ndarray) -> bytes:
    """The one PNG encoding of a generated picture: a session's file and `edge-cer generate --out` are identical."""
    buffer = io.BytesIO()
    Image.fromarray(to_uint8(image)).save(buffer, format="PNG")
    return buffer.getvalue()


def save_png(image: np.ndarray, path: str | Path) -> None:
    """Write atomically: a crash never leaves a truncated picture under the final name."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        f.write(png_bytes(image))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
