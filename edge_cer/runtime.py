"""The one wiring: protocol + engines + ASR + provider -> picture generator, recogniser and live pipeline.

    runtime = build_runtime(protocol, engines="engines/sd15-ip", asr="models/asr", provider="cuda")
    runtime.warm_up(first_stimulus)        # one picture (never gated: no one sees it) and one second of silence
    runtime.live                           # edge_cer.live.speaking.LivePipeline: every AI picture goes through it
    runtime.close()

`edge-cer run`, `edge-cer tui`, `edge-cer demo` and `edge-cer bench --live` build their parts here and nowhere
else, so a protocol's `[generation]` and `[prompt]` settings (negative prompt, guidance, scheduler) and the safety
gate reach every picture the same way. Layers (docs/wiring.md): commands -> runtime -> domain -> engine.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge_cer.backends import PROVIDERS
from edge_cer.engine import EngineGenerator, PlaceholderGenerator
from edge_cer.errors import EdgeCerError
from edge_cer.live.speaking import LivePipeline
from edge_cer.serve.client import RemoteGenerator
from edge_cer.session.protocol import Protocol


@dataclass
class Runtime:
    protocol: Protocol
    generator: object | None  # the bare engine (the live trial gates its pictures); None without AI feedback
    recognizer: object | None  # None: reappraisals are typed or scripted as text
    live: LivePipeline
    provider: str

    @property
    def engine_name(self) -> str:
        """What the experimenter is told makes the pictures."""
        if self.generator is None:
            return "none"
        if isinstance(self.generator, PlaceholderGenerator):
            return "placeholder pictures (not AI)"
        if isinstance(self.generator, RemoteGenerator):
            return f"served by {self.generator.url}"
        backend = getattr(getattr(self.generator, "pipeline", None), "backend", None)
        return f"{backend.name} ({self.provider})" if backend is not None else type(self.generator).__name__

    def warm_up(self, stimulus_path: Path | None) -> None:
        """Run each part once so the first trial is as fast as the rest. The picture is not gated and not kept."""
        if self.generator is not None and stimulus_path is not None:
            g = self.protocol.generation
            if hasattr(self.generator, "precompute"):
                self.generator.precompute(stimulus_path)
            self.generator.generate(stimulus_path, "warm-up", seed=0, strength=g.strength, ip_scale=g.ip_scale,
                                    steps=g.steps)
        if self.recognizer is not None:
            stream = self.recognizer.create_stream()
            stream.accept_waveform(16000, np.zeros(16000, np.float32))
            self.recognizer.decode(stream)
            self.recognizer.finish(stream)

    def with_protocol(self, protocol: Protocol) -> Runtime:
        """The same loaded parts for another protocol (a resumed session keeps the one it began with)."""
        if protocol.text == self.protocol.text:
            return self
        generator = self.generator
        if isinstance(generator, EngineGenerator):
            if protocol.generation.vae != generator.pipeline.vae:
                raise EdgeCerError(f"session protocol {protocol.source}: [generation] vae = {protocol.generation.vae!r}, "
                                   f"but the engine was loaded with {generator.pipeline.vae!r}; restart to resume it")
            generator = _engine_settings(generator.pipeline, protocol, self.provider)
        elif isinstance(generator, RemoteGenerator):  # the server takes every setting with each request
            generator = generator.with_settings(**_remote_settings(protocol))
        loaded = getattr(getattr(self.recognizer, "config", None), "vad_min_silence", protocol.live.vad_min_silence)
        if loaded != protocol.live.vad_min_silence:
            raise EdgeCerError(f"session protocol {protocol.source}: [live] vad_min_silence = "
                               f"{protocol.live.vad_min_silence}, but the recogniser was loaded with {loaded}; "
                               "restart to resume it")
        self.close()
        return Runtime(protocol, generator, self.recognizer, LivePipeline(generator, self.recognizer, protocol),
                       self.provider)

    def close(self) -> None:
        self.live.close()


def build_runtime(protocol: Protocol, *, engines: Path | str | None = None, server: str | None = None,
                  asr: Path | str | None = None, provider: str = "cpu", backend_options: dict | None = None,
                  placeholder: bool = False, generator=None, recognizer=None) -> Runtime:
    """Load what the protocol needs. `generator`/`recognizer`: already loaded parts (tests, benches) instead of
    folders. AI-feedback conditions need an engine (`engines`, `server`, `placeholder` or `generator`); `server`
    (grpc://HOST:PORT of `edge-cer serve`) makes the pictures there. `backend_options`:
    edge_cer.backends.backend_options(args) (--cuda-graphs)."""
    if provider not in PROVIDERS:
        raise EdgeCerError(f"--provider {provider}: unknown; choose one of {', '.join(PROVIDERS)}")
    if sum(map(bool, (engines, server, placeholder))) > 1:
        raise EdgeCerError("--engines, --server and --placeholder: choose one picture source")
    for option, folder in (("--engines", engines), ("--asr", asr)):
        if folder is not None and not Path(folder).is_dir():
            raise EdgeCerError(f"{option} {folder}: no such folder")
    if generator is None and protocol.uses_ai_feedback:
        if engines is not None:
            from edge_cer.pipeline import SDPipeline  # here: a session without the engine starts without onnxruntime

            pipeline = SDPipeline.from_export(engines, provider=provider, vae=protocol.generation.vae,
                                              **(backend_options or {}))
            generator = _engine_settings(pipeline, protocol, provider)
        elif server is not None:
            generator = RemoteGenerator(server, **_remote_settings(protocol))
        elif placeholder:
            generator = PlaceholderGenerator()
        else:
            raise EdgeCerError(f"{protocol.source}: has AI-feedback conditions, which need the picture engine; pass "
                               '--engines DIR or --server URL (or --placeholder for a rehearsal), or use '
                               'feedback = ["none"]')
    if recognizer is None and asr is not None:
        from edge_cer.speech.recognizer import RecognizerConfig, create_recognizer

        recognizer = create_recognizer(asr, RecognizerConfig(vad_min_silence=protocol.live.vad_min_silence))
    return Runtime(protocol, generator, recognizer, LivePipeline(generator, recognizer, protocol), provider)


def _engine_settings(pipeline, protocol: Protocol, provider: str) -> EngineGenerator:
    """The protocol's fixed generation settings bound to the engine (the per-trial ones travel with each call)."""
    g = protocol.generation
    return EngineGenerator(pipeline, guidance=g.guidance, negative_prompt=protocol.prompt.negative_prompt or None,
                           scheduler=g.scheduler or None, provider=provider)


def _remote_settings(protocol: Protocol) -> dict:
    """The protocol's fixed generation settings, sent with every request to the server."""
    g = protocol.generation
    return dict(guidance=g.guidance, negative_prompt=protocol.prompt.negative_prompt or None,
                scheduler=g.scheduler or None, vae=g.vae)
