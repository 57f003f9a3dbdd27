"""The CER session: protocol, stimuli, counterbalancing, the headless engine, crash-safe data and exports.

Torch-free. See docs/session.md. The pieces other parts use:

    from edge_cer.session import Session, open_session, run_headless, run_scripted_demo
    from edge_cer.session.generation import GeneratedPicture, PictureGenerator, Transcriber, Transcript
    from edge_cer.session.bids import export_bids, export_tidy
"""

from edge_cer.session.engine import Phase, Session, SessionClock
from edge_cer.session.run import open_session, run_headless, run_scripted_demo, run_session

__all__ = ["Phase", "Session", "SessionClock", "open_session", "run_headless", "run_scripted_demo", "run_session"]
