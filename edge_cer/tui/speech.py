"""Whether the terminal UI can listen: the microphone check shown on the setup screen.

Listening itself is the live pipeline's (edge_cer.live.speaking.LivePipeline.listen), as in `edge-cer run`.
"""

from __future__ import annotations



def microphone_problem() -> str | None:
    """Why live speech cannot work here (no PortAudio, no input device), or None."""
    try:
        import sounddevice as sd

        sd.query_devices(kind="input")
    except Exception as exc:  # OSError without PortAudio, PortAudioError or ValueError without a device
        return f"no microphone ({str(exc).splitlines()[0]})"
    return None
