"""Teleop drivers: each pure mapping with simulated input, each I/O part with a real pty
(keyboard) or a fake of the vendor SDK exposing the SDK's calls (pygame, hidapi)."""

from __future__ import annotations

import math
import os
import sys
import termios
import threading
import time

import numpy as np
import pytest

from hardware.teleop.base import DeviceUnavailable, TeleopDevice, deadzone
from hardware.teleop.gamepad import GamepadDevice, GamepadLayout, GamepadMapping
from hardware.teleop.keyboard import KeyboardDevice, KeyboardMapping, parse_keys
from hardware.teleop.spacemouse import SpaceMouseDevice, SpaceMouseMapping


class Clock:
    def __init__(self, t: float = 100.0):
        self.t = t

    def __call__(self) -> float:
        return self.t


def test_deadzone_is_continuous_at_its_edge():
    out = deadzone(np.array([0.05, -0.1, 0.1001, 0.55, -1.0, 1.5]), 0.1)
    assert out[0] == 0 and out[1] == 0
    assert 0 < out[2] < 1e-3
    assert out[3] == pytest.approx(0.5) and out[4] == -1.0 and out[5] == 1.0


# --- keyboard ----------------------------------------------------------------------------------
def test_parse_keys_handles_arrows_enter_space_and_escape():
    assert parse_keys(b"wA \r\x1b[A\x1b[D\x1bOB") == ["w", "a", "space", "enter", "up", "left", "down"]
    assert parse_keys(b"\x1b") == ["esc"]
    assert parse_keys(b"\x1b[15~w") == ["w"]  # F5 dropped whole, the next key kept
    assert parse_keys(b"\x1bq") == ["esc", "q"]


def test_keyboard_mapping_axes_in_base_frame():
    m = KeyboardMapping()
    for key in "war":
        m.press(key, 0.0)
    r = m.reading(0.0)
    np.testing.assert_allclose(r.translation, [1, 1, 1])  # forward, left, up
    m = KeyboardMapping()
    for key in ("down", "right", "f", "i", "j", "u"):
        m.press(key, 0.0)
    r = m.reading(0.0)
    np.testing.assert_allclose(r.translation, [-1, -1, -1])
    np.testing.assert_allclose(r.rotation, [1, 1, 1])
    # The operator stands on the robot's left, facing base -y: "forward" is base -y.
    m = KeyboardMapping(operator_yaw=-math.pi / 2)
    m.press("w", 0.0)
    np.testing.assert_allclose(m.reading(0.0).translation, [0, -1, 0], atol=1e-12)


def test_keyboard_keys_act_held_for_a_short_time_without_release_events():
    m = KeyboardMapping(initial_hold=0.25, repeat_hold=0.1)
    m.press("w", 0.0)  # a tap
    assert m.reading(0.2).translation[0] == 1.0
    assert m.reading(0.26).translation[0] == 0.0  # stops by itself
    m.press("a", 0.5)
    m.press("a", 0.5)  # two presses in one read: still a tap's hold, not a repeat's
    assert m.reading(0.7).translation[1] == 1.0
    # A held key: first press, auto-repeat after 0.2 s, then every 0.03 s; released at 0.5 s.
    m.press("s", 1.0)
    repeats = [1.2 + 0.03 * i for i in range(10)]
    for t in repeats:
        m.press("s", t)
        assert m.reading(t).translation[0] == -1.0
    assert m.reading(repeats[-1] + 0.09).translation[0] == -1.0
    assert m.reading(repeats[-1] + 0.11).translation[0] == 0.0  # released: stops within repeat_hold


def test_keyboard_events_are_edges_and_deadman_toggles():
    m = KeyboardMapping()
    m.press("space", 0.0)
    m.press("enter", 0.0)
    first = m.reading(0.0)
    assert first.intervene and first.success and not first.failure
    second = m.reading(0.1)
    assert second.intervene and not second.success  # the press is reported once
    for key, event in (("n", "failure"), ("b", "rerecord"), ("q", "stop"), ("esc", "stop")):
        m.press(key, 1.0)
        assert getattr(m.reading(1.0), event)
    m.press("space", 2.0)
    assert not m.reading(2.0).intervene
    assert m.reading(2.0).gripper == 0.0  # keep until a gripper key
    m.press("c", 3.0)
    assert m.reading(9.0).gripper == 1.0  # latched
    m.press("v", 10.0)
    assert m.reading(10.0).gripper == -1.0


