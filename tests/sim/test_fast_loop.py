"""The compiled lock-step loop must be the Python tick loop, only faster: identical physics."""

import numpy as np
import pytest

from robostack.robot.server import RobotServer, RobotServerConfig


def run(fast: bool, ticks: int = 300):
    server = RobotServer(RobotServerConfig(task="pick_cube", fast_loop=fast))
    server.handle("reset", {"seed": 3}, {})
    assert (server._fast_loop is not None) == fast
    s = server.backend.state
    server.law.set_reference(s.tcp_position + [0.06, -0.04, -0.05], [0.0, 1.0, 0.0, 0.0])
    server.run_ticks(ticks)
    return server.backend.data.qpos.copy(), server._flag_ticks.copy(), server.law.reference


@pytest.mark.skipif(not RobotServer(RobotServerConfig(task="reach")).backend.capabilities
                    .compiled_impedance_loop, reason="numba not installed")
def test_compiled_loop_matches_python_loop():
    qpos_fast, flags_fast, ref_fast = run(True)
    qpos_slow, flags_slow, ref_slow = run(False)
    np.testing.assert_allclose(qpos_fast, qpos_slow, atol=1e-10)
    np.testing.assert_array_equal(flags_fast, flags_slow)
    np.testing.assert_allclose(ref_fast[0], ref_slow[0], atol=1e-12)
    assert np.abs(qpos_fast[:7] - run(True, ticks=1)[0][:7]).max() > 1e-3  # it really moved
