"""Load test of `edge-cer serve`: N terminals at once, p50/p95 round trip and pictures per second (perf/serve.md).

    .venv/bin/python perf/serve_load.py --engines /tmp/tiny-export --clients 1 2 4 8 --requests 8 \\
        --out perf/results/serve_tiny.json

Starts `edge-cer serve` on free loopback ports, runs `edge_cer.serve.load.load_test` for each client count, and
measures the same requests in process (no server) as the baseline the protocol's cost is read against.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from edge_cer.bench.machine import machine_info
from edge_cer.engine import EngineGenerator
from edge_cer.pipeline import SDPipeline
from edge_cer.serve.load import ServeProcess, load_test


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--engines", type=Path, required=True)
    p.add_argument("--clients", type=int, nargs="+", default=[1, 2, 4, 8])
    p.add_argument("--requests", type=int, default=8, help="pictures per client")
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--instances", type=int, default=1)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()

    scratch = Path(tempfile.mkdtemp(prefix="serve-load-"))
    stimulus = scratch / "stimulus.png"
    y, x = np.mgrid[0:90, 0:70]
    Image.fromarray(np.stack([x * 3 % 256, y * 2 % 256, (x + y) * 5 % 256], -1).astype(np.uint8)).save(stimulus)
    local = EngineGenerator(SDPipeline.from_export(args.engines))
    local.precompute(stimulus)
    local_s = []
    for n in range(args.requests + 1):
        t0 = time.perf_counter()
        local.generate(stimulus, f"in process {n}: he will recover", seed=n, strength=0.6, ip_scale=0.6,
                       steps=args.steps)
        local_s.append(time.perf_counter() - t0)
    local_s = local_s[1:]  # the first call warms ONNX Runtime

    server = ServeProcess(args.engines, scratch / "serve.log", "--instances", str(args.instances)).start()
    rows = []
    try:
        load_test(server.url, stimulus, clients=1, requests=2, steps=args.steps)  # warm-up
        for clients in args.clients:
            row = load_test(server.url, stimulus, clients=clients, requests=args.requests, steps=args.steps).row()
            rows.append(row)
            print(json.dumps(row), flush=True)
    finally:
        server.stop()
    result = {"engines": str(args.engines), "steps": args.steps, "instances": args.instances,
              "requests_per_client": args.requests, "in_process_p50_s": float(np.median(local_s)),
              "in_process_pictures_per_s": 1 / float(np.mean(local_s)), "rows": rows,
              "machine": machine_info(), "load_average_end": os.getloadavg()}
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
