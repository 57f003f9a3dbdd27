"""The `edge-cer` command.

Each subcommand lives in its own module, imported only when it runs, so `edge-cer run` never pays for
(or needs) what `edge-cer export` imports. A module offers `add_arguments(parser)` and `run(args) -> int`.

    edge-cer demo                                  # the embedded default, end to end
    edge-cer export sd --model DIR --ip-adapter FILE --out DIR
    edge-cer generate --engines DIR --image IN --prompt TEXT --out OUT.png
"""

from __future__ import annotations

import argparse
import importlib
import sys

from edge_cer import __version__
from edge_cer.errors import EdgeCerError
from edge_cer.extras import missing_extra_error

# name -> (module, one-line help). The export stage is a separate package (torch).
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("edge_cer.commands.demo", "build tiny models, export them and run the whole chain once"),
    "export": ("export.cli", "export models: `sd` (Stable Diffusion + IP-Adapter) or `asr` (speech)"),
    "finetune": ("export.finetune_cli", "fine-tune an IP-Adapter on reappraisal pairs (`ip-adapter`) and evaluate it"),
    "transcribe": ("edge_cer.speech.transcribe", "speech to text with an ASR folder (file or --mic)"),
    "generate": ("edge_cer.generate", "one supportive picture from a stimulus and a reappraisal"),
    "run": ("edge_cer.commands.run", "run one CER session headless (scripted participant), write its data and BIDS"),
    "export-data": ("edge_cer.session.bids", "rebuild DATA/bids/ and DATA/trials.csv from the session databases"),
    "serve": ("edge_cer.serve.command", "serve picture generation to many terminals over Triton's protocol (gRPC/HTTP)"),
    "tui": ("edge_cer.commands.tui", "run a CER session with a live participant in the terminal (Textual)"),
    "analyze": ("edge_cer.analysis.analyze", "study statistics and HTML report from DATA_DIR/trials.csv"),
    "simulate": ("edge_cer.analysis.simulate", "write a synthetic study with known effects (trials.csv + truth.json)"),
    "power": ("edge_cer.analysis.power", "power and CI coverage per sample size by simulating and analysing studies"),
    "bench": ("edge_cer.bench.cli", "per-stage latency, percentiles, memory and % of matmul peak (--vs-torch)"),
    "bundle": ("edge_cer.bundle", "one folder that installs edge-cer with no network: wheels, engines, ASR, hashes, "
                                  "install.sh with a self-check"),
    "doctor": ("edge_cer.doctor", "what this machine offers (providers, GPU, TensorRT) and what each export needs"),
}


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows a default only where it says something: not None or False, and not when the help already names it."""

    def _get_help_string(self, action):
        help_text = action.help or ""
        if action.default is None or action.default is False or "default" in help_text:
            return help_text
        return super()._get_help_string(action)


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """All commands are listed; only `command`'s module is imported to add its options (so `edge-cer run` does
    not pay for pandas, nor `edge-cer --help` for anything)."""
    parser = argparse.ArgumentParser(prog="edge-cer", description=__doc__.split("\n")[0])
    parser.add_argument("--version", action="version", version=f"edge-cer {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        # help= is %-formatted by argparse, description= is printed as it is.
        p = sub.add_parser(name, help=help_text.replace("%", "%%"), description=help_text,
                           formatter_class=HelpFormatter)
        p.set_defaults(_module=module)
        if name != command:
            continue
        # Adding arguments needs the module; a missing optional extra must not break the parser.
        try:
            importlib.import_module(module).add_arguments(p)
        except ImportError as exc:  # reported by main() as one line, whatever the command's arguments
            p.set_defaults(_import_error=exc)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser(next((a for a in argv if a in COMMANDS), None))
    args, unknown = parser.parse_known_args(argv)
    if unknown and getattr(args, "_import_error", None) is None:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    try:
        if getattr(args, "_import_error", None) is not None:
            raise args._import_error
        return importlib.import_module(args._module).run(args) or 0
    except EdgeCerError as exc:
        print(f"edge-cer {args.command}: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as exc:  # an optional extra that is not installed: one line, the install command
        error = missing_extra_error(args.command, exc)
        if error is None:
            return _unexpected(args.command, argv, exc)
        print(f"edge-cer {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"edge-cer {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - no traceback reaches a user
        return _unexpected(args.command, argv, exc)


def _unexpected(command: str, argv: list[str], exc: Exception) -> int:
    """One line on stderr, the traceback in a log file it names; 2 for a machine problem, 1 for a bug."""
    from edge_cer.crash_log import describe

    line, status = describe(command, argv, exc)
    print(line, file=sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main())
