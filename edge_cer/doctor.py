"""`edge-cer doctor`: what this machine offers, and what each export folder needs to run here.

    edge-cer doctor                                   # providers, GPU, TensorRT/CUDA, sherpa-onnx, terminal
    edge-cer doctor --engines engines/tiny-sd15 --json
    edge-cer doctor --engines engines/sd15-ip --asr engines/asr --verdict   # one line: ready here or not, and why

Every ONNX Runtime provider is really tried: a one-node model is opened with that provider alone and run
once, and the session's own provider list is checked, because onnxruntime falls back to CPU silently.
Each --asr folder is verified, loaded and run on a second of silence. Every probe reports its own failure in
its own row (one line, however long the library's message): the doctor itself never stops with a traceback.
Exit status 2 when an --engines or --asr path is not a folder (a user error, one line); 1 when a folder is broken
(missing files, hash mismatch, not an export), or, with --verdict, when an engines folder runs on no backend here.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np

from edge_cer.backends import cuda_runtime, gpu_info, rtx
from edge_cer.backends.gpu_info import one_line
from edge_cer.backends.ort import EP_NAMES
from edge_cer.errors import EdgeCerError
from edge_cer.tui.terminal import terminal_colours


def add_arguments(parser) -> None:
    parser.add_argument("--engines", type=Path, nargs="+", action="extend", default=[], metavar="DIR",
                        help="export folders (from `edge-cer export sd`) to check against this machine")
    parser.add_argument("--asr", type=Path, nargs="+", action="extend", default=[], metavar="DIR",
                        help="ASR folders (from `edge-cer export asr`) to load and run here")
    parser.add_argument("--json", action="store_true", help="print the report as JSON instead of tables")
    parser.add_argument("--verdict", action="store_true",
                        help="print one line: READY or NOT READY for the given folders, and why")


def run(args) -> int:
    for option, folders in (("--engines", args.engines), ("--asr", args.asr)):
        for folder in folders:
            if not folder.is_dir():
                raise EdgeCerError(f"{option} {folder}: no such folder; give the folder `edge-cer export "
                                   f"{'sd' if option == '--engines' else 'asr'}` wrote")
    report = collect(args.engines, args.asr)
    if args.verdict:
        ready, line = verdict(report)
        print(line)
        return 0 if ready else 1
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        render(report)
    return 1 if any("error" in e for e in report["engines"] + report["asr"]) else 0


def verdict(report: dict) -> tuple[bool, str]:
    """Ready when every engines folder runs on at least one backend here and every ASR folder decodes."""
    from edge_cer import __version__

    problems, ready = [], []
    for e in report["engines"]:
        runs = [b for b, r in e.get("runs_on", {}).items() if r["ok"]]
        if "error" in e:
            problems.append(f"engines {e['path']}: {e['error']}")
        elif not runs:
            problems.append(f"engines {e['path']}: runs on no backend here ({e['runs_on']['cpu']['why_not']})")
        else:
            ready.append(f"engines {Path(e['path']).name} run on {', '.join(runs)}")
    for a in report["asr"]:
        if "error" in a:
            problems.append(f"asr {a['path']}: {a['error']}")
        else:
            ready.append(f"asr {Path(a['path']).name} decodes ({a['mode']})")
    if problems:
        return False, "edge-cer doctor: NOT READY: " + "; ".join(problems)
    return True, (f"edge-cer doctor: READY: edge-cer {__version__}, onnxruntime {report['onnxruntime'].get('version')}"
                  + "".join(f"; {r}" for r in ready))


def probe_asr(root: Path) -> dict:
    """Verify an ASR folder, build its recognizer and decode a second of silence (sherpa-onnx really runs)."""
    from edge_cer.speech.manifest import SAMPLE_RATE, load_asr_folder
    from edge_cer.speech.recognizer import create_recognizer

    try:
        folder = load_asr_folder(root)
        recognizer = create_recognizer(folder)
        stream = recognizer.create_stream()
        stream.accept_waveform(SAMPLE_RATE, np.zeros(SAMPLE_RATE, np.float32))
        recognizer.decode(stream)
        recognizer.finish(stream)
        return {"path": str(root), "mode": folder.mode}
    except EdgeCerError as exc:
        return {"path": str(root), "error": str(exc)}


def collect(engine_dirs=(), asr_dirs=()) -> dict:
    machine = {
        "onnxruntime": _probe(probe_onnxruntime),
        "gpu": _probe(probe_gpu),
        "tensorrt_rtx": _probe(probe_tensorrt_rtx),
        "tensorrt": _module_version("tensorrt"),  # the module's own, as recorded in engine manifests
        "sherpa_onnx": _module_version("sherpa_onnx"),
        "terminal_graphics": _probe(terminal_graphics),
        "terminal_colours": _probe(terminal_colours),
    }
    machine["engines"] = [_probe(engine_needs, Path(d), machine, path=str(d)) for d in engine_dirs]
    machine["asr"] = [_probe(probe_asr, Path(d), path=str(d)) for d in asr_dirs]
    return machine


def _probe(fn, *args, **record):
    """Run one probe; its failure becomes its row ({"error": one line}), never the doctor's."""
    try:
        return fn(*args)
    except Exception as exc:  # noqa: BLE001 - whatever a probe hits is what we report
        return {**record, "error": f"{type(exc).__name__}: {one_line(str(exc))}"}


