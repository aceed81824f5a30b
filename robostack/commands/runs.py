"""`robostack runs [FOLDER]`: the training runs in a folder (default runs/), one row each.

A row says what the run trains (task, mode), how far it got (env steps done of its budget),
its last evaluation (success rate, at which env step), its state, and when it last wrote
anything:

    running    a process of the run is alive (processes.json, or a summary's pid)
    finished   the step budget was spent (summary/launcher.json "done", summary/learner.json
               or summary/train.json "finished")
    stopped    Ctrl-C / SIGTERM: the same command resumes it
    abandoned  the launcher gave up on a process that kept crashing
    crashed    a summary says running, but no process of the run is alive
    not started  config.json only (no process wrote a summary)
    unknown    checkpoints or evaluations, but no summary (a run of an older version)

Given a run folder itself, it lists that run and the earlier runs moved aside into its
replaced-* folders. It reads the run's small files only (config.json, summary/*.json,
metrics.csv, processes.json), never a checkpoint; a damaged or missing file is a note in the
row. `--json` prints the rows for programs.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
from pathlib import Path

from robostack.training.run_dir import REPLACED, holds_run, read_summary

# The process whose summary says how a run ended, by mode (config.json's "mode").
MAIN_PROCESS = {"actor-learner": "launcher", "single-process": "train"}
ENDED = {"done": "finished", "finished": "finished", "stopped": "stopped", "abandoned": "abandoned"}


def find_runs(folder: Path) -> list[Path]:
    """The run folders a listing of `folder` shows (see the module docstring)."""
    if holds_run(folder):
        return [folder, *sorted(p for p in folder.glob(f"{REPLACED}*") if p.is_dir())]
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def describe(run: Path) -> dict:
    """One row: what the run's small files say about it. Never raises for a damaged file."""
    row = {"run": str(run), "task": None, "mode": None, "env_steps": None, "total_steps": None,
           "success_rate": None, "success_at_step": None, "state": None, "live_pids": [],
           "modified": None, "note": ""}
    notes = []
    if not holds_run(run):
        row["note"] = "not a run (no config.json, summary/ or checkpoints/)"
        row["modified"] = _modified(run)
        return row
    config = _read_json(run / "config.json", notes)
    if config is not None:
        row.update(task=config.get("task"), mode=config.get("mode"), total_steps=config.get("total_steps"))
    summaries = {name: read_summary(run, name) for name in ("launcher", "learner", "train")}
    for name, summary in summaries.items():
        if summary is None and (run / "summary" / f"{name}.json").exists():
            notes.append(f"summary/{name}.json unreadable")
    # How far: the process that holds the counts (the learner, or the single-process trainer).
    counting = summaries["learner"] or summaries["train"]
    if counting is not None and isinstance(counting.get("env_steps"), int):
        row["env_steps"] = counting["env_steps"]
    evaluation = _last_evaluation(run / "metrics.csv", notes)
    if evaluation is not None:
        row["success_rate"], row["success_at_step"] = evaluation
        if row["env_steps"] is None:
            row["env_steps"] = evaluation[1]
    row["live_pids"] = _live_pids(run, summaries, notes)
    has_progress = (run / "checkpoints").is_dir() or evaluation is not None
    row["state"] = _state(row["mode"], summaries, row["live_pids"], has_progress)
    if row["state"] == "unknown":
        notes.append("no summary/ (a run of an older version?)")
    row["modified"] = _modified(run)
    replaced = [p for p in run.glob(f"{REPLACED}*") if p.is_dir()]
    if replaced:
        notes.append(f"{len(replaced)} earlier run(s) in {REPLACED}*")
    row["note"] = "; ".join(notes)
    return row


def _state(mode, summaries: dict, live_pids: list[int], has_progress: bool) -> str:
    if live_pids:
        return "running"
    main = summaries.get(MAIN_PROCESS.get(mode, ""))
    if main is None:  # a stand-alone learner, or a config.json of an unknown mode
        main = summaries["launcher"] or summaries["train"] or summaries["learner"]
    if main is None:  # no process of this version wrote a summary: never started, or an older run
        return "not started" if not has_progress else "unknown"
    return ENDED.get(str(main.get("state")), "crashed")


