"""Cameras: OpenCVCamera on real files (an image sequence, a video) written with cv2 in tmp_path,
RealSenseCamera against a fake of the SDK (fake_realsense.py); real threads and clocks
throughout. Frame rates are low (4-15 fps) so that timing margins survive a loaded machine."""

from __future__ import annotations

import builtins
import sys
import time

import cv2
import numpy as np
import pytest

from fake_realsense import FakeDevice, FakeRealSense, frame_number
from hardware.cameras import Camera, CameraError, CameraTimeout, Intrinsics, StaleFrame
from hardware.cameras.capture import LatestFrame
from hardware.cameras.opencv_camera import OpenCVCamera
from hardware.cameras.realsense_camera import RealSenseCamera

MARGIN = 0.15  # s: how late a thread may be scheduled on a loaded 2-core machine
BGR_BLUE = (255, 0, 0)  # OpenCV's order: this is pure blue, RGB (0, 0, 255)


def write_sequence(folder, count, size=(64, 48)):
    """count PNGs (lossless), each pure blue with its index (1...) in pixel (0, 0)'s blue byte."""
    width, height = size
    folder.mkdir(exist_ok=True)
    for i in range(1, count + 1):
        image = np.zeros((height, width, 3), np.uint8)
        image[:] = BGR_BLUE
        image[0, 0] = (i, 0, 0)
        cv2.imwrite(str(folder / f"{i:04d}.png"), image)
    return str(folder / "%04d.png")


def write_video(path, count, fps=10, size=(64, 48), bgr=(0, 0, 255)):
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, size)
    assert writer.isOpened()
    for _ in range(count):
        writer.write(np.full((size[1], size[0], 3), bgr, np.uint8))
    writer.release()
    return str(path)


def read_until_dead(cam, timeout=1.0):
    frames = []
    while True:
        try:
            frames.append(cam.wait_next(timeout=timeout))
        except CameraTimeout:
            raise
        except CameraError as exc:
            return frames, exc, time.monotonic()


# --- the shared capture helper: the health rule and the waits -----------------------------
def test_a_silent_camera_turns_dead_after_two_periods_and_alive_with_its_next_frame():
    clock = [100.0]
    slot = LatestFrame("cam", fps=10.0, hint="check it", clock=lambda: clock[0])
    image = np.zeros((2, 2, 3), np.uint8)
    slot.publish(image, capture_time=100.0)
    clock[0] = 100.199
    assert slot.latest(max_age=1.0).seq == 1
    clock[0] = 100.201
    with pytest.raises(CameraError, match=r"'cam' delivered no frame for 0.201 s .* check it"):
        slot.latest(max_age=1.0)
    slot.publish(image, capture_time=100.201)
    assert slot.latest(max_age=1.0).seq == 2
    slot.down("unplugged")
    with pytest.raises(CameraError, match="'cam': unplugged"):
        slot.latest(max_age=1.0)
    slot.publish(image, capture_time=100.25)  # the next frame clears it
    assert slot.latest(max_age=1.0).seq == 3
    slot.fail("the file ended")
    slot.fail("stopped")
    with pytest.raises(CameraError, match="the file ended"):  # the first reason is kept
        slot.latest(max_age=1.0)
    with pytest.raises(ValueError, match=r"\(H, W, 3\) uint8"):
        slot.publish(np.zeros((2, 2), np.uint8), capture_time=101.0)


def test_wait_next_reports_a_silent_camera_at_two_periods_not_at_its_timeout():
    slot = LatestFrame("cam", fps=10.0, hint="check it")
    slot.publish(np.zeros((2, 2, 3), np.uint8), capture_time=time.monotonic())
    slot.wait_next(timeout=0.0)  # takes frame 1
    start = time.monotonic()
    with pytest.raises(CameraError, match="delivered no frame"):
        slot.wait_next(timeout=5.0)  # nothing will ever wake it but its own deadline
    assert 0.15 <= time.monotonic() - start <= 0.2 + MARGIN


