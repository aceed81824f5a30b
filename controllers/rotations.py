"""Rotations: the one copy of every quaternion, matrix and rotation-vector conversion in the tree.

Conventions, everywhere:
- Quaternions are unit (w, x, y, z) (MuJoCo's order), Hamilton product: a ⊗ b rotates by b
  first, then by a.
- matrix -> quaternion always returns w >= 0 (q and -q are the same rotation; the one with the
  non-negative scalar part is the answer, so every caller sees the same numbers).
- A rotation matrix R of an orientation q maps vectors in the rotated frame to the parent frame:
  for the tcp quaternion (tcp in base), R @ v_tool = v_base.
- Rotation vectors are axis * angle (rad); quaternion -> rotation vector takes the shorter way
  round (|angle| <= π).

Every conversion is written once, as a kernel compiled with controllers._kernels.jit (plain
Python without numba, same results): it writes into `out` and allocates nothing, so the 1 kHz
controller and the MuJoCo mirror's compiled loop call it directly. Kernels have the long names
(`matrix_to_quaternion(matrix, out)`); Python callers use the short names
(`matrix_to_quat(matrix) -> q`), thin wrappers that allocate the result and call the kernel.
After editing a kernel, delete `controllers/__pycache__` (see controllers/_kernels.py: numba's
cache of the laws that call it would keep the old code).
"""

from __future__ import annotations

import math

import numpy as np

from controllers._kernels import jit


# --- kernels (compiled; write into `out`, allocate nothing) -------------------------------------
@jit
def matrix_to_quaternion(matrix, out):
    """out <- unit quaternion (w, x, y, z), w >= 0, of a 3x3 rotation matrix.

    Shepperd's method: divide by the largest of the four candidates 4w², 4x², 4y², 4z², so no
    branch loses precision, also near 180° where w -> 0."""
    r = matrix
    trace = r[0, 0] + r[1, 1] + r[2, 2]
    if trace > 0.0:
        s = 2.0 * math.sqrt(trace + 1.0)
        w = 0.25 * s
        x = (r[2, 1] - r[1, 2]) / s
        y = (r[0, 2] - r[2, 0]) / s
        z = (r[1, 0] - r[0, 1]) / s
    elif r[0, 0] > r[1, 1] and r[0, 0] > r[2, 2]:
        s = 2.0 * math.sqrt(1.0 + r[0, 0] - r[1, 1] - r[2, 2])
        w = (r[2, 1] - r[1, 2]) / s
        x = 0.25 * s
        y = (r[0, 1] + r[1, 0]) / s
        z = (r[0, 2] + r[2, 0]) / s
    elif r[1, 1] > r[2, 2]:
        s = 2.0 * math.sqrt(1.0 + r[1, 1] - r[0, 0] - r[2, 2])
        w = (r[0, 2] - r[2, 0]) / s
        x = (r[0, 1] + r[1, 0]) / s
        y = 0.25 * s
        z = (r[1, 2] + r[2, 1]) / s
    else:
        s = 2.0 * math.sqrt(1.0 + r[2, 2] - r[0, 0] - r[1, 1])
        w = (r[1, 0] - r[0, 1]) / s
        x = (r[0, 2] + r[2, 0]) / s
        y = (r[1, 2] + r[2, 1]) / s
        z = 0.25 * s
    # A matrix that is orthonormal only to rounding gives a quaternion of norm 1 to rounding:
    # normalise, so that every consumer gets a unit quaternion.
    norm = math.sqrt(w * w + x * x + y * y + z * z)
    if w < 0.0:
        norm = -norm
    out[0] = w / norm
    out[1] = x / norm
    out[2] = y / norm
    out[3] = z / norm


@jit
def quaternion_to_matrix(quaternion, out):
    """out (3, 3) <- rotation matrix of a quaternion (w, x, y, z), normalised first."""
    w, x, y, z = quaternion[0], quaternion[1], quaternion[2], quaternion[3]
    norm = math.sqrt(w * w + x * x + y * y + z * z)
    w, x, y, z = w / norm, x / norm, y / norm, z / norm
    out[0, 0] = 1.0 - 2.0 * (y * y + z * z)
    out[0, 1] = 2.0 * (x * y - w * z)
    out[0, 2] = 2.0 * (x * z + w * y)
    out[1, 0] = 2.0 * (x * y + w * z)
    out[1, 1] = 1.0 - 2.0 * (x * x + z * z)
    out[1, 2] = 2.0 * (y * z - w * x)
    out[2, 0] = 2.0 * (x * z - w * y)
    out[2, 1] = 2.0 * (y * z + w * x)
    out[2, 2] = 1.0 - 2.0 * (x * x + y * y)


@jit
def quaternion_multiply(a, b, out):
    """out <- a ⊗ b (Hamilton). `out` may be `a` or `b`."""
    aw, ax, ay, az = a[0], a[1], a[2], a[3]
    bw, bx, by, bz = b[0], b[1], b[2], b[3]
    out[0] = aw * bw - ax * bx - ay * by - az * bz
    out[1] = aw * bx + ax * bw + ay * bz - az * by
    out[2] = aw * by - ax * bz + ay * bw + az * bx
    out[3] = aw * bz + ax * by - ay * bx + az * bw


