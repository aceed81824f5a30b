"""The UR kinematics (hardware/ur_kinematics.py) against Universal Robots' published DH table, and
the Jacobian they give the UR backend, which the joint-limit guard needs to refuse a command
that would push a held joint further toward its limit (it was zeros: the guard could hold a
UR, but never refuse a command)."""

from __future__ import annotations

import logging

import numpy as np
import pytest

import fake_ur_rtde
from controllers.rotations import matrix_to_quat, quat_to_rotvec, rotvec_to_matrix
from controllers.safety import JointLimitGuard
from hardware import ur, ur_kinematics as kin

OFFSET = [0.01, -0.02, 0.15, 0.1, -0.2, 0.3]  # a tool with a tilted tcp, getTCPOffset's form


@pytest.mark.parametrize("model", kin.MODELS)
def test_the_zero_posture_puts_the_flange_where_the_dh_table_says(model):
    d1, a2, a3, d4, d5, d6 = kin.DH_PARAMETERS[model]
    flange = kin.flange_pose(np.zeros(6), model)
    np.testing.assert_allclose(flange[:3, 3], [a2 + a3, -(d4 + d6), d1 - d5], atol=1e-12)
    if model == "ur5e":  # the figure Universal Robots' DH page gives for a UR5e at zero
        np.testing.assert_allclose(flange[:3, 3], [-0.8172, -0.2329, 0.0628], atol=1e-4)


@pytest.mark.parametrize("model", ["ur3e", "ur5e", "ur10", "ur16e"])
def test_the_jacobian_is_the_derivative_of_the_tcp_pose(model):
    rng = np.random.default_rng(7)
    for _ in range(5):
        q = rng.uniform(-np.pi, np.pi, 6)
        position, rotation = kin.tcp_pose(q, OFFSET, model)
        jacobian = kin.tcp_jacobian(q, position, model)
        h = 1e-6
        for j in range(6):
            dq = np.zeros(6)
            dq[j] = h
            p2, r2 = kin.tcp_pose(q + dq, OFFSET, model)
            np.testing.assert_allclose(jacobian[:3, j], (p2 - position) / h, atol=1e-5)
            omega = quat_to_rotvec(matrix_to_quat(r2 @ rotation.T)) / h  # base-frame angular velocity
            np.testing.assert_allclose(jacobian[3:, j], omega, atol=1e-5)


def test_the_compiled_jacobian_equals_the_frames_it_is_built_from():
    rng = np.random.default_rng(3)
    for model in kin.MODELS:
        q, point = rng.uniform(-3, 3, 6), rng.uniform(-1, 1, 3)
        frames = kin.joint_frames(q, model)
        axes, origins = frames[:6, :3, 2], frames[:6, :3, 3]
        expected = np.vstack([np.cross(axes, point - origins).T, axes.T])
        np.testing.assert_allclose(kin.tcp_jacobian(q, point, model), expected, atol=1e-12)
    with pytest.raises(ValueError, match="unknown UR model 'ur7'.*ur5e"):
        kin.tcp_jacobian(np.zeros(6), np.zeros(3), "ur7")
    with pytest.raises(ValueError, match="6 joints"):
        kin.joint_frames(np.zeros(7))


@pytest.fixture
def arm(monkeypatch):
    monkeypatch.setenv(ur.SDK_ENV, "fake_ur_rtde")
    return fake_ur_rtde.reset_arm()


def _put_arm_at(arm, q, model="ur5e"):
    """The fake's joints and tcp where a real arm of `model` would have them (the fake
    integrates the two independently; here they start consistent)."""
    arm.q = np.array(q, dtype=float)
    offset = fake_ur_rtde.RTDEControlInterface("x").getTCPOffset()
    arm.position, arm.rotation = kin.tcp_pose(arm.q, offset, model)


def test_the_backend_gives_the_guard_a_jacobian_that_refuses_pushing_a_held_joint(arm):
    # The elbow (joint 3, limits +-pi) 0.02 rad from its upper limit, held by the guard.
    q = np.array([0.3, -1.2, np.pi - 0.02, -1.4, -1.5, 0.2])
    _put_arm_at(arm, q)
    b = ur.UrBackend(base_yaw=np.pi / 2, watchdog_hz=2.0)
    s = b.sense()
    R = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])  # base = Rz(90 deg) ur_base
    in_ur_base = kin.tcp_jacobian(s.q, R.T @ s.tcp_position)
    np.testing.assert_allclose(s.jacobian[:3], R @ in_ur_base[:3], atol=1e-12)  # rotated into base
    np.testing.assert_allclose(s.jacobian[3:], R @ in_ur_base[3:], atol=1e-12)
    guard = JointLimitGuard(b.joint_lower, b.joint_upper, margin=0.05)
    guard.trip(s.q, np.array([0, 0, 0.1, 0, 0, 0]))
    assert guard.latched == {2: 1}
    here = matrix_to_quat(s.tcp_rotation)

    def pose_after(dq):  # the tcp pose a small joint step dq leads to, by the Jacobian
        step = s.jacobian @ dq
        return s.tcp_position + step[:3], matrix_to_quat(rotvec_to_matrix(step[3:]) @ s.tcp_rotation)

    elbow_up, elbow_down = np.array([0, 0, 0.01, 0, 0, 0]), np.array([0, 0, -0.01, 0, 0, 0])
    refusal = guard.refusal(s.q, s.jacobian, s.tcp_position, here, *pose_after(elbow_up))
    assert refusal and "joint 3" in refusal and "upper limit 3.1416" in refusal, refusal
    assert guard.refusal(s.q, s.jacobian, s.tcp_position, here, *pose_after(elbow_down)) is None
    # Another joint's motion alone is obeyed: only the held joint is guarded.
    assert guard.refusal(s.q, s.jacobian, s.tcp_position, here, *pose_after(np.array([0.01, 0, 0, 0, 0, 0]))) is None
    # With the zero Jacobian the backend had before, nothing was ever refused.
    assert guard.refusal(s.q, np.zeros((6, 6)), s.tcp_position, here, *pose_after(elbow_up)) is None


def test_a_model_whose_kinematics_miss_the_measured_tcp_is_logged(arm, caplog):
    _put_arm_at(arm, [0.0, -1.5708, 1.5708, -1.5708, -1.5708, 0.0], model="ur10e")
    with caplog.at_level(logging.INFO, logger="robostack.hardware.ur"):
        ur.UrBackend(model="ur10e", watchdog_hz=2.0).close()
        ur.UrBackend(model="ur5e", watchdog_hz=2.0).close()  # a UR10e's pose, read as a UR5e's
    messages = [r.getMessage() for r in caplog.records]
    assert any("ur10e kinematics match the measured tcp within 0.0 mm" in m for m in messages), messages
    warning = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING
               and "TEST-ONLY" not in r.getMessage()]
    assert len(warning) == 1 and "is --ur-model the arm's model" in warning[0], warning
    with pytest.raises(ValueError, match="model 'ur7'.*ur5e.*--ur-model"):
        ur.UrBackend(model="ur7")
