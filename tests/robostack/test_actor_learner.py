"""Actor and learner as real processes over real loopback sockets: crashes, restarts, several
actors, handshake refusals, the `robostack train` launcher and its signals.

Networks are tiny and episodes short: these tests check plumbing (counts, resends, process
life), not learning. Every process is killed in teardown whatever the test did, and every wait
is bounded.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from robostack import transport
from robostack.rl.buffers import ReplayBuffer
from robostack.rl.checkpoint import load_latest_checkpoint
from robostack.training.config import RunConfig
from robostack.training.run_dir import read_summary

TINY = ["--sac-hidden-dims", "16", "16", "--sac-num-critics", "2", "--sac-batch-size", "16",
        "--utd-ratio", "1", "--learning-starts", "40", "--eval-every", "0",
        "--progress-every", "100", "--demos", "0"]
SHORT = ["--max-episode-steps", "20"]  # short episodes
STARTUP = 90.0  # s; imports of torch + mujoco on a loaded 2-core machine


class Proc:
    """A robostack process with its output in a log file."""

    def __init__(self, tmp_path: Path, name: str, module: str, *args: str):
        self.name = name
        self.log = tmp_path / f"{name}.log"
        self._log = open(self.log, "ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", module, *args], stdout=self._log, stderr=subprocess.STDOUT,
            env=dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1"))

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait(self, timeout: float) -> int:
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"{self.name} still running after {timeout} s; its log:\n{self.text()[-3000:]}")

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self._log.close()


@pytest.fixture
def procs():
    started: list[Proc] = []
    yield started
    for p in started:
        p.kill()


class Learner:
    def __init__(self, tmp_path, procs, run_dir, *extra, endpoints=None, task="pick_cube"):
        self.endpoint, self.weights = endpoints or (transport.free_tcp_endpoint(),
                                                    transport.free_tcp_endpoint())
        self.run_dir = run_dir
        self.proc = Proc(tmp_path, f"learner-{len(procs)}", "robostack.training.learner", "--task", task,
                         "--run-dir", str(run_dir), "--endpoint", self.endpoint,
                         "--weights-endpoint", self.weights, "--checkpoint-every", "1.0",
                         "--weights-every", "0.3", *TINY, *extra)
        procs.append(self.proc)
        self.client = transport.RequestClient(self.endpoint, "test", timeout=2.0)

    def stats(self) -> dict | None:
        try:
            return self.client.request("stats").meta
        except transport.TransportError:
            return None

    def wait_for(self, predicate, timeout: float, what: str) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.process.poll() is None, f"learner exited:\n{self.proc.text()[-3000:]}"
            stats = self.stats()
            if stats is not None and predicate(stats):
                return stats
            time.sleep(0.2)
        pytest.fail(f"learner: {what} not within {timeout} s; last stats {self.stats()}\n"
                    f"{self.proc.text()[-3000:]}")


def robot_server(tmp_path, procs, name="robot-server", endpoints=None):
    command, state = endpoints or (transport.free_tcp_endpoint(), transport.free_tcp_endpoint())
    proc = Proc(tmp_path, name, "robostack.robot.server", "--task", "pick_cube",
                "--command-endpoint", command, "--state-endpoint", state, "--log-level", "WARNING")
    procs.append(proc)
    return proc, (command, state)


def actor(tmp_path, procs, learner, server_endpoint, actor_id="actor-0", *extra, log_name=None):
    proc = Proc(tmp_path, log_name or actor_id, "robostack.training.actor", "--actor-id", actor_id,
                "--run-dir", str(learner.run_dir), "--learner", learner.endpoint, "--weights", learner.weights,
                "--robot-server", server_endpoint, "--max-episode-steps", "20",
                "--spool-dir", str(tmp_path / "spool" / actor_id), "--batch-steps", "8",
                "--request-timeout", "1.0", "--weights-timeout", "10", *extra)
    procs.append(proc)
    return proc


def final_counts(run_dir: Path, actor_id: str, actor_proc: Proc) -> tuple[int, int, int]:
    """(env steps, last seq, learner-held seq) from the stopped actor's summary file."""
    summary = read_summary(run_dir, actor_id)
    assert summary is not None and summary["state"] == "stopped", \
        f"{actor_proc.name} wrote no final summary ({summary}):\n{actor_proc.text()[-3000:]}"
    return summary["steps"], summary["last_seq"], summary["learner_holds"]


