"""The gymnasium env: API conformance, episode-end semantics, action checks, seeding, and the
scripted experts end to end (robot server subprocess, ZeroMQ, lock-step MuJoCo mirror)."""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from controllers.rotations import quat_multiply, quat_to_matrix, rotvec_to_matrix, rotvec_to_quat
from robostack.env import make_env
from robostack.env.actions import action_to_target, gripper_target
from robostack.commands.expert import ExpertConfig, run_expert
from tasks import TaskConfig, make_task

# The observation is unbounded by nature (positions, velocities): these two warnings are expected.
EXPECTED_WARNINGS = ("minimum value is -infinity", "maximum value is infinity")


def assert_check_env_passes(env) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_env(env, skip_render_check=True)
    unexpected = [str(w.message) for w in caught
                  if not any(text in str(w.message) for text in EXPECTED_WARNINGS)]
    assert not unexpected, unexpected


@pytest.mark.parametrize("task", ["pick_cube", "reach"])
def test_gymnasium_env_checker_passes_in_process(task):
    env = make_env(task, transport_kind="inprocess")
    try:
        assert_check_env_passes(env)
    finally:
        env.close()


def test_gymnasium_env_checker_passes_over_zmq():
    env = make_env("pick_cube", transport_kind="zmq")
    try:
        assert_check_env_passes(env)
    finally:
        env.close()


# --- episode end: terminated (task outcome) vs truncated (time limit) --------------------------

def reach_env(**overrides):
    config = dataclasses.replace(make_task("reach").config, **overrides)
    return make_env("reach", transport_kind="inprocess", config=config)


def test_time_limit_truncates_and_never_terminates():
    env = reach_env(max_episode_steps=3)
    try:
        env.reset(seed=0)
        for step in range(1, 4):
            _, reward, terminated, truncated, info = env.step(np.zeros(3, np.float32))
            assert info["distance"] > 0.03 and not info["success"]  # standing still: no success
            assert reward == 0.0 and terminated is False
            assert truncated is (step == 3), step
    finally:
        env.close()


def run_expert_episode(env, seed):
    expert = env.task.expert(seed=seed)
    env.reset(seed=seed)
    expert.reset()
    for step in range(1, env.config.max_episode_steps + 1):
        _, reward, terminated, truncated, info = env.step(expert(env.fields()))
        if terminated or truncated:
            return step, reward, terminated, truncated, info
    raise AssertionError("episode neither terminated nor truncated at its time limit")


@pytest.mark.parametrize("task", ["pick_cube", "reach"])
def test_success_terminates_and_does_not_truncate(task):
    env = make_env(task, transport_kind="inprocess")
    try:
        step, reward, terminated, truncated, info = run_expert_episode(env, seed=1)
        assert info["success"] and reward == 1.0
        assert terminated is True and truncated is False
        assert step < env.config.max_episode_steps
    finally:
        env.close()


def test_success_on_the_last_allowed_step_is_terminated_not_truncated():
    env = reach_env()
    try:
        steps_needed = run_expert_episode(env, seed=2)[0]
    finally:
        env.close()
    env = reach_env(max_episode_steps=steps_needed)  # the time limit falls on the success step
    try:
        step, _, terminated, truncated, info = run_expert_episode(env, seed=2)
        assert step == steps_needed and info["success"]
        assert terminated is True and truncated is False  # bootstrapping must stop here
    finally:
        env.close()


# --- actions are checked before anything is sent --------------------------------------------------

@pytest.mark.parametrize("action, expected", [
    (np.array([0.1, np.nan, 0.0, 0.0], np.float32), "non-finite"),
    (np.array([0.1, 0.0, np.inf, 0.0], np.float32), "non-finite"),
    (np.zeros(3, np.float32), "shape (3,), expected (4,)"),
    (np.zeros((1, 4), np.float32), "shape (1, 4), expected (4,)"),
])
def test_bad_action_raises_value_error_and_sends_nothing(action, expected):
    env = make_env("pick_cube", transport_kind="inprocess")
    try:
        env.reset(seed=0)
        server = env.connection.server
        robot_time, seq = server.backend.time, server.command_seq
        with pytest.raises(ValueError) as error:
            env.step(action)
        assert expected in str(error.value)
        assert server.backend.time == robot_time and server.command_seq == seq  # nothing sent
        env.step(np.zeros(4, np.float32))  # the env is still usable
        assert server.backend.time > robot_time
    finally:
        env.close()


# --- the action -> target mapping (robostack.env.actions, the one copy) ---------------------------

TURNING = TaskConfig(control_rotation=True, control_gripper=True)
MAX_WIDTH = 0.08


def recorded_steps(env) -> list[tuple[dict, dict]]:
    """What the env sends the server with each step (meta, arrays), recorded on the way."""
    sent = []
    request = env.connection.request

    def record(kind, meta=None, arrays=None, timeout=None):
        if kind == "step":
            sent.append((dict(meta), {k: np.array(v) for k, v in arrays.items()}))
        return request(kind, meta, arrays, timeout)

    env.connection.request = record
    return sent


