"""The actor -> learner transition stream: batched, sequence-numbered, acknowledged, spooled.

Every transition an actor produces gets the next number of that actor's sequence (1, 2, ...,
one counter over all streams). Transitions travel in batches over a DEALER/ROUTER request:

    actor -> learner  "hello"        meta: protocol, task, obs_spec, action_spec, actor, run,
                                     proof, resend_from
                      reply "welcome": stored, durable (this actor's seqs), run, proof, sac, demos
                      or an error naming the mismatch (task, spec, protocol, run, proof, actor
                      id): HandshakeRefused
    actor -> learner  "transitions"  meta: actor, stream, first_seq, count, episodes, ...
                                     arrays: obs/<key>, next_obs/<key>, actions, rewards,
                                             terminations, truncations (leading axis: count)
                      reply "ack":   stored, durable, wait, done, eval   (or "rehello")
    actor -> learner  "status"       same reply, no transitions (polling while throttled)

Streams name where transitions go: "online" (the policy acting) -> the online buffer;
"intervention" (a human or scripted takeover) and "demo" (recorded demonstrations) -> the
demonstration buffer. One batch holds one stream.

Two acknowledgement levels, because a learner killed with -9 loses what it held only in memory:

* stored:  the highest seq the learner holds (in memory). The actor does not resend these to
           the same learner session.
* durable: the highest seq in the learner's last checkpoint (buffers saved with it). Only then
           does the actor delete the batch from its spool.

The spool is a directory of one file per batch, written (robostack.files.atomic_write: temp
file, fsync, rename, directory fsync) *before* the first send, so an actor killed at any
moment, or a machine losing power, loses at most the batch it was filling (an fsync per batch:
~1 per second at training rates).
A restarted learner reports its durable seqs in the welcome, and the actor resends every
spooled batch past them; the learner drops any prefix it already holds, so after any sequence
of crashes each transition is stored exactly once.

Who may send. Each run has a secret (run.json, mode 0600, run_dir.run_identity). A hello
carries `proof` = HMAC-SHA256(secret, run | actor id | session): the learner welcomes only its
own run's actors (and only the actor ids the run was configured with), and every later
request (transitions, status, eval, bye, durable) only from the session that said hello for
that actor id. The welcome carries the learner's proof over the same session, so an actor also
knows that what answered on the endpoint is its run's learner and not a process squatting it.
HMAC rather than the secret itself: the secret never travels, so an actor on another machine
(plain tcp) does not hand it to whoever reads the wire, and a proof seen on the wire is good for
that one session only. (Whoever can read the wire can still ride that session: encryption is
the transport's CURVE, not this.)

Sequence numbers are checked against what the actor could have sent: a batch continues where
the learner's ledger stands (first_seq <= stored + 1; a resent prefix is dropped). A gap is
accepted once per hello and only where the actor declared it there (`resend_from`: the oldest
seq its spool still holds, or the next seq it will number when the spool is empty, e.g. after
it was deleted or a batch was damaged); it is then counted as lost and logged, never hidden. A
batch starting anywhere else ahead is refused by name (SeqAhead) and changes nothing.

One thing: the stream's contract with both of its ends (the actor's sender and spool, the
learner's ledger), kept in one file so that the two ends cannot drift apart.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from robostack import transport
from robostack.files import atomic_write, write_json_atomic
from robostack.training.run_dir import RunFileError, RunFileMissing, read_run_identity

PROTOCOL = 2  # the hello/transitions/ack contract; bump when it changes shape (2: run proofs, resend_from)
STREAMS = ("online", "intervention", "demo")
TO_DEMO_BUFFER = ("intervention", "demo")

log = logging.getLogger("robostack.training.transitions")


class HandshakeRefused(RuntimeError):
    """The learner refused this actor (different task, spec, protocol or run, a bad proof, an
    actor id the run has no place for), or what answered is not this run's learner: retrying
    cannot help."""


class Superseded(RuntimeError):
    """A newer session of this actor id said hello to the learner, which now takes only its
    requests: this process is a stale or duplicate copy of the actor and must stop. (Under the
    launcher a restart is harmless: the restarted actor is the newest session.)"""


class SeqAhead(ValueError):
    """A batch starts ahead of what its actor could have sent (not where the learner's ledger
    stands, nor at the gap the actor declared in its hello): refused, nothing changes."""


# --- who may send ------------------------------------------------------------------------------

def hello_proof(secret: str, run: str, actor: str, session: str) -> str:
    """What an actor's hello proves its run membership with: HMAC-SHA256 of run, actor id and
    session under the run's secret (hex)."""
    return _mac(secret, "actor", run, actor, session)


