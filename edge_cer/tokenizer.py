"""CLIP tokenisation with the `tokenizers` library on the exported tokenizer.json, as diffusers calls it:
padded to 77 with the model's own pad token, truncated to start + 75 + end, no attention mask."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from edge_cer.errors import EdgeCerError
from edge_cer.graphs import TEXT_LENGTH

log = logging.getLogger(__name__)


class CLIPTokenizer:
    def __init__(self, folder: Path, pad_token: str):
        from tokenizers import Tokenizer

        path = Path(folder) / "tokenizer.json"
        if not path.is_file():
            raise EdgeCerError(f"{path}: missing; re-run `edge-cer export sd`")
        self.tokenizer = Tokenizer.from_file(str(path))
        pad_id = self.tokenizer.token_to_id(pad_token)
        if pad_id is None:
            raise EdgeCerError(f"{path}: pad token {pad_token!r} is not in the vocabulary; re-export the model")
        self.tokenizer.enable_truncation(TEXT_LENGTH)
        self.tokenizer.enable_padding(length=TEXT_LENGTH, pad_id=pad_id, pad_token=pad_token)

    def __call__(self, texts: list[str]) -> np.ndarray:
        encodings = self.tokenizer.encode_batch(texts)
        for text, enc in zip(texts, encodings):
            if enc.overflowing:
                dropped = self.tokenizer.decode(enc.overflowing[0].ids, skip_special_tokens=True)
                log.warning("prompt truncated to %d CLIP tokens; dropped: %r (from %r)", TEXT_LENGTH, dropped, text)
        return np.array([enc.ids for enc in encodings], dtype=np.int64)
