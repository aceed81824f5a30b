"""The learner against hostile actors, over its real socket: `python -m robostack.training.learner`
fed random bytes, broken headers and array descriptors, and, from an actor that greeted it
properly, transitions, status and eval requests with non-finite, 2**64-sized and wrongly typed
values and arrays of every wrong shape and dtype, from concurrent clients, plus oversized frames.
Its receiver thread must answer each with a named error, the process stay up with bounded
memory, and a valid batch afterwards be stored and acknowledged exactly.

And when a thread dies anyway, the process goes down with it (non-zero exit), so the launcher
restarts it instead of keeping a learner that answers nobody.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import msgpack
import numpy as np
import pytest
import zmq

from robostack import transport
from robostack.env.spaces import action_space, observation_space
from robostack.training.config import RunConfig
from robostack.training.rollouts import task_config
from robostack.training.threads import EXIT_THREAD_DIED
from robostack.training.run_dir import read_run_identity
from robostack.training.transitions import PROTOCOL, action_spec, hello_proof, observation_spec
from robostack.transport import hostile
from tasks import make_task

TINY = ["--task", "reach", "--sac-hidden-dims", "16", "16", "--sac-num-critics", "2",
        "--sac-batch-size", "16", "--utd-ratio", "1", "--learning-starts", "1000000",
        "--eval-every", "0", "--demos", "0", "--total-steps", "1000000", "--checkpoint-every", "600"]
ENV = dict(os.environ, OMP_NUM_THREADS="1", MUJOCO_GL="egl", PYTHONUNBUFFERED="1")
MESSAGES = 600  # the benchmark sends 10,000
ROWS = 4
ACTOR, SESSION = "actor-0", "fuzzsession"
LEARNER_KINDS = {
    "hello": ["protocol", "task", "obs_spec", "action_spec", "actor", "run", "proof", "resend_from"],
    "transitions": ["actor", "stream", "first_seq", "count", "episodes", "weights_version", "unsent"],
    "status": ["actor", "weights_version", "unsent", "evaluator"],
    "eval": ["step", "success_rate", "time_to_success_s", "seconds", "weights_version", "episodes", "final"],
    "bye": ["awaiting_durable"], "durable": ["actor"], "stats": [], "nosuch": [],
}


def specs():
    task = make_task("reach", task_config(RunConfig(task="reach")))
    obs, act = observation_space(task), action_space(task.config)
    return obs, act


def hello_meta(run_dir, actor: str = ACTOR, session: str = SESSION, resend_from: int = 1) -> dict:
    """A hello of this run's actor `actor` (its proof made with the run's secret, run.json)."""
    obs, act = specs()
    run, secret = read_run_identity(run_dir / "run.json")
    return {"protocol": PROTOCOL, "task": "reach", "obs_spec": observation_spec(obs),
            "action_spec": action_spec(act), "actor": actor, "run": run,
            "proof": hello_proof(secret, run, actor, session), "resend_from": resend_from}


def batch_arrays(rows: int = ROWS) -> dict:
    obs, act = specs()
    arrays = {}
    for key, space in obs.spaces.items():
        for prefix in ("obs/", "next_obs/"):
            arrays[prefix + key] = np.zeros((rows, *space.shape), space.dtype)
    arrays["actions"] = np.zeros((rows, *act.shape), np.float32)
    arrays["rewards"] = np.zeros(rows, np.float32)
    arrays["terminations"] = np.zeros(rows, bool)
    arrays["truncations"] = np.zeros(rows, bool)
    return arrays


def message(kind: str, meta: dict, arrays=None, seq: int = 1, session: str = SESSION) -> list:
    frames = transport.encode(transport.Message(kind, meta, arrays or {}, ACTOR, session, seq, time.monotonic()))
    return [bytes(f) for f in frames]


def exchange(endpoint: str, frames: list) -> dict:
    """Send one request as raw frames; its reply's header."""
    with zmq.Context.instance().socket(zmq.DEALER) as sock:
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(endpoint)
        sock.send_multipart(frames)
        assert sock.poll(10_000), "no reply"
        reply = sock.recv_multipart()
    return msgpack.unpackb(reply[0])


@pytest.fixture
def learner(tmp_path):
    yield from start_learner(tmp_path)


def start_learner(tmp_path):
    """A stand-alone learner process (run in tmp_path/run), stderr (its log) in learner.err:
    yields (process, endpoint, stats client), killed afterwards."""
    endpoint, weights = transport.free_tcp_endpoint(), transport.free_tcp_endpoint()
    err = open(tmp_path / "learner.err", "w+")
    process = subprocess.Popen(
        [sys.executable, "-m", "robostack.training.learner", *TINY, "--run-dir", str(tmp_path / "run"),
         "--endpoint", endpoint, "--weights-endpoint", weights],
        env=ENV, stdout=subprocess.DEVNULL, stderr=err, text=True)
    client = transport.RequestClient(endpoint, source="test", timeout=1.0)
    deadline = time.monotonic() + 90
    try:
        while True:
            try:
                client.request("stats")
                break
            except transport.PeerTimeout:
                assert process.poll() is None, f"learner exited: {(tmp_path / 'learner.err').read_text()[-3000:]}"
                assert time.monotonic() < deadline, "learner not up in 90 s"
        yield process, endpoint, client
    finally:
        client.close()
        process.kill()
        process.wait(10)
        err.close()


