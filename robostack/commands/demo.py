"""`robostack demo` (what `make demo` runs): the main job, training, in the MuJoCo mirror
(--backend pybullet: in the PyBullet one).

It runs `robostack train --task pick_cube` with a budget sized for a 2-core laptop (6,000 env
steps, ~4-7 min): a robot server, an actor and a learner as separate processes over ZeroMQ
(robostack/training/launcher.py), live progress lines, then a final evaluation of the learned policy,
and it ends with that measured success rate, saying so plainly when it is under 80 %.

Each demo starts a fresh run in --run-dir (runs/demo; a previous run there is moved aside into
runs/demo/replaced-<time>/, never resumed; the demo keeps the newest --keep-replaced of those,
~10 MB each, so repeated demos do not fill the disk). Options it does not know go to `robostack train`
unchanged, e.g. `robostack demo --seed 1 --sac-num-critics 2`.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

from robostack.config import check_backend

TARGET = 0.8  # the success rate the demo is expected to reach (issue 4)
MIRROR_NAMES = {"mujoco": "MuJoCo", "pybullet": "PyBullet"}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="robostack demo", description=__doc__.splitlines()[0],
        epilog="Other options are passed to `robostack train` (see robostack train --help).")
    parser.add_argument("--total-steps", type=int, default=6000,
                        help="env steps of online training (default 6000)")
    parser.add_argument("--run-dir", default="runs/demo", help="run directory (default runs/demo)")
    parser.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    parser.add_argument("--backend", default="mujoco",
                        help="the mirror to train in: mujoco (MuJoCo) or pybullet (PyBullet: the same "
                             "Panda, tcp and controller) (default mujoco)")
    parser.add_argument("--eval-episodes", type=int, default=20,
                        help="episodes of each evaluation every 2,000 steps (default 20)")
    parser.add_argument("--final-eval-episodes", type=int, default=50,
                        help="episodes of the final evaluation (default 50)")
    parser.add_argument("--keep-replaced", type=int, default=3,
                        help="earlier demo runs kept in RUN_DIR/replaced-* (default 3; older "
                             "ones are deleted)")
    args, rest = parser.parse_known_args(argv)
    try:
        check_backend(args.backend)
    except ValueError as exc:
        parser.error(str(exc))
    run_dir = Path(args.run_dir)
    prune_replaced_runs(run_dir, args.keep_replaced)
    train_argv = ["--task", "pick_cube", "--backend", args.backend, "--total-steps", str(args.total_steps),
                  "--seed", str(args.seed), "--run-dir", str(run_dir), "--resume", "false",
                  "--eval-every", "2000", "--eval-episodes", str(args.eval_episodes),
                  "--final-eval-episodes", str(args.final_eval_episodes), *rest]
    print(f"robostack demo: train pick_cube (state, sparse reward, 20 scripted demonstrations, "
          f"SAC/RLPD) for {args.total_steps} env steps in the {MIRROR_NAMES.get(args.backend, args.backend)} mirror: robot server, actor "
          f"and learner as separate processes over ZeroMQ. A progress line every 10 s; a final "
          f"evaluation of {args.final_eval_episodes} episodes at the end.\n"
          f"  = robostack train {' '.join(train_argv)}\n", flush=True)
    from robostack.commands.train import main as train

    started = time.perf_counter()
    code = train(train_argv)
    wall = time.perf_counter() - started
    result_path = run_dir / "eval.json"
    if code != 0 or not result_path.is_file():
        print(f"\nrobostack demo: training did not finish with an evaluation (exit code {code}, "
              f"{wall:.0f} s); see {run_dir / 'logs'}", flush=True)
        return code or 1
    result = json.loads(result_path.read_text())
    rate = float(result["success_rate"])
    verdict = ("reached the 80 % target" if rate >= TARGET else
               f"UNDER the 80 % target: this run did not learn the task well enough in "
               f"{result['env_steps']} steps (try a larger --total-steps)")
    print(f"\nrobostack demo: success rate {rate:.0%} over {result['episodes']} evaluation "
          f"episodes after {result['env_steps']} env steps, {wall / 60:.1f} min wall time; "
          f"{verdict}. Run directory {run_dir}.", flush=True)
    return 0


def prune_replaced_runs(run_dir: Path, keep: int) -> None:
    """Before a demo: delete the oldest replaced-<time> folders of its run directory (names sort
    by time) so that, once the run there now is moved aside too, `keep` remain. Only the demo
    does this: `robostack train` never deletes a run."""
    from robostack.training.run_dir import RUN_STATE

    if any((run_dir / name).exists() for name in RUN_STATE):
        keep -= 1  # the current run becomes one more
    old = sorted(p for p in run_dir.glob("replaced-*") if p.is_dir())
    for path in old[:max(0, len(old) - keep)]:
        shutil.rmtree(path, ignore_errors=True)
        print(f"robostack demo: deleted an old demo run, {path}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
