"""controllers/rotations.py against MuJoCo's own conversions (an independent implementation),
round trips, the sign convention (w >= 0), and the compiled kernels against their uncompiled code."""

import math

import mujoco
import numpy as np
import pytest

from controllers import rotations
from controllers._kernels import NUMBA_AVAILABLE
from controllers.rotations import (
    matrix_to_quat,
    quat_angle,
    quat_conjugate,
    quat_multiply,
    quat_to_matrix,
    quat_to_rotvec,
    rotvec_to_matrix,
    rotvec_to_quat,
)


def random_quaternions(rng, n: int) -> np.ndarray:
    """Uniform random rotations (normalised 4-d Gaussians), both signs of w."""
    q = rng.normal(size=(n, 4))
    return q / np.linalg.norm(q, axis=1, keepdims=True)


def random_axes(rng, n: int) -> np.ndarray:
    a = rng.normal(size=(n, 3))
    return a / np.linalg.norm(a, axis=1, keepdims=True)


def mujoco_quaternion(axis, angle) -> np.ndarray:
    q = np.zeros(4)
    mujoco.mju_axisAngle2Quat(q, np.asarray(axis, dtype=float), float(angle))
    return q


def near_half_turns(rng) -> list[np.ndarray]:
    """Rotations at and just short of 180 degrees, where w -> 0 and a careless matrix ->
    quaternion conversion divides by ~0: coordinate axes, diagonals and random axes."""
    axes = list(np.eye(3)) + [np.array(a, float) / np.linalg.norm(a) for a in
                              ([1, 1, 0], [1, 0, 1], [0, 1, 1], [1, 1, 1], [-1, 1, 1], [1, -2, 3])]
    axes += list(random_axes(rng, 30))
    return [mujoco_quaternion(axis, math.pi - eps) for axis in axes
            for eps in (0.0, 1e-12, 1e-9, 1e-6, 1e-3, -1e-6)]


def test_sample_covers_the_hard_cases():
    """Guard the sample: every branch of Shepperd's method (trace > 0, and each diagonal entry
    largest) must be hit by the rotations the MuJoCo comparisons use."""
    rng = np.random.default_rng(0)
    branches = set()
    for q in list(random_quaternions(rng, 500)) + near_half_turns(rng):
        m = np.zeros(9)
        mujoco.mju_quat2Mat(m, q)
        d = m.reshape(3, 3).diagonal()
        branches.add("trace" if d.sum() > 0 else int(np.argmax(d)))
    assert branches == {"trace", 0, 1, 2}


def test_matrix_to_quat_matches_mujoco_and_has_non_negative_w():
    rng = np.random.default_rng(1)
    quaternions = list(random_quaternions(rng, 2000)) + near_half_turns(rng) + [
        np.array([1.0, 0, 0, 0]), mujoco_quaternion([0, 0, 1], 1e-9), mujoco_quaternion([1, 2, 3], -1e-5)]
    for q in quaternions:
        m = np.zeros(9)
        mujoco.mju_quat2Mat(m, q)
        ours = matrix_to_quat(m.reshape(3, 3))
        theirs = np.zeros(4)
        mujoco.mju_mat2Quat(theirs, m)
        assert ours[0] >= 0.0, (q, ours)
        assert abs(np.linalg.norm(ours) - 1.0) < 1e-15
        # Same rotation as MuJoCo's answer (which may have either sign), and the input's own
        # quaternion in the w >= 0 convention.
        sign = 1.0 if ours @ theirs >= 0 else -1.0
        np.testing.assert_allclose(ours, sign * theirs, atol=1e-12)
        canonical = q if q[0] > 0 else -q
        if abs(q[0]) > 1e-9:  # at exactly 180 degrees both signs have w = 0
            np.testing.assert_allclose(ours, canonical, atol=1e-12)
        else:
            assert min(np.abs(ours - q).max(), np.abs(ours + q).max()) < 1e-12


def test_mujoco_itself_does_not_fix_the_sign():
    """Why the convention is written down: MuJoCo's mat2Quat returns w < 0 for some rotations,
    so two converters that both 'work' can disagree in sign."""
    m = np.zeros(9)
    mujoco.mju_quat2Mat(m, np.array([-0.5, 0.5, 0.5, 0.5]))
    theirs = np.zeros(4)
    mujoco.mju_mat2Quat(theirs, m)
    assert theirs[0] < 0
    np.testing.assert_allclose(matrix_to_quat(m.reshape(3, 3)), [0.5, -0.5, -0.5, -0.5], atol=1e-15)


