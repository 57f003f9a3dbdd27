"""The commands a person types (`edge-cer run`, `tui`, `demo`): options in, the runtime built, a summary out.

The top layer (docs/wiring.md): commands -> edge_cer.runtime -> domain (session, live, speech, affect) -> engine.
The other commands (generate, export, transcribe, analyze, simulate, bench, doctor) are the top layer too, wherever
their module lives; `edge_cer.cli.COMMANDS` lists them all.
"""
