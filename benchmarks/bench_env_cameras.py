"""Lock-step env steps per second on pick_cube with simulated cameras: the robot server over
ZeroMQ renders each step's images from the state of that step (robostack/robot/images.py).

    .venv/bin/python benchmarks/bench_env_cameras.py [--seconds 5]

Variants, all as `robostack train` runs an actor and its robot server (server subprocess over a
unix socket, client and server pinned to one core), the scripted expert acting, resets counted:
  no cameras       state observations only: the baseline of this run
  front            + one 128 x 128 camera
  front + wrist    + two (issue 12's figure: >= 60 steps/s on the 2-core machine)
Interleaved slices, so a change of machine load hits every variant alike. The render cost per
frame is also measured on its own in this process (sim/mujoco_cameras.py, the same settings).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MUJOCO_GL", "egl")

from bench_env import Runner, measure_interleaved  # noqa: E402

from robostack import cpu_affinity  # noqa: E402
from robostack.env import RobotEnv  # noqa: E402
from robostack.robot.client import spawn_robot_server  # noqa: E402
from tasks import make_task  # noqa: E402

TASK = "pick_cube"
VARIANTS = {"no cameras": (), "front": ("front",), "front + wrist": ("front", "wrist")}
TARGET = 60.0  # steps/s with two cameras


def render_cost(frames: int = 300) -> dict[str, float]:
    """ms per frame of each camera, rendered in this process from a reset scene."""
    from sim.mujoco_backend import MujocoBackend
    from sim.mujoco_cameras import MujocoCameras
    from sim.mujoco_scene import compile_scene

    task = make_task(TASK)
    backend = MujocoBackend(compile_scene(task.build_scene()))
    with MujocoCameras.of_world(backend.world) as cameras:
        costs = {}
        for name in cameras.names:
            cameras.render(name)  # first use: buffers, textures
            start = time.perf_counter()
            for _ in range(frames):
                cameras.render(name)
            costs[name] = (time.perf_counter() - start) / frames * 1e3
    backend.close()
    return costs


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="measured time per variant (default 5)")
    parser.add_argument("--slice", type=float, default=1.0, help="interleaving slice (s)")
    args = parser.parse_args(argv)

    load_before = os.getloadavg()
    print(f"{TASK}, lock-step over ZeroMQ, scripted expert, 128 x 128 cameras; {args.seconds:g} s "
          f"per variant in {args.slice:g} s slices; load average {load_before[0]:.2f} on "
          f"{os.cpu_count()} cores")
    core = cpu_affinity.available_cpus()[-1:]
    cpu_affinity.pin(0, core)  # this process (the env) and every server share one core
    base = make_task(TASK).config
    connections, runners = [], []
    try:
        for name, cameras in VARIANTS.items():
            connection = spawn_robot_server(TASK, cpus=core)
            connections.append(connection)
            env = RobotEnv(connection, task=TASK, config=dataclasses.replace(base, cameras=cameras))
            runners.append(Runner(name, env, server_pid=connection.process.pid))
        measure_interleaved(runners, args.seconds, args.slice)  # warm-up incl. the GL context
    finally:
        for connection in connections:
            connection.close()
    costs = render_cost()
    load_after = os.getloadavg()

    print(f"\n{'variant':<16}{'steps/s':>9}{'ms/step':>9}{'CPU ms/step':>13}{'vs none':>9}{'steps':>8}")
    none = runners[0]
    for r in runners:
        print(f"{r.name:<16}{r.rate:>9.1f}{1e3 / r.rate:>9.3f}{1e3 * r.cpu / r.steps:>13.3f}"
              f"{r.rate / none.rate:>8.2f}x{r.steps:>8}")
    two = runners[-1]
    per_frame = (1e3 / two.rate - 1e3 / none.rate) / 2
    print(f"\neach camera adds {per_frame:.2f} ms per step over ZeroMQ (render + read-back + 49 kB "
          f"each way through both processes); rendering alone: "
          + ", ".join(f"{n} {ms:.2f} ms" for n, ms in costs.items()) + " per frame")
    print(f"target (front + wrist >= {TARGET:g} steps/s): {two.rate:.1f} steps/s, "
          f"{'met' if two.rate >= TARGET else 'MISSED'}")
    print(f"load average (1 min) before {load_before[0]:.2f}, after {load_after[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
