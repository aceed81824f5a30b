"""The autopilot (seeded intervention protocol, succeeding on pick_cube), the base <-> policy
frame conversion of intervention actions, and `robostack teleop --selftest`."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from hardware.teleop.base import TeleopDevice, TeleopReading
from robostack.env import make_env
from controllers.rotations import quat_angle, quat_multiply, quat_to_matrix, rotvec_to_quat
from robostack.env.teleop import Autopilot, InterventionProtocol, make_device
from robostack.env.actions import action_to_target, base_to_policy_action, policy_to_base
from tasks import TaskConfig

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def pick_env():
    env = make_env("pick_cube", transport_kind="inprocess")
    yield env
    env.close()


def random_quaternion(rng) -> np.ndarray:
    q = rng.normal(size=4)
    return q / np.linalg.norm(q)


# --- the intervention protocol -----------------------------------------------------------------
def test_protocol_is_reproducible_from_a_seed_and_differs_across_seeds():
    protocol = InterventionProtocol(probability=0.5, start=(0, 20), duration=(5, 15))
    plan = [protocol.schedule(seed=3, episode=e) for e in range(40)]
    assert plan == [protocol.schedule(seed=3, episode=e) for e in range(40)]
    assert plan != [protocol.schedule(seed=4, episode=e) for e in range(40)]
    taken = [p for p in plan if p is not None]
    assert 8 <= len(taken) <= 32  # about half the episodes
    assert all(0 <= start <= 20 and 5 <= end - start <= 15 for start, end in taken)
    assert all(InterventionProtocol(probability=0.0).schedule(1, e) is None for e in range(20))
    with pytest.raises(ValueError, match="two steps lo <= hi"):
        InterventionProtocol(start=(5,))


def run_episodes(env, autopilot: Autopilot, seeds, policy):
    """Policy acts, the autopilot replaces it while it intervenes; what an actor will do."""
    results = []
    for episode, seed in enumerate(seeds):
        env.reset(seed=seed)
        autopilot.reset(episode=episode)
        trace, info = [], {"success": False}
        for _ in range(env.config.max_episode_steps):
            fields = env.fields()
            autopilot.observe(fields)
            reading = autopilot.read()
            if reading.intervene:
                action = base_to_policy_action(reading, env.config, fields["tcp_quaternion"], "base")
            else:
                action = policy(fields)
            trace.append((reading.intervene, np.round(action, 5).tolist()))
            _, _, terminated, truncated, info = env.step(action)
            if terminated or truncated:
                break
        results.append((bool(info["success"]), trace))
    return results


def test_autopilot_interventions_succeed_on_pick_cube_and_replay_from_the_seed(pick_env):
    protocol = InterventionProtocol(probability=1.0, start=(2, 6), duration=(60, 60), noise=0.05)
    rng = np.random.default_rng(0)
    wander = lambda fields: rng.uniform(-1, 1, pick_env.action_space.shape).astype(np.float32)  # noqa: E731
    autopilot = make_device("autopilot", task=pick_env.task, protocol=protocol, seed=11)
    assert isinstance(autopilot, TeleopDevice)
    first = run_episodes(pick_env, autopilot, [100, 101, 102], wander)
    assert [success for success, _ in first] == [True, True, True]
    for _, trace in first:
        flags = [intervene for intervene, _ in trace]
        assert 2 <= flags.index(True) <= 6 and not any(flags[:flags.index(True)])

    rng = np.random.default_rng(0)
    again = run_episodes(pick_env, Autopilot(pick_env.task, protocol, seed=11), [100, 101, 102], wander)
    assert again == first  # same seed: same takeovers, same actions, same outcome


def test_autopilot_takes_over_when_the_policy_is_stuck(pick_env):
    protocol = InterventionProtocol(probability=0.0, when_stuck=True, stuck_steps=5,
                                    stuck_distance=0.005, duration=(60, 60))
    hold = lambda fields: np.zeros(pick_env.action_space.shape, np.float32)  # noqa: E731
    [(success, trace)] = run_episodes(pick_env, Autopilot(pick_env.task, protocol, seed=0), [7], hold)
    flags = [intervene for intervene, _ in trace]
    assert not any(flags[:5]) and flags.index(True) <= 8  # stuck from the start: 5 steps to notice
    assert success


def test_autopilot_success_is_one_event(pick_env):
    autopilot = Autopilot(pick_env.task, InterventionProtocol(probability=0.0), seed=0)
    pick_env.reset(seed=0)
    fields = dict(pick_env.fields())
    lifted = dict(fields, cube_position=np.array([0.5, 0.0, 0.2]), cube_to_tcp=np.zeros(3))
    assert not autopilot.read(fields).success
    assert autopilot.read(lifted).success
    assert not autopilot.read(lifted).success


def test_make_device_errors_are_clear():
    with pytest.raises(ValueError, match="keyboard, gamepad, spacemouse, autopilot"):
        make_device("joystick")
    with pytest.raises(ValueError, match="task=env.task"):
        make_device("autopilot")


# --- frames -----------------------------------------------------------------------------------
CONFIG = TaskConfig(control_rotation=True, control_gripper=True)


def test_quaternion_matrix_agrees_with_geometry_quaternion_product():
    rng = np.random.default_rng(0)
    for _ in range(20):
        q, v = random_quaternion(rng), rng.normal(size=3)
        rotated = quat_multiply(quat_multiply(q, np.concatenate([[0.0], v])), q * [1, -1, -1, -1])
        np.testing.assert_allclose(quat_to_matrix(q) @ v, rotated[1:], atol=1e-12)


@pytest.mark.parametrize("frame", ["base", "tool"])
def test_frame_conversion_round_trip(frame):
    rng = np.random.default_rng(1)
    for _ in range(50):
        q = random_quaternion(rng)
        reading = TeleopReading(translation=rng.uniform(-0.57, 0.57, 3), rotation=rng.uniform(-0.57, 0.57, 3),
                                gripper=float(rng.choice([-1.0, 0.0, 1.0])))
        action = base_to_policy_action(reading, CONFIG, q, frame)
        assert action.shape == (7,) and action.dtype == np.float32
        back = policy_to_base(action, CONFIG, q, frame)
        np.testing.assert_allclose(back.translation, reading.translation, atol=1e-6)
        np.testing.assert_allclose(back.rotation, reading.rotation, atol=1e-6)
        assert back.gripper == reading.gripper


def assert_stored_action_replays_the_human_motion(stored, reading, tcp, q, frame):
    """The check an intervention log must pass: the stored action, executed by an env acting in
    `frame`, moves the tcp where the human's base-frame command did."""
    position, quaternion = action_to_target(stored, tcp, q, CONFIG, frame)
    wanted_position = tcp + reading.translation * CONFIG.max_translation_step
    wanted_quaternion = quat_multiply(rotvec_to_quat(reading.rotation * CONFIG.max_rotation_step), q)
    np.testing.assert_allclose(position, wanted_position, atol=1e-9)
    assert quat_angle(quaternion, wanted_quaternion) < 1e-6


