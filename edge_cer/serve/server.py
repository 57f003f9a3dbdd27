"""`edge-cer serve` on PyTriton: NVIDIA's tritonserver in front of `GenerationService`, over HTTP and gRPC.

Runs in the serve venv (PyTriton pins numpy < 2; `./setup.sh` makes `.venv-serve`), started by `command.py` or as
`python -m edge_cer.serve.server --engines DIR ...`. Triton gives the protocol, health and readiness
(`/v2/health/ready`, per-model ready), metrics, and its dynamic batcher in front of each model: the queue limit
(`--max-queue`; a full queue refuses at once) and per-request deadlines (requests carry a queue timeout; the
default is `--queue-timeout-s`). Each model instance renders one picture per call, as the terminal would, so
pictures are bit-identical to local generation; `--instances N` renders N at once on one shared pipeline
(ONNX Runtime sessions are thread-safe). SIGINT/SIGTERM stop gracefully: in-flight requests get `--drain-s`.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import sysconfig

import numpy as np

from edge_cer.backends import backend_options
from edge_cer.errors import EdgeCerError
from edge_cer.serve.protocol import GENERATE, INPUTS, OUTPUTS, first, to_bytes_tensor
from edge_cer.serve.service import GenerationService

log = logging.getLogger("edge_cer.serve")


def _infer_function(service: GenerationService, model: str):
    def infer(requests):
        # One response per request, in order; the batcher may hand several requests to one call.
        responses = []
        for request in requests:
            record, payload = service.handle(model, first(request["request"]), first(request["picture"]))
            responses.append({"record": to_bytes_tensor(record), "payload": to_bytes_tensor(payload)})
        return responses

    return infer


def bind(triton, service: GenerationService, *, instances: int, max_queue: int, queue_timeout_s: float) -> None:
    from pytriton.model_config import DynamicBatcher, ModelConfig, QueuePolicy, Tensor
    from pytriton.model_config.common import TimeoutAction

    policy = QueuePolicy(timeout_action=TimeoutAction.REJECT, allow_timeout_override=True, max_queue_size=max_queue,
                         default_timeout_microseconds=round(queue_timeout_s * 1e6))
    for model in service.models:
        # Generation renders one picture per call (bit-identical to a terminal's); the small models take what the
        # batcher gathered in one call.
        config = ModelConfig(max_batch_size=1 if model == GENERATE else 8,
                             batcher=DynamicBatcher(default_queue_policy=policy))
        triton.bind(model_name=model, infer_func=[_infer_function(service, model)] * instances,
                    inputs=[Tensor(name=n, dtype=bytes, shape=(1,)) for n in INPUTS],
                    outputs=[Tensor(name=n, dtype=bytes, shape=(1,)) for n in OUTPUTS], config=config)


def serve(args: argparse.Namespace) -> int:
    from pytriton.triton import Triton, TritonConfig

    from edge_cer.pipeline import SDPipeline

    # numpy 2's promotion rules (NEP 50), under which the numpy schedulers are written and tested; PyTriton's
    # numpy 1.26 has them behind this switch. Without it a served picture differs from a terminal's in the last bit.
    if hasattr(np, "_set_promotion_state"):
        np._set_promotion_state("weak")
    # tritonserver's python backend must load this interpreter's libpython, not the system's.
    libdir = sysconfig.get_config_var("LIBDIR")
    os.environ["LD_LIBRARY_PATH"] = os.pathsep.join(filter(None, [libdir, os.environ.get("LD_LIBRARY_PATH")]))
    pipeline = SDPipeline.from_export(args.engines, provider=args.provider, **backend_options(args))
    service = GenerationService(pipeline, max_stimuli=args.max_stimuli)
    config = TritonConfig(http_address=args.host, http_port=args.http_port, grpc_address=args.host,
                          grpc_port=args.grpc_port, metrics_port=args.metrics_port, exit_timeout_secs=args.drain_s,
                          log_verbose=0)
    # SIGTERM (systemd, docker stop, kill) stops as gracefully as Ctrl-C: PyTriton's serve() drains on
    # KeyboardInterrupt. Raised here, not by re-sending SIGINT, which a script's background job ignores.
    signal.signal(signal.SIGTERM, _interrupt)
    with Triton(config=config) as triton:
        bind(triton, service, instances=args.instances, max_queue=args.max_queue, queue_timeout_s=args.queue_timeout_s)
        print(f"edge-cer serve: ready: grpc://{args.host}:{args.grpc_port} http://{args.host}:{args.http_port} "
              f"({args.engines}, {pipeline.backend.name}, models: {', '.join(service.models)})", flush=True)
        triton.serve()
    print("edge-cer serve: stopped", flush=True)
    return 0


def _interrupt(*_) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    from edge_cer.serve.command import add_arguments

    parser = argparse.ArgumentParser(prog="edge-cer serve")
    add_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="edge-cer serve: %(message)s")
    try:
        return serve(args)
    except EdgeCerError as exc:
        print(f"edge-cer serve: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
