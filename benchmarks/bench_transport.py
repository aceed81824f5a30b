"""What robostack.transport costs over raw pyzmq, measured in one run on this machine.

1. Request/reply round trip over loopback tcp, the lock-step "step" path: raw REQ/REP with a
   bytes payload the size of our encoded messages (the floor) vs RequestClient/RequestServer
   with a 7-float action and a small meta dict.
2. PUB/SUB throughput of a 2x128x128x3 uint8 camera frame pair: raw send_multipart of the same
   bytes vs Publisher.publish + recv + decode.

Servers and publishers run in spawned subprocesses, so the two sides do not share a GIL (a
thread would serialise them and inflate both figures). On a loaded machine the absolute
numbers move; the ratio, measured back to back, is the figure to watch.
"""

import multiprocessing as mp
import os
import sys
import time
from pathlib import Path

import numpy as np
import zmq

try:
    import robostack  # noqa: F401
except ImportError:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from robostack.transport import (
    Message, Publisher, RequestClient, RequestServer, decode, encode, free_tcp_endpoint)

ROUND_TRIPS = 5000
FRAMES = 2000

ACTION = np.array([0.01, -0.02, 0.0, 0.0, 0.0, 0.05, 1.0])
STEP_META = {"mode": "lockstep", "gripper": "close", "episode": 12, "t": 37}
OBS_META = {"reward": 0.0, "terminated": False, "truncated": False, "clamps": []}
OBS_ARRAYS = {"q": np.zeros(7), "dq": np.zeros(7), "ee_pose": np.zeros(7), "wrench": np.zeros(6)}
FRAME_PAIR = {"wrist": np.zeros((128, 128, 3), np.uint8),
              "front": np.zeros((128, 128, 3), np.uint8)}


def nbytes(frames) -> int:
    return sum(len(f) for f in frames)


# --- subprocess bodies --------------------------------------------------------------------------

def raw_rep_server(endpoint, reply_size, ready):
    sock = zmq.Context.instance().socket(zmq.REP)
    sock.bind(endpoint)
    payload = b"\0" * reply_size
    ready.set()
    while sock.poll(2000):  # exits 2 s after the client stops
        sock.recv()
        sock.send(payload)


def our_server(endpoint, ready):
    server = RequestServer(endpoint, "bench-server")
    ready.set()
    last = time.monotonic()
    while time.monotonic() - last < 2.0:
        request = server.poll(0.1)
        if request is not None:
            last = time.monotonic()
            server.reply(request, "obs", OBS_META, OBS_ARRAYS)


def raw_publisher(endpoint, go, n):
    sock = zmq.Context.instance().socket(zmq.PUB)
    sock.setsockopt(zmq.SNDHWM, n + 100)  # measure throughput, not drops
    sock.bind(endpoint)
    frames = [bytes(f) for f in encode(Message("frames", {}, FRAME_PAIR))]
    while not go.is_set():  # ZeroMQ's slow joiner: send hellos until the subscriber sees one
        sock.send_multipart([b"hello"])
        time.sleep(0.01)
    for _ in range(n):
        sock.send_multipart(frames, copy=False)
    time.sleep(1.0)


def our_publisher(endpoint, go, n):
    pub = Publisher(endpoint, "bench-camera", hwm=n + 100)
    while not go.is_set():
        pub.publish("hello")
        time.sleep(0.01)
    for _ in range(n):
        pub.publish("frames", {"exposure_us": 8000}, FRAME_PAIR)
    time.sleep(1.0)


def start(target, *args):
    ready = mp.get_context("spawn").Event()
    proc = mp.get_context("spawn").Process(target=target, args=(*args, ready), daemon=True)
    proc.start()
    return proc, ready


# --- measurements -------------------------------------------------------------------------------

def percentiles(samples_s):
    us = np.array(samples_s) * 1e6
    return np.percentile(us, 50), np.percentile(us, 99)


