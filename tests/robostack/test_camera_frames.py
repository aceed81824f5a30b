"""LiveFrames (robostack/env/camera_frames.py), the env's real-time images, against a real
in-process CameraServer with synthetic cameras on an ipc socket in tmp_path."""

from __future__ import annotations

import contextlib
import threading
import time

import numpy as np
import pytest

from hardware.cameras.base import CameraError, CameraTimeout, StaleFrame
from robostack.cameras.server import CameraServer, CameraServerConfig
from robostack.cameras.synthetic import pattern_image
from robostack.env.camera_frames import LiveFrames
from robostack.transport.endpoints import check_ipc_length

# A dead camera is noticed within two frame periods (the contract); the tests allow this much
# more for the scheduling stalls of a loaded 2-core CI machine, far below the other ways
# to notice (max_age, a first-frame timeout), which the tests tell apart by error type.
SCHEDULING_SLACK = 0.25  # s


def _endpoint(tmp_path) -> str:
    endpoint = f"ipc://{tmp_path}/cams"
    check_ipc_length(endpoint)
    return endpoint


@contextlib.contextmanager
def serving(endpoint: str, cameras: str, **config):
    server = CameraServer(CameraServerConfig(cameras=cameras, endpoint=endpoint, **config))
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _first_read(frames: LiveFrames):
    # The first frames: the SUB socket connects while read() waits (within first_timeout).
    return frames.read()


def test_two_cameras_newest_frames_with_their_shapes_and_increasing_times(tmp_path):
    endpoint = _endpoint(tmp_path)
    with serving(endpoint, "front=synthetic,64x48,30;wrist=synthetic,32x32,30"), \
            LiveFrames(endpoint, {"front": (48, 64), "wrist": (32, 32)}, max_age=0.5,
                       first_timeout=3.0) as frames:
        reads = [_first_read(frames)]
        for _ in range(5):
            time.sleep(0.1)  # three 30 fps periods: a new frame each read (or a dead camera)
            reads.append(frames.read())
        done = time.monotonic()
        for name, shape in (("front", (48, 64, 3)), ("wrist", (32, 32, 3))):
            images = [r[0][name] for r in reads]
            times = [r[1][name] for r in reads]
            assert all(i.shape == shape and i.dtype == np.uint8 for i in images)
            assert all(b > a for a, b in zip(times, times[1:])), times
            assert times[-1] < done and done - times[0] < 2.0
        # Real pixels: raw over ipc is the synthetic pattern at its scroll position, exactly.
        pattern = pattern_image(64, 48)
        last = reads[-1][0]["front"]
        assert any(np.array_equal(last, pattern[:, s:s + 64]) for s in range(0, 64, 4))
        # The caller may keep and write into what it got: the next read is unaffected.
        kept = reads[-1][0]["front"]
        kept[:] = 0
        again, _ = frames.read()
        assert again["front"].any() and not np.shares_memory(again["front"], kept)
        stats = frames.stats()
        assert stats["rejected"] == {} and stats["cameras"]["front"]["received"] >= 6
    frames.close()  # idempotent, after the context manager's close
    with pytest.raises(CameraError, match="closed"):
        frames.read()


def test_wrong_image_size_names_the_camera_and_the_resize_to_use(tmp_path):
    endpoint = _endpoint(tmp_path)
    with serving(endpoint, "front=synthetic,64x48,30"), \
            LiveFrames(endpoint, {"front": (32, 48)}, max_age=0.5, first_timeout=3.0) as frames:
        start = time.monotonic()
        with pytest.raises(CameraError) as info:
            frames.read()
        elapsed = time.monotonic() - start
    message = str(info.value)
    assert not isinstance(info.value, CameraTimeout)  # the frame came; its size is wrong
    assert "camera 'front' delivers 64x48" in message and "observes 48x32" in message, message
    assert "--resize front=48x32" in message, message  # width x height, as --resize takes it
    assert elapsed < 1.0, elapsed
    assert frames.stats()["rejected"] == {}  # not silently dropped by the stream


