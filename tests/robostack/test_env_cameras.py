"""Image observations in the env: lock-step frames from the robot server over ZeroMQ, real-time
frames from a camera server, and a camera that fails mid-episode truncating it by name."""

from __future__ import annotations

import contextlib
import dataclasses
import time

import numpy as np
import pytest

from hardware.cameras.base import CameraError
from robostack.cameras.server import CameraServer, CameraServerConfig
from robostack.env import make_env
from tasks import TaskConfig, make_task

PROPRIOCEPTION = ("tcp_position", "tcp_quaternion", "tcp_velocity", "gripper_width")


def test_lock_step_images_over_zeromq_with_their_times():
    env = make_env("pick_cube", config=TaskConfig(cameras=("front", "wrist"), observed_state=PROPRIOCEPTION))
    try:
        assert env.server_info["cameras"] == {"front": [128, 128], "wrist": [128, 128]}
        obs, info = env.reset(seed=2)
        assert env.observation_space.contains(obs)
        assert info["image_times"] == {"front": 0.0, "wrist": 0.0} == {c: info["time"] for c in ("front", "wrist")}
        previous = obs
        for _ in range(3):
            obs, _, _, _, info = env.step(np.array([1.0, 0.0, 0.0, -1.0], np.float32))
            assert env.observation_space.contains(obs)
            assert info["image_times"] == {"front": info["time"], "wrist": info["time"]}
            # fresh arrays each step, showing the arm moving
            assert obs["images/front"] is not previous["images/front"]
            assert np.abs(obs["images/front"].astype(int) - previous["images/front"]).mean() > 0.05
            previous = obs
        assert info["time"] == pytest.approx(0.3)
        assert obs["state"].shape == (14,)  # proprioception only; the cube is in the images
    finally:
        env.close()


def test_a_camera_the_server_does_not_render_is_refused_by_name():
    with pytest.raises(ValueError, match="no camera \\['side'\\]"):
        make_env("pick_cube", transport_kind="inprocess", config=TaskConfig(cameras=("side",)))
    with pytest.raises(ValueError, match="camera-server"):  # real time: frames come from there
        make_env("reach", transport_kind="zmq", clock="realtime", config=TaskConfig(cameras=("front",)))


@contextlib.contextmanager
def camera_server(endpoint: str, **options):
    # A real camera's size; the task (reach: front at 128 x 128) decides the crop and resize.
    server = CameraServer(CameraServerConfig(cameras="front=synthetic,640x480,30", endpoint=endpoint,
                                             task="reach", **options))
    server.start()
    try:
        yield server
    finally:
        server.stop()


def test_real_time_images_come_from_the_camera_server_and_a_dead_camera_truncates(tmp_path):
    endpoint = f"ipc://{tmp_path}/cams"
    with camera_server(endpoint) as cameras:
        env = make_env("reach", clock="realtime", camera_endpoint=endpoint,
                       config=dataclasses.replace(make_task("reach").config, cameras=("front",)))
        try:
            obs, info = env.reset(seed=0)
            assert obs["images/front"].shape == (128, 128, 3) and obs["images/front"].dtype == np.uint8
            times = [info["image_times"]["front"]]
            for _ in range(3):
                obs, _, terminated, truncated, info = env.step(np.zeros(3, np.float32))
                assert not truncated, info.get("truncated_reason")
                times.append(info["image_times"]["front"])
            assert all(b > a for a, b in zip(times, times[1:])), times  # a new frame each step
            assert abs(times[-1] - info["time"]) < 0.2  # the frame is about as old as the state
            cameras.stop()
            died = time.monotonic()
            for _ in range(5):
                obs, _, terminated, truncated, info = env.step(np.zeros(3, np.float32))
                if truncated:
                    break
            assert truncated and not terminated
            assert "camera 'front'" in info["truncated_reason"], info
            assert time.monotonic() - died < 0.6  # two 30 fps periods plus the steps' own 0.1 s
            with pytest.raises(CameraError, match="front"):
                env.reset(seed=1)  # no episode starts without its images
        finally:
            env.close()


def test_the_task_decides_each_cameras_crop_and_resize_on_the_camera_server():
    config = CameraServerConfig(cameras="front=synthetic,640x480,30;wrist=synthetic,640x480,30;"
                                        "side=synthetic,320x240,30", task="pick_cube",
                                resize="wrist=96x96")
    assert config.crops == {"front": (80, 0, 480, 480), "wrist": (80, 0, 480, 480)}  # centred squares
    assert config.resizes == {"front": (128, 128), "wrist": (96, 96)}  # --resize wins; side untouched
    with pytest.raises(ValueError, match="named like one of its cameras"):
        CameraServerConfig(cameras="side=synthetic,640x480,30", task="pick_cube")
