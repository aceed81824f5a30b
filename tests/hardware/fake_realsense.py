"""A fake `pyrealsense2`: the subset of the SDK hardware/cameras/realsense_camera.py calls, with
simulated cameras that stream in real time (real threads, real clocks), and can be unplugged,
replugged and made to drop frames.

    sdk = FakeRealSense([FakeDevice("123"), FakeDevice("456")])
    monkeypatch.setitem(sys.modules, "pyrealsense2", sdk)   # `import pyrealsense2` -> sdk

Frame k of a stream (k = 1, 2, ... from pipeline.start) is ready at start + k / fps; the
pipeline hands frames out in order (a queue that does not overflow), so frame numbers skip only
where `drop(n)` asked for it. Each image encodes its frame number in pixel (0, 0): red = k % 256,
green = k // 256; the rest is the device's `color`.
"""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import numpy as np


class Enum(SimpleNamespace):
    """Stands in for the SDK's enums (rs.stream.color, rs.option.exposure, ...): distinct names."""


stream = Enum(color="stream.color", depth="stream.depth")
format = Enum(rgb8="format.rgb8", bgr8="format.bgr8", z16="format.z16")  # noqa: A001 (the SDK's name)
option = Enum(exposure="option.exposure", enable_auto_exposure="option.enable_auto_exposure",
              gain="option.gain")
camera_info = Enum(serial_number="camera_info.serial_number", name="camera_info.name")


class OptionRange(SimpleNamespace):
    pass


class FakeDevice:
    """One simulated camera. Its modes are (width, height, fps) of the color rgb8 stream."""

    def __init__(self, serial: str, name: str = "Intel RealSense D435",
                 modes=((640, 480, 30), (320, 240, 15), (64, 48, 15), (64, 48, 30)),
                 color=(10, 200, 30), exposure_range=(1, 10000), clock_offset: float = 5000.0):
        self.serial, self.name, self.modes = serial, name, set(modes)
        self.color = color
        self.plugged = True
        self.generation = 0  # bumped by every replug: pipelines started before it are dead
        self.options = {option.exposure: 156.0, option.enable_auto_exposure: 1.0, option.gain: 64.0}
        self.exposure_range = exposure_range
        self.clock_offset = clock_offset  # the device clock reads monotonic + this (s)
        self.pending_drop = 0
        self.delivered: list[int] = []  # frame numbers handed out, in order (all pipelines)
        self.lock = threading.Lock()

    def info(self, what):
        return {camera_info.serial_number: self.serial, camera_info.name: self.name}[what]

    def unplug(self) -> None:
        self.plugged = False

    def replug(self) -> None:
        self.generation += 1
        self.plugged = True

    def drop(self, n: int) -> None:
        """The next n frames the stream produces are lost (their numbers skip)."""
        self.pending_drop = n


class _DeviceHandle:
    def __init__(self, device: FakeDevice):
        self.device = device

    def get_info(self, what):
        return self.device.info(what)

    def first_color_sensor(self):
        return _ColorSensor(self.device)


class _ColorSensor:
    def __init__(self, device: FakeDevice):
        self.device = device

    def supports(self, what) -> bool:
        return what in self.device.options

    def get_option_range(self, what):
        if what == option.exposure:
            low, high = self.device.exposure_range
            return OptionRange(min=float(low), max=float(high), step=1.0, default=156.0)
        return OptionRange(min=0.0, max=1.0, step=1.0, default=1.0)

    def set_option(self, what, value) -> None:
        if what == option.exposure:
            low, high = self.device.exposure_range
            if not low <= value <= high:
                raise RuntimeError(f"value {value} out of range [{low}, {high}]")
            self.device.options[option.enable_auto_exposure] = 0.0  # as the SDK does
        self.device.options[what] = float(value)

    def get_option(self, what) -> float:
        return self.device.options[what]


class _Intrinsics(SimpleNamespace):
    pass


class _VideoProfile:
    def __init__(self, width, height, fps):
        self.width, self.height, self.fps = width, height, fps

    def as_video_stream_profile(self):
        return self

    def get_intrinsics(self):
        return _Intrinsics(width=self.width, height=self.height, fx=0.9 * self.width,
                           fy=0.9 * self.width, ppx=self.width / 2 - 0.5, ppy=self.height / 2 + 0.25,
                           coeffs=[0.0, 0.0, 0.0, 0.0, 0.0], model="distortion.inverse_brown_conrady")


