"""Fuzz figure (issue 11): >= 10,000 hostile messages against the robot server (both clocks) and
the learner, over real loopback sockets, from 3 concurrent clients, plus oversized frames.

Reports per target: crashes (the process exited), hangs (messages left unanswered, or no
answer to a valid request afterwards), error replies that name no problem, RSS before/after,
and for the real-time server the loop's own figures: the worst time one request took inside a
1 kHz tick (receive + decode + handle + reply) under hostile traffic against the same under as
many valid requests, measured in the same run, and the missed ticks / worst tick lateness
(every cause: a shared machine's scheduler included). The robot server's hostile messages carry
its lease half the time (a controller gone hostile: they reach the handlers) and none the other
half (a stranger: refused at the lease check unless hello, state, stats or acquire), as in
tests/robot/test_fuzz.py; the valid baseline is sent by the lease holder. Its hostile messages
all fit the server's frame bound (4 KiB, RobotServerConfig.max_request_bytes): a larger frame is
dropped by ZeroMQ's I/O thread, never answered, and the oversized frames test that.

    .venv/bin/python benchmarks/bench_fuzz.py              # 10,000 messages per target
    .venv/bin/python benchmarks/bench_fuzz.py --messages 1000   # quick
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import zmq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.append(str(Path(__file__).resolve().parents[1] / "tests"))  # last: tests/tasks must not shadow tasks

from robostack import transport  # noqa: E402
from robostack.transport import hostile  # noqa: E402
from robostack.robot.client import ZmqConnection  # noqa: E402
from robot.test_fuzz import messages as robot_messages  # noqa: E402
from training.test_learner_fuzz import (  # noqa: E402
    ACTOR, LEARNER_KINDS, ROWS, SESSION, TINY, batch_arrays, hello_meta, message)

ENV = dict(os.environ, OMP_NUM_THREADS="1", MUJOCO_GL="egl")
CLIENTS = 3


def start(args: list[str], endpoint: str, probe: str, client=None):
    process = subprocess.Popen([sys.executable, "-m", *args], env=ENV, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    client = client or transport.RequestClient(endpoint, source="bench", timeout=5.0)
    deadline = time.monotonic() + 120
    while True:
        try:
            client.request(probe, timeout=1.0)
            return process, client
        except transport.PeerTimeout:
            if process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"{args[0]} did not come up (exit code {process.poll()})")


def flood(endpoint: str, batch: list) -> dict:
    """Send `batch` from CLIENTS concurrent clients, plus oversized frames on sockets of their own."""
    results = []
    threads = [threading.Thread(target=lambda part: results.append(hostile.send_all(endpoint, part)),
                                args=(batch[i::CLIENTS],)) for i in range(CLIENTS)]
    start_time = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return {"sent": sum(r.sent for r in results), "replies": sum(r.replies for r in results),
            "errors": sum(r.errors for r in results),
            "unnamed": sum(len(r.unnamed) for r in results), "seconds": time.monotonic() - start_time}


def oversized(endpoint: str, sizes) -> int:
    """Frames over the socket's bound; returns how many were answered (should be 0)."""
    answered = 0
    for size in sizes:
        with zmq.Context.instance().socket(zmq.DEALER) as sock:
            sock.setsockopt(zmq.LINGER, 0)
            sock.connect(endpoint)
            sock.send_multipart(hostile.oversized_message(size))
            answered += bool(sock.poll(300))
    return answered


def robot(clock: str, n: int, seed: int) -> None:
    command, state = transport.free_tcp_endpoint(), transport.free_tcp_endpoint()
    process, client = start(["robostack.robot.server", "--task", "reach", "--clock", clock,
                             "--command-endpoint", command, "--state-endpoint", state,
                             "--log-level", "CRITICAL"], command, "hello",
                            ZmqConnection(command, timeout=5.0, holder="bench"))
    try:
        client.request("arm")  # takes the lease
        # Baseline: as many valid requests of the kinds a client sends (hello, state, stats, and
        # commands holding the pose), from the same clients, with the holder's lease.
        pose = client.request("state")
        target = {"target_position": pose.arrays["tcp_position"], "target_quaternion": pose.arrays["tcp_quaternion"]}
        move = ("command" if clock == "realtime" else "step", {"gripper": 0.04, "lease": client.lease},
                target)
        kinds = [("hello", {}, {}), ("state", {}, {}), ("stats", {}, {}), move]
        valid = [[bytes(f) for f in transport.encode(transport.Message(
            *kinds[i % 4], "bench", "bench", i + 1, time.monotonic()))] for i in range(n)]
        client.request("stats", {"reset": True})
        base = flood(command, valid)
        base_loop = client.request("stats").meta["loop"]
        client.request("stats", {"reset": True})
        batch = robot_messages(seed, n, clock, client.lease)
        rss_before = hostile.rss_bytes(process.pid)
        result = flood(command, batch)
        big = oversized(command, [2**20, 16 * 2**20, 64 * 2**20])
        loop = client.request("stats").meta["loop"]
        crashed, ok, rss_after = aftermath(process, client, "hello", timeout=5.0)
        report(f"robot server, {clock}", result, crashed, ok, rss_before, rss_after, big)
        if clock == "realtime":
            print(loop_line("loop, hostile:", loop))
            print(loop_line("loop, valid:  ", base_loop))
            for what in ("request_cpu_max_ms", "request_max_ms"):
                ratio = loop[what] / max(1e-9, base_loop[what])
                verdict = "MET" if loop[what] <= 2.0 else "MISSED"
                print(f"  worst single-message {'CPU' if 'cpu' in what else 'wall'} time in a tick: "
                      f"hostile {loop[what]:.3f} ms / valid {base_loop[what]:.3f} ms = {ratio:.2f} x; "
                      f"target <= 2 ms: {verdict}")
        else:
            print(f"  valid baseline: {base['replies']}/{base['sent']} answered in {base['seconds']:.1f} s")
    finally:
        client.close()
        process.kill()
        process.wait(10)


