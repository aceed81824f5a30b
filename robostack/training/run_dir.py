"""What a training run writes into its run directory, besides checkpoints (run_state.py), in
both modes (`robostack train` and `robostack train --single-process`):

    config.json       the run's RunConfig (robostack/training/config.py), plus mode and endpoints;
                      a run is resumed only with the settings recorded here (start_run)
    run.json          the run's identity ({"run": id, "secret": 32 hex digits}), written once,
                      before any process of the run starts (start_run) or before a stand-alone
                      learner binds: a learner restarted at any moment, even before its first
                      checkpoint, is the same run, and the actors' spools (which record it) are
                      its own. Mode 0600: the secret is what an actor proves it belongs to the
                      run with (transitions.hello_proof); it is never printed or sent
    metrics.csv       one row per evaluation (periodic and final), METRICS_FIELDS; always
                      written, header only when no evaluation ran; a stand-alone `robostack
                      eval` adds a row that names its result file (standalone_eval)
    eval.json         the run's final evaluation
    evals/            one result file per stand-alone `robostack eval`
    summary/<process>.json   each process's state for programs and tests: launcher, learner,
                      <actor id>, train (single process); rewritten atomically on every event
                      that matters (start, resume, checkpoint, robot server lost/back, end)
    progress.csv      one row per learner progress report (counters, rates, losses)
    episodes.jsonl    one line per finished episode (actor, return, success, why it ended ...)
    tensorboard/      progress (train/*) and evaluation (eval/*) scalars, flushed at every
                      report, if the tensorboard package is installed (not a dependency)
    logs/, spool/, episodes/   each process's output; actors' unacknowledged transitions;
                      actors' episode logs
    checkpoints/, buffers/   the training state (run_state.py)

Every file here is written with robostack.files (atomic, fsynced), except episodes.jsonl, an
append-only log. Readers name the file that is damaged and what to do (RunFileError); a damaged
line of episodes.jsonl or a damaged row of progress.csv / metrics.csv is skipped with a warning
naming the file and the line, never a traceback (a torn last line is what a crash leaves).
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import secrets
import time
import uuid
from pathlib import Path

from robostack.files import atomic_write, write_json_atomic, write_text_atomic

# What a run writes: a folder holding any of these holds a run.
RUN_STATE = ("checkpoints", "buffers", "spool", "episodes", "episodes.jsonl", "progress.csv",
             "metrics.csv", "eval.json", "evals", "summary", "tensorboard", "logs", "config.json",
             "processes.json", "run.json")
RUN_FILE = "run.json"

log = logging.getLogger("robostack.training.run_dir")


class RunFileError(RuntimeError):
    """A file of the run directory is unreadable: the message names it and says what to do."""


class RunFileMissing(RunFileError):
    """The file is not there (yet: a stand-alone learner creates run.json as it starts)."""
REPLACED = "replaced-"  # prefix of the folders earlier runs were moved into

# metrics.csv's columns in both modes (a mode leaves the ones it has no value for empty).
METRICS_FIELDS = ["env_steps", "wall_seconds", "success_rate", "time_to_success_s",
                  "eval_seconds", "intervention_steps", "weights_version", "actor", "final",
                  "standalone_eval"]


def holds_run(folder: Path) -> bool:
    return any((Path(folder) / name).exists() for name in RUN_STATE)


def start_run(config, mode: str, say=print, **extra) -> Path | None:
    """Once per run, in the command that starts it (the launcher, the single-process trainer),
    before any process or env starts: refuse to resume a run recorded with other settings
    (config.ResumeRefused), move a previous run aside (--resume false), write config.json with
    `mode` and `extra` beside the RunConfig `config`. Returns where a previous run went."""
    from robostack.training.config import check_resumable, write_run_config  # brings torch

    check_resumable(config)
    moved = None if config.resume else archive_previous_run(Path(config.run_dir), say)
    write_run_config(config, mode=mode, **extra)
    run_identity(config.run_dir)  # before the first transition: every restart is this run
    return moved


def run_identity(run_dir: str | os.PathLike, checkpointed: str | None = None) -> str:
    """The run's id, from <run_dir>/run.json; created (atomically, with the run's secret) when
    the run has none yet.

    `checkpointed`: the run id a resumed checkpoint recorded. It wins over run.json (the
    checkpoint's ledger is what the actors' sequence numbers are counted against) and is written
    back, so runs from before run.json existed keep their id. A run.json that cannot be read is
    a RunFileError naming it, unless the checkpoint says which run this is. A run.json from
    before run secrets gains one (the same id), so its actors can prove they belong to it."""
    path = Path(run_dir) / RUN_FILE
    recorded, secret = None, None
    if path.is_file():
        try:
            recorded, secret = _read_identity(path, need_secret=False)
        except RunFileError:
            if checkpointed is None:
                raise
            log.warning("%s is unreadable; rewriting it with the checkpoint's run id %s",
                        path, checkpointed)
    run = checkpointed or recorded or uuid.uuid4().hex[:12]
    if run != recorded or secret is None:
        if recorded is not None and run != recorded:
            log.warning("%s says run %s but the checkpoint resumed is of run %s; using the "
                        "checkpoint's", path, recorded, run)
        path.parent.mkdir(parents=True, exist_ok=True)
        # 0600 from the first byte (the temp file is created so): other users must not read it.
        with atomic_write(path, "w", encoding="utf-8", opener=_private) as f:
            json.dump({"run": run, "secret": secret or secrets.token_hex(16),
                       "created": time.time()}, f)
    return run


def read_run_identity(path: str | os.PathLike) -> tuple[str, str]:
    """(run id, run secret) from a run.json (<run_dir>/run.json, or a copy of it next to a
    stand-alone actor on another machine); RunFileError naming the file and the fix."""
    return _read_identity(Path(path), need_secret=True)


def _read_identity(path: Path, need_secret: bool) -> tuple[str, str | None]:
    try:
        data = json.loads(path.read_text())
        run, secret = data["run"], data.get("secret")
        if not isinstance(run, str) or not run:
            raise ValueError(f"'run' is {run!r}, not an id")
        if secret is not None and not (isinstance(secret, str) and len(secret) == 32
                                       and all(c in "0123456789abcdef" for c in secret)):
            raise ValueError("'secret' is not 32 hex digits")
        if need_secret and secret is None:
            raise ValueError("it holds no 'secret' (a run from before run secrets: start its "
                             "learner once, which adds one)")
    except FileNotFoundError:
        raise RunFileMissing(f"{path} does not exist: the run's learner creates it (run.json "
                             f"in its --run-dir); on another machine, copy it here") from None
    except (OSError, ValueError, KeyError, TypeError) as exc:  # never the secret in the message
        raise RunFileError(
            f"{path}: the run's identity is unreadable ({exc}); the actors' spools name the run "
            f"they belong to, and the actors prove they belong to it with its secret, so it "
            f"cannot be guessed. Restore the file, or start a new run (--resume false moves "
            f"this one aside)") from None
    return run, secret


def _private(path, flags):
    return os.open(path, flags, 0o600)


def archive_previous_run(run_dir: Path, say=print) -> Path | None:
    """--resume false on a used run directory: move the old run aside whole (everything in the
    folder but the earlier replaced-* folders), never delete it. A folder holding no run file
    (RUN_STATE) is left alone: it is not a run (`--run-dir runs` would otherwise move every run
    in it). Only the command that starts a run calls this (the launcher, the single-process
    trainer), once, before any process that might be restarted: a restarted learner must find
    its own checkpoint, not an empty directory."""
    run_dir = Path(run_dir)
    if not holds_run(run_dir):
        return None
    old = sorted(p.name for p in run_dir.iterdir() if not p.name.startswith(REPLACED))
    target = run_dir / f"{REPLACED}{time.strftime('%Y%m%d-%H%M%S')}"
    suffix = 1
    while target.exists():  # two runs replaced within one second
        target = run_dir / f"{REPLACED}{time.strftime('%Y%m%d-%H%M%S')}-{suffix}"
        suffix += 1
    target.mkdir(parents=True)
    for name in old:
        os.replace(run_dir / name, target / name)
    say(f"--resume false: moved the previous run's {', '.join(old)} to {target}")
    return target


class Summary:
    """<run_dir>/summary/<name>.json: one process's state as plain data, rewritten atomically
    on each `update` (the fields given are merged into what it said before)."""

    def __init__(self, run_dir: str | os.PathLike, name: str):
        self.path = Path(run_dir) / "summary" / f"{name}.json"
        self.data: dict = {"process": name, "pid": os.getpid()}

    def update(self, **fields) -> None:
        self.data.update(fields, updated=time.time())
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.path, self.data)


def read_summary(run_dir: str | os.PathLike, name: str) -> dict | None:
    path = Path(run_dir) / "summary" / f"{name}.json"
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):  # UnicodeDecodeError is a ValueError
        return None
    return data if isinstance(data, dict) else None


def append_episode(run_dir: Path, record: dict) -> None:
    with open(Path(run_dir) / "episodes.jsonl", "a") as f:
        f.write(json.dumps(record) + "\n")


def read_episodes(run_dir: str | os.PathLike, say=None) -> list[dict]:
    """The records of <run_dir>/episodes.jsonl. A damaged line (torn by a crash, or bytes
    changed on disk) is skipped with a warning naming the file and the line."""
    path = Path(run_dir) / "episodes.jsonl"
    data = _read_run_file(path)
    records = []
    for number, line in enumerate(data.splitlines(), 1):
        try:
            record = json.loads(line.decode("utf-8"))
            if not isinstance(record, dict):
                raise ValueError(f"a {type(record).__name__}, not an episode record")
            int(record.get("last_seq", 0))
        except (ValueError, TypeError) as exc:
            _skipped(path, number, exc, say)
            continue
        records.append(record)
    return records


def _read_run_file(path: Path) -> bytes:
    """The bytes of a run file read line by line (b"" when it does not exist yet)."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return b""
    except OSError as exc:
        raise RunFileError(f"{path}: cannot be read ({exc}); check the disk and its permissions")


