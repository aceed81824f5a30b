"""Keyboard teleop in a plain terminal: no X server, no root, works over ssh.

Keys (base frame, operator behind the robot facing base +x; see `operator_yaw`):
    w / s  or  up / down      +x / -x        i / k   +roll / -roll   (about base x)
    a / d  or  left / right   +y / -y        j / l   +pitch / -pitch (about base y)
    r / f                     +z / -z        u / o   +yaw / -yaw     (about base z)
    c close gripper, v open gripper (latched: the command stays until the other key)
    1 / 2 / 3  speed 10 % / 30 % / 100 % of the largest step (fine positioning needs the slow one)
    space  toggle intervene (the deadman: a terminal has no key-release, so it is a toggle)
    enter or y: success    n: failure    b: re-record    q or esc: stop    ctrl-c: SIGINT as usual

`KeyboardDevice.controls()` lists these bindings from the tables below (what a live view shows),
so the screen and the driver cannot disagree.

Why keys "act as held for a short time": a terminal only delivers key presses, never releases.
A held key arrives as one press, then after the terminal's auto-repeat delay (250-660 ms
depending on the system) as repeats every ~30-40 ms. So a key counts as held for `initial_hold`
after its first press and `repeat_hold` after each repeat: a tap moves for `initial_hold`, and
letting go of a held key stops the motion within `repeat_hold`. If your auto-repeat delay is
longer than `initial_hold`, a hold stutters once before repeats start: shorten the delay
(`xset r rate 200 30` under X, `kbdrate -d 250` on a console) rather than raising the hold,
which would make every tap move further.

The terminal is put in cbreak mode (no echo, no line buffering; Ctrl-C still raises
KeyboardInterrupt) and restored on close().
"""

from __future__ import annotations

import os
import select
import sys

import numpy as np

from hardware.teleop.base import DeviceUnavailable, TeleopReading, now, yaw_matrix

# key name -> (vector index 0..5 over [x y z roll pitch yaw], sign)
MOTION_KEYS = {
    "w": (0, +1), "s": (0, -1), "up": (0, +1), "down": (0, -1),
    "a": (1, +1), "d": (1, -1), "left": (1, +1), "right": (1, -1),
    "r": (2, +1), "f": (2, -1),
    "i": (3, +1), "k": (3, -1), "j": (4, +1), "l": (4, -1), "u": (5, +1), "o": (5, -1),
}
EVENT_KEYS = {"enter": "success", "y": "success", "n": "failure", "b": "rerecord", "q": "stop", "esc": "stop"}
GRIPPER_KEYS = {"c": 1.0, "v": -1.0}  # close, open (latched)
SPEED_KEYS = {"1": 0.1, "2": 0.3, "3": 1.0}  # share of the largest step a held key asks for
DEADMAN_KEY = "space"
_ESCAPES = {b"\x1b[A": "up", b"\x1b[B": "down", b"\x1b[C": "right", b"\x1b[D": "left",
            b"\x1bOA": "up", b"\x1bOB": "down", b"\x1bOC": "right", b"\x1bOD": "left"}


def parse_keys(data: bytes) -> list[str]:
    """Terminal bytes -> key names ('w', 'up', 'space', 'enter', 'esc'); unknown bytes dropped."""
    keys, i = [], 0
    while i < len(data):
        if data[i:i + 1] == b"\x1b":
            introducer = data[i + 1:i + 2]
            if introducer == b"[":  # CSI: parameters, then one final byte in 0x40..0x7e
                end = i + 2
                while end < len(data) and not 0x40 <= data[end] <= 0x7E:
                    end += 1
                end += 1
            elif introducer == b"O":  # SS3: one byte
                end = i + 3
            else:  # the esc key itself
                keys.append("esc")
                i += 1
                continue
            if data[i:end] in _ESCAPES:  # arrows; other sequences (F-keys, ...) are dropped
                keys.append(_ESCAPES[data[i:end]])
            i = end
            continue
        char = chr(data[i]).lower()
        i += 1
        if char == " ":
            keys.append("space")
        elif char in "\r\n":
            keys.append("enter")
        elif char.isprintable():
            keys.append(char)
    return keys


class KeyboardMapping:
    """Key presses (with their arrival times) -> TeleopReading. Pure: no terminal involved."""

    def __init__(self, speed: float = 1.0, rotation_speed: float = 1.0, operator_yaw: float = 0.0,
                 initial_hold: float = 0.25, repeat_hold: float = 0.1):
        self.speed, self.rotation_speed = speed, rotation_speed
        self.operator_yaw = operator_yaw
        self.to_base = yaw_matrix(operator_yaw)
        self.initial_hold, self.repeat_hold = initial_hold, repeat_hold
        self.held_until: dict[str, float] = {}
        self.gripper = 0.0  # keep, until c or v is first pressed
        self.intervene = False
        self.speed_scale = 1.0  # 1 / 2 / 3 set it (SPEED_KEYS)
        self.pending: set[str] = set()
        self.last_input = 0.0

    def new_episode(self) -> None:
        """The env reset the arm: forget what was latched for the last episode (a closed gripper,
        the deadman toggle, keys still counting as held), so the next episode starts open and
        still, and only a fresh deadman press moves it. Pending events (a stop) are kept."""
        self.held_until.clear()
        self.gripper = 0.0
        self.intervene = False

    def press(self, key: str, t: float) -> None:
        self.last_input = t
        if key in MOTION_KEYS:
            until = self.held_until.get(key, -1.0)
            repeating = until >= t
            # max: a repeat never shortens the hold a press already earned (several presses
            # can arrive in one read)
            self.held_until[key] = max(until, t + (self.repeat_hold if repeating else self.initial_hold))
        elif key in GRIPPER_KEYS:
            self.gripper = GRIPPER_KEYS[key]
        elif key in SPEED_KEYS:
            self.speed_scale = SPEED_KEYS[key]
        elif key == DEADMAN_KEY:
            self.intervene = not self.intervene
        elif key in EVENT_KEYS:
            self.pending.add(EVENT_KEYS[key])

    def reading(self, t: float) -> TeleopReading:
        command = np.zeros(6)
        for key, until in self.held_until.items():
            if until >= t:
                index, sign = MOTION_KEYS[key]
                command[index] += sign
        command = np.clip(command, -1.0, 1.0) * self.speed_scale
        events, self.pending = self.pending, set()
        return TeleopReading(
            translation=self.to_base @ command[:3] * self.speed,
            rotation=self.to_base @ command[3:] * self.rotation_speed,
            gripper=self.gripper, intervene=self.intervene,
            success="success" in events, failure="failure" in events,
            rerecord="rerecord" in events, stop="stop" in events, timestamp=self.last_input)