# --- OpenCV: files through the same class a webcam uses --------------------------------------
def test_image_sequence_frames_are_numbered_timed_rgb_and_the_end_is_reported_in_two_periods(tmp_path):
    count, fps = 12, 10.0
    cam = OpenCVCamera("seq", write_sequence(tmp_path, count), fps=fps)
    assert isinstance(cam, Camera)
    with cam:
        assert (cam.width, cam.height, cam.fps, cam.intrinsics, cam.serial) == (64, 48, 10.0, None, None)
        frames, error, reported = read_until_dead(cam)
        with pytest.raises(CameraError, match="ended"):
            cam.latest(max_age=10.0)
    seqs = [f.seq for f in frames]
    assert seqs == sorted(set(seqs)) and seqs[-1] == count
    assert len(frames) + cam.dropped == count  # a frame not seen is counted, never lost silently
    assert len(frames) >= count - 2
    for f in frames:
        assert f.image[0, 0, 2] == f.seq  # seq i is file i: in order, none repeated
        assert f.image.shape == (48, 64, 3) and f.image.dtype == np.uint8 and f.image.flags.c_contiguous
        assert tuple(f.image[10, 10]) == (0, 0, 255)  # BGR file -> RGB frame
        assert f.camera == "seq" and f.device_time is None
    times = np.array([f.capture_time for f in frames])
    assert np.all(np.diff(times) > 0)
    spacing = (times[-1] - times[0]) / (seqs[-1] - seqs[0])
    assert spacing == pytest.approx(1 / fps, rel=0.2)  # paced like a live camera
    assert "ended" in str(error) and "loop=True" in str(error) and "'seq'" in str(error)
    silent = reported - frames[-1].capture_time
    assert 0.9 / fps <= silent <= 2 / fps + MARGIN, silent  # when the next frame was due


def test_video_file_uses_its_own_rate_and_size_and_loops(tmp_path):
    path = write_video(tmp_path / "clip.avi", 6, fps=10)
    with OpenCVCamera("clip", path) as cam:
        assert (cam.width, cam.height, cam.fps) == (64, 48, 10.0)
        frame = cam.wait_next(timeout=1.0)
        red, green, blue = (int(v) for v in frame.image[20, 20])
        assert red > 240 and green < 15 and blue < 15  # JPEG: near pure red, in RGB order
        frames, error, _ = read_until_dead(cam)
        assert frame.seq + len(frames) + cam.dropped - (1 if cam.dropped else 0) >= 5
        assert "ended" in str(error)
    with OpenCVCamera("clip", path, loop=True) as cam:
        seqs = [cam.wait_next(timeout=1.0).seq for _ in range(9)]  # past the end of 6 frames
        assert seqs == sorted(set(seqs)) and seqs[-1] >= 9


def test_stale_frame_is_rejected_with_its_age_and_wait_next_times_out(tmp_path):
    fps = 4.0  # a frame every 0.25 s; dead after 0.5 s without one
    with OpenCVCamera("slow", write_sequence(tmp_path, 20), fps=fps) as cam:
        frame = cam.wait_next(timeout=1.0)
        time.sleep(0.1)
        with pytest.raises(StaleFrame) as stale:
            cam.latest(max_age=0.05)
        assert stale.value.frame.seq == frame.seq and stale.value.age >= 0.1
        assert "max_age" in str(stale.value) and "'slow'" in str(stale.value)
        assert cam.latest(max_age=1.0).seq == frame.seq  # fresh enough for a looser bound
        start = time.monotonic()
        with pytest.raises(CameraTimeout):
            cam.wait_next(timeout=0.05)  # the next frame is ~0.15 s away
        assert 0.05 <= time.monotonic() - start <= 0.05 + MARGIN
        assert cam.wait_next(timeout=0.0, after_seq=frame.seq - 1).seq >= frame.seq  # no wait
        nxt = cam.wait_next(timeout=1.0)  # default: after the last frame returned
        assert nxt.seq > frame.seq
    # A source that stopped: its last frame goes stale first, then the end is reported.
    with OpenCVCamera("short", write_sequence(tmp_path / "short", 2), fps=fps) as cam:
        while (last := cam.wait_next(timeout=1.0)).seq < 2:
            pass
        time.sleep(0.1)
        with pytest.raises(StaleFrame) as stale:
            cam.latest(max_age=0.05)
        assert stale.value.frame.seq == 2 and 0.1 <= stale.value.age < 2 / fps
        time.sleep(2 / fps + MARGIN - (time.monotonic() - last.capture_time))
        with pytest.raises(CameraError, match="ended"):
            cam.latest(max_age=1.0)


