"""The contracts both training modes build on: one observation space (the env's and the
learner's), one training-env wrapper stack."""

from __future__ import annotations

import numpy as np
import pytest

from robostack.env import make_env
from robostack.env.spaces import action_space, observation_space, state_layout
from robostack.env.wrappers import InterventionWrapper, make_training_env
from tasks import make_task


@pytest.mark.parametrize("task_name", ["reach", "pick_cube"])
def test_the_learner_builds_the_env_s_spaces_from_the_task_alone(tmp_path, task_name):
    from robostack.training.config import RunConfig
    from robostack.training.learner import Learner
    from robostack.training.transitions import action_spec, observation_spec

    env = make_env(task_name, transport_kind="inprocess")
    try:
        task = make_task(task_name)
        assert observation_space(task) == env.observation_space
        assert action_space(task.config) == env.action_space
        assert state_layout(task) == env.state_fields
        obs, _ = env.reset(seed=0)
        assert env.observation_space.contains(obs)
        learner = Learner(RunConfig(task=task_name, run_dir=str(tmp_path), demos=0), say=lambda _: None)
        # What the learner checks an actor's hello against is what the actor's env reports.
        assert learner.expected["obs_spec"] == observation_spec(env.observation_space)
        assert learner.expected["action_spec"] == action_spec(env.action_space)
    finally:
        env.close()


def test_the_state_s_known_bounds_are_finite_and_hold_while_the_gripper_closes():
    from controllers.franka import GRIPPER_MAX_WIDTH

    env = make_env("pick_cube", transport_kind="inprocess")
    try:
        space, layout = env.observation_space["state"], env.state_fields
        quaternion, width = layout["tcp_quaternion"], layout["gripper_width"]
        assert np.all(space.low[quaternion] == -1) and np.all(space.high[quaternion] == 1)
        assert space.low[width] == 0 and space.high[width] == np.float32(GRIPPER_MAX_WIDTH)
        assert np.all(np.isinf(space.low[layout["tcp_position"]]))  # unknown: left unbounded
        obs, _ = env.reset(seed=1)
        close = np.zeros(env.action_space.shape, np.float32)
        close[-1] = 1.0  # the gripper's command (pick_cube controls it)
        widths = []
        for _ in range(15):
            obs, *_ = env.step(close)
            assert space.contains(obs["state"])
            widths.append(obs["state"][width][0])
        assert widths[-1] < 0.01  # it closed, on nothing: at (not past) the bound
    finally:
        env.close()


def test_a_task_with_cameras_gets_their_image_keys():
    task = make_task("pick_cube")
    task.cameras = {"wrist": (64, 80), "front": (48, 48)}
    space = observation_space(task)
    assert set(space.spaces) == {"state", "images/wrist", "images/front"}
    assert space["images/wrist"].shape == (64, 80, 3) and space["images/wrist"].dtype == np.uint8


def test_the_training_env_factory_adds_the_operator_only_when_asked():
    from robostack.env.teleop import Autopilot, InterventionProtocol

    env = make_env("reach", transport_kind="inprocess")
    try:
        assert make_training_env(env, "") is env  # nobody intervenes: the env itself
        protocol = InterventionProtocol(probability=1.0, start=(0, 0), duration=(2, 2))
        acting = make_training_env(env, "expert", protocol, takeover_penalty=0.5, seed=7)
        assert isinstance(acting, InterventionWrapper) and acting.unwrapped is env
        assert isinstance(acting.device, Autopilot)
        assert (acting.device.protocol, acting.device.seed, acting.takeover_penalty) == (protocol, 7, 0.5)
        acting.reset(seed=0)
        infos = [acting.step(np.zeros(3, np.float32))[4] for _ in range(3)]
        assert [i["intervention"] for i in infos] == [True, True, False]  # per the protocol
        with pytest.raises(ValueError, match="'joystick'"):
            make_training_env(env, "joystick")
    finally:
        env.close()


def test_closing_the_training_env_closes_the_operator_s_device_and_the_env():
    closed = []

    class Device:
        def read(self):
            raise AssertionError("not stepped")

        def close(self):
            closed.append("device")

    env = make_env("reach", transport_kind="inprocess")
    close_env = env.close
    env.close = lambda: (closed.append("env"), close_env())
    InterventionWrapper(env, Device()).close()
    assert closed == ["device", "env"]