def final_state(run_dir: Path) -> tuple[dict, ReplayBuffer, ReplayBuffer, dict]:
    ckpt = load_latest_checkpoint(run_dir)
    state = ckpt.state
    online = ReplayBuffer.load(run_dir / "buffers" / state["online_buffer"])
    demos = ReplayBuffer.load(run_dir / "buffers" / state["demo_buffer"])
    return json.loads(state["counters"]), online, demos, json.loads(state["ledger"])


# --- the stream pieces, in this process ------------------------------------------------------

def test_ledger_drops_resent_prefix_and_counts_only_declared_gaps():
    from robostack.training.transitions import Ledger, SeqAhead

    ledger = Ledger()
    assert ledger.accept("a", 1, 8, []).count == 8
    resent = ledger.accept("a", 5, 8, [{"last_seq": 8}, {"last_seq": 12}])  # 5..8 held already
    assert (resent.skip, resent.count, resent.lost) == (4, 4, 0)
    assert [e["last_seq"] for e in resent.new_episodes] == [12]  # episode 8 was recorded before
    assert ledger.accept("a", 1, 12, []).count == 0  # all duplicates
    # Ahead of the ledger: refused by name unless the actor's hello declared exactly this gap.
    for first, declared in ((20, None), (20, 19), (14, 20)):
        with pytest.raises(SeqAhead, match="ahead of what a could have sent"):
            ledger.accept("a", first, 2, [], declared_gap_to=declared)
    with pytest.raises(SeqAhead, match="outside its batch"):  # an episode it did not end
        ledger.accept("a", 13, 2, [{"last_seq": 99}])
    assert ledger.ack("a") == {"stored": 12, "durable": 0} and ledger.lost == {}
    gap = ledger.accept("a", 20, 2, [], declared_gap_to=20)
    assert (gap.count, gap.lost) == (2, 7)
    assert ledger.ack("a") == {"stored": 21, "durable": 0}
    restored = Ledger(ledger.state_dict())  # what a restarted learner starts from
    assert restored.ack("a") == {"stored": 21, "durable": 21} and restored.lost == {"a": 7}


def test_spool_keeps_whole_batches_across_a_restart(tmp_path):
    from robostack.training.transitions import Batch, Spool, stack_transitions

    spool = Spool(tmp_path / "spool")
    obs = {"state": np.arange(3, dtype=np.float32)}
    arrays = stack_transitions([(obs, [0.1, 0.2], 1.0, obs, True, False)] * 4)
    spool.write(Batch("intervention", 9, arrays, [{"return": 1.0}]))
    (tmp_path / "spool" / ".half-written.npz.tmp").write_bytes(b"junk")  # a crash mid-write
    again = Spool(tmp_path / "spool").load()
    assert len(again) == 1 and (again[0].first_seq, again[0].last_seq) == (9, 12)
    assert again[0].stream == "intervention" and again[0].episodes == [{"return": 1.0}]
    np.testing.assert_array_equal(again[0].arrays["obs/state"], arrays["obs/state"])
    assert not list((tmp_path / "spool").glob("*.tmp"))


def test_spool_fsyncs_each_batch_and_the_directory_before_it_counts(tmp_path, monkeypatch):
    from robostack import files
    from robostack.training.transitions import Batch, Spool, stack_transitions

    synced, dirs = [], []
    real_fsync = os.fsync
    monkeypatch.setattr(files.os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd)))
    monkeypatch.setattr(files, "fsync_dir", lambda d: dirs.append(Path(d)))  # the spool's one writer
    spool = Spool(tmp_path / "spool")
    obs = {"state": np.zeros(3, np.float32)}
    batch = Batch("online", 1, stack_transitions([(obs, [0.0], 0.0, obs, False, False)] * 2), [])
    spool.write(batch)
    assert len(synced) == 1 and dirs == [tmp_path / "spool"] and batch.path.is_file()
    spool.write_meta({"run": "r"})
    assert len(synced) == 2 and dirs == [tmp_path / "spool"] * 2