def bench_round_trips(request_size, reply_size):
    """Raw REQ/REP and our client/server, interleaved in blocks of 50 so that both see the same
    machine load (other processes on a shared box shift absolute latency by 2x from minute to
    minute). Returns ({name: [seconds per round trip]}, {name: client CPU seconds per trip})."""
    raw_endpoint, our_endpoint = free_tcp_endpoint(), free_tcp_endpoint()
    raw_proc, raw_ready = start(raw_rep_server, raw_endpoint, reply_size)
    our_proc, our_ready = start(our_server, our_endpoint)
    raw_ready.wait(30)
    our_ready.wait(30)

    raw = zmq.Context.instance().socket(zmq.REQ)
    raw.setsockopt(zmq.LINGER, 0)
    raw.connect(raw_endpoint)
    payload = b"\0" * request_size

    def raw_round_trip():
        raw.send(payload)
        raw.recv()

    ours = RequestClient(our_endpoint, "bench-actor", timeout=2.0)

    def our_round_trip():
        ours.request("step", STEP_META, {"action": ACTION})

    times = {"raw": [], "ours": []}
    cpu = {"raw": 0.0, "ours": 0.0}  # this thread's CPU time: less load-sensitive than wall time
    for block in range(ROUND_TRIPS // 50 + 4):
        for name, round_trip in [("raw", raw_round_trip), ("ours", our_round_trip)]:
            cpu_start = time.thread_time()
            for _ in range(50):
                t = time.perf_counter()
                round_trip()
                if block >= 4:  # the first blocks include connection set-up and warm-up
                    times[name].append(time.perf_counter() - t)
            if block >= 4:
                cpu[name] += time.thread_time() - cpu_start
    raw.close()
    ours.close()
    raw_proc.join(5)
    our_proc.join(5)
    return times, {name: seconds / len(times[name]) for name, seconds in cpu.items()}


def bench_frames(publisher, ours):
    """Frames/s a subscriber receives (and, for ours, decodes) from a publisher going flat out."""
    endpoint = free_tcp_endpoint()
    go = mp.get_context("spawn").Event()
    proc = mp.get_context("spawn").Process(target=publisher, args=(endpoint, go, FRAMES),
                                           daemon=True)
    proc.start()
    sock = zmq.Context.instance().socket(zmq.SUB)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVHWM, FRAMES + 100)
    sock.setsockopt(zmq.SUBSCRIBE, b"")
    sock.connect(endpoint)
    assert sock.poll(30000), "publisher never started"
    sock.recv_multipart()  # a hello arrived: the subscription is live, start the flood
    go.set()
    received, t0 = 0, None
    while received < FRAMES and sock.poll(2000):
        frames = sock.recv_multipart(copy=False)
        if ours:
            msg = decode(frames)
            if msg.kind != "frames":
                continue
        elif len(frames) == 1:
            continue
        if t0 is None:
            t0 = time.perf_counter()
        received += 1
    elapsed = time.perf_counter() - t0
    sock.close()
    proc.join(5)
    return (received - 1) / elapsed, received


def main():
    step_frames = encode(Message("step", STEP_META, {"action": ACTION}, "bench-actor", "0" * 12,
                                 1, 1.0))
    obs_frames = encode(Message("obs", OBS_META, OBS_ARRAYS, "bench-server", "0" * 12, 1, 1.0))
    request_size, reply_size = nbytes(step_frames), nbytes(obs_frames)

    t = time.perf_counter()
    for _ in range(20000):
        decode(encode(Message("step", STEP_META, {"action": ACTION}, "a", "s", 1, 1.0)))
    codec_us = (time.perf_counter() - t) / 20000 * 1e6

    print(f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f} (figures scale with it)")
    print(f"encode+decode of a step request ({request_size} B): {codec_us:.1f} us")
    times, cpu = bench_round_trips(request_size, reply_size)
    raw50, raw99 = percentiles(times["raw"])
    our50, our99 = percentiles(times["ours"])
    print(f"round trip, tcp loopback, {request_size} B request / {reply_size} B reply, "
          f"{len(times['raw'])} samples each, interleaved:")
    print(f"  raw pyzmq REQ/REP          p50 {raw50:7.1f} us   p99 {raw99:7.1f} us"
          f"   client CPU {cpu['raw'] * 1e6:6.1f} us")
    print(f"  RequestClient/Server       p50 {our50:7.1f} us   p99 {our99:7.1f} us"
          f"   client CPU {cpu['ours'] * 1e6:6.1f} us")
    print(f"  ours / raw                 p50 {our50 / raw50:7.2f} x    p99 {our99 / raw99:7.2f} x"
          f"   (added p50 {our50 - raw50:.1f} us; lock-step budget at 200 steps/s is 5000 us)")

    frame_mb = nbytes(encode(Message("frames", {}, FRAME_PAIR))) / 1e6
    # Alternate raw and ours twice and keep each one's best, to damp load from other processes.
    runs = [bench_frames(publisher, ours) for _ in range(2)
            for publisher, ours in [(raw_publisher, False), (our_publisher, True)]]
    (raw_fps, raw_n), (our_fps, our_n) = max(runs[0::2]), max(runs[1::2])
    print(f"PUB/SUB, 2x128x128x3 uint8 frame pair ({frame_mb * 1e3:.0f} kB), tcp loopback:")
    print(f"  raw pyzmq send_multipart   {raw_fps:8.0f} msg/s  {raw_fps * frame_mb:7.0f} MB/s"
          f"  ({raw_n}/{FRAMES} received)")
    print(f"  Publisher -> SUB + decode  {our_fps:8.0f} msg/s  {our_fps * frame_mb:7.0f} MB/s"
          f"  ({our_n}/{FRAMES} received)")
    print(f"  ours / raw                 {our_fps / raw_fps:8.2f} x")


if __name__ == "__main__":
    main()
