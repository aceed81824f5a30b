"""What an actor/learner training run writes into its run directory, besides checkpoints:

    config.json       snapshot of every option (train, learner, launcher, endpoints)
    metrics.csv       one row per evaluation (periodic and final); always written, header only
                      when no evaluation ran
    progress.csv      one row per learner progress report (counters, rates, losses)
    episodes.jsonl    one line per finished episode (actor, return, success, why it ended ...)
    eval.json         the final evaluation
    tensorboard/      progress (train/*) and evaluation (eval/*) scalars, flushed at every
                      report, if the tensorboard package is installed (not a dependency)
    logs/, spool/     each process's output; actors' unacknowledged transitions
    checkpoints/, buffers/   the learner's state (robostack/rl/checkpoint.py, buffers.py)
"""

from __future__ import annotations

import csv
import json
import os
import time
from pathlib import Path

RUN_STATE = ("checkpoints", "buffers", "spool", "episodes.jsonl", "progress.csv", "metrics.csv",
             "eval.json", "tensorboard")


def archive_previous_run(run_dir: Path, say=print) -> None:
    """--resume false on a used run directory: move the old run's state aside, never delete it."""
    run_dir = Path(run_dir)
    old = [name for name in RUN_STATE if (run_dir / name).exists()]
    if not old:
        return
    target = run_dir / f"replaced-{time.strftime('%Y%m%d-%H%M%S')}"
    target.mkdir(parents=True, exist_ok=True)
    for name in old:
        os.replace(run_dir / name, target / name)
    say(f"--resume false: moved the previous run's {', '.join(old)} to {target}")


def update_config(run_dir: Path, snapshot: dict) -> None:
    """Write config.json, keeping the keys of an existing snapshot that `snapshot` lacks (the
    launcher and the learner each know part of the story)."""
    path = Path(run_dir) / "config.json"
    if path.is_file():
        snapshot = {**json.loads(path.read_text()), **snapshot}
    _write_text(path, json.dumps(snapshot, indent=2))


def append_episode(run_dir: Path, record: dict) -> None:
    with open(Path(run_dir) / "episodes.jsonl", "a") as f:
        f.write(json.dumps(record) + "\n")


def trim_episodes(run_dir: Path, stored: dict[str, int]) -> None:
    """Keep only episodes whose last transition a resumed learner holds (stored[actor] seq):
    actors resend the later transitions, and those episodes are logged again with them."""
    path = Path(run_dir) / "episodes.jsonl"
    if not path.is_file():
        return
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    kept = [r for r in records if r.get("last_seq", 0) <= stored.get(r.get("actor"), 0)]
    _write_text(path, "".join(json.dumps(r) + "\n" for r in kept))


# metrics.csv's columns, also written (header only) by a run that made no evaluation.
METRICS_FIELDS = ["env_steps", "wall_seconds", "success_rate", "time_to_success_s",
                  "weights_version", "actor", "final"]


def write_csv(path: Path, rows: list[dict], fields: list[str] = ()) -> None:
    """All rows, header = `fields`, then the other keys of the rows in order of appearance
    (atomic replace)."""
    tmp = path.with_suffix(".tmp")
    fields = list(dict.fromkeys([*fields, *(k for row in rows for k in row)]))
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, path)


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


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
