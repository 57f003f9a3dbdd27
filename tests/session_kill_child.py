"""The process the kill -9 test kills: a scripted session with placeholder pictures, resumed when one is open.

    python tests/session_kill_child.py DATA_DIR PROTOCOL.toml
Prints `trial N recorded` after each trial's row is committed.
"""

import sys
from pathlib import Path

from edge_cer.session.data import KEY_FILE, list_sessions
from edge_cer.session.ownership import read_keys
from edge_cer.session.participant import ScriptedParticipant
from edge_cer.session.protocol import load_protocol
from edge_cer.headless import run_session
from edge_cer.runtime import build_runtime

LABEL = "P001"

data_dir, protocol_file = Path(sys.argv[1]), Path(sys.argv[2])
pseudonym = read_keys(data_dir / KEY_FILE).get(LABEL)
resume = any(s.participant == pseudonym and s.state == "running" for s in list_sessions(data_dir))
run_session(
    ScriptedParticipant.from_file(), LABEL, data_dir, protocol=None if resume else load_protocol(protocol_file),
    runtime=lambda protocol: build_runtime(protocol, placeholder=True), resume=resume, min_free_bytes=1_000_000, export=False,
    on_trial=lambda t: print(f"trial {t.trial} recorded", flush=True),
)
print("done", flush=True)
