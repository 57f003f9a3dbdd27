"""The CER session: protocol, stimuli, counterbalancing, the phase machine, crash-safe data and exports.

Torch-free. See docs/session.md. The pieces other parts use:

    from edge_cer.session import Session, open_session
    from edge_cer.session.bids import export_bids, export_tidy

The session never makes pictures or listens; edge_cer.runtime wires the parts that do, and edge_cer.headless
drives a session with a scripted participant.
"""

from edge_cer.session.opening import open_session
from edge_cer.session.phases import Phase, PictureRequest, Session, SessionClock

__all__ = ["Phase", "PictureRequest", "Session", "SessionClock", "open_session"]
