"""Who the learner takes transitions from, over its real socket (`python -m
robostack.training.learner`, a stand-alone run in tmp_path/run): only its own run's actors (a
hello proves it with the run's secret, run.json), only the actor ids the run has, only from the
session that said hello, and only sequence numbers that actor could have sent. Every refusal is
named in the reply and in the learner's log; a refused request changes nothing.

Also: the learner listens on loopback unless told otherwise, and a stand-alone learner writes
its endpoints into config.json only once it has bound them.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import pytest

from robostack import transport
from robostack.training.config import ActorIdentity, LearnerIdentity
from robostack.training.run_dir import read_run_identity
from robostack.training.transitions import hello_proof, welcome_proof
from test_learner_fuzz import ENV, ROWS, SESSION, TINY, batch_arrays, exchange, hello_meta, message, start_learner

ONLINE = {"actor": "actor-0", "stream": "online", "episodes": []}


@pytest.fixture
def learner(tmp_path):
    yield from start_learner(tmp_path)


def transitions(first_seq: int, session: str = SESSION, rows: int = ROWS) -> list:
    return message("transitions", {**ONLINE, "first_seq": first_seq, "count": rows},
                   batch_arrays(rows), session=session)


def stats(client) -> dict:
    return client.request("stats", timeout=10.0).meta


def learner_log(tmp_path) -> str:
    return (tmp_path / "learner.err").read_text()


def wait_for_log(tmp_path, text: str, timeout: float = 10.0) -> str:
    deadline = time.monotonic() + timeout
    while text not in learner_log(tmp_path):
        assert time.monotonic() < deadline, f"{text!r} not in the learner's log:\n{learner_log(tmp_path)[-3000:]}"
        time.sleep(0.05)
    return next(line for line in learner_log(tmp_path).splitlines() if text in line)


def test_an_impostor_is_refused_by_name_and_logged_and_changes_nothing(learner, tmp_path):
    _, endpoint, client = learner
    run_dir = tmp_path / "run"
    run, secret = read_run_identity(run_dir / "run.json")
    assert len(secret) == 32 and (run_dir / "run.json").stat().st_mode & 0o777 == 0o600
    other_secret = "0" * 32
    cases = [
        ({"proof": hello_proof(other_secret, run, "actor-0", SESSION)}, "bad proof"),
        ({"proof": "not a proof"}, "bad proof"),
        ({"proof": None}, "bad proof"),
        # a valid proof, but of another session: a proof seen on the wire is good for its own only
        ({"proof": hello_proof(secret, run, "actor-0", "someothersession")}, "bad proof"),
        ({"run": "0123456789ab", "proof": hello_proof(secret, "0123456789ab", "actor-0", SESSION)},
         "wrong run"),
        ({"actor": "actor-7", "proof": hello_proof(secret, run, "actor-7", SESSION)}, "unknown actor id"),
    ]
    for change, name in cases:
        reply = exchange(endpoint, message("hello", {**hello_meta(run_dir), **change}))
        assert reply["kind"] == "error" and reply["meta"]["error"].startswith(name), reply
        assert secret not in reply["meta"]["error"]
    # Its transitions, status and eval are not taken: the session never said hello (a bye is
    # answered, and changes nothing).
    for kind, meta, arrays in (("transitions", {**ONLINE, "first_seq": 1, "count": ROWS}, batch_arrays()),
                               ("status", {"actor": "actor-0"}, None),
                               ("eval", {"actor": "actor-0", "step": 0, "success_rate": 1.0,
                                         "time_to_success_s": 1.0, "weights_version": 0}, None),
                               ("bye", {"actor": "actor-0"}, None)):
        reply = exchange(endpoint, message(kind, meta, arrays))
        assert reply["kind"] == ("bye" if kind == "bye" else "rehello"), (kind, reply)
    after = stats(client)
    assert after["online"] == 0 and after["stored"] == {} and after["actors"] == {}
    assert not (run_dir / "metrics.csv").is_file() or len((run_dir / "metrics.csv").read_text().splitlines()) <= 1
    line = wait_for_log(tmp_path, "refused hello of 'actor-0': bad proof")
    assert secret not in learner_log(tmp_path)
    print("\nlog:", line)
    print("log:", wait_for_log(tmp_path, "refused hello of 'actor-0': wrong run"))
    print("log:", wait_for_log(tmp_path, "refused hello of 'actor-7': unknown actor id"))


def test_transitions_from_a_session_that_did_not_say_hello_are_refused(learner, tmp_path):
    _, endpoint, client = learner
    assert exchange(endpoint, message("hello", hello_meta(tmp_path / "run")))["kind"] == "welcome"
    # Same actor id, another session (the header's session is the client's claim): not taken.
    reply = exchange(endpoint, transitions(1, session="intruder0000"))
    assert reply["kind"] == "rehello", reply
    assert stats(client)["online"] == 0
    ack = exchange(endpoint, transitions(1))  # the greeted session's own batch is
    assert ack["kind"] == "ack" and ack["meta"]["stored"] == ROWS, ack


def test_a_forged_far_ahead_first_seq_is_refused_and_changes_nothing(learner, tmp_path):
    _, endpoint, client = learner
    exchange(endpoint, message("hello", hello_meta(tmp_path / "run")))
    assert exchange(endpoint, transitions(1))["meta"]["stored"] == ROWS
    before = stats(client)
    for first_seq in (ROWS + 2, 10**6, 2**53):
        reply = exchange(endpoint, transitions(first_seq))
        assert reply["kind"] == "error" and "ahead of what actor-0 could have sent" in reply["meta"]["error"], reply
    after = stats(client)
    for key in ("online", "demos", "stored", "lost", "env_steps", "episodes", "duplicates"):
        assert after[key] == before[key], (key, before[key], after[key])
    assert after["stored"] == {"actor-0": ROWS} and after["lost"] == 0
    print("\nlog:", wait_for_log(tmp_path, "first_seq 1000000 is ahead of what actor-0 could have sent"))
    ack = exchange(endpoint, transitions(ROWS + 1))  # the actor's real next batch still is taken
    assert ack["kind"] == "ack" and ack["meta"]["stored"] == 2 * ROWS


def test_a_gap_declared_in_the_hello_is_accepted_once_as_lost(learner, tmp_path):
    _, endpoint, client = learner
    # The actor's spool was lost: its hello says its batches resume at #11.
    welcome = exchange(endpoint, message("hello", hello_meta(tmp_path / "run", resend_from=11)))
    assert welcome["kind"] == "welcome" and welcome["meta"]["stored"] == 0
    assert exchange(endpoint, transitions(12))["kind"] == "error"  # not the declared start
    ack = exchange(endpoint, transitions(11))
    assert ack["kind"] == "ack" and ack["meta"]["stored"] == 10 + ROWS, ack
    assert stats(client)["lost"] == 10
    print("\nlog:", wait_for_log(tmp_path, "transitions 1..10 never arrived"))
    # The declared gap is behind it now: another one in this session is refused.
    reply = exchange(endpoint, transitions(10 + ROWS + 5))
    assert reply["kind"] == "error" and "declared no gap" in reply["meta"]["error"], reply
    assert stats(client)["lost"] == 10 and stats(client)["online"] == ROWS


def test_a_newer_session_replaces_the_older_which_is_told_it_is_superseded(learner, tmp_path):
    """After kill -9 the learner cannot know the old session is dead: the restarted actor's
    hello must be taken at once. The old session (a stale copy) may then not come back."""
    _, endpoint, client = learner
    run_dir = tmp_path / "run"
    assert exchange(endpoint, message("hello", hello_meta(run_dir)))["kind"] == "welcome"
    assert exchange(endpoint, transitions(1))["meta"]["stored"] == ROWS
    new = "restarted000"
    welcome = exchange(endpoint, message("hello", hello_meta(run_dir, session=new), session=new))
    assert welcome["kind"] == "welcome" and welcome["meta"]["stored"] == ROWS
    run, secret = read_run_identity(run_dir / "run.json")
    assert welcome["meta"]["proof"] == welcome_proof(secret, run, "actor-0", new)
    for frames in (transitions(ROWS + 1), message("hello", hello_meta(run_dir))):
        reply = exchange(endpoint, frames)
        assert reply["kind"] == "superseded" and "newer session of actor-0" in reply["meta"]["error"], reply
    assert stats(client)["stored"] == {"actor-0": ROWS}
    assert exchange(endpoint, transitions(ROWS + 1, session=new))["meta"]["stored"] == 2 * ROWS
    print("\nlog:", wait_for_log(tmp_path, "replaced session"))


def test_the_learner_listens_on_loopback_by_default():
    assert LearnerIdentity().endpoint == "tcp://127.0.0.1:5600"
    assert LearnerIdentity().weights_endpoint == "tcp://127.0.0.1:5601"
    assert ActorIdentity().learner == "tcp://127.0.0.1:5600"


def test_a_learner_started_with_its_defaults_binds_loopback_only(tmp_path):
    """The real process, its default endpoints: every socket listening on 5600/5601 is bound to
    127.0.0.1 (/proc/net/tcp), none to all interfaces."""
    for port in (5600, 5601):
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                pytest.skip(f"port {port} is in use by another process on this machine")
    process = subprocess.Popen([sys.executable, "-m", "robostack.training.learner", *TINY,
                                "--run-dir", str(tmp_path / "run")], env=ENV,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        with transport.RequestClient("tcp://127.0.0.1:5600", "test", timeout=1.0) as client:
            deadline = time.monotonic() + 90
            while True:
                try:
                    client.request("stats")
                    break
                except transport.PeerTimeout:
                    assert process.poll() is None and time.monotonic() < deadline, "learner not up"
        listening = _listening()
        for port in (5600, 5601):
            assert listening.get(port) == {"127.0.0.1"}, (port, listening.get(port))
    finally:
        process.kill()
        process.wait(10)


def _listening() -> dict[int, set[str]]:
    """{port: local addresses} of the IPv4 and IPv6 tcp sockets in LISTEN state."""
    found: dict[int, set[str]] = {}
    for path, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        if not os.path.exists(path):
            continue
        for line in open(path).read().splitlines()[1:]:
            fields = line.split()
            address, port = fields[1].split(":")
            if fields[3] != "0A":  # LISTEN
                continue
            if width == 8:
                ip = ".".join(str(int(address[i:i + 2], 16)) for i in (6, 4, 2, 0))
            else:
                ip = "::" if int(address, 16) == 0 else address
            found.setdefault(int(port, 16), set()).add(ip)
    return found


def test_a_stand_alone_learner_writes_its_endpoints_into_config_json_only_once_bound(tmp_path):
    """config.json exists without endpoints while the learner starts; the first moment it names
    them, they are taken (binding the port ourselves fails), so no other process can have
    taken them first unnoticed."""
    endpoint, weights = transport.free_tcp_endpoint(), transport.free_tcp_endpoint()
    run = tmp_path / "run"
    process = subprocess.Popen([sys.executable, "-m", "robostack.training.learner", *TINY,
                                "--run-dir", str(run), "--endpoint", endpoint,
                                "--weights-endpoint", weights], env=ENV,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    seen_without = False
    try:
        deadline = time.monotonic() + 90
        while True:
            assert process.poll() is None and time.monotonic() < deadline, "no endpoints in config.json"
            try:
                written = json.loads((run / "config.json").read_text())
            except (OSError, ValueError):
                time.sleep(0.01)
                continue
            if "endpoints" not in written:
                seen_without = True
                time.sleep(0.01)
                continue
            break
        for address in (endpoint, weights):
            host, port = address.removeprefix("tcp://").split(":")
            with socket.socket() as squatter:
                with pytest.raises(OSError):  # already bound by the learner
                    squatter.bind((host, int(port)))
        assert written["endpoints"] == {"learner": endpoint, "weights": weights}
        assert seen_without, "config.json was never seen before it named the endpoints"
    finally:
        process.kill()
        process.wait(10)


def _squatter(endpoint: str, reply_kind: str, reply_meta: dict):
    """A process holding `endpoint` that answers every request like a learner would, but
    without the run's secret; served from a thread until the returned stop() is called."""
    import threading

    server = transport.RequestServer(endpoint, "squatter")
    running = [True]

    def serve():
        while running[0]:
            request = server.poll(0.05)
            if request is not None:
                server.reply(request, reply_kind, reply_meta)
        server.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()

    def stop():
        running[0] = False
        thread.join(5)
    return stop


