"""The CLI builds only the parser of the command being run, and parses it as the full one does."""

from __future__ import annotations

import argparse
import contextlib
import io

import pytest

from wrdsvault.cli import _COMMANDS, _parser


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    (action,) = (a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def _help(parser: argparse.ArgumentParser, argv: list[str]) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        parser.parse_args(argv)
    return out.getvalue()


@pytest.mark.parametrize("command", sorted(_COMMANDS))
def test_a_command_alone_parses_and_helps_as_in_the_full_parser(command: str) -> None:
    """Built alone, a command has the same options, defaults and --help as in the full tree."""
    alone, full = _parser(command), _parser()
    assert list(_subcommands(alone)) == [command]
    assert command in _subcommands(full) and len(_subcommands(full)) == len(_COMMANDS)
    assert _help(alone, [command, "--help"]) == _help(full, [command, "--help"])
    mine, theirs = _subcommands(alone)[command], _subcommands(full)[command]
    assert [a.option_strings or a.dest for a in mine._actions] == [
        a.option_strings or a.dest for a in theirs._actions
    ]
    assert [a.default for a in mine._actions] == [a.default for a in theirs._actions]


def test_unknown_commands_and_top_level_help_still_list_every_command() -> None:
    """A typo or --help gets the full list of commands, not one."""
    text = _help(_parser(), ["--help"])
    assert all(name in text for name in _COMMANDS)
    err = io.StringIO()
    with contextlib.redirect_stderr(err), pytest.raises(SystemExit):
        _parser().parse_args(["qury"])
    assert "invalid choice: 'qury'" in err.getvalue() and "'export-iceberg'" in err.getvalue()
