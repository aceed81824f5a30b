"""UVC webcams (and video files, image sequences) through OpenCV's cv2.VideoCapture.

source: a device index (0 -> /dev/video0), a device path ("/dev/video2"), a video file
("demo.mp4"), or an image-sequence pattern ("frames/%04d.png", numbered from 0 or 1). A file is
paced at `fps` (its own rate when fps is None) so that it behaves like a live camera: same
thread, same newest-frame-only, same death two periods after its last frame (or `loop=True`).

Size: the requested width x height is asked of the device, and a device that gives another size
is an error naming both, never a silent resize: a resized image would no longer match the
device's calibration, and the pixels a policy was trained on would change unseen. For a file,
width/height None means "whatever it holds"; given, they must match it.

Intrinsics: a webcam does not report its own, so `intrinsics` is None unless a calibration is
passed (checked against the image size). `serial` is the USB serial from sysfs where the device
has one, else None.
"""

from __future__ import annotations

import glob
import os
import sys
import threading
import time

import numpy as np

from hardware.cameras.base import CameraError, Intrinsics
from hardware.cameras.capture import CapturingCamera, LatestFrame

DEVICE_HINT = ("Check the cable and `v4l2-ctl --list-devices`; another program may hold the "
               "camera, and your user must be in the `video` group")


def _import_cv2():
    try:
        import cv2
    except ImportError:
        raise CameraError("OpenCV cameras need cv2: pip install opencv-python-headless") from None
    return cv2


def video_devices() -> str:
    """The /dev/video* nodes here with their driver names, for error messages."""
    found = []
    for path in sorted(glob.glob("/dev/video*")):
        name_file = f"/sys/class/video4linux/{os.path.basename(path)}/name"
        try:
            with open(name_file) as f:
                found.append(f"{path} ({f.read().strip()})")
        except OSError:
            found.append(path)
    return ", ".join(found) if found else "none (no /dev/video* at all: is the camera plugged in?)"


def usb_serial(device_path: str) -> str | None:
    """The USB serial number of a V4L2 device, from sysfs (None where it has none)."""
    node = os.path.basename(device_path)
    interface = os.path.realpath(f"/sys/class/video4linux/{node}/device")
    try:
        with open(os.path.join(os.path.dirname(interface), "serial")) as f:
            return f.read().strip() or None
    except OSError:
        return None


def bgr_to_rgb(cv2, image: np.ndarray) -> np.ndarray:
    if image.dtype != np.uint8:
        raise CameraError(f"the source delivers {image.dtype} pixels; only 8-bit images are supported")
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2RGB)
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