def test_learner_writes_tensorboard_scalars_and_metrics_csv(tmp_path):
    """Skipped only without the tensorboard package (an optional extra)."""
    pytest.importorskip("tensorboard")
    import dataclasses
    from types import SimpleNamespace

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from robostack.training.learner import Learner as InProcessLearner

    config = RunConfig(task="pick_cube", run_dir=str(tmp_path / "run"), demos=0, eval_every=100)
    config.sac = dataclasses.replace(config.sac, hidden_dims=(16, 16), num_critics=2)
    learner = InProcessLearner(config, say=lambda text: None)
    assert learner.tensorboard is not None
    from robostack.training.transitions import PROTOCOL, hello_proof

    hello = {"protocol": PROTOCOL, **learner.expected, "actor": "actor-0", "run": learner.run_id,
             "proof": hello_proof(learner.run_secret, learner.run_id, "actor-0", "s"), "resend_from": 1}
    with learner.lock:
        assert learner.on_hello(SimpleNamespace(session="s", meta=hello))[0] == "welcome"
        learner.on_eval(SimpleNamespace(session="s", meta={
            "actor": "actor-0", "step": 100, "success_rate": 0.5, "time_to_success_s": 2.5,
            "weights_version": 3, "episodes": 4}))
    learner.report()
    learner.tensorboard.close()
    events = EventAccumulator(str(tmp_path / "run" / "tensorboard"))
    events.Reload()
    tags = events.Tags()["scalars"]
    assert {"eval/success_rate", "eval/time_to_success_s", "train/env_steps", "train/utd"} <= set(tags)
    assert [(e.step, e.value) for e in events.Scalars("eval/success_rate")] == [(100, 0.5)]
    rows = (tmp_path / "run" / "metrics.csv").read_text().splitlines()
    assert rows[0].startswith("env_steps,wall_seconds,success_rate") and len(rows) == 2


