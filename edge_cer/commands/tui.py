"""`edge-cer tui`: run a CER session with a live participant in the terminal.

    edge-cer tui --data study-data --placeholder                     # rehearsal: embedded protocol, no AI pictures
    edge-cer tui --protocol study.toml --stimuli pictures/ --engines engines/ --asr models/asr --data study-data \
                 --provider cuda
    edge-cer tui --data study-data --engines engines/ --typing        # reappraisals typed, not spoken

The experimenter enters the participant's code on the setup screen (or ticks "resume" after a crash). The app
prints the session summary as JSON when it closes (a lost picture server: then one line on stderr, exit status 2,
and the session resumes from the setup screen); completed and aborted sessions are exported to BIDS and CSV.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from edge_cer.backends import backend_options
from edge_cer.commands.run import add_runtime_arguments
from edge_cer.errors import EdgeCerError
from edge_cer.tui import PICTURE_MODES


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_runtime_arguments(parser)
    parser.add_argument("--asr", type=Path, help="speech recogniser folder; without it reappraisals are typed")
    parser.add_argument("--typing", action="store_true", help="type reappraisals even with --asr and a microphone")
    parser.add_argument("--pictures", choices=PICTURE_MODES, default="auto",
                        help="how pictures are drawn: auto detects Kitty graphics (tgp) or Sixel, else half-cell")
    parser.add_argument("--participant", default="", help="prefill the setup screen's participant code")


def run(args: argparse.Namespace) -> int:
    from edge_cer.headless import repair_exports
    from edge_cer.session.protocol import load_protocol
    from edge_cer.session.stimuli import load_stimuli
    from edge_cer.tui.app import CerApp, TuiOptions

    protocol = load_protocol(args.protocol) if args.protocol else load_protocol()
    if sum(map(bool, (args.engines, args.server, args.placeholder))) > 1:
        raise EdgeCerError("--engines, --server and --placeholder: choose one picture source")
    if protocol.uses_ai_feedback and not (args.engines or args.server or args.placeholder):
        raise EdgeCerError(f"{protocol.source}: has AI-feedback conditions, which need --engines DIR "
                           "(or --placeholder for a rehearsal with placeholder pictures)")
    for option, folder in (("--engines", args.engines), ("--asr", args.asr), ("--stimuli", args.stimuli)):
        if folder is not None and not folder.is_dir():
            raise EdgeCerError(f"{option} {folder}: no such folder")
    options = TuiOptions(
        data_dir=args.data, protocol=protocol, stimuli=load_stimuli(args.stimuli, args.norms) if args.stimuli else None,
        engines=args.engines, server=args.server, placeholder=args.placeholder, asr=args.asr, provider=args.provider,
        backend_options=backend_options(args), typing=args.typing,
        pictures=args.pictures,
        participant=args.participant, key_file=args.key_file, min_free_bytes=int(args.min_free_mb * 1e6),
    )
    repair_exports(args.data)  # a kill during an earlier export is repaired before this session starts
    summary = CerApp(options).run()
    print(json.dumps(summary, indent=2))
    if "stopped" in summary:  # the picture server was lost: the summary, then one line on stderr (status 2)
        raise EdgeCerError(summary["stopped"])
    return 0
