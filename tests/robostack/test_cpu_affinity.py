import os
import subprocess
import sys
import time

import pytest

from robostack import cpu_affinity


def test_plan_gives_each_actor_and_its_server_one_core_and_the_learner_the_rest():
    plan = cpu_affinity.plan_training(actors=2, cpus=[0, 1, 2, 3])
    assert plan == {"learner": [0, 1], "actor-0": [3], "robot-server-0": [3],
                    "actor-1": [2], "robot-server-1": [2]}


def test_plan_pins_nothing_when_actors_would_have_to_share_a_core():
    assert cpu_affinity.plan_training(actors=2, cpus=[0, 1]) is None
    assert cpu_affinity.plan_training(actors=1, cpus=[0]) is None


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="Linux only")
def test_pin_restricts_a_running_process_and_ignores_one_that_exited():
    cpu = cpu_affinity.available_cpus()[-1]
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(5)"])
    try:
        assert cpu_affinity.pin(child.pid, [cpu])
        assert os.sched_getaffinity(child.pid) == {cpu}
    finally:
        child.kill()
        child.wait()
    time.sleep(0.05)
    assert cpu_affinity.pin(child.pid, [cpu]) is False  # reaped: no such process