def welcome_proof(secret: str, run: str, actor: str, session: str) -> str:
    """The learner's answer to a hello: the same fields under another label, so that a proof
    an actor sent cannot be echoed back as the learner's."""
    return _mac(secret, "learner", run, actor, session)


def proof_matches(expected: str, given) -> bool:
    return isinstance(given, str) and hmac.compare_digest(expected, given)


def _mac(secret: str, *fields: str) -> str:
    return hmac.new(bytes.fromhex(secret), "\n".join(fields).encode(), hashlib.sha256).hexdigest()


# --- spec of what travels ---------------------------------------------------------------------

def observation_spec(observation_space) -> dict:
    """{key: [shape, dtype]} of a gymnasium Dict space, as plain data for a hello."""
    return {k: [list(s.shape), np.dtype(s.dtype).str] for k, s in observation_space.spaces.items()}


def action_spec(action_space) -> dict:
    return {"shape": list(action_space.shape), "low": float(np.min(action_space.low)),
            "high": float(np.max(action_space.high))}


def hello_mismatch(expected: dict, hello: dict) -> str | None:
    """Why an actor's hello does not fit this learner, or None when it does."""
    if hello.get("protocol") != PROTOCOL:
        return (f"transition protocol mismatch: the learner speaks v{PROTOCOL}, actor "
                f"{hello.get('actor')!r} v{hello.get('protocol')}; run the same robostack "
                f"version on both")
    for key, what in (("task", "task"), ("obs_spec", "observation spec"),
                      ("action_spec", "action spec")):
        if hello.get(key) != expected[key]:
            return (f"{what} mismatch: the learner trains {key}={expected[key]!r}, actor "
                    f"{hello.get('actor')!r} sends {key}={hello.get(key)!r}; start both with the "
                    f"same --task (and task/camera settings)")
    return None


# --- batches and the spool -------------------------------------------------------------------

@dataclass
class Batch:
    """Consecutive transitions of one actor and one stream, seqs first_seq .. last_seq."""

    stream: str
    first_seq: int
    arrays: dict[str, np.ndarray]
    episodes: list = field(default_factory=list)  # summaries of episodes ending in this batch
    path: Path | None = None  # its spool file

    @property
    def count(self) -> int:
        return len(self.arrays["rewards"])

    @property
    def last_seq(self) -> int:
        return self.first_seq + self.count - 1


def stack_transitions(steps: list[tuple]) -> dict[str, np.ndarray]:
    """[(obs, action, reward, next_obs, terminated, truncated), ...] -> batch arrays."""
    arrays = {}
    for key in steps[0][0]:
        arrays[f"obs/{key}"] = np.stack([s[0][key] for s in steps])
        arrays[f"next_obs/{key}"] = np.stack([s[3][key] for s in steps])
    arrays["actions"] = np.stack([np.asarray(s[1], np.float32) for s in steps])
    arrays["rewards"] = np.array([s[2] for s in steps], np.float32)
    arrays["terminations"] = np.array([s[4] for s in steps], bool)
    arrays["truncations"] = np.array([s[5] for s in steps], bool)
    return arrays


def split_observations(arrays: dict, prefix: str, start: int = 0) -> dict[str, np.ndarray]:
    return {k[len(prefix):]: v[start:] for k, v in arrays.items() if k.startswith(prefix)}