def test_keyboard_speed_keys_scale_every_motion_and_rotation():
    m = KeyboardMapping()
    for key, share in (("1", 0.1), ("2", 0.3), ("3", 1.0)):
        m.press(key, 0.0)
        m.press("w", 0.0)
        m.press("u", 0.0)
        r = m.reading(0.0)
        assert r.translation[0] == pytest.approx(share) and r.rotation[2] == pytest.approx(share)
    m.press("1", 1.0)
    m.press("a", 1.0)
    m.press("d", 1.0)  # opposite keys cancel before the scaling, never exceed it
    assert not m.reading(1.0).translation.any()


def test_keyboard_new_episode_forgets_the_latched_gripper_and_deadman():
    m = KeyboardMapping()
    for key in ("space", "c", "w", "2", "q"):
        m.press(key, 0.0)
    m.new_episode()
    r = m.reading(0.1)
    assert not r.intervene and r.gripper == 0.0 and not r.translation.any()
    assert r.stop  # a pending quit is not lost
    m.press("w", 0.2)
    assert m.reading(0.2).translation[0] == pytest.approx(0.3)  # the speed level stays


def test_keyboard_controls_list_every_binding_of_the_driver():
    from hardware.teleop.keyboard import (DEADMAN_KEY, EVENT_KEYS, GRIPPER_KEYS, MOTION_KEYS, SPEED_KEYS,
                                          keyboard_controls)

    rows = keyboard_controls()
    assert {role for role, _, _ in rows} == {"deadman", "translation", "rotation", "gripper", "speed",
                                            "success", "failure", "rerecord", "stop"}
    shown = " ".join(keys for _, keys, _ in rows).lower().replace("/", " ").split()
    for key in [*MOTION_KEYS, *EVENT_KEYS, *GRIPPER_KEYS, *SPEED_KEYS, DEADMAN_KEY]:
        assert key in shown, f"key {key!r} is bound but not in the key map"
    assert ("translation", "w/s Up/Down", "forward / back (base +x / -x)") in rows
    assert ("success", "ENTER/y", "end the episode: success") in rows
    turned = dict((keys, meaning) for _, keys, meaning in keyboard_controls(operator_yaw=1.0))
    assert turned["w/s Up/Down"] == "forward / back (operator +x / -x)"


def test_keyboard_feed_takes_keys_typed_into_a_window():
    master, slave = os.openpty()
    try:
        device = KeyboardDevice(fd=slave, clock=Clock())
        device.feed(["space", "w", "c"])
        reading = device.read()
        assert reading.intervene and reading.translation[0] == 1.0 and reading.gripper == 1.0
        assert device.status() == "speed 100%"
        device.feed(["2"])
        assert device.status() == "speed 30%"
        device.close()
    finally:
        os.close(master)
        os.close(slave)


def test_keyboard_over_a_real_pty_sets_cbreak_and_restores_the_terminal():
    master, slave = os.openpty()
    try:
        before = termios.tcgetattr(slave)
        clock = Clock()
        device = KeyboardDevice(fd=slave, clock=clock)
        assert isinstance(device, TeleopDevice)
        mode = termios.tcgetattr(slave)
        assert not mode[3] & termios.ECHO and not mode[3] & termios.ICANON
        assert mode[3] & termios.ISIG  # Ctrl-C still interrupts
        assert not device.read().translation.any()
        os.write(master, b"w \x1b[D")  # forward, deadman on, left arrow
        time.sleep(0.05)
        reading = device.read()
        np.testing.assert_allclose(reading.translation, [1, 1, 0])
        assert reading.intervene
        clock.t += 1.0  # nothing pressed since: the keys are released
        assert not device.read().translation.any()
        os.write(master, b"q")
        time.sleep(0.05)
        assert device.read().stop
        device.close()
        assert termios.tcgetattr(slave) == before
    finally:
        os.close(master)
        os.close(slave)