def test_weights_are_versioned_checksummed_and_loaded_only_when_intact():
    from robostack.env.spaces import action_space, observation_space
    from robostack.rl.sac import SACConfig, build_agent
    from robostack.training.weights import WeightsPublisher, WeightsSubscriber, acting_state, digest
    from tasks import make_task

    task = make_task("pick_cube")
    obs_space, act_space = observation_space(task), action_space(task.config)
    config = SACConfig(hidden_dims=(8, 8), num_critics=2)
    learner_agent = build_agent(config, obs_space, act_space)
    actor_agent = build_agent(SACConfig(hidden_dims=(8, 8), num_critics=2, seed=1), obs_space, act_space)
    for p in learner_agent.actor.parameters():
        torch.nn.init.normal_(p)
    endpoint = transport.free_tcp_endpoint()
    publisher = WeightsPublisher(endpoint)
    said = []
    subscriber = WeightsSubscriber(endpoint, say=said.append)
    try:
        time.sleep(0.3)  # PUB drops messages sent before the subscription is up
        tampered = acting_state(learner_agent)
        meta = {"version": 5, "sha256": digest(tampered)}
        next(iter(tampered.values()))[...] += 1.0
        publisher.publisher.publish("weights", meta, tampered)
        assert not subscriber.wait(actor_agent, 1.0)
        assert subscriber.version == -1 and "SHA-256" in said[0]
        # The state scaling lives in the encoder: it travels with the weights.
        state_dim = learner_agent.state_dim
        learner_agent.set_state_scale(np.linspace(-1, 1, state_dim), np.linspace(0.1, 2, state_dim))
        publisher.publish(learner_agent, 7, {"extra/x": np.ones(3, np.float32)})
        assert subscriber.wait(actor_agent, 5.0) and subscriber.version == 7
        np.testing.assert_array_equal(subscriber.extra["extra/x"], np.ones(3))
        for a, b in zip(learner_agent.actor.parameters(), actor_agent.actor.parameters()):
            torch.testing.assert_close(a, b)
        torch.testing.assert_close(actor_agent.encoder.state_std, learner_agent.encoder.state_std)
        raw = {"state": np.random.default_rng(0).standard_normal(state_dim).astype(np.float32)}
        np.testing.assert_array_equal(actor_agent.act(raw, True), learner_agent.act(raw, True))
        # An older version of the same learner session arrives and is refused (counted as
        # stale, parameters kept); a newer one after it is taken. Each is seen arriving, so
        # neither assertion can pass by the message merely being late.
        v7 = [p.detach().clone() for p in actor_agent.actor.parameters()]
        for p in learner_agent.actor.parameters():
            torch.nn.init.normal_(p)
        publisher.publish(learner_agent, 6)
        deadline = time.monotonic() + 5.0
        while subscriber.stale == 0:
            assert not subscriber.poll(actor_agent), "an older version was loaded"
            assert time.monotonic() < deadline, "the older version never arrived"
            time.sleep(0.01)
        assert subscriber.version == 7 and subscriber.stale == 1
        for kept, now in zip(v7, actor_agent.actor.parameters()):
            torch.testing.assert_close(kept, now)
        publisher.publish(learner_agent, 8)
        assert subscriber.wait(actor_agent, 5.0) and subscriber.version == 8
        for a, b in zip(learner_agent.actor.parameters(), actor_agent.actor.parameters()):
            torch.testing.assert_close(a, b)
    finally:
        publisher.close()
        subscriber.close()


def test_an_actor_loads_only_weights_signed_with_its_run_s_secret():
    from robostack.env.spaces import action_space, observation_space
    from robostack.rl.sac import SACConfig, build_agent
    from robostack.training.weights import WeightsPublisher, WeightsSubscriber
    from tasks import make_task

    task = make_task("reach")
    agent = build_agent(SACConfig(hidden_dims=(8, 8), num_critics=2),
                        observation_space(task), action_space(task.config))
    ours, theirs = "ab" * 16, "cd" * 16
    # (publisher's secret, the secret the actor knows, loaded?). Until the actor knows the run's
    # secret (it reads it once the learner proved itself), nothing loads.
    for version, (secret, known, loads) in enumerate(
            [(ours, None, False), (None, ours, False), (theirs, ours, False), (ours, ours, True)], 1):
        endpoint = transport.free_tcp_endpoint()
        said = []
        publisher = WeightsPublisher(endpoint, secret=secret)
        subscriber = WeightsSubscriber(endpoint, say=said.append, signed=True)
        subscriber.secret = known
        try:
            time.sleep(0.3)  # PUB drops messages sent before the subscription is up
            publisher.publish(agent, version)
            assert subscriber.wait(agent, 5.0 if loads else 1.5) is loads, (version, said)
            assert subscriber.version == (version if loads else -1)
            if known is not None and not loads:
                assert "not signed with this run's secret" in said[0], said
        finally:
            publisher.close()
            subscriber.close()


# --- real processes --------------------------------------------------------------------------

