"""`edge-cer doctor`: real probes of this machine (CPU onnxruntime, sherpa-onnx, textual-image) and the
per-folder verdicts. GPU facts come from fakes here (fake nvidia-smi, fake cuda-python): LOGIC TESTS only."""

from __future__ import annotations

import json
import sys

import onnxruntime
import pytest
import sherpa_onnx

from edge_cer import doctor
from edge_cer.cli import main
from edge_cer.manifest import FORMAT, FORMAT_VERSION, MANIFEST, hash_tree, write_json_atomic
from tests.fake_gpu import install_cudart, io_only_export


def write_export(root, precision="fp32", tensorrt=None):
    data = io_only_export(root)
    for g in data["graphs"].values():
        g["precision"] = precision
    data.update(format=FORMAT, format_version=FORMAT_VERSION)
    if tensorrt:
        data["tensorrt"] = tensorrt
    data["files"] = hash_tree(root)
    write_json_atomic(root / MANIFEST, data)
    return root


def trt_record(version="10.3.0", cc="9.0"):
    return {"version": version, "device": {"name": "NVIDIA H100", "compute_capability": cc}, "dynamic": False,
            "engines": {"unet": {"file": "tensorrt/unet.plan"}}}


def machine(cuda_ok=False, trt=None, cc=None):
    providers = {"CPUExecutionProvider": {"initialises": True},
                 "CUDAExecutionProvider": {"initialises": cuda_ok},
                 "TensorrtExecutionProvider": {"initialises": False}}
    return {"onnxruntime": {"providers": providers}, "tensorrt": trt,
            "gpu": {"cuda_python": {"compute_capability": cc} if cc else None, "nvidia_smi": None, "cupy": None}}


def test_probes_this_machine_for_real():
    report = doctor.collect()
    cpu = report["onnxruntime"]["providers"]["CPUExecutionProvider"]
    assert cpu == {"initialises": True, "detail": "ran a test graph"}
    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        assert report["onnxruntime"]["providers"]["CUDAExecutionProvider"] == {
            "initialises": False, "detail": "not in this onnxruntime build"}
    assert report["sherpa_onnx"] == sherpa_onnx.__version__
    assert report["terminal_graphics"]["renderer"] in (
        "kitty graphics protocol", "sixel", "half-cell blocks", "unicode blocks (stdout is not a terminal)")
    assert report["engines"] == []


def test_a_provider_that_falls_back_to_cpu_is_reported_as_not_initialising(monkeypatch):
    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    with pytest.warns(UserWarning):  # onnxruntime's own, and then it falls back to CPU anyway
        providers = doctor.probe_onnxruntime()["providers"]
    assert providers["CUDAExecutionProvider"] == {"initialises": False,
                                                  "detail": "session fell back to ['CPUExecutionProvider']"}


def test_gpu_probes_read_nvidia_smi_and_cuda_python(monkeypatch, tmp_path):
    smi = tmp_path / "nvidia-smi"
    smi.write_text("#!/bin/sh\necho 'NVIDIA H100 80GB HBM3, 550.54.15, 81559 MiB, 9.0, 345 MHz, 1980 MHz, "
                   "1593 MHz, 2619 MHz, 700.00 W'\n")
    smi.chmod(0o755)
    monkeypatch.setattr(doctor.shutil, "which", lambda name: str(smi))
    install_cudart(monkeypatch, name=b"NVIDIA H100 80GB HBM3", cc=(9, 0))
    gpu = doctor.probe_gpu()
    assert gpu["nvidia_smi"] == [{"name": "NVIDIA H100 80GB HBM3", "driver": "550.54.15", "memory": "81559 MiB",
                                  "compute_capability": "9.0", "sm_clock": "345 MHz", "max_sm_clock": "1980 MHz",
                                  "memory_clock": "1593 MHz", "max_memory_clock": "2619 MHz",
                                  "power_limit": "700.00 W"}]
    assert gpu["cuda_python"]["name"] == "NVIDIA H100 80GB HBM3" and gpu["cuda_python"]["runtime"] == "12.4"
    assert doctor.gpu_compute_capability(gpu) == "9.0"


def test_fp32_export_without_engines_runs_on_cpu_only(tmp_path):
    needs = doctor.engine_needs(write_export(tmp_path / "e"), machine())
    assert needs["precision"] == ["fp32"] and needs["tensorrt"] is None
    runs = needs["runs_on"]
    assert runs["cpu"] == {"ok": True, "why_not": ""}
    assert runs["cuda"] == {"ok": False, "why_not": "CUDAExecutionProvider does not initialise here"}
    assert runs["trt-native"] == {"ok": False, "why_not": "no engines: re-export with --tensorrt"}


