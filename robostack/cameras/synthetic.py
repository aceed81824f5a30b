"""A synthetic camera behind the hardware.cameras Camera interface: a moving test pattern at a
set rate from its own capture thread, for the camera server's tests and benchmark and for
running the stack without a camera.

The pattern is "natural-ish" on purpose (smooth gradients, soft-edged discs, a little texture),
so that JPEG error measured on it resembles error on a real scene; pure noise or hard stripes
would make JPEG look far worse than it is on camera images. `stop_after` (s) makes the camera go
silent after that long, as an unplugged or stuck device does, with its thread still alive.
"""

from __future__ import annotations

import threading
import time

import numpy as np

from hardware.cameras.capture import CapturingCamera, LatestFrame


def pattern_image(width: int, height: int) -> np.ndarray:
    """An RGB uint8 (height, width, 3) image twice as wide as asked (it scrolls; see _run)."""
    y, x = np.mgrid[0:height, 0:2 * width].astype(np.float32)
    y /= max(height - 1, 1)
    x /= max(width - 1, 1)
    r = 0.5 + 0.4 * np.sin(2.0 * x + 1.0) * np.cos(1.5 * y)
    g = 0.5 + 0.35 * np.cos(1.2 * x - 2.0 * y)
    b = 0.45 + 0.3 * np.sin(3.0 * y + x)
    image = np.stack([r, g, b], axis=-1)
    for cx, cy, radius, colour in [(0.3, 0.4, 0.18, (0.9, 0.2, 0.1)), (1.1, 0.6, 0.25, (0.1, 0.3, 0.8)),
                                   (1.6, 0.3, 0.12, (0.95, 0.9, 0.2))]:
        d = np.hypot((x - cx) * width / height, y - cy)
        weight = np.clip((radius - d) / 0.03, 0.0, 1.0)[..., None]  # a soft edge, ~3 % of height
        image = image * (1 - weight) + np.array(colour, np.float32) * weight
    texture = 0.03 * np.sin(40.0 * x) * np.sin(35.0 * y)
    return np.clip((image + texture[..., None]) * 255.0, 0, 255).astype(np.uint8)


class SyntheticCamera(CapturingCamera):
    """The Camera protocol (hardware/cameras/base.py) over a scrolling test pattern."""

    def __init__(self, name: str, width: int = 640, height: int = 480, fps: float = 30.0,
                 stop_after: float = 0.0):
        if not fps > 0:
            raise ValueError(f"camera {name!r}: fps must be > 0, got {fps}")
        self.name, self.width, self.height, self.fps = name, width, height, float(fps)
        self.serial = None
        self.intrinsics = None
        self.stop_after = stop_after
        self._pattern = pattern_image(width, height)
        self._slot: LatestFrame | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def start(self) -> None:
        if self._thread is not None:
            return
        self._slot = LatestFrame(self.name, self.fps, f"Synthetic camera {self.name!r} "
                                 f"(stop_after={self.stop_after} s)")
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=f"camera-{self.name}", daemon=True)
        self._thread.start()
        self._slot.first(timeout=5.0)

    def _image(self, n: int) -> np.ndarray:
        shift = (4 * n) % self.width  # 4 pixels per frame: motion a policy could see
        return np.ascontiguousarray(self._pattern[:, shift:shift + self.width])

    def _run(self) -> None:
        period = 1.0 / self.fps
        start = time.monotonic()
        n = 0
        while not self._stop.is_set():
            now = time.monotonic()
            if self.stop_after and now - start >= self.stop_after:
                self._stop.wait(period)  # silent, as a stuck device: the health rule reports it
                continue
            due = start + n * period
            if now < due:
                self._stop.wait(due - now)
                continue
            if now - due > period:  # fell behind (a loaded machine): skip, as a device would
                n = int((now - start) / period)
            self._slot.publish(self._image(n), time.monotonic())
            n += 1

    def stop(self) -> None:
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join(timeout=2.0)
        self._thread = None
        self._slot.fail("stopped")

