"""The camera interface (issue 12): every camera (a UVC webcam through OpenCV, an Intel RealSense)
is read the same way, by whoever needs pixels (the env's image observations, the episode log,
a live view).

    cam.start()                      # opens the device, starts its capture thread
    frame = cam.latest(max_age=0.1)  # the newest frame, if it is at most 0.1 s old
    frame = cam.wait_next(timeout=0.5)   # block (bounded) for a frame newer than the last returned
    cam.stop()                       # idempotent; `with cam:` does start/stop

Images are RGB uint8 (H, W, 3), C-contiguous, whatever the device's own format. Times are host
`time.monotonic()` seconds (`capture_time`); `device_time` is the device's clock in seconds
where it has one. `seq` counts 1, 2, 3 ... per start; gaps are frames nobody saw.

No call blocks forever: every wait has a timeout. A camera that stops delivering (unplugged,
a file that ended, a stuck driver) is reported by latest()/wait_next() with a CameraError naming
the camera and what to check once two frame periods passed without a frame.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np


@dataclass(frozen=True)
class Intrinsics:
    """Pinhole intrinsics in pixels of the image as delivered (width x height)."""
    width: int
    height: int
    fx: float
    fy: float
    cx: float
    cy: float
    distortion: tuple[float, ...] = ()  # OpenCV order (k1, k2, p1, p2, k3); () = none

    def matrix(self) -> np.ndarray:
        """The 3x3 camera matrix K, as cv2 takes it."""
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])


@dataclass
class Frame:
    image: np.ndarray  # (H, W, 3) uint8, RGB order, C-contiguous
    seq: int  # 1, 2, 3 ... per camera start; gaps = dropped frames
    capture_time: float  # host time.monotonic() s when the frame was captured (best estimate)
    device_time: float | None = None  # the device's own timestamp in s, when it has one
    camera: str = ""  # the camera's name


class CameraError(RuntimeError):
    """The camera cannot deliver; the message names the camera, the problem and the fix."""


class CameraTimeout(CameraError):
    """No new frame arrived within the timeout given to wait_next()."""


class StaleFrame(CameraError):
    """The newest frame is older than the max_age asked for; `.frame` is it, `.age` its age (s)."""

    def __init__(self, message: str, frame: Frame, age: float):
        super().__init__(message)
        self.frame = frame
        self.age = age


@runtime_checkable
class Camera(Protocol):
    name: str
    serial: str | None
    width: int
    height: int
    fps: float
    intrinsics: Intrinsics | None
    dropped: int  # frames the capture thread overwrote unread / the device dropped

    def start(self) -> None:
        """Open the device and start capturing (a thread); returns once the first frame arrived."""

    def latest(self, max_age: float) -> Frame:
        """The newest frame; StaleFrame if it is older than max_age s; CameraError if none/dead."""

    def wait_next(self, timeout: float, after_seq: int | None = None) -> Frame:
        """A frame with seq > after_seq (default: the last one returned); CameraTimeout otherwise."""

    def stop(self) -> None:
        """Stop capturing and release the device; idempotent."""
