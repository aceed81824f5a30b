"""`robostack teleop`: teleop devices by name, the autopilot (a simulated human), and the frame
conversion that stores an intervention in the policy's action space.

Devices (hardware/teleop/) give a `TeleopReading` in the robot BASE frame, normalised to [-1, 1]
of the env's largest step. The env's action may live in another frame (a tool-relative env):
`base_to_policy_action` converts a reading into the env's action space, and that converted action
is the one to execute AND to store; `policy_to_base` is its inverse (to show or compare a
policy's action as a base-frame command).

The autopilot is the task's scripted expert acting as the human: it takes over per a seeded
`InterventionProtocol` (which episodes, from which step, for how long, or when the policy looks
stuck), so human-in-the-loop training is testable and reproducible without a person.

    robostack teleop --device keyboard --selftest     # live readings, no robot
    robostack teleop --device autopilot --selftest --steps 60
    robostack teleop --device spacemouse              # drive the in-process MuJoCo mirror
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from hardware.teleop.base import DeviceUnavailable, TeleopReading
from robostack.cli_config import add_dataclass_arguments, dataclass_from_args, usage_errors
from robostack.geometry import quat_multiply, rotvec_to_quat
from tasks import TaskConfig

DEVICES = ("keyboard", "gamepad", "spacemouse", "autopilot")
FRAMES = ("base", "tool")


# --- frames -------------------------------------------------------------------------------------
def quat_to_matrix(q: np.ndarray) -> np.ndarray:
    """Unit quaternion (w, x, y, z), as everywhere in robostack/geometry.py -> rotation matrix.
    For the tcp quaternion this maps tool-frame vectors to base-frame vectors."""
    w, x, y, z = np.asarray(q, dtype=float) / np.linalg.norm(q)
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
        [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
        [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
    ])


def _fit_unit_box(vector: np.ndarray) -> np.ndarray:
    """Rotating a vector of [-1, 1]^3 can push a component past 1 (up to sqrt 3). Shrink the whole
    vector instead of clipping components, so the direction the human asked for is kept."""
    largest = float(np.abs(vector).max(initial=0.0))
    return vector / largest if largest > 1.0 else vector


def base_to_policy_action(reading: TeleopReading, config: TaskConfig,
                          tcp_quaternion: np.ndarray | None = None, frame: str = "base") -> np.ndarray:
    """A device reading (base frame) -> the env's action (float32, config.action_dim()).

    frame="base": the env applies xyz and rotation about the base axes (robostack.env.RobotEnv).
    frame="tool": the env applies them about the tcp's own axes (position += R @ xyz,
    orientation = q * exp(rotvec)); the base command is rotated into the tcp frame by R^T, R the
    rotation of the CURRENT measured `tcp_quaternion` (w, x, y, z). Storing the base command
    unconverted in a tool-frame env is the classic bug: the learner then sees actions that
    moved the arm somewhere else.
    """
    if frame not in FRAMES:
        raise ValueError(f"frame must be one of {FRAMES}, got {frame!r}")
    translation = np.asarray(reading.translation, dtype=float)
    rotation = np.asarray(reading.rotation, dtype=float)
    if frame == "tool":
        if tcp_quaternion is None:
            raise ValueError("a tool-frame action needs the current tcp_quaternion (w, x, y, z)")
        to_tool = quat_to_matrix(tcp_quaternion).T
        translation, rotation = to_tool @ translation, to_tool @ rotation
    action = list(_fit_unit_box(translation))
    if config.control_rotation:
        action += list(_fit_unit_box(rotation))
    if config.control_gripper:
        action.append(float(np.clip(reading.gripper, -1.0, 1.0)))
    return np.asarray(action, dtype=np.float32)


def policy_to_base(action: np.ndarray, config: TaskConfig, tcp_quaternion: np.ndarray | None = None,
                   frame: str = "base") -> TeleopReading:
    """The inverse of base_to_policy_action: an env action as a base-frame command."""
    action = np.asarray(action, dtype=float)
    translation = action[:3]
    rotation = action[3:6] if config.control_rotation else np.zeros(3)
    if frame == "tool":
        to_base = quat_to_matrix(tcp_quaternion)
        translation, rotation = to_base @ translation, to_base @ rotation
    gripper = float(action[-1]) if config.control_gripper else 0.0
    return TeleopReading(translation=translation, rotation=rotation, gripper=gripper)


def action_to_target(action: np.ndarray, tcp_position: np.ndarray, tcp_quaternion: np.ndarray,
                     config: TaskConfig, frame: str = "base") -> tuple[np.ndarray, np.ndarray]:
    """Where an env acting in `frame` sends the tcp for `action` (position m, quaternion w x y z).
    frame="base" is exactly RobotEnv._target's pose (tested against it); "tool" is the tool-
    relative variant. Used to check what a stored action would make the arm do."""
    action = np.asarray(action, dtype=float)
    R = quat_to_matrix(tcp_quaternion) if frame == "tool" else np.eye(3)
    position = np.asarray(tcp_position, dtype=float) + R @ action[:3] * config.max_translation_step
    quaternion = np.asarray(tcp_quaternion, dtype=float)
    if config.control_rotation:
        delta = rotvec_to_quat(action[3:6] * config.max_rotation_step)
        quaternion = quat_multiply(quaternion, delta) if frame == "tool" else quat_multiply(delta, quaternion)
    return position, quaternion


# --- the autopilot ------------------------------------------------------------------------------
@dataclass
class InterventionProtocol:
    """When the simulated human takes over, and for how long (env steps since the reset)."""

    probability: float = 0.5  # share of episodes with a scheduled takeover
    start: tuple[int, int] = (0, 20)  # the scheduled takeover starts at a step drawn from [lo, hi]
    duration: tuple[int, int] = (10, 30)  # and lasts a number of steps drawn from [lo, hi]
    when_stuck: bool = False  # also take over when the tcp barely moved for stuck_steps steps
    stuck_steps: int = 10  # steps looked back over to decide the policy is stuck
    stuck_distance: float = 0.01  # m: moving less than this in stuck_steps steps is stuck
    noise: float = 0.0  # Gaussian noise on the expert's actions (action units)

    def __post_init__(self):
        for name in ("start", "duration"):
            value = tuple(getattr(self, name))
            if len(value) != 2 or value[0] > value[1] or value[0] < 0:
                raise ValueError(f"InterventionProtocol.{name} must be two steps lo <= hi (>= 0), got {value}")
            setattr(self, name, value)
        if not 0.0 <= self.probability <= 1.0:
            raise ValueError(f"InterventionProtocol.probability must be in [0, 1], got {self.probability}")

    def schedule(self, seed: int, episode: int) -> tuple[int, int] | None:
        """The (first, last+1) steps of the scheduled takeover of `episode`, or None. A pure
        function of (seed, episode): the same run replays the same interventions."""
        rng = np.random.default_rng([seed, episode])
        if rng.random() >= self.probability:
            return None
        start = int(rng.integers(self.start[0], self.start[1] + 1))
        return start, start + int(rng.integers(self.duration[0], self.duration[1] + 1))


class Autopilot:
    """The task's scripted expert as a teleop device. Per step: `observe(env.fields())`, then
    `read()`. `reset()` at every episode start (it draws that episode's takeover)."""

    name = "autopilot"

    def __init__(self, task, protocol: InterventionProtocol | None = None, seed: int = 0):
        self.task = task
        self.protocol = protocol or InterventionProtocol()
        self.seed = seed
        self.expert = task.expert(seed=seed, noise=self.protocol.noise)
        self.episode = -1
        self.reset()

    def reset(self, episode: int | None = None) -> None:
        self.episode = self.episode + 1 if episode is None else episode
        self.planned = self.protocol.schedule(self.seed, self.episode)
        self._rng = np.random.default_rng([self.seed, self.episode, 1])  # stuck-takeover lengths
        self.t = -1
        self.fields: dict | None = None
        self.stuck_until = -1
        self.positions: deque = deque(maxlen=self.protocol.stuck_steps + 1)
        self.was_intervening = False
        self.succeeded = False

    def observe(self, fields: dict) -> None:
        """The current observation fields (env.fields()); one call per env step."""
        self.fields = fields
        self.t += 1
        p = self.protocol
        if p.when_stuck and self.t >= self.stuck_until:
            self.positions.append(np.array(fields["tcp_position"], dtype=float))
            full = len(self.positions) == self.positions.maxlen
            moved = max(np.linalg.norm(x - self.positions[-1]) for x in self.positions) if full else np.inf
            if moved < p.stuck_distance:
                self.stuck_until = self.t + int(self._rng.integers(p.duration[0], p.duration[1] + 1))
                self.positions.clear()

    def intervening(self) -> bool:
        planned = self.planned is not None and self.planned[0] <= self.t < self.planned[1]
        return self.t >= 0 and (planned or self.t < self.stuck_until)

    def read(self, fields: dict | None = None) -> TeleopReading:
        if fields is not None:
            self.observe(fields)
        if self.fields is None:
            return TeleopReading(timestamp=time.monotonic())
        intervene = self.intervening()
        reading = TeleopReading(intervene=intervene, timestamp=time.monotonic())
        if intervene:
            if not self.was_intervening:
                self.expert.reset()  # a fresh plan from wherever the policy left the arm
            action = np.asarray(self.expert(self.fields), dtype=float)
            config = self.task.config
            reading.translation = action[:3].copy()
            if config.control_rotation:
                reading.rotation = action[3:6].copy()
            if config.control_gripper:
                reading.gripper = float(action[-1])
        self.was_intervening = intervene
        success = self.task.evaluate(self.fields).success
        reading.success = success and not self.succeeded  # an edge, like a person's key press
        self.succeeded = self.succeeded or success
        return reading

    def close(self) -> None:
        pass


def make_device(name: str, task=None, protocol: InterventionProtocol | None = None, seed: int = 0,
                **options):
    """A TeleopDevice by name. `task` (a task object, e.g. env.task) is needed by the autopilot;
    `options` go to the driver (operator_yaw, speed, ...)."""
    if name == "autopilot":
        if task is None:
            raise ValueError("the autopilot needs the task it acts in: "
                             "make_device('autopilot', task=env.task)")
        return Autopilot(task, protocol, seed=seed)
    if name == "keyboard":
        from hardware.teleop.keyboard import KeyboardDevice
        return KeyboardDevice(**options)
    if name == "gamepad":
        from hardware.teleop.gamepad import GamepadDevice
        return GamepadDevice(**options)
    if name == "spacemouse":
        from hardware.teleop.spacemouse import SpaceMouseDevice
        return SpaceMouseDevice(**options)
    raise ValueError(f"unknown teleop device {name!r}: choose one of {', '.join(DEVICES)}")


def intervention_device(name: str) -> str:
    """A --intervention value as a device name ("expert": the autopilot's older name). Raises
    ValueError naming the choices for anything else, before any process or env starts."""
    name = "autopilot" if name == "expert" else name
    if name not in DEVICES:
        raise ValueError(f"--intervention {name!r}: choose one of {', '.join(DEVICES)} "
                         f"(or leave it empty for no interventions)")
    return name


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


if __name__ == "__main__":
    sys.exit(main())