def test_quat_to_matrix_matches_mujoco_and_normalises():
    rng = np.random.default_rng(2)
    for q in list(random_quaternions(rng, 1000)) + near_half_turns(rng):
        theirs = np.zeros(9)
        mujoco.mju_quat2Mat(theirs, q)
        np.testing.assert_allclose(quat_to_matrix(q), theirs.reshape(3, 3), atol=1e-14)
        np.testing.assert_allclose(quat_to_matrix(2.5 * q), theirs.reshape(3, 3), atol=1e-14)
        np.testing.assert_allclose(quat_to_matrix(-q), theirs.reshape(3, 3), atol=1e-14)


def test_matrix_of_a_quaternion_maps_rotated_frame_to_parent():
    """R(q) @ v equals the rotation of v by q (MuJoCo's rotVecQuat): for the tcp quaternion,
    tool-frame vectors to base-frame vectors. And the textbook case: +90 deg about z turns x into y."""
    rng = np.random.default_rng(3)
    for q, v in zip(random_quaternions(rng, 200), rng.normal(size=(200, 3))):
        theirs = np.zeros(3)
        mujoco.mju_rotVecQuat(theirs, v, q)
        np.testing.assert_allclose(quat_to_matrix(q) @ v, theirs, atol=1e-12)
    about_z = rotvec_to_quat([0.0, 0.0, math.pi / 2])
    np.testing.assert_allclose(quat_to_matrix(about_z) @ [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], atol=1e-15)
    np.testing.assert_allclose(rotvec_to_matrix([0.0, 0.0, math.pi / 2]), quat_to_matrix(about_z))


def test_quat_multiply_matches_mujoco_and_composes_right_to_left():
    rng = np.random.default_rng(4)
    qs = random_quaternions(rng, 400)
    for a, b in zip(qs[::2], qs[1::2]):
        theirs = np.zeros(4)
        mujoco.mju_mulQuat(theirs, a, b)
        np.testing.assert_allclose(quat_multiply(a, b), theirs, atol=1e-15)
        np.testing.assert_allclose(quat_to_matrix(quat_multiply(a, b)), quat_to_matrix(a) @ quat_to_matrix(b),
                                   atol=1e-12)
        np.testing.assert_allclose(quat_multiply(a, quat_conjugate(a)), [1, 0, 0, 0], atol=1e-15)


def test_rotvec_conversions_match_mujoco_and_take_the_short_way():
    rng = np.random.default_rng(5)
    axes = random_axes(rng, 500)
    angles = rng.uniform(-2 * math.pi, 2 * math.pi, 500)
    for axis, angle in zip(axes, angles):
        q = rotvec_to_quat(axis * angle)
        np.testing.assert_allclose(q, mujoco_quaternion(axis, angle), atol=1e-15)
        theirs = np.zeros(3)
        mujoco.mju_quat2Vel(theirs, q, 1.0)  # angular velocity over 1 s: the short-way rotvec
        ours = quat_to_rotvec(q)
        np.testing.assert_allclose(ours, theirs, atol=1e-12)
        assert np.linalg.norm(ours) <= math.pi + 1e-12
        np.testing.assert_allclose(quat_to_rotvec(-3.0 * q), ours, atol=1e-12)  # sign and scale free
    np.testing.assert_array_equal(rotvec_to_quat(np.zeros(3)), [1.0, 0.0, 0.0, 0.0])
    np.testing.assert_array_equal(quat_to_rotvec([1.0, 0.0, 0.0, 0.0]), np.zeros(3))
    np.testing.assert_allclose(quat_to_rotvec(rotvec_to_quat([0.0, 1e-10, 0.0])), [0.0, 1e-10, 0.0], rtol=1e-12)


def test_round_trips():
    rng = np.random.default_rng(6)
    for q in list(random_quaternions(rng, 1000)) + near_half_turns(rng):
        canonical = q if q[0] >= 0 else -q
        back = matrix_to_quat(quat_to_matrix(q))
        assert quat_angle(back, canonical) < 1e-7 and back[0] >= 0
        np.testing.assert_allclose(quat_to_matrix(back), quat_to_matrix(q), atol=1e-14)
        if canonical[0] > 1e-6:
            np.testing.assert_allclose(back, canonical, atol=1e-12)
    for rotvec in random_axes(rng, 500) * rng.uniform(0, math.pi - 1e-6, (500, 1)):
        np.testing.assert_allclose(quat_to_rotvec(rotvec_to_quat(rotvec)), rotvec, atol=1e-12)
        np.testing.assert_allclose(rotvec_to_matrix(rotvec) @ rotvec, rotvec, atol=1e-12)  # axis is fixed


