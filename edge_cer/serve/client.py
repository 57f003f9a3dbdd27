"""`RemoteGenerator`: the terminal's picture generator when the engines live on a server (`edge-cer serve`, or
Triton serving `edge-cer export triton-repo`), over `tritonclient`'s gRPC client.

    generator = RemoteGenerator("grpc://gpu-box:8001", guidance=7.5, vae="full")   # edge_cer.runtime builds it
    picture = generator.generate(Path("stimulus.png"), "he will recover", seed=1, strength=0.6, ip_scale=0.6, steps=20)

Same verbs and records as `EngineGenerator`: the server returns the manifest hash, seed and parameters of every
picture (`params`, plus `server`). Every call is idempotent (a picture is a function of its request), so calls that
meet an unavailable server or a full queue are retried with exponential backoff; when the server stays away the
error is `GeneratorLost`, which stops a session (resumable with --resume) instead of leaving every later trial
without a picture. A stimulus is sent once; the server keeps it, with its embeddings and latents, by SHA-256.
"""

from __future__ import annotations

import copy
import hashlib
import io
import queue
import time
from pathlib import Path

import numpy as np
from PIL import Image

from edge_cer.errors import EdgeCerError, GeneratorLost
from edge_cer.manifest import ExportManifest
from edge_cer.serve.protocol import (
    CLIP_EMBEDS, GENERATE, INFO, INPUTS, OUTPUTS, PRECOMPUTE, UNKNOWN_STIMULUS, dumps, first, loads, to_bytes_tensor,
)
from edge_cer.engine import GeneratedPicture

RETRYABLE = ("StatusCode.UNAVAILABLE", "StatusCode.RESOURCE_EXHAUSTED")  # down, restarting, or its queue is full
CANCEL_POLL_S = 0.05  # how often a running call asks `callback_on_step_end` whether it is still wanted
HEALTH_EVERY_S, HEALTH_TIMEOUT_S = 1.0, 2.0  # a running call checks that the server still answers
LOST_AFTER_S = 10.0  # a stopping server drains (edge-cer serve --drain-s); one unready longer than this is gone


def grpc_address(url: str) -> str:
    """host:port from grpc://host:port or host:port."""
    address = url.removeprefix("grpc://")
    if "://" in address or ":" not in address:
        raise EdgeCerError(f"--server {url}: expected grpc://HOST:PORT (edge-cer serve's gRPC port, 8001 by default)")
    return address