def test_handshake_mismatch_is_refused_with_a_message_naming_it(tmp_path, procs):
    from robostack.training.transitions import HandshakeRefused, TransitionSender

    learner = Learner(tmp_path, procs, tmp_path / "run", "--total-steps", "100")
    learner.wait_for(lambda s: True, STARTUP, "start")
    run_file = tmp_path / "run" / "run.json"
    good = {"task": "pick_cube", "obs_spec": {"state": [[20], "<f4"]},
            "action_spec": {"shape": [4], "low": -1.0, "high": 1.0}}
    cases = [({**good, "task": "reach"}, "task mismatch"),
             ({**good, "obs_spec": {"state": [[17], "<f4"]}}, "observation spec mismatch"),
             ({**good, "action_spec": {**good["action_spec"], "shape": [7]}}, "action spec mismatch")]
    for i, (hello, problem) in enumerate(cases):
        sender = TransitionSender(learner.endpoint, "actor-0", hello, tmp_path / f"spool{i}",
                                  run_file=run_file)
        with pytest.raises(HandshakeRefused, match=problem):
            sender.connect(timeout=10.0)
        sender.close()
    sender = TransitionSender(learner.endpoint, "actor-0", good, tmp_path / "spool-good",
                              run_file=run_file)
    assert sender.connect(timeout=10.0)["stored"] == 0  # the reference hello is accepted
    sender.close()

    # A peer speaking another envelope schema is refused by the transport, by name.
    import msgpack
    import zmq

    sock = transport.default_context().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(learner.endpoint)
    sock.send(msgpack.packb({"v": transport.SCHEMA_VERSION + 1, "kind": "hello", "seq": 1}))
    assert sock.poll(5000), "no reply to a foreign-schema hello"
    reply = transport.decode(sock.recv_multipart())
    sock.close()
    assert reply.kind == "error" and f"schema v{transport.SCHEMA_VERSION + 1}" in reply.meta["error"]


def test_actor_process_refused_for_another_task_exits_with_the_reason(tmp_path, procs):
    learner = Learner(tmp_path, procs, tmp_path / "run", "--total-steps", "100", task="reach")
    _, (command, _) = robot_server(tmp_path, procs)
    proc = actor(tmp_path, procs, learner, command)
    assert proc.wait(STARTUP) == 2
    assert "task mismatch" in proc.text() and "reach" in proc.text()


def test_learner_killed_and_restarted_loses_and_duplicates_nothing(tmp_path, procs):
    """kill -9 the learner mid-run: the actor acts on with its last weights and spools; the
    restarted learner resumes from its checkpoint and ends holding each transition once, the
    intervention stream's in the demonstration buffer as well as the online one."""
    run_dir = tmp_path / "run"
    # Checkpoints every 0.2 s: an idle machine runs ~350 env steps/s, and the kill must come
    # after a checkpoint and well before the budget.
    budget = ["--total-steps", "600", "--checkpoint-every", "0.2"]
    learner = Learner(tmp_path, procs, run_dir, *budget)
    _, (command, _) = robot_server(tmp_path, procs)
    act = actor(tmp_path, procs, learner, command, "actor-0", "--intervention", "expert",
                "--autopilot-probability", "0.3")
    before = learner.wait_for(lambda s: s["env_steps"] >= 150 and _checkpointed_steps(run_dir) >= 100,
                              STARTUP, "150 env steps and a checkpoint holding 100")
    learner.proc.process.send_signal(signal.SIGKILL)
    learner.proc.wait(10)
    version_at_kill = before["weights_version"]

    spool = tmp_path / "spool" / "actor-0"
    count = len(list(spool.glob("*.npz")))
    deadline = time.monotonic() + 30
    while len(list(spool.glob("*.npz"))) < count + 5:  # acting on, spooling
        assert act.process.poll() is None, act.text()[-3000:]
        assert time.monotonic() < deadline, "the actor stopped acting when the learner died"
        time.sleep(0.2)

    restarted = Learner(tmp_path, procs, run_dir, *budget,
                        endpoints=(learner.endpoint, learner.weights))
    assert act.wait(STARTUP) == 0
    assert restarted.proc.wait(60) == 0
    summary = read_summary(run_dir, "learner")
    assert summary["state"] == "finished" and summary["resumed_from"], restarted.proc.text()[-3000:]
    resumed_at = summary["resumed_from"]["env_steps"]
    assert 100 <= resumed_at < 600  # from its checkpoint, not from scratch

    steps, last_seq, held = final_counts(run_dir, "actor-0", act)
    counters, online, demos, ledger = final_state(run_dir)
    assert held == last_seq == ledger["stored"]["actor-0"]
    assert ledger["lost"] == {}
    assert 0 < counters["interventions"] == len(demos) < counters["env_steps"]
    # Each transition stored once; intervention steps in both buffers (HIL-SERL).
    assert len(online) == counters["env_steps"] == steps == last_seq
    assert counters["update_calls"] == counters["env_steps"] - 40 + 1  # UTD 1 from step 40
    # Episodes after the checkpoint (the learner dead or restarting for part of them) were all
    # acted with trained weights, and each is logged once.
    episodes = [json.loads(line) for line in (run_dir / "episodes.jsonl").read_text().splitlines()]
    assert len({e["last_seq"] for e in episodes}) == len(episodes) == counters["episodes"]
    assert all(e["weights_version"] >= 1 for e in episodes if e["last_seq"] > resumed_at)
    assert version_at_kill >= 1


