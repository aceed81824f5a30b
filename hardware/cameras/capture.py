"""What every driver's capture thread shares: the newest frame, its waiters, and the health rule.

One thread per camera reads the device as fast as it delivers and hands each image to
`LatestFrame.publish`, which numbers it, stamps it and keeps only the newest: a consumer at
10 Hz reading a 30 Hz camera gets the freshest image, never a queue of old ones (the reason
there is a thread at all). Every overwritten frame nobody read counts in `dropped`, and so
does every gap in the device's own frame numbers (frames the device or its SDK dropped).

Health is judged where it is asked, in latest()/wait_next(), from the time since the newest
frame: once two frame periods passed without one the camera is reported dead with a
CameraError naming it and what to check, even while the capture thread is stuck inside a
driver call that has not returned yet. The thread can also say why first: `fail(reason)` (it
ended: the file is over, the device cannot be read) or `down(reason)` (unplugged; the thread
is trying to reconnect, and the next published frame clears it).
"""

from __future__ import annotations

import threading
import time

import numpy as np

from hardware.cameras.base import CameraError, CameraTimeout, Frame, StaleFrame

DEAD_AFTER_PERIODS = 2.0  # the contract: reported once two frame periods passed without a frame


def as_rgb_image(image: np.ndarray) -> np.ndarray:
    """The contract's image: (H, W, 3) uint8, C-contiguous (a copy if the driver's buffer is reused)."""
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"a camera image must be (H, W, 3) uint8, got {image.shape} {image.dtype}")
    return np.ascontiguousarray(image)


class LatestFrame:
    """The newest frame of one camera, shared by its capture thread (writer) and readers."""

    def __init__(self, camera: str, fps: float, hint: str, clock=time.monotonic,
                 dead_after_periods: float = DEAD_AFTER_PERIODS):
        if not fps > 0:
            raise ValueError(f"camera {camera!r}: fps must be > 0, got {fps}")
        self.camera, self.hint, self.clock = camera, hint, clock
        self.period = 1.0 / fps
        self.dead_after = dead_after_periods * self.period
        self._cond = threading.Condition()
        self._frame: Frame | None = None
        self._read = False  # the newest frame was handed out at least once
        self._returned_seq = 0  # seq of the last frame handed out: wait_next's default
        self._device_number: int | None = None
        self._failed: str | None = None
        self._down: str | None = None
        self.seq = 0
        self.dropped = 0  # overwritten unread + skipped by the device
        self.device_dropped = 0  # the part the device's frame numbers say it skipped

    # --- the capture thread's side ------------------------------------------------------------
    def publish(self, image: np.ndarray, capture_time: float, device_time: float | None = None,
                device_number: int | None = None) -> Frame:
        image = as_rgb_image(image)
        with self._cond:
            if self._frame is not None and not self._read:
                self.dropped += 1
            if device_number is not None:
                if self._device_number is not None and device_number > self._device_number + 1:
                    skipped = device_number - self._device_number - 1
                    self.dropped += skipped
                    self.device_dropped += skipped
                self._device_number = device_number
            self.seq += 1
            self._frame = Frame(image=image, seq=self.seq, capture_time=capture_time,
                                device_time=device_time, camera=self.camera)
            self._read = False
            self._down = None
            self._cond.notify_all()
            return self._frame

    def restart_numbering(self) -> None:
        """The device restarted its frame numbers (a reconnect): the jump back is no gap."""
        with self._cond:
            self._device_number = None

    def fail(self, reason: str) -> None:
        """The capture thread ended: every later call raises CameraError with this reason (the
        first one given: a camera that died and was then stopped still says why it died)."""
        with self._cond:
            self._failed = self._failed or reason
            self._cond.notify_all()

    def down(self, reason: str) -> None:
        """The device is gone for now (the thread keeps trying); cleared by the next frame."""
        with self._cond:
            self._down = reason
            self._cond.notify_all()

    # --- the readers' side --------------------------------------------------------------------
    def first(self, timeout: float) -> Frame:
        """Block until the first frame (start() uses it), bounded by timeout."""
        deadline = self.clock() + timeout
        with self._cond:
            while self._frame is None:
                if self._failed is not None:
                    raise CameraError(f"camera {self.camera!r}: {self._failed}. {self.hint}")
                remaining = deadline - self.clock()
                if remaining <= 0:
                    raise CameraError(f"camera {self.camera!r}: opened, but no frame arrived within "
                                      f"{timeout:.1f} s. {self.hint}")
                self._cond.wait(remaining)
            return self._frame

    def _check(self, now: float) -> Frame:
        """The newest frame if the camera is alive, else the CameraError saying why (lock held)."""
        if self._failed is not None:
            raise CameraError(f"camera {self.camera!r}: {self._failed}. {self.hint}")
        if self._down is not None:
            raise CameraError(f"camera {self.camera!r}: {self._down}. {self.hint}")
        if self._frame is None:
            raise CameraError(f"camera {self.camera!r} has no frame: call start() first")
        silent = now - self._frame.capture_time
        if silent > self.dead_after:
            raise CameraError(
                f"camera {self.camera!r} delivered no frame for {silent:.3f} s (more than two frame "
                f"periods, {self.dead_after:.3f} s at {1.0 / self.period:g} fps). {self.hint}")
        return self._frame

    def _hand_out(self, frame: Frame) -> Frame:
        self._read = True
        self._returned_seq = frame.seq
        return frame

    def latest(self, max_age: float) -> Frame:
        with self._cond:
            now = self.clock()
            frame = self._check(now)
            age = now - frame.capture_time
            if age > max_age:
                raise StaleFrame(
                    f"camera {self.camera!r}: the newest frame (seq {frame.seq}) is {age:.3f} s old, "
                    f"older than max_age {max_age:.3f} s: the camera delivers every {self.period:.3f} s; "
                    "ask for a larger max_age or use wait_next()", frame, age)
            return self._hand_out(frame)

    def wait_next(self, timeout: float, after_seq: int | None = None) -> Frame:
        with self._cond:
            after = self._returned_seq if after_seq is None else after_seq
            start = self.clock()
            deadline = start + timeout
            while True:
                now = self.clock()
                frame = self._check(now)
                if frame.seq > after:
                    return self._hand_out(frame)
                remaining = deadline - now
                if remaining <= 0:
                    raise CameraTimeout(
                        f"camera {self.camera!r}: no frame after seq {after} within {timeout:.3f} s")
                # Wake at the timeout or when the camera would turn dead, whichever comes first,
                # so a silent camera is reported on time even if no frame ever wakes us.
                until_dead = frame.capture_time + self.dead_after - now
                self._cond.wait(max(min(remaining, until_dead + 1e-4), 1e-4))


class CapturingCamera:
    """What the three capturing cameras (OpenCV, RealSense, the synthetic pattern) share: a
    capture thread of theirs publishes into `self._slot` (a LatestFrame, made by start()), and
    readers get frames from it. Subclasses set `name` and `_slot = None` and write start()/stop()."""

    name: str
    _slot: LatestFrame | None

    @property
    def dropped(self) -> int:
        return self._slot.dropped if self._slot else 0

    def latest(self, max_age: float) -> Frame:
        return self._started().latest(max_age)

    def wait_next(self, timeout: float, after_seq: int | None = None) -> Frame:
        return self._started().wait_next(timeout, after_seq)

    def _started(self) -> LatestFrame:
        if self._slot is None:
            raise CameraError(f"camera {self.name!r} is not started: call start() (or use `with`)")
        return self._slot

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()
