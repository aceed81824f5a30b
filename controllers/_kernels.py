"""Building blocks shared by the control laws: the `jit` decorator, finiteness checks, first-order
smoothing, the torque rate limit + clamp (all compiled), and `per_axis`, the check every gain
dataclass runs on its numbers.

Everything here is plain numpy-compatible Python that numba compiles when it is installed; without
numba the very same code runs interpreted (about 100x slower, identical results). The functions
write into arrays passed in and allocate nothing, so a 1 kHz loop never wakes the garbage
collector.

numba's on-disk cache (cache=True) keys each compiled function on its own source file only. After
editing this file or controllers/rotations.py (whose kernels the laws call), delete
`controllers/__pycache__` so that cached callers in the other modules are recompiled with the
new helper.
"""

from __future__ import annotations

import math

import numpy as np

try:
    import numba
except ImportError:  # the laws still run, uncompiled
    numba = None

NUMBA_AVAILABLE = numba is not None


def jit(fn):
    """numba.njit(cache=True, fastmath=False) when numba imports, else the function unchanged.

    fastmath stays off so that compiled and interpreted laws agree to rounding, which the tests
    check. Either way the result has `.py_func`, the uncompiled law.
    """
    if numba is None:
        fn.py_func = fn
        return fn
    return numba.njit(cache=True, fastmath=False)(fn)


@jit
def all_finite(x):
    """True if no element of the array is NaN or infinite."""
    for v in x.flat:
        if not math.isfinite(v):
            return False
    return True


@jit
def lerp_toward(x, target, alpha):
    """x <- x + alpha (target - x), element-wise and in place: one tick of a first-order low-pass.

    Once within 1e-12 of the target an element snaps onto it, so a gain smoothed toward 0 really
    becomes 0 (the integral term is then off, not just small).
    """
    for i in range(x.shape[0]):
        d = target[i] - x[i]
        if abs(d) <= 1e-12:
            x[i] = target[i]
        else:
            x[i] += alpha * d


@jit
def limit_torque(tau, tau_prev, max_step, torque_limit):
    """Rate-limit then clamp `tau` in place; return (rate_limited, clamped).

    |tau - tau_prev| <= max_step per joint (max_torque_rate * dt; the Franka aborts on torque
    jumps above 1000 Nm/s), then |tau| <= torque_limit. Clamping after the rate limit keeps the
    rate bound as long as tau_prev was itself within the limits, which it is when it is the
    previous output of this function.
    """
    rate_limited = False
    clamped = False
    for j in range(tau.shape[0]):
        t = tau[j]
        if t > tau_prev[j] + max_step:
            t = tau_prev[j] + max_step
            rate_limited = True
        elif t < tau_prev[j] - max_step:
            t = tau_prev[j] - max_step
            rate_limited = True
        if t > torque_limit[j]:
            t = torque_limit[j]
            clamped = True
        elif t < -torque_limit[j]:
            t = -torque_limit[j]
            clamped = True
        tau[j] = t
    return rate_limited, clamped


def per_axis(value, n: int, name: str, unit: str, allow_inf: bool = False) -> np.ndarray:
    """A gain given as one number or n numbers, as a float64 (n,) array; ValueError otherwise.

    Gains must be >= 0: a negative stiffness or damping would push the arm away from its target.
    """
    a = np.array(value, dtype=np.float64)
    if a.ndim == 0:
        a = np.full(n, float(a))
    if a.shape != (n,):
        raise ValueError(f"{name}: expected one number or {n} numbers in {unit}, got shape {a.shape}")
    # In Python floats: three numpy reductions on a (3,) array cost ~15 us, and a gains request
    # checks ~60 of these inside a 1 ms control tick.
    if not all(v >= 0.0 and (allow_inf or v != math.inf) for v in a.tolist()):  # NaN >= 0 is False
        finite = "" if allow_inf else "finite and "
        raise ValueError(f"{name}: every value must be {finite}>= 0 {unit}, got {a.tolist()}")
    return a
