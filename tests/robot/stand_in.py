"""The MuJoCo mirror presented with another declaration of the backend contract.

`StandIn(backend)` is a stand-in for a real arm: the simulated reset (teleport), the world (object
poses) and the compiled lock-step loop are withheld, as a Franka would not have them, so the robot
server has to drive it home through its ticks. Everything else is the mirror's own physics.

Run as a script it serves such an arm in real time (what tests/robot/test_homing.py starts):

    python tests/robot/stand_in.py COMMAND_ENDPOINT STATE_ENDPOINT HOME_Q_JSON HOME_TIMEOUT
"""

from __future__ import annotations

import dataclasses
import json
import signal
import sys

from controllers.robot_interface import CAPABILITY_MEMBER

REAL_ARM_LACKS = ("simulated_reset", "world", "compiled_impedance_loop")


class StandIn:
    def __init__(self, inner, withhold=REAL_ARM_LACKS, control_mode=None):
        self._inner = inner
        self._hidden = {CAPABILITY_MEMBER[c] for c in withhold if CAPABILITY_MEMBER[c]}
        self.capabilities = dataclasses.replace(inner.capabilities, **{c: False for c in withhold})
        self.control_mode = control_mode or inner.control_mode

    def __getattr__(self, name):
        if name in self._hidden:
            raise AttributeError(f"{name}: withheld, this backend stands in for a real arm")
        return getattr(self._inner, name)


def real_arm_server(home_q, home_timeout: float, task_overrides=None, **config):
    """A RobotServer (task reach, its config changed by task_overrides) on a stand-in real arm
    whose task's home is `home_q`."""
    from robostack.robot.backends import make_backend
    from robostack.robot.server import RobotServer, RobotServerConfig
    from tasks import make_task

    task = make_task("reach")
    task = make_task("reach", dataclasses.replace(task.config, home_q=tuple(home_q), **(task_overrides or {})))
    backend = StandIn(make_backend("mujoco", task))
    return RobotServer(RobotServerConfig(task="reach", home_timeout=home_timeout, **config),
                       task=task, backend=backend)


def main(argv) -> int:
    command_endpoint, state_endpoint, home_q, home_timeout = argv
    server = real_arm_server(json.loads(home_q), float(home_timeout), clock="realtime",
                             command_endpoint=command_endpoint, state_endpoint=state_endpoint,
                             peer_timeout=30.0)

    def stop(signum, frame):
        server.running = False

    signal.signal(signal.SIGTERM, stop)
    server.serve()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