class RemoteGenerator:
    def __init__(self, url: str, *, guidance: float = 7.5, negative_prompt: str | None = None,
                 scheduler: str | None = None, vae: str = "full", timeout_s: float = 120.0,
                 connect_timeout_s: float = 10.0, retries: int = 4, backoff_s: float = 0.25):
        try:
            import tritonclient.grpc as grpcclient
        except ImportError as exc:
            raise EdgeCerError("--server needs tritonclient; install it with: pip install 'edge-cer[client]'") from exc
        self.url, self._grpc = f"grpc://{grpc_address(url)}", grpcclient
        self.guidance, self.negative_prompt, self.scheduler, self.vae = guidance, negative_prompt, scheduler, vae
        self.timeout_s, self.retries, self.backoff_s = timeout_s, retries, backoff_s
        self._client = grpcclient.InferenceServerClient(grpc_address(url))
        self._known: set[str] = set()  # stimuli this server holds (as far as we know)
        self._wait_ready(connect_timeout_s)
        info, _ = self._call(INFO, {})
        self.info = info
        self.pipeline = ServedPipeline(self, ExportManifest(Path(self.url), info["manifest"]))

    # -- the generator's verbs ----------------------------------------------------------------------------------------

    def precompute(self, stimulus_path: Path) -> None:
        self._with_stimulus(PRECOMPUTE, {"vae": self.vae}, Path(stimulus_path))

    def generate(self, stimulus_path: Path, prompt: str, *, seed: int, strength: float, ip_scale: float, steps: int,
                 callback_on_step_end=None) -> GeneratedPicture:
        """`callback_on_step_end(i, n)` returning False cancels the call (polled while it runs; the server's step
        loop is not reached), giving an `interrupted` picture as the local engine does."""
        start = time.perf_counter()
        request = dict(prompt=prompt, negative_prompt=self.negative_prompt, guidance=self.guidance,
                       scheduler=self.scheduler, vae=self.vae, seed=seed, strength=strength, ip_scale=ip_scale,
                       steps=steps)
        stop = (lambda: callback_on_step_end(0, steps) is False) if callback_on_step_end else None
        result = self._with_stimulus(GENERATE, request, Path(stimulus_path), stop=stop)
        if result is None:
            params = dict(request, interrupted=True, server=self.url)
            return GeneratedPicture(png=b"", params=params, timings={"total_s": time.perf_counter() - start})
        record, png = result
        timings = {**record["timings"], "server_total_s": record["timings"]["total_s"],
                   "total_s": time.perf_counter() - start}
        return GeneratedPicture(png=png, params=dict(record["params"], server=self.url), timings=timings)

    def with_settings(self, **settings) -> RemoteGenerator:
        """The same connection with other fixed settings (guidance, negative_prompt, scheduler, vae)."""
        other = copy.copy(self)
        vars(other).update(settings)
        return other

    def clip_image_embeds(self, image: Image.Image) -> np.ndarray:
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        record, payload = self._call(CLIP_EMBEDS, {}, buffer.getvalue())
        return np.frombuffer(payload, dtype=np.float32).reshape(record["shape"])

    def close(self) -> None:
        self._client.close()

    # -- calls --------------------------------------------------------------------------------------------------------

    def _wait_ready(self, timeout_s: float) -> None:
        """A server that is still loading its engines is waited for; one that never answers is a one-line error."""
        from tritonclient.utils import InferenceServerException

        deadline, why = time.monotonic() + timeout_s, "its models are not ready"
        while True:
            try:
                if all(self._client.is_model_ready(m, client_timeout=timeout_s) for m in (GENERATE, PRECOMPUTE, INFO)):
                    return
            except InferenceServerException as exc:
                why = (exc.message() or str(exc)).splitlines()[0][:200]
            if time.monotonic() > deadline:
                raise EdgeCerError(f"--server {self.url}: no edge-cer server ready within {timeout_s:g} s ({why}); "
                                   "start `edge-cer serve` there, or check the address and port")
            time.sleep(0.2)

    # -- requests ---------------------------------------------------------------------------------------------------

    def _with_stimulus(self, model: str, request: dict, path: Path, stop=None):
        """Send the stimulus by hash once it is known there; send it again if the server lost it (a restart)."""
        data = path.read_bytes()
        sha = hashlib.sha256(data).hexdigest()
        request = dict(request, stimulus_sha256=sha, stimulus_name=path.name)
        try:
            result = self._call(model, request, b"" if sha in self._known else data, stop=stop)
        except _Refused as exc:
            if exc.kind != UNKNOWN_STIMULUS:
                raise EdgeCerError(f"{self.url}: {exc}") from None
            self._known.discard(sha)
            result = self._call(model, request, data, stop=stop)
        self._known.add(sha)
        return result

    def _call(self, model: str, request: dict, picture: bytes = b"", *, timeout_s: float | None = None, stop=None):
        """(record, payload), retrying what is retryable; None when `stop()` cancelled it."""
        from tritonclient.utils import InferenceServerException

        timeout_s = timeout_s or self.timeout_s
        inputs = []
        for name, value in zip(INPUTS, (dumps(request), picture)):
            tensor = self._grpc.InferInput(name, [1, 1], "BYTES")
            tensor.set_data_from_numpy(to_bytes_tensor(value))
            inputs.append(tensor)
        outputs = [self._grpc.InferRequestedOutput(name) for name in OUTPUTS]
        for attempt in range(1, self.retries + 1):
            try:
                result = self._infer(model, inputs, outputs, timeout_s, stop)
                break
            except InferenceServerException as exc:
                message = (exc.message() or str(exc)).splitlines()[0][:200]
                if exc.status() not in RETRYABLE:
                    raise EdgeCerError(f"{self.url} {model}: {exc.status()}: {message}") from None
                if attempt == self.retries:
                    raise GeneratorLost(f"{self.url}: server unavailable after {attempt} tries ({message}); start "
                                        "`edge-cer serve` again, then continue the session with --resume") from None
                time.sleep(self.backoff_s * 2 ** (attempt - 1))
        if result is None:
            return None
        record, payload = loads(first(result.as_numpy("record"))), first(result.as_numpy("payload"))
        if "error" in record:
            raise _Refused(record["error"], record.get("kind"))
        return record, payload

    def _infer(self, model, inputs, outputs, timeout_s, stop):
        """The call, watched: cancelled when `stop()` says so; `GeneratorLost` when the server stops answering
        health checks (or stays unready past `LOST_AFTER_S`) while the picture is being made, as a server whose
        process died mid-request does; its connection may stay open until the call's own deadline."""
        if stop is not None and stop():
            return None
        # `timeout` (µs) is Triton's queue deadline: a request the client no longer waits for is not started.
        done = queue.Queue(maxsize=1)
        call = self._client.async_infer(model, inputs, lambda result, error: done.put((result, error)),
                                        outputs=outputs, client_timeout=timeout_s, timeout=round(timeout_s * 1e6))
        next_check, unready_since = time.monotonic() + HEALTH_EVERY_S, None
        while True:
            try:
                result, error = done.get(timeout=CANCEL_POLL_S)
            except queue.Empty:
                if stop is not None and stop():
                    call.cancel()
                    return None
                if time.monotonic() >= next_check:
                    unready_since = self._check_health(call, unready_since)
                    next_check = time.monotonic() + HEALTH_EVERY_S
                continue
            if error is not None:
                raise error
            return result

    def _check_health(self, call, unready_since: float | None) -> float | None:
        from tritonclient.utils import InferenceServerException

        try:
            ready = self._client.is_server_ready(client_timeout=HEALTH_TIMEOUT_S)
        except InferenceServerException as exc:
            call.cancel()
            raise GeneratorLost(f"{self.url}: the server stopped answering during a request ({exc.status()}); "
                                "start `edge-cer serve` again, then continue the session with --resume") from None
        now = time.monotonic()
        if ready:
            return None
        if unready_since is not None and now - unready_since > LOST_AFTER_S:
            call.cancel()
            raise GeneratorLost(f"{self.url}: the server has not been ready for {LOST_AFTER_S:g} s during a request; "
                                "start `edge-cer serve` again, then continue the session with --resume")
        return unready_since or now


class _Refused(Exception):
    def __init__(self, message: str, kind: str | None):
        super().__init__(message)
        self.kind = kind


class ServedPipeline:
    """What the safety gate reads from a pipeline (`manifest.data`, `clip_image_embeds`), answered by the server."""

    def __init__(self, generator: RemoteGenerator, manifest: ExportManifest):
        self.manifest, self.clip_image_embeds = manifest, generator.clip_image_embeds

