"""A stimulus or feedback picture in one box, the same size on screen for every picture.

textual-image draws it with the best the terminal offers (Kitty graphics, Sixel, then half-cell blocks); `mode` can
force one. The box is the largest square (in pixels) that fits the view, so a larger terminal shows a larger
picture; pictures are letterboxed to it, so none is stretched and all fill the same box.
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image as PILImage
from PIL import ImageOps
from textual.reactive import var
from textual.widget import Widget
from textual_image._terminal import get_cell_size
from textual_image.widget import HalfcellImage, Image, SixelImage, TGPImage, UnicodeImage

from edge_cer.tui.terminal import detected_graphics

MODES = {"auto": Image, "tgp": TGPImage, "sixel": SixelImage, "halfcell": HalfcellImage, "unicode": UnicodeImage}
LETTERBOX = (30, 34, 40)  # the theme's background, so the bars vanish
MARGIN = (4, 2)  # cells kept free around the box (columns, rows): the picture never touches the screen's edge


def mode_name(mode: str) -> str:
    """The drawing method behind a mode ("auto" resolves to what textual-image detected at import)."""
    return detected_graphics() if mode == "auto" else mode


class PictureView(Widget):
    picture: var[Path | None] = var(None, always_update=True)

    def __init__(self, mode: str = "auto", **kwargs):
        super().__init__(**kwargs)
        self.mode = mode_name(mode)
        self._image_class = MODES[mode]
        self.box = (1, 1)  # cells (columns, rows) of the picture now shown

    def compose(self):
        yield self._image_class(id="image")

    def watch_picture(self, path: Path | None) -> None:
        self.box = self.fit()
        image = self.query_one("#image")
        image.styles.width, image.styles.height = self.box
        image.image = None if path is None else self._letterboxed(path)

    def fit(self) -> tuple[int, int]:
        """The largest square in pixels that fits the view (the area every phase shares), in cells."""
        area, cell = self.parent.content_size, get_cell_size()
        side = min((area.width - MARGIN[0]) * cell.width, (area.height - MARGIN[1]) * cell.height)
        return max(1, side // cell.width), max(1, side // cell.height)

    def box_pixels(self) -> tuple[int, int]:
        cell = get_cell_size()
        return self.box[0] * cell.width, self.box[1] * cell.height

    def _letterboxed(self, path: Path) -> PILImage.Image:
        with PILImage.open(path) as image:
            return ImageOps.pad(image.convert("RGB"), self.box_pixels(), color=LETTERBOX)
