"""The one seam between the UI and picture making.

The session asks its generator for the feedback picture when the feedback phase begins, on the thread that drives
it: the UI's event loop. So the UI makes the picture beforehand in a worker thread (`make`) and hands the session
this object as its generator, whose `generate` only gives back what was made (or raises the error it met, which
the session records as `no_picture`). The live speculative pipeline (edge_cer/live) replaces this class: same
`make`/`generate`/`precompute` verbs, but it may start on partial transcripts.
"""

from __future__ import annotations

import threading
from pathlib import Path

from edge_cer.session.generation import GeneratedPicture, PictureGenerator


class BackgroundPictures:
    def __init__(self, generator: PictureGenerator):
        self.generator = generator
        self._busy = threading.Lock()  # one pipeline: precompute and generate never overlap
        self._made: dict[tuple, GeneratedPicture | Exception] = {}

    @property
    def engine(self) -> str:
        return type(self.generator).__name__

    def precompute(self, stimulus_path: Path) -> None:
        """Stimulus-only work (image embeddings, latents) while the participant looks; blocking, for a worker."""
        if hasattr(self.generator, "precompute"):
            with self._busy:
                self.generator.precompute(stimulus_path)

    def make(self, stimulus_path: Path, prompt: str, *, seed: int, strength: float, ip_scale: float, steps: int) -> None:
        """Generate and keep the picture for `generate`; blocking, for a worker thread. Errors are kept too."""
        key = (Path(stimulus_path), prompt, seed, strength, ip_scale, steps)
        try:
            with self._busy:
                result = self.generator.generate(stimulus_path, prompt, seed=seed, strength=strength,
                                                 ip_scale=ip_scale, steps=steps)
        except Exception as exc:  # handed to the session, which logs it and shows a blank screen
            result = exc
        self._made[key] = result

    def generate(self, stimulus_path: Path, prompt: str, *, seed: int, strength: float, ip_scale: float,
                 steps: int) -> GeneratedPicture:
        """The session's `PictureGenerator`: the picture `make` prepared for exactly these arguments."""
        result = self._made.pop((Path(stimulus_path), prompt, seed, strength, ip_scale, steps), None)
        if result is None:
            raise RuntimeError(f"no picture was made in advance for {Path(stimulus_path).name!r} and this prompt")
        if isinstance(result, Exception):
            raise result
        return result
