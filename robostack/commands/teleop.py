"""`robostack teleop`: try a teleop device (--selftest) against the mirror.

With a person at a terminal the command shows the live view (robostack/env/teleop_view.py):
the device's key map, its live command, the tcp position, gripper width and task fields, and
the episode counters; the mirror steps once per policy period of wall-clock time. Piped or with
the autopilot it prints one line per reading instead.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field

import numpy as np

from hardware.teleop.base import DeviceUnavailable
from robostack.config import add_dataclass_arguments, check_backend, dataclass_from_args, usage_errors
from robostack.env.actions import base_to_policy_action
from robostack.env.teleop import (DEVICES, InterventionProtocol, Pacer, device_controls, episode_steps,
                                  make_device, needs_pacing, start_episode, start_hint)
from robostack.env.teleop_view import VIEWS, make_view
from tasks import TaskConfig


# --- the command --------------------------------------------------------------------------------
@dataclass
class TeleopConfig:
    """Which device, and what to drive with it (the in-process mirror: MuJoCo, or PyBullet)."""

    device: str = "keyboard"  # keyboard, gamepad, spacemouse or autopilot
    task: str = "pick_cube"  # task of the mirror env (the autopilot's expert comes from it)
    steps: int = 0  # readings to take at --hz (0: until Ctrl-C or the device's stop event)
    hz: float = 10.0  # readings per second (the policy rate); the autopilot runs as fast as it can
    seed: int = 0  # autopilot takeovers and env resets
    backend: str = "mujoco"  # mirror to run in: mujoco (MuJoCo) or pybullet (PyBullet: the same Panda, tcp and controller)
    operator_yaw: float = 0.0  # rad, where the operator stands: 0 behind the robot facing base +x
    view: str = "auto"  # live view for a person: auto, window, terminal or plain (see record-demos)
    max_episode_steps: int = 0  # time limit of an episode in env steps (0: 30 s of policy
        # steps when a person drives, the task's own limit for the autopilot)
    autopilot: InterventionProtocol = field(default_factory=lambda: InterventionProtocol(
        probability=1.0, start=(0, 5), duration=(100, 100), when_stuck=True))


def run(config: TeleopConfig, selftest: bool) -> int:
    """Selftest of a human device: its live readings, no robot. Otherwise (and always for the
    autopilot, which needs an observation): drive the in-process mirror; while the deadman is up
    the arm holds still (the autopilot's `policy` here is that hold)."""
    from robostack.env import make_env

    env = None
    if config.device == "autopilot" or not selftest:
        env = make_env(config.task, backend=config.backend, transport_kind="inprocess", seed=config.seed)
        env.config.max_episode_steps = episode_steps(config.device, env.config.policy_hz,
                                                     env.config.max_episode_steps,
                                                     config.max_episode_steps)
    options = {} if config.device == "autopilot" else {"operator_yaw": config.operator_yaw}
    try:
        device = make_device(config.device, task=env.task if env else None, protocol=config.autopilot,
                             seed=config.seed, **options)
    except DeviceUnavailable as exc:
        print(f"robostack teleop: {exc}", file=sys.stderr)
        if env is not None:
            env.close()
        return 2
    person = needs_pacing(config.device)
    what = "selftest, showing readings" if selftest else "driving the mirror"
    # A person at a terminal gets the live view; piped, or the autopilot: a line per reading.
    view = make_view(config.view, title=f"robostack teleop | {config.device} | {what}",
                     say=lambda line: print(line, flush=True)) \
        if person and sys.stdout.isatty() else None
    if view is None and person:
        print(f"{config.device}: {what} (Ctrl-C to end; the device's stop event ends too)", flush=True)

    def say(line: str) -> None:  # an event: in the view's log, or a line of its own
        if view is not None:
            view.say(line)
        else:
            print(line, flush=True)

    pacer = Pacer(config.hz, enabled=person)  # the autopilot runs as fast as it can
    step = steps_in_episode = episodes = successes = 0
    try:
        if view is not None:
            view.update(controls=device_controls(device, *((env.config.control_rotation,
                                                             env.config.control_gripper) if env else ())),
                        task_fields=tuple(env.task.state_fields) if env else (),
                        hint="Ctrl-C or the device's stop key ends; episodes restart at success, "
                             "failure or the time limit")
        if env is not None:
            env.reset(seed=config.seed)
            start_episode(device, 0)
        while not config.steps or step < config.steps:
            pacer.wait()
            if env is not None and config.device == "autopilot":
                device.observe(env.fields())
            if view is not None and hasattr(device, "feed"):
                device.feed(view.poll_keys())
            reading = device.read()
            step += 1
            line = f"{step:>5}  {reading.describe()}"
            ended = None
            if env is not None:
                fields = env.fields()
                frame = getattr(env, "action_frame", "base")  # RobotEnv acts in the base frame
                action = (base_to_policy_action(reading, env.config, fields["tcp_quaternion"], frame)
                          if reading.intervene else _hold(env.config))
                _, _, terminated, truncated, info = env.step(action)
                steps_in_episode += 1
                line += f"  | tcp {np.round(env.fields()['tcp_position'], 3)}"
                if terminated or truncated or reading.rerecord or reading.failure:
                    episodes += 1
                    successes += bool(info["success"])
                    ended = (f"episode {episodes}: {'success' if info['success'] else 'no success'} "
                             f"after {steps_in_episode} steps ({successes}/{episodes} successful)")
            if view is not None:
                status = device.status() if hasattr(device, "status") else ""
                if env is None:
                    view.update(phase="SELFTEST", detail="live readings of the device, no robot",
                                counters=f"reading {step}", reading=reading, device_status=status)
                else:
                    view.update(
                        phase="DRIVING" if reading.intervene else "HOLDING",
                        detail=f"deadman on: the arm follows the {config.device}" if reading.intervene
                        else f"deadman off: the arm holds; {start_hint(device)} to drive",
                        counters=f"episode {episodes + 1}   {successes} of {episodes} successful",
                        progress=f"step {steps_in_episode} / {env.config.max_episode_steps}",
                        fields=env.fields(), reading=reading, device_status=status)
            else:
                print(line, flush=True)
            if ended:
                say(ended)
                env.reset(seed=config.seed + episodes)
                start_episode(device, episodes)
                steps_in_episode = 0
                pacer.start()
                continue
            if reading.stop:
                say("stop pressed")
                break
    except KeyboardInterrupt:
        say("interrupted")
    except DeviceUnavailable as exc:
        if view is not None:
            view.close()
        print(f"\nrobostack teleop: {exc}", file=sys.stderr)
        return 2
    finally:
        device.close()
        if env is not None:
            env.close()
        if view is not None:
            view.close()
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
    with usage_errors(parser):
        check_backend(config.backend)
    if config.device not in DEVICES:
        parser.error(f"--device must be one of {', '.join(DEVICES)}, got {config.device!r}")
    if config.view not in VIEWS:
        parser.error(f"--view must be one of {', '.join(VIEWS)}, got {config.view!r}")
    if config.max_episode_steps < 0:
        parser.error(f"--max-episode-steps must be >= 0 (0: the default), got {config.max_episode_steps}")
    return run(config, args.selftest)
