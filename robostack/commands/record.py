"""`robostack record-demos`: drive the arm with a teleop device and log demonstrations.

    robostack record-demos --task pick_cube --device keyboard --episodes 20 --log demos/pick

Each episode: the env resets (seeded, so the mirror can replay it), then every policy period
the device is read; while its deadman is held its command moves the arm, otherwise the arm
holds still. The episode ends when the task reports success or failure, at the time limit, or
when the operator presses success / failure (labels) or re-record (the episode is dropped and
recorded again). `--keep success` (default) logs successful episodes only, `all` logs every one,
`ask` asks after each. The log is the episode log (robostack/data/episode_log/: LeRobot v3 layout),
written in the background and crash-safe; `robostack train --single-process --demo-log DIR`
trains from it and `robostack replay DIR --episode N` re-executes an episode.

A human drives at the policy rate (10 Hz of wall-clock time, whatever the env's clock); the
autopilot (the task's scripted expert acting as the operator) runs as fast as the env steps.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass

import numpy as np

from robostack.config import add_dataclass_arguments, dataclass_from_args, usage_errors

KEEP = ("success", "all", "ask")


@dataclass
class RecordConfig:
    """What to record, with which device, and where the log goes."""

    task: str = "pick_cube"  # task to record (pick_cube, reach)
    device: str = "keyboard"  # keyboard, gamepad, spacemouse or autopilot (the scripted expert)
    episodes: int = 20  # episodes to keep
    log: str = "demos/pick_cube"  # episode log folder (appended to if it exists)
    keep: str = "success"  # success (only successful episodes), all, or ask after each
    seed: int = 0  # first reset seed; episode attempts use seed, seed+1, ...
    transport: str = "zmq"  # zmq (robot server subprocess) or inprocess
    endpoint: str = ""  # connect to a running robot server (a real arm) instead of starting one
    max_attempts: int = 0  # give up after this many episodes (0: 3x --episodes)

    def __post_init__(self):
        if self.keep not in KEEP:
            raise ValueError(f"--keep must be one of {KEEP}, got {self.keep!r}")
        if self.episodes < 1 or self.max_attempts < 0:
            raise ValueError(f"--episodes must be >= 1 and --max-attempts >= 0 (0: 3x --episodes), "
                             f"got {self.episodes} and {self.max_attempts}")


def record(config: RecordConfig, say=print) -> dict:
    from robostack.data.episode_log import EpisodeWriter, features_from_spaces, state_names
    from robostack.env import make_env
    from robostack.env.teleop import InterventionProtocol, make_device
    from robostack.env.wrappers import operator_action, read_operator

    if config.keep == "ask" and not sys.stdin.isatty():
        raise SystemExit("robostack record-demos: --keep ask needs a terminal to ask in; use "
                         "--keep success or --keep all")
    env = make_env(config.task, transport_kind=config.transport,
                   endpoint=config.endpoint or None, seed=config.seed)
    autopilot = config.device == "autopilot"
    # The autopilot as a demonstrator: takes over at step 0 and never lets go.
    protocol = InterventionProtocol(probability=1.0, start=(0, 0), duration=(10**6, 10**6))
    device = make_device(config.device, task=env.task, protocol=protocol, seed=config.seed)
    features = features_from_spaces(env.observation_space, env.action_space,
                                    state_names=state_names(env.state_fields))
    writer = EpisodeWriter(config.log, fps=env.config.policy_hz, features=features,
                           task=config.task)
    period = 1.0 / env.config.policy_hz
    kept = attempts = 0
    max_attempts = config.max_attempts or 3 * config.episodes
    stop = False
    try:
        while kept < config.episodes and attempts < max_attempts and not stop:
            seed = config.seed + attempts
            attempts += 1
            obs, _ = env.reset(seed=seed)
            if hasattr(device, "reset"):
                device.reset(episode=attempts - 1)
            outcome, steps, success = "time limit", 0, False
            next_tick = time.monotonic()
            while True:
                reading = read_operator(device, env)
                if reading.stop:
                    stop, outcome = True, "stopped"
                    break
                if reading.rerecord:
                    outcome = "re-record"
                    break
                if reading.intervene:
                    action = operator_action(reading, env)
                else:  # deadman released: hold still (zero delta, gripper kept)
                    action = np.zeros(env.action_space.shape, np.float32)
                next_obs, reward, terminated, truncated, info = env.step(action)
                success = bool(info["success"]) or reading.success
                labelled = reading.success or reading.failure
                writer.add_frame(obs, action, reward, terminated or labelled, truncated,
                                 success=success, intervention=bool(reading.intervene),
                                 timestamps={"state": np.nan if info.get("time") is None
                                             else float(info["time"])})
                obs, steps = next_obs, steps + 1
                if terminated or truncated or labelled:
                    outcome = ("success" if success else "failure") if (terminated or labelled) \
                        else "time limit"
                    break
                if not autopilot:  # a person drives at the policy rate
                    next_tick += period
                    time.sleep(max(0.0, next_tick - time.monotonic()))
            if outcome in ("stopped", "re-record") or steps == 0:
                writer.discard_episode()
                say(f"attempt {attempts}: {outcome}, episode dropped")
                continue
            if config.keep == "all" or (config.keep == "success" and success) or \
                    (config.keep == "ask" and _ask(f"keep this {outcome} episode?")):
                index = writer.end_episode(obs, metadata={"reset_seed": seed})
                kept += 1
                say(f"attempt {attempts}: {outcome} after {steps} steps, logged as episode "
                    f"{index} ({kept}/{config.episodes} kept)")
            else:
                writer.discard_episode()
                say(f"attempt {attempts}: {outcome} after {steps} steps, dropped "
                    f"({kept}/{config.episodes} kept)")
    finally:
        writer.close()
        device.close()
        env.close()
    if kept < config.episodes and not stop:
        say(f"only {kept} of {config.episodes} episodes kept after {attempts} attempts")
    return {"kept": kept, "attempts": attempts, "log": config.log}


def _ask(question: str) -> bool:
    return input(f"{question} [y/N] ").strip().lower().startswith("y")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="robostack record-demos",
                                     description=__doc__.splitlines()[0])
    add_dataclass_arguments(parser, RecordConfig)
    args = parser.parse_args(argv)
    with usage_errors(parser):
        config = dataclass_from_args(RecordConfig, args)
    result = record(config)
    print(f"\n{result['kept']} episodes kept of {result['attempts']} attempts, in {result['log']}")
    return 0 if result["kept"] else 1


if __name__ == "__main__":
    sys.exit(main())