def test_keyboard_without_a_terminal_says_it_needs_one():
    read_end, write_end = os.pipe()
    try:
        with pytest.raises(DeviceUnavailable, match="needs an interactive terminal.*autopilot"):
            KeyboardDevice(fd=read_end)
    finally:
        os.close(read_end)
        os.close(write_end)


# --- gamepad -----------------------------------------------------------------------------------
REST = [0.0, 0.0, -1.0, 0.0, 0.0, -1.0]  # sticks centred, triggers released (pygame values)


def axes(**values) -> list[float]:
    names = ["left_x", "left_y", "left_trigger", "right_x", "right_y", "right_trigger"]
    out = list(REST)
    for name, value in values.items():
        out[names.index(name)] = value
    return out


def test_gamepad_sticks_map_to_base_axes_with_deadzone():
    m = GamepadMapping(stick_deadzone=0.1)
    buttons = [0] * 8
    r = m.map(axes(left_y=-1.0, left_x=-1.0, right_y=-1.0, right_x=-1.0), buttons)
    np.testing.assert_allclose(r.translation, [1, 1, 1])  # stick up/left: forward/left; right up: up
    np.testing.assert_allclose(r.rotation, [0, 0, 1])  # right stick left: counter-clockwise yaw
    r = m.map(axes(left_y=0.08, left_x=-0.05, right_x=0.09), buttons)  # a worn stick at rest
    assert not r.translation.any() and not r.rotation.any()
    r = m.map(axes(left_y=0.55), buttons)
    assert r.translation[0] == pytest.approx(-0.5)
    r = m.map(REST, buttons, [(1, -1)])  # d-pad right and down
    np.testing.assert_allclose(r.rotation, [1, -1, 0])


def test_gamepad_trigger_is_the_deadman_and_buttons_are_edges():
    m = GamepadMapping()
    idle = [0] * 8
    assert not m.map(REST, idle).intervene
    assert not m.map(axes(right_trigger=0.0), idle).intervene  # SDL's value before any event
    assert m.map(axes(right_trigger=0.8), idle).intervene
    assert not m.map(axes(left_trigger=1.0), idle).intervene  # the other trigger is not it
    a = [1, 0, 0, 0, 0, 0, 0, 0]
    assert m.map(REST, a).success
    assert not m.map(REST, a).success  # still held: no second event
    assert not m.map(REST, idle).success
    for index, event in ((1, "failure"), (2, "rerecord"), (7, "stop"), (6, "stop")):
        pressed = [0] * 8
        pressed[index] = 1
        assert getattr(m.map(REST, pressed), event)
        m.map(REST, idle)
    rb, lb = [0, 0, 0, 0, 0, 1, 0, 0], [0, 0, 0, 0, 1, 0, 0, 0]
    assert m.map(REST, rb).gripper == 1.0 and m.map(REST, idle).gripper == 1.0  # latched close
    assert m.map(REST, lb).gripper == -1.0


class FakeJoystick:
    """pygame.joystick.Joystick's calls, driven by the test."""

    def __init__(self, index):
        self.axes, self.buttons, self.hats = list(REST), [0] * 11, [(0, 0)]

    def init(self): pass
    def quit(self): pass
    def get_name(self): return "Fake Xbox Controller"
    def get_numaxes(self): return len(self.axes)
    def get_axis(self, i): return self.axes[i]
    def get_numbuttons(self): return len(self.buttons)
    def get_button(self, i): return self.buttons[i]
    def get_numhats(self): return len(self.hats)
    def get_hat(self, i): return self.hats[i]