_LABELS = {"space": "SPACE", "enter": "ENTER", "esc": "ESC", "up": "Up", "down": "Down",
           "left": "Left", "right": "Right"}
_AXES = (("translation", "forward / back ({frame} +x / -x)"),
         ("translation", "left / right ({frame} +y / -y)"),
         ("translation", "up / down ({frame} +z / -z)"),
         ("rotation", "roll + / - (about {frame} x)"),
         ("rotation", "pitch + / - (about {frame} y)"),
         ("rotation", "yaw + / - (about {frame} z)"))
_EVENTS = {"success": "end the episode: success", "failure": "end the episode: failure",
           "rerecord": "drop the episode, record it again", "stop": "quit"}


def _label(keys) -> str:
    return "/".join(_LABELS.get(key, key) for key in keys)


def keyboard_controls(operator_yaw: float = 0.0) -> list[tuple[str, str, str]]:
    """(role, keys, what they do) for every binding, read from the binding tables. Roles:
    deadman, translation, rotation, gripper, speed, and the events success, failure, rerecord,
    stop (a view picks what applies, e.g. drops rotation when the task holds the orientation)."""
    # The keys move along the operator's axes; they are the base axes when the operator stands
    # behind the robot (yaw 0).
    frame = "base" if operator_yaw == 0.0 else "operator"
    rows = [("deadman", _label([DEADMAN_KEY]), "start / deadman on-off (the arm holds while off)")]
    for index, (role, meaning) in enumerate(_AXES):
        plus = [k for k, (i, sign) in MOTION_KEYS.items() if i == index and sign > 0]
        minus = [k for k, (i, sign) in MOTION_KEYS.items() if i == index and sign < 0]
        keys = " ".join(f"{_label([p])}/{_label([m])}" for p, m in zip(plus, minus))
        rows.append((role, keys, meaning.format(frame=frame)))
    close = [k for k, v in GRIPPER_KEYS.items() if v > 0]
    opened = [k for k, v in GRIPPER_KEYS.items() if v < 0]
    rows.append(("gripper", f"{_label(close)}/{_label(opened)}", "close / open the gripper (stays)"))
    rows.append(("speed", _label(SPEED_KEYS), "speed " + " / ".join(f"{round(100 * v)}%"
                                                                   for v in SPEED_KEYS.values())))
    for event, meaning in _EVENTS.items():
        rows.append((event, _label([k for k, e in EVENT_KEYS.items() if e == event]), meaning))
    return rows


class KeyboardDevice:
    """Reads key presses from a terminal (stdin by default) without blocking."""

    name = "keyboard"
    start_hint = f"press {_LABELS[DEADMAN_KEY]}"  # how a person starts an episode (the deadman)

    def __init__(self, fd: int | None = None, clock=now, **mapping_options):
        import termios
        import tty

        self.fd = sys.stdin.fileno() if fd is None else fd
        if not os.isatty(self.fd):
            raise DeviceUnavailable(
                "the keyboard device needs an interactive terminal (stdin is not a tty: CI, a pipe "
                "or a service). Run it from a terminal (ssh -t works), or use --device autopilot "
                "for an unattended run.")
        self.clock = clock
        self.mapping = KeyboardMapping(**mapping_options)
        self._saved = termios.tcgetattr(self.fd)
        self._termios = termios
        tty.setcbreak(self.fd, termios.TCSANOW)

    def _drain(self) -> bytes:
        chunks = []
        while select.select([self.fd], [], [], 0)[0]:
            chunk = os.read(self.fd, 1024)
            if not chunk:  # terminal hung up
                break
            chunks.append(chunk)
        return b"".join(chunks)

    def read(self) -> TeleopReading:
        t = self.clock()
        for key in parse_keys(self._drain()):
            self.mapping.press(key, t)
        return self.mapping.reading(t)

    def feed(self, keys: list[str]) -> None:
        """Key names typed elsewhere (a view window that has the keyboard focus), taken as if
        typed in the terminal."""
        t = self.clock()
        for key in keys:
            self.mapping.press(key, t)

    def new_episode(self) -> None:
        self.mapping.new_episode()

    def controls(self) -> list[tuple[str, str, str]]:
        return keyboard_controls(self.mapping.operator_yaw)

    def status(self) -> str:
        """The device's own state a person needs to see (what no single reading shows)."""
        return f"speed {round(100 * self.mapping.speed_scale)}%"

    def close(self) -> None:
        if self._saved is not None:
            self._termios.tcsetattr(self.fd, self._termios.TCSADRAIN, self._saved)
            self._saved = None

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass
