"""Run every shell command of README.md as written, in order, in a fresh clone (issue 17).

    python benchmarks/readme_commands.py                    # everything, make test included
    python benchmarks/readme_commands.py --skip-make-test   # the suite is checked on its own
    python benchmarks/readme_commands.py --list             # print the commands, run nothing

What it does: `git clone` of this repository, checked out at the current HEAD (uncommitted
changes are not in a clone: commit README.md first), then every command of the README's
```bash / ```sh / ```console blocks, top to bottom, each with `bash` in the clone's root and a
timeout. Per command it prints the command, its exit code, its seconds and its last output lines
(more of them when it failed); at the end how many passed, failed and were skipped. Exit code 1
if any failed.

A command is one line of a block (a line ending in a backslash continues on the next; `$ ` and
`> ` prompts of console blocks are dropped). Blocks run one command at a time, like a person
typing them into one shell: `source`, `.`, `cd` and `export` lines are kept and replayed before
every later command, so `source .venv/bin/activate` holds for the rest of the README.

How a line's trailing comment (or its options) decide how it runs:

    # needs ...          skipped, the comment printed as the reason (real hardware, a second machine)
    # long run ...       skipped unless --long (hours of training that reproduce a figure)
    # until Ctrl-C ...   runs in a terminal (tmux); Ctrl-C is typed once it is up; must exit 0
    --device keyboard,   a person's session: runs in a terminal (tmux, 110x48) and gets the keys
    --intervention keyboard   of KEYS below (the live view read back with capture-pane)

`make test` is skipped with --skip-make-test (the suite is verified separately; ~10 min here).
--keep keeps the clone (and each command's log) and prints where it is; --reuse CLONE --only 7-9
re-runs some commands in a kept clone (the shell lines before them still apply).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FENCE = re.compile(r"^\s*```\s*(\w*)")
SHELL_BLOCKS = ("bash", "sh", "shell", "console")
STATE_LINE = re.compile(r"^(source|\.|cd|export)\s")  # change the shell: replayed before later ones
TAIL_OK, TAIL_FAILED = 2, 25  # output lines shown per command

# Timeouts, s: the first pattern that matches the command decides.
TIMEOUTS = [(r"^make demo\b", 1500), (r"^make test\b", 2400), (r"\blong run\b", 7200)]
DEFAULT_TIMEOUT = 600

# A person's session, typed into the terminal: ("wait", regex on the screen), ("keys", tmux
# send-keys names), ("sleep", s). The first pattern that matches the command decides.
KEYS = [
    # Start an episode, label it a success (it is kept), then quit at the next READY: exit 0.
    (r"\brecord-demos\b.*--device keyboard", [("wait", r"READY"), ("keys", "Space"), ("sleep", 1.5),
                                              ("keys", "y"), ("wait", r"kept 1 of"), ("keys", "q")]),
    # Watch training until a progress line, then the stop key: the run ends with a checkpoint.
    (r"\btrain\b.*--intervention keyboard", [("wait", r"step +\d+/\d+"), ("sleep", 2), ("keys", "q")]),
    # Anything else a person drives (teleop): once its key map shows, quit.
    (r"--device keyboard", [("wait", r"q/ESC"), ("sleep", 2), ("keys", "q")]),
]
CTRL_C = [("sleep", 3), ("wait", r"\S"), ("sleep", 5), ("keys", "C-c")]
SCREEN_WAIT = 300  # s a "wait" step waits for its text before giving up on the session


@dataclass
class Command:
    text: str  # as bash gets it (continuations joined)
    line: int  # README line it starts on
    comment: str = ""  # its trailing comment, without '#'
    skip: str = ""  # why it is not run ("" = run it)
    keys: list = field(default_factory=list)  # a terminal session's keys ([] = plain subprocess)

    @property
    def changes_shell(self) -> bool:
        return bool(STATE_LINE.match(self.text))


def trailing_comment(line: str) -> str:
    """The text after an unquoted ' #' (bash's comment), '' if none."""
    quote, previous = None, " "
    for i, char in enumerate(line):
        if quote:
            if char == quote:
                quote = None
        elif char in "'\"":
            quote = char
        elif char == "#" and previous.isspace():
            return line[i + 1:].strip()
        previous = char
    return ""


def extract(readme: str) -> list[Command]:
    """Every command of the README's shell blocks, in order."""
    commands, block, pending, start = [], None, "", 0
    for number, raw in enumerate(readme.splitlines(), 1):
        fence = FENCE.match(raw)
        if fence:
            block = None if block is not None else fence.group(1).lower()
            continue
        if block not in SHELL_BLOCKS:
            continue
        line = raw.rstrip()
        if block == "console":
            if not re.match(r"^\s*[$>] ", line) and not pending:
                continue  # output shown in the block
            line = re.sub(r"^\s*[$>] ", "", line)
        if not pending:
            start = number
            line = line.strip()
            if not line or line.startswith("#"):
                continue
        if line.endswith("\\"):
            pending += line[:-1].rstrip() + " "
            continue
        text = pending + line.strip()
        pending = ""
        commands.append(Command(text=text, line=start, comment=trailing_comment(text)))
    return commands


def plan(commands: list[Command], args) -> list[Command]:
    """Decide for each command whether and how it runs."""
    for command in commands:
        text, comment = command.text, command.comment
        if comment.startswith("needs "):
            command.skip = comment
        elif "long run" in comment and not args.long:
            command.skip = f"{comment} (--long runs it)"
        elif args.skip_make_test and re.match(r"^make test\b", text):
            command.skip = "--skip-make-test: the test suite is verified separately"
        elif "until Ctrl-C" in comment:
            command.keys = CTRL_C
        else:
            command.keys = next((keys for pattern, keys in KEYS if re.search(pattern, text)), [])
    return commands


def timeout_for(command: Command, args) -> float:
    if args.timeout:
        return args.timeout
    return next((s for pattern, s in TIMEOUTS if re.search(pattern, command.text)), DEFAULT_TIMEOUT)


def clean_environment(clone: Path) -> dict:
    """This process's environment without the developer's venv: the clone makes its own."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME") and not k.startswith("PYTEST")}
    keep = [p for p in env.get("PATH", "").split(os.pathsep)
            if p and not Path(p).resolve().is_relative_to(ROOT)]
    env["PATH"] = os.pathsep.join(keep or ["/usr/local/bin", "/usr/bin", "/bin"])
    env.setdefault("TERM", "xterm-256color")
    env["PWD"] = str(clone)
    return env


def write_script(path: Path, prelude: list[str], command: str, rc_file: Path | None) -> None:
    lines = ["set +e"] + prelude + [command]
    if rc_file is not None:
        lines += [f"echo $? > {rc_file}", "sleep 3600"]  # the pane stays for capture-pane
    path.write_text("\n".join(lines) + "\n")


def run_plain(script: Path, clone: Path, env: dict, log: Path, timeout: float) -> int:
    with open(log, "wb") as out:
        process = subprocess.Popen(["bash", str(script)], cwd=clone, env=env, stdin=subprocess.DEVNULL,
                                   stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            code = process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGINT)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                pass
            code = 124
        finally:  # nothing it started outlives it (a server sent to the background)
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            process.wait()
    return code


class Terminal:
    """A command in a detached tmux session of its own tmux server."""

    def __init__(self, script: Path, clone: Path, env: dict):
        self.socket = f"readme-{uuid.uuid4().hex[:10]}"
        self.env = env
        self.tmux("new-session", "-d", "-s", "cmd", "-x", "110", "-y", "48", "-c", str(clone),
                  f"bash {script}", check=True)

    def tmux(self, *args, check=False) -> subprocess.CompletedProcess:
        return subprocess.run(["tmux", "-L", self.socket, "-f", "/dev/null", *args], env=self.env,
                              capture_output=True, text=True, timeout=30, check=check)

    def screen(self, history: int = 0) -> str:
        extra = ["-S", str(-history)] if history else []
        return self.tmux("capture-pane", "-p", "-t", "cmd", *extra).stdout

    def keys(self, names: str) -> None:
        self.tmux("send-keys", "-t", "cmd", *names.split())

    def close(self) -> None:
        self.tmux("kill-server")


def run_terminal(script: Path, rc_file: Path, clone: Path, env: dict, log: Path, timeout: float,
                 steps: list) -> int:
    terminal = Terminal(script, clone, env)
    deadline = time.monotonic() + timeout
    try:
        for kind, value in steps:
            if rc_file.exists():
                break  # it ended by itself
            if kind == "sleep":
                time.sleep(value)
            elif kind == "keys":
                terminal.keys(value)
            elif kind == "wait":
                until = min(deadline, time.monotonic() + SCREEN_WAIT)
                while not re.search(value, terminal.screen()) and not rc_file.exists():
                    if time.monotonic() > until:
                        print(f"    (the screen never showed {value!r}; typing on)", flush=True)
                        break
                    time.sleep(0.5)
        while not rc_file.exists() and time.monotonic() < deadline:
            time.sleep(0.5)
        if not rc_file.exists():
            terminal.keys("C-c")
            time.sleep(10)
        log.write_text(terminal.screen(history=3000))
        text = rc_file.read_text().strip() if rc_file.exists() else ""
        return int(text) if text else 124
    finally:
        terminal.close()


def tail(log: Path, n: int) -> list[str]:
    try:
        lines = [line.rstrip() for line in log.read_text(errors="replace").splitlines()]
    except OSError:
        return []
    return [line for line in lines if line.strip()][-n:]


def clone_head(where: Path) -> tuple[Path, str]:
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                          check=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--", "README.md"], cwd=ROOT,
                           capture_output=True, text=True).stdout.strip()
    if dirty:
        print("warning: README.md has uncommitted changes; the clone runs the committed one", flush=True)
    clone = where / "clone"
    subprocess.run(["git", "clone", "--quiet", "--no-checkout", str(ROOT), str(clone)], check=True)
    subprocess.run(["git", "checkout", "--quiet", "--detach", head], cwd=clone, check=True)
    return clone, head


def selection(text: str) -> set[int]:
    """'3-5,9' -> {3, 4, 5, 9}; '' -> set() (everything)."""
    chosen = set()
    for part in filter(None, text.split(",")):
        low, _, high = part.partition("-")
        chosen.update(range(int(low), int(high or low) + 1))
    return chosen


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--list", action="store_true", help="print the commands and how each runs; run nothing")
    parser.add_argument("--keep", action="store_true", help="keep the clone and the logs")
    parser.add_argument("--skip-make-test", action="store_true", help="skip `make test` (the suite is verified separately)")
    parser.add_argument("--long", action="store_true", help="also run the commands marked `# long run`")
    parser.add_argument("--timeout", type=float, default=0, help="s per command (default: per kind, 600 s for most)")
    parser.add_argument("--readme", default=str(ROOT / "README.md"), help="README for --list (a run uses the clone's)")
    parser.add_argument("--reuse", default="", help="run in this clone (one --keep left) instead of a fresh one")
    parser.add_argument("--only", default="", help="run only these command numbers (as --list numbers "
                        "them), e.g. 3-5,9; the shell lines before them still apply")
    args = parser.parse_args(argv)

    if args.list:
        commands = plan(extract(Path(args.readme).read_text()), args)
        for i, command in enumerate(commands, 1):
            how = f"skip: {command.skip}" if command.skip else ("terminal" if command.keys else "run")
            print(f"{i:>3}  README:{command.line:<4} [{how}]  {command.text}")
        return 0

    if not shutil.which("tmux"):
        print("note: tmux is not installed; the terminal sessions will fail (apt-get install tmux)")
    if args.reuse:
        clone = Path(args.reuse).resolve()
        work = Path(tempfile.mkdtemp(prefix="readme-commands-"))
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=clone, capture_output=True, text=True,
                              check=True).stdout.strip()
        args.keep = True  # never delete a clone this run did not make
    else:
        work = Path(tempfile.mkdtemp(prefix="readme-commands-"))
        clone, head = clone_head(work)
    logs = work / "logs"
    logs.mkdir()
    chosen = selection(args.only)
    commands = plan(extract((clone / "README.md").read_text()), args)
    env = clean_environment(clone)
    print(f"README.md of {head[:12]}: {len(commands)} commands; clone in {clone}\n", flush=True)

    prelude, results = [], []
    started = time.monotonic()
    for i, command in enumerate(commands, 1):
        if chosen and i not in chosen:
            if command.changes_shell:
                prelude.append(command.text)
            continue
        print(f"[{i}/{len(commands)}] README:{command.line}  $ {command.text}", flush=True)
        if command.skip:
            print(f"    skipped: {command.skip}\n", flush=True)
            results.append((command, "skipped", None, 0.0))
            continue
        script, log = logs / f"{i:02d}.sh", logs / f"{i:02d}.log"
        rc_file = logs / f"{i:02d}.rc" if command.keys else None
        write_script(script, prelude, command.text, rc_file)
        t0 = time.monotonic()
        if command.keys:
            code = run_terminal(script, rc_file, clone, env, log, timeout_for(command, args), command.keys)
        else:
            code = run_plain(script, clone, env, log, timeout_for(command, args))
        seconds = time.monotonic() - t0
        ok = code == 0
        how = " (in a terminal)" if command.keys else ""
        print(f"    exit {code}  {seconds:.1f} s{how}", flush=True)
        for line in tail(log, TAIL_OK if ok else TAIL_FAILED):
            print(f"    | {line[:200]}", flush=True)
        print(flush=True)
        results.append((command, "passed" if ok else "FAILED", code, seconds))
        if command.changes_shell:
            prelude.append(command.text)

    passed = [r for r in results if r[1] == "passed"]
    failed = [r for r in results if r[1] == "FAILED"]
    skipped = [r for r in results if r[1] == "skipped"]
    print(f"summary: {len(passed)} passed, {len(failed)} failed, {len(skipped)} skipped "
          f"of {len(results)} README commands, {(time.monotonic() - started) / 60:.1f} min "
          f"(clone of {head[:12]})")
    for command, status, code, seconds in results:
        mark = {"passed": "ok  ", "FAILED": "FAIL", "skipped": "skip"}[status]
        timing = "" if status == "skipped" else f" exit {code} {seconds:7.1f} s"
        print(f"  {mark}{timing:>17}  {command.text[:100]}")
    if args.keep:
        print(f"\nkept: clone {clone}, logs {logs}")
    else:
        shutil.rmtree(work, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