def _one_node_model() -> bytes:
    """Y = X + X on float[2]: the smallest graph every provider can take."""
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("X", TensorProto.FLOAT, [2])
    y = helper.make_tensor_value_info("Y", TensorProto.FLOAT, [2])
    graph = helper.make_graph([helper.make_node("Add", ["X", "X"], ["Y"])], "doctor", [x], [y])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8).SerializeToString()


def probe_onnxruntime() -> dict:
    """Version, and for each provider (built in or one we use): does a session really run on it?"""
    import onnxruntime as ort

    built_in = ort.get_available_providers()
    model, x = _one_node_model(), np.array([1.0, 2.0], np.float32)
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    providers = {}
    wanted = [ep for ep in EP_NAMES.values() if ep != rtx.EP_NAME]  # a plugin: its own row (probe_tensorrt_rtx)
    for name in dict.fromkeys(wanted + built_in):
        if name not in built_in:
            providers[name] = {"initialises": False, "detail": "not in this onnxruntime build"}
            continue
        try:
            session = ort.InferenceSession(model, opts, providers=[name])
            got = session.get_providers()
            if name not in got:
                providers[name] = {"initialises": False, "detail": f"session fell back to {got}"}
                continue
            ok = np.array_equal(session.run(["Y"], {"X": x})[0], x + x)
            providers[name] = {"initialises": ok, "detail": "ran a test graph" if ok else "wrong result"}
        except Exception as exc:  # noqa: BLE001 - any failure of a provider is what we report
            providers[name] = {"initialises": False, "detail": one_line(str(exc))}
    return {"version": ort.__version__, "package": _ort_package(), "module": ort.__file__, "providers": providers}


def _ort_package() -> str | None:
    for dist in ("onnxruntime-gpu", "onnxruntime"):
        try:
            version(dist)
            return dist
        except PackageNotFoundError:
            continue
    return None


def probe_gpu() -> dict:
    """What each GPU tool sees: nvidia-smi, cuda-python (used by trt-native) and CuPy, when present."""
    gpu: dict = {}
    try:
        gpu["nvidia_smi"] = gpu_info.nvidia_smi() if shutil.which("nvidia-smi") else None
    except gpu_info.GpuQueryError as exc:
        gpu["nvidia_smi"] = {"error": str(exc)}
    try:
        cuda_runtime.cudart()
    except EdgeCerError:  # cuda-python is not installed
        gpu["cuda_python"] = None
    else:
        try:
            gpu["cuda_python"] = {**cuda_runtime.device_info(0), **cuda_runtime.versions()}
        except Exception as exc:  # noqa: BLE001 - reported, not fatal (no GPU, driver too old)
            gpu["cuda_python"] = {"error": one_line(str(exc))}
    gpu["cupy"] = _probe_cupy() if _has_module("cupy") else None
    return gpu


