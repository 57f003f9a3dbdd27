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

from edge_cer.errors import EdgeCerError

# name -> (module, one-line help). The export stage is a separate package (torch).
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("edge_cer.demo", "build tiny models, export them and run the whole chain once"),
    "export": ("export.cli", "export models: `sd` (Stable Diffusion + IP-Adapter) or `asr` (speech)"),
    "transcribe": ("edge_cer.speech.transcribe", "speech to text with an ASR folder (file or --mic)"),
    "generate": ("edge_cer.generate", "one supportive picture from a stimulus and a reappraisal"),
    "run": ("edge_cer.session.run", "run one CER session headless (scripted participant), write its data and BIDS"),
    "serve": ("edge_cer.serve.command", "serve picture generation to many terminals over Triton's protocol (gRPC/HTTP)"),
    "tui": ("edge_cer.tui.command", "run a CER session with a live participant in the terminal (Textual)"),
    "analyze": ("edge_cer.analysis.analyze", "study statistics and HTML report from DATA_DIR/trials.csv"),
    "simulate": ("edge_cer.analysis.simulate", "write a synthetic study with known effects (trials.csv + truth.json)"),
    "bench": ("edge_cer.bench.cli", "per-stage latency, percentiles, memory and %% of matmul peak (--vs-torch)"),
    "doctor": ("edge_cer.doctor", "what this machine offers (providers, GPU, TensorRT) and what each export needs"),
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """All commands are listed; only `command`'s module is imported to add its options (so `edge-cer run` does
    not pay for pandas, nor `edge-cer --help` for anything)."""
    parser = argparse.ArgumentParser(prog="edge-cer", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(
            name, help=help_text, description=help_text, formatter_class=argparse.ArgumentDefaultsHelpFormatter
        )
        p.set_defaults(_module=module)
        if name != command:
            continue
        # Adding arguments needs the module; a missing optional extra must not break the parser.
        try:
            importlib.import_module(module).add_arguments(p)
        except ImportError as exc:
            p.set_defaults(_import_error=exc)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser(next((a for a in argv if a in COMMANDS), None)).parse_args(argv)
    try:
        if getattr(args, "_import_error", None) is not None:
            raise EdgeCerError(
                f"`edge-cer {args.command}` needs {args._import_error.name!r}; "
                "install the export stage with: ./setup.sh (or pip install 'edge-cer[export]')"
            )
        return importlib.import_module(args._module).run(args) or 0
    except EdgeCerError as exc:
        print(f"edge-cer {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"edge-cer {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