def test_opencv_errors_name_the_problem_and_the_fix(tmp_path):
    with pytest.raises(CameraError, match=r"/dev/video7 does not exist\. Video devices here: "):
        OpenCVCamera("wrist", 7).start()
    with pytest.raises(CameraError, match="no such video file"):
        OpenCVCamera("f", str(tmp_path / "missing.mp4")).start()
    with pytest.raises(CameraError, match="no image matches the pattern"):
        OpenCVCamera("f", str(tmp_path / "none_%04d.png"), fps=10).start()
    (tmp_path / "junk.mp4").write_bytes(b"not a video")
    with pytest.raises(CameraError, match="cannot"):
        OpenCVCamera("f", str(tmp_path / "junk.mp4")).start()
    pattern = write_sequence(tmp_path, 3)
    with pytest.raises(CameraError, match="asked for 640x480, .* gives 64x48"):
        OpenCVCamera("f", pattern, width=640, height=480, fps=10).start()
    with pytest.raises(CameraError, match="has no frame rate of its own: pass fps="):
        OpenCVCamera("f", pattern).start()
    calibration = Intrinsics(width=640, height=480, fx=500, fy=500, cx=320, cy=240)
    with pytest.raises(CameraError, match="calibration passed is for 640x480"):
        OpenCVCamera("f", pattern, fps=10, intrinsics=calibration).start()
    cam = OpenCVCamera("f", pattern, fps=10)
    with pytest.raises(CameraError, match="not started"):
        cam.latest(max_age=1.0)
    cam.start()
    cam.stop()
    cam.stop()  # idempotent
    with pytest.raises(CameraError, match="stopped"):
        cam.latest(max_age=1.0)


# --- RealSense against the fake SDK --------------------------------------------------------
FPS = 15  # the fake's 64x48 modes: 15 and 30 fps


@pytest.fixture
def sdk(monkeypatch):
    fake = FakeRealSense([FakeDevice("123", color=(10, 200, 30)),
                          FakeDevice("456", name="Intel RealSense D415", color=(200, 10, 30))])
    monkeypatch.setitem(sys.modules, "pyrealsense2", fake)  # the driver's own `import` finds it
    return fake


def realsense(**options):
    options = {"width": 64, "height": 48, "fps": FPS, "warmup_frames": 5, **options}
    return RealSenseCamera("wrist", **options)


def test_realsense_selects_by_serial_and_lists_the_connected_ones(sdk):
    with realsense(serial="456") as cam:
        assert isinstance(cam, Camera)
        assert cam.serial == "456" and cam.model == "Intel RealSense D415"
        assert tuple(cam.latest(max_age=1.0).image[10, 10]) == (200, 10, 30)
    with pytest.raises(CameraError, match=r"no RealSense with serial 999 .*123 \(Intel RealSense D435\), "
                                          r"456 \(Intel RealSense D415\)"):
        realsense(serial="999").start()
    with pytest.raises(CameraError, match="2 are connected .* pass serial="):
        realsense().start()
    sdk.devices[1].unplug()
    with realsense() as cam:  # exactly one: taken without a serial
        assert cam.serial == "123"
    sdk.devices[0].unplug()
    with pytest.raises(CameraError, match="no RealSense is connected .*rs-enumerate-devices"):
        realsense().start()


def test_realsense_discards_warmup_fixes_exposure_and_reports_intrinsics(sdk):
    device = sdk.devices[0]
    with realsense(serial="123", exposure=5000) as cam:
        first = cam.wait_next(timeout=1.0)
        assert device.delivered[:5] == [1, 2, 3, 4, 5]
        assert frame_number(first.image) == 6 and first.seq == 1  # warm-up frames never published
        assert device.options["option.enable_auto_exposure"] == 0
        assert device.options["option.exposure"] == 50  # 5000 us in the sensor's 100 us units
        assert cam.intrinsics == Intrinsics(width=64, height=48, fx=57.6, fy=57.6, cx=31.5, cy=24.25)
    with realsense(serial="123") as cam:
        assert device.options["option.enable_auto_exposure"] == 1  # exposure None: auto
    with pytest.raises(CameraError, match=r"exposure 2e\+06 us is outside .* range 100\.\.1e\+06 us"):
        realsense(serial="123", exposure=2e6).start()
    with pytest.raises(CameraError, match="cannot stream color 640x360 rgb8 at 15 fps"):
        realsense(serial="123", width=640, height=360).start()