def learner(n: int, seed: int) -> None:
    endpoint, weights = transport.free_tcp_endpoint(), transport.free_tcp_endpoint()
    with tempfile.TemporaryDirectory() as tmp:
        process, client = start(["robostack.training.learner", *TINY, "--run-dir", f"{tmp}/run",
                                 "--endpoint", endpoint, "--weights-endpoint", weights], endpoint, "stats")
        try:
            # The hello proves run membership with the run's secret (run.json, written before it binds).
            assert flood(endpoint, [message("hello", hello_meta(Path(tmp) / "run"))])["errors"] == 0
            rng = np.random.default_rng(seed)
            layout = {name: (a.shape, a.dtype.str) for name, a in batch_arrays().items()}
            batch = [hostile.hostile_message(rng, LEARNER_KINDS, session=SESSION, arrays=layout,
                                             base_meta={"actor": ACTOR, "stream": "online", "first_seq": 1,
                                                        "count": ROWS}) for _ in range(n)]
            rss_before = hostile.rss_bytes(process.pid)
            result = flood(endpoint, batch)
            big = oversized(endpoint, [257 * 2**20])
            crashed, ok, rss_after = aftermath(process, client, "stats", timeout=10.0)
            report("learner", result, crashed, ok, rss_before, rss_after, big)
        finally:
            client.close()
            process.kill()
            process.wait(10)


def aftermath(process, client, kind: str, timeout: float) -> tuple[bool, bool, int]:
    """After a flood: (crashed, still answers a valid `kind` request, RSS in bytes)."""
    rss = hostile.rss_bytes(process.pid)
    crashed = process.poll() is not None
    try:
        ok = client.request(kind, timeout=timeout).kind == kind
    except transport.TransportError:
        ok = False
    return crashed, ok, rss


def loop_line(label: str, loop: dict) -> str:
    """The real-time loop's own account of a flood (its "stats" reply's loop summary)."""
    return (f"  {label} worst request in a tick: CPU {loop['request_cpu_max_ms']:.3f} ms "
            f"({loop['request_cpu_max_kind'] or 'refused undecoded'}), wall {loop['request_max_ms']:.3f} ms "
            f"({loop['request_max_kind'] or 'refused undecoded'}); {loop['slow_requests']} of "
            f"{loop['requests']} requests over 1 ms CPU, missed ticks {loop['missed_ticks']} of "
            f"{loop['ticks']}, worst tick lateness {loop['stall_max_ms']:.2f} ms, overrun p99 "
            f"{loop['overrun_p99_ms']:.3f} ms")


def report(name, result, crashed, ok, rss_before, rss_after, big) -> None:
    hung = result["sent"] - result["replies"]
    print(f"{name}: {result['sent']} hostile messages in {result['seconds']:.1f} s from {CLIENTS} clients: "
          f"crashes {int(crashed)}, unanswered {hung}, valid request after: {'answered' if ok else 'NOT ANSWERED'}; "
          f"named errors {result['errors']}, unnamed {result['unnamed']}, other replies "
          f"{result['replies'] - result['errors'] - result['unnamed']}; oversized frames answered {big}; "
          f"RSS {rss_before / 2**20:.0f} -> {rss_after / 2**20:.0f} MiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=10_000, help="hostile messages per target")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", nargs="*", choices=["lockstep", "realtime", "learner"],
                        help="run these targets only (default: all)")
    args = parser.parse_args()
    print(f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}; {args.messages} messages "
          f"per target, seed {args.seed}")
    targets = args.only or ["lockstep", "realtime", "learner"]
    if "lockstep" in targets:
        robot("lockstep", args.messages, args.seed)
    if "realtime" in targets:
        robot("realtime", args.messages, args.seed + 1)
    if "learner" in targets:
        learner(args.messages, args.seed + 2)


if __name__ == "__main__":
    main()