def test_fuzz_the_learner_stays_up_names_every_error_and_stores_a_valid_batch(learner, tmp_path):
    process, endpoint, client = learner
    welcome = exchange(endpoint, message("hello", hello_meta(tmp_path / "run")))
    assert welcome["kind"] == "welcome", welcome
    rng = np.random.default_rng(21)
    layout = {name: (a.shape, a.dtype.str) for name, a in batch_arrays().items()}
    batch = [hostile.hostile_message(rng, LEARNER_KINDS, session=SESSION, arrays=layout,
                                     base_meta={"actor": ACTOR, "stream": "online", "first_seq": 1,
                                                "count": ROWS})
             for _ in range(MESSAGES)]
    rss_before = hostile.rss_bytes(process.pid)
    results = []
    threads = [threading.Thread(target=lambda part: results.append(hostile.send_all(endpoint, part)),
                                args=(batch[i::3],)) for i in range(3)]
    for thread in threads:
        thread.start()
    with zmq.Context.instance().socket(zmq.DEALER) as sock:  # past the 256 MiB frame bound
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(endpoint)
        sock.send_multipart(hostile.oversized_message(257 * 2**20))
        assert not sock.poll(500), "an oversized frame was answered, so it was read"
    for thread in threads:
        thread.join(120)
    assert process.poll() is None, f"learner died: {(tmp_path / 'learner.err').read_text()[-3000:]}"
    sent, replies = sum(r.sent for r in results), sum(r.replies for r in results)
    assert sent == MESSAGES and replies == sent, f"{replies} replies to {sent} messages"
    unnamed = [u for r in results for u in r.unnamed]
    assert not unnamed, unnamed[:5]
    assert sum(r.errors for r in results) >= 0.7 * sent, [r.kinds for r in results]
    assert hostile.rss_bytes(process.pid) - rss_before < 128 * 2**20

    # Still the same learner, answering correctly: a valid batch after what it holds is stored.
    exchange(endpoint, message("hello", hello_meta(tmp_path / "run")))
    status = exchange(endpoint, message("status", {"actor": ACTOR}))
    assert status["kind"] == "ack", status
    held = status["meta"]["stored"]
    ack = exchange(endpoint, message("transitions", {"actor": ACTOR, "stream": "online",
                                                     "first_seq": held + 1, "count": ROWS,
                                                     "episodes": []}, batch_arrays()))
    assert ack["kind"] == "ack" and ack["meta"]["stored"] == held + ROWS, ack
    stats = client.request("stats", timeout=10.0).meta
    # Nothing half-stored, and no gap: a batch ahead of the ledger is refused, never counted lost.
    assert stats["online"] == held + ROWS and stats["lost"] == 0


def test_a_refused_batch_changes_nothing(learner, tmp_path):
    """A batch whose arrays do not fit is refused before the ledger moves: its seqs are not
    counted as stored, so the actor's valid resend of them is."""
    process, endpoint, client = learner
    exchange(endpoint, message("hello", hello_meta(tmp_path / "run")))
    bad = batch_arrays()
    bad["actions"] = np.zeros((ROWS, 99), np.float32)
    for arrays, meta in ((bad, {}), (batch_arrays(), {"first_seq": 2**64 - 1}),
                         (batch_arrays(), {"count": 1e300}), (batch_arrays(), {"episodes": [{"last_seq": float("nan")}]}),
                         ({**batch_arrays(), "rewards": np.zeros(())}, {})):
        reply = exchange(endpoint, message("transitions", {"actor": ACTOR, "stream": "online",
                                                           "first_seq": 1, "count": ROWS, "episodes": [],
                                                           **meta}, arrays))
        assert reply["kind"] == "error" and "transitions" in reply["meta"]["error"], reply
    ack = exchange(endpoint, message("transitions", {"actor": ACTOR, "stream": "online", "first_seq": 1,
                                                     "count": ROWS, "episodes": []}, batch_arrays()))
    assert ack["meta"]["stored"] == ROWS
    assert client.request("stats", timeout=10.0).meta["lost"] == 0


def test_a_thread_that_dies_takes_its_process_down():
    code = ("import threading, time\n"
            "from robostack.training.threads import exit_when_a_thread_dies\n"
            "exit_when_a_thread_dies()\n"
            "threading.Thread(target=lambda: 1 / 0, name='receiver').start()\n"
            "time.sleep(30)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=ENV)
    assert done.returncode == EXIT_THREAD_DIED, done
    assert "thread 'receiver' died" in done.stderr and "ZeroDivisionError" in done.stderr


@pytest.mark.parametrize("module", ["robostack.training.learner", "robostack.training.actor"])
def test_the_training_processes_install_it(module):
    import importlib
    import inspect

    assert "exit_when_a_thread_dies()" in inspect.getsource(importlib.import_module(module).main)
