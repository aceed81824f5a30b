"""Env steps per second on pick_cube: the robot server over ZeroMQ in its own process, the same
server in-process (same code path minus sockets), and in-process with the Python tick loop.

    .venv/bin/python benchmarks/bench_env.py [--seconds 5]

Every variant: state observations, the task's scripted expert choosing actions (episodes reset
when they end, and resets are counted in the time: that is what training sees), lock-step clock,
one env step = 100 physics ticks with the 1 kHz impedance controller evaluated every tick.

  (a) zmq          `python -m robostack.robot.server` subprocess, RobotEnv over a unix socket (ipc),
                   server and this process pinned to one core, as `robostack train` runs an
                   actor and its server (robostack/cpu_affinity.py)
  (a') zmq, unpinned  the same with the server free to run on any core
  (b) in-process   RobotServer in this process behind InProcessConnection, compiled tick loop
  (c) python loop  as (b) with fast_loop=False: sense / compute / actuate called from Python

Each variant is warmed up first (numba compiles its loop, ~2 s per process), then measured for
--seconds in total, in interleaved slices so that a change in machine load hits all alike.
The controller's own cost per tick is measured in the same run, on the (c) server.
Targets: (a) >= 200 steps/s and (b)/(a) <= 1.25.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("OMP_NUM_THREADS", "1")

from robostack import cpu_affinity  # noqa: E402
from robostack.robot.client import InProcessConnection, spawn_robot_server  # noqa: E402
from robostack.env import RobotEnv  # noqa: E402
from robostack.robot.server import RobotServer, RobotServerConfig  # noqa: E402

TASK = "pick_cube"


def process_cpu(pid: int | None = None) -> float:
    """CPU seconds used so far by this process (pid None) or another one, all threads."""
    if pid is None:
        return time.process_time()
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


class Runner:
    """Drives one env with the scripted expert, continuing its episode across slices.
    Also counts CPU time (this process, plus the server process if there is one): on a shared
    machine wall time includes waiting for a core, CPU time does not."""

    def __init__(self, name: str, env: RobotEnv, server_pid: int | None = None):
        self.name, self.env, self.server_pid = name, env, server_pid
        self.expert = env.task.expert(seed=0)
        self.episode = 0
        self.steps = self.resets = 0
        self.seconds = self.cpu = 0.0
        self._new_episode()

    def _cpu(self) -> float:
        return process_cpu() + (process_cpu(self.server_pid) if self.server_pid else 0.0)

    def _new_episode(self) -> None:
        self.env.reset(seed=self.episode)
        self.expert.reset()
        self.episode += 1

    def run(self, seconds: float) -> None:
        env, expert = self.env, self.expert
        steps = resets = 0
        cpu = self._cpu()
        start = time.perf_counter()
        end = start + seconds
        while time.perf_counter() < end:
            _, _, terminated, truncated, _ = env.step(expert(env.fields()))
            steps += 1
            if terminated or truncated:
                self._new_episode()
                resets += 1
        self.seconds += time.perf_counter() - start
        self.cpu += self._cpu() - cpu
        self.steps += steps
        self.resets += resets

    @property
    def rate(self) -> float:
        return self.steps / self.seconds


def measure_interleaved(runners: list[Runner], seconds: float, slice_s: float) -> None:
    """Warm each runner up for 1 s (compile, first-use allocations, socket connect), then run
    them in turn, `slice_s` at a time, until each has run `seconds`: a change in machine load
    hits all alike."""
    for runner in runners:
        runner.run(1.0)
        runner.steps = runner.resets = 0
        runner.seconds = runner.cpu = 0.0
    while min(r.seconds for r in runners) < seconds:
        for runner in runners:
            runner.run(min(slice_s, seconds - runner.seconds + 1e-3))


def controller_cost(server: RobotServer, ticks: int = 20_000) -> tuple[float, float]:
    """(controller compute, physics sense + actuate) in µs per tick, on the Python tick loop."""
    b, c = server.backend, server.law
    clock = time.perf_counter
    overhead = min(-(clock() - clock()) for _ in range(1000))  # a clock() pair's own cost
    compute_total = 0.0
    start = clock()
    for _ in range(ticks):
        s = b.sense()
        t0 = clock()
        tau = c.compute(s.q, s.dq, s.tcp_position, s.tcp_rotation, s.jacobian, s.coriolis)
        compute_total += clock() - t0 - overhead
        b.actuate(tau)
    total = clock() - start
    compute = compute_total / ticks * 1e6
    return compute, total / ticks * 1e6 - compute


def tick_cost(server: RobotServer, ticks: int = 5_000) -> float:
    """Wall µs per tick of the server's own tick loop (compiled or Python), going on from the
    state its last episode left (no new command: the arm settles on its last reference)."""
    server.run_ticks(100)
    start = time.perf_counter()
    server.run_ticks(ticks)
    return (time.perf_counter() - start) / ticks * 1e6


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0,
                        help="measured time per variant (default 5)")
    parser.add_argument("--slice", type=float, default=1.0, help="interleaving slice (s)")
    args = parser.parse_args(argv)

    load_before = os.getloadavg()
    print(f"{TASK}, lock-step, scripted expert; {args.seconds:g} s per variant in "
          f"{args.slice:g} s slices; load average {load_before[0]:.2f} on {os.cpu_count()} cores")
    compiled_server = RobotServer(RobotServerConfig(task=TASK))
    python_server = RobotServer(RobotServerConfig(task=TASK, fast_loop=False))
    core = cpu_affinity.available_cpus()[-1:]  # [] where affinity is not supported
    cpu_affinity.pin(0, core)  # the env client (this process) and every in-process variant
    connection = spawn_robot_server(TASK, cpus=core)
    unpinned = spawn_robot_server(TASK)
    runners = []
    try:
        runners.append(Runner("(a) zmq, server subprocess", RobotEnv(connection, task=TASK),
                              server_pid=connection.process.pid))
        runners.append(Runner("(a') zmq, server unpinned", RobotEnv(unpinned, task=TASK),
                              server_pid=unpinned.process.pid))
        runners.append(Runner("(b) in-process", RobotEnv(InProcessConnection(compiled_server),
                                                         task=TASK)))
        runners.append(Runner("(c) in-process, Python tick loop",
                              RobotEnv(InProcessConnection(python_server), task=TASK)))
        measure_interleaved(runners, args.seconds, args.slice)
        compiled_tick_us, python_tick_us = tick_cost(compiled_server), tick_cost(python_server)
        python_server.handle("reset", {"seed": 0}, {})
        compute_us, physics_us = controller_cost(python_server)
    finally:
        connection.close()  # stops the server subprocesses, also when a runner failed to start
        unpinned.close()
    load_after = os.getloadavg()

    zmq, zmq_unpinned, inproc, python = runners
    print(f"\n{'variant':<36}{'steps/s':>9}{'ms/step':>9}{'CPU ms/step':>13}{'steps':>8}"
          f"{'resets':>8}")
    for r in runners:
        print(f"{r.name:<36}{r.rate:>9.1f}{1e3 / r.rate:>9.3f}{1e3 * r.cpu / r.steps:>13.3f}"
              f"{r.steps:>8}{r.resets:>8}")
    ratio = inproc.rate / zmq.rate
    cpu_ratio = (zmq.cpu / zmq.steps) / (inproc.cpu / inproc.steps)
    print(f"\nin-process / zmq: {ratio:.2f}x in steps/s, {cpu_ratio:.2f}x in CPU per step (zmq "
          f"costs {1e6 / zmq.rate - 1e6 / inproc.rate:.0f} µs of wall time per step: encode and "
          f"decode on both sides, the unix socket through both processes' ZeroMQ I/O threads, "
          f"and switching between the two processes)")
    print(f"in-process / zmq with the server unpinned: {inproc.rate / zmq_unpinned.rate:.2f}x "
          f"(pinning client and server to one core: {zmq.rate / zmq_unpinned.rate:.2f}x steps/s)")
    print(f"compiled tick loop vs Python tick loop: {inproc.rate / python.rate:.2f}x")
    print(f"per 1 ms control tick: compiled loop {compiled_tick_us:.1f} µs (physics + controller); "
          f"Python loop {python_tick_us:.1f} µs, of which controller compute {compute_us:.1f} µs "
          f"and physics with its Python calls (sense + actuate) {physics_us:.1f} µs")
    met = zmq.rate >= 200 and ratio <= 1.25
    print(f"targets ((a) zmq >= 200 steps/s, in-process/(a) <= 1.25): {'met' if met else 'MISSED'}")
    print(f"load average (1 min) before {load_before[0]:.2f}, after {load_after[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