class Spool:
    """One file per unacknowledged batch: <dir>/<first_seq>-<last_seq>-<stream>.npz.

    Files are written to a temp name, fsynced, renamed and the directory fsynced before the
    batch counts as spooled, so a crash (of the process, or of the machine: a power cut) leaves
    whole batches only (a stray temp file is ignored) and every batch the actor may send is on
    disk until the learner says it is durable."""

    def __init__(self, directory: str | os.PathLike):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        for stray in self.dir.glob(".*.tmp*"):  # a write a crash interrupted (one actor per spool)
            stray.unlink(missing_ok=True)

    def write(self, batch: Batch) -> None:
        path = self.dir / f"{batch.first_seq:012d}-{batch.last_seq:012d}-{batch.stream}.npz"
        meta = {"stream": batch.stream, "first_seq": batch.first_seq, "episodes": batch.episodes}
        with atomic_write(path) as f:
            np.savez(f, allow_pickle=False, __meta__=np.array(json.dumps(meta)), **batch.arrays)
        batch.path = path

    def load(self) -> list[Batch]:
        """Every spooled batch, in seq order. Unreadable files are moved aside and reported."""
        batches = []
        for path in sorted(self.dir.glob("*.npz")):
            try:
                with np.load(path, allow_pickle=False) as z:
                    meta = json.loads(str(z["__meta__"]))
                    arrays = {k: z[k] for k in z.files if k != "__meta__"}
                batches.append(Batch(meta["stream"], int(meta["first_seq"]), arrays,
                                     meta["episodes"], path))
            except Exception as exc:  # noqa: BLE001 - any damage means the same: set it aside
                bad = path.with_suffix(".damaged")
                os.replace(path, bad)
                log.error("spool file %s is unreadable (%s); moved to %s, its transitions are "
                          "lost", path, exc, bad.name)
        return batches

    def read_meta(self) -> dict:
        path = self.dir / "spool.json"
        return json.loads(path.read_text()) if path.is_file() else {}

    def write_meta(self, meta: dict) -> None:
        write_json_atomic(self.dir / "spool.json", meta, indent=None)

    def remove_if_empty(self) -> bool:
        """Delete the spool (its spool.json and the folder) if it holds no batch: what a
        finished actor leaves once the learner's checkpoint holds everything it sent."""
        if any(self.dir.glob("*.npz")) or any(self.dir.glob("*.damaged")):
            return False
        (self.dir / "spool.json").unlink(missing_ok=True)
        try:
            self.dir.rmdir()
        except OSError:  # something else lives there: leave the folder
            return False
        return True


# --- the actor's end -------------------------------------------------------------------------

