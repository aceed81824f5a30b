"""`robostack expert`: run a task's scripted expert through the env and measure its success rate.

By default the full multi-process path is used: a robot server subprocess (the MuJoCo mirror,
or with --backend pybullet the PyBullet one; lock-step clock) and this process as its ZeroMQ
client.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass

import numpy as np

from robostack.config import add_dataclass_arguments, check_backend, dataclass_from_args, usage_errors


@dataclass
class ExpertConfig:
    """Which task's expert to run, for how many seeded episodes, and over which transport."""

    task: str = "pick_cube"  # task to run: pick_cube or reach
    episodes: int = 50  # number of evaluation episodes (seeds seed .. seed+episodes-1)
    seed: int = 0  # first episode seed
    noise: float = 0.0  # Gaussian action noise (action units) added by the expert
    backend: str = "mujoco"  # mirror to run in: mujoco (MuJoCo) or pybullet (PyBullet: the same Panda, tcp and controller)
    transport: str = "zmq"  # zmq (robot server subprocess) or inprocess
    endpoint: str = ""  # connect to a running robot server instead of starting one (its own backend)

    def __post_init__(self):
        check_backend(self.backend)


@dataclass
class ExpertResult:
    successes: int
    episodes: int
    steps: int
    seconds: float
    episode_lengths: list

    @property
    def success_rate(self) -> float:
        return self.successes / max(1, self.episodes)


def run_expert(config: ExpertConfig, progress=print) -> ExpertResult:
    from robostack.env import make_env

    env = make_env(config.task, backend=config.backend, transport_kind=config.transport, endpoint=config.endpoint or None,
                   seed=config.seed)
    expert = env.task.expert(seed=config.seed, noise=config.noise)
    successes = steps = 0
    lengths = []
    start = time.perf_counter()
    try:
        for episode in range(config.episodes):
            env.reset(seed=config.seed + episode)
            expert.reset()
            info = {"success": False}
            for t in range(env.config.max_episode_steps):
                _, _, terminated, truncated, info = env.step(expert(env.fields()))
                steps += 1
                if terminated or truncated:
                    break
            successes += bool(info["success"])
            lengths.append(t + 1)
            if progress:
                elapsed = time.perf_counter() - start
                progress(f"episode {episode + 1:>3}/{config.episodes}  "
                         f"{'success' if info['success'] else 'FAIL   '}  {t + 1:>3} steps  "
                         f"success rate {successes / (episode + 1):6.1%}  "
                         f"{steps / elapsed:6.1f} env steps/s")
    finally:
        env.close()
    return ExpertResult(successes, config.episodes, steps, time.perf_counter() - start, lengths)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="robostack expert", description=__doc__.splitlines()[0])
    add_dataclass_arguments(parser, ExpertConfig)
    with usage_errors(parser):
        config = dataclass_from_args(ExpertConfig, parser.parse_args(argv))
    result = run_expert(config)
    where = "a running robot server" if config.endpoint else f"the {config.backend} mirror"
    print(f"\n{config.task} in {where}: scripted expert success rate {result.success_rate:.1%} "
          f"({result.successes}/{result.episodes}), mean episode length "
          f"{np.mean(result.episode_lengths):.1f} steps, {result.steps / result.seconds:.1f} env steps/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
