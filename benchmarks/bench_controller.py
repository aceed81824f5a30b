"""How long one 1 kHz Cartesian impedance tick costs: compiled (numba), the same law interpreted
(numba unavailable), and a straightforward numpy implementation (np.linalg.pinv & co.).

    .venv/bin/python benchmarks/bench_controller.py

States are a Franka Panda's: joint angles drawn inside the joint limits, the tcp Jacobian and
pose from the Panda's published (modified) DH parameters, so J has the arm's real conditioning.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
if "--uncompiled" in sys.argv:
    sys.modules["numba"] = None  # import numba now fails: the laws run as plain Python

from controllers import CartesianImpedanceController, CartesianImpedanceGains, NUMBA_AVAILABLE  # noqa: E402
from controllers.franka import JOINT_LOWER, JOINT_UPPER, TORQUE_LIMITS  # noqa: E402
from controllers.rotations import matrix_to_quat  # noqa: E402

# Panda modified-DH rows (a, d, alpha) for joints 1-7, then the flange (0.107 m) and the Franka
# Hand's tcp (0.1034 m further along the flange z axis).
DH = [(0.0, 0.333, 0.0), (0.0, 0.0, -math.pi / 2), (0.0, 0.316, math.pi / 2), (0.0825, 0.0, math.pi / 2),
      (-0.0825, 0.384, -math.pi / 2), (0.0, 0.0, math.pi / 2), (0.088, 0.0, math.pi / 2)]
TCP_OFFSET = 0.107 + 0.1034


def _dh(a, d, alpha, theta):
    ca, sa, ct, st = math.cos(alpha), math.sin(alpha), math.cos(theta), math.sin(theta)
    return np.array([[ct, -st, 0, a], [st * ca, ct * ca, -sa, -d * sa], [st * sa, ct * sa, ca, d * ca], [0, 0, 0, 1]])


def panda_kinematics(q):
    """tcp position (3,), rotation (3, 3) and Jacobian (6, 7) in the base frame."""
    t = np.eye(4)
    origins, axes = [], []
    for (a, d, alpha), theta in zip(DH, q):
        t = t @ _dh(a, d, alpha, theta)
        origins.append(t[:3, 3].copy())
        axes.append(t[:3, 2].copy())
    t = t @ _dh(0.0, TCP_OFFSET, 0.0, -math.pi / 4)  # the hand is mounted at -45° about the flange z
    p = t[:3, 3]
    jac = np.zeros((6, 7))
    for j in range(7):
        jac[:3, j] = np.cross(axes[j], p - origins[j])
        jac[3:, j] = axes[j]
    return p.copy(), t[:3, :3].copy(), jac


def make_states(n, seed=0):
    rng = np.random.default_rng(seed)
    lo, hi = np.array(JOINT_LOWER), np.array(JOINT_UPPER)
    states = []
    for _ in range(n):
        q = rng.uniform(lo + 0.3, hi - 0.3)
        p, r, jac = panda_kinematics(q)
        states.append(dict(q=q, dq=rng.normal(0, 0.2, 7), tcp_position=p, tcp_rotation=r,
                           tcp_quaternion=matrix_to_quat(r), jacobian=jac, coriolis=rng.normal(0, 0.3, 7)))
    return states


class NaiveNumpyController:
    """The same law written the obvious numpy way, as a baseline: allocates freely, uses
    np.linalg.pinv (an SVD) for the nullspace projector, calls small numpy functions everywhere."""

    def __init__(self, gains: CartesianImpedanceGains, dt=0.001, alpha=0.005):
        self.vec, self.clip, self.ilimit, self.tlimit, rate = gains.packed()
        self.gains = self.vec.copy()
        self.step, self.dt, self.alpha = rate * dt, dt, alpha

    def reset(self, q, p, quat):
        self.ref_p, self.ref_q, self.tgt_p, self.tgt_q = p.copy(), quat.copy(), p.copy(), quat.copy()
        self.posture, self.integral, self.tau_prev = q.copy(), np.zeros(6), np.zeros(7)

    def compute(self, q, dq, p, quat, jac, coriolis):
        a = self.alpha
        self.ref_p = (1 - a) * self.ref_p + a * self.tgt_p
        tgt = self.tgt_q if np.dot(self.tgt_q, self.ref_q) >= 0 else -self.tgt_q
        self.ref_q = (1 - a) * self.ref_q + a * tgt
        self.ref_q /= np.linalg.norm(self.ref_q)
        self.gains = (1 - a) * self.gains + a * self.vec
        k, d, ki, kn, dn = np.split(self.gains, [6, 12, 18, 25])
        w1, v1 = quat[0], quat[1:]
        w2, v2 = self.ref_q[0], -self.ref_q[1:]
        qe = np.concatenate([[w1 * w2 - v1 @ v2], w1 * v2 + w2 * v1 + np.cross(v1, v2)])
        qe *= np.sign(qe[0]) or 1.0
        s = np.linalg.norm(qe[1:])
        rot = qe[1:] * (2 * math.atan2(s, qe[0]) / s if s > 1e-9 else 2.0)
        e = np.clip(np.concatenate([p - self.ref_p, rot]), -self.clip, self.clip)
        bound = np.where(ki > 0, self.ilimit / np.maximum(ki, 1e-300), 0.0)
        self.integral = np.clip(self.integral + e * self.dt, -bound, bound)
        wrench = -k * e - d * (jac @ dq) - ki * self.integral
        jt_pinv = np.linalg.pinv(jac.T)
        tau_ns = (np.eye(7) - jac.T @ jt_pinv) @ (kn * (self.posture - q) - dn * dq)
        tau = jac.T @ wrench + tau_ns + coriolis
        tau = np.clip(tau, self.tau_prev - self.step, self.tau_prev + self.step)
        tau = np.clip(tau, -self.tlimit, self.tlimit)
        self.tau_prev = tau
        return tau


def time_per_call(fn, states, n_calls, repeats=5):
    """µs per call, cycling through the states: the best of `repeats` runs of n_calls // repeats
    (on a shared machine the minimum is the figure least disturbed by other processes)."""
    for s in states[:5]:
        fn(s)
    n, per_run, best = len(states), max(1, n_calls // repeats), float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        for i in range(per_run):
            fn(states[i % n])
        best = min(best, (time.perf_counter() - t0) / per_run * 1e6)
    return best


def run_controller(states, n_calls, orientation):
    ctrl = CartesianImpedanceController()
    s0 = states[0]
    ctrl.reset(s0["q"], s0["tcp_position"], s0["tcp_quaternion"])
    ctrl.set_reference(s0["tcp_position"] + [0.02, 0.0, -0.01], s0["tcp_quaternion"])
    compute = ctrl.compute
    return time_per_call(lambda s: compute(s["q"], s["dq"], s["tcp_position"], s[orientation],
                                           s["jacobian"], s["coriolis"]), states, n_calls)


def torque_difference(s0, pinv_damping):
    """Largest torque difference (Nm) between the numba controller and the naive numpy one
    (undamped np.linalg.pinv) over 300 ticks from one Panda state toward a 2 cm offset."""
    ctrl = CartesianImpedanceController(pinv_damping=pinv_damping)
    naive = NaiveNumpyController(CartesianImpedanceGains())
    for c in (ctrl, naive):
        c.reset(s0["q"], s0["tcp_position"], s0["tcp_quaternion"])
    ctrl.set_reference(s0["tcp_position"] + [0.02, 0.0, -0.01], s0["tcp_quaternion"])
    naive.tgt_p = s0["tcp_position"] + [0.02, 0.0, -0.01]
    args = (s0["q"], s0["dq"], s0["tcp_position"], s0["tcp_quaternion"], s0["jacobian"], s0["coriolis"])
    return max(float(np.abs(ctrl.compute(*args) - naive.compute(*args)).max()) for _ in range(300))


def main():
    states = make_states(200)
    if "--uncompiled" in sys.argv:
        assert not NUMBA_AVAILABLE
        print(json.dumps({"us": run_controller(states, 2000, "tcp_quaternion")}))
        return

    t0 = time.perf_counter()
    run_controller(states, 10, "tcp_quaternion")
    run_controller(states, 10, "tcp_rotation")
    warm = time.perf_counter() - t0
    compiled_q = run_controller(states, 50_000, "tcp_quaternion")
    compiled_r = run_controller(states, 50_000, "tcp_rotation")

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, __file__, "--uncompiled"], capture_output=True, text=True, env=env,
                         check=True, timeout=120)
    uncompiled = json.loads(out.stdout)["us"]

    naive = NaiveNumpyController(CartesianImpedanceGains())
    s0 = states[0]
    naive.reset(s0["q"], s0["tcp_position"], s0["tcp_quaternion"])
    naive.tgt_p = s0["tcp_position"] + [0.02, 0.0, -0.01]
    naive_us = time_per_call(lambda s: naive.compute(s["q"], s["dq"], s["tcp_position"], s["tcp_quaternion"],
                                                     s["jacobian"], s["coriolis"]), states, 10_000)

    diff_default, diff_undamped = (torque_difference(s0, pinv_damping) for pinv_damping in (1e-3, 1e-7))

    print(f"Cartesian impedance compute(), Panda states, 1 thread ({os.cpu_count()} cores, numba "
          f"{'on' if NUMBA_AVAILABLE else 'OFF'}; first calls incl. compile/cache load {warm:.2f} s)")
    print(f"  numba, quaternion input      {compiled_q:8.2f} us/call")
    print(f"  numba, rotation-matrix input {compiled_r:8.2f} us/call")
    print(f"  same law uncompiled          {uncompiled:8.2f} us/call   {uncompiled / compiled_q:6.1f}x numba")
    print(f"  naive numpy (pinv, allocs)   {naive_us:8.2f} us/call   {naive_us / compiled_q:6.1f}x numba")
    print(f"  max |tau_numba - tau_naive| over 300 ticks: {diff_default:.1e} Nm with the default pinv damping "
          f"1e-3, {diff_undamped:.1e} Nm with 1e-7")
    print(f"  (torque limits {TORQUE_LIMITS[0]:g}/{TORQUE_LIMITS[-1]:g} Nm; the machine may be shared: "
          f"trust the ratios more than the absolute figures)")


if __name__ == "__main__":
    main()