class FakePygame:
    class error(RuntimeError):
        pass

    def __init__(self, count=1):
        outer = self
        self.pumps = 0
        self.sticks = []

        class joystick:
            @staticmethod
            def init(): pass
            @staticmethod
            def quit(): pass
            @staticmethod
            def get_count(): return count
            @staticmethod
            def Joystick(index):
                outer.sticks.append(FakeJoystick(index))
                return outer.sticks[-1]

        class event:
            @staticmethod
            def pump(): outer.pumps += 1

        self.joystick, self.event = joystick, event

    def init(self): pass


def test_gamepad_device_reads_through_the_pygame_calls():
    pygame = FakePygame()
    device = GamepadDevice(pygame=pygame)
    stick = pygame.sticks[0]
    stick.axes = axes(left_y=-1.0, right_trigger=1.0)
    reading = device.read()
    assert pygame.pumps == 1  # events pumped, or SDL never updates the values
    assert reading.intervene and reading.translation[0] == 1.0
    device.close()


def test_gamepad_shows_its_controls_and_forgets_the_gripper_each_episode():
    device = GamepadDevice(pygame=FakePygame())
    roles = {role: keys for role, keys, _ in device.controls()}
    assert roles["deadman"] == "RT (hold)" and roles["success"] == "A" and roles["stop"] == "Start/Back"
    assert device.start_hint == "hold RT"
    stick = device.joystick
    stick.buttons[GamepadLayout().rb] = 1
    assert device.read().gripper == 1.0
    stick.buttons[GamepadLayout().rb] = 0
    device.new_episode()
    assert device.read().gripper == 0.0
    device.close()


def test_gamepad_missing_pad_or_pygame_is_a_clear_error(monkeypatch):
    with pytest.raises(DeviceUnavailable, match="no gamepad #0 found.*input"):
        GamepadDevice(pygame=FakePygame(count=0))
    monkeypatch.setitem(sys.modules, "pygame", None)  # import pygame -> ImportError
    with pytest.raises(DeviceUnavailable, match=r"robostack\[gamepad\]"):
        GamepadDevice()


# --- spacemouse --------------------------------------------------------------------------------
def report(kind: int, x: int, y: int, z: int) -> list[int]:
    data = [kind]
    for value in (x, y, z):
        value &= 0xFFFF
        data += [value & 0xFF, value >> 8]
    return data


def test_spacemouse_reports_map_to_base_axes():
    m = SpaceMouseMapping(deadzone=0.1, full_scale=350)
    m.update(report(1, 0, -350, 0), 0.0)  # push away from the operator: raw y negative
    np.testing.assert_allclose(m.reading(0.0).translation, [1, 0, 0], atol=1e-12)
    m.update(report(1, -350, 0, -350), 0.0)  # push left and lift (raw z points down)
    np.testing.assert_allclose(m.reading(0.0).translation, [0, 1, 1], atol=1e-12)
    m.update(report(2, 0, 0, -350), 0.0)  # twist the cap counter-clockwise seen from above
    np.testing.assert_allclose(m.reading(0.0).rotation, [0, 0, 1], atol=1e-12)
    m.update(report(1, 20, -30, 10) + report(2, 0, 0, 0)[1:], 0.0)  # 13-byte report: both, small
    r = m.reading(0.0)
    assert not r.translation.any() and not r.rotation.any()  # inside the deadzone


def test_spacemouse_motion_is_the_deadman_and_buttons_latch_the_gripper():
    m = SpaceMouseMapping(intervene_hold=0.3)
    assert not m.reading(0.0).intervene
    m.update(report(1, 0, -200, 0), 1.0)
    assert m.reading(1.0).intervene
    m.update(report(1, 0, 0, 0), 1.1)  # released
    assert m.reading(1.25).intervene  # a short pause keeps control
    assert not m.reading(1.5).intervene
    m.update([3, 1], 2.0)
    assert m.reading(2.0).gripper == 1.0
    m.update([3, 0], 2.1)
    assert m.reading(2.2).gripper == 1.0
    m.update([3, 2], 2.3)
    assert m.reading(2.3).gripper == -1.0


