"""Intel RealSense (D400 family) color stream behind the Camera interface, via pyrealsense2.

Install: `pip install 'robostack[realsense]'`. The pyrealsense2 wheel links libusb-1.0 and its
import fails without it (`apt-get install libusb-1.0-0`); both are said in the error.

What the driver does beyond the SDK's own streaming:
- selects the camera by `serial` (an error lists the connected serials; with no serial there
  must be exactly one camera, so two cameras never swap places silently between runs);
- fixes the exposure when asked (`exposure` in microseconds; None keeps auto exposure). The
  color sensor takes exposure in units of 100 us (librealsense #1052), converted here and
  checked against the sensor's range;
- discards `warmup_frames` after every (re)start: the first frames of a stream come while auto
  exposure and white balance are still settling;
- stamps each frame with the host receipt time (`capture_time`) and the SDK's timestamp in
  seconds (`device_time`, the device clock or the SDK's global time per its timestamp domain),
  and counts gaps in the device's frame numbers as `dropped`;
- reconnects after an unplug: the capture thread sees frames stop, checks the device list, and
  while the camera is absent latest()/wait_next() raise a CameraError naming the unplug; it
  retries with backoff (0.1 s doubling to 2 s), and frames resume with seq still increasing
  (`reconnects` counts the recoveries).

Intrinsics come from the color stream profile (the factory calibration), distortion in the
SDK's order (k1, k2, p1, p2, k3), which is OpenCV's.
"""

from __future__ import annotations

import threading
import time

import numpy as np

from hardware.cameras.base import CameraError, Intrinsics
from hardware.cameras.capture import CapturingCamera, LatestFrame

INSTALL = "pip install 'robostack[realsense]'"
LIBUSB = "apt-get install libusb-1.0-0"
HINT = ("Check the USB3 cable and `rs-enumerate-devices` (unplugged? a USB2 port? the librealsense "
        "udev rules installed?)")
EXPOSURE_UNIT_US = 100.0  # the color sensor's exposure option counts 100 us steps


def import_pyrealsense2(camera: str):
    """`import pyrealsense2`, or a CameraError saying which install step is missing."""
    try:
        import pyrealsense2
    except (ImportError, OSError) as exc:
        if "libusb" in str(exc):
            raise CameraError(
                f"camera {camera!r}: pyrealsense2 is installed but cannot load libusb-1.0 ({exc}): "
                f"{LIBUSB} (sudo)") from None
        raise CameraError(f"camera {camera!r}: RealSense cameras need pyrealsense2: {INSTALL} "
                          f"(it also needs libusb-1.0: {LIBUSB}) [{exc}]") from None
    return pyrealsense2


