"""The robot server's control behaviour on real MuJoCo physics (server driven in-process).

Tolerances are stated here and in the README: tracking within 5 mm of a commanded pose after it
settles; steady contact force no larger than stiffness x clip + 3 N.
"""

import dataclasses

import mujoco
import numpy as np
import pytest

from controllers.rotations import quat_angle, quat_multiply, rotvec_to_quat
from robostack.robot.server import RobotServer, RobotServerConfig
from tasks import make_task

TRACKING_TOLERANCE = 0.005  # m
CONTACT_MARGIN = 3.0  # N above stiffness x clip


def make_server(task="reach", **task_overrides):
    config = dataclasses.replace(make_task(task).config, **task_overrides)
    server = RobotServer(RobotServerConfig(task=task), task=make_task(task, config))
    kind, meta, arrays = server.handle("reset", {"seed": 0}, {})
    assert kind == "state", meta
    return server, arrays


def step_to(server, position, quaternion, steps):
    for _ in range(steps):
        kind, meta, arrays = server.handle(
            "step", {"gripper": 0.08}, {"target_position": np.asarray(position, float),
                                        "target_quaternion": np.asarray(quaternion, float)})
        assert kind == "state", meta
    return meta, arrays


@pytest.mark.parametrize("offset", [(0.08, 0.0, 0.0), (0.0, -0.1, 0.05), (-0.05, 0.06, -0.08)])
def test_commanded_pose_is_reached_within_tolerance(offset):
    server, start = make_server()
    target = start["tcp_position"] + np.array(offset)
    meta, arrays = step_to(server, target, start["tcp_quaternion"], steps=20)  # 2 s
    error = np.linalg.norm(arrays["tcp_position"] - target)
    assert error < TRACKING_TOLERANCE, f"tracking error {error * 1e3:.1f} mm"
    assert quat_angle(arrays["tcp_quaternion"], start["tcp_quaternion"]) < 0.02


def test_commanded_rotation_is_reached():
    server, start = make_server()
    target_q = quat_multiply(rotvec_to_quat([0.0, 0.0, 0.3]), start["tcp_quaternion"])
    meta, arrays = step_to(server, start["tcp_position"], target_q, steps=20)
    assert quat_angle(arrays["tcp_quaternion"], target_q) < 0.02
    assert np.linalg.norm(arrays["tcp_position"] - start["tcp_position"]) < TRACKING_TOLERANCE


def table_contact_force(server) -> float:
    """Total normal force (N) between the table and anything, from MuJoCo's contact solver."""
    m, d = server.backend.model, server.backend.data
    table = m.geom("table").id
    force, total = np.zeros(6), 0.0
    for i in range(d.ncon):
        c = d.contact[i]
        if table in (c.geom1, c.geom2):
            mujoco.mj_contactForce(m, d, i, force)
            total += force[0]
    return total


def test_target_inside_table_gives_bounded_contact_force():
    # Let the workspace reach 10 cm into the table so the clip, not the box, is what is tested.
    server, start = make_server(workspace_min=(0.25, -0.35, -0.2))
    gains = server.law.gains
    stiffness, clip = 2000.0, 0.01
    assert gains.translational_stiffness == stiffness and gains.translational_clip == clip
    above = np.array([0.45, 0.15, 0.05])  # clear of the reach goal marker (it has no collision)
    step_to(server, above, start["tcp_quaternion"], steps=15)
    inside = above.copy()
    inside[2] = -0.10
    forces = []
    for _ in range(30):  # 3 s of pressing
        meta, arrays = step_to(server, inside, start["tcp_quaternion"], steps=1)
        forces.append(table_contact_force(server))
    steady = np.array(forces[-10:])
    bound = stiffness * clip + CONTACT_MARGIN
    assert steady.min() > 5.0, f"no firm contact: {steady}"  # the fingers really press
    assert steady.max() <= bound, f"contact force {steady.max():.1f} N exceeds {bound} N"
    flags = dict(meta["flags"])
    assert "error_clipped_translation" in flags  # the clip acted and was reported


def test_workspace_box_clips_target_and_reports_it():
    server, start = make_server()
    kind, meta, arrays = server.handle(
        "step", {"gripper": 0.08},
        {"target_position": np.array([0.45, 0.0, 0.9]), "target_quaternion": start["tcp_quaternion"]})
    flags = dict(meta["flags"])
    assert "workspace_clipped" in flags and "0.45" in flags["workspace_clipped"]


def test_bad_commands_get_error_replies_and_server_keeps_serving():
    server, start = make_server()
    good = {"target_position": start["tcp_position"], "target_quaternion": start["tcp_quaternion"]}
    cases = [
        ({"target_position": np.array([0.4, np.nan, 0.2]), "target_quaternion": start["tcp_quaternion"]}, "non-finite"),
        ({"target_position": np.zeros(4), "target_quaternion": start["tcp_quaternion"]}, "shape"),
        ({"target_position": start["tcp_position"], "target_quaternion": np.zeros(4)}, "quaternion"),
        ({"target_quaternion": start["tcp_quaternion"]}, "position"),
    ]
    for arrays, expected in cases:
        kind, meta, _ = server.handle("step", {"gripper": 0.08}, arrays)
        assert kind == "error" and expected in meta["error"], meta
        kind, meta, _ = server.handle("step", {"gripper": 0.08}, good)
        assert kind == "state"
    kind, meta, _ = server.handle("fly", {}, {})
    assert kind == "error" and "valid requests" in meta["error"]


def test_disarmed_arm_refuses_motion_until_armed():
    server, start = make_server()
    target = {"target_position": start["tcp_position"], "target_quaternion": start["tcp_quaternion"]}
    assert server.handle("disarm", {}, {})[1]["mode"] == "stopping"  # damped; lock-step: time frozen
    kind, meta, _ = server.handle("step", {}, target)
    assert kind == "error" and "stopping" in meta["error"] and "send 'arm' or 'reset'" in meta["error"]
    server.run_ticks(1000)  # the damped stop ends once the arm is still (at most stop_timeout, 1 s)
    assert server.mode == "disarmed"
    kind, meta, _ = server.handle("step", {}, target)
    assert kind == "error" and "disarmed" in meta["error"]
    kind, meta, _ = server.handle("arm", {}, {})
    assert meta["mode"] == "armed"


def test_the_env_reports_each_supervisor_transition_once_with_its_reason():
    from robostack.env import make_env

    env = make_env("reach", transport_kind="inprocess")
    try:
        _, info = env.reset(seed=0)
        assert [t[:2] for t in info["supervisor_transitions"]] == [["disarmed", "armed"]], info
        assert "reset" in info["supervisor_transitions"][0][2]
        action = np.zeros(env.action_space.shape, np.float32)
        infos = [env.step(action)[-1] for _ in range(3)]
        assert [t[:2] for t in infos[0]["supervisor_transitions"]] == [["armed", "tracking"]], infos[0]
        assert infos[1]["supervisor_transitions"] == infos[2]["supervisor_transitions"] == []
        assert infos[2]["mode"] == "tracking"
    finally:
        env.close()
