"""What this terminal can show: how pictures are drawn and how many colours there are.

Both are decided when the app starts (textual-image asks the terminal at import; rich reads COLORTERM and TERM),
so the setup screen and `edge-cer doctor` report them before a participant sits down.
"""

from __future__ import annotations

# textual-image's renderers, best first: true pixels (Kitty graphics, Sixel), then two coloured pixels per cell.
GRAPHICS = {"tgp": "Kitty graphics (true pixels)", "sixel": "Sixel (true pixels)",
            "halfcell": "half-cell blocks (2 pixels per cell)", "unicode": "unicode blocks (stdout is not a terminal)"}


def detected_graphics() -> str:
    """The mode textual-image picked for this terminal: tgp, sixel, halfcell or unicode."""
    from textual_image import renderable  # imported late: importing it queries the terminal

    return renderable.Image.__module__.rsplit(".", 1)[-1]


def colour_warning(color_system: str | None) -> str | None:
    """One line for the experimenter when colours are lost (rich's color_system: truecolor, 256, standard...)."""
    if color_system in ("truecolor", "windows"):
        return None
    found = "256" if color_system == "256" else (color_system or "no")
    return f"Only {found} colours: pictures lose colour. Use truecolor: COLORTERM=truecolor (docs/tui.md)"


def terminal_colours() -> dict:
    """The colour system an app started here gets, and the warning if it is short of truecolor (doctor)."""
    from rich.console import Console

    system = Console(force_terminal=True).color_system
    return {"colours": system, "warning": colour_warning(system)}