def test_env_sends_the_clipped_scaled_base_frame_target_from_the_measured_pose():
    env = make_env("reach", transport_kind="inprocess", config=TURNING)
    try:
        sent = recorded_steps(env)
        env.reset(seed=0)
        rng = np.random.default_rng(2)
        for _ in range(6):
            action = rng.uniform(-2.0, 2.0, 7).astype(np.float32)  # some components out of range
            fields = {k: np.array(v) for k, v in env.fields().items()}
            env.step(action)
            _, arrays = sent[-1]
            clipped = np.clip(action.astype(float), -1.0, 1.0)
            np.testing.assert_allclose(arrays["target_position"],
                                       fields["tcp_position"] + clipped[:3] * TURNING.max_translation_step,
                                       atol=1e-12)
            # Turned about the BASE axes: R_target = R(delta) @ R_measured (a tool-frame turn
            # would be R_measured @ R(delta)).
            delta = rotvec_to_matrix(clipped[3:6] * TURNING.max_rotation_step)
            np.testing.assert_allclose(quat_to_matrix(arrays["target_quaternion"]),
                                       delta @ quat_to_matrix(fields["tcp_quaternion"]), atol=1e-12)
    finally:
        env.close()


def test_env_without_rotation_control_holds_the_orientation_the_reset_left():
    env = make_env("reach", transport_kind="inprocess")  # xyz only
    try:
        sent = recorded_steps(env)
        env.reset(seed=0)
        home = np.array(env.fields()["tcp_quaternion"])
        for _ in range(4):
            env.step(np.array([1.0, -1.0, 0.5], np.float32))
        measured = env.fields()["tcp_quaternion"]
        assert not np.array_equal(measured, home)  # moving fast, the arm's orientation wobbles
        for _, arrays in sent:  # ... but the target never follows the wobble
            np.testing.assert_array_equal(arrays["target_quaternion"], home)
    finally:
        env.close()


def test_env_gripper_component_closes_opens_and_keeps():
    env = make_env("pick_cube", transport_kind="inprocess")
    try:
        sent = recorded_steps(env)
        env.reset(seed=0)
        width = env.max_width
        # > 0.5 closes (width 0), < -0.5 opens (max width), anything in between keeps the last.
        for grip, expected in [(0.3, width), (0.51, 0.0), (0.5, 0.0), (-0.5, 0.0), (-0.51, width),
                               (0.0, width), (1.0, 0.0), (-1.0, width)]:
            env.step(np.array([0.0, 0.0, 0.0, grip], np.float32))
            assert sent[-1][0]["gripper"] == expected, grip
    finally:
        env.close()


def test_action_to_target_scaling_clipping_and_frames():
    tcp = np.array([0.5, 0.1, 0.3])
    q = quat_multiply(rotvec_to_quat([0.0, 0.0, np.pi / 2]), [0.0, 1.0, 0.0, 0.0])  # down, turned 90 deg
    step, turn = TURNING.max_translation_step, TURNING.max_rotation_step
    action = np.array([0.5, -1.0, 3.0, 0.0, 0.0, -0.25, 1.0])
    position, quaternion = action_to_target(action, tcp, q, TURNING, "base")
    np.testing.assert_allclose(position, tcp + [0.5 * step, -step, step])  # 3.0 clipped to 1
    np.testing.assert_allclose(quat_to_matrix(quaternion),
                               rotvec_to_matrix([0.0, 0.0, -0.25 * turn]) @ quat_to_matrix(q), atol=1e-12)
    # The tool frame: xyz along the tcp's axes, rotation about them.
    position, quaternion = action_to_target(action, tcp, q, TURNING, "tool")
    np.testing.assert_allclose(position, tcp + quat_to_matrix(q) @ [0.5 * step, -step, step], atol=1e-12)
    np.testing.assert_allclose(quat_to_matrix(quaternion),
                               quat_to_matrix(q) @ rotvec_to_matrix([0.0, 0.0, -0.25 * turn]), atol=1e-12)
    # Down, turned 90 deg about base z: the tool's +x is base +y, so a tool-frame +x step moves +y.
    position, _ = action_to_target([1.0, 0, 0, 0, 0, 0, 0], tcp, q, TURNING, "tool")
    np.testing.assert_allclose(position - tcp, [0.0, step, 0.0], atol=1e-12)
    # Without rotation control the orientation is held (given) or the measured one (not given).
    xyz_only = TaskConfig(control_rotation=False, control_gripper=False)
    held = np.array([0.0, 1.0, 0.0, 0.0])
    np.testing.assert_array_equal(action_to_target([0, 0, 0], tcp, q, xyz_only, held_quaternion=held)[1], held)
    np.testing.assert_array_equal(action_to_target([0, 0, 0], tcp, q, xyz_only)[1], q)
    with pytest.raises(ValueError, match="frame must be one of"):
        action_to_target(action, tcp, q, TURNING, "world")


