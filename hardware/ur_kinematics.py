"""Forward kinematics and the tcp Jacobian of a Universal Robots arm, from the nominal
Denavit-Hartenberg parameters Universal Robots publishes for each model ("DH parameters for
calculations of kinematics and dynamics", standard DH: T_i = Rz(q_i) Tz(d_i) Tx(a_i) Rx(alpha_i)).

ur_rtde reads no Jacobian, and one RTDE request per tick would cost more than the numpy here
(~40 us). The robot server needs one for the joint-limit guard's refusal (controllers/safety.py:
a command is refused when J⁺ times its pose step moves a latched joint further toward its limit).

Frames. `ur_base`: the controller's Base frame, the frame of getActualTCPPose and of the DH
table (at q = 0 a UR5e's flange is at (-0.8172, -0.2329, 0.0628) m in it). `flange`: DH frame 6,
the tool flange. The tcp is wherever the controller's TCP offset puts it; the Jacobian is taken
at the tcp's measured position, so it needs no offset. A real arm's own calibration moves its
kinematics a few millimetres from these nominal values: fine for the guard's direction test, not
for metrology.
"""

from __future__ import annotations

import math

import numpy as np

from controllers._kernels import jit

# (d1, a2, a3, d4, d5, d6) in m; the other a_i and d_i are zero.
DH_PARAMETERS = {
    "ur3": (0.1519, -0.24365, -0.21325, 0.11235, 0.08535, 0.0819),
    "ur5": (0.089159, -0.425, -0.39225, 0.10915, 0.09465, 0.0823),
    "ur10": (0.1273, -0.612, -0.5723, 0.163941, 0.1157, 0.0922),
    "ur3e": (0.15185, -0.24355, -0.2132, 0.13105, 0.08535, 0.0921),
    "ur5e": (0.1625, -0.425, -0.3922, 0.1333, 0.0997, 0.0996),
    "ur10e": (0.1807, -0.6127, -0.57155, 0.17415, 0.11985, 0.11655),
    "ur16e": (0.1807, -0.4784, -0.36, 0.17415, 0.11985, 0.11655),
}
ALPHA = np.array([np.pi / 2, 0.0, 0.0, np.pi / 2, -np.pi / 2, 0.0])
MODELS = tuple(DH_PARAMETERS)


_TABLES = {model: (np.array([d1, 0.0, 0.0, d4, d5, d6]), np.array([0.0, a2, a3, 0.0, 0.0, 0.0]))
           for model, (d1, a2, a3, d4, d5, d6) in DH_PARAMETERS.items()}
_COS_ALPHA, _SIN_ALPHA = np.cos(ALPHA), np.sin(ALPHA)


def _table(model: str) -> tuple[np.ndarray, np.ndarray]:
    """(d (6,), a (6,)) of `model`."""
    if model not in _TABLES:
        raise ValueError(f"unknown UR model {model!r}: one of {', '.join(MODELS)} (--ur-model)")
    return _TABLES[model]


def joint_frames(q, model: str = "ur5e") -> np.ndarray:
    """(7, 4, 4): the DH frames 0..6 in ur_base; frame i-1's z axis is joint i's axis."""
    d, a = _table(model)
    q = np.asarray(q, dtype=float)
    if q.shape != (6,):
        raise ValueError(f"a UR has 6 joints, got q of shape {q.shape}")
    frames = np.empty((7, 4, 4))
    frames[0] = np.eye(4)
    ct, st, ca, sa = np.cos(q), np.sin(q), _COS_ALPHA, _SIN_ALPHA
    for i in range(6):
        link = np.array([[ct[i], -st[i] * ca[i], st[i] * sa[i], a[i] * ct[i]],
                         [st[i], ct[i] * ca[i], -ct[i] * sa[i], a[i] * st[i]],
                         [0.0, sa[i], ca[i], d[i]],
                         [0.0, 0.0, 0.0, 1.0]])
        frames[i + 1] = frames[i] @ link
    return frames


def flange_pose(q, model: str = "ur5e") -> np.ndarray:
    """The flange's pose in ur_base, (4, 4)."""
    return joint_frames(q, model)[6]


def tcp_pose(q, tcp_offset, model: str = "ur5e") -> tuple[np.ndarray, np.ndarray]:
    """(position (3,), rotation (3, 3)) of the tcp in ur_base, for a TCP offset [x, y, z, rx, ry,
    rz] in the flange frame (m, axis-angle rad; getTCPOffset's form)."""
    from controllers.rotations import rotvec_to_matrix

    flange = flange_pose(q, model)
    offset = np.asarray(tcp_offset, dtype=float)
    return flange[:3, 3] + flange[:3, :3] @ offset[:3], flange[:3, :3] @ rotvec_to_matrix(offset[3:])


def tcp_jacobian(q, tcp_position, model: str = "ur5e", out: np.ndarray | None = None) -> np.ndarray:
    """(6, 6) geometric Jacobian at the point tcp_position (ur_base, m): rows [linear velocity
    (m/s); angular velocity (rad/s)] in ur_base per joint velocity (rad/s). Written into `out`
    when given (a tick allocates nothing); compiled: ~1 us, against ~45 us through joint_frames."""
    d, a = _table(model)
    out = np.empty((6, 6)) if out is None else out
    _jacobian_kernel(np.asarray(q, dtype=np.float64), np.asarray(tcp_position, dtype=np.float64),
                     d, a, _COS_ALPHA, _SIN_ALPHA, out)
    return out


@jit
def _jacobian_kernel(q, p, d, a, ca, sa, out):
    # The chain of joint_frames, rotation and origin only, in scalars: column i is joint i's
    # axis z (frame i-1's third column) and z x (p - origin of frame i-1).
    r = np.eye(3)
    o = np.zeros(3)
    for i in range(6):
        out[0, i] = r[1, 2] * (p[2] - o[2]) - r[2, 2] * (p[1] - o[1])
        out[1, i] = r[2, 2] * (p[0] - o[0]) - r[0, 2] * (p[2] - o[2])
        out[2, i] = r[0, 2] * (p[1] - o[1]) - r[1, 2] * (p[0] - o[0])
        out[3, i], out[4, i], out[5, i] = r[0, 2], r[1, 2], r[2, 2]
        ct, st = math.cos(q[i]), math.sin(q[i])
        # link i: rotation Rz(q) Rx(alpha), translation (a ct, a st, d)
        for row in range(3):
            x, y, z = r[row, 0], r[row, 1], r[row, 2]
            o[row] += x * a[i] * ct + y * a[i] * st + z * d[i]
            c0 = x * ct + y * st
            c1 = -x * st + y * ct
            r[row, 0] = c0
            r[row, 1] = c1 * ca[i] + z * sa[i]
            r[row, 2] = -c1 * sa[i] + z * ca[i]
    return out