def test_realsense_timestamps_monotonic_and_dropped_frames_counted_from_frame_numbers(sdk):
    device = sdk.devices[0]
    with realsense(serial="123") as cam:
        frames = [cam.wait_next(timeout=1.0) for _ in range(4)]
        device.drop(3)
        # Three lost frames are four periods of silence: reported dead (the two-period rule),
        # then alive again with the next frame.
        reported_dead = False
        deadline = time.monotonic() + 3.0
        while len(frames) < 8 and time.monotonic() < deadline:
            try:
                frames.append(cam.wait_next(timeout=1.0))
            except CameraTimeout:
                raise
            except CameraError as exc:
                assert "delivered no frame for" in str(exc)
                reported_dead = True
                time.sleep(0.01)
        assert len(frames) == 8 and reported_dead
    assert [f.seq for f in frames] == sorted({f.seq for f in frames})
    assert np.all(np.diff([f.capture_time for f in frames]) > 0)
    device_times = np.array([f.device_time for f in frames])
    numbers = np.array([frame_number(f.image) for f in frames])
    assert np.all(np.diff(device_times) > 0)
    # The device clock: one period per frame number, whatever the host scheduling did.
    np.testing.assert_allclose(np.diff(device_times), np.diff(numbers) / FPS, atol=1e-6)
    assert cam.device_dropped == 3 and cam.dropped >= 3
    assert numbers[-1] - numbers[0] + 1 - len(frames) == cam.dropped  # every gap accounted for
    assert abs((frames[0].device_time - frames[0].capture_time) - device.clock_offset) < MARGIN


def test_realsense_frames_a_slow_reader_never_saw_are_counted_dropped(sdk):
    with realsense(serial="123") as cam:
        first = cam.latest(max_age=1.0)
        dropped = cam.dropped
        time.sleep(0.1)
        second = cam.latest(max_age=1.0)
        time.sleep(0.2)
        third = cam.latest(max_age=1.0)
        assert third.seq - first.seq >= 3  # 0.3 s at 15 fps: about 4 frames newer
        # Every frame between two reads was overwritten unread; the device itself lost none.
        assert cam.dropped - dropped == third.seq - first.seq - 2
        assert cam.device_dropped == 0 and first.seq < second.seq < third.seq


def test_realsense_unplug_is_reported_within_two_periods_and_frames_resume_after_replug(sdk):
    device = sdk.devices[0]
    with realsense(serial="123") as cam:
        before = cam.wait_next(timeout=1.0)
        last = cam.wait_next(timeout=1.0)
        device.unplug()
        frames, error, reported = read_until_dead(cam, timeout=2.0)
        last = frames[-1] if frames else last
        silent = reported - last.capture_time
        assert silent <= 2 / FPS + MARGIN, silent
        assert "'wrist'" in str(error)
        deadline = time.monotonic() + 2.0
        while "unplugged" not in str(error) and time.monotonic() < deadline:
            time.sleep(0.02)
            with pytest.raises(CameraError) as raised:
                cam.latest(max_age=1.0)
            error = raised.value
        assert "123 was unplugged; reconnecting" in str(error)
        device.replug()
        deadline = time.monotonic() + 5.0
        while True:
            try:
                resumed = cam.wait_next(timeout=0.5)
                break
            except CameraError:
                assert time.monotonic() < deadline, "frames did not resume after the replug"
        assert cam.reconnects == 1
        assert resumed.seq > last.seq > before.seq
        assert frame_number(resumed.image) == 6  # a fresh stream, its warm-up discarded again
        assert cam.device_dropped == 0  # numbering restarted with the stream: no gap counted
        after = cam.wait_next(timeout=1.0)
        assert after.seq == resumed.seq + 1 and after.capture_time > resumed.capture_time


def test_realsense_missing_sdk_or_libusb_names_the_install_step(monkeypatch):
    monkeypatch.setitem(sys.modules, "pyrealsense2", None)  # import pyrealsense2 -> ImportError
    with pytest.raises(CameraError, match=r"pip install 'robostack\[realsense\]'.*libusb-1.0-0"):
        RealSenseCamera("wrist").start()
    monkeypatch.delitem(sys.modules, "pyrealsense2")
    real_import = builtins.__import__

    def no_libusb(name, *args, **kwargs):
        if name == "pyrealsense2":
            raise OSError("libusb-1.0.so.0: cannot open shared object file: No such file or directory")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_libusb)
    with pytest.raises(CameraError, match=r"cannot load libusb-1.0 .*apt-get install libusb-1.0-0"):
        RealSenseCamera("wrist").start()
