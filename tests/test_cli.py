"""Every command's --help renders (help strings are %-formatted by argparse), and the top level imports none
of them."""

from __future__ import annotations

import subprocess
import sys

import pytest

from edge_cer.cli import COMMANDS, main


@pytest.mark.parametrize("command", [None, *COMMANDS])
def test_help_renders(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(([command] if command else []) + ["--help"])
    assert exit_.value.code == 0
    assert "usage: edge-cer" in capsys.readouterr().out


def test_top_level_help_imports_no_command_module():
    code = ("import sys; from edge_cer.cli import COMMANDS, build_parser; build_parser().format_help(); "
            "print([m for m, _ in COMMANDS.values() if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
