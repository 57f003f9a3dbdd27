"""Read a CTranslate2 `model.bin` (binary version 6) into numpy arrays, without the `ctranslate2` package.

The layout is the one `ctranslate2.specs.model_spec.ModelSpec._serialize` writes: a little-endian header
(version, spec name, revision), then each variable as name, rank, dims, dtype id, byte count and raw bytes, then
aliases (name -> variable name; Whisper ties the output projection to the token embedding this way).
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

# CTranslate2's DataType enum (include/ctranslate2/types.h), in order.
_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16}
_SUPPORTED_VERSION = 6


class _Reader:
    def __init__(self, data: bytes):
        self.data, self.pos = data, 0

    def unpack(self, fmt: str):
        values = struct.unpack_from("<" + fmt, self.data, self.pos)
        self.pos += struct.calcsize("<" + fmt)
        return values[0] if len(values) == 1 else values

    def string(self) -> str:
        length = self.unpack("H")  # includes the trailing NUL
        text = self.data[self.pos : self.pos + length - 1].decode("utf-8")
        self.pos += length
        return text

    def raw(self, n: int) -> bytes:
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk


def read_model_bin(path: str | Path) -> tuple[str, dict[str, np.ndarray]]:
    """Return (spec name, {variable name: array}) with aliases resolved to the arrays they name."""
    reader = _Reader(Path(path).read_bytes())
    version = reader.unpack("I")
    if version != _SUPPORTED_VERSION:
        raise ValueError(f"{path}: CTranslate2 binary version {version}; this reader supports {_SUPPORTED_VERSION}")
    spec = reader.string()
    reader.unpack("I")  # spec revision: the variable names below are what we check instead
    variables: dict[str, np.ndarray] = {}
    for _ in range(reader.unpack("I")):
        name = reader.string()
        shape = [reader.unpack("I") for _ in range(reader.unpack("B"))]
        dtype_id = reader.unpack("B")
        if dtype_id not in _DTYPES:
            raise ValueError(f"{path}: variable {name} has CTranslate2 dtype id {dtype_id} (quantised?); "
                             "convert the model again with --quantization float32 or float16")
        data = reader.raw(reader.unpack("I"))
        variables[name] = np.frombuffer(data, dtype=_DTYPES[dtype_id]).reshape(shape)
    for _ in range(reader.unpack("I")):
        alias, target = reader.string(), reader.string()
        variables[alias] = variables[target]
    return spec, variables
