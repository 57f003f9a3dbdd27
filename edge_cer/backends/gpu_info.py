"""What nvidia-smi says about the GPUs: name, driver, memory, compute capability, clocks. Torch- and CUDA-free.

    gpus = nvidia_smi()          # [] without nvidia-smi; raises GpuQueryError when it is there but fails
    compute_capability(gpus)     # "8.9" for the first GPU, or None

Read by `doctor`, by `bench` (the card and its clocks beside GPU figures) and by the TensorRT-for-RTX provider
(which refuses cards it does not support before loading 300 MB of libraries).
"""

from __future__ import annotations

import shutil
import subprocess

# nvidia-smi --query-gpu field -> our key.
FIELDS = {"name": "name", "driver_version": "driver", "memory.total": "memory", "compute_cap": "compute_capability",
          "clocks.sm": "sm_clock", "clocks.max.sm": "max_sm_clock", "clocks.mem": "memory_clock",
          "clocks.max.mem": "max_memory_clock", "power.limit": "power_limit"}


class GpuQueryError(RuntimeError):
    pass


def nvidia_smi(timeout: float = 15) -> list[dict]:
    """One dict per GPU nvidia-smi lists; [] when nvidia-smi is not installed."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return []
    try:
        out = subprocess.run([smi, f"--query-gpu={','.join(FIELDS)}", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=timeout, check=True)
    except subprocess.CalledProcessError as exc:
        raise GpuQueryError(one_line(exc.stderr or exc.stdout or str(exc))) from exc
    except (subprocess.SubprocessError, OSError) as exc:
        raise GpuQueryError(one_line(str(exc))) from exc
    return [dict(zip(FIELDS.values(), (f.strip() for f in line.split(","))))
            for line in out.stdout.strip().splitlines() if line.strip()]


def compute_capability(gpus: list[dict]) -> str | None:
    return gpus[0].get("compute_capability") if gpus else None


def one_line(text: str, limit: int = 300) -> str:
    """A multi-line error blob (ONNX Runtime's, nvidia-smi's) as one line: its non-empty lines joined, shortened."""
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    joined = " | ".join(lines)
    return joined if len(joined) <= limit else joined[: limit - 3] + "..."
