"""Lock-step images: the robot server renders the cameras a request asks for from the state in
the same reply (robostack/robot/images.py), and refuses a bad or impossible ask by name."""

import numpy as np
import pytest

from robostack.robot.server import RobotServer, RobotServerConfig

TARGET = {"target_position": np.array([0.55, 0.1, 0.2]),
          "target_quaternion": np.array([0.0, 1.0, 0.0, 0.0])}


def server(clock="lockstep"):
    return RobotServer(RobotServerConfig(task="pick_cube", clock=clock, seed=3))


def ok(reply):
    kind, meta, arrays = reply
    assert kind != "error", meta
    return meta, arrays


def test_hello_offers_the_scenes_cameras_at_their_sizes():
    meta, _ = ok(server().handle("hello", {}, {}))
    assert meta["cameras"] == {"front": [128, 128], "wrist": [128, 128]}


def test_a_step_renders_the_state_of_its_own_reply():
    """The image in step n's reply equals the image of that very state asked for afterwards
    (a 'state' request moves nothing), and differs from the state before the step: it never lags."""
    moving = server()
    ok(moving.handle("reset", {"seed": 5}, {}))
    still = server()  # the same run, asking for images only after each step
    ok(still.handle("reset", {"seed": 5}, {}))
    _, before = ok(still.handle("state", {"images": ["front", "wrist"]}, {}))
    for _ in range(3):
        meta, step_reply = ok(moving.handle("step", {"images": ["front", "wrist"]}, dict(TARGET)))
        ok(still.handle("step", {}, dict(TARGET)))
        _, after = ok(still.handle("state", {"images": ["front", "wrist"]}, {}))
        for key in ("images/front", "images/wrist"):
            image = step_reply[key]
            assert image.shape == (128, 128, 3) and image.dtype == np.uint8
            assert np.array_equal(image, after[key]), f"{key}: the step's image is not its state's"
            assert np.abs(image.astype(int) - before[key]).mean() > 0.05, f"{key}: the arm moved"
        np.testing.assert_array_equal(step_reply["tcp_position"], after["tcp_position"])
        assert meta["image_time"] == meta["time"]
        before = after


def test_no_images_unless_asked_and_only_those_asked():
    s = server()
    _, arrays = ok(s.handle("reset", {}, {}))
    assert not [k for k in arrays if k.startswith("images/")]
    meta, arrays = ok(s.handle("reset", {"images": ["wrist"]}, {}))
    assert [k for k in arrays if k.startswith("images/")] == ["images/wrist"]
    assert "image_time" in meta


@pytest.mark.parametrize("images, says", [
    (["side"], "no camera ['side']"),
    ("front", "list of at most 8"),
    ([1, 2], "list of at most 8"),
    (["front"] * 9, "list of at most 8"),
    ([{"a": 1}], "list of at most 8"),
])
def test_a_bad_images_request_is_refused_by_name_before_anything_moves(images, says):
    s = server()
    ok(s.handle("reset", {"seed": 1}, {}))
    _, start = ok(s.handle("state", {}, {}))
    kind, meta, _ = s.handle("step", {"images": images}, dict(TARGET))
    assert kind == "error" and says in meta["error"], meta
    _, now = ok(s.handle("state", {}, {}))
    np.testing.assert_array_equal(start["tcp_position"], now["tcp_position"])  # no step was run
    assert "front" in meta["error"] or says != "no camera ['side']"  # names the valid ones
    ok(s.handle("step", {"images": ["front"]}, dict(TARGET)))  # and goes on serving


def test_a_real_time_server_points_to_the_camera_server():
    s = server("realtime")
    meta, _ = ok(s.handle("hello", {}, {}))
    assert meta["cameras"] == {}
    kind, meta, _ = s.handle("state", {"images": ["front"]}, {})
    assert kind == "error" and "camera-server" in meta["error"]
