"""Live speech for the speaking phase: microphone -> `RecognizerWorker`, one utterance per phase, in a thread.

Events (`Partial`, `Final` from edge_cer.speech.recognizer) go to a callback in the listening thread; the app
posts them to itself as messages. Audio times are seconds from when the microphone opened (the phase onset).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator

import numpy as np

from edge_cer.errors import EdgeCerError


def microphone_problem() -> str | None:
    """Why live speech cannot work here (no PortAudio, no input device), or None."""
    try:
        import sounddevice as sd

        sd.query_devices(kind="input")
    except Exception as exc:  # OSError without PortAudio, PortAudioError or ValueError without a device
        return f"no microphone ({str(exc).splitlines()[0]})"
    return None


def listen(recognizer, on_event: Callable, stop: threading.Event,
           source: Callable[[], Iterator[np.ndarray]] | None = None) -> None:
    """Feed audio to the recognizer until `stop` is set, then finish the utterance (its Final comes last).

    Blocking: run it in a worker thread. `source` defaults to the microphone (edge_cer.speech.audio).
    """
    from edge_cer.speech.audio import microphone_source
    from edge_cer.speech.recognizer import RecognizerWorker

    worker = RecognizerWorker(recognizer, on_event=on_event)
    try:
        for chunk in (source or microphone_source)():
            if stop.is_set():
                break
            worker.push(chunk)
    finally:
        try:
            worker.close(timeout=30)
        except Exception as exc:
            raise EdgeCerError(f"speech recogniser failed: {exc}") from exc
