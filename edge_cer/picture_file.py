"""Opening a user's picture file without letting a bad one cost time or memory (numpy-free: the session checks
every stimulus at start with it)."""

from __future__ import annotations

from pathlib import Path

from PIL import Image, UnidentifiedImageError

from edge_cer.errors import EdgeCerError

# A 12000 x 12000 picture took 15 s and 1.5 GB to load and resize for a 512-pixel model; a stimulus never needs it.
MAX_PICTURE_PIXELS = 40_000_000  # e.g. 8000 x 5000


def open_picture(path: str | Path) -> Image.Image:
    """A picture opened (header read, pixels not yet decoded) after the checks that keep a bad file from costing
    time or memory: exists, not a folder, not empty, not over MAX_PICTURE_PIXELS (a decompression bomb)."""
    path = Path(path)
    if path.is_dir():
        raise EdgeCerError(f"{path}: is a folder; give a picture file (PNG or JPEG)")
    if not path.is_file():
        raise EdgeCerError(f"{path}: no such picture; check the path")
    if path.stat().st_size == 0:
        raise EdgeCerError(f"{path}: empty file (0 bytes); re-copy the picture")
    try:
        im = Image.open(path)
    except Image.DecompressionBombError as exc:
        raise EdgeCerError(f"{path}: over the {MAX_PICTURE_PIXELS / 1e6:.0f}-megapixel limit ({exc}); "
                           "resize it, e.g. to 1024 pixels on the long side") from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise EdgeCerError(f"{path}: not a readable picture ({exc}); re-export it as PNG or JPEG") from exc
    width, height = im.size
    if width * height > MAX_PICTURE_PIXELS:
        im.close()
        raise EdgeCerError(f"{path}: {width} x {height} pixels, over the {MAX_PICTURE_PIXELS / 1e6:.0f}-megapixel "
                           "limit; resize it, e.g. to 1024 pixels on the long side")
    return im
