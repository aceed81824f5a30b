"""kill -9 storm: does a `robostack train` run survive its processes being killed at random?

For each seed, one unkilled run and one killed run of the same short config (task reach, tiny
networks as in tests/training/test_modes.py TINY, a checkpoint every second). During the killed
run, `--kills` SIGKILLs hit the learner, the actor and the robot server (each kind at least
twice per run, the order shuffled) at random moments of its first `--window` seconds (and of
80% of the unkilled run's time, so that each kill lands while the run lives), the first within
the first few seconds (the demonstrations, before any checkpoint). Then, from what
the run left behind:

    finished     the launcher exited 0 with its summary "done"; abandoned otherwise
    lost         acknowledged transitions lost: the final checkpoint's ledger `lost` counts
    held once    every seq each actor handed out is held once (ledger stored == the actor's
                 last seq, stored == online + demo buffer sizes, env_steps == online size)
    time ratio   killed run's wall time / the unkilled run's (same config, same seed, same run
                 of this script, alternating so that the machine's load hits both alike)

    .venv/bin/python benchmarks/bench_kill_storm.py                 # 3 seeds, 8 kills each
    .venv/bin/python benchmarks/bench_kill_storm.py --seeds 0 --kills 4 --total-steps 300
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

TINY = ["--task", "reach", "--sac-hidden-dims", "16", "16", "--sac-num-critics", "2",
        "--sac-batch-size", "16", "--utd-ratio", "1", "--learning-starts", "40", "--eval-every", "0",
        "--final-eval-episodes", "0", "--progress-seconds", "5", "--progress-every", "200",
        "--checkpoint-every", "1", "--max-episode-steps", "20", "--demos", "2"]
KINDS = ("learner", "actor-0", "robot-server-0")
ENV = dict(os.environ, OMP_NUM_THREADS="1", MUJOCO_GL="egl", PYTHONUNBUFFERED="1")


def child_pid(run: Path, name: str) -> int | None:
    """The live pid of child `name` (from processes.json, checked against /proc: the file can
    name a process that was just replaced)."""
    try:
        pid = int(json.loads((run / "processes.json").read_text())[name])
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError, KeyError):
        return None
    return pid if b"robostack.training.launcher" in cmdline and b"--child" in cmdline else None


def one_run(run: Path, seed: int, total_steps: int, kills: list[tuple[float, str]],
            timeout: float) -> dict:
    command = [sys.executable, "-m", "robostack.cli", "train", *TINY, "--seed", str(seed),
               "--run-dir", str(run), "--total-steps", str(total_steps)]
    run.parent.mkdir(parents=True, exist_ok=True)
    log = open(run.parent / f"{run.name}.log", "wb")
    started = time.monotonic()
    train = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=ENV, cwd=REPO)
    done_kills = []
    try:
        pending = list(kills)
        while train.poll() is None:
            now = time.monotonic() - started
            if now > timeout:
                train.send_signal(signal.SIGINT)
                train.wait(120)
                break
            if pending and now >= pending[0][0]:
                at, name = pending.pop(0)
                pid = child_pid(run, name)
                if pid is not None:
                    try:
                        os.kill(pid, signal.SIGKILL)
                        done_kills.append((round(now, 1), name))
                    except ProcessLookupError:
                        pass
                else:  # between a death and its restart: try again a moment later
                    pending.insert(0, (now + 0.3, name))
            time.sleep(0.05)
    finally:
        if train.poll() is None:
            train.kill()
            train.wait(10)
        log.close()
    wall = time.monotonic() - started
    return {"wall": wall, "code": train.returncode, "kills": done_kills, **outcome(run)}


def outcome(run: Path) -> dict:
    from robostack.training.run_dir import read_summary
    from robostack.training.run_state import load_run_state

    launcher = read_summary(run, "launcher") or {}
    result = {"finished": launcher.get("state") == "done", "why": launcher.get("why"),
              "restarts": launcher.get("restarts", {})}
    try:
        state = load_run_state(run)
    except Exception as exc:  # noqa: BLE001 - a benchmark reports, it does not stop
        return {**result, "lost": None, "held_once": False, "note": f"no checkpoint: {exc}"}
    if state is None:
        return {**result, "lost": None, "held_once": False, "note": "no checkpoint"}
    ledger = state.ledger
    actors_ok = all((read_summary(run, a) or {}).get("last_seq") == seq for a, seq in ledger["stored"].items())
    held_once = (actors_ok and sum(ledger["stored"].values()) == len(state.online) + len(state.demos)
                 and state.counters["env_steps"] == len(state.online))
    return {**result, "lost": sum(ledger.get("lost", {}).values()), "held_once": held_once,
            "env_steps": state.counters["env_steps"]}


def kill_plan(rng: random.Random, kills: int, window: float) -> list[tuple[float, str]]:
    kinds = [KINDS[i % len(KINDS)] for i in range(kills)]
    rng.shuffle(kinds)
    times = sorted([rng.uniform(1.0, 6.0)] + [rng.uniform(2.0, max(3.0, window)) for _ in range(kills - 1)])
    return list(zip(times, kinds))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--kills", type=int, default=8, help="SIGKILLs per killed run")
    parser.add_argument("--window", type=float, default=30.0, help="s: kills fall in the run's first WINDOW s")
    parser.add_argument("--total-steps", type=int, default=3000)
    parser.add_argument("--timeout", type=float, default=240.0, help="s per run before it is stopped (counted abandoned)")
    parser.add_argument("--keep", default="", help="folder to keep the runs in (default: a temp folder, deleted)")
    args = parser.parse_args()
    folder = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="kill-storm-"))
    rows = []
    print(f"kill -9 storm: {len(args.seeds)} seeds x {args.kills} kills, reach, {args.total_steps} "
          f"steps, checkpoint every 1 s; runs in {folder}", flush=True)
    for seed in args.seeds:
        base = one_run(folder / f"seed{seed}-unkilled", seed, args.total_steps, [], args.timeout)
        # Every kill lands while the run lives: within WINDOW s and 80% of the unkilled run's time.
        plan = kill_plan(random.Random(seed), args.kills, min(args.window, 0.8 * base["wall"]))
        hit = one_run(folder / f"seed{seed}-killed", seed, args.total_steps, plan, args.timeout)
        rows.append((seed, base, hit))
        first = min((t for t, _ in hit["kills"]), default=float("nan"))
        print(f"seed {seed}: {len(plan)} kills planned; unkilled {base['wall']:.1f} s ({'finished' if base['finished'] else 'ABANDONED'}); "
              f"killed {len(hit['kills'])}x ({', '.join(f'{n}@{t:.0f}s' for t, n in hit['kills'])}; first "
              f"at {first:.1f} s) -> {'finished' if hit['finished'] else 'ABANDONED: ' + str(hit['why'])} "
              f"in {hit['wall']:.1f} s, lost {hit['lost']}, held once {hit['held_once']}, "
              f"restarts {hit['restarts']}, time ratio {hit['wall'] / base['wall']:.2f}", flush=True)
    killed = [h for _, _, h in rows]
    kills = [k for h in killed for k in h["kills"]]
    print(f"\ntotal: {len(kills)} kills over {len(rows)} seeds "
          f"({', '.join(f'{k} {sum(n == k for _, n in kills)}' for k in KINDS)}; "
          f"{sum(t < 30 for t, _ in kills)} within the first 30 s)")
    print(f"runs finished {sum(h['finished'] for h in killed)}/{len(killed)}, abandoned "
          f"{sum(not h['finished'] for h in killed)}; acknowledged transitions lost "
          f"{sum(h['lost'] or 0 for h in killed)}"
          + ("" if all(h["lost"] is not None for h in killed) else " (a run left no checkpoint)")
          + f"; every transition held once: {all(h['held_once'] for h in killed)}")
    ratios = [h["wall"] / b["wall"] for _, b, h in rows]
    print(f"time per run, killed / unkilled: {', '.join(f'{r:.2f}' for r in ratios)} "
          f"(mean {sum(ratios) / len(ratios):.2f}); unkilled runs all finished: "
          f"{all(b['finished'] for _, b, _ in rows)}")
    return 0 if all(h["finished"] and h["lost"] == 0 and h["held_once"] for h in killed) else 1


if __name__ == "__main__":
    sys.exit(main())
