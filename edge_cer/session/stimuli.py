"""Stimulus sets: a folder of pictures plus their affective norms, and their balanced split across conditions.

A set is a folder with `norms.csv` (columns `id,file,valence,arousal[,dominance]`, extra columns ignored), or a
folder plus an IAPS-style norm table (`IAPS`, `valmn`, `aromn`[, `dom1mn`] columns, tab- or comma-separated, with
or without the manual's preamble lines; picture files are `<IAPS id>.jpg`). IAPS is licensed and never shipped.
The embedded default is a synthetic, deliberately non-affective set drawn with PIL at first use.
"""

from __future__ import annotations

import csv
import math
import os
import random
import statistics
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw

from edge_cer.errors import EdgeCerError, read_user_text
from edge_cer.picture_file import open_picture

NORMS_FILE = "norms.csv"
SYNTHETIC_VERSION = 1  # bump when the drawing changes, so caches are rebuilt rather than mixed
SYNTHETIC_COUNT = 48  # covers the default design (36) and its look-baseline variant (44)
SYNTHETIC_NOTE = (
    "SYNTHETIC, NON-AFFECTIVE placeholder pictures (abstract shapes drawn by edge-cer). Their 'norms' are "
    "made-up numbers for exercising the software, never measured ratings: do not use this set for research.\n"
)


@dataclass(frozen=True)
class Stimulus:
    id: str
    path: Path
    valence: float
    arousal: float
    dominance: float | None = None


@dataclass(frozen=True)
class StimulusSet:
    folder: Path
    stimuli: tuple[Stimulus, ...]
    synthetic: bool = False

    def __len__(self) -> int:
        return len(self.stimuli)


def load_stimuli(folder: str | Path, norms: str | Path | None = None) -> StimulusSet:
    """Read a set and check every row: unique ids, existing and readable pictures, numeric norms."""
    folder = Path(folder)
    if not folder.is_dir():
        raise EdgeCerError(f"--stimuli {folder}: not a folder; give the folder that holds the pictures and {NORMS_FILE}")
    table = Path(norms) if norms else folder / NORMS_FILE
    if not table.exists():
        raise EdgeCerError(f"{table}: missing; write {NORMS_FILE} with columns id,file,valence,arousal[,dominance]")
    rows, header_line = _read_table(table)
    iaps = "valmn" in {h.lower() for h in rows[0]} if rows else False
    stimuli, seen = [], set()
    for n, row in enumerate(rows[1:], start=header_line + 2):
        where = f"{table} line {n}"
        record = {k.strip().lower(): (v or "").strip() for k, v in zip(rows[0], row)}
        if not any(record.values()):
            continue
        stimulus = _iaps_row(record, folder, where) if iaps else _norms_row(record, folder, where)
        if stimulus.id in seen:
            raise EdgeCerError(f"{where}: duplicate stimulus id {stimulus.id!r}; give every picture its own id")
        seen.add(stimulus.id)
        _check_picture(stimulus.path, where)
        stimuli.append(stimulus)
    if not stimuli:
        raise EdgeCerError(f"{table}: no stimuli listed; add one row per picture")
    return StimulusSet(folder, tuple(stimuli), synthetic=(folder / "SYNTHETIC.txt").exists())


def _read_table(table: Path) -> tuple[list[list[str]], int]:
    """Rows from the header on (IAPS manuals put prose above it) and the header's 0-based line number."""
    lines = read_user_text(table, "", "a UTF-8 norm table (CSV or TSV)").removeprefix("\ufeff").splitlines()
    for i, line in enumerate(lines):
        low = line.lower()
        if ("id" in low and "valence" in low) or ("iaps" in low and "valmn" in low):
            dialect = "excel-tab" if "\t" in line else "excel"
            return list(csv.reader(lines[i:], dialect=dialect)), i
    raise EdgeCerError(f"{table}: no header row; the first line must be id,file,valence,arousal[,dominance]")


def _number(record: dict, key: str, where: str, optional: bool = False) -> float | None:
    text = record.get(key, "")
    if text == "" and optional:
        return None
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise EdgeCerError(f"{where}: `{key}` = {text!r} is not a number; write the norm mean, e.g. 3.2")
    return value


def _norms_row(record: dict, folder: Path, where: str) -> Stimulus:
    for key in ("id", "file", "valence", "arousal"):
        if not record.get(key):
            raise EdgeCerError(f"{where}: `{key}` is empty or its column is missing; fill it in")
    return Stimulus(
        record["id"], folder / record["file"], _number(record, "valence", where), _number(record, "arousal", where),
        _number(record, "dominance", where, optional=True),
    )


def _iaps_row(record: dict, folder: Path, where: str) -> Stimulus:
    picture_id = record.get("iaps", "")
    candidates = [folder / f"{picture_id}{ext}" for ext in (".jpg", ".JPG", ".jpeg", ".png")]
    path = next((c for c in candidates if c.exists()), candidates[0])
    dominance = "dom1mn" if record.get("dom1mn") else "dommn"
    return Stimulus(
        picture_id, path, _number(record, "valmn", where), _number(record, "aromn", where),
        _number(record, dominance, where, optional=True),
    )


def _check_picture(path: Path, where: str) -> None:
    """Refuse at start rather than at trial 27: a dropped picture would unbalance the conditions."""
    try:
        with open_picture(path) as image:
            image.verify()
    except EdgeCerError as exc:
        raise EdgeCerError(f"{where}: {exc} (or remove the row)") from exc
    except Exception as exc:
        raise EdgeCerError(f"{where}: picture {path} is not a readable image ({exc}); replace it or remove the row") from exc