def test_engines_are_matched_against_this_machines_tensorrt_and_gpu(tmp_path):
    root = write_export(tmp_path / "e", precision="fp16", tensorrt=trt_record())
    needs = doctor.engine_needs(root, machine(cuda_ok=True, trt="10.3.0", cc="9.0"))
    assert needs["runs_on"]["trt-native"]["ok"] and needs["runs_on"]["cuda"]["ok"]
    assert not needs["runs_on"]["cpu"]["ok"] and "--precision fp32" in needs["runs_on"]["cpu"]["why_not"]
    assert needs["tensorrt"]["engines_present"] == {"unet": False}
    other_gpu = doctor.engine_needs(root, machine(trt="10.3.0", cc="8.9"))["runs_on"]["trt-native"]
    assert not other_gpu["ok"] and "compute capability 8.9; rebuild them here" in other_gpu["why_not"]
    no_trt = doctor.engine_needs(root, machine(cc="9.0"))["runs_on"]["trt-native"]
    assert no_trt == {"ok": False, "why_not": "tensorrt is not installed (pip install 'edge-cer[gpu]')"}


def test_cli_json_and_exit_status_for_a_broken_folder(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "400")  # long tmp paths must not wrap inside the table
    good = write_export(tmp_path / "good")
    bad = write_export(tmp_path / "bad")
    (bad / "unet" / "model.onnx").write_bytes(b"changed")
    assert main(["doctor", "--json", "--engines", str(good), str(bad)]) == 1
    report = json.loads(capsys.readouterr().out)
    assert [e["path"] for e in report["engines"]] == [str(good), str(bad)]
    assert report["engines"][0]["runs_on"]["cpu"]["ok"]
    assert "unet/model.onnx: SHA-256 differs" in report["engines"][1]["error"]
    assert main(["doctor", "--engines", str(good)]) == 0
    out = capsys.readouterr().out
    assert "CPUExecutionProvider" in out and f"export {good}" in out


def test_doctor_never_imports_torch():
    import subprocess

    code = ("import sys; from edge_cer import doctor; doctor.collect(); "
            "print([m for m in ('torch', 'diffusers', 'transformers') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_every_probe_fails_in_its_own_row(monkeypatch, capsys):
    """A missing optional module or a library's multi-line error blob is one row, and the doctor goes on."""
    blob = ("[ONNXRuntimeError] : 1 : FAIL : TensorRT EP failed to create engine\n\n  libnvinfer.so.10: cannot open "
            "shared object file\n  see https://onnxruntime.ai/docs")

    def no_terminal_module():
        raise ModuleNotFoundError("No module named 'textual_image'")

    def blob_gpu():
        raise RuntimeError(blob)

    monkeypatch.setattr(doctor, "terminal_graphics", no_terminal_module)
    monkeypatch.setattr(doctor, "probe_gpu", blob_gpu)
    report = doctor.collect()
    assert report["terminal_graphics"] == {"error": "ModuleNotFoundError: No module named 'textual_image'"}
    assert report["gpu"] == {"error": "RuntimeError: [ONNXRuntimeError] : 1 : FAIL : TensorRT EP failed to create "
                                      "engine | libnvinfer.so.10: cannot open shared object file | see "
                                      "https://onnxruntime.ai/docs"}
    assert report["onnxruntime"]["providers"]["CPUExecutionProvider"]["initialises"]
    monkeypatch.setenv("COLUMNS", "400")
    doctor.render(report)
    out = capsys.readouterr().out
    assert "No module named 'textual_image'" in out and "libnvinfer.so.10" in out


def test_tensorrt_rtx_rows(monkeypatch, tmp_path):
    report = doctor.probe_tensorrt_rtx()
    assert report == {"installed": False, "detail": "pip install 'edge-cer[rtx]' (RTX 30xx-50xx cards)"}
    root = write_export(tmp_path / "e")
    m = machine()
    m["tensorrt_rtx"] = {"installed": True, "devices": 1}
    m["gpu"]["nvidia_smi"] = [{"name": "NVIDIA H200", "compute_capability": "9.0"}]
    assert doctor.engine_needs(root, m)["runs_on"]["tensorrt-rtx"] == {
        "ok": False, "why_not": "compute capability 9.0: TensorRT for RTX supports 8.6, 8.9 and 12.0+ (RTX 30xx-50xx)"}
    m["gpu"]["nvidia_smi"] = [{"name": "NVIDIA GeForce RTX 4090", "compute_capability": "8.9"}]
    assert doctor.engine_needs(root, m)["runs_on"]["tensorrt-rtx"] == {"ok": True, "why_not": ""}
    m["tensorrt_rtx"] = {"installed": True, "error": "could not load the EP library"}
    assert not doctor.engine_needs(root, m)["runs_on"]["tensorrt-rtx"]["ok"]


def test_verdict_names_each_broken_folder_in_one_line(tmp_path):
    report = doctor.collect([tmp_path / "engines"], [tmp_path / "asr"])
    ready, line = doctor.verdict(report)
    assert not ready and "\n" not in line
    assert line.startswith("edge-cer doctor: NOT READY: engines ") and f"asr {tmp_path / 'asr'}: " in line


def test_a_missing_folder_is_a_user_error(tmp_path, capsys):
    """A path that is not there is one line with exit 2 (the README's rule), before any probe runs."""
    assert main(["doctor", "--engines", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--engines" in err[0] and "nope" in err[0] and "export sd" in err[0]
    assert main(["doctor", "--asr", str(tmp_path / "nope")]) == 2
    assert "export asr" in capsys.readouterr().err