class RealSenseCamera(CapturingCamera):
    """One RealSense color stream, read by its own capture thread. `sdk` may be a stand-in with
    pyrealsense2's calls, for tests; None imports pyrealsense2 at start()."""

    def __init__(self, name: str, serial: str | None = None, width: int = 640, height: int = 480,
                 fps: float = 30.0, exposure: float | None = None, warmup_frames: int = 30,
                 sdk=None, start_timeout: float = 5.0, max_backoff: float = 2.0):
        self.name, self.serial = name, serial
        self.width, self.height, self.fps = int(width), int(height), float(fps)
        self.exposure, self.warmup_frames = exposure, int(warmup_frames)
        self.intrinsics: Intrinsics | None = None
        self.model: str | None = None
        self.reconnects = 0
        self.start_timeout, self.max_backoff = start_timeout, max_backoff
        self._sdk = sdk
        self._ctx = None
        self._pipe = None
        self._slot: LatestFrame | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    # --- the Camera interface -----------------------------------------------------------------
    @property
    def device_dropped(self) -> int:
        """The part of `dropped` the device's frame numbers say it skipped."""
        return self._slot.device_dropped if self._slot else 0

    def start(self) -> None:
        if self._thread is not None:
            return
        rs = self._sdk = self._sdk or import_pyrealsense2(self.name)
        self._ctx = rs.context()
        self.serial = self._select()
        self._slot = LatestFrame(self.name, self.fps, HINT)
        self._pipe = self._open_pipeline()
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=f"camera-{self.name}", daemon=True)
        self._thread.start()
        try:
            self._slot.first(self.start_timeout)
        except CameraError:
            self.stop()
            raise

    def stop(self) -> None:
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join(timeout=max(1.0, 4.0 / self.fps))  # its waits are bounded by 2 periods
        self._thread = None
        self._close_pipeline()
        self._slot.fail("stopped")

    # --- the device -------------------------------------------------------------------------------
    def connected(self) -> dict[str, str]:
        """serial -> model name of every RealSense the SDK sees now."""
        rs = self._sdk
        found = {}
        for device in self._ctx.query_devices():
            found[device.get_info(rs.camera_info.serial_number)] = device.get_info(rs.camera_info.name)
        return found

    def _select(self) -> str:
        found = self.connected()
        listed = ", ".join(f"{serial} ({model})" for serial, model in found.items()) or "none"
        if self.serial is None:
            if len(found) != 1:
                why = "no RealSense is connected" if not found else f"{len(found)} are connected"
                raise CameraError(f"camera {self.name!r}: {why} (serials: {listed}); "
                                  + ("pass serial= to pick one" if found else HINT[0].lower() + HINT[1:]))
            serial = next(iter(found))
        else:
            serial = str(self.serial)
            if serial not in found:
                raise CameraError(f"camera {self.name!r}: no RealSense with serial {serial} is "
                                  f"connected; connected: {listed}. {HINT}")
        self.model = found[serial]
        return serial

    def _open_pipeline(self):
        """Start streaming color from the selected camera, fix its exposure, discard the warm-up.
        Raises CameraError (start()) / is retried (reconnect)."""
        rs = self._sdk
        pipe = rs.pipeline(self._ctx)
        config = rs.config()
        config.enable_device(self.serial)
        config.enable_stream(rs.stream.color, self.width, self.height, rs.format.rgb8, int(self.fps))
        try:
            profile = pipe.start(config)
        except RuntimeError as exc:
            raise CameraError(
                f"camera {self.name!r}: {self.model} {self.serial} cannot stream color "
                f"{self.width}x{self.height} rgb8 at {self.fps:g} fps ({exc}): pick a mode "
                f"`rs-enumerate-devices -s {self.serial}` lists (USB2 ports offer fewer)") from None
        try:
            video = profile.get_stream(rs.stream.color).as_video_stream_profile()
            k = video.get_intrinsics()
            coeffs = tuple(float(c) for c in k.coeffs)
            self.intrinsics = Intrinsics(width=int(k.width), height=int(k.height), fx=float(k.fx),
                                         fy=float(k.fy), cx=float(k.ppx), cy=float(k.ppy),
                                         distortion=coeffs if any(coeffs) else ())
            self._set_exposure(profile.get_device().first_color_sensor())
            wait_ms = int(max(1000, 10_000 / self.fps))  # the first frames of a stream come late
            for _ in range(self.warmup_frames):
                pipe.wait_for_frames(wait_ms)
        except BaseException as exc:
            try:
                pipe.stop()
            except RuntimeError:
                pass
            if isinstance(exc, RuntimeError) and not isinstance(exc, CameraError):
                raise CameraError(f"camera {self.name!r}: {self.serial} started but failed during "
                                  f"set-up or warm-up ({exc}). {HINT}") from None
            raise
        return pipe

    def _set_exposure(self, sensor) -> None:
        rs = self._sdk
        if self.exposure is None:
            if sensor.supports(rs.option.enable_auto_exposure):
                sensor.set_option(rs.option.enable_auto_exposure, 1)
            return
        if not sensor.supports(rs.option.exposure):
            raise CameraError(f"camera {self.name!r}: the {self.model} color sensor has no manual "
                              "exposure: pass exposure=None (auto)")
        span = sensor.get_option_range(rs.option.exposure)
        value = round(self.exposure / EXPOSURE_UNIT_US)
        if not span.min <= value <= span.max:
            raise CameraError(
                f"camera {self.name!r}: exposure {self.exposure:g} us is outside the color sensor's "
                f"range {span.min * EXPOSURE_UNIT_US:g}..{span.max * EXPOSURE_UNIT_US:g} us "
                f"(steps of {EXPOSURE_UNIT_US:g} us)")
        sensor.set_option(rs.option.enable_auto_exposure, 0)  # a manual value only holds with AE off
        sensor.set_option(rs.option.exposure, value)

    def _present(self) -> bool:
        try:
            return self.serial in self.connected()
        except RuntimeError:  # the device list can fail mid-replug: ask again later
            return False

    def _close_pipeline(self) -> None:
        pipe, self._pipe = self._pipe, None
        if pipe is not None:
            try:
                pipe.stop()
            except RuntimeError:  # already gone with the device
                pass

    # --- the capture thread ---------------------------------------------------------------------
    def _run(self) -> None:
        slot = self._slot
        # Wake at least every two periods: a stream that stops is checked against the device
        # list at once, so an unplug is named (not just "no frame") about when it is reported.
        wait_ms = max(1, int(2000 / self.fps))
        backoff = 0.1
        try:
            while not self._stop.is_set():
                if self._pipe is None:
                    if self._stop.wait(backoff):
                        return
                    backoff = min(2 * backoff, self.max_backoff)
                    if not self._present():
                        continue
                    try:
                        self._pipe = self._open_pipeline()
                    except CameraError as exc:
                        slot.down(f"{self.serial} is back but did not restart ({exc}); retrying")
                        continue
                    slot.restart_numbering()
                    self.reconnects += 1
                    backoff = 0.1
                    continue
                try:
                    ok, frames = self._pipe.try_wait_for_frames(wait_ms)
                except RuntimeError:
                    ok, frames = False, None
                if not ok:
                    if not self._present():
                        slot.down(f"{self.model} {self.serial} was unplugged; reconnecting "
                                  f"(retrying every <= {self.max_backoff:g} s)")
                        self._close_pipeline()
                    continue
                color = frames.get_color_frame()
                if not color:
                    continue
                received = time.monotonic()
                # Copy: the SDK reuses the frame's buffer once the frame is released.
                image = np.array(np.asanyarray(color.get_data()), dtype=np.uint8, copy=True)
                slot.publish(image, received, device_time=color.get_timestamp() / 1000.0,
                             device_number=int(color.get_frame_number()))
        except Exception as exc:  # an SDK error must reach the reader, not die with the thread
            slot.fail(f"the capture thread failed: {exc!r}")