def test_gripper_target_semantics():
    with_gripper = TaskConfig(control_gripper=True)
    assert gripper_target([0, 0, 0, 0.9], with_gripper, MAX_WIDTH, MAX_WIDTH) == 0.0
    assert gripper_target([0, 0, 0, -0.9], with_gripper, 0.0, MAX_WIDTH) == MAX_WIDTH
    assert gripper_target([0, 0, 0, 0.2], with_gripper, 0.03, MAX_WIDTH) == 0.03
    assert gripper_target([0, 0, 0, 0.2], with_gripper, 0.5, MAX_WIDTH) == MAX_WIDTH  # kept, within range
    without = TaskConfig(control_gripper=False)
    assert gripper_target([0, 0, 0.9], without, 0.03, MAX_WIDTH) == 0.03  # last xyz is no gripper


# --- seeding ----------------------------------------------------------------------------------

def test_same_seed_gives_the_same_episode_over_zmq():
    actions = np.random.default_rng(0).uniform(-1, 1, (8, 4)).astype(np.float32)
    env = make_env("pick_cube", transport_kind="zmq")
    try:
        def episode(seed):
            observations = [env.reset(seed=seed)[0]["state"]]
            observations += [env.step(a)[0]["state"] for a in actions]
            return np.array(observations)

        first = episode(3)
        other = episode(4)
        again = episode(3)  # after a different episode: nothing carries over
    finally:
        env.close()
    assert not np.allclose(first[0], other[0])  # the seed matters (cube and tcp start differ)
    np.testing.assert_array_equal(first, again)


# --- the scripted experts over the real multi-process path --------------------------------------

@pytest.mark.parametrize("task, episodes", [("pick_cube", 50), ("reach", 20)])
def test_scripted_expert_succeeds_over_zmq(task, episodes):
    result = run_expert(ExpertConfig(task=task, episodes=episodes, seed=0, transport="zmq"),
                        progress=None)
    assert result.episodes == episodes
    assert result.success_rate >= 0.9, (
        f"{task}: {result.successes}/{episodes} successes, lengths {result.episode_lengths}")


def test_a_robot_server_restarted_on_the_same_endpoint_refuses_to_step_on():
    """A server that died and came back on the same port has lost the episode: it is disarmed,
    so the env's next step is refused with the fix named (reset) instead of moving the arm of a
    fresh world, and after a reset the episode runs again."""
    import subprocess
    import sys

    from robostack import transport
    from robostack.env import RobotEnv
    from robostack.robot.client import ZmqConnection

    command, state = transport.free_tcp_endpoint(), transport.free_tcp_endpoint()

    def start_server():
        return subprocess.Popen([sys.executable, "-m", "robostack.robot.server", "--task", "reach",
                                 "--command-endpoint", command, "--state-endpoint", state,
                                 "--log-level", "WARNING"])

    server = start_server()
    connection = ZmqConnection(command, timeout=2.0)
    for _ in range(30):  # the server's start-up
        try:
            connection.request("hello", timeout=1.0)
            break
        except transport.PeerTimeout:
            pass
    env = RobotEnv(connection, task="reach")
    try:
        env.reset(seed=0)
        env.step(np.zeros(env.action_space.shape, np.float32))
        server.kill()
        server.wait(10)
        server = start_server()
        with pytest.raises(transport.RemoteError, match="disarmed.*send 'arm' or 'reset'"):
            for _ in range(60):
                try:
                    env.step(np.zeros(env.action_space.shape, np.float32))
                except transport.PeerTimeout:
                    continue  # not up yet
        env.reset(seed=0)
        env.step(np.zeros(env.action_space.shape, np.float32))
    finally:
        env.close()
        server.kill()
        server.wait(10)


def test_env_takes_the_task_parameters_from_the_server():
    """The server's world decides success: a client config (e.g. only a time-limit override)
    gets the server's parameters; one customised differently is refused, naming both."""
    import dataclasses

    from robostack.env.env import RobotEnv
    from robostack.robot.client import InProcessConnection
    from robostack.robot.server import RobotServer, RobotServerConfig
    from tasks import make_task

    server = RobotServer(RobotServerConfig(task="pick_cube", task_params="table_height=0.03"))
    client_config = dataclasses.replace(make_task("pick_cube").config, max_episode_steps=7)
    env = RobotEnv(InProcessConnection(server), task="pick_cube", config=client_config)
    assert env.task.params.table_height == 0.03
    assert env.config.max_episode_steps == 7
    assert env.config.workspace_min[2] == pytest.approx(0.03)  # raised once, not twice
    obs, _ = env.reset(seed=0)
    cube_z = obs["state"][env.state_fields["cube_position"]][2]
    assert cube_z == pytest.approx(0.03 + 0.02, abs=2e-3)  # resting on the raised table
    other = make_task("pick_cube", params={"table_height": 0.05}).config
    with pytest.raises(ValueError, match="task parameters differ"):
        RobotEnv(InProcessConnection(server), task="pick_cube", config=other)
