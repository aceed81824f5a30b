"""The gymnasium env: API conformance, episode-end semantics, action checks, seeding, and the
scripted experts end to end (robot server subprocess, ZeroMQ, lock-step MuJoCo mirror)."""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from robostack.env import make_env
from robostack.commands.expert import ExpertConfig, run_expert
from tasks import make_task

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
        with pytest.raises(transport.RemoteError, match="disarmed: send 'reset'"):
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
