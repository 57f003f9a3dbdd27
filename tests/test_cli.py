"""Every command's --help renders (help strings are %-formatted by argparse), each option says its default once,
and the top level imports none of the commands."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

from edge_cer.cli import COMMANDS, build_parser, main


@pytest.mark.parametrize("command", [None, *COMMANDS])
def test_help_renders(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(([command] if command else []) + ["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert "usage: edge-cer" in out and "%%" not in out


def option_helps(parser):
    """(option, help as printed) for every option of a parser and its subcommands, recursively."""
    formatter = parser.formatter_class(parser.prog)
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from option_helps(sub)
        elif action.help and action.help is not argparse.SUPPRESS:
            yield "/".join(action.option_strings) or action.dest, formatter._get_help_string(action)


@pytest.mark.parametrize("command", COMMANDS)
def test_each_default_is_said_once(command):
    for option, text in option_helps(build_parser(command)):
        assert text.count("default:") <= 1 and "(default: None)" not in text, f"{command} {option}: {text}"


def test_top_level_help_imports_no_command_module():
    code = ("import sys; from edge_cer.cli import COMMANDS, build_parser; build_parser().format_help(); "
            "print([m for m, _ in COMMANDS.values() if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
