"""`edge-cer tui`: the Textual front end that runs CER sessions with a live participant.

The app drives the same headless `edge_cer.session.Session` as `edge-cer run`; screens and widgets only show the
current phase and post what the participant or experimenter did. See docs/tui.md.

    from edge_cer.tui.app import CerApp, TuiOptions
    summary = CerApp(TuiOptions(data_dir=Path("study-data"), placeholder=True)).run()
"""

# How textual-image may draw pictures (edge_cer.tui.widgets.picture.MODES); here so `--help` needs no terminal query.
PICTURE_MODES = ("auto", "tgp", "sixel", "halfcell", "unicode")
