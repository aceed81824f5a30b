"""robostack's envs are gymnasium envs like any other: `gymnasium.make` after `import robostack`."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import robostack


@pytest.mark.parametrize("env_id, task", sorted(robostack.ENV_IDS.items()))
def test_gymnasium_make_builds_the_task_env(env_id, task):
    with gym.make(env_id, transport_kind="inprocess", seed=0) as env:
        assert env.unwrapped.task.name == task
        assert env.spec.id == env_id
        obs, info = env.reset(seed=3)
        assert env.observation_space.contains(obs)
        obs, reward, terminated, truncated, info = env.step(np.zeros(env.action_space.shape, np.float32))
        assert env.observation_space.contains(obs)
        assert isinstance(reward, float) and not terminated and not truncated


def test_gymnasium_make_over_zmq_and_close_stops_the_server():
    env = gym.make("robostack/Reach-v0")  # default: a robot-server subprocess on loopback
    process = env.unwrapped.connection.process
    assert process.poll() is None
    env.reset(seed=0)
    env.close()
    assert process.poll() is not None, "closing the env must stop the robot server it started"


def test_the_time_limit_is_the_tasks_own():
    """No second TimeLimit wrapper: the env truncates at the task's limit, never earlier."""
    with gym.make("robostack/Reach-v0", transport_kind="inprocess") as env:
        assert env.spec.max_episode_steps is None
        env.reset(seed=0)
        limit = env.unwrapped.config.max_episode_steps
        for t in range(limit):
            _, _, terminated, truncated, _ = env.step(np.zeros(env.action_space.shape, np.float32))
            assert not terminated  # a zero action never reaches the goal region
            assert truncated == (t == limit - 1)
