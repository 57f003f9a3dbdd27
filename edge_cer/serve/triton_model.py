"""The pipeline model of `edge-cer export triton-repo`, run by Triton's python backend (`1/model.py` imports it).

`edge_cer_generate` holds the pipeline: the runtime's numpy `SDPipeline`, whose backend is `TritonGraphs` (each
graph call a BLS request to that graph's model, so Triton's ONNX Runtime or TensorRT backend runs it and batches
it with other pictures' calls), and the `GenerationService` that `edge-cer serve` uses. The other models of the
protocol forward their requests to it, so one stimulus cache serves precompute and generate.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edge_cer.manifest import load_manifest, verify_files
from edge_cer.serve.protocol import FAILED, GENERATE, INPUTS, OUTPUTS, dumps, first, loads, to_bytes_tensor

FORWARDED_AS = "forwarded_as"  # request field: the model a forwarded request was sent to
pb_utils = None  # triton_python_backend_utils, which only Triton's python backend provides (see `initialize`)


class TritonGraphs:
    """A `Backend` (edge_cer.backends) whose graphs are other models of the same Triton server."""

    name = "triton-bls"

    def __init__(self, manifest):
        self.outputs = {name: [t.name for t in spec.outputs] for name, spec in manifest.graphs.items()}

    def load(self) -> None:
        pass

    def unload(self) -> None:
        pass

    def infer(self, graph: str, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        inputs = [pb_utils.Tensor(n, np.ascontiguousarray(a)) for n, a in feeds.items()]
        request = pb_utils.InferenceRequest(model_name=graph, requested_output_names=self.outputs[graph], inputs=inputs)
        response = request.exec()
        if response.has_error():
            raise RuntimeError(f"{graph}: {response.error().message()}")
        return {n: pb_utils.get_output_tensor_by_name(response, n).as_numpy() for n in self.outputs[graph]}


class TritonPythonModel:
    def initialize(self, args: dict) -> None:
        global pb_utils
        import triton_python_backend_utils as pb_utils

        from edge_cer.pipeline import SDPipeline
        from edge_cer.serve.service import GenerationService

        self.model, self.service = args["model_name"], None
        if self.model != GENERATE:
            return
        root = Path(args["model_repository"]) / args["model_version"] / "export"
        manifest = load_manifest(root, verify=False)
        # The graphs live in their own models (checked against these hashes at export); the rest is here.
        verify_files(root, {rel: h for rel, h in manifest.data["files"].items() if (root / rel).exists()})
        if hasattr(np, "_set_promotion_state"):  # numpy 1.x: the schedulers' numpy 2 promotion rules (server.py)
            np._set_promotion_state("weak")
        self.service = GenerationService(SDPipeline(manifest, TritonGraphs(manifest)))

    def execute(self, requests) -> list:
        responses = []
        for request in requests:
            body, picture = (first(pb_utils.get_input_tensor_by_name(request, n).as_numpy()) for n in INPUTS)
            if self.service is None:
                record, payload = self._forward(body, picture)
            else:
                fields = loads(body)
                record, payload = self.service.handle(fields.pop(FORWARDED_AS, GENERATE), dumps(fields), picture)
            tensors = [pb_utils.Tensor(n, to_bytes_tensor(v)) for n, v in zip(OUTPUTS, (record, payload))]
            responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
        return responses

    def _forward(self, body: bytes, picture: bytes) -> tuple[bytes, bytes]:
        fields = dict(loads(body), **{FORWARDED_AS: self.model})
        inputs = [pb_utils.Tensor(n, to_bytes_tensor(v)) for n, v in zip(INPUTS, (dumps(fields), picture))]
        response = pb_utils.InferenceRequest(model_name=GENERATE, requested_output_names=list(OUTPUTS),
                                             inputs=inputs).exec()
        if response.has_error():
            return dumps({"error": response.error().message(), "kind": FAILED}), b""
        record, payload = (first(pb_utils.get_output_tensor_by_name(response, n).as_numpy()) for n in OUTPUTS)
        return record, payload
