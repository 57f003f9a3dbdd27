"""A stimulus or feedback picture in a fixed box, the same size on screen for every picture.

textual-image draws it with the best the terminal offers (Kitty graphics, Sixel, half-cell blocks); `mode` can
force one. Pictures are letterboxed to the box's pixel aspect, so none is stretched and all fill the same box.
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image as PILImage
from PIL import ImageOps
from textual.reactive import var
from textual.widget import Widget
from textual_image import renderable
from textual_image._terminal import get_cell_size
from textual_image.widget import HalfcellImage, Image, SixelImage, TGPImage, UnicodeImage

MODES = {"auto": Image, "tgp": TGPImage, "sixel": SixelImage, "halfcell": HalfcellImage, "unicode": UnicodeImage}
LETTERBOX = (30, 34, 40)  # the theme's background, so the bars vanish


def mode_name(mode: str) -> str:
    """The drawing method behind a mode ("auto" resolves to what textual-image detected at import)."""
    return renderable.Image.__module__.rsplit(".", 1)[-1] if mode == "auto" else mode


class PictureView(Widget):
    picture: var[Path | None] = var(None, always_update=True)

    def __init__(self, mode: str = "auto", **kwargs):
        super().__init__(**kwargs)
        self.mode = mode_name(mode)
        self._image_class = MODES[mode]

    def compose(self):
        yield self._image_class(id="image")

    def watch_picture(self, path: Path | None) -> None:
        self.query_one("#image").image = None if path is None else self._letterboxed(path)

    def box_cells(self) -> tuple[int, int]:
        """The box in terminal cells, as the stylesheet fixes it."""
        styles = self.query_one("#image").styles
        return int(styles.width.value), int(styles.height.value)

    def box_pixels(self) -> tuple[int, int]:
        cell = get_cell_size()
        columns, rows = self.box_cells()
        return columns * cell.width, rows * cell.height

    def _letterboxed(self, path: Path) -> PILImage.Image:
        with PILImage.open(path) as image:
            return ImageOps.pad(image.convert("RGB"), self.box_pixels(), color=LETTERBOX)
