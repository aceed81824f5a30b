"""Teleop devices by name (for `robostack teleop`, record-demos and training), the autopilot
(a simulated human), and the frame conversion that stores an intervention in the policy's
action space.

Devices (hardware/teleop/) give a `TeleopReading` in the robot BASE frame, normalised to [-1, 1]
of the env's largest step. The env's action may live in another frame (a tool-relative env):
`base_to_policy_action` converts a reading into the env's action space, and that converted action
is the one to execute AND to store; `policy_to_base` is its inverse (to show or compare a
policy's action as a base-frame command).

The autopilot is the task's scripted expert acting as the human: it takes over per a seeded
`InterventionProtocol` (which episodes, from which step, for how long, or when the policy looks
stuck), so human-in-the-loop training is testable and reproducible without a person.

A person in the loop needs the env to step in real time (`Pacer`, `RealTimePacing`), the device's
controls on screen (`device_controls`, shown by robostack/env/teleop_view.py) and a fresh start
each episode (`start_episode`).

    robostack teleop --device keyboard --selftest     # live readings, no robot
    robostack teleop --device autopilot --selftest --steps 60
    robostack teleop --device spacemouse              # drive the in-process MuJoCo mirror
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass

import gymnasium as gym
import numpy as np

from hardware.teleop.base import TeleopReading

DEVICES = ("keyboard", "gamepad", "spacemouse", "autopilot")
HUMAN_DEVICES = ("keyboard", "gamepad", "spacemouse")  # a person in the loop: pace in real time


PERSON_EPISODE_SECONDS = 30.0  # an episode's default length when a person drives (a task's
# own limit, 5 s for pick_cube, is the scripted expert's pace, nobody's at a keyboard)


def needs_pacing(device_name: str) -> bool:
    """True when a person drives (a --device or --intervention value): the env must then step
    once per policy period of wall-clock time, whatever its own clock. A lock-step mirror
    steps as fast as it can (~5x real time in training), and nobody can react to that."""
    return device_name in HUMAN_DEVICES


def episode_steps(device_name: str, policy_hz: float, task_limit: int, requested: int = 0) -> int:
    """Env steps per episode of a teleop session: `requested` (--max-episode-steps) if set,
    else PERSON_EPISODE_SECONDS of policy steps when a person drives, else the task's own."""
    if requested:
        return requested
    return round(PERSON_EPISODE_SECONDS * policy_hz) if needs_pacing(device_name) else task_limit


# --- real-time pacing ---------------------------------------------------------------------------
class Pacer:
    """One tick per `1 / hz` s of wall-clock time: `wait()` before each step sleeps until the
    next tick. A late tick (the loop took longer than a period: a slow learner update, a loaded
    machine) is not caught up by a burst of fast steps, which a person could not follow either:
    the schedule restarts from now and `late_ticks` counts it.

        pacer = Pacer(env.config.policy_hz, enabled=needs_pacing(device_name))
        pacer.start()                      # after env.reset(): the episode's first tick is now
        while ...:
            pacer.wait()                   # then read the device and step
    """

    def __init__(self, hz: float, enabled: bool = True, clock=time.monotonic, sleep=time.sleep):
        if hz <= 0:
            raise ValueError(f"Pacer needs a positive rate, got {hz} Hz")
        self.period = 1.0 / hz
        self.enabled = enabled
        self.clock, self.sleep = clock, sleep
        self.late_ticks = 0
        self.next_tick: float | None = None

    def start(self) -> None:
        """Restart the schedule: the next `wait()` returns at once (after a reset or a pause,
        whose duration is not a late tick)."""
        self.next_tick = None

    def wait(self) -> float:
        """Sleep until the next tick; returns the seconds slept (0 when disabled or late)."""
        if not self.enabled:
            return 0.0
        now = self.clock()
        if self.next_tick is None:
            self.next_tick = now + self.period
            return 0.0
        delay = self.next_tick - now
        if delay < -self.period:  # more than a whole period late: restart, no burst
            self.late_ticks += 1
            self.next_tick = now + self.period
            return 0.0
        self.next_tick += self.period
        if delay > 0:
            self.sleep(delay)
            return delay
        return 0.0


class RealTimePacing(gym.Wrapper):
    """Steps `env` at most once per policy period of wall-clock time (a `Pacer` around step).
    Put it OUTSIDE an InterventionWrapper, so the device is read right after the wait, i.e. the
    freshest input a person gave while looking at the last step:

        env = InterventionWrapper(env, device)
        if needs_pacing(device_name):
            env = RealTimePacing(env)
    """

    def __init__(self, env: gym.Env, hz: float | None = None):
        super().__init__(env)
        self.pacer = Pacer(hz or env.unwrapped.config.policy_hz)

    def reset(self, **kwargs):
        result = self.env.reset(**kwargs)
        self.pacer.start()  # the reset's duration is not a late step
        return result

    def step(self, action):
        self.pacer.wait()
        return self.env.step(action)


# --- what a live view shows about a device --------------------------------------------------------
def device_controls(device, control_rotation: bool = True,
                    control_gripper: bool = True) -> list[tuple[str, str, str]]:
    """(role, keys, what they do) of the device's controls (its driver's own bindings), without
    those the env ignores (rotation keys when the task holds the orientation, ...)."""
    controls = device.controls() if hasattr(device, "controls") else []
    skip = {"rotation"} if not control_rotation else set()
    skip |= {"gripper"} if not control_gripper else set()
    return [row for row in controls if row[0] not in skip]


def start_hint(device) -> str:
    """How a person starts an episode with this device ("press SPACE", "hold RT")."""
    return getattr(device, "start_hint", "engage the deadman")


def start_episode(device, episode: int) -> None:
    """Tell the device an episode began (after env.reset()): the autopilot draws its takeover,
    a human device forgets last episode's latched gripper and deadman toggle."""
    if hasattr(device, "reset"):
        device.reset(episode=episode)
    if hasattr(device, "new_episode"):
        device.new_episode()


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

    def controls(self) -> list[tuple[str, str, str]]:
        return [("info", "-", "the task's scripted expert drives (no keys); Ctrl-C quits")]

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
