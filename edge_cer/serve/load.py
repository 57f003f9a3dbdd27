"""N terminals at once against one server: each client its own connection, each request a fresh prompt and seed.

    stats = load_test("grpc://127.0.0.1:8001", Path("stimulus.png"), clients=4, requests=8, steps=4)
    stats.row()   # clients, requests, p50/p95 latency, pictures per second

Latency is the client's whole round trip (request, queue, render, PNG back); throughput is pictures over the wall
time from the first request to the last answer. Every client first sends its stimulus (precompute), as a terminal
does while the participant looks at it, so the figures are those of the prompts that follow.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge_cer.serve.client import RemoteGenerator


def loopback_ports(n: int) -> list[int]:
    """n free TCP ports on 127.0.0.1."""
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


class ServeProcess:
    """`edge-cer serve` as a user starts it (the CLI hands over to the serve venv), on free loopback ports, its
    output appended to `log`."""

    def __init__(self, engines: Path, log: Path, *options: str):
        self.engines, self.log, self.options = engines, log, options
        self.grpc, self.http, self.metrics = loopback_ports(3)
        self.url = f"grpc://127.0.0.1:{self.grpc}"

    def start(self, timeout_s: float = 120) -> ServeProcess:
        offset = self.log.stat().st_size if self.log.exists() else 0  # a restart appends to the same log
        self.process = subprocess.Popen(
            [sys.executable, "-m", "edge_cer.cli", "serve", "--engines", str(self.engines), "--grpc-port",
             str(self.grpc), "--http-port", str(self.http), "--metrics-port", str(self.metrics), *self.options],
            stdout=open(self.log, "ab"), stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout_s
        while "edge-cer serve: ready:" not in self.log.read_text(errors="replace")[offset:]:
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop(signal.SIGKILL)
                raise RuntimeError(f"edge-cer serve did not start:\n{self.log.read_text()[-3000:]}")
            time.sleep(0.2)
        return self

    def stop(self, sig: int = signal.SIGTERM) -> int:
        self.process.send_signal(sig)
        try:
            code = self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            code = None
        try:  # what a killed server leaves behind (PyTriton's tritonserver and python-backend stubs)
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        if code is None:  # a hung shutdown is a finding: say where it hung, and leave nothing running
            self.process.wait()
            raise RuntimeError(f"edge-cer serve did not stop within 60 s of signal {sig}:\n"
                               f"{self.log.read_text(errors='replace')[-3000:]}")
        return code


@dataclass(frozen=True)
class LoadStats:
    clients: int
    requests: int
    latencies_s: tuple[float, ...]
    wall_s: float
    server_s: tuple[float, ...]  # the server's own time per picture (render + PNG), without network and queue

    def row(self) -> dict:
        lat = np.asarray(self.latencies_s)
        return {"clients": self.clients, "pictures": len(lat), "p50_s": float(np.percentile(lat, 50)),
                "p95_s": float(np.percentile(lat, 95)), "server_p50_s": float(np.median(self.server_s)),
                "pictures_per_s": len(lat) / self.wall_s}


def load_test(url: str, stimulus: Path, *, clients: int, requests: int, steps: int = 4, strength: float = 0.6,
              ip_scale: float = 0.6) -> LoadStats:
    generators = [RemoteGenerator(url) for _ in range(clients)]
    for generator in generators:
        generator.precompute(stimulus)
    latencies: list[float] = []
    server: list[float] = []
    errors: list[BaseException] = []
    lock, start = threading.Lock(), threading.Barrier(clients + 1)

    def terminal(index: int, generator: RemoteGenerator) -> None:
        start.wait()
        try:
            for n in range(requests):
                t0 = time.perf_counter()
                picture = generator.generate(stimulus, f"terminal {index} says {n}: he will recover", seed=n,
                                             strength=strength, ip_scale=ip_scale, steps=steps)
                with lock:
                    latencies.append(time.perf_counter() - t0)
                    server.append(picture.timings["server_total_s"])
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            errors.append(exc)

    threads = [threading.Thread(target=terminal, args=(i, g)) for i, g in enumerate(generators)]
    for thread in threads:
        thread.start()
    start.wait()
    t0 = time.perf_counter()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - t0
    for generator in generators:
        generator.close()
    if errors:
        raise errors[0]
    return LoadStats(clients, clients * requests, tuple(latencies), wall, tuple(server))