def test_an_actor_names_a_process_squatting_the_learners_endpoint(tmp_path):
    """It answers hello with a welcome for the right run id, but cannot make the learner's
    proof: the actor refuses it by name instead of sending it transitions."""
    from robostack.training import run_dir as run_files
    from robostack.training.transitions import HandshakeRefused, TransitionSender

    run = run_files.run_identity(tmp_path / "run")
    endpoint = transport.free_tcp_endpoint()
    stop = _squatter(endpoint, "welcome", {"run": run, "stored": 0, "durable": 0, "proof": "0" * 64})
    sender = TransitionSender(endpoint, "actor-0", {}, tmp_path / "spool",
                              run_file=tmp_path / "run" / "run.json")
    try:
        with pytest.raises(HandshakeRefused, match=f"is not run {run}'s learner") as refused:
            sender.connect(timeout=10.0)
        print("\nactor:", refused.value)
        assert not sender.connected and sender.welcome == {}
    finally:
        sender.close()
        stop()


def test_the_launcher_records_endpoints_only_once_its_learner_proves_itself(tmp_path):
    """Before any child answers, config.json names no endpoint; a process squatting the
    learner's (unix socket) endpoint is named and ends the run, and config.json still names
    none. The endpoints are unix sockets named after the run, short enough for a socket path."""
    from robostack.training.config import RunConfig
    from robostack.training.launcher import Launcher

    config = RunConfig(task="reach", run_dir=str(tmp_path / "run"))
    config.launch.pin_cpus = False
    launcher = Launcher(config, say=lambda _: None)
    launcher.prepare_run_dir()
    assert "endpoints" not in json.loads((tmp_path / "run" / "config.json").read_text())
    endpoints = [launcher.learner_endpoint, launcher.weights_endpoint, *launcher.servers[0]]
    assert all(e.startswith("ipc://") and launcher.run_id in e and len(e) < 100 for e in endpoints), endpoints
    with transport.RequestClient(launcher.learner_endpoint, "launcher", timeout=1.0) as client:
        assert launcher.publish_endpoints(client) is None  # nothing answers yet: not yet
        stop = _squatter(launcher.learner_endpoint, "stats", {"run": launcher.run_id, "proof": "0" * 64})
        try:
            launcher.next_endpoint_check = 0.0
            outcome = launcher.publish_endpoints(client)
        finally:
            stop()
    print("\nlauncher:", outcome)
    assert outcome is not None and f"is not run {launcher.run_id}'s learner" in outcome
    assert not launcher.endpoints_published
    assert "endpoints" not in json.loads((tmp_path / "run" / "config.json").read_text())
