"""The contracts both training modes build on: one observation space (the env's and the
learner's), one training-env wrapper stack."""

from __future__ import annotations

import re

import numpy as np
import pytest

from robostack.env import make_env
from robostack.env.spaces import action_space, observation_space, state_layout
from robostack.env.wrappers import InterventionWrapper, make_training_env
from tasks import make_task


PROPRIOCEPTION = "tcp_position,tcp_quaternion,tcp_velocity,gripper_width"


@pytest.mark.parametrize("task_name, cameras, observed", [
    ("reach", "", ""), ("pick_cube", "", ""),
    ("pick_cube", "front,wrist", PROPRIOCEPTION),  # pixels + proprioception, no object state
])
def test_the_learner_builds_the_env_s_spaces_from_the_task_alone(tmp_path, task_name, cameras, observed):
    from robostack.training.config import RunConfig
    from robostack.training.learner import Learner
    from robostack.training.rollouts import open_env, task_config
    from robostack.training.transitions import action_spec, observation_spec

    config = RunConfig(task=task_name, run_dir=str(tmp_path), demos=0, cameras=cameras,
                       observed_state=observed)
    env = open_env(config, seed=0, transport_kind="inprocess")
    try:
        task = make_task(task_name, task_config(config))
        assert observation_space(task) == env.observation_space
        assert action_space(task.config) == env.action_space
        assert state_layout(task) == env.state_fields
        obs, _ = env.reset(seed=0)
        assert env.observation_space.contains(obs)
        if cameras:
            assert set(obs) == {"state", "images/front", "images/wrist"}
            assert list(env.state_fields) == PROPRIOCEPTION.split(",") and obs["state"].shape == (14,)
            assert "cube_position" in env.fields()  # the expert and the success check still see it
        learner = Learner(config, say=lambda _: None)
        # What the learner checks an actor's hello against is what the actor's env reports (with
        # cameras on this CPU: their cached features, --sac-encoder auto's choice).
        from robostack.rl.featurize import feature_space

        assert learner.expected["obs_spec"] == observation_spec(feature_space(config.sac, env.observation_space))
        assert config.sac.encoder == ("efficientnet-lite0" if cameras else "auto")  # auto: conv
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


def test_a_task_config_chooses_its_cameras_and_state_fields():
    from tasks import TaskConfig

    task = make_task("pick_cube", TaskConfig(cameras=("wrist",), observed_state=("cube_to_tcp", "tcp_position")))
    space = observation_space(task)
    assert set(space.spaces) == {"state", "images/wrist"}
    assert space["images/wrist"].shape == (128, 128, 3) and space["images/wrist"].dtype == np.uint8
    # the canonical order (robot fields, then the task's), whatever order they were named in
    assert state_layout(task) == {"tcp_position": slice(0, 3), "cube_to_tcp": slice(3, 6)}
    assert space["state"].shape == (6,)


@pytest.mark.parametrize("config, says", [
    (dict(cameras=("side",)), "no camera ['side'] in task pick_cube's scene; its cameras: ['front', 'wrist']"),
    (dict(cameras=("front", "front")), "a camera named twice"),
    (dict(observed_state=("cube_speed",)), "unknown ['cube_speed']"),
])
def test_a_camera_or_field_the_task_lacks_is_refused_naming_what_it_has(config, says):
    from robostack.training.config import RunConfig
    from tasks import TaskConfig

    with pytest.raises(ValueError, match=re.escape(says)):
        observation_space(make_task("pick_cube", TaskConfig(**config)))
    option = {"cameras": ",".join(config.get("cameras", ())),
              "observed_state": ",".join(config.get("observed_state", ()))}
    with pytest.raises(ValueError, match=re.escape(says)):
        RunConfig(task="pick_cube", **option)  # a usage error before any process starts


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


def test_encoder_auto_is_the_frozen_cached_one_with_cameras_on_a_cpu_and_end_to_end_otherwise():
    from robostack.rl.sac import SACConfig
    from robostack.training.config import RunConfig

    assert RunConfig(task="pick_cube").sac.encoder == "auto"  # no cameras: nothing to encode
    assert RunConfig(task="pick_cube", cameras="front").sac.encoder == "efficientnet-lite0"
    on_gpu = RunConfig(task="pick_cube", cameras="front", sac=SACConfig(encoder="auto", device="cuda"))
    assert on_gpu.sac.encoder == "conv"
    chosen = RunConfig(task="pick_cube", cameras="front", sac=SACConfig(encoder="drq"))
    assert chosen.sac.encoder == "drq"  # a named encoder is kept


def test_a_demo_log_with_the_frozen_cached_encoder_is_a_usage_error_before_anything_starts(tmp_path):
    from robostack.commands.record import RecordConfig, record
    from robostack.training.config import RunConfig

    record(RecordConfig(task="reach", device="autopilot", episodes=1, log=str(tmp_path / "demos"),
                        transport="inprocess", seed=0), say=lambda s: None)
    with pytest.raises(ValueError, match="--demo-log with a frozen cached encoder"):
        RunConfig(task="reach", cameras="front", demo_log=str(tmp_path / "demos"))  # auto: frozen
    assert RunConfig(task="reach", demo_log=str(tmp_path / "demos")).demo_log  # pixels-free: fine