def _probe_cupy() -> dict:
    try:
        import cupy

        rt = cupy.cuda.runtime
        props = rt.getDeviceProperties(0)
        return {"version": cupy.__version__, "devices": rt.getDeviceCount(), "name": props["name"].decode(),
                "compute_capability": f"{props['major']}.{props['minor']}", "runtime": rt.runtimeGetVersion()}
    except Exception as exc:  # noqa: BLE001 - reported, not fatal
        return {"error": one_line(str(exc))}


def probe_tensorrt_rtx() -> dict:
    """The TensorRT for RTX plugin: installed, loads into this onnxruntime, offers a device, supports the card."""
    if not _has_module(rtx.MODULE):
        return {"installed": False, "detail": "pip install 'edge-cer[rtx]' (RTX 30xx-50xx cards)"}
    out = {"installed": True, "version": _module_version(rtx.MODULE)}
    try:
        rtx.register()
        import onnxruntime as ort

        devices = [d for d in ort.get_ep_devices() if d.ep_name == rtx.EP_NAME]
        out["devices"] = len(devices)
    except Exception as exc:  # noqa: BLE001 - reported in its row
        out["error"] = one_line(str(exc))
    return out


def gpu_compute_capability(gpu: dict) -> str | None:
    for key in ("cuda_python", "cupy"):
        if isinstance(gpu.get(key), dict) and "compute_capability" in gpu[key]:
            return gpu[key]["compute_capability"]
    smi = gpu.get("nvidia_smi")
    return smi[0].get("compute_capability") if isinstance(smi, list) and smi else None


def terminal_graphics() -> dict:
    """Which renderer textual-image picked for this terminal (it queries the terminal when imported)."""
    from textual_image import renderable as r

    names = {r.TGPImage: "kitty graphics protocol", r.SixelImage: "sixel", r.HalfcellImage: "half-cell blocks",
             r.UnicodeImage: "unicode blocks (stdout is not a terminal)"}
    return {"renderer": names.get(r.Image, r.Image.__module__), "pixel_exact": r.Image in (r.TGPImage, r.SixelImage)}


def engine_needs(root: Path, machine: dict) -> dict:
    """What an export folder needs, and for each backend whether this machine can run it (and why not)."""
    from edge_cer.backends.tensorrt import check_compatible
    from edge_cer.manifest import load_manifest

    try:
        manifest = load_manifest(root, verify=True)
    except EdgeCerError as exc:
        return {"path": str(root), "error": str(exc)}
    data = manifest.data
    precision = sorted({g["precision"] for g in data["graphs"].values()})
    initialises = {n: p["initialises"] for n, p in machine["onnxruntime"]["providers"].items()}
    runs = {"cpu": (True, "") if precision == ["fp32"] else
            (False, "fp16 graphs are for GPU providers; re-export with --precision fp32 for CPU")}
    for provider in ("cuda", "tensorrt"):
        ok = initialises.get(EP_NAMES[provider], False)
        runs[provider] = (ok, "" if ok else f"{EP_NAMES[provider]} does not initialise here")
    runs["tensorrt-rtx"] = _rtx_runs(machine)
    record = data.get("tensorrt")
    engines = {}
    if record is None:
        runs["trt-native"] = (False, "no engines: re-export with --tensorrt")
    else:
        engines = {n: (manifest.root / e["file"]).is_file() for n, e in record["engines"].items()}
        try:
            if machine["tensorrt"] is None:
                raise EdgeCerError("tensorrt is not installed (pip install 'edge-cer[gpu]')")
            cc = gpu_compute_capability(machine["gpu"])
            if cc is None:
                raise EdgeCerError("no GPU found")
            check_compatible(record, machine["tensorrt"], cc, root)
            runs["trt-native"] = (True, "")
        except EdgeCerError as exc:
            runs["trt-native"] = (False, str(exc))
    return {
        "path": str(root),
        "precision": precision,
        "export_shape": data.get("export_shape"),
        "adapter": data["model"]["adapter"]["type"],
        "tensorrt": None if record is None else {"version": record["version"], "device": record["device"],
                                                 "dynamic": record["dynamic"], "engines_present": engines},
        "runs_on": {k: {"ok": ok, "why_not": why} for k, (ok, why) in runs.items()},
    }


