"""Learning proof: success rate vs environment steps and vs wall-clock on pick_cube (state
observations, 20 scripted-expert demos, sparse reward), one `robostack train --single-process`
run per seed, with the trainer's default settings unless extra options are given.

Each run is a subprocess (one torch thread each). Afterwards the runs' metrics.csv files are
merged into docs/learning/pick_cube_state.csv and drawn as docs/learning/pick_cube_state.png
(matplotlib if installed -- a benchmark-only dependency -- else OpenCV), and a summary table
(first evaluation at >= 90 %, final success) is printed.

    python benchmarks/learning_curve.py                      # seeds 0 1 2, one at a time (~45 min)
    python benchmarks/learning_curve.py --parallel 2         # only on an otherwise idle machine
    python benchmarks/learning_curve.py --plot-only          # redraw from the CSV
    python benchmarks/learning_curve.py --multi-process      # the actor/learner processes instead
    python benchmarks/learning_curve.py --seeds 0 --total-steps 6000 --eval-episodes 10 \
        --out /tmp/lc -- --sac-num-critics 2                 # quick look; options after -- go to train

wall_seconds counts from the first online step (after demo collection) and includes the
evaluations; eval_seconds says how much of it they took.
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COLUMNS = ["seed", "env_steps", "wall_seconds", "success_rate", "time_to_success_s", "eval_seconds"]
TARGET = 0.9


def run_seeds(args, extra: list[str]) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    pending, running = list(args.seeds), {}
    while pending or running:
        while pending and len(running) < args.parallel:
            seed = pending.pop(0)
            run_dir = Path(args.runs) / f"seed_{seed}"
            run_dir.mkdir(parents=True, exist_ok=True)
            mode = [] if args.multi_process else ["--single-process"]
            cmd = [sys.executable, "-m", "robostack.cli", "train", *mode, "--task", args.task,
                   "--seed", str(seed), "--total-steps", str(args.total_steps),
                   "--eval-every", str(args.eval_every), "--eval-episodes", str(args.eval_episodes),
                   "--demos", str(args.demos), "--threads", "1", "--resume", "false",
                   "--run-dir", str(run_dir), *extra]
            print(f"seed {seed}: {' '.join(cmd[1:])}\n  log: {run_dir / 'train.log'}", flush=True)
            log = open(run_dir / "train.log", "w")
            running[seed] = (subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT),
                             log, time.perf_counter())
        time.sleep(2)
        for seed, (proc, log, t0) in list(running.items()):
            if proc.poll() is not None:
                log.close()
                del running[seed]
                print(f"seed {seed}: exit {proc.returncode} after {time.perf_counter() - t0:.0f} s", flush=True)
                if proc.returncode != 0:
                    sys.exit(f"seed {seed} failed; see {Path(args.runs) / f'seed_{seed}' / 'train.log'}")


def collect(args) -> list[dict]:
    rows = []
    for seed in args.seeds:
        with open(Path(args.runs) / f"seed_{seed}" / "metrics.csv") as f:
            for r in csv.DictReader(f):
                rows.append({"seed": seed, **{k: _short(r[k]) for k in COLUMNS[1:] if k in r}})
    return rows


def _short(text: str) -> str:
    x = round(float(text), 3)
    return str(int(x) if x.is_integer() else x)


def write_csv(rows: list[dict], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def read_csv(path: Path) -> list[dict]:
    with open(path) as f:
        return list(csv.DictReader(f))


def curves(rows: list[dict]) -> dict[int, dict[str, list[float]]]:
    out: dict[int, dict[str, list[float]]] = {}
    for r in rows:
        c = out.setdefault(int(r["seed"]), {"steps": [], "wall": [], "success": []})
        c["steps"].append(float(r["env_steps"]))
        c["wall"].append(float(r["wall_seconds"]))
        c["success"].append(100 * float(r["success_rate"]))
    return out


def summary(rows: list[dict]) -> str:
    lines = [f"| seed | first eval >= {TARGET:.0%}: env steps | wall-clock | final success "
             "| final time to success |", "| --- | --- | --- | --- | --- |"]
    for seed, c in sorted(curves(rows).items()):
        hit = next((i for i, s in enumerate(c["success"]) if s >= 100 * TARGET - 1e-9), None)
        last = [r for r in rows if int(r["seed"]) == seed][-1]
        t = float(last["time_to_success_s"])
        steps = f"{c['steps'][hit]:.0f}" if hit is not None else "not reached"
        wall = f"{c['wall'][hit] / 60:.1f} min" if hit is not None else "-"
        to_success = "-" if math.isnan(t) else f"{t:.2f} s"
        lines.append(f"| {seed} | {steps} | {wall} | {c['success'][-1]:.0f} % at "
                     f"{c['steps'][-1]:.0f} steps | {to_success} |")
    return "\n".join(lines)


def plot(rows: list[dict], path: Path, title: str) -> None:
    data = curves(rows)
    try:
        import matplotlib
    except ImportError:
        return _plot_cv2(data, path, title)
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), sharey=True)
    for seed, c in sorted(data.items()):
        axes[0].plot(c["steps"], c["success"], marker="o", ms=3, label=f"seed {seed}")
        axes[1].plot([w / 60 for w in c["wall"]], c["success"], marker="o", ms=3, label=f"seed {seed}")
    axes[0].set_xlabel("environment steps")
    axes[1].set_xlabel("wall-clock (min, evaluations included)")
    axes[0].set_ylabel("eval success (%)")
    for ax in axes:
        ax.axhline(100 * TARGET, color="grey", lw=0.8, ls="--")
        ax.set_ylim(-3, 103)
        ax.grid(alpha=0.3)
    axes[0].legend(loc="lower right")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot_cv2(data: dict, path: Path, title: str) -> None:
    import cv2
    import numpy as np

    w, h, m = 500, 360, 50
    img = np.full((h + 40, 2 * w, 3), 255, np.uint8)
    colours = [(180, 119, 31), (14, 127, 255), (44, 160, 44), (40, 39, 214)]
    for panel, key, label in ((0, "steps", "env steps"), (1, "wall", "wall-clock s")):
        x0 = panel * w
        xmax = max(max(c[key]) for c in data.values()) or 1
        to_px = lambda x, y: (int(x0 + m + (w - 2 * m) * x / xmax), int(h - m - (h - 2 * m) * y / 100))  # noqa: E731
        cv2.rectangle(img, to_px(0, 0), to_px(xmax, 100), (0, 0, 0), 1)
        cv2.line(img, to_px(0, 100 * TARGET), to_px(xmax, 100 * TARGET), (150, 150, 150), 1)
        cv2.putText(img, f"{label} (0..{xmax:.0f})", (x0 + m, h - 15), cv2.FONT_HERSHEY_SIMPLEX, 0.45, 0, 1)
        for i, (seed, c) in enumerate(sorted(data.items())):
            pts = np.array([to_px(x, y) for x, y in zip(c[key], c["success"])], np.int32)
            cv2.polylines(img, [pts], False, colours[i % 4], 2)
            cv2.putText(img, f"seed {seed}", (x0 + m + 5, m + 15 + 15 * i), cv2.FONT_HERSHEY_SIMPLEX, 0.45,
                        colours[i % 4], 1)
    cv2.putText(img, title, (m, h + 25), cv2.FONT_HERSHEY_SIMPLEX, 0.45, 0, 1)
    cv2.imwrite(str(path), img)


def main() -> int:
    argv = sys.argv[1:]
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[:argv.index("--")] if "--" in argv else argv
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--task", default="pick_cube")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--total-steps", type=int, default=20_000)
    p.add_argument("--eval-every", type=int, default=2_000)
    p.add_argument("--eval-episodes", type=int, default=50)
    p.add_argument("--demos", type=int, default=20)
    p.add_argument("--parallel", type=int, default=1, help="runs at once (one CPU core each)")
    p.add_argument("--multi-process", action="store_true",
                   help="train with robot server, actor and learner processes (`robostack train` "
                        "without --single-process; two cores per run): evaluations are the "
                        "evaluator actor's, plus the final one")
    p.add_argument("--runs", default="runs/learning_curve", help="run directories (seed_<n>/)")
    p.add_argument("--out", default="docs/learning", help="where the CSV and PNG go")
    p.add_argument("--plot-only", action="store_true", help="redraw from the CSV in --out")
    args = p.parse_args(argv)
    out = Path(args.out)
    csv_path, png_path = out / f"{args.task}_state.csv", out / f"{args.task}_state.png"
    if args.plot_only:
        rows = read_csv(csv_path)
    else:
        run_seeds(args, extra)
        rows = collect(args)
        write_csv(rows, csv_path)
    mode = ("robot server, actor, learner processes on 2 cores" if args.multi_process
            else "single process, 1 CPU thread")
    title = (f"{args.task} (state, {args.demos} scripted demos, sparse reward): deterministic eval "
             f"success over {args.eval_episodes} episodes\n{mode}")
    plot(rows, png_path, title)
    print(f"\n{csv_path}\n{png_path}\n\n{summary(rows)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
