"""How `--backend ur` is chosen and refused: the robot server's options, the mirror-only
commands' refusal, a task a real arm cannot observe, and make_backend building the UR backend
(against the test-only fake of ur_rtde, ROBOSTACK_UR_SDK)."""

from __future__ import annotations

import pytest

import fake_ur_rtde
from hardware import ur
from robostack.config import check_backend
from robostack.robot.backends import make_backend
from robostack.robot.server import RobotServerConfig
from tasks import make_task


def test_the_robot_server_takes_ur_in_real_time_only():
    config = RobotServerConfig(backend="ur", clock="realtime")
    assert (config.ur_host, config.ur_frequency) == ("127.0.0.1", 500.0)
    with pytest.raises(ValueError, match="real arm.*--clock realtime"):
        RobotServerConfig(backend="ur")
    with pytest.raises(ValueError, match="robot-server --backend ur --clock realtime.*--endpoint"):
        check_backend("ur")
    assert check_backend("ur", real_arms=True) == "ur"


def test_make_backend_builds_the_ur_with_the_configs_options(monkeypatch):
    monkeypatch.setenv(ur.SDK_ENV, "fake_ur_rtde")
    fake_ur_rtde.reset_arm()
    with pytest.raises(ValueError, match=r"pick_cube.*perception"):
        make_backend("ur", make_task("pick_cube"))
    b = make_backend("ur", make_task("reach"), RobotServerConfig(backend="ur", clock="realtime",
                                                                  ur_frequency=125.0))
    try:
        assert isinstance(b, ur.UrBackend) and b.control_period == 0.008 and b.capabilities.world
        assert b.capabilities.kinematics and b.capabilities.external_wrench
    finally:
        b.close()
    with pytest.raises(ValueError, match="'ur'.*docs/hardware/ur.md"):
        make_backend("u", make_task("reach"))
