"""Picture generation served over NVIDIA Triton's protocol (KServe v2, HTTP and gRPC): one GPU server, many terminals.

    protocol.py     the wire contract: model names, tensors, JSON requests and records (client and server)
    service.py      the server's work on one request: stimulus cache, the local generator, records
    server.py       `edge-cer serve` on PyTriton (its own venv: PyTriton pins numpy < 2)
    command.py      the CLI, which starts server.py in that venv when this one lacks PyTriton
    client.py       `RemoteGenerator`: the local generator's interface over `tritonclient`
    triton_repo.py  `edge-cer export triton-repo`: a model repository for Triton's own container
    triton_model.py the repository's pipeline model (Triton python backend, BLS over the graph models)
"""
