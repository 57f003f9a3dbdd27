"""What a server does with one request of each model in `protocol.MODELS`, on one loaded pipeline.

`edge-cer serve` (PyTriton) and the Triton repository's pipeline model (python backend) both hand their requests
here, so both serve the same pictures as local generation: a request becomes the same `EngineGenerator.render` call
the terminal would make. Stimuli are kept by the SHA-256 of their file (an LRU of `max_stimuli`); the pipeline
caches their image embeddings and latents, so a terminal sends each stimulus once and its prompts after that.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable

import numpy as np
from PIL import Image

from edge_cer import __version__
from edge_cer.engine import EngineGenerator
from edge_cer.errors import EdgeCerError
from edge_cer.image import decode_image
from edge_cer.pipeline import SDPipeline
from edge_cer.serve.protocol import (
    BAD_REQUEST, CLIP_EMBEDS, FAILED, GENERATE, INFO, PRECOMPUTE, UNKNOWN_STIMULUS, RequestError, dumps, loads,
)

log = logging.getLogger(__name__)


class GenerationService:
    def __init__(self, pipeline: SDPipeline, max_stimuli: int = 512):
        self.pipeline, self.max_stimuli = pipeline, max_stimuli
        self._pipelines = {pipeline.vae: pipeline}  # a protocol's [generation] vae: full or tiny, one backend
        self._stimuli: OrderedDict[str, Image.Image] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def models(self) -> dict[str, Callable[[dict, bytes], tuple[dict, bytes]]]:
        models = {GENERATE: self.generate, PRECOMPUTE: self.precompute, INFO: self.info}
        if self.pipeline.manifest.data.get("clip_zero_shot"):
            models[CLIP_EMBEDS] = self.clip_embeds
        return models

    def handle(self, model: str, request: bytes, picture: bytes) -> tuple[bytes, bytes]:
        """One request -> (record JSON, payload); never raises, so one bad request fails only itself."""
        try:
            record, payload = self.models[model](loads(request), picture)
        except RequestError as exc:
            record, payload = {"error": str(exc), "kind": exc.kind}, b""
        except EdgeCerError as exc:  # the pipeline's own checks: a bad strength, steps, size...
            record, payload = {"error": str(exc), "kind": BAD_REQUEST}, b""
        except Exception as exc:  # noqa: BLE001 - reported to the client; the server keeps serving
            log.exception("%s failed", model)
            record, payload = {"error": f"{type(exc).__name__}: {exc}", "kind": FAILED}, b""
        return dumps(record), payload

    # -- the models ------------------------------------------------------------------------------------------------

    def generate(self, request: dict, picture: bytes) -> tuple[dict, bytes]:
        stimulus = self._stimulus(request, picture)
        pipeline = self._pipeline(_get(request, "vae", str, self.pipeline.vae))
        generator = EngineGenerator(pipeline, guidance=_get(request, "guidance", float),
                                    negative_prompt=_get(request, "negative_prompt", str, None),
                                    scheduler=_get(request, "scheduler", str, None))
        out = generator.render(stimulus, _get(request, "prompt", str), seed=_get(request, "seed", int),
                               strength=_get(request, "strength", float), ip_scale=_get(request, "ip_scale", float),
                               steps=_get(request, "steps", int))
        return {"params": out.params, "timings": out.timings}, out.png

    def precompute(self, request: dict, picture: bytes) -> tuple[dict, bytes]:
        self._pipeline(_get(request, "vae", str, self.pipeline.vae)).precompute(self._stimulus(request, picture))
        return {"stimulus_sha256": request["stimulus_sha256"]}, b""

    def info(self, request: dict, picture: bytes) -> tuple[dict, bytes]:
        manifest = self.pipeline.manifest
        return {"manifest": manifest.data, "manifest_sha256": manifest.sha256, "engine": self.pipeline.backend.name,
                "edge_cer": __version__, "models": sorted(self.models)}, b""

    def clip_embeds(self, request: dict, picture: bytes) -> tuple[dict, bytes]:
        embeds = self.pipeline.clip_image_embeds(decode_image(picture, "picture")).astype(np.float32)
        return {"shape": list(embeds.shape)}, embeds.tobytes()

    def _pipeline(self, vae: str) -> SDPipeline:
        with self._lock:
            if vae not in self._pipelines:
                self._pipelines[vae] = SDPipeline(self.pipeline.manifest, self.pipeline.backend, vae)
            return self._pipelines[vae]

    # -- stimuli -----------------------------------------------------------------------------------------------------

    def _stimulus(self, request: dict, picture: bytes) -> Image.Image:
        """The request's stimulus: decoded from `picture` when sent, else from this server's cache."""
        sha = _get(request, "stimulus_sha256", str)
        if picture:
            if hashlib.sha256(picture).hexdigest() != sha:
                raise RequestError(f"stimulus {sha[:12]}: its bytes do not match their SHA-256 (damaged in transit)")
            image = decode_image(picture, _get(request, "stimulus_name", str, sha[:12]))
        with self._lock:
            if picture:
                self._stimuli[sha] = image
            elif sha not in self._stimuli:
                raise RequestError(f"stimulus {sha[:12]} is not cached on this server", UNKNOWN_STIMULUS)
            self._stimuli.move_to_end(sha)
            while len(self._stimuli) > self.max_stimuli:
                self._stimuli.popitem(last=False)
            return self._stimuli[sha]


def _get(request: dict, name: str, kind: type, *default):
    """A request field of the expected JSON type (an int is a float too), or the default, or a RequestError."""
    if name not in request or (default and request[name] is None):
        if default:
            return default[0]
        raise RequestError(f"request without {name!r}")
    value = request[name]
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) if kind is float else type(value) is kind
    if not ok:
        raise RequestError(f"request field {name!r} must be {kind.__name__}, not {type(value).__name__}")
    return value
