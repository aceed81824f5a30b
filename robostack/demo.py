"""`robostack demo` (what `make demo` runs): the main job in the MuJoCo mirror, start to finish.

Today it runs the pick_cube scripted expert through the full multi-process path (a robot server
subprocess on loopback ZeroMQ, this process as the env client) and ends with the measured success
rate. It grows into actor/learner training as those land.
"""

from __future__ import annotations

import argparse
import sys

from robostack.expert import ExpertConfig, run_expert


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="robostack demo", description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=20, help="evaluation episodes (default 20)")
    args = parser.parse_args(argv)
    print("robostack demo: pick_cube in the MuJoCo mirror, robot server in its own process, "
          "scripted expert acting over ZeroMQ\n")
    result = run_expert(ExpertConfig(task="pick_cube", episodes=args.episodes))
    print(f"\nsuccess rate: {result.success_rate:.1%} ({result.successes}/{result.episodes} "
          f"episodes), {result.steps / result.seconds:.0f} env steps/s "
          f"({result.steps / result.seconds / 10:.0f}x real time at 10 Hz)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