def test_robot_server_or_actor_death_and_restart(tmp_path, procs):
    """Robot server killed: the episode ends as truncated and the actor waits for the restarted
    server. Then the actor is killed: the learner carries on and takes the restarted actor,
    whose numbering continues where the learner's holdings end."""
    learner = Learner(tmp_path, procs, tmp_path / "run", "--total-steps", "240")
    server, endpoints = robot_server(tmp_path, procs)
    # One long episode, so the kill lands inside it: with 20-step episodes the actor often
    # sits at an episode's start (it waits for the learner there), and no episode is cut.
    act = actor(tmp_path, procs, learner, endpoints[0], "actor-0", "--robot-timeout", "60",
                "--max-episode-steps", "200")
    learner.wait_for(lambda s: s["env_steps"] >= 60, STARTUP, "60 env steps")
    server.process.send_signal(signal.SIGKILL)
    server.wait(10)
    time.sleep(1.0)
    robot_server(tmp_path, procs, "robot-server-again", endpoints)  # same ports
    # The actor may be up to --max-lead steps ahead of what the learner has received: it meets
    # the dead server only at its next step, so wait for its own word, not for a step count.
    deadline = time.monotonic() + STARTUP
    while (read_summary(tmp_path / "run", "actor-0") or {}).get("robot_server") != "back":
        assert time.monotonic() < deadline, act.text()[-3000:]
        time.sleep(0.2)
    assert read_summary(tmp_path / "run", "actor-0")["robot_server_losses"] == 1
    at_kill = learner.wait_for(lambda s: s["env_steps"] >= 120, STARTUP, "120 env steps")
    act.process.send_signal(signal.SIGKILL)
    act.wait(10)
    time.sleep(1.0)
    assert learner.stats()["critic_updates"] >= at_kill["critic_updates"]  # alive, not stuck
    again = actor(tmp_path, procs, learner, endpoints[0], "actor-0", log_name="actor-0-again")
    assert again.wait(STARTUP) == 0
    assert learner.proc.wait(60) == 0

    episodes = [json.loads(line) for line in (tmp_path / "run" / "episodes.jsonl").read_text().splitlines()]
    lost = [e for e in episodes if e["end"].startswith("robot server lost")]
    assert len(lost) == 1, episodes
    counters, online, _, ledger = final_state(tmp_path / "run")
    # The cut-short episode's last transition is stored as truncated (bootstrapping goes on).
    assert online._truncations[lost[0]["last_seq"] - 1] == 1.0
    assert online._terminations[lost[0]["last_seq"] - 1] == 0.0
    # One actor id, numbered without gaps or repeats across its restart.
    _, last_seq, held = final_counts(tmp_path / "run", "actor-0", again)
    assert len(online) == counters["env_steps"] == ledger["stored"]["actor-0"] == last_seq == held
    assert ledger["lost"] == {}


