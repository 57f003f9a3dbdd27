"""A small study for the bad-input corpus and the study-folder tests: protocol, stimuli, script, data folder, and
the files a user gets wrong (pictures, WAVs), plus a snapshot that says whether a data folder changed."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import sqlite3
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

PROTOCOL = 'name = "corpus"\ntime_scale = 0.0\n[design]\ntrials_per_condition = 1\npractice_trials = 0\nfeedback = ["none"]\n'
SCRIPT = 'rt_s = 0.5\nspeak_s = 1.0\n[ratings]\npre = 7\n[[trials]]\ntext = "It is staged."\n'
NORMS = "id,file,valence,arousal\n" + "".join(f"s{i},s{i}.png,{2 + i / 10},{5 + i / 10}\n" for i in range(4))
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@dataclass
class Study:
    root: Path

    @property
    def data(self) -> Path:
        return self.root / "data"

    def file(self, name: str, content: str | bytes) -> Path:
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content.encode() if isinstance(content, str) else content)
        return path

    def run(self, *extra: str, protocol: Path | None = None, stimuli: Path | None = None, script: Path | None = None,
            participant: str = "P002") -> list[str]:
        return ["run", "--participant", participant, "--data", str(self.data), "--min-free-mb", "0",
                "--protocol", str(protocol or self.root / "protocol.toml"),
                "--stimuli", str(stimuli or self.root / "stimuli"),
                "--scripted", str(script or self.root / "script.toml"), *extra]

    def protocol(self, text: str | bytes, name: str = "bad.toml") -> list[str]:
        return self.run(protocol=self.file(name, text))

    def script(self, text: str | bytes, name: str = "bad.toml") -> list[str]:
        return self.run(script=self.file(name, text))

    def norms(self, norms: str | bytes, pictures: dict[str, bytes] | None = None) -> list[str]:
        folder = self.root / "stimuli2"
        shutil.copytree(self.root / "stimuli", folder)
        (folder / "norms.csv").write_bytes(norms.encode() if isinstance(norms, str) else norms)
        for name, content in (pictures or {}).items():
            (folder / name).write_bytes(content)
        return self.run(stimuli=folder)

    def generate(self, *, image: Path | None = None, engines: Path | None = None, prompt: str = "it is staged",
                 out: Path | None = None, extra: tuple[str, ...] = ()) -> list[str]:
        return ["generate", "--engines", str(engines or self.root / "no-engines"),
                "--image", str(image or self.root / "stimuli" / "s0.png"), "--prompt", prompt,
                "--out", str(out or self.root / "out.png"), *extra]

    def engines(self, manifest: str | bytes | dict | list | None, files: dict[str, bytes] | None = None) -> list[str]:
        folder = self.root / "engines"
        folder.mkdir()
        for name, content in (files or {}).items():
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            (folder / name).write_bytes(content)
        if manifest is not None:
            text = manifest if isinstance(manifest, (str, bytes)) else json.dumps(manifest)
            (folder / "manifest.json").write_bytes(text.encode() if isinstance(text, str) else text)
        return self.generate(engines=folder)

    def trials_csv(self, content: str | bytes, out: Path | None = None) -> list[str]:
        folder = self.root / "analysis-in"
        folder.mkdir(exist_ok=True)
        (folder / "trials.csv").write_bytes(content.encode() if isinstance(content, str) else content)
        return ["analyze", str(folder), "--out", str(out or self.root / "analysis-out")]


def png(width: int = 16, height: int = 16) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (120, 80, 40)).save(buffer, format="PNG")
    return buffer.getvalue()


def png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height (a decompression bomb: tiny file, huge picture)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return PNG_MAGIC + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def wav(seconds: float, rate: int = 16000) -> bytes:
    import soundfile as sf

    buffer = io.BytesIO()
    sf.write(buffer, np.zeros(int(seconds * rate), np.int16), rate, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def snapshot(folder: Path) -> dict[str, str]:
    """Every file's SHA-256, a database by its rows (its -wal/-shm files come and go with readers), lock files aside
    (their text is who held them last)."""
    def digest(path: Path) -> str:
        if path.suffix == ".sqlite3":
            con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
            try:
                return hashlib.sha256("\n".join(con.iterdump()).encode()).hexdigest()
            finally:
                con.close()
        return hashlib.sha256(path.read_bytes()).hexdigest()

    return {p.relative_to(folder).as_posix(): digest(p) for p in sorted(folder.rglob("*"))
            if p.is_file() and not p.name.endswith((".lock", "-wal", "-shm"))}
