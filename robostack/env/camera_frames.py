"""The env's camera images in real time, from a `robostack camera-server` (docs/camera_server.md).

    with LiveFrames(endpoint, {"front": (128, 128), "wrist": (96, 128)}, max_age=0.1) as frames:
        images, times = frames.read()   # {camera: (H, W, 3) uint8}, {camera: capture time, s}

Each read() hands out the newest frame of every camera the task observes, or raises a
hardware.cameras.base.CameraError naming the camera and the fix (StaleFrame and CameraTimeout
are CameraErrors): stale frame, dead camera (no frame for two periods, or the server says so),
no first frame, an image of another size than the task's. The env ends the episode on it
rather than act on an old or wrong image.

Sizes are the env's (height, width), the observation space's order. They are checked here, not
given to CameraStream (whose size dict is (width, height) and which drops a wrong-size frame
into its rejected counter): a wrong size then becomes an error that says which --resize to use,
instead of a CameraTimeout that hides why.
"""

from __future__ import annotations

import time

import numpy as np

from hardware.cameras.base import CameraError, CameraTimeout
from robostack.cameras.stream import CameraStream

__all__ = ["LiveFrames"]


class LiveFrames:
    """The env's images in real time: each step, the newest frame of every camera the task
    observes, from a `robostack camera-server` (robostack/cameras/stream.py)."""

    def __init__(self, endpoint: str, sizes: dict[str, tuple[int, int]], max_age: float,
                 first_timeout: float = 5.0, curve=None):
        if not sizes:
            raise ValueError("LiveFrames needs the cameras the task observes, e.g. {'front': (128, 128)}")
        self.sizes: dict[str, tuple[int, int]] = {}
        for name, size in sizes.items():
            if (len(size) != 2 or not all(isinstance(v, (int, np.integer)) and v > 0 for v in size)):
                raise ValueError(f"camera {name!r}: size {size!r} is not (height, width) in pixels > 0")
            self.sizes[name] = (int(size[0]), int(size[1]))
        if not first_timeout > 0:
            raise ValueError(f"first_timeout must be > 0 s, got {first_timeout}")
        self.endpoint = endpoint
        self.max_age = max_age
        self.first_timeout = first_timeout
        # Names only: the shape is checked in read(), where its error can name the fix.
        self._stream = CameraStream(endpoint, list(self.sizes), max_age=max_age,
                                    first_timeout=first_timeout, curve=curve)
        self._all_seen = False  # every camera delivered once: no read waits any more
        self._closed = False

    def read(self) -> tuple[dict[str, np.ndarray], dict[str, float]]:
        """({camera: (H, W, 3) uint8 RGB image, the caller's to keep}, {camera: capture time, s,
        time.monotonic() of the camera server's host}). CameraError: see the module doc."""
        if self._closed:
            raise CameraError(f"LiveFrames on {self.endpoint} is closed: make a new one")
        if not self._all_seen:
            self._wait_first_frames()
        images, times = {}, {}
        # Every camera has delivered, so latest() never waits here: the images are the newest
        # at this call, not one camera's first frame held while another was awaited.
        for name, (height, width) in self.sizes.items():
            frame = self._stream.latest(name)
            got_h, got_w = frame.image.shape[:2]
            if (got_h, got_w) != (height, width):
                raise CameraError(
                    f"camera {name!r} delivers {got_w}x{got_h} images (width x height), the task "
                    f"observes {width}x{height}: start the camera server with --resize "
                    f"{name}={width}x{height} (and --crop {name}=X,Y,W,H first if the aspect "
                    f"ratio differs)")
            # A copy: the stream hands out the same Frame again until a newer one arrives, and
            # the caller may keep (or write into) what it got.
            images[name] = frame.image.copy()
            times[name] = float(frame.capture_time)
        return images, times

    def _wait_first_frames(self) -> None:
        """Wait for every camera's first frame under ONE deadline (first_timeout in total)."""
        deadline = time.monotonic() + self.first_timeout
        for name in self.sizes:
            try:
                self._stream.latest(name, first_timeout=deadline - time.monotonic())
            except CameraTimeout as exc:
                # One drain serves all cameras, so any camera without a frame now never sent one.
                cams = self._stream.stats()["cameras"]
                missing = [n for n in self.sizes if cams[n]["received"] == 0] or [name]
                rejected = self._stream.stats()["rejected"]
                raise CameraTimeout(
                    f"camera{'s' if len(missing) > 1 else ''} {', '.join(map(repr, missing))}: no "
                    f"frame from {self.endpoint} within {self.first_timeout:.1f} s (rejected so "
                    f"far: {rejected or 'none'}): is `robostack camera-server` running there with "
                    f"--cameras naming {'them' if len(missing) > 1 else 'it'}?") from exc
        self._all_seen = True

    def stats(self) -> dict:
        """The stream's counters: rejected reasons, superseded frames, per camera received,
        latency, dead, drop counts (CameraStream.stats)."""
        return self._stream.stats()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._stream.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
