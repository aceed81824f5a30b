"""The scripted pick_cube expert still lifts the cube when the physical parameters change: a table
3 cm higher (over ZeroMQ, the parameters given to `robostack robot-server --task-params` and read
back by the env from the server's hello) and a smaller cube (in process)."""

from __future__ import annotations

import numpy as np
import pytest

from robostack.env import RobotEnv, make_env
from robostack.robot.client import spawn_robot_server
from tasks import make_task

SEEDS = (0, 1, 2)


def expert_success(env, seed) -> tuple[bool, dict]:
    expert = env.task.expert(seed=seed)
    env.reset(seed=seed)
    expert.reset()
    first = dict(env.fields())
    for _ in range(env.config.max_episode_steps):
        _, _, terminated, truncated, info = env.step(expert(env.fields()))
        if terminated or truncated:
            return bool(info["success"]), first
    return False, first


def test_expert_lifts_the_cube_from_a_raised_table_over_zmq():
    connection = spawn_robot_server("pick_cube", extra_args=("--task-params", "table_height=0.03"),
                                    startup_timeout=60.0)
    env = RobotEnv(connection, task="pick_cube")  # config, parameters included, from the server
    try:
        assert env.task.params.table_height == 0.03
        assert env.config.workspace_min[2] == pytest.approx(0.03)
        for seed in SEEDS:
            success, start = expert_success(env, seed)
            assert start["cube_position"][2] == pytest.approx(0.05, abs=1e-3)  # on the raised top
            assert success, f"seed {seed}"
    finally:
        env.close()


@pytest.mark.parametrize("half_size", [0.0125, 0.025])  # a 2.5 cm and a 5 cm cube
def test_expert_lifts_a_cube_of_another_size(half_size):
    task = make_task("pick_cube", params={"cube_half_size": half_size})
    env = make_env("pick_cube", transport_kind="inprocess", config=task.config)
    try:
        for seed in SEEDS:
            success, start = expert_success(env, seed)
            assert start["cube_position"][2] == pytest.approx(half_size, abs=1e-3)
            assert success, f"half size {half_size} m, seed {seed}"
    finally:
        env.close()


def test_expert_lifts_cubes_of_random_mass():
    task = make_task("pick_cube", params={"cube_mass": (0.05, 0.3)})
    env = make_env("pick_cube", transport_kind="inprocess", config=task.config)
    try:
        masses = []
        for seed in SEEDS:
            success, _ = expert_success(env, seed)
            masses.append(env.connection.server.backend.world.object_mass("cube"))
            assert success, f"seed {seed}, mass {masses[-1]:.3f} kg"
        assert len(set(np.round(masses, 6))) == len(SEEDS)
    finally:
        env.close()
