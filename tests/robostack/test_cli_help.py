"""`robostack <command> --help` explains every option of every command.

Each command builds its argparse parser inside its main(); the test catches the parser that
main() hands its arguments to (parse_args) and reads its options from there, so a command
added to robostack/cli.py is checked without being listed here.
"""

from __future__ import annotations

import argparse
import importlib
import subprocess
import sys

import pytest

from robostack.cli import COMMANDS


class Caught(Exception):
    def __init__(self, parser):
        self.parser = parser


def parsers_of(command: str, monkeypatch) -> list[argparse.ArgumentParser]:
    """The parsers `robostack <command> --help` prints (train: both modes)."""
    module_name, _, function = COMMANDS[command][0].partition(":")
    main = getattr(importlib.import_module(module_name), function or "main")

    def catch(self, args=None, namespace=None):
        raise Caught(self)

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", catch)
    if command == "demo":  # it passes the options it does not know on to robostack train
        monkeypatch.setattr(argparse.ArgumentParser, "parse_known_args", catch)
    found = []
    for argv in (["--help"], ["--single-process", "--help"]) if command == "train" else (["--help"],):
        try:
            main(argv)
        except Caught as caught:
            found.append(caught.parser)
        except SystemExit:  # printed its own help without argparse (train's dispatcher)
            pass
    return found


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_option_of_every_command_has_help_text(command, monkeypatch):
    parsers = parsers_of(command, monkeypatch)
    if command == "train":  # the dispatcher prints a line, then each mode's parser
        assert parsers, "robostack train --single-process --help builds no parser"
    else:
        assert len(parsers) == 1, f"robostack {command} builds {len(parsers)} parsers"
    for parser in parsers:
        assert parser.description, f"robostack {command}: no description"
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            name = "/".join(action.option_strings) or action.dest
            assert action.help and action.help != argparse.SUPPRESS, f"robostack {command} {name}: no help text"
            assert len(action.help) >= 12, f"robostack {command} {name}: help {action.help!r} says too little"


def test_the_help_text_prints_whole(tmp_path):
    """Help strings are not cut off: argparse's % formatting fails loudly on a stray %."""
    # All at once: each process spends its time importing (torch, mujoco), one after the other
    # took ~18 s on 2 cores.
    running = {command: subprocess.Popen([sys.executable, "-m", "robostack.cli", command, "--help"],
                                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for command in sorted(COMMANDS)}
    try:
        for command, process in running.items():
            stdout, stderr = process.communicate(timeout=180)
            assert process.returncode == 0, f"robostack {command} --help:\n{stderr[-2000:]}"
            assert "usage:" in stdout or "robostack train" in stdout, stdout[:500]
    finally:
        for process in running.values():
            if process.poll() is None:
                process.kill()
                process.wait()
