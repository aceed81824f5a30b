"""`robostack teleop`: try a teleop device (--selftest) against the mirror."""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, field

import numpy as np

from hardware.teleop.base import DeviceUnavailable
from robostack.config import add_dataclass_arguments, dataclass_from_args, usage_errors
from robostack.env.actions import base_to_policy_action
from robostack.env.teleop import DEVICES, InterventionProtocol, make_device
from tasks import TaskConfig


# --- the command --------------------------------------------------------------------------------
@dataclass
class TeleopConfig:
    """Which device, and what to drive with it (the in-process MuJoCo mirror)."""

    device: str = "keyboard"  # keyboard, gamepad, spacemouse or autopilot
    task: str = "pick_cube"  # task of the mirror env (the autopilot's expert comes from it)
    steps: int = 0  # readings to take at --hz (0: until Ctrl-C or the device's stop event)
    hz: float = 10.0  # readings per second (the policy rate); the autopilot runs as fast as it can
    seed: int = 0  # autopilot takeovers and env resets
    operator_yaw: float = 0.0  # rad, where the operator stands: 0 behind the robot facing base +x
    autopilot: InterventionProtocol = field(default_factory=lambda: InterventionProtocol(
        probability=1.0, start=(0, 5), duration=(100, 100), when_stuck=True))


def _show(line: str, live: bool) -> None:
    if live:  # rewrite one line in place on a terminal; one line per reading in a log
        sys.stdout.write("\r\x1b[K" + line)
        sys.stdout.flush()
    else:
        print(line, flush=True)


def run(config: TeleopConfig, selftest: bool) -> int:
    """Selftest of a human device: its live readings, no robot. Otherwise (and always for the
    autopilot, which needs an observation): drive the in-process mirror; while the deadman is up
    the arm holds still (the autopilot's `policy` here is that hold)."""
    from robostack.env import make_env

    env = None
    if config.device == "autopilot" or not selftest:
        env = make_env(config.task, transport_kind="inprocess", seed=config.seed)
    options = {} if config.device == "autopilot" else {"operator_yaw": config.operator_yaw}
    try:
        device = make_device(config.device, task=env.task if env else None, protocol=config.autopilot,
                             seed=config.seed, **options)
    except DeviceUnavailable as exc:
        print(f"robostack teleop: {exc}", file=sys.stderr)
        if env is not None:
            env.close()
        return 2
    live = sys.stdout.isatty() and config.device != "autopilot"
    if config.device in ("keyboard", "gamepad", "spacemouse"):
        print(f"{config.device}: {'selftest, showing readings' if selftest else 'driving the mirror'}"
              f" (Ctrl-C to end; the device's stop event ends too)", flush=True)
    period = 1.0 / config.hz
    step = episode_steps = episodes = successes = 0
    try:
        if env is not None:
            env.reset(seed=config.seed)
            if config.device == "autopilot":
                device.reset(episode=0)
        while not config.steps or step < config.steps:
            started = time.monotonic()
            if env is not None and config.device == "autopilot":
                device.observe(env.fields())
            reading = device.read()
            step += 1
            line = f"{step:>5}  {reading.describe()}"
            if env is not None:
                fields = env.fields()
                frame = getattr(env, "action_frame", "base")  # RobotEnv acts in the base frame
                action = (base_to_policy_action(reading, env.config, fields["tcp_quaternion"], frame)
                          if reading.intervene else _hold(env.config))
                _, _, terminated, truncated, info = env.step(action)
                episode_steps += 1
                line += f"  | tcp {np.round(env.fields()['tcp_position'], 3)}"
                if terminated or truncated or reading.rerecord or reading.failure:
                    episodes += 1
                    successes += bool(info["success"])
                    _show(line, live)
                    print(f"\nepisode {episodes}: {'success' if info['success'] else 'no success'} after "
                          f"{episode_steps} steps ({successes}/{episodes} successful)", flush=True)
                    env.reset(seed=config.seed + episodes)
                    if config.device == "autopilot":
                        device.reset(episode=episodes)
                    episode_steps = 0
                    continue
            _show(line, live)
            if reading.stop:
                print("\nstop pressed", flush=True)
                break
            if config.device != "autopilot":
                time.sleep(max(0.0, period - (time.monotonic() - started)))
    except KeyboardInterrupt:
        print("\ninterrupted", flush=True)
    except DeviceUnavailable as exc:
        print(f"\nrobostack teleop: {exc}", file=sys.stderr)
        return 2
    finally:
        device.close()
        if env is not None:
            env.close()
    if live:
        print()
    if env is not None:
        print(f"{step} steps, {episodes} finished episodes, {successes} successful", flush=True)
    return 0


def _hold(config: TaskConfig) -> np.ndarray:
    """No motion, gripper kept (the action the arm gets while nobody holds the deadman)."""
    return np.zeros(config.action_dim(), dtype=np.float32)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="robostack teleop", description=__doc__.splitlines()[0])
    parser.add_argument("--selftest", action="store_true",
                        help="show the device's live readings (the autopilot acts in the mirror)")
    add_dataclass_arguments(parser, TeleopConfig)
    args = parser.parse_args(argv)
    with usage_errors(parser):
        config = dataclass_from_args(TeleopConfig, args)
    if config.device not in DEVICES:
        parser.error(f"--device must be one of {', '.join(DEVICES)}, got {config.device!r}")
    return run(config, args.selftest)
