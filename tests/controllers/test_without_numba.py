"""Without numba the same laws run interpreted: a fresh interpreter that cannot import numba must
produce the compiled controllers' torques."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

SCENARIO = """
import numpy as np
from controllers import (CartesianImpedanceController, CartesianImpedanceGains,
                         JointImpedanceController, NUMBA_AVAILABLE)

def scenario():
    rng = np.random.default_rng(0)
    q = rng.uniform(-1, 1, 7)
    jac = rng.normal(0, 0.4, (6, 7))
    pos, quat = np.array([0.5, 0.0, 0.3]), np.array([0.0, 1.0, 0.0, 0.0])
    cart = CartesianImpedanceController(CartesianImpedanceGains(translational_integral_gain=50.0))
    cart.reset(q, pos, quat)
    cart.set_reference(pos + [0.02, -0.03, 0.01], [0.1, 0.99, 0.05, 0.0])
    joint = JointImpedanceController()
    joint.reset(q)
    joint.set_reference(q + 0.3)
    taus, flags = [], []
    for _ in range(40):
        dq = rng.normal(0, 0.2, 7)
        coriolis = rng.normal(0, 0.1, 7)
        taus.append(cart.compute(q, dq, pos, quat, jac, coriolis).tolist())
        flags.append(cart.flags.tolist())
        taus.append(joint.compute(q, dq, coriolis).tolist())
        flags.append(joint.flags.tolist())
    return taus, flags
"""


def test_laws_run_without_numba_and_agree_with_compiled():
    code = "import sys, json\nsys.modules['numba'] = None  # import numba now raises ImportError\n" + SCENARIO + \
           "\nassert not NUMBA_AVAILABLE\nprint(json.dumps(scenario()))\n"
    root = Path(__file__).resolve().parents[2]
    result = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=120,
                            env={**os.environ, "PYTHONPATH": str(root), "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr
    taus_py, flags_py = json.loads(result.stdout)

    namespace = {}
    exec(SCENARIO, namespace)
    assert namespace["NUMBA_AVAILABLE"]
    taus, flags = namespace["scenario"]()
    np.testing.assert_allclose(np.array(taus), np.array(taus_py), rtol=1e-9, atol=1e-9)
    assert flags == flags_py
    assert np.abs(np.array(taus)).max() > 0.5  # the scenario does push