def synthetic_stimuli(folder: str | Path | None = None) -> StimulusSet:
    """The embedded default set, drawn deterministically into `folder` (default: the user cache) on first use."""
    if folder is None:
        cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
        folder = cache / "edge-cer" / f"synthetic-stimuli-v{SYNTHETIC_VERSION}"
    folder = Path(folder)
    if not (folder / NORMS_FILE).is_file():
        folder.mkdir(parents=True, exist_ok=True)
        _draw_synthetic(folder)
    return load_stimuli(folder)


def _draw_synthetic(folder: Path) -> None:
    rng = random.Random(f"edge-cer synthetic stimuli v{SYNTHETIC_VERSION}")
    rows = ["id,file,valence,arousal,dominance"]
    for i in range(1, SYNTHETIC_COUNT + 1):
        image = Image.new("RGB", (512, 512), tuple(rng.randrange(150, 230) for _ in range(3)))
        draw = ImageDraw.Draw(image)
        for _ in range(rng.randrange(3, 8)):
            x, y, r = rng.randrange(40, 472), rng.randrange(40, 472), rng.randrange(20, 110)
            colour = tuple(rng.randrange(60, 200) for _ in range(3))
            shape = rng.choice((draw.ellipse, draw.rectangle))
            shape((x - r, y - r, x + r, y + r), fill=colour)
        draw.text((12, 490), f"synthetic {i:02d}", fill=(40, 40, 40))
        name = f"syn{i:02d}.png"
        image.save(folder / name)
        # Placeholder norms spread around neutral so the balancing code has something to balance.
        rows.append(f"syn{i:02d},{name},{rng.uniform(4, 6):.2f},{rng.uniform(2, 4):.2f},{rng.uniform(4, 6):.2f}")
    (folder / "SYNTHETIC.txt").write_text(SYNTHETIC_NOTE)
    # norms.csv last and by rename: its presence means the set is complete (a crash redraws it, identically).
    (folder / f"{NORMS_FILE}.tmp").write_text("\n".join(rows) + "\n")
    (folder / f"{NORMS_FILE}.tmp").replace(folder / NORMS_FILE)


def select_and_balance(
    stimuli: tuple[Stimulus, ...], groups: int, per_group: int, practice: int, selection: str, rng: random.Random
) -> tuple[list[list[Stimulus]], list[Stimulus]]:
    """Pick the stimuli the design needs and split them into `groups` equal groups with matched norm means.

    Practice trials get the mildest of the picked stimuli. The split deals stimuli sorted by valence in snake
    order (A B C C B A ...) and then swaps pairs between groups while that brings the groups' valence and arousal
    means (in units of the set's SD) closer to the overall means.
    """
    needed = groups * per_group + practice
    if len(stimuli) < needed:
        raise EdgeCerError(
            f"stimulus set has {len(stimuli)} pictures but the protocol needs {needed} "
            f"({groups} conditions x {per_group} trials + {practice} practice); add pictures or lower trials_per_condition"
        )
    pool = list(stimuli)
    rng.shuffle(pool)  # random order among ties in the sorts below
    if selection == "most_negative":
        pool = sorted(pool, key=lambda s: (s.valence, -s.arousal))[:needed]
    else:
        pool = pool[:needed]
    by_mildness = sorted(pool, key=lambda s: s.valence)
    main, practice_set = by_mildness[: groups * per_group], by_mildness[groups * per_group :]
    dealt: list[list[Stimulus]] = [[] for _ in range(groups)]
    for i, s in enumerate(main):
        lap, pos = divmod(i, groups)
        dealt[pos if lap % 2 == 0 else groups - 1 - pos].append(s)
    _improve_by_swaps(dealt)
    return dealt, practice_set


def _improve_by_swaps(dealt: list[list[Stimulus]]) -> None:
    everyone = [s for g in dealt for s in g]
    if len(dealt) < 2 or len(everyone) < 2:
        return
    sd_v = statistics.pstdev(s.valence for s in everyone) or 1.0
    sd_a = statistics.pstdev(s.arousal for s in everyone) or 1.0
    sums = [[sum(s.valence for s in g), sum(s.arousal for s in g)] for g in dealt]
    n = len(dealt[0])

    def cost(v: float, a: float) -> float:
        return (v / n / sd_v) ** 2 + (a / n / sd_a) ** 2

    mean_v = sum(s.valence for s in everyone) / len(everyone) * n
    mean_a = sum(s.arousal for s in everyone) / len(everyone) * n
    improved = True
    while improved:
        improved = False
        for g in range(len(dealt)):
            for h in range(g + 1, len(dealt)):
                for i, x in enumerate(dealt[g]):
                    for j, y in enumerate(dealt[h]):
                        dv, da = y.valence - x.valence, y.arousal - x.arousal
                        before = cost(sums[g][0] - mean_v, sums[g][1] - mean_a) + cost(sums[h][0] - mean_v, sums[h][1] - mean_a)
                        after = cost(sums[g][0] + dv - mean_v, sums[g][1] + da - mean_a) + cost(
                            sums[h][0] - dv - mean_v, sums[h][1] - da - mean_a
                        )
                        if after < before - 1e-12:
                            dealt[g][i], dealt[h][j] = y, x
                            sums[g] = [sums[g][0] + dv, sums[g][1] + da]
                            sums[h] = [sums[h][0] - dv, sums[h][1] - da]
                            x = y
                            improved = True
