"""`edge-cer run`: one CER session, headless, from the protocol to the BIDS export.

    edge-cer run --participant P017 --data study-data --scripted script.toml --placeholder   # embedded defaults
    edge-cer run --protocol study.toml --stimuli pictures/ --participant P017 --data study-data \\
                 --engines engines/ --asr asr/ --provider cuda --scripted script.toml
    edge-cer run --participant P017 --data study-data --scripted script.toml --resume ...   # after a crash

A headless run needs a scripted participant (`--scripted`); the live participant uses `edge-cer tui`.
"""

from __future__ import annotations

import argparse
import json
from functools import partial
from pathlib import Path

from edge_cer.errors import EdgeCerError
from edge_cer.backends import add_provider_arguments


def add_runtime_arguments(parser: argparse.ArgumentParser) -> None:
    """The options every session command shares: protocol, stimuli, data, engines, speech, provider."""
    parser.add_argument("--protocol", type=Path, help="protocol TOML (default: the embedded default protocol)")
    parser.add_argument("--stimuli", type=Path, help="stimulus folder with norms.csv (default: the synthetic set)")
    parser.add_argument("--norms", type=Path, help="an IAPS-style norm table instead of STIMULI/norms.csv")
    parser.add_argument("--data", type=Path, required=True, help="data folder (one per study)")
    parser.add_argument("--engines", type=Path, help="picture engine folder; needed for AI-feedback conditions")
    parser.add_argument("--server", help="grpc://HOST:PORT of `edge-cer serve` (or Triton serving `edge-cer export "
                        "triton-repo`): pictures are made there instead of with local --engines (docs/serve.md)")
    parser.add_argument("--placeholder", action="store_true",
                        help="without --engines: AI-feedback trials show placeholder pictures (not AI; rehearsals)")
    add_provider_arguments(parser)  # --provider, --cuda-graphs
    parser.add_argument("--key-file", type=Path, help="label -> pseudonym table (default: DATA/participant-keys.tsv)")
    parser.add_argument("--min-free-mb", type=float, default=200, help="refuse to start with less free disk space")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_runtime_arguments(parser)
    parser.add_argument("--participant", required=True, help="the lab's participant code, e.g. P017 (never a name)")
    parser.add_argument("--asr", type=Path, help="speech recogniser folder; required when the script gives WAV files, "
                        "which are then played to it at microphone timing with speculative generation (docs/live.md)")
    parser.add_argument("--scripted", type=Path, help="scripted participant (TOML/JSON); required for headless runs")
    parser.add_argument("--resume", action="store_true", help="continue the participant's interrupted session")


def run(args: argparse.Namespace) -> int:
    from edge_cer.backends import backend_options
    from edge_cer.headless import run_session
    from edge_cer.runtime import build_runtime
    from edge_cer.session.participant import ScriptedParticipant
    from edge_cer.session.protocol import load_protocol

    if args.scripted is None:
        raise EdgeCerError("--scripted FILE is required for a headless run; a live participant uses `edge-cer tui`")
    participant = ScriptedParticipant.from_file(args.scripted)
    participant.require_recogniser(have_asr=args.asr is not None)
    protocol = load_protocol(args.protocol) if args.protocol else None
    runtime = partial(build_runtime, engines=args.engines, server=args.server, asr=args.asr, provider=args.provider,
                      backend_options=backend_options(args), placeholder=args.placeholder)
    summary = run_session(
        participant, args.participant, args.data, protocol=protocol, stimuli=args.stimuli, norms=args.norms,
        runtime=runtime, resume=args.resume, key_file=args.key_file, min_free_bytes=int(args.min_free_mb * 1e6),
        on_trial=lambda t: print(f"trial {t.trial} recorded", flush=True),
    )
    print(json.dumps(summary, indent=2))
    return 0