class _Profile:
    def __init__(self, device, width, height, fps):
        self.device = device
        self.video = _VideoProfile(width, height, fps)

    def get_stream(self, which):
        assert which == stream.color, "the fake streams color only"
        return self.video

    def get_device(self):
        return _DeviceHandle(self.device)


class _Frame:
    def __init__(self, number: int, timestamp_ms: float, image: np.ndarray):
        self.number, self.timestamp_ms, self.image = number, timestamp_ms, image

    def __bool__(self):
        return True

    def get_frame_number(self) -> int:
        return self.number

    def get_timestamp(self) -> float:
        return self.timestamp_ms

    def get_data(self):
        return self.image


class _Frameset:
    def __init__(self, color: _Frame):
        self.color = color

    def get_color_frame(self):
        return self.color


class config:  # noqa: N801 (the SDK's name)
    def __init__(self):
        self.serial = None
        self.streams = []

    def enable_device(self, serial: str) -> None:
        self.serial = serial

    def enable_stream(self, which, width, height, fmt, fps) -> None:
        self.streams.append((which, width, height, fmt, fps))


class pipeline:  # noqa: N801
    def __init__(self, ctx=None):
        self.ctx = ctx
        self.device: FakeDevice | None = None

    def start(self, cfg: config):
        devices = [d for d in self.ctx.sdk.devices if d.plugged and (cfg.serial in (None, d.serial))]
        if not devices:
            raise RuntimeError("No device connected")
        device = devices[0]
        (which, width, height, fmt, fps), = cfg.streams
        if which != stream.color or fmt != format.rgb8 or (width, height, fps) not in device.modes:
            raise RuntimeError("Couldn't resolve requests")
        self.device, self.generation = device, device.generation
        self.width, self.height, self.period = width, height, 1.0 / fps
        self.started = time.monotonic()
        self.produced = 0  # the stream's frame counter (numbers restart with every start)
        self.handed = 0  # frames of the stream produced so far that were handed out or dropped
        return _Profile(device, width, height, fps)

    def stop(self) -> None:
        if self.device is None:
            raise RuntimeError("stop() cannot be called before start()")
        self.device = None

    def _alive(self) -> bool:
        d = self.device
        return d is not None and d.plugged and d.generation == self.generation

    def try_wait_for_frames(self, timeout_ms: int = 5000):
        deadline = time.monotonic() + timeout_ms / 1000.0
        while True:
            if self._alive():
                number = self.handed + 1
                ready_at = self.started + number * self.period
                now = time.monotonic()
                if now >= ready_at:
                    self.handed = number
                    d = self.device
                    if d.pending_drop:
                        d.pending_drop -= 1
                        continue
                    return True, _Frameset(self._frame(number, ready_at))
                wake = min(ready_at, deadline)
            else:
                wake = min(time.monotonic() + 0.005, deadline)
            if time.monotonic() >= deadline:
                return False, None
            time.sleep(max(0.0, wake - time.monotonic()))

    def wait_for_frames(self, timeout_ms: int = 5000):
        ok, frames = self.try_wait_for_frames(timeout_ms)
        if not ok:
            raise RuntimeError(f"Frame didn't arrive within {timeout_ms}")
        return frames

    def _frame(self, number: int, ready_at: float) -> _Frame:
        d = self.device
        image = np.empty((self.height, self.width, 3), np.uint8)
        image[:] = d.color
        image[0, 0] = (number % 256, number // 256, 0)
        with d.lock:
            d.delivered.append(number)
        return _Frame(number, (ready_at + d.clock_offset) * 1000.0, image)


class context:  # noqa: N801
    def __init__(self, sdk: "FakeRealSense"):
        self.sdk = sdk

    def query_devices(self):
        return [_DeviceHandle(d) for d in self.sdk.devices if d.plugged]


class FakeRealSense:
    """The module object: `import pyrealsense2` returns this once it is in sys.modules."""

    def __init__(self, devices):
        self.devices = list(devices)
        self.stream, self.format, self.option, self.camera_info = stream, format, option, camera_info
        self.config, self.pipeline = config, pipeline

    def context(self) -> context:
        return context(self)


def frame_number(image: np.ndarray) -> int:
    """The device frame number a fake image encodes."""
    return int(image[0, 0, 0]) + 256 * int(image[0, 0, 1])
