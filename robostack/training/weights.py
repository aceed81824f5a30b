"""Policy weights learner -> actors: a latest-only PUB/SUB stream, versioned and checksummed.

One "weights" message carries the parameters and buffers the actor needs to act (encoder, with
its fixed state scaling, actor and, with a discrete gripper, the grasp critic) as raw float
arrays, optionally extra named arrays beside them, with meta {version, sha256}.
The SHA-256 runs over names, dtypes, shapes and bytes in order; an actor loads a message only
if the digest matches, and only between env steps. Versions count publications of one learner
run and continue across learner restarts (they are checkpointed); an actor accepts a message
whose version is newer than its own, or any message from a new learner session (a learner
restarted from an older checkpoint legitimately goes back in version).

Signed, too: with the run's secret (run.json), meta carries `signature` = HMAC-SHA256 of the
publisher session, version and digest, and an actor given the secret loads only messages signed
with it. The digest alone proves a message intact, not that this run's learner sent it: a process
that took the weights endpoint (or a stray learner of another run) could otherwise hand the
actors a policy of its own.
"""

from __future__ import annotations

import hashlib
import hmac
import time

import numpy as np
import torch

from robostack import transport

ACTING_MODULES = ("encoder", "actor", "grasp_critic")


def acting_state(agent) -> dict[str, np.ndarray]:
    """Copies of the acting parameters (copies: ZeroMQ sends big buffers without copying, and
    the optimiser updates parameters in place)."""
    return {name: tensor.detach().cpu().numpy().copy()
            for name, tensor in agent.nets.state_dict().items()
            if name.split(".", 1)[0] in ACTING_MODULES}


def signature(secret: str, session: str, version: int, sha256: str) -> str:
    """What proves a weights message is this run's learner's (HMAC-SHA256 under the run secret)."""
    text = f"weights\n{session}\n{version}\n{sha256}".encode()
    return hmac.new(bytes.fromhex(secret), text, hashlib.sha256).hexdigest()


def digest(arrays: dict[str, np.ndarray]) -> str:
    h = hashlib.sha256()
    for name, array in arrays.items():
        h.update(f"{name}:{array.dtype.str}:{array.shape};".encode())
        h.update(memoryview(np.ascontiguousarray(array)).cast("B"))
    return h.hexdigest()


class WeightsPublisher:
    """Learner side: publish on change, and republish the latest every `repeat_every` s so
    actors that (re)connect late get weights without waiting for the next version."""

    def __init__(self, endpoint: str, repeat_every: float = 2.0, curve=None, secret: str | None = None):
        self.publisher = transport.Publisher(endpoint, source="learner", curve=curve)
        self.secret = secret  # the run's: signs every message (None: unsigned, for tests)
        self.repeat_every = repeat_every
        self.version = 0
        self._latest: tuple[dict, dict] | None = None
        self._sent_at = 0.0

    def publish(self, agent, version: int, extra: dict[str, np.ndarray] | None = None) -> None:
        arrays = acting_state(agent)
        arrays.update(extra or {})
        self.version = version
        meta = {"version": version, "sha256": digest(arrays)}
        if self.secret is not None:
            meta["signature"] = signature(self.secret, self.publisher.session, version, meta["sha256"])
        self._latest = (meta, arrays)
        self._send()

    def repeat(self, now: bool = False) -> None:
        """Resend the latest weights if `repeat_every` s passed since the last send (or `now`)."""
        if self._latest is not None and (now or time.monotonic() - self._sent_at > self.repeat_every):
            self._send()

    def _send(self) -> None:
        meta, arrays = self._latest
        self.publisher.publish("weights", meta, arrays)
        self._sent_at = time.monotonic()

    def close(self) -> None:
        self.publisher.close()


class WeightsSubscriber:
    """Actor side: `poll(agent)` between steps loads the newest verified weights, if any."""

    def __init__(self, endpoint: str, say=print, name: str = "actor", curve=None, signed: bool = False):
        # hwm 4: weights are big and only the newest matters.
        self.subscriber = transport.Subscriber(endpoint, "weights", hwm=4, curve=curve)
        self.say = say
        self.name = name
        self.version = -1  # -1: acting with the initial (untrained) parameters
        self.session = ""
        self.received_at: float | None = None
        self.stamp: float | None = None
        self.rejected = 0  # messages that failed their checksum (or were malformed)
        self.stale = 0  # intact messages refused as not newer than the loaded version
        self.extra: dict[str, np.ndarray] = {}  # arrays sent beside the parameters, if any
        # signed: load only messages signed with the run's secret, set once known (after the
        # actor's hello); until then nothing loads.
        self.signed, self.secret = signed, None

    def poll(self, agent) -> bool:
        """Load the newest weights message if it is newer and intact. Never waits."""
        try:
            msg = self.subscriber.poll_latest()
        except transport.ProtocolError as exc:
            self.rejected += 1
            self.say(f"{self.name}: dropped a malformed weights message: {exc}")
            return False
        if msg is None:
            return False
        return self._load(agent, msg)

    def wait(self, agent, timeout: float) -> bool:
        """Wait up to `timeout` s for a first (or newer) weights message and load it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                msg = self.subscriber.latest(min(0.5, max(0.01, deadline - time.monotonic())))
            except transport.PeerTimeout:
                continue
            if self._load(agent, msg):
                return True
        return False

    def _load(self, agent, msg: transport.Message) -> bool:
        try:
            version = transport.meta_int(msg.meta, "version", -1, low=-1)
        except ValueError as exc:
            self.rejected += 1
            self.say(f"{self.name}: dropped a weights message: {exc}")
            return False
        if msg.session == self.session and version <= self.version:
            self.stale += 1
            return False
        sha = msg.meta.get("sha256")
        if self.signed and (self.secret is None or not isinstance(sha, str) or not hmac.compare_digest(
                signature(self.secret, msg.session, version, sha), str(msg.meta.get("signature")))):
            self.rejected += 1
            if self.secret is not None and (self.rejected <= 3 or self.rejected % 100 == 0):
                self.say(f"{self.name}: weights v{version} from session {msg.session[:12]!r} are not "
                         f"signed with this run's secret (another run's learner, or a process on "
                         f"the weights endpoint?); ignored ({self.rejected} so far)")
            return False
        if digest(msg.arrays) != sha:
            self.rejected += 1
            self.say(f"{self.name}: weights v{version} failed their SHA-256 check; keeping "
                     f"v{self.version}")
            return False
        state = {name: torch.from_numpy(np.array(array)) for name, array in msg.arrays.items()
                 if name.split(".", 1)[0] in ACTING_MODULES}
        extra = {name: np.array(array) for name, array in msg.arrays.items() if name not in state}
        missing, unexpected = agent.nets.load_state_dict(state, strict=False)
        missing = [m for m in missing if m.split(".", 1)[0] in ACTING_MODULES]
        if missing or unexpected:
            raise RuntimeError(f"weights v{version} do not fit this actor's networks (missing "
                               f"{missing[:3]}, unexpected {unexpected[:3]}): the learner and "
                               f"actor build different networks")
        self.version, self.session, self.extra = version, msg.session, extra
        self.received_at = time.monotonic()
        self.stamp = msg.stamp  # the learner's send time (same-host monotonic clock)
        return True

    def close(self) -> None:
        self.subscriber.close()
