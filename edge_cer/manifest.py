"""The export folder's manifest: the one place that knows its file layout and verifies its hashes.

    OUT/manifest.json
    OUT/<graph>/model.onnx (+ model.onnx.data for graphs over protobuf's 2 GB limit)
    OUT/tokenizer/           CLIP tokenizer files (tokenizer.json read by the `tokenizers` library)
    OUT/scheduler/scheduler_config.json
    OUT/tensorrt/<graph>.plan, timing.cache   (only with --tensorrt)
"""

from __future__ import annotations

import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from edge_cer.errors import EdgeCerError, read_user_text
from edge_cer.graphs import TINY_VAE_DECODER, GraphSpec, ModelDims, sd_graphs

FORMAT = "edge-cer-sd-export"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
VERIFIED_CACHE = ".verified.json"  # stat fingerprints of files whose hashes were checked (see verify_files)
TOKENIZER_DIR = "tokenizer"
SCHEDULER_CONFIG = "scheduler/scheduler_config.json"
TENSORRT_DIR = "tensorrt"
EXTERNAL_DATA_SUFFIX = ".data"


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def hash_tree(root: Path, skip: tuple[str, ...] = (MANIFEST, VERIFIED_CACHE)) -> dict[str, str]:
    """SHA-256 of every file under root, keyed by POSIX relative path, sorted."""
    root = Path(root)
    return {
        p.relative_to(root).as_posix(): sha256_file(p)
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.relative_to(root).as_posix() not in skip
    }


def write_json_atomic(path: Path, data: dict) -> None:
    tmp = Path(path).with_suffix(".tmp")
    with open(tmp, "w") as f:
        json.dump(data, f, indent=2, sort_keys=False)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


@dataclass(frozen=True)
class ExportManifest:
    """A verified export folder. `data` is the manifest.json content."""

    root: Path
    data: dict

    @property
    def dims(self) -> ModelDims:
        return ModelDims.from_dict(self.data["model"]["dims"])

    @property
    def graphs(self) -> dict[str, GraphSpec]:
        return sd_graphs(self.dims, tiny_vae=TINY_VAE_DECODER in self.data["graphs"])

    def graph_path(self, name: str) -> Path:
        return self.root / self.data["graphs"][name]["file"]

    def engine_path(self, name: str) -> Path:
        return self.root / self.data["tensorrt"]["engines"][name]["file"]

    @property
    def tokenizer_dir(self) -> Path:
        return self.root / TOKENIZER_DIR

    @property
    def scheduler_config_path(self) -> Path:
        return self.root / SCHEDULER_CONFIG

    @property
    def sha256(self) -> str:
        """Identity of this export: the hash of its manifest (which holds every file's hash)."""
        return sha256_file(self.root / MANIFEST)


def is_export_dir(path: Path) -> bool:
    try:
        return json.loads((Path(path) / MANIFEST).read_text()).get("format") == FORMAT
    except (OSError, ValueError):
        return False


def load_manifest(root: str | Path, verify: bool = True) -> ExportManifest:
    """Read OUT/manifest.json and (by default) check every listed file's SHA-256."""
    root = Path(root)
    path = root / MANIFEST
    if not path.is_file():
        raise EdgeCerError(f"{path}: no manifest; point --engines at a folder written by `edge-cer export sd`")
    try:
        data = json.loads(read_user_text(path, "", "the manifest.json written by `edge-cer export sd`"))
    except ValueError as exc:
        raise EdgeCerError(f"{path}: not valid JSON ({exc}); re-run `edge-cer export sd`") from exc
    if not isinstance(data, dict) or data.get("format") != FORMAT or data.get("format_version") != FORMAT_VERSION:
        found = (data.get("format"), data.get("format_version")) if isinstance(data, dict) else (type(data).__name__, "?")
        raise EdgeCerError(
            f"{path}: not an edge-cer SD export (format {found[0]!r} v{found[1]}); re-export with this version of edge-cer"
        )
    _check_layout(path, data)
    if verify:
        verify_files(root, data["files"])
    return ExportManifest(root, data)


def _check_layout(path: Path, data: dict) -> None:
    """The keys the runtime reads, with the right shapes, so a hand-edited manifest fails here and not mid-run."""
    problems = []
    if not isinstance(data.get("files"), dict) or not all(isinstance(v, str) for v in data["files"].values()):
        problems.append("`files` (path -> SHA-256)")
    graphs = data.get("graphs")
    if not isinstance(graphs, dict) or not all(isinstance(g, dict) and isinstance(g.get("file"), str)
                                               for g in graphs.values()):
        problems.append("`graphs` (name -> {file: ...})")
    elif isinstance(data.get("files"), dict) and (unlisted := [g["file"] for g in graphs.values()
                                                              if g["file"] not in data["files"]]):
        problems.append(f"a hash for {unlisted[0]} in `files`")
    dims = data.get("model", {}).get("dims") if isinstance(data.get("model"), dict) else None
    fields = ModelDims.__dataclass_fields__.values()
    if not isinstance(dims, dict) or not all(type(dims.get(f.name)).__name__ == f.type for f in fields):
        problems.append(f"`model.dims` ({', '.join(ModelDims.__dataclass_fields__)})")
    if problems:
        raise EdgeCerError(f"{path}: lacks {', '.join(problems)}; the manifest was edited or truncated, "
                           "re-run `edge-cer export sd`")


def verify_files(root: Path, files: dict[str, str], use_cache: bool = True) -> None:
    """Refuse a folder whose files are missing or differ from the manifest, naming the first bad file.

    Hashing an SD-1.5 export reads ~5 GB (about 15 s on a loaded 2-core machine), so a successful check is
    remembered in VERIFIED_CACHE by each file's (size, mtime_ns, ctime_ns, inode): a file whose stat is unchanged
    since it was hashed is not hashed again. Any write changes ctime, which users cannot set back."""
    stats = {}
    for rel in files:
        p = root / rel
        if not p.is_file():
            raise EdgeCerError(f"{p}: missing (listed in {root / MANIFEST}); re-run the export or copy the whole folder")
        st = p.stat()
        stats[rel] = [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]
    cache = _read_cache(root) if use_cache else {}
    todo = [rel for rel in files if cache.get(rel) != [*stats[rel], files[rel]]]
    # hashlib releases the GIL: several files hash in parallel.
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        actual = dict(zip(todo, pool.map(lambda rel: sha256_file(root / rel), todo)))
    for rel in todo:
        if actual[rel] != files[rel]:
            raise EdgeCerError(
                f"{root / rel}: SHA-256 differs from {root / MANIFEST} (corrupt or modified); re-run the export"
            )
    if todo:
        try:
            write_json_atomic(root / VERIFIED_CACHE, {rel: [*stats[rel], files[rel]] for rel in files})
        except OSError:  # a read-only engines folder: verify in full every time
            pass


def _read_cache(root: Path) -> dict:
    try:
        return json.loads((root / VERIFIED_CACHE).read_text())
    except (OSError, ValueError):
        return {}