class OpenCVCamera(CapturingCamera):
    """One OpenCV source behind the Camera interface, read by its own capture thread."""

    def __init__(self, name: str, source: int | str, width: int | None = None,
                 height: int | None = None, fps: float | None = None, loop: bool = False,
                 intrinsics: Intrinsics | None = None, fourcc: str | None = None,
                 start_timeout: float = 5.0):
        self.name, self.source, self.loop = name, source, loop
        self.requested = (width, height)
        self.width, self.height = width or 0, height or 0
        self.requested_fps = fps
        self.fps = float(fps or 0.0)
        self.intrinsics = intrinsics
        self.fourcc, self.start_timeout = fourcc, start_timeout
        self.is_device = isinstance(source, int) or str(source).startswith("/dev/")
        self.device_path = f"/dev/video{source}" if isinstance(source, int) else str(source)
        self.serial: str | None = None
        self.hint = DEVICE_HINT if self.is_device else f"Source: {source!r}"
        self._slot: LatestFrame | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._cap = None
        self._cv2 = None

    # --- the Camera interface -----------------------------------------------------------------
    def start(self) -> None:
        if self._thread is not None:
            return
        cv2 = self._cv2 = _import_cv2()
        cap = self._open(cv2)
        try:
            first = self._first_image(cv2, cap)
        except BaseException:
            cap.release()
            raise
        self._cap = cap
        self._slot = LatestFrame(self.name, self.fps, self.hint)
        self._slot.publish(first, time.monotonic())
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=f"camera-{self.name}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._thread is None:
            return
        self._stop.set()
        # The thread releases the capture itself (releasing it under a blocked read() can crash
        # the driver); a read stuck in a dead device is abandoned with the daemon thread.
        self._thread.join(timeout=max(1.0, 3 * (1.0 / self.fps)))
        self._thread = None
        if self._slot is not None:
            self._slot.fail("stopped")

    # --- opening --------------------------------------------------------------------------------
    def _open(self, cv2):
        source = self.source
        if self.is_device:
            api = cv2.CAP_V4L2 if sys.platform.startswith("linux") else cv2.CAP_ANY
            cap = cv2.VideoCapture(source if isinstance(source, int) else self.device_path, api)
            if not cap.isOpened():
                cap.release()
                exists = os.path.exists(self.device_path)
                why = ("exists but cannot be opened (busy, or no permission)" if exists
                       else "does not exist")
                raise CameraError(
                    f"camera {self.name!r}: {self.device_path} {why}. Video devices here: "
                    f"{video_devices()}. {DEVICE_HINT}")
            if self.fourcc:
                cap.set(cv2.CAP_PROP_FOURCC, cv2.VideoWriter_fourcc(*self.fourcc))
            if self.requested[0]:
                cap.set(cv2.CAP_PROP_FRAME_WIDTH, self.requested[0])
            if self.requested[1]:
                cap.set(cv2.CAP_PROP_FRAME_HEIGHT, self.requested[1])
            if self.requested_fps:
                cap.set(cv2.CAP_PROP_FPS, self.requested_fps)
            self.serial = usb_serial(self.device_path)
            reported = cap.get(cv2.CAP_PROP_FPS)
            # The health rule (two periods) needs the rate the device really runs at.
            self.fps = float(reported) if reported and reported > 0 else float(self.requested_fps or 30.0)
            return cap
        path = str(source)
        pattern = "%" in path
        if not pattern and not os.path.isfile(path):
            raise CameraError(f"camera {self.name!r}: no such video file {path!r}")
        cap = cv2.VideoCapture(path, cv2.CAP_IMAGES) if pattern else cv2.VideoCapture(path)
        if not cap.isOpened():
            cap.release()
            what = ("no image matches the pattern (the first must be numbered 0 or 1, e.g. "
                    "frames/0000.png for frames/%04d.png)" if pattern
                    else "OpenCV cannot decode it (check it with `ffprobe`)")
            raise CameraError(f"camera {self.name!r}: cannot open {path!r}: {what}")
        if not self.requested_fps:
            reported = cap.get(cv2.CAP_PROP_FPS)
            if not (reported and reported > 0):
                cap.release()
                raise CameraError(f"camera {self.name!r}: {path!r} has no frame rate of its own: "
                                  "pass fps= to pace it")
            self.fps = float(reported)
        return cap

    def _first_image(self, cv2, cap) -> np.ndarray:
        deadline = time.monotonic() + self.start_timeout
        while True:
            ok, raw = cap.read()
            if ok and raw is not None:
                break
            if not self.is_device or time.monotonic() > deadline:
                what = (f"opened, but no frame arrived within {self.start_timeout:.1f} s. {DEVICE_HINT}"
                        if self.is_device else f"{self.source!r} holds no readable frame")
                raise CameraError(f"camera {self.name!r}: {what}")
        image = bgr_to_rgb(cv2, raw)
        height, width = image.shape[:2]
        want_w, want_h = self.requested
        if (want_w and want_w != width) or (want_h and want_h != height):
            fix = (f"ask for a mode the device has (`v4l2-ctl -d {self.device_path} --list-formats-ext`)"
                   if self.is_device else "pass its own size (or None) and resize offline")
            raise CameraError(f"camera {self.name!r}: asked for {want_w}x{want_h}, "
                              f"{self.device_path if self.is_device else repr(self.source)} gives "
                              f"{width}x{height}: {fix}")
        if self.intrinsics is not None and (self.intrinsics.width, self.intrinsics.height) != (width, height):
            raise CameraError(f"camera {self.name!r}: the calibration passed is for "
                              f"{self.intrinsics.width}x{self.intrinsics.height} images, the camera "
                              f"gives {width}x{height}: calibrate at this size")
        self.width, self.height = width, height
        return image

    # --- the capture thread ---------------------------------------------------------------------
    def _run(self) -> None:
        cv2, cap, slot, period = self._cv2, self._cap, self._slot, 1.0 / self.fps
        due = time.monotonic() + period  # files: when the next frame is shown
        frames = 1
        try:
            while not self._stop.is_set():
                ok, raw = cap.read()
                if not ok or raw is None:
                    if self.is_device:
                        slot.fail(f"{self.device_path} stopped delivering frames (unplugged?)")
                        return
                    if self.loop and frames > 0:
                        cap.release()
                        cap = self._cap = self._open(cv2)
                        frames = 0
                        continue
                    # Like a live camera whose next frame never comes: the end is reported when
                    # that frame was due, not before, so the last frame is readable for a period.
                    self._stop.wait(max(0.0, due - time.monotonic()))
                    slot.fail(f"the file ended after {frames} frames (pass loop=True to replay it)")
                    return
                try:
                    image = bgr_to_rgb(cv2, raw)
                except CameraError as exc:
                    slot.fail(str(exc))
                    return
                if image.shape[:2] != (self.height, self.width):
                    slot.fail(f"the image size changed to {image.shape[1]}x{image.shape[0]} "
                              f"mid-stream (was {self.width}x{self.height})")
                    return
                if not self.is_device:
                    if self._stop.wait(max(0.0, due - time.monotonic())):
                        return
                    now = time.monotonic()
                    # Behind schedule (a loaded machine): restart the clock, never burst frames.
                    due = due + period if now - due < period else now + period
                frames += 1
                slot.publish(image, time.monotonic())
        except Exception as exc:  # a driver error must reach the reader, not die with the thread
            slot.fail(f"the capture thread failed: {exc!r}")
        finally:
            cap.release()
