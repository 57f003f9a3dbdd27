"""The per-stage timing summary printed after a generation (demoDiffusion's `print_summary`, our stages)."""

from __future__ import annotations

from rich.table import Table

STAGE_ORDER = ("text_encode", "image_encode", "vae_encode", "unet", "loop_overhead", "vae_decode")


def stage_table(timings: dict[str, list[float]], title: str = "") -> Table:
    table = Table(title=title, title_justify="left")
    table.add_column("stage")
    table.add_column("calls", justify="right")
    table.add_column("ms", justify="right")
    table.add_column("ms / call", justify="right")
    total = 0.0
    for stage in [s for s in STAGE_ORDER if s in timings] + [s for s in timings if s not in STAGE_ORDER]:
        values = timings[stage]
        total += sum(values)
        table.add_row(stage, str(len(values)), f"{1000 * sum(values):.1f}", f"{1000 * sum(values) / len(values):.2f}")
    table.add_section()
    table.add_row("total", "", f"{1000 * total:.1f}", "")
    return table
