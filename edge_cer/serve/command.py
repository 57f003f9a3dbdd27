"""`edge-cer serve`: one process serves picture generation to every terminal of a lab over Triton's protocol.

    edge-cer serve --engines engines/sd15-ip --provider cuda --host 0.0.0.0     # gRPC :8001, HTTP :8000
    edge-cer run --server grpc://gpu-box:8001 --participant P017 --data study-data --scripted script.toml

The server needs PyTriton, which pins numpy < 2, so it runs in its own venv (`.venv-serve`, made by `./setup.sh`;
or name an interpreter with EDGE_CER_SERVE_PYTHON): this command starts it there when this venv lacks PyTriton.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
from pathlib import Path

from edge_cer.backends import add_provider_arguments
from edge_cer.errors import EdgeCerError

SERVE_VENV = Path(__file__).resolve().parents[2] / ".venv-serve"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--engines", type=Path, required=True, help="export folder (edge-cer export sd)")
    add_provider_arguments(p)
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on; 0.0.0.0 for a lab network (the protocol has no authentication)")
    p.add_argument("--grpc-port", type=int, default=8001)
    p.add_argument("--http-port", type=int, default=8000)
    p.add_argument("--metrics-port", type=int, default=8002, help="Prometheus metrics")
    p.add_argument("--instances", type=int, default=1, help="pictures rendered at once (one shared pipeline)")
    p.add_argument("--max-queue", type=int, default=32, help="requests waiting per model; more are refused at once")
    p.add_argument("--queue-timeout-s", type=float, default=60.0,
                   help="a request still queued after this is refused (clients may ask for less)")
    p.add_argument("--max-stimuli", type=int, default=512, help="stimuli kept with their embeddings and latents")
    p.add_argument("--drain-s", type=int, default=5, help="on SIGINT/SIGTERM, seconds in-flight requests may finish")


def run(args: argparse.Namespace) -> int:
    if not args.engines.is_dir():
        raise EdgeCerError(f"--engines {args.engines}: no such folder")
    if importlib.util.find_spec("pytriton") is not None:
        from edge_cer.serve.server import serve

        return serve(args)
    python = os.environ.get("EDGE_CER_SERVE_PYTHON") or str(SERVE_VENV / "bin" / "python")
    if not Path(python).is_file():
        raise EdgeCerError(f"{python}: no serve venv; `edge-cer serve` needs PyTriton (numpy < 2) in its own venv: "
                           "run ./setup.sh, or set EDGE_CER_SERVE_PYTHON to a Python that has nvidia-pytriton")
    argv = [python, "-m", "edge_cer.serve.server"]
    for name, value in vars(args).items():
        option = f"--{name.replace('_', '-')}"
        if name == "command" or name.startswith("_") or value is None:
            continue
        argv += [option if value else f"--no-{option[2:]}"] if isinstance(value, bool) else [option, str(value)]
    sys.stdout.flush()
    os.execv(python, argv)  # the server replaces this process: signals reach it directly