class TransitionSender:
    """Batches, spools and sends one actor's transitions; never blocks longer than `timeout`.

        sender = TransitionSender(endpoint, "actor-0", hello, "spool/actor-0", run_file="run/run.json")
        sender.connect(deadline_s)               # handshake; HandshakeRefused on mismatch
        sender.add(obs, action, reward, next_obs, terminated, truncated, stream="online")
        sender.end_episode({...summary...})      # closes the batch at an episode end
        sender.pump()                            # send what is due; cheap when nothing is

    While the learner is unreachable, batches pile up in the spool and pump() retries at most
    every `retry_every` s with a short probe, so acting slows down by a few percent at most.
    """

    def __init__(self, endpoint: str, actor_id: str, hello: dict, spool_dir: str | os.PathLike,
                 batch_steps: int = 32, timeout: float = 2.0, retry_every: float = 1.0,
                 say=print, *, run_file: str | os.PathLike, curve=None):
        self.actor_id = actor_id
        # The run's identity (id and secret), read at every hello: a stand-alone actor may
        # start before its learner has created it, and a run.json restored or rewritten by a
        # resumed learner is taken as it is now.
        self.run_file = Path(run_file)
        self.hello_meta = dict(hello, protocol=PROTOCOL, actor=actor_id)
        self.batch_steps = max(1, int(batch_steps))
        self.timeout = timeout
        self.retry_every = retry_every
        self.say = say
        self.client = transport.RequestClient(endpoint, source=actor_id, timeout=timeout, curve=curve,
                                              peer=f"the learner (`robostack learner`) at {endpoint}")
        self.spool = Spool(spool_dir)
        self.pending: list[Batch] = self.spool.load()  # spooled, not yet durable at the learner
        self.seq = self.pending[-1].last_seq if self.pending else 0  # last seq handed out
        self.stored = 0  # highest seq the current learner session holds
        self.durable = 0
        self.connected = False
        self.welcome: dict = {}
        self.reply: dict = {}  # the last ack's meta (wait, done, eval ...)
        self.extra_meta: dict = {}  # sent along with every request (weights version, steps ...)
        self._open: list[tuple] = []
        self._open_stream = "online"
        self._episodes: list[dict] = []
        self._next_try = 0.0
        self._down_since: float | None = None
        self._last_down_note = 0.0
        self.sent_batches = 0
        self.welcome_count = 0  # handshakes done (the first is not a reconnection)

    # --- handshake ------------------------------------------------------------------------
    def connect(self, timeout: float) -> dict:
        """Handshake, retrying until `timeout` s; returns the welcome meta."""
        start = last = time.monotonic()
        while not self._hello():
            if not self.run_file.exists():
                time.sleep(0.2)  # no learner yet (no run.json): look again, without spinning
            now = time.monotonic()
            if now - last > 10.0:
                last = now
                self.say(f"{self.actor_id}: waiting for the learner at {self.client.endpoint} "
                         f"({now - start:.0f} s" + ("" if self.run_file.exists() else
                                                    f"; no {self.run_file} yet") + ")")
            if now > start + timeout:
                raise transport.PeerTimeout(
                    f"{self.actor_id}: no answer from the learner at {self.client.endpoint} within "
                    f"{timeout:.0f} s: is `robostack learner` running there?")
        return self.welcome

    def _hello(self) -> bool:
        try:
            run, secret = read_run_identity(self.run_file)
        except RunFileMissing:  # the learner creates it before it binds: not up yet
            self._note_down()
            return False
        except RunFileError as exc:
            raise HandshakeRefused(f"{self.actor_id}: {exc}") from None
        session = self.client.session
        # Where this session's batches will start: a gap up to there (the spool lost, damaged
        # or deleted since the learner last held this actor's transitions) is declared here,
        # and is the only one the learner accepts from this session.
        resend_from = self.pending[0].first_seq if self.pending else self.seq + 1
        meta = {**self.hello_meta, "run": run, "resend_from": resend_from,
                "proof": hello_proof(secret, run, self.actor_id, session)}
        try:
            reply = self.client.request("hello", meta, timeout=self.timeout)
        except transport.RemoteError as exc:
            raise HandshakeRefused(f"learner at {self.client.endpoint} refused {self.actor_id}: "
                                   f"{exc.text}") from None
        except transport.PeerTimeout:
            self._note_down()
            return False
        if reply.kind == "superseded":
            raise Superseded(f"{self.actor_id}: {reply.meta.get('error')}")
        if reply.kind != "welcome" or reply.meta.get("run") != run or not proof_matches(
                welcome_proof(secret, run, self.actor_id, session), reply.meta.get("proof")):
            raise HandshakeRefused(
                f"{self.actor_id}: what answers at {self.client.endpoint} is not run {run}'s "
                f"learner (its reply to hello is {reply.kind!r} for run "
                f"{str(reply.meta.get('run'))[:40]!r} without this run's proof): another process "
                f"holds that endpoint, or --learner points at another run's learner; stop it or "
                f"fix --learner")
        self.welcome = reply.meta
        self.welcome_count += 1
        spool_run = self.spool.read_meta().get("run")
        if spool_run not in (None, run) and self.pending:
            raise HandshakeRefused(
                f"{self.actor_id}: the spool {self.spool.dir} holds {len(self.pending)} batches "
                f"of run {spool_run}, but the learner runs {run}: resend them to "
                f"their own learner, or delete the spool / pick another --spool-dir")
        self.spool.write_meta({"run": run, "actor": self.actor_id})
        self.stored = transport.meta_int(reply.meta, "stored", low=0)
        self._set_durable(transport.meta_int(reply.meta, "durable", low=0))
        # A restarted actor continues its numbering after whatever the learner already holds.
        self.seq = max(self.seq, self.stored)
        if self._down_since is not None and self.welcome_count > 1:
            self.say(f"{self.actor_id}: learner back after {time.monotonic() - self._down_since:.0f} s; "
                     f"resending {self.unsent} spooled transitions")
        self._down_since = None
        self.connected = True
        return True

    # --- producing ------------------------------------------------------------------------
    def add(self, obs, action, reward, next_obs, terminated, truncated, stream="online") -> None:
        if stream not in STREAMS:
            raise ValueError(f"unknown stream {stream!r}; streams are {STREAMS}")
        if self._open and stream != self._open_stream:
            self._close_batch(len(self._open))
        self._open_stream = stream
        # Copies: env observations may be views the env reuses.
        self._open.append(({k: np.array(v) for k, v in obs.items()}, np.array(action, np.float32),
                           float(reward), {k: np.array(v) for k, v in next_obs.items()},
                           bool(terminated), bool(truncated)))
        # One transition is held back until the next one comes, so that if the robot server dies
        # the episode's last transition can still be marked truncated (truncate_last()).
        if len(self._open) > self.batch_steps:
            self._close_batch(self.batch_steps)

    def truncate_last(self) -> bool:
        """Mark the newest not-yet-sent transition as truncated (its episode was cut short)."""
        if not self._open:
            return False
        obs, action, reward, next_obs, terminated, _ = self._open[-1]
        self._open[-1] = (obs, action, reward, next_obs, terminated, not terminated)
        return True

    def end_episode(self, summary: dict | None = None) -> None:
        """The episode ended with the last add(): close the batch, attaching `summary`."""
        if summary is not None:
            self._episodes.append(summary)
        self._close_batch(len(self._open))

    def _close_batch(self, n: int) -> None:
        if n == 0:
            return
        steps, self._open = self._open[:n], self._open[n:]
        episodes, self._episodes = (self._episodes, []) if not self._open else ([], self._episodes)
        batch = Batch(self._open_stream, self.seq + 1, stack_transitions(steps), episodes)
        for e in batch.episodes:
            e["last_seq"] = batch.last_seq
        self.seq = batch.last_seq
        self.spool.write(batch)
        self.pending.append(batch)

    # --- sending --------------------------------------------------------------------------
    @property
    def unsent(self) -> int:
        """Spooled transitions the current learner session does not hold yet (the batch being
        filled, at most batch_steps + 1 transitions, is not counted)."""
        return sum(b.last_seq - max(b.first_seq - 1, self.stored) for b in self.pending
                   if b.last_seq > self.stored)

    def pump(self, budget: float = 0.5, force: bool = False) -> bool:
        """Send due batches for up to `budget` s. Returns True if the learner answered."""
        now = time.monotonic()
        if not self.connected:
            if now < self._next_try and not force:
                return False
            if not self._hello():
                return False
        deadline = now + budget
        todo = [b for b in self.pending if b.last_seq > self.stored]
        if not todo:
            return self.status() is not None if force else True
        for batch in todo:
            if not self._send(batch):
                return False
            if time.monotonic() > deadline:
                break
        return True

    def status(self) -> dict | None:
        """Ask the learner for its ack state without sending transitions (None: unreachable)."""
        if not self.connected and not self._hello():
            return None
        return self._request("status", {}, {})

    def request(self, kind: str, meta: dict) -> dict | None:
        """Any other request (eval, bye) with this actor's identity; None if unreachable."""
        if not self.connected and not self._hello():
            return None
        return self._request(kind, meta, {})

    def flush(self, timeout: float) -> bool:
        """Close the open batch and try to send everything for up to `timeout` s."""
        self._close_batch(len(self._open))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.pump(budget=max(0.0, deadline - time.monotonic()), force=True) and \
                    all(b.last_seq <= self.stored for b in self.pending):
                return True
            time.sleep(0.05)
        return False

    def wait_durable(self, timeout: float) -> bool:
        """At the end of a run, after "bye": ask the learner until its checkpoint holds every
        transition sent (each batch's spool file is deleted as it becomes durable), for up to
        `timeout` s. True when nothing is left in the spool."""
        deadline = time.monotonic() + timeout
        while self.pending:
            if time.monotonic() > deadline:
                return False
            if self._request("durable", {}, {}) is None or self.pending:
                time.sleep(0.2)
        return True

    def _send(self, batch: Batch) -> bool:
        skip = max(0, self.stored + 1 - batch.first_seq)  # the learner holds a prefix already
        arrays = {k: v[skip:] for k, v in batch.arrays.items()}
        meta = {"stream": batch.stream, "first_seq": batch.first_seq + skip,
                "count": batch.count - skip, "episodes": batch.episodes}
        return self._request("transitions", meta, arrays) is not None

    def _request(self, kind: str, meta: dict, arrays: dict) -> dict | None:
        meta = {**self.extra_meta, "actor": self.actor_id, "unsent": self.unsent, **meta}
        try:
            reply = self.client.request(kind, meta, arrays, timeout=self.timeout)
        except transport.PeerTimeout:
            self._note_down()
            return None
        if reply.kind == "rehello":  # a new learner session: handshake, then send again
            self.connected = False
            return self._request(kind, meta, arrays) if self._hello() else None
        if reply.kind == "superseded":
            raise Superseded(f"{self.actor_id}: {reply.meta.get('error')}")
        if reply.kind != "ack":
            return reply.meta
        self.reply = reply.meta
        self.stored = max(self.stored, int(reply.meta["stored"]))
        self._set_durable(int(reply.meta["durable"]))
        if kind == "transitions":
            self.sent_batches += 1
        return reply.meta

    def _set_durable(self, durable: int) -> None:
        self.durable = durable
        keep = []
        for batch in self.pending:
            if batch.last_seq <= durable:
                if batch.path is not None:
                    batch.path.unlink(missing_ok=True)
            else:
                keep.append(batch)
        self.pending = keep

    def _note_down(self) -> None:
        now = time.monotonic()
        self.connected = False
        self._next_try = now + self.retry_every
        if self._down_since is None:
            self._down_since = now
        if self.welcome_count and now - self._last_down_note > 10.0:
            self._last_down_note = now
            self.say(f"{self.actor_id}: learner at {self.client.endpoint} not answering for "
                     f"{now - self._down_since:.0f} s; acting on with the last weights, "
                     f"{self.unsent} transitions spooled in {self.spool.dir}")

    def close(self) -> None:
        self.client.close()