def _live_pids(run: Path, summaries: dict, notes: list[str]) -> list[int]:
    """Pids of the run's processes still alive: processes.json's, and the pid of each summary
    that says its process is still at work."""
    pids = set()
    processes = run / "processes.json"
    if processes.exists():
        listed = _read_json(processes, notes)
        if isinstance(listed, dict):
            pids.update(p for p in listed.values() if isinstance(p, int))
    for summary in summaries.values():
        if summary is not None and summary.get("state") in ("starting", "running"):
            if isinstance(summary.get("pid"), int):
                pids.add(summary["pid"])
    return sorted(p for p in pids if _is_robostack_process(p))


def _is_robostack_process(pid: int) -> bool:
    """Alive, and (where /proc tells) a Python running robostack, not a reused pid."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: not ours, whatever it is
        return False
    if not Path("/proc/self").exists():
        return True  # no /proc (not Linux): alive is all we know
    cmdline = Path(f"/proc/{pid}/cmdline")
    try:
        return b"robostack" in cmdline.read_bytes()
    except OSError:
        return False


def _last_evaluation(path: Path, notes: list[str]) -> tuple[float, int] | None:
    """(success rate, env step) of metrics.csv's last row with a success rate."""
    if not path.exists():
        return None
    try:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
        for row in reversed(rows):
            if row.get("success_rate") not in (None, ""):
                return float(row["success_rate"]), int(float(row.get("env_steps") or 0))
    except (OSError, csv.Error, ValueError, TypeError):
        notes.append("metrics.csv unreadable")
    return None


def _read_json(path: Path, notes: list[str]):
    if not path.exists():
        notes.append(f"no {path.name}")
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        notes.append(f"{path.name} unreadable")
        return None
    if not isinstance(data, dict):
        notes.append(f"{path.name} unreadable")
        return None
    return data


def _modified(run: Path) -> float | None:
    """The newest modification time of the run folder, its files and the files one level down."""
    times = []
    try:
        for entry in [run, *run.iterdir()]:
            times.append(entry.stat().st_mtime)
            if entry.is_dir() and entry != run and not entry.name.startswith(REPLACED):
                times += [p.stat().st_mtime for p in entry.iterdir()]
    except OSError:
        pass  # a file removed while we looked
    return max(times) if times else None


def table(rows: list[dict], folder: Path) -> str:
    header = ["RUN", "TASK", "MODE", "ENV STEPS", "LAST SUCCESS", "STATE", "MODIFIED", "NOTE"]
    lines = [header]
    for row in rows:
        name = os.path.relpath(row["run"], folder) if row["run"] != str(folder) else str(folder)
        steps = "-" if row["env_steps"] is None else f"{row['env_steps']}"
        if row["total_steps"] is not None:
            steps += f"/{row['total_steps']}"
        success = ("-" if row["success_rate"] is None else
                   f"{row['success_rate']:.0%} @ {row['success_at_step']}")
        modified = "-" if row["modified"] is None else time.strftime("%Y-%m-%d %H:%M",
                                                                    time.localtime(row["modified"]))
        state = row["state"] or "-"
        if row["live_pids"]:
            state += f" (pids {','.join(map(str, row['live_pids']))})"
        lines.append([name, row["task"] or "-", row["mode"] or "-", steps, success, state,
                      modified, row["note"]])
    widths = [max(len(str(line[i])) for line in lines) for i in range(len(header) - 1)]
    return "\n".join("  ".join(str(cell).ljust(width) for cell, width in zip(line, widths))
                     + "  " + line[-1] for line in lines).rstrip()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="robostack runs", description=__doc__.splitlines()[0])
    parser.add_argument("folder", nargs="?", default=None,
                        help="a folder of runs, or one run folder (default runs/)")
    parser.add_argument("--json", action="store_true",
                        help="print the rows as a JSON list (run, task, mode, env_steps, total_steps, "
                             "success_rate, success_at_step, state, live_pids, modified, note)")
    args = parser.parse_args(argv)
    folder = Path(args.folder or "runs")
    if not folder.is_dir() and args.folder is None:
        print("no runs yet: there is no runs/ folder here (robostack train writes to runs/train "
              "by default, robostack demo to runs/demo)")
        return 0
    if not folder.is_dir():
        parser.error(f"{folder}: no such folder")
    rows = [describe(run) for run in find_runs(folder)]
    if args.json:
        print(json.dumps(rows, indent=2))
    elif not rows:
        print(f"no runs in {folder}")
    else:
        print(table(rows, folder))
    return 0


if __name__ == "__main__":
    sys.exit(main())