def test_learner_stopped_before_any_evaluation_leaves_metrics_csv(tmp_path, procs):
    """metrics.csv (its header) and progress.csv are always written; with the tensorboard
    package installed, event files too."""
    run_dir = tmp_path / "run"
    learner = Learner(tmp_path, procs, run_dir)
    learner.wait_for(lambda stats: True, STARTUP, "an answer to stats")
    learner.proc.process.send_signal(signal.SIGTERM)
    assert learner.proc.wait(60) == 0, learner.proc.text()[-3000:]
    header = (run_dir / "metrics.csv").read_text().splitlines()
    assert header[0].startswith("env_steps,wall_seconds,success_rate") and len(header) == 1
    assert (run_dir / "progress.csv").is_file()
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        return
    assert list((run_dir / "tensorboard").glob("events.out.tfevents.*"))


def test_children_die_with_the_launcher(tmp_path):
    """`robostack.training.launcher --child` processes get SIGTERM when the launcher dies, even by -9."""
    parent = subprocess.Popen(
        [sys.executable, "-c", "import subprocess, sys, time; p = subprocess.Popen([sys.executable, "
         "'-m', 'robostack.training.launcher', '--child', 'http.server', '--bind', '127.0.0.1', '0'], "
         "stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL); print(p.pid, flush=True); "
         "time.sleep(60)"], stdout=subprocess.PIPE, text=True)
    child = int(parent.stdout.readline())
    time.sleep(1.0)  # the child is past its prctl
    assert _alive(child)
    parent.kill()
    parent.wait(10)
    deadline = time.monotonic() + 10
    while _alive(child):
        assert time.monotonic() < deadline, "the child outlived its killed launcher"
        time.sleep(0.1)


def test_train_two_actors_ctrl_c_then_resume_and_eval(tmp_path):
    """`robostack train --actors 2`: Ctrl-C stops every process with a checkpoint written, the
    same command resumes, and the run ends with an evaluation; no process outlives it."""
    run_dir = tmp_path / "run"
    command = [sys.executable, "-m", "robostack.cli", "train", "--run-dir", str(run_dir),
               "--actors", "2", *TINY, *SHORT, "--checkpoint-every", "1", "--progress-seconds", "1"]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    log = tmp_path / "train.log"
    with open(log, "wb") as out:
        first = subprocess.Popen([*command, "--total-steps", "100000"], stdout=out,
                                 stderr=subprocess.STDOUT, env=env)
        try:
            deadline = time.monotonic() + STARTUP
            published: list[str] = []  # what config.json said before it named the endpoints
            while not _both_actors_stored(run_dir, 50):
                assert first.poll() is None, log.read_text()[-3000:]
                assert time.monotonic() < deadline, log.read_text()[-3000:]
                _endpoints_published_only_once_bound(run_dir, published)
                time.sleep(0.3)
            # The actors may have stored their share between two looks; the endpoints are
            # published by now, so check them once more.
            _endpoints_published_only_once_bound(run_dir, published)
            assert published[:1] == ["without endpoints"] and published[-1] == "checked", published
            pids = json.loads((run_dir / "processes.json").read_text())
            first.send_signal(signal.SIGINT)
            assert first.wait(120) == 130
        finally:
            if first.poll() is None:
                first.kill()
    assert read_summary(run_dir, "launcher")["state"] == "stopped", log.read_text()[-3000:]
    for name, pid in pids.items():
        assert not _alive(pid), f"{name} (pid {pid}) outlived the launcher"
    counters, online, _, ledger = final_state(run_dir)
    assert set(ledger["stored"]) == {"actor-0", "actor-1"}
    assert len(online) == counters["env_steps"] == sum(ledger["stored"].values())
    stopped_at = counters["env_steps"]

    resumed = subprocess.run([*command, "--total-steps", str(stopped_at + 60), "--eval-episodes", "1"],
                             capture_output=True, text=True, env=env, timeout=300)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert read_summary(run_dir, "learner")["resumed_from"]["env_steps"] == stopped_at
    launcher = read_summary(run_dir, "launcher")
    assert launcher["state"] == "done" and launcher["final_eval"]["episodes"] == 1
    assert json.loads((run_dir / "eval.json").read_text())["episodes"] == 1
    counters, online, _, ledger = final_state(run_dir)
    assert counters["env_steps"] >= stopped_at + 60
    assert len(online) == counters["env_steps"] == sum(ledger["stored"].values())
    assert ledger["lost"] == {}
    for name, pid in json.loads((run_dir / "processes.json").read_text()).items():
        assert not _alive(pid), f"{name} (pid {pid}) outlived the launcher"

    # Every finished training episode of both runs is in the actors' episode logs (episodes cut
    # short by Ctrl-C or the end of the budget are dropped, not logged as if they had ended).
    from robostack.data.episode_log import EpisodeLog

    logs = [EpisodeLog(run_dir / "episodes" / f"actor-{i}") for i in (0, 1)]
    assert all(len(log) >= 1 for log in logs)
    assert sum(len(log) for log in logs) <= counters["episodes"]
    first = logs[0].episode(0)
    assert first["action"].shape[1] == 4 and (first["next.done"][-1] or first["next.truncated"][-1])
    assert logs[0].episodes[0]["rl/reset_seed"] >= 0

    # `robostack eval` on the finished run, with a robot server of its own.
    evaluated = subprocess.run([sys.executable, "-m", "robostack.cli", "eval", "--run", str(run_dir),
                                "--episodes", "2"], capture_output=True, text=True, env=env, timeout=120)
    assert evaluated.returncode == 0, evaluated.stdout[-2000:] + evaluated.stderr[-2000:]
    assert "success" in evaluated.stdout and "mean time to success" in evaluated.stdout
    [written] = (run_dir / "evals").glob("eval-*-2ep.json")  # its own file; eval.json stays the run's
    result = json.loads(written.read_text())
    assert result["episodes"] == 2 and result["env_steps"] == counters["env_steps"]
    assert json.loads((run_dir / "eval.json").read_text())["episodes"] == 1