def _rtx_runs(machine: dict) -> tuple[bool, str]:
    probe = machine.get("tensorrt_rtx") or {}
    if not probe.get("installed"):
        return False, probe.get("error") or "onnxruntime-ep-nv-tensorrt-rtx is not installed (edge-cer[rtx])"
    cc = gpu_compute_capability(machine.get("gpu") or {})
    if cc is not None and not rtx.supported(cc):
        return False, f"compute capability {cc}: TensorRT for RTX supports 8.6, 8.9 and 12.0+ (RTX 30xx-50xx)"
    if probe.get("error") or not probe.get("devices"):
        return False, probe.get("error") or "the plugin offers no device here"
    return True, ""


def render(report: dict) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = Console()
    yes = lambda ok: "[green]yes[/]" if ok else "[red]no[/]"  # noqa: E731
    ort = report["onnxruntime"]
    if "error" in ort:
        console.print(f"[red]onnxruntime: {escape(ort['error'])}[/]", soft_wrap=True)
    else:
        t = Table(title=f"ONNX Runtime {ort['version']} ({ort['package']}, {ort['module']})")
        for col in ("provider", "initialises", "detail"):
            t.add_column(col)
        for name, p in ort["providers"].items():
            t.add_row(name, yes(p["initialises"]), escape(p["detail"]))
        console.print(t)

    t = Table(title="GPU, libraries, terminal")
    t.add_column("what")
    t.add_column("found")
    gpu = report["gpu"]
    for tool, seen in (gpu.items() if "error" not in gpu else [("GPU probes", gpu)]):
        t.add_row(tool, "not installed" if seen is None else escape(_short(seen)))
    t.add_row("TensorRT for RTX (plugin EP)", escape(_short(report["tensorrt_rtx"])))
    t.add_row("tensorrt", report["tensorrt"] or "not installed")
    t.add_row("sherpa-onnx", report["sherpa_onnx"] or "not installed")
    graphics = report["terminal_graphics"]
    t.add_row("terminal graphics", graphics.get("renderer") or f"[red]{escape(graphics['error'])}[/]")
    colours = report["terminal_colours"]
    t.add_row("terminal colours", escape(colours.get("warning") or colours.get("colours") or colours.get("error", "")))
    console.print(t)

    for a in report["asr"]:
        console.print(f"\n[bold]asr {a['path']}[/]: " + (f"[red]{escape(a['error'])}[/]" if "error" in a else
                                                         f"[green]decodes[/] ({a['mode']})"), soft_wrap=True)
    for e in report["engines"]:
        console.print(f"\n[bold]export {e['path']}[/]", soft_wrap=True)  # a long path must not wrap in a title
        t = Table()
        if "error" in e:
            t.add_column("problem")
            t.add_row(f"[red]{escape(e['error'])}[/]")
            console.print(t)
            continue
        t.add_column("backend")
        t.add_column("runs here")
        t.add_column("why not")
        for backend, r in e["runs_on"].items():
            t.add_row(backend, yes(r["ok"]), escape(r["why_not"]))
        trt = e["tensorrt"]
        t.caption = (f"precision {', '.join(e['precision'])}; export shape {e['export_shape']}; "
                     f"adapter {e['adapter']}; "
                     + ("no TensorRT engines" if trt is None else
                        f"TensorRT {trt['version']} engines for {trt['device']['name']} "
                        f"(cc {trt['device']['compute_capability']}), "
                        f"{sum(trt['engines_present'].values())}/{len(trt['engines_present'])} present"))
        console.print(t)


def _module_version(module: str) -> str | None:
    if not _has_module(module):
        return None
    try:
        return getattr(importlib.import_module(module), "__version__", "unknown")
    except Exception as exc:  # noqa: BLE001 - a module that fails to import is reported, not fatal
        return f"fails to import: {one_line(str(exc))}"


def _has_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def _short(seen) -> str:
    if isinstance(seen, list):
        return "; ".join(_short(s) for s in seen) or "no GPU listed"
    return ", ".join(f"{k} {v}" for k, v in seen.items())
