"""N terminals at once against one server: each client its own connection, each request a fresh prompt and seed.

    stats = load_test("grpc://127.0.0.1:8001", Path("stimulus.png"), clients=4, requests=8, steps=4)
    stats.row()   # clients, requests, p50/p95 latency, pictures per second

Latency is the client's whole round trip (request, queue, render, PNG back); throughput is pictures over the wall
time from the first request to the last answer. Every client first sends its stimulus (precompute), as a terminal
does while the participant looks at it, so the figures are those of the prompts that follow.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge_cer.serve.client import RemoteGenerator


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
