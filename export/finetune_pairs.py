"""The pairs folder the IP-Adapter fine-tuning reads: its format, its validator, its hash, and a synthetic builder.

    PAIRS/pairs.csv       header: source,text,target,licence
    PAIRS/<pictures>      any readable pictures, named by relative paths inside PAIRS/

One row is one training example: the `source` (aversive) picture, the `text` (the spoken reappraisal) and the
`target` (the supportive picture the model should produce), with the `licence` under which the pictures may be used.
Torch-free: validating or building a pairs set needs no export stage.
"""

from __future__ import annotations

import csv
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from edge_cer.errors import EdgeCerError
from edge_cer.image import load_image

PAIRS_CSV = "pairs.csv"
COLUMNS = ("source", "text", "target", "licence")
SYNTHETIC_LICENCE = "CC0-1.0 (synthetic, made by edge-cer)"


@dataclass(frozen=True)
class Pair:
    line: int  # 1-based line in pairs.csv, for error messages
    source: Path
    text: str
    target: Path
    licence: str


def pair_problems(folder: Path) -> tuple[list[Pair], list[str]]:
    """Every row of `folder`/pairs.csv checked; returns (valid pairs, one line per problem)."""
    folder = Path(folder)
    csv_path = folder / PAIRS_CSV
    if not csv_path.is_file():
        return [], [f"{csv_path}: missing; a pairs folder needs pairs.csv with header {','.join(COLUMNS)} "
                    f"(see docs/finetune.md)"]
    try:
        with open(csv_path, newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f))
    except (UnicodeDecodeError, csv.Error) as exc:
        return [], [f"{csv_path}: not a UTF-8 CSV file ({exc}); save it as UTF-8 CSV"]
    if not rows or tuple(c.strip().lower() for c in rows[0]) != COLUMNS:
        got = ",".join(rows[0]) if rows else "an empty file"
        return [], [f"{csv_path} line 1: header is {got!r}; it must be exactly {','.join(COLUMNS)}"]
    pairs, problems, seen = [], [], {}
    root = folder.resolve()
    for line, row in enumerate(rows[1:], start=2):
        where = f"{csv_path} line {line}"
        if not any(c.strip() for c in row):
            continue  # blank lines are harmless
        if len(row) != len(COLUMNS):
            problems.append(f"{where}: {len(row)} fields, expected {len(COLUMNS)} ({','.join(COLUMNS)}); "
                            f"quote text that contains commas")
            continue
        source, text, target, licence = (c.strip() for c in row)
        empty = [name for name, value in zip(COLUMNS, (source, text, target, licence)) if not value]
        if empty:
            problems.append(f"{where}: empty {', '.join(empty)}; every pair needs all four columns "
                            f"(the licence says under which terms the pictures may be used)")
            continue
        paths = []
        for column, name in (("source", source), ("target", target)):
            path = (folder / name).resolve()
            if not path.is_relative_to(root):
                problems.append(f"{where}: {column} {name!r} points outside {folder}; copy the picture into the folder")
            elif not path.is_file():
                problems.append(f"{where}: {column} {name!r} not found in {folder}; fix the name or add the picture")
            else:
                try:
                    load_image(path)
                    paths.append(path)
                except EdgeCerError as exc:
                    problems.append(f"{where}: {column} {exc}")
        if len(paths) != 2:
            continue
        key = (source, text, target)
        if key in seen:
            problems.append(f"{where}: repeats line {seen[key]}; remove the duplicate (it would weigh twice)")
            continue
        seen[key] = line
        pairs.append(Pair(line, paths[0], text, paths[1], licence))
    if not pairs and not problems:
        problems.append(f"{csv_path}: no pairs; add at least one row under the header")
    return pairs, problems


def load_pairs(folder: Path) -> list[Pair]:
    """The folder's pairs, or EdgeCerError naming the first problem (and how many more there are)."""
    pairs, problems = pair_problems(folder)
    if problems:
        more = f" (and {len(problems) - 1} more: `edge-cer finetune check-pairs {folder}` lists all)" \
            if len(problems) > 1 else ""
        raise EdgeCerError(problems[0] + more)
    return pairs


def pairs_hash(pairs: list[Pair]) -> str:
    """SHA-256 over every pair's text and picture bytes, in order: the training data's identity (provenance)."""
    from edge_cer.manifest import sha256_file

    rows = [[p.text, sha256_file(p.source), sha256_file(p.target)] for p in pairs]
    return hashlib.sha256(json.dumps(rows).encode("utf-8")).hexdigest()


# The synthetic set: a dark, red "aversive" scene of shapes and its "supportive" counterpart (same shapes, same
# places, light and calm colours), so a model can learn to keep structure while changing affect.
_REAPPRAISALS = (
    "the man is being helped, he will recover",
    "help has arrived and everyone is safe now",
    "it is only a film set, nobody is hurt",
    "the doctors are caring for her, she will heal",
    "the storm is over and the sun is coming out",
    "they are friends and they are laughing together",
)


def build_synthetic_pairs(out: Path, count: int = 12, size: int = 64, seed: int = 0) -> Path:
    """Write `count` synthetic pairs (PNG, `size` px square) and their pairs.csv into `out` (created)."""
    out = Path(out)
    if (out / PAIRS_CSV).exists():
        raise EdgeCerError(f"{out / PAIRS_CSV}: already exists; choose another folder")
    if count < 1 or size < 8:
        raise EdgeCerError(f"--count {count} / --size {size}: need at least 1 pair of at least 8 px")
    (out / "pictures").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(count):
        source, target = _scene(rng, size)
        names = (f"pictures/{i:04d}_source.png", f"pictures/{i:04d}_target.png")
        Image.fromarray(source).save(out / names[0])
        Image.fromarray(target).save(out / names[1])
        rows.append((names[0], _REAPPRAISALS[i % len(_REAPPRAISALS)], names[1], SYNTHETIC_LICENCE))
    with open(out / PAIRS_CSV, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(COLUMNS)
        writer.writerows(rows)
    return out


def _scene(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    y, x = np.mgrid[0:size, 0:size] / size
    mask = np.zeros((size, size), dtype=bool)
    for _ in range(rng.integers(2, 5)):  # ellipses and bars at random places
        cx, cy = rng.uniform(0.15, 0.85, size=2)
        rx, ry = rng.uniform(0.08, 0.3, size=2)
        if rng.random() < 0.5:
            mask |= ((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2 < 1
        else:
            mask |= (np.abs(x - cx) < rx) & (np.abs(y - cy) < ry / 3)
    shade = 0.6 + 0.4 * y[..., None]  # light from above keeps some gradient in both versions
    dark_bg, red = np.array([0.08, 0.05, 0.06]), np.array([0.7, 0.05, 0.05]) * rng.uniform(0.8, 1.2)
    sky, warm = np.array([0.55, 0.75, 0.95]), np.array([0.98, 0.85, 0.45]) * rng.uniform(0.9, 1.0)
    source = np.where(mask[..., None], red, dark_bg) * shade
    target = np.where(mask[..., None], warm, sky) * shade
    return ((np.clip(a, 0, 1) * 255).round().astype(np.uint8) for a in (source, target))