def test_intervention_in_a_tool_frame_env_is_stored_in_the_tool_frame():
    # Gripper pointing down (home, (w x y z) = (0, 1, 0, 0)) and turned 90 deg about base z:
    # the tool's axes are none of the base's.
    q = quat_multiply(rotvec_to_quat(np.array([0.0, 0.0, np.pi / 2])), np.array([0.0, 1.0, 0.0, 0.0]))
    tcp = np.array([0.5, 0.0, 0.3])
    reading = TeleopReading(translation=np.array([1.0, 0.0, -0.5]), rotation=np.array([0.0, 0.0, 0.5]),
                            gripper=1.0, intervene=True)
    stored = base_to_policy_action(reading, CONFIG, q, frame="tool")
    assert_stored_action_replays_the_human_motion(stored, reading, tcp, q, "tool")
    assert stored[-1] == 1.0
    # The classic bug: the device's base-frame command stored as the tool-frame action.
    naive = np.concatenate([reading.translation, reading.rotation, [reading.gripper]]).astype(np.float32)
    with pytest.raises(AssertionError):
        assert_stored_action_replays_the_human_motion(naive, reading, tcp, q, "tool")
    # In a base-frame env (RobotEnv) the conversion is the identity.
    base = base_to_policy_action(reading, CONFIG, q, frame="base")
    np.testing.assert_allclose(base, naive)
    assert_stored_action_replays_the_human_motion(base, reading, tcp, q, "base")


def test_conversion_keeps_direction_when_rotation_leaves_the_unit_box():
    q = rotvec_to_quat(np.array([0.0, 0.0, np.pi / 4]))
    action = base_to_policy_action(TeleopReading(translation=np.array([1.0, 1.0, 0.0])), CONFIG, q, "tool")
    # [1, 1] turned by -45 deg is [sqrt 2, 0]: shrunk to [1, 0], not clipped to another direction.
    np.testing.assert_allclose(action[:3], [1.0, 0.0, 0.0], atol=1e-6)
    no_rotation = TaskConfig(control_rotation=False)
    assert base_to_policy_action(TeleopReading(gripper=-1.0), no_rotation).tolist() == [0, 0, 0, -1]


# --- the command ------------------------------------------------------------------------------
def test_selftest_autopilot_runs_and_exits_zero(capsys):
    from robostack.cli import main

    assert main(["teleop", "--device", "autopilot", "--selftest", "--steps", "40"]) == 0
    out = capsys.readouterr().out
    assert "intervene" in out and "40 steps" in out
    assert "episode 1: success" in out


def cli(*args, **kwargs) -> subprocess.Popen:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.Popen([sys.executable, "-m", "robostack.cli", "teleop", *args], cwd=ROOT, env=env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, **kwargs)


def test_keyboard_selftest_without_a_terminal_says_so():
    process = cli("--device", "keyboard", "--selftest")
    out, err = process.communicate(timeout=60)
    assert process.returncode == 2
    assert "needs an interactive terminal" in err and "Traceback" not in err


def test_selftest_ends_cleanly_on_ctrl_c():
    process = cli("--device", "autopilot", "--selftest")  # no --steps: runs until interrupted
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if "intervene" in line:
            break
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    assert "interrupted" in out and "Traceback" not in err