# --- the learner's end -----------------------------------------------------------------------

@dataclass
class Accepted:
    """What the learner should store of a received batch: arrays[skip:], and how many were lost."""

    skip: int
    count: int
    lost: int
    new_episodes: list


class Ledger:
    """Per-actor highest stored / durable seq: the learner's dedup and ack state (checkpointed)."""

    def __init__(self, state: dict | None = None):
        state = state or {}
        self.stored: dict[str, int] = dict(state.get("stored", {}))
        self.durable: dict[str, int] = dict(self.stored)  # a loaded checkpoint is durable
        self.lost: dict[str, int] = dict(state.get("lost", {}))
        self.duplicates = 0  # resent transitions dropped since this process started

    def accept(self, actor: str, first_seq: int, count: int, episodes: list,
               declared_gap_to: int | None = None) -> Accepted:
        """What to store of a batch of `count` transitions from `first_seq` on. It must continue
        where the ledger stands (first_seq <= stored + 1), or start exactly at
        `declared_gap_to`, the seq its actor's hello said its spool resumes at (the seqs before
        are then counted as lost). Anything else is SeqAhead, raised before anything changes,
        as is an episode summary that does not end inside the batch."""
        stored = self.stored.get(actor, 0)
        if first_seq > stored + 1 and first_seq != declared_gap_to:
            declared = "declared no gap" if declared_gap_to is None or declared_gap_to <= stored + 1 \
                else f"declared a gap up to #{declared_gap_to}"
            raise SeqAhead(f"first_seq {first_seq} is ahead of what {actor} could have sent: the "
                           f"learner holds its transitions up to #{stored} and its hello "
                           f"{declared}; refused, nothing stored (an actor sends from #{stored + 1})")
        last = first_seq + count - 1
        for episode in episodes:
            if not first_seq <= int(episode.get("last_seq", 0)) <= last:
                raise SeqAhead(f"an episode summary ends at #{episode.get('last_seq')}, outside "
                               f"its batch #{first_seq}..#{last}: refused, nothing stored")
        skip = min(count, max(0, stored + 1 - first_seq))
        lost = max(0, first_seq - stored - 1)
        if lost:
            log.warning("%s: transitions %d..%d never arrived (its hello declared its spool "
                        "resumes at #%d: lost or deleted); continuing after them", actor,
                        stored + 1, first_seq - 1, first_seq)
            self.lost[actor] = self.lost.get(actor, 0) + lost
        self.duplicates += skip
        if count > skip:
            self.stored[actor] = last
        new_episodes = [e for e in episodes if int(e.get("last_seq", 0)) > stored]
        return Accepted(skip, count - skip, lost, new_episodes)

    def ack(self, actor: str) -> dict:
        return {"stored": self.stored.get(actor, 0), "durable": self.durable.get(actor, 0)}

    def mark_durable(self, snapshot: dict[str, int]) -> None:
        self.durable = dict(snapshot)

    def state_dict(self) -> dict:
        return {"stored": dict(self.stored), "lost": dict(self.lost)}
