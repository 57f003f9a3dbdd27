"""`edge-cer export triton-repo`: every config parses as Triton's ModelConfig and matches the graph it serves, the
graph files are the export's hashed files, and the pipeline model, run on a stand-in for Triton's python backend
whose BLS calls run the repository's ONNX files, makes the local generator's picture.

Triton's own container is not installable here, and PyTriton's bundled tritonserver carries only the python
backend (no onnxruntime or tensorrt backend), so the repository has not been loaded by a real Triton server.
"""

from __future__ import annotations

import hashlib
import sys
import types

import numpy as np
import pytest

from edge_cer.errors import EdgeCerError
from edge_cer.manifest import load_manifest
from edge_cer.serve.protocol import GENERATE, INFO, INPUTS, OUTPUTS, PRECOMPUTE, dumps, first, loads, to_bytes_tensor
from edge_cer.serve.triton_repo import write_repository

model_config_pb2 = pytest.importorskip("tritonclient.grpc.model_config_pb2", reason="needs tritonclient")


def _configs(repo):
    from google.protobuf import text_format

    return {d.name: text_format.Parse((d / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())
            for d in repo.iterdir()}


class FakeTriton:
    """Triton's python-backend utilities, enough for BLS: graph models run their ONNX file with ONNX Runtime after
    the request is checked against the model's config; python models run in process."""

    def __init__(self, repo, configs):
        import onnxruntime as ort

        self.configs, self.python_models = configs, {}
        self.sessions = {name: ort.InferenceSession(str(repo / name / "1" / "model.onnx"))
                         for name, c in configs.items() if c.backend == "onnxruntime"}
        self.module = types.ModuleType("triton_python_backend_utils")
        triton = self

        class Tensor:
            def __init__(self, name, array):
                self._name, self._array = name, array

            def name(self):
                return self._name

            def as_numpy(self):
                return self._array

        class InferenceResponse:
            def __init__(self, output_tensors=(), error=None):
                self.tensors, self._error = {t.name(): t for t in output_tensors}, error

            def has_error(self):
                return self._error is not None

            def error(self):
                return types.SimpleNamespace(message=lambda: self._error)

        class InferenceRequest:
            def __init__(self, model_name, requested_output_names, inputs):
                self.model, self.outputs, self.tensors = model_name, requested_output_names, {t.name(): t for t in inputs}

            def exec(self):
                return triton.run(self)

        self.Tensor, self.InferenceResponse, self.InferenceRequest = Tensor, InferenceResponse, InferenceRequest
        self.module.__dict__.update(
            Tensor=Tensor, InferenceResponse=InferenceResponse, InferenceRequest=InferenceRequest,
            get_input_tensor_by_name=lambda request, name: request.tensors.get(name),
            get_output_tensor_by_name=lambda response, name: response.tensors.get(name))

    def run(self, request):
        config = self.configs[request.model]
        for spec in config.input:  # Triton refuses what its config does not describe
            array = request.tensors[spec.name].as_numpy()
            dims = list(array.shape[1:] if config.max_batch_size else array.shape)
            assert not config.max_batch_size or array.shape[0] <= config.max_batch_size
            assert len(dims) == len(spec.dims) and all(d in (-1, a) for d, a in zip(spec.dims, dims)), spec.name
        if request.model in self.python_models:
            return self.python_models[request.model].execute([request])[0]
        feeds = {n: t.as_numpy() for n, t in request.tensors.items()}
        outputs = self.sessions[request.model].run(request.outputs, feeds)
        return self.InferenceResponse([self.Tensor(n, a) for n, a in zip(request.outputs, outputs)])


def test_repository_configs_match_the_export(tiny_export, tmp_path):
    engines = tiny_export()
    repo = write_repository(engines, tmp_path / "repo", instances=2)
    manifest = load_manifest(engines)
    configs = _configs(repo)
    assert set(configs) == set(manifest.graphs) | {GENERATE, PRECOMPUTE, INFO}
    for name, spec in manifest.graphs.items():
        c = configs[name]
        assert c.name == name and c.backend == "onnxruntime" and c.instance_group[0].count == 2
        assert [i.name for i in c.input] == [t.name for t in spec.inputs]
        assert [o.name for o in c.output] == [t.name for t in spec.outputs]
        onnx = (repo / name / "1" / "model.onnx").read_bytes()
        assert hashlib.sha256(onnx).hexdigest() == manifest.data["files"][f"{name}/model.onnx"]
        # The UNet's timestep and ip_scale are per call, not per batch row: no cross-request batching for it.
        assert (c.max_batch_size, c.HasField("dynamic_batching")) == ((0, False) if name == "unet" else (8, True))
    for name in (GENERATE, PRECOMPUTE, INFO):
        c = configs[name]
        assert c.backend == "python" and [i.name for i in c.input] == list(INPUTS)
        assert {i.data_type for i in c.input} == {model_config_pb2.TYPE_STRING}
        assert (repo / name / "1" / "edge_cer" / "serve" / "triton_model.py").is_file()
    assert configs[GENERATE].instance_group[0].count == 2  # the forwarding models need one
    with pytest.raises(EdgeCerError, match="exists; choose a new folder or pass --force"):
        write_repository(engines, repo)
    with pytest.raises(EdgeCerError, match="has no TensorRT plans"):
        write_repository(engines, tmp_path / "trt", backend="tensorrt")


def test_pipeline_model_makes_the_local_picture(tiny_export, stimulus_png, tmp_path, monkeypatch):
    from edge_cer.engine import EngineGenerator
    from edge_cer.image import load_image
    from edge_cer.pipeline import SDPipeline

    engines = tiny_export()
    repo = write_repository(engines, tmp_path / "repo", kind="cpu")
    triton = FakeTriton(repo, _configs(repo))
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", triton.module)
    monkeypatch.delitem(sys.modules, "edge_cer.serve.triton_model", raising=False)
    from edge_cer.serve.triton_model import TritonPythonModel

    for name in (GENERATE, PRECOMPUTE, INFO):
        model = triton.python_models[name] = TritonPythonModel()
        model.initialize({"model_name": name, "model_repository": str(repo / name), "model_version": "1"})

    def call(model, request, picture=b""):
        tensors = [triton.Tensor(n, to_bytes_tensor(v)) for n, v in zip(INPUTS, (dumps(request), picture))]
        response = triton.InferenceRequest(model, list(OUTPUTS), tensors).exec()
        record, payload = (first(response.tensors[n].as_numpy()) for n in OUTPUTS)
        return loads(record), payload

    data = stimulus_png.read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    assert call(INFO, {})[0]["manifest_sha256"] == load_manifest(engines).sha256
    assert call(PRECOMPUTE, {"stimulus_sha256": sha}, data)[0] == {"stimulus_sha256": sha}  # forwarded, cached
    request = dict(stimulus_sha256=sha, prompt="he is safe now", seed=4, strength=0.6, ip_scale=0.6, steps=3,
                   guidance=7.5)
    record, png = call(GENERATE, request)  # the stimulus by its hash alone
    local = EngineGenerator(SDPipeline.from_export(engines)).render(load_image(stimulus_png), "he is safe now",
                                                                    seed=4, strength=0.6, ip_scale=0.6, steps=3)
    assert png == local.png
    assert record["params"] == dict(local.params, engine="triton-bls")
    assert np.isfinite(list(record["timings"].values())).all()
