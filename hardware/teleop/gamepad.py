"""Gamepad teleop through pygame's joystick API (SDL: Xbox, PlayStation, most USB/Bluetooth pads).

Controls (Xbox names; base frame, operator behind the robot facing base +x, see `operator_yaw`):
    left stick        up: +x, left: +y          right stick     up: +z, left: +yaw
    d-pad             left/right: -roll/+roll, up/down: +pitch/-pitch
    right trigger     deadman: intervene while pressed past half way
    RB close gripper, LB open gripper (latched)
    A success   B failure   X re-record   Start or Back stop

`GamepadDevice.controls()` lists the same for a live view.

Axis numbering differs between pads and drivers: `GamepadLayout` holds it, and
`robostack teleop --device gamepad --selftest` shows the live values to check it against.
Sticks get a rescaled deadzone (worn sticks rest a few percent off centre, which would
otherwise creep the arm while the deadman is held).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from hardware.teleop.base import (DeviceUnavailable, EdgeDetector, TeleopReading, deadzone, now,
                                  yaw_matrix)

INSTALL = "pip install 'robostack[gamepad]'  (installs pygame)"
PERMISSION_HINT = ("check the pad shows up in `ls /dev/input/by-id/*joystick*` and that your user "
                   "may read it: `sudo usermod -aG input $USER`, then log out and in again")


@dataclass
class GamepadLayout:
    """Axis and button numbers as pygame reports them (defaults: Xbox pad under Linux SDL2)."""

    left_x: int = 0
    left_y: int = 1
    left_trigger: int = 2
    right_x: int = 3
    right_y: int = 4
    right_trigger: int = 5
    a: int = 0
    b: int = 1
    x: int = 2
    y: int = 3
    lb: int = 4
    rb: int = 5
    back: int = 6
    start: int = 7


CONTROLS = [  # (role, control, what it does): what a live view shows; Xbox names
    ("deadman", "RT (hold)", "start / deadman: the arm moves only while it is held"),
    ("translation", "left stick", "up/down: forward / back (+x / -x), left/right: +y / -y"),
    ("translation", "right stick up/down", "up / down (+z / -z)"),
    ("rotation", "right stick left/right", "yaw + / -"),
    ("rotation", "d-pad", "right/left: roll + / -, up/down: pitch + / -"),
    ("gripper", "RB/LB", "close / open the gripper (stays)"),
    ("success", "A", "end the episode: success"),
    ("failure", "B", "end the episode: failure"),
    ("rerecord", "X", "drop the episode, record it again"),
    ("stop", "Start/Back", "quit"),
]


class GamepadMapping:
    """Raw axes (pygame: -1..1, stick down/right positive, trigger -1 released), buttons and hats
    -> TeleopReading. Pure apart from the edge detector and the latched gripper."""

    def __init__(self, layout: GamepadLayout | None = None, stick_deadzone: float = 0.1,
                 trigger_threshold: float = 0.5, speed: float = 1.0, rotation_speed: float = 1.0,
                 operator_yaw: float = 0.0):
        self.layout = layout or GamepadLayout()
        self.stick_deadzone, self.trigger_threshold = stick_deadzone, trigger_threshold
        self.speed, self.rotation_speed = speed, rotation_speed
        self.to_base = yaw_matrix(operator_yaw)
        self.edges = EdgeDetector()
        self.gripper = 0.0

    def new_episode(self) -> None:
        """The env reset the arm (gripper open): forget the latched gripper command."""
        self.gripper = 0.0

    def map(self, axes, buttons, hats=((0, 0),), t: float = 0.0) -> TeleopReading:
        L = self.layout
        axis = lambda i: float(axes[i]) if i < len(axes) else 0.0  # noqa: E731
        button = lambda i: bool(buttons[i]) if i < len(buttons) else False  # noqa: E731
        sticks = deadzone([axis(L.left_x), axis(L.left_y), axis(L.right_x), axis(L.right_y)],
                          self.stick_deadzone)
        # Screen convention (down/right positive) -> robot: stick up = forward (+x) / up (+z),
        # stick left = +y (base y points left) / +yaw (counter-clockwise seen from above).
        translation = np.array([-sticks[1], -sticks[0], -sticks[3]])
        hat_x, hat_y = hats[0] if len(hats) else (0, 0)  # pygame hat: up is +1
        rotation = np.array([float(hat_x), float(hat_y), -sticks[2]])
        if button(L.rb):
            self.gripper = 1.0
        elif button(L.lb):
            self.gripper = -1.0
        # Triggers rest at -1 and read 1 fully pressed; before the first event SDL reports 0,
        # which maps to 0.5: the threshold is strict so that never counts as held.
        trigger = (axis(L.right_trigger) + 1.0) / 2.0
        return TeleopReading(
            translation=self.to_base @ translation * self.speed,
            rotation=self.to_base @ rotation * self.rotation_speed,
            gripper=self.gripper, intervene=trigger > self.trigger_threshold,
            success=self.edges.pressed("a", button(L.a)),
            failure=self.edges.pressed("b", button(L.b)),
            rerecord=self.edges.pressed("x", button(L.x)),
            stop=self.edges.pressed("stop", button(L.start) or button(L.back)), timestamp=t)


def _import_pygame():
    os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")
    os.environ.setdefault("SDL_VIDEODRIVER", "dummy")  # joystick events without a display
    try:
        import pygame
    except ImportError:
        raise DeviceUnavailable(f"the gamepad device needs pygame: {INSTALL}") from None
    return pygame


class GamepadDevice:
    """The first (or `index`-th) joystick pygame finds. `pygame` can be a stand-in module with the
    same calls (tests)."""

    name = "gamepad"
    start_hint = "hold RT"  # how a person starts an episode (the deadman)

    def __init__(self, index: int = 0, pygame=None, clock=now, **mapping_options):
        self.pygame = pygame or _import_pygame()
        self.clock = clock
        self.pygame.init()
        self.pygame.joystick.init()
        count = self.pygame.joystick.get_count()
        if count <= index:
            raise DeviceUnavailable(
                f"no gamepad #{index} found ({count} connected): plug one in (or pair it), then "
                f"{PERMISSION_HINT}")
        self.joystick = self.pygame.joystick.Joystick(index)
        self.joystick.init()
        self.device_name = self.joystick.get_name()
        self.mapping = GamepadMapping(**mapping_options)

    def read(self) -> TeleopReading:
        j = self.joystick
        try:
            self.pygame.event.pump()
            axes = [j.get_axis(i) for i in range(j.get_numaxes())]
            buttons = [j.get_button(i) for i in range(j.get_numbuttons())]
            hats = [j.get_hat(i) for i in range(j.get_numhats())]
        except self.pygame.error as exc:
            raise DeviceUnavailable(f"gamepad {self.device_name!r} was lost ({exc}); the arm must "
                                    "not act on stale input: reconnect it and restart") from None
        return self.mapping.map(axes, buttons, hats or [(0, 0)], self.clock())

    def new_episode(self) -> None:
        self.mapping.new_episode()

    def controls(self) -> list[tuple[str, str, str]]:
        return list(CONTROLS)

    def close(self) -> None:
        try:
            self.joystick.quit()
        finally:
            self.pygame.joystick.quit()