def _endpoints_published_only_once_bound(run_dir: Path, published: list[str]) -> None:
    """The launcher's endpoints are unix sockets, and the first time config.json names them the
    learner answers there with its proof made with the run's secret (a fresh challenge)."""
    import secrets

    from robostack.training.run_dir import read_run_identity
    from robostack.training.transitions import welcome_proof

    if published[-1:] == ["checked"]:
        return
    try:
        endpoints = json.loads((run_dir / "config.json").read_text()).get("endpoints")
    except (OSError, ValueError):
        return
    if endpoints is None:
        published[-1:] = ["without endpoints"]
        return
    assert all(e.startswith("ipc://") for e in [endpoints["learner"], endpoints["weights"],
                                                *endpoints["robot_servers"]]), endpoints
    run, secret = read_run_identity(run_dir / "run.json")
    challenge = secrets.token_hex(16)
    with transport.RequestClient(endpoints["learner"], "test", timeout=5.0) as client:
        stats = client.request("stats", {"challenge": challenge}).meta
    assert stats["run"] == run and stats["proof"] == welcome_proof(secret, run, "launcher", challenge)
    published.append("checked")


def _both_actors_stored(run_dir: Path, count: int) -> bool:
    """Whether the launcher's learner holds `count` transitions from each of its two actors."""
    try:
        endpoint = json.loads((run_dir / "config.json").read_text())["endpoints"]["learner"]
    except (OSError, KeyError, ValueError):
        return False
    with transport.RequestClient(endpoint, "test", timeout=1.0) as client:
        try:
            stored = client.request("stats").meta["stored"]
        except transport.TransportError:
            return False
    return len(stored) == 2 and min(stored.values()) >= count


def _checkpointed_steps(run_dir: Path) -> int:
    try:
        checkpoint = load_latest_checkpoint(run_dir)
    except FileNotFoundError:  # listed, then removed by a newer save (the learner keeps two)
        return -1
    return -1 if checkpoint is None else int(checkpoint.state["env_steps"])


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead for our purposes
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[1].split()[0] != "Z"
    except OSError:
        return False
