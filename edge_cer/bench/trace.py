"""Spans on one clock, and their Chrome/Perfetto trace file (open it in ui.perfetto.dev or chrome://tracing).

`RecordingBackend` wraps any backend and records one span per graph call, so the pipeline is measured as it
runs in production, with no timing code of the bench inside it.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


@dataclass
class Span:
    name: str
    start: float  # perf_counter seconds
    end: float
    track: str  # one row in the trace viewer: "onnxruntime-cpu", "diffusers-torch", ...
    args: dict = field(default_factory=dict)

    @property
    def seconds(self) -> float:
        return self.end - self.start


class Trace:
    def __init__(self):
        self.spans: list[Span] = []

    def add(self, name: str, start: float, end: float, track: str, **args) -> Span:
        span = Span(name, start, end, track, args)
        self.spans.append(span)
        return span

    def to_chrome(self) -> dict:
        """Trace Event Format: complete ("X") events in microseconds, one thread row per track."""
        tracks = list(dict.fromkeys(s.track for s in self.spans))
        origin = min((s.start for s in self.spans), default=0.0)
        events = [{"name": "thread_name", "ph": "M", "pid": os.getpid(), "tid": i, "args": {"name": t}}
                  for i, t in enumerate(tracks)]
        events += [{"name": s.name, "ph": "X", "pid": os.getpid(), "tid": tracks.index(s.track),
                    "ts": (s.start - origin) * 1e6, "dur": s.seconds * 1e6, "args": s.args} for s in self.spans]
        return {"traceEvents": events, "displayTimeUnit": "ms"}

    def write(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_chrome()))


class RecordingBackend:
    """A Backend that forwards to another and records each call's span in `calls` (cleared by the caller)."""

    def __init__(self, inner, track: str | None = None):
        self.inner, self.name = inner, inner.name
        self.track = track or inner.name
        self.calls: list[Span] = []

    def load(self) -> None:
        self.inner.load()

    def infer(self, graph: str, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        t0 = time.perf_counter()
        out = self.inner.infer(graph, feeds)
        self.calls.append(Span(graph, t0, time.perf_counter(), self.track))
        return out

    def unload(self) -> None:
        self.inner.unload()
