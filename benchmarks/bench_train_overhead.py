"""What the actor/learner split costs: wall-clock of `robostack train` (robot server, actor and
learner as processes over ZeroMQ) against `robostack train --single-process` (env, agent and
buffers in one loop, the robot server in that process) on pick_cube, state observations, with
the same seed, UTD ratio, demonstrations and env-step budget.

Two clocks per run, both from the command's own output, read as it comes:
* whole command: start-up, 20 demonstrations, training, final evaluation, shutdown;
* training: online env steps + updates only. Single-process: metrics.csv's last wall_seconds
  minus its eval_seconds (the trainer's own clock, evaluations taken out). Actor-learner: from
  the actor's "demonstrations:" line (the learner starts learning right after) to the learner's
  "final evaluation" line (budget reached and every owed update done).

The issue 4 figure is "transport adds < 10 % to the wall-clock of a training run": the ratio
actor-learner / single-process of the training clock (and of the whole command) should be
< 1.10. On a machine with spare cores the split is faster, since acting and learning overlap.
The actor-learner run is timed with --pin-cpus true (each actor and its robot server on one
core, the learner on the others; the default) and, with --pin-off, also with --pin-cpus false.

    OMP_NUM_THREADS=1 python benchmarks/bench_train_overhead.py [--steps 4000] [--pin-off]
        [--repeats 1] [-- extra robostack train options for every run]
"""

from __future__ import annotations

import argparse
import csv
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run(name: str, command: list[str], run_dir: Path, log: Path) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    marks, lines = {}, []
    t0, cpu0 = time.perf_counter(), children_cpu()
    with open(log, "w") as out:
        proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, bufsize=1)
        for line in proc.stdout:
            now = time.perf_counter() - t0
            out.write(f"{now:8.2f} {line}")
            lines.append(line.rstrip())
            if "demonstrations:" in line:
                marks.setdefault("demos_done", now)
            if "learner: final evaluation" in line:
                marks.setdefault("budget_done", now)
        code = proc.wait()
    wall, cpu = time.perf_counter() - t0, children_cpu() - cpu0
    if code != 0:
        raise SystemExit(f"{name} failed (exit {code}); see {log}:\n" + "\n".join(lines[-30:]))
    final = next((l for l in reversed(lines) if l.startswith("final")), "")
    if "--single-process" in command:
        with open(run_dir / "metrics.csv", newline="") as f:
            last = list(csv.DictReader(f))[-1]
        training = float(last["wall_seconds"]) - float(last["eval_seconds"])
        utd = None
    else:
        training = marks["budget_done"] - marks["demos_done"]
        with open(run_dir / "progress.csv", newline="") as f:
            utd = float(list(csv.DictReader(f))[-1]["utd"])
    return {"wall": wall, "cpu": cpu, "training": training, "final": final, "utd": utd, "log": log}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=4000, help="env steps per run (default 4000)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--utd", type=int, default=2, help="critic updates per env step (default 2)")
    parser.add_argument("--pin-off", action="store_true",
                        help="also time the actor-learner run with --pin-cpus false")
    parser.add_argument("--repeats", type=int, default=1, help="rounds of all runs, back to back")
    parser.add_argument("--keep", default="", help="keep run directories and logs here")
    parser.add_argument("extra", nargs="*", help="more `robostack train` options (after --)")
    args = parser.parse_args()
    common = ["--task", "pick_cube", "--seed", str(args.seed), "--total-steps", str(args.steps),
              "--utd-ratio", str(args.utd), "--demos", "20", "--eval-every", str(10 * args.steps),
              "--eval-episodes", "10", "--progress-every", "1000", "--resume", "false", *args.extra]
    variants = [("single-process", ["--single-process"]),
                ("actor-learner, pinned", ["--pin-cpus", "true"])]
    if args.pin_off:
        variants.append(("actor-learner, unpinned", ["--pin-cpus", "false"]))
    base = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bench_train_overhead_"))
    base.mkdir(parents=True, exist_ok=True)
    print(f"pick_cube, state, seed {args.seed}, UTD {args.utd}, {args.steps} env steps, 20 demos; "
          f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f} at start; logs in {base}",
          flush=True)
    results: dict[str, list[dict]] = {name: [] for name, _ in variants}
    for r in range(args.repeats):
        for name, extra in variants:
            tag = name.replace(", ", "-")
            run_dir = base / f"{tag}-{r}"
            command = [sys.executable, "-m", "robostack.cli", "train", *common, *extra,
                       "--run-dir", str(run_dir)]
            res = run(name, command, run_dir, base / f"{tag}-{r}.log")
            results[name].append(res)
            print(f"  {name:<24} whole command {res['wall']:6.1f} s, training {res['training']:6.1f} s "
                  f"({args.steps / res['training']:5.1f} env steps/s), CPU {res['cpu']:6.1f} s"
                  + (f", achieved UTD {res['utd']:.2f}" if res["utd"] is not None else "")
                  + f"  | {res['final']}", flush=True)
    single = results["single-process"]
    for name, _ in variants[1:]:
        for key, label in (("training", "training"), ("wall", "whole command")):
            ratios = [m[key] / s[key] for m, s in zip(results[name], single)]
            print(f"{name} / single-process, {label:<13}: "
                  + ", ".join(f"{x:.2f}" for x in ratios)
                  + f"   (issue 4 target < 1.10: {'met' if max(ratios) < 1.10 else 'NOT met'})")


if __name__ == "__main__":
    main()
