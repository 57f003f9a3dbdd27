"""The wire contract of `edge-cer serve` and of `edge-cer export triton-repo`'s pipeline model; the client speaks it.

Every model takes the same two inputs and gives the same two outputs, BYTES tensors of shape [1] per request
(Triton adds the batch dimension):

    request  JSON: what to do (prompt, seed, strength, ...; floats travel as JSON numbers, so they round-trip exactly)
    picture  a stimulus file's bytes, or empty when the server already holds that stimulus (by its SHA-256)
    record   JSON: the generator's params and timings, or {"error": ..., "kind": ...}
    payload  a PNG (generate), float32 bytes (clip embeds), or empty

Errors of one request travel in its record, so one bad request never fails the others Triton batched with it.
"""

from __future__ import annotations

import json

import numpy as np

GENERATE = "edge_cer_generate"  # stimulus + reappraisal -> supportive picture (the local generator, served)
PRECOMPUTE = "edge_cer_precompute"  # stimulus -> cached image embeddings and latents, before the participant speaks
INFO = "edge_cer_info"  # the export's manifest and the server's engine
CLIP_EMBEDS = "edge_cer_clip_embeds"  # picture -> projected CLIP embeddings (the safety gate's zero-shot scores)
MODELS = (GENERATE, PRECOMPUTE, INFO, CLIP_EMBEDS)

INPUTS = ("request", "picture")
OUTPUTS = ("record", "payload")

# record["kind"] of an error; the client re-sends the stimulus on UNKNOWN_STIMULUS (e.g. after a server restart).
UNKNOWN_STIMULUS, BAD_REQUEST, FAILED = "unknown_stimulus", "bad_request", "failed"


def to_bytes_tensor(value: bytes) -> np.ndarray:
    """One request's BYTES tensor: shape [1, 1] (batch of one, one element)."""
    return np.array([[value]], dtype=np.object_)


def first(tensor: np.ndarray) -> bytes:
    """The single element of a request's BYTES tensor (batch of one)."""
    value = tensor.reshape(-1)[0]
    return value if isinstance(value, bytes) else bytes(value)


def dumps(data: dict) -> bytes:
    return json.dumps(data, sort_keys=True).encode()


def loads(data: bytes) -> dict:
    return json.loads(data.decode()) if data else {}


class RequestError(Exception):
    """What the server tells one client about its request (sent back in the record, never raised to Triton)."""

    def __init__(self, message: str, kind: str = BAD_REQUEST):
        super().__init__(message)
        self.kind = kind
