"""The README's commands name real commands and options (cheap: no training, no clone).

benchmarks/readme_commands.py runs every README command in a fresh clone (minutes); this test
checks what can go stale without running anything: the extraction finds the commands, every
`robostack <command>` is a command of robostack/cli.py, every `--option` on a robostack command
line is in that command's --help, and every `make <target>` is a target of the Makefile.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import re
import shlex
import sys
from functools import lru_cache
from pathlib import Path

import pytest

from robostack import cli

ROOT = Path(__file__).resolve().parents[1]


def load_runner():
    spec = importlib.util.spec_from_file_location("readme_commands", ROOT / "benchmarks" / "readme_commands.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


RUNNER = load_runner()
COMMANDS = RUNNER.extract((ROOT / "README.md").read_text())


def segments(command: str) -> list[list[str]]:
    """The simple commands of a shell line (split at ; & && | ||), as words."""
    lexer = shlex.shlex(command, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    parts, current = [], []
    for token in lexer:
        if token and set(token) <= set(";&|()"):
            parts.append(current)
            current = []
        else:
            current.append(token)
    parts.append(current)
    return [part for part in parts if part]


def robostack_lines() -> list[tuple[int, str, list[str]]]:
    """(README line, command name, the words after it) of every robostack invocation."""
    found = []
    for command in COMMANDS:
        for words in segments(command.text):
            for i, word in enumerate(words):
                if Path(word).name == "robostack":
                    rest = words[i + 1:]
                    found.append((command.line, rest[0] if rest else "", rest[1:]))
                    break
    return found


@lru_cache(maxsize=None)
def help_text(name: str) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        try:
            code = cli.main([name, "--help"])
        except SystemExit as exc:
            code = exc.code
    assert code in (0, None), f"robostack {name} --help exited {code}"
    return out.getvalue()


def test_the_extraction_finds_the_readme_commands():
    texts = [c.text for c in COMMANDS]
    assert texts[:2] and texts[0].startswith("make demo") and texts[1].startswith("make test")
    assert any(t.startswith("source .venv/bin/activate") for t in texts)
    assert len(robostack_lines()) >= 15
    # Continuation lines are joined into one command.
    assert not any(t.rstrip().endswith("\\") for t in texts)


def test_the_markers_decide_how_each_command_runs():
    class Args:
        long = False
        skip_make_test = True

    planned = RUNNER.plan(RUNNER.extract((ROOT / "README.md").read_text()), Args)
    skipped = [c for c in planned if c.skip]
    assert any("make test" in c.text for c in skipped)
    assert all(c.skip.startswith(("needs ", "--skip-make-test", "long run")) for c in skipped)
    terminal = [c.text for c in planned if c.keys]
    assert any("--device keyboard" in t for t in terminal)
    assert any("--intervention keyboard" in t for t in terminal)
    assert RUNNER.trailing_comment('echo "a # b" # real') == "real"
    assert RUNNER.trailing_comment("a#b") == ""


@pytest.mark.parametrize("line, name, words", robostack_lines(),
                         ids=[f"README:{line}-{name}" for line, name, _ in robostack_lines()])
def test_every_readme_robostack_command_and_option_exists(line, name, words):
    if name in ("-h", "--help", "help"):
        return
    assert name in cli.COMMANDS, f"README:{line}: robostack {name!r} is not a command ({', '.join(cli.COMMANDS)})"
    text = help_text(name)
    if name == "demo":  # `robostack demo` passes the options it does not know to train
        text += help_text("train")
    for word in words:
        if word.startswith("--") and word != "--":
            option = word.split("=", 1)[0]
            assert re.search(rf"(?<![\w-]){re.escape(option)}(?![\w-])", text), (
                f"README:{line}: robostack {name} has no option {option} (robostack {name} --help)")


def test_every_readme_make_target_exists():
    makefile = (ROOT / "Makefile").read_text()
    targets = set(re.findall(r"^([\w-]+):", makefile, re.M))
    for command in COMMANDS:
        for words in segments(command.text):
            if words[0] == "make":
                for target in (w for w in words[1:] if not w.startswith("-") and "=" not in w):
                    assert target in targets, f"README:{command.line}: make {target}: no such target"