@jit
def rotvec_to_quaternion(rotvec, out):
    """out <- unit quaternion of the rotation vector axis * angle (rad)."""
    angle = math.sqrt(rotvec[0] * rotvec[0] + rotvec[1] * rotvec[1] + rotvec[2] * rotvec[2])
    if angle < 1e-12:
        out[0] = 1.0
        out[1] = 0.0
        out[2] = 0.0
        out[3] = 0.0
        return
    s = math.sin(0.5 * angle) / angle
    out[0] = math.cos(0.5 * angle)
    out[1] = s * rotvec[0]
    out[2] = s * rotvec[1]
    out[3] = s * rotvec[2]


@jit
def quaternion_to_rotvec(w, x, y, z, out):
    """out <- rotation vector (rad) of the UNIT quaternion (w, x, y, z), the shorter way round.

    Takes the components, not an array, so that a compiled caller holding a quaternion it just
    computed (the impedance law's orientation error) needs no scratch array."""
    if w < 0.0:  # q and -q are the same rotation; take the one with the smaller angle
        w, x, y, z = -w, -x, -y, -z
    s = math.sqrt(x * x + y * y + z * z)
    # θ/sin(θ/2) -> 2 as θ -> 0; below 1e-9 the series is exact in double precision.
    scale = 2.0 * math.atan2(s, w) / s if s > 1e-9 else 2.0
    out[0] = scale * x
    out[1] = scale * y
    out[2] = scale * z


@jit
def nlerp_toward(quaternion, target, alpha):
    """quaternion <- normalize((1 - alpha) quaternion + alpha target), in place, taking the sign of
    target that lies on the shorter arc. For the small alpha of a 1 kHz filter this is slerp to
    within rounding, at a third of the cost."""
    dot = 0.0
    for i in range(4):
        dot += quaternion[i] * target[i]
    sign = 1.0 if dot >= 0.0 else -1.0
    norm = 0.0
    for i in range(4):
        quaternion[i] += alpha * (sign * target[i] - quaternion[i])
        norm += quaternion[i] * quaternion[i]
    norm = math.sqrt(norm)
    for i in range(4):
        quaternion[i] /= norm


# --- Python API (allocating wrappers of the kernels) --------------------------------------------
def _float_array(value) -> np.ndarray:
    # One dtype and memory layout, so the compiled kernels never compile a second variant.
    return np.ascontiguousarray(value, dtype=np.float64)


def matrix_to_quat(matrix) -> np.ndarray:
    """Rotation matrix (3, 3) -> unit quaternion (w, x, y, z) with w >= 0."""
    out = np.empty(4)
    matrix_to_quaternion(_float_array(matrix), out)
    return out


def quat_to_matrix(q) -> np.ndarray:
    """Quaternion (w, x, y, z), normalised here -> rotation matrix (3, 3). For the tcp quaternion
    this maps tool-frame vectors to base-frame vectors."""
    out = np.empty((3, 3))
    quaternion_to_matrix(_float_array(q), out)
    return out


def quat_multiply(a, b) -> np.ndarray:
    """a ⊗ b: rotate by b, then by a."""
    out = np.empty(4)
    quaternion_multiply(_float_array(a), _float_array(b), out)
    return out


def quat_conjugate(q) -> np.ndarray:
    """The inverse rotation of a unit quaternion."""
    return np.array([q[0], -q[1], -q[2], -q[3]], dtype=np.float64)


def rotvec_to_quat(rotvec) -> np.ndarray:
    """Rotation vector axis * angle (rad) -> unit quaternion (w, x, y, z)."""
    out = np.empty(4)
    rotvec_to_quaternion(_float_array(rotvec), out)
    return out


def quat_to_rotvec(q) -> np.ndarray:
    """Quaternion (w, x, y, z), normalised here -> rotation vector (rad), |angle| <= π."""
    w, x, y, z = _float_array(q) / float(np.linalg.norm(q))
    out = np.empty(3)
    quaternion_to_rotvec(w, x, y, z, out)
    return out


def rotvec_to_matrix(rotvec) -> np.ndarray:
    """Rotation vector axis * angle (rad) -> rotation matrix (3, 3)."""
    return quat_to_matrix(rotvec_to_quat(rotvec))


def quat_angle(a, b) -> float:
    """Angle (rad, in [0, π]) of the rotation taking a to b."""
    dot = abs(float(np.dot(a, b))) / (np.linalg.norm(a) * np.linalg.norm(b))
    return 2.0 * float(np.arccos(min(1.0, dot)))


def quat_to_rpy(q) -> np.ndarray:
    """Quaternion (w, x, y, z) -> roll, pitch, yaw (rad) with R = Rz(yaw) Ry(pitch) Rx(roll)
    (fixed axes x, then y, then z: the convention of ROS, URDF and Franka Desk). For display:
    at pitch ±π/2 roll and yaw are not unique (roll is then reported as 0)."""
    w, x, y, z = _float_array(q) / float(np.linalg.norm(q))
    sin_pitch = 2.0 * (w * y - z * x)
    if abs(sin_pitch) >= 1.0 - 1e-12:  # gimbal lock: only yaw - roll (or yaw + roll) is defined
        return np.array([0.0, np.copysign(np.pi / 2, sin_pitch), -2.0 * np.arctan2(x, w) * np.sign(sin_pitch)])
    return np.array([np.arctan2(2.0 * (w * x + y * z), 1.0 - 2.0 * (x * x + y * y)),
                     np.arcsin(sin_pitch),
                     np.arctan2(2.0 * (w * z + x * y), 1.0 - 2.0 * (y * y + z * z))])
