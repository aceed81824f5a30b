"""What a training run writes into its run directory, besides checkpoints (run_state.py), in
both modes (`robostack train` and `robostack train --single-process`):

    config.json       the run's RunConfig (robostack/training/config.py), plus mode and endpoints;
                      a run is resumed only with the settings recorded here (start_run)
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
append-only log whose readers skip a torn last line.
"""

from __future__ import annotations

import csv
import io
import json
import os
import time
from pathlib import Path

from robostack.files import write_json_atomic, write_text_atomic

# What a run writes: a folder holding any of these holds a run.
RUN_STATE = ("checkpoints", "buffers", "spool", "episodes", "episodes.jsonl", "progress.csv",
             "metrics.csv", "eval.json", "evals", "summary", "tensorboard", "logs", "config.json",
             "processes.json")
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
    return moved


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
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def append_episode(run_dir: Path, record: dict) -> None:
    with open(Path(run_dir) / "episodes.jsonl", "a") as f:
        f.write(json.dumps(record) + "\n")


def trim_episodes(run_dir: Path, stored: dict[str, int]) -> None:
    """Keep only episodes whose last transition a resumed learner holds (stored[actor] seq):
    actors resend the later transitions, and those episodes are logged again with them."""
    path = Path(run_dir) / "episodes.jsonl"
    if not path.is_file():
        return
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:  # a line torn by a crash
            continue
    kept = [r for r in records if r.get("last_seq", 0) <= stored.get(r.get("actor"), 0)]
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


def read_csv(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def tensorboard_writer(run_dir: Path):
    """A SummaryWriter on <run_dir>/tensorboard, or None without the tensorboard package."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # optional: every scalar is in the CSV files anyway
        return None
    return SummaryWriter(str(Path(run_dir) / "tensorboard"))


def format_progress(s: dict) -> str:
    """One progress line from the learner's stats."""
    versions = ",".join(f"v{a['weights_version']}" for a in s["actors"].values()) or "-"
    unsent = sum(a["unsent"] for a in s["actors"].values())
    return (f"step {s['env_steps']:>6}/{s['total_steps']}  episodes {s['episodes']:>4}  "
            f"success(last 20) {s['success_rate']:4.0%}  return {s['return']:5.2f}  "
            f"updates/s {s['updates_per_s']:5.0f}  UTD {s['utd']:.2f}/{s['utd_target']}  "
            f"interventions {s['interventions']}  weights v{s['weights_version']} "
            f"(actors {versions})  {s['env_steps_per_s']:5.1f} steps/s"
            + (f"  spooled {unsent}" if unsent else "") + (f"  LOST {s['lost']}" if s["lost"] else "")
            + ("" if s["phase"] == "training" else f"  [{s['phase']}]"))
