"""Actor <-> learner transport on loopback tcp, next to raw pyzmq moving the same bytes in the
same run.

1. Transitions actor -> learner, in batches of 32 with one batch in flight (as actors send):
   ours = TransitionSender (copy into the batch, spool file written before sending, envelope,
   request, ack) into a receiver process doing what the learner does on receipt (dedup ledger,
   ReplayBuffer.add_batch, ack). The receiver acknowledges every batch as durable at once, so
   spool files are deleted right after their ack (a real learner does so at its checkpoints).
   raw = DEALER -> ROUTER with the same payload bytes per batch and a 16-byte reply.
   State transitions (20 floats) and pixel transitions (state + two 128x128x3 uint8 cameras,
   observation and next observation both sent).
2. Weight broadcast learner -> actor: publish() (copy of the acting parameters + SHA-256 +
   send) until the subscriber has verified and loaded them into its network, for the default
   state agent and a pixel agent (conv encoder, two cameras). raw = PUB/SUB of the same bytes.
3. --training N: wall-clock of `robostack train --single-process` and `robostack train`
   (robot server, actor, learner processes) with the same config and N env steps on pick_cube
   (state), each a whole command: start-up, demonstrations, training, final evaluation.
   benchmarks/bench_train_overhead.py measures this in more detail (training phase apart,
   pinned and unpinned, repeats): the issue 4 figure.

Senders and receivers are separate processes (spawned), so they do not share a GIL. On a loaded
machine absolute numbers move; the ratios, measured back to back, are the figures to watch.

    python benchmarks/bench_actor_learner.py [--quick] [--training 3000 [--training-args '...']]
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import multiprocessing as mp  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import gymnasium as gym  # noqa: E402
import numpy as np  # noqa: E402
import zmq  # noqa: E402

try:
    import robostack  # noqa: F401
except ImportError:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from robostack.transport import free_tcp_endpoint  # noqa: E402

BATCH = 32
STATE = 20
CAMERAS = ("images/wrist", "images/front")


def spaces(pixels: bool):
    obs = {"state": gym.spaces.Box(-np.inf, np.inf, (STATE,), np.float32)}
    if pixels:
        obs.update({k: gym.spaces.Box(0, 255, (128, 128, 3), np.uint8) for k in CAMERAS})
    return gym.spaces.Dict(obs), gym.spaces.Box(-1.0, 1.0, (4,), np.float32)


def observation(rng, pixels: bool) -> dict:
    obs = {"state": rng.standard_normal(STATE).astype(np.float32)}
    if pixels:
        obs.update({k: rng.integers(0, 255, (128, 128, 3), np.uint8) for k in CAMERAS})
    return obs


# --- subprocess bodies --------------------------------------------------------------------------

def learner_receiver(endpoint, pixels, ready):
    """What the learner does with a transitions request, and nothing else."""
    import torch

    torch.set_num_threads(1)
    from robostack.rl.buffers import ReplayBuffer
    from robostack.training.transitions import Ledger, split_observations
    from robostack.transport import RequestServer

    server = RequestServer(endpoint, "bench-learner")
    obs_space, act_space = spaces(pixels)
    buffer = ReplayBuffer(4096, obs_space, act_space.shape[0])
    ledger = Ledger()
    ready.set()
    while (request := server.poll(5.0)) is not None:
        m = request.message
        actor = m.meta["actor"]
        if m.kind == "hello":
            server.reply(request, "welcome", {**ledger.ack(actor), "run": "bench", "sac": {},
                                              "demos": 0, "demo_episodes": 0})
            continue
        if m.kind == "transitions":
            got = ledger.accept(actor, m.meta["first_seq"], m.meta["count"], m.meta["episodes"])
            a, s = m.arrays, got.skip
            buffer.add_batch(split_observations(a, "obs/", s), a["actions"][s:], a["rewards"][s:],
                             split_observations(a, "next_obs/", s), a["terminations"][s:],
                             a["truncations"][s:])
        ledger.mark_durable(dict(ledger.stored))
        server.reply(request, "ack", {**ledger.ack(actor), "wait": False, "done": False, "eval": None})


def raw_router(endpoint, ready):
    sock = zmq.Context.instance().socket(zmq.ROUTER)
    sock.bind(endpoint)
    ready.set()
    while sock.poll(5000):
        frames = sock.recv_multipart()
        sock.send_multipart([frames[0], b"\0" * 16])


def weights_publisher(endpoint, pixels, rounds, go, out, ready):
    import torch

    torch.set_num_threads(1)
    from robostack.rl.sac import build_agent
    from robostack.training.config import RunConfig
    from robostack.training.weights import WeightsPublisher

    agent = build_agent(RunConfig().sac, *spaces(pixels))
    publisher = WeightsPublisher(endpoint, repeat_every=1e9)
    ready.set()
    go.wait(30)
    costs = []
    for version in range(1, rounds + 1):
        t0 = time.perf_counter()
        publisher.publish(agent, version)
        costs.append(time.perf_counter() - t0)
        time.sleep(0.05)
    out.put(costs)
    time.sleep(1.0)
    publisher.close()


def raw_publisher(endpoint, nbytes, rounds, go, ready):
    sock = zmq.Context.instance().socket(zmq.PUB)
    sock.bind(endpoint)
    payload = np.zeros(nbytes, np.uint8)
    ready.set()
    go.wait(30)
    for _ in range(rounds):
        sock.send_multipart([np.float64(time.monotonic()).tobytes(), payload], copy=False)
        time.sleep(0.05)
    time.sleep(1.0)


def start(target, *args):
    ready = mp.get_context("spawn").Event()
    proc = mp.get_context("spawn").Process(target=target, args=(*args, ready), daemon=True)
    proc.start()
    if not ready.wait(60):
        raise RuntimeError(f"{target.__name__} did not start")
    return proc


# --- 1. transitions ------------------------------------------------------------------------------

def bench_transitions(pixels: bool, count: int) -> dict:
    from robostack.training.transitions import TransitionSender, action_spec, observation_spec, stack_transitions

    rng = np.random.default_rng(0)
    obs_space, act_space = spaces(pixels)
    frames = [observation(rng, pixels) for _ in range(BATCH + 1)]
    action = np.zeros(4, np.float32)

    endpoint = free_tcp_endpoint()
    proc = start(learner_receiver, endpoint, pixels)
    hello = {"task": "bench", "obs_spec": observation_spec(obs_space),
             "action_spec": action_spec(act_space)}
    with tempfile.TemporaryDirectory() as spool:
        sender = TransitionSender(endpoint, "bench-actor", hello, spool, batch_steps=BATCH,
                                  timeout=10.0)
        sender.connect(30.0)
        t0 = time.perf_counter()
        for i in range(count):
            done = (i + 1) % 100 == 0
            sender.add(frames[i % BATCH], action, 0.0, frames[i % BATCH + 1], False, done)
            if done:
                sender.end_episode({})
            sender.pump(budget=10.0)
        assert sender.flush(30.0), "not everything was acknowledged"
        ours = count / (time.perf_counter() - t0)
        assert sender.stored == count
        sender.close()
    proc.join(10)

    # Raw: the same bytes per batch, as one multipart message, one batch in flight.
    payload = [np.ascontiguousarray(v) for v in stack_transitions(
        [(frames[i], action, 0.0, frames[i + 1], False, False) for i in range(BATCH)]).values()]
    endpoint = free_tcp_endpoint()
    proc = start(raw_router, endpoint)
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.connect(endpoint)
    batches = max(1, count // BATCH)
    t0 = time.perf_counter()
    for _ in range(batches):
        sock.send_multipart(payload, copy=len(payload[0].data) < 65536)
        sock.recv()
    raw = batches * BATCH / (time.perf_counter() - t0)
    sock.close()
    proc.join(10)
    return {"ours": ours, "raw": raw, "batch_bytes": sum(p.nbytes for p in payload)}


# --- 2. weights ----------------------------------------------------------------------------------

def bench_weights(pixels: bool, rounds: int) -> dict:
    import torch

    torch.set_num_threads(1)
    from robostack.rl.sac import build_agent
    from robostack.training.config import RunConfig
    from robostack.training.weights import WeightsSubscriber, acting_state

    ctx = mp.get_context("spawn")
    agent = build_agent(RunConfig().sac, *spaces(pixels))
    nbytes = sum(a.nbytes for a in acting_state(agent).values())

    endpoint, go, out = free_tcp_endpoint(), ctx.Event(), ctx.Queue()
    proc = start(weights_publisher, endpoint, pixels, rounds, go, out)
    subscriber = WeightsSubscriber(endpoint, say=lambda text: None)
    time.sleep(0.5)  # subscription up before the first publish
    go.set()
    latencies, deadline = [], time.monotonic() + 30 + rounds
    while len(latencies) < rounds and time.monotonic() < deadline:
        if subscriber.poll(agent):  # verified and loaded
            latencies.append(time.monotonic() - subscriber.stamp)
    costs = out.get(timeout=30)
    proc.join(10)
    subscriber.close()

    endpoint, go = free_tcp_endpoint(), ctx.Event()
    proc = start(raw_publisher, endpoint, nbytes, rounds, go)
    sock = zmq.Context.instance().socket(zmq.SUB)
    sock.setsockopt(zmq.SUBSCRIBE, b"")
    sock.connect(endpoint)
    time.sleep(0.5)
    go.set()
    raw = []
    while len(raw) < rounds and sock.poll(5000):
        stamp, _ = sock.recv_multipart()
        raw.append(time.monotonic() - np.frombuffer(stamp, np.float64)[0])
    sock.close()
    proc.join(10)
    return {"bytes": nbytes, "publish": statistics.median(costs),
            "deliver": statistics.median(latencies), "raw": statistics.median(raw),
            "received": len(latencies)}


# --- 3. training wall-clock ----------------------------------------------------------------------

def bench_training(steps: int, extra_args: list[str]) -> dict:
    common = ["--task", "pick_cube", "--total-steps", str(steps), "--eval-every", str(10 * steps),
              "--eval-episodes", "10", "--progress-every", str(max(500, steps // 4)),
              "--resume", "false", *extra_args]
    times = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, extra in (("single-process", ["--single-process"]), ("actor-learner", [])):
            command = [sys.executable, "-m", "robostack.cli", "train", *common, *extra,
                       "--run-dir", str(Path(tmp) / name)]
            t0, cpu0 = time.perf_counter(), _children_cpu()
            done = subprocess.run(command, capture_output=True, text=True,
                                  env=dict(os.environ, OMP_NUM_THREADS="1"))
            times[name] = time.perf_counter() - t0
            times[name + " cpu"] = _children_cpu() - cpu0
            if done.returncode != 0:
                raise RuntimeError(f"{name} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
            final = [line for line in done.stdout.splitlines() if line.startswith("final")]
            print(f"  {name:<15} {times[name]:6.1f} s wall, {times[name + ' cpu']:6.1f} s CPU (all "
                  f"its processes)   {final[-1] if final else ''}")
    return times


def _children_cpu() -> float:
    """CPU seconds of finished child processes and their waited-for descendants."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer transitions and rounds")
    parser.add_argument("--training", type=int, default=0,
                        help="also time a training run of this many env steps both ways")
    parser.add_argument("--training-args", default="",
                        help="extra `robostack train` options for both runs, e.g. '--sac-num-critics 2'")
    args = parser.parse_args()
    state_n, pixel_n, rounds = (3200, 320, 10) if args.quick else (16000, 1024, 30)

    print(f"transitions actor -> learner, batches of {BATCH}, one in flight, tcp loopback")
    for label, pixels, n in (("state", False, state_n), ("2x128x128 pixels", True, pixel_n)):
        r = bench_transitions(pixels, n)
        print(f"  {label:<17} ours {r['ours']:8.0f} transitions/s   raw pyzmq {r['raw']:8.0f}/s   "
              f"({r['ours'] / r['raw']:.0%} of raw; {r['batch_bytes'] / 1e3:.0f} kB per batch)")

    print("weights learner -> actor (PUB/SUB, tcp loopback), median of "
          f"{rounds} broadcasts")
    for label, pixels in (("state agent", False), ("pixel agent", True)):
        r = bench_weights(pixels, rounds)
        print(f"  {label:<12} {r['bytes'] / 1e6:5.2f} MB: publish {r['publish'] * 1e3:6.2f} ms "
              f"(copy + SHA-256 + send), delivered + verified + loaded {r['deliver'] * 1e3:6.2f} ms "
              f"later; total {(r['publish'] + r['deliver']) * 1e3:6.2f} ms vs raw PUB/SUB "
              f"{r['raw'] * 1e3:6.2f} ms  ({r['received']}/{rounds} received)")

    if args.training:
        print(f"training wall-clock, pick_cube state, {args.training} env steps, whole command")
        t = bench_training(args.training, args.training_args.split())
        print(f"  actor-learner / single-process: wall {t['actor-learner'] / t['single-process']:.2f}, "
              f"CPU {t['actor-learner cpu'] / t['single-process cpu']:.2f}")


if __name__ == "__main__":
    main()