class FakeHidDevice:
    """hidapi's `hid.device()`: open_path, read(max_length, timeout_ms), close. Reports queue up
    as on the real device; read blocks up to timeout_ms when none is waiting."""

    def __init__(self, fail_open: bool = False):
        self.queue: list[list[int]] = []
        self.lock = threading.Lock()
        self.fail_open = fail_open
        self.closed = False

    def open_path(self, path):
        if self.fail_open:
            raise OSError("open failed")

    def read(self, max_length, timeout_ms=0):
        with self.lock:
            if self.queue:
                return self.queue.pop(0)[:max_length]
        time.sleep(timeout_ms / 1000)
        return []

    def close(self):
        self.closed = True


class FakeHid:
    def __init__(self, devices=None, fail_open=False):
        self.devices = devices if devices is not None else [
            {"vendor_id": 0x046D, "product_id": 0xC52B, "path": b"/dev/hidraw0", "usage_page": 1, "usage": 2},
            {"vendor_id": 0x256F, "product_id": 0xC635, "path": b"/dev/hidraw3", "usage_page": 1, "usage": 8}]
        self.opened: list[FakeHidDevice] = []
        self.fail_open = fail_open

    def enumerate(self, vendor_id=0, product_id=0):
        return list(self.devices)

    def device(self):
        self.opened.append(FakeHidDevice(self.fail_open))
        return self.opened[-1]


def test_spacemouse_thread_drains_to_the_newest_report():
    hid = FakeHid()
    device = SpaceMouseDevice(hid=hid, poll_ms=1)
    raw = hid.opened[0]
    try:
        # A burst as the device sends it while the cap is pushed and then let go: the policy,
        # polling at 10 Hz, must see the release, not the backlog of pushes.
        with raw.lock:
            raw.queue += [report(1, 0, -300, 0) for _ in range(300)] + [report(1, 0, 0, 0)]
        deadline = time.monotonic() + 5.0
        while device.reports < 301 and time.monotonic() < deadline:
            time.sleep(0.005)
        assert device.reports == 301 and not raw.queue
        assert not device.read().translation.any()
        with raw.lock:
            raw.queue.append(report(1, 0, -350, 0))
        while device.reports < 302 and time.monotonic() < deadline:
            time.sleep(0.005)
        assert device.read().translation[0] == pytest.approx(1.0)
    finally:
        device.close()
    assert raw.closed and not device._thread.is_alive()


def test_spacemouse_shows_its_controls_and_forgets_the_gripper_each_episode():
    device = SpaceMouseDevice(hid=FakeHid(), poll_ms=1)
    try:
        roles = {role: keys for role, keys, _ in device.controls()}
        assert roles["deadman"] == "move the cap" and roles["stop"] == "Ctrl-C"
        device.mapping.update([3, 1], 0.0)
        assert device.read().gripper == 1.0
        device.new_episode()
        assert device.read().gripper == 0.0
    finally:
        device.close()


def test_spacemouse_lost_device_raises_instead_of_repeating_stale_input():
    hid = FakeHid()
    device = SpaceMouseDevice(hid=hid, poll_ms=1)

    def unplugged(*_):
        raise OSError("read error")

    hid.opened[0].read = unplugged
    device._thread.join(timeout=2.0)
    with pytest.raises(DeviceUnavailable, match="stopped answering"):
        device.read()
    device.close()


def test_spacemouse_errors_name_the_fix(monkeypatch):
    with pytest.raises(DeviceUnavailable, match=r"(?s)99-spacemouse.rules.*idVendor.*256f"):
        SpaceMouseDevice(hid=FakeHid(fail_open=True))
    logitech_mouse_only = [{"vendor_id": 0x046D, "product_id": 0xC52B, "path": b"/dev/hidraw0"}]
    with pytest.raises(DeviceUnavailable, match="no SpaceMouse found"):
        SpaceMouseDevice(hid=FakeHid(devices=logitech_mouse_only))
    monkeypatch.setitem(sys.modules, "hid", None)
    with pytest.raises(DeviceUnavailable, match=r"robostack\[spacemouse\]"):
        SpaceMouseDevice()
