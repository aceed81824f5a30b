"""The checks every real arm's end-to-end test makes of `robostack robot-server --backend ...`
running in real time (issue 16's figures): a missed command deadline -> hold, heartbeat loss ->
stopped, and `record-demos --device autopilot` then `replay --endpoint` on the arm. Used by
test_franka_end_to_end.py and test_franka_tracker.py (franky-sim) and test_ur_server.py (the
ur_rtde fake); each asserts its own bounds on what these return."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from types import SimpleNamespace

from robostack import transport
from robostack.data.episode_log import EpisodeLog
from robostack.robot.client import ZmqConnection


def transitions(connection) -> list[tuple]:
    return [tuple(t) for t in connection.request("state").meta["supervisor"]["transitions"]]


def deadline_hold_latencies(connection, trials: int = 5) -> list[float]:
    """Commands 1 cm down valid for 50 ms, each left to lapse: how late each hold came, in s, by
    the supervisor's own account ("missed by X s"). The arm must be armed."""
    late = []
    for _ in range(trials):
        s = connection.request("state").arrays
        connection.request("command", {"deadline": 0.05},
                           {"target_position": s["tcp_position"] + [0.0, 0.0, -0.01],
                            "target_quaternion": s["tcp_quaternion"]})
        time.sleep(0.15)
        hold = [t for t in transitions(connection) if t[2] == "tracking" and t[3] == "armed"][-1]
        late.append(float(re.search(r"missed by ([0-9.]+) s", hold[4]).group(1)))
    return late


def heartbeat_loss(command: str, state: str, offset=(0.03, 0.0, 0.0), wait: float = 5.0, **options):
    """Arm, command a target `offset` m away, then go silent (no heartbeat). Returns a namespace:
    silent (the time of the last request), stop and disarmed (the transitions into the damped
    stop and into disarmed after it, None if they did not come within `wait` s), message (the
    last state message), armed (the arm reply). Times are this host's monotonic clock, which the
    supervisor shares. options: for the ZmqConnection."""
    subscriber = transport.Subscriber(state, "state")
    connection = ZmqConnection(command, heartbeat=False, **options)  # the lease lives only while we send
    try:
        armed = connection.request("arm")
        s = connection.request("state").arrays
        connection.request("command", {"deadline": 1.0},
                           {"target_position": s["tcp_position"] + list(offset),
                            "target_quaternion": s["tcp_quaternion"]})
        silent = time.monotonic()
        stop = disarmed = None
        # Until a message shows the stop that followed our silence: the newest message received
        # may predate the arm request (seen on a loaded CI machine: "disarmed" from the test before).
        while time.monotonic() < silent + wait and disarmed is None:
            message = subscriber.latest(2.0)
            steps = [tuple(t) for t in message.meta["supervisor"]["transitions"]]
            stops = [t for t in steps if t[3] == "stopping" and t[1] >= silent]
            ends = [t for t in steps if t[2] == "stopping" and t[3] == "disarmed" and t[1] >= silent]
            stop, disarmed = (stops[-1] if stops else None), (ends[-1] if ends else None)
        return SimpleNamespace(silent=silent, stop=stop, disarmed=disarmed, message=message, armed=armed)
    finally:
        subscriber.close()
        connection.close()


def record_autopilot_episode(command: str, log, env: dict, cwd=None, timeout: float = 120.0):
    """`robostack record-demos --device autopilot --task reach --endpoint COMMAND`, one episode
    kept whatever its outcome. Returns (the finished process, the log's one episode, its events
    as (from, to) states)."""
    result = subprocess.run(
        [sys.executable, "-m", "robostack.cli", "record-demos", "--task", "reach", "--device", "autopilot",
         "--endpoint", command, "--episodes", "1", "--max-attempts", "1", "--keep", "all",
         "--view", "plain", "--log", str(log), "--seed", "5"],
        env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        return result, None, []
    episodes = EpisodeLog(log)
    assert len(episodes) == 1, f"{len(episodes)} episodes logged, 1 asked for"
    return result, episodes.episode(0), [(e["from_state"], e["to_state"]) for e in episodes.events(0)]


def replay_on(command: str, log, env: dict, cwd=None, timeout: float = 120.0, follow: str = "actions"):
    """`robostack replay LOG --endpoint COMMAND`: the finished process and its tcp position
    error vs the log, (mean, max) in mm, or None when it printed none."""
    result = subprocess.run([sys.executable, "-m", "robostack.cli", "replay", str(log), "--endpoint", command,
                             "--tolerance", "0.05", "--follow", follow], env=env, cwd=cwd, capture_output=True,
                            text=True, timeout=timeout)
    error = re.search(r"tcp position error vs the log: mean ([\d.]+) mm, max ([\d.]+) mm", result.stdout)
    return result, (float(error.group(1)), float(error.group(2))) if error else None