def test_camera_that_goes_silent_is_an_error_within_two_periods(tmp_path):
    endpoint = _endpoint(tmp_path)
    fps = 20.0
    period = 1.0 / fps
    with serving(endpoint, f"front=synthetic,32x32,{fps}", synthetic_stop_after=1.0), \
            LiveFrames(endpoint, {"front": (32, 32)}, max_age=0.5, first_timeout=3.0) as frames:
        last = _first_read(frames)[1]["front"]
        deadline = time.monotonic() + 4.0
        while time.monotonic() < deadline:
            try:
                last = frames.read()[1]["front"]
            except CameraError as exc:
                detected, error = time.monotonic(), exc
                break
            time.sleep(0.002)
        else:
            pytest.fail("the camera went silent but read() raised nothing")
    assert "'front'" in str(error) and not isinstance(error, StaleFrame), error
    silent = detected - last
    # Two periods is the rule (not earlier); the slack is for a loaded 2-core machine.
    assert 1.8 * period <= silent < 2 * period + SCHEDULING_SLACK, silent


def test_server_that_stops_is_an_error_within_two_periods(tmp_path):
    endpoint = _endpoint(tmp_path)
    period = 1.0 / 30.0
    server = CameraServer(CameraServerConfig(cameras="front=synthetic,32x32,30", endpoint=endpoint))
    server.start()
    try:
        with LiveFrames(endpoint, {"front": (32, 32)}, max_age=0.5, first_timeout=3.0) as frames:
            _first_read(frames)
            server.stop()
            stopped = time.monotonic()
            while True:
                try:
                    frames.read()
                except CameraError as exc:
                    assert "'front'" in str(exc) and "no frame arrived" in str(exc), exc
                    break
                assert time.monotonic() - stopped < 2.0
                time.sleep(0.002)
            assert time.monotonic() - stopped < 2 * period + SCHEDULING_SLACK
    finally:
        server.stop()


def test_absent_cameras_share_one_first_frame_deadline(tmp_path):
    endpoint = _endpoint(tmp_path)  # nothing serves here
    first_timeout = 0.8
    with LiveFrames(endpoint, {"left": (32, 32), "right": (32, 32)}, max_age=0.5,
                    first_timeout=first_timeout) as frames:
        start = time.monotonic()
        with pytest.raises(CameraTimeout) as info:
            frames.read()
        elapsed = time.monotonic() - start
    # Once, not once per camera (2 x 0.8 s = 1.6 s).
    assert first_timeout - 0.02 <= elapsed < first_timeout + 0.3, elapsed
    assert "'left', 'right'" in str(info.value) and "0.8 s" in str(info.value), info.value
    # The first camera's server comes up late (0.45 s), the second camera never sends: the
    # error still comes at the one deadline, not 0.45 s + first_timeout (a deadline per camera).
    endpoint2 = f"{endpoint}2"
    server = CameraServer(CameraServerConfig(cameras="front=synthetic,32x32,30", endpoint=endpoint2))
    starter = threading.Timer(0.45, server.start)
    try:
        with LiveFrames(endpoint2, {"front": (32, 32), "ghost": (32, 32)}, max_age=0.5,
                        first_timeout=first_timeout) as frames:
            start = time.monotonic()
            starter.start()
            with pytest.raises(CameraTimeout) as info:
                frames.read()
            elapsed = time.monotonic() - start
            assert first_timeout - 0.02 <= elapsed < first_timeout + 0.3, elapsed
            assert "'ghost'" in str(info.value) and "'front'" not in str(info.value), info.value
            assert frames.stats()["cameras"]["front"]["received"] > 0  # it came, in time
    finally:
        starter.join()
        server.stop()


def test_frame_older_than_max_age_is_a_stale_frame(tmp_path):
    endpoint = _endpoint(tmp_path)
    with serving(endpoint, "front=synthetic,32x32,30"), \
            LiveFrames(endpoint, {"front": (32, 32)}, max_age=1e-6, first_timeout=3.0) as frames:
        # 1 us: below what capture -> publish -> receive can take.
        with pytest.raises(StaleFrame) as info:
            frames.read()
    assert isinstance(info.value, CameraError)
    assert "'front'" in str(info.value) and "max_age" in str(info.value), info.value
    assert info.value.age > 1e-6 and info.value.frame.image.shape == (32, 32, 3)


def test_bad_arguments_are_refused_with_the_expected_form(tmp_path):
    endpoint = _endpoint(tmp_path)
    with pytest.raises(ValueError, match="cameras the task observes"):
        LiveFrames(endpoint, {}, max_age=0.1)
    with pytest.raises(ValueError, match=r"'front'.*\(height, width\)"):
        LiveFrames(endpoint, {"front": (128,)}, max_age=0.1)
    with pytest.raises(ValueError, match="first_timeout"):
        LiveFrames(endpoint, {"front": (128, 128)}, max_age=0.1, first_timeout=0.0)