def _skipped(path: Path, number: int, exc: Exception, say=None) -> None:
    text = f"{path} line {number}: damaged, skipped ({type(exc).__name__}: {str(exc)[:120]})"
    if say is not None:
        say(f"warning: {text}")
    else:
        log.warning(text)


def trim_episodes(run_dir: Path, stored: dict[str, int], say=None) -> None:
    """Keep only episodes whose last transition a resumed learner holds (stored[actor] seq):
    actors resend the later transitions, and those episodes are logged again with them. A
    learner restarted before its first checkpoint holds nothing (`stored` is empty): every
    episode comes again."""
    path = Path(run_dir) / "episodes.jsonl"
    if not path.is_file():
        return
    records = read_episodes(run_dir, say)
    kept = [r for r in records if int(r.get("last_seq", 0)) <= stored.get(r.get("actor"), 0)]
    write_text_atomic(path, "".join(json.dumps(r) + "\n" for r in kept))


def write_csv(path: Path, rows: list[dict], fields: list[str] = ()) -> None:
    """All rows, header = `fields`, then the other keys of the rows in order of appearance
    (atomic replace)."""
    fields = list(dict.fromkeys([*fields, *(k for row in rows for k in row)]))
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=fields)
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomic(path, text.getvalue())


def write_metrics(run_dir: Path, history: list[dict]) -> None:
    """metrics.csv: one row per evaluation of the run (`history`), with the rows of stand-alone
    evaluations already in the file (`robostack eval`: the run's history does not hold them),
    in env-step order; the header alone before any."""
    path = Path(run_dir) / "metrics.csv"
    standalone = [row for row in read_csv(path) if row.get("standalone_eval")]
    rows = sorted([*history, *standalone], key=lambda row: float(row.get("env_steps") or 0))
    write_csv(path, rows, METRICS_FIELDS)


