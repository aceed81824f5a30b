"""The hot paths of two revisions, measured in one run: this working tree against a base commit.

    .venv/bin/python benchmarks/bench_revisions.py --base eecae97 [--rounds 5] [--seconds 4]

A refactor must leave the hot paths as fast as they were (issue 10: within 10 %). Figures from
different days on this noisy VM differ by more than that, so this script checks the base commit
out into a temporary git worktree and measures both trees in alternating rounds (base, this,
base, this, ...), each round a fresh subprocess with that tree first on sys.path, so that a
change in machine load hits both alike. It reports the median of the rounds and the ratio
this / base.

Workloads (written against the API both trees share):
  env    lock-step env steps/s over ZeroMQ: a robot-server subprocess, pick_cube's scripted
         expert choosing actions, resets counted (what an actor sees while training)
  learn  learner updates/s: SAC/RLPD update() at batch 256, 2 critics and 10 critics, on a
         filled replay buffer (sample_mixed + update, as the learner's loop does)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

ENV_WORKLOAD = r"""
import json, sys, time
from robostack.env import make_env
env = make_env("pick_cube", transport_kind="zmq", seed=0)
expert = env.task.expert(seed=0)
def run(seconds):
    steps, start = 0, time.perf_counter()
    env.reset(seed=steps); expert.reset()
    while time.perf_counter() - start < seconds:
        _, _, terminated, truncated, _ = env.step(expert(env.fields()))
        steps += 1
        if terminated or truncated:
            env.reset(seed=steps); expert.reset()
    return steps / (time.perf_counter() - start)
run(1.0)  # warm-up: numba compiles the tick loop in the server
print(json.dumps({"env_steps_per_s": run(float(sys.argv[1]))}))
env.close()
"""

LEARN_WORKLOAD = r"""
import json, sys, time
import gymnasium as gym, numpy as np, torch
torch.set_num_threads(1)
from robostack.rl.buffers import ReplayBuffer, sample_mixed
from robostack.rl.sac import SACConfig, build_agent, update
obs_space = gym.spaces.Dict({"state": gym.spaces.Box(-np.inf, np.inf, (24,), np.float32)})
act_space = gym.spaces.Box(-1, 1, (4,), np.float32)
rng = np.random.default_rng(0)
def filled(n, seed):
    buffer = ReplayBuffer(n, obs_space, 4, seed=seed)
    for _ in range(n):
        s = {"state": rng.normal(size=24).astype(np.float32)}
        buffer.add(s, rng.uniform(-1, 1, 4).astype(np.float32), float(rng.random() < 0.1), s,
                   False, False)
    return buffer
online, demos = filled(4096, 0), filled(1024, 1)
out = {}
for critics in (2, 10):
    agent = build_agent(SACConfig(hidden_dims=(256, 256), num_critics=critics, batch_size=256,
                                  seed=0), obs_space, act_space)
    g, batch = np.random.default_rng(0), None
    def step():
        global batch
        batch = sample_mixed(online, demos, 256, demo_fraction=0.5, generator=g, out=batch)
        update(agent, batch)
    for _ in range(5):
        step()
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < float(sys.argv[1]) / 2:
        step(); n += 1
    out[f"updates_per_s_{critics}_critics"] = n / (time.perf_counter() - start)
print(json.dumps(out))
"""


def run_workload(tree: Path, code: str, seconds: float) -> dict:
    env = dict(os.environ, PYTHONPATH=str(tree), OMP_NUM_THREADS="1", MUJOCO_GL="egl")
    result = subprocess.run([sys.executable, "-c", code, str(seconds)], cwd=tree, env=env,
                            capture_output=True, text=True, timeout=600)
    if result.returncode != 0:
        raise SystemExit(f"workload failed in {tree}:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default="eecae97", help="commit to compare with (default: "
                        "eecae97, the tree before issue 10's refactor)")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds per tree")
    parser.add_argument("--seconds", type=float, default=4.0, help="measured seconds per workload "
                        "and round")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="robostack-base-") as tmp:
        base = Path(tmp) / "base"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(base),
                        args.base], check=True)
        try:
            figures: dict[str, dict[str, list[float]]] = {"base": {}, "this": {}}
            for round_ in range(args.rounds):
                for name, tree in (("base", base), ("this", ROOT)):
                    for code in (ENV_WORKLOAD, LEARN_WORKLOAD):
                        for key, value in run_workload(tree, code, args.seconds).items():
                            figures[name].setdefault(key, []).append(value)
                print(f"round {round_ + 1}/{args.rounds}: " + ", ".join(
                    f"{k} {figures['base'][k][-1]:.1f} -> {figures['this'][k][-1]:.1f}"
                    for k in figures["this"]), flush=True)
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(base)],
                           check=False)
    load = os.getloadavg()[0]
    print(f"\nbase {args.base} vs this tree, median of {args.rounds} alternating rounds "
          f"(load average {load:.2f} on {os.cpu_count()} cores):")
    worst = float("inf")
    for key in figures["this"]:
        b, t = statistics.median(figures["base"][key]), statistics.median(figures["this"][key])
        worst = min(worst, t / b)
        print(f"  {key:<28} base {b:8.1f}   this {t:8.1f}   this/base {t / b:5.2f}x")
    print(f"target: every ratio >= 0.90 (within 10 %): {'met' if worst >= 0.9 else 'MISSED'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