def test_quat_angle():
    rng = np.random.default_rng(7)
    for axis, angle, q in zip(random_axes(rng, 100), rng.uniform(0, math.pi, 100), random_quaternions(rng, 100)):
        turned = quat_multiply(rotvec_to_quat(axis * angle), q)
        assert quat_angle(q, turned) == pytest.approx(angle, abs=1e-6)
        assert quat_angle(q, -turned) == pytest.approx(angle, abs=1e-6)


@pytest.mark.skipif(not NUMBA_AVAILABLE, reason="without numba the kernels are their uncompiled code")
def test_compiled_kernels_equal_their_uncompiled_code_to_the_bit():
    rng = np.random.default_rng(8)
    quaternions = list(random_quaternions(rng, 300)) + near_half_turns(rng)
    for q in quaternions:
        m = np.zeros(9)
        mujoco.mju_quat2Mat(m, q)
        m = m.reshape(3, 3)
        rotvec = rng.normal(size=3) * 2.0
        other = random_quaternions(rng, 1)[0]
        cases = [
            (rotations.matrix_to_quaternion, (m,), np.zeros(4)),
            (rotations.quaternion_to_matrix, (q,), np.zeros((3, 3))),
            (rotations.quaternion_multiply, (q, other), np.zeros(4)),
            (rotations.rotvec_to_quaternion, (rotvec,), np.zeros(4)),
            (rotations.quaternion_to_rotvec, tuple(q), np.zeros(3)),
        ]
        for kernel, args, out in cases:
            assert kernel is not kernel.py_func  # really compiled
            twin = out.copy()
            kernel(*args, out)
            kernel.py_func(*args, twin)
            np.testing.assert_array_equal(out, twin, err_msg=kernel.__name__)
        filtered, twin = q.copy(), q.copy()
        rotations.nlerp_toward(filtered, other, 0.005)
        rotations.nlerp_toward.py_func(twin, other, 0.005)
        np.testing.assert_array_equal(filtered, twin)


def test_nlerp_toward_takes_the_short_arc_and_stays_unit():
    rng = np.random.default_rng(9)
    for q, target in zip(random_quaternions(rng, 100), random_quaternions(rng, 100)):
        filtered = q.copy()
        for _ in range(3000):  # 3 s of a 1 kHz filter, alpha 0.005
            rotations.nlerp_toward(filtered, target, 0.005)
            assert abs(np.linalg.norm(filtered) - 1.0) < 1e-12
        assert quat_angle(filtered, target) < 1e-5  # reached the rotation, whichever sign it was given in
        step = q.copy()
        rotations.nlerp_toward(step, target, 0.01)
        assert quat_angle(step, target) < quat_angle(q, target)  # every tick moves toward it


def test_wrappers_accept_lists_and_other_dtypes():
    np.testing.assert_allclose(matrix_to_quat(np.eye(3, dtype=np.float32).tolist()), [1, 0, 0, 0])
    np.testing.assert_allclose(quat_to_matrix([0, 0, 0, 1]), np.diag([-1.0, -1.0, 1.0]), atol=1e-15)
    np.testing.assert_allclose(matrix_to_quat(np.asfortranarray(quat_to_matrix([0.5, 0.5, 0.5, 0.5]))),
                               [0.5, 0.5, 0.5, 0.5], atol=1e-15)


def test_quat_to_rpy_rebuilds_the_rotation_as_rz_ry_rx():
    from controllers.rotations import quat_to_rpy

    def axis(i, angle):
        c, s = np.cos(angle), np.sin(angle)
        j, k = (i + 1) % 3, (i + 2) % 3
        m = np.eye(3)
        m[j, j], m[j, k], m[k, j], m[k, k] = c, -s, s, c
        return m

    rng = np.random.default_rng(0)
    for q in rng.normal(size=(200, 4)):
        roll, pitch, yaw = quat_to_rpy(q)
        assert abs(pitch) <= np.pi / 2
        np.testing.assert_allclose(axis(2, yaw) @ axis(1, pitch) @ axis(0, roll), quat_to_matrix(q), atol=1e-9)
    # The Panda's tcp pointing down (x flipped about base x): roll pi.
    np.testing.assert_allclose(np.abs(quat_to_rpy([0.0, 1.0, 0.0, 0.0])), [np.pi, 0.0, 0.0], atol=1e-12)
    for pitch in (np.pi / 2, -np.pi / 2):  # gimbal lock: still the same rotation
        q = matrix_to_quat(axis(2, 0.3) @ axis(1, pitch) @ axis(0, 0.2))
        r, p, y = quat_to_rpy(q)
        np.testing.assert_allclose(axis(2, y) @ axis(1, p) @ axis(0, r), quat_to_matrix(q), atol=1e-6)