def read_csv(path: Path, say=None) -> list[dict]:
    """The rows of a CSV file this module wrote (metrics.csv, progress.csv). A damaged row (not
    UTF-8, a NUL byte, more or fewer fields than the header) is skipped with a warning naming
    the file and the line (a damaged header: every row, since they cannot be read without it)."""
    path = Path(path)
    lines = _read_run_file(path).splitlines()
    if not lines:
        return []
    try:
        header = _csv_row(lines[0])
        if not header or len(set(header)) != len(header):
            raise ValueError(f"fields {header}")
    except (ValueError, csv.Error) as exc:
        # Its rows cannot be told apart without it: all skipped (the writer rewrites the file).
        _skipped(path, 1, ValueError(f"the header: {exc}; its {len(lines) - 1} rows are skipped"), say)
        return []
    rows = []
    for number, line in enumerate(lines[1:], 2):
        if not line.strip():
            continue
        try:
            values = _csv_row(line)
            if len(values) != len(header):
                raise ValueError(f"{len(values)} fields, the header has {len(header)}")
        except (ValueError, csv.Error) as exc:
            _skipped(path, number, exc, say)
            continue
        rows.append(dict(zip(header, values)))
    return rows


def _csv_row(line: bytes) -> list[str]:
    """One line of a CSV file (our writers never put a newline inside a field)."""
    text = line.decode("utf-8")
    if "\0" in text:
        raise ValueError("a NUL byte")
    return next(csv.reader([text]), [])
