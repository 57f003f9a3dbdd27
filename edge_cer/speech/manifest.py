"""The ASR folder's manifest: which sherpa-onnx models it holds, their files, and every file's SHA-256.

    DIR/manifest.json
    DIR/streaming/...   a streaming model (transducer, zipformer2 CTC or NeMo CTC): live partials + endpoints
    DIR/offline/...     an offline model (Whisper): the final transcript
    DIR/vad/...         Silero VAD: cuts speech segments when there is no streaming model

Any of the three may be absent, but at least a streaming or an offline model is present, and an offline model
without a streaming one needs the VAD. `edge-cer export asr` writes this file; `load_asr_folder` verifies it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from edge_cer.errors import EdgeCerError
from edge_cer.manifest import hash_tree, verify_files, write_json_atomic
from edge_cer.speech.families import FAMILIES, Family, check_family_files

FORMAT = "edge-cer-asr"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
SLOTS = ("streaming", "offline", "vad")
SAMPLE_RATE = 16000  # every model family we load reads 16 kHz features


@dataclass(frozen=True)
class ModelFiles:
    """One model of the folder: its family and absolute file paths by role (encoder, tokens, ...)."""

    family: Family
    files: dict[str, Path]
    options: dict


@dataclass(frozen=True)
class AsrFolder:
    root: Path
    data: dict

    def model(self, slot: str) -> ModelFiles | None:
        entry = self.data.get(slot)
        if not entry:
            return None
        return ModelFiles(FAMILIES[entry["family"]], {r: self.root / p for r, p in entry["files"].items()},
                          entry.get("options", {}))

    @property
    def mode(self) -> str:
        """`streaming`, `two-pass` (streaming partials, offline final) or `vad` (VAD segments, offline decode)."""
        streaming, offline = self.model("streaming"), self.model("offline")
        if streaming and offline:
            return "two-pass"
        return "streaming" if streaming else "vad"


def write_manifest(root: Path, models: dict[str, dict], source: dict) -> dict:
    """Write DIR/manifest.json for `models` (slot -> {"family", "files": role -> relative path, "options"})."""
    root = Path(root)
    data = {"format": FORMAT, "format_version": FORMAT_VERSION, "sample_rate": SAMPLE_RATE,
            **{slot: models.get(slot) for slot in SLOTS}, "source": source, "files": hash_tree(root)}
    check_manifest(root, data)
    write_json_atomic(root / MANIFEST, data)
    return data


def check_manifest(root: Path, data: dict) -> None:
    """The structural checks: known families in the right slots, a usable combination, files sherpa accepts."""
    for slot in SLOTS:
        entry = data.get(slot)
        if not entry:
            continue
        family = FAMILIES.get(entry.get("family"))
        if family is None:
            raise EdgeCerError(f"{root / MANIFEST}: {slot} family {entry.get('family')!r} is not one of "
                               f"{', '.join(FAMILIES)}")
        wanted = {"streaming": family.streaming, "offline": not family.streaming and family.tokens,
                  "vad": family.name == "silero_vad"}[slot]
        if not wanted:
            raise EdgeCerError(f"{root / MANIFEST}: a {family.name} model cannot serve as the {slot} model")
        check_family_files(family, {r: root / p for r, p in entry["files"].items()})
    if not data.get("streaming") and not data.get("offline"):
        raise EdgeCerError(f"{root / MANIFEST}: neither a streaming nor an offline model; re-run `edge-cer export asr`")
    if data.get("offline") and not data.get("streaming") and not data.get("vad"):
        raise EdgeCerError(f"{root / MANIFEST}: an offline-only folder needs a Silero VAD to cut segments; "
                           "re-run `edge-cer export asr` with --vad FILE")


def load_asr_folder(root: str | Path, verify: bool = True) -> AsrFolder:
    """Read DIR/manifest.json, check every file's SHA-256 (by default) and everything sherpa-onnx would exit on."""
    root = Path(root)
    path = root / MANIFEST
    if not path.is_file():
        raise EdgeCerError(f"{path}: no ASR manifest; create the folder with `edge-cer export asr --default` "
                           "(or --whisper SRC / --from DIR)")
    try:
        data = json.loads(path.read_text())
    except ValueError as exc:
        raise EdgeCerError(f"{path}: not valid JSON ({exc}); re-run `edge-cer export asr`") from exc
    if data.get("format") != FORMAT or data.get("format_version") != FORMAT_VERSION:
        raise EdgeCerError(f"{path}: not an edge-cer ASR folder (format {data.get('format')!r} "
                           f"v{data.get('format_version')}); re-run `edge-cer export asr`")
    if verify:
        verify_files(root, data["files"])
    check_manifest(root, data)
    return AsrFolder(root, data)
