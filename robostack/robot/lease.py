"""Who may move the arm: one lease, held by one controlling client at a time (docs/leases.md).

A lease is a random secret token that `acquire` hands out. The holder sends it as meta["lease"]
on every request; each accepted request renews it, and a client that goes quiet (dead,
SIGSTOPped, unplugged) loses it after `timeout` s without one. `release` gives it up. Without
the lease a client may read (hello, state, stats) and ask for it (acquire), nothing else. The
token, not the socket's identity, names the controller: a client that reconnects keeps it, and
another process on the same host cannot guess it.

The robot server also binds a local admin socket (an ipc endpoint, owner-only: whoever can open
it is this user on this host) that may stop the server, disarm the arm and break the lease
without holding it. Its default address is derived from the command endpoint
(`admin_endpoint_for`), so whoever knows the command endpoint and runs as the same user finds it.

The rules live here, timed by the caller's clock (wall-clock time in both of the server's
clocks: lock-step physics is frozen between requests, but a dead client is dead in real time).
"""

from __future__ import annotations

import hashlib
import re
import secrets

from robostack import transport

# The requests anyone may send without the lease, and those the admin socket serves.
OPEN_REQUESTS = frozenset({"hello", "state", "stats", "acquire"})
ADMIN_REQUESTS = frozenset({"hello", "state", "stats", "shutdown", "disarm", "break_lease"})

# Words every refusal for want of a (live) lease contains: the client re-acquires on seeing them.
NO_LEASE = "send 'acquire' first"
HELD_BY = "the lease is held by"


def admin_endpoint_for(command_endpoint: str) -> str:
    """The admin socket's default address for a server whose command socket is
    `command_endpoint`: an ipc endpoint (transport.ipc_endpoint) named after it."""
    tail = command_endpoint.rpartition("/")[2] if command_endpoint.startswith("ipc://") \
        else command_endpoint.partition("://")[2]
    word = re.sub(r"[^A-Za-z0-9._-]", "-", tail).strip("-") or "robot"
    if len(word) > 40:  # a unix socket path has ~107 bytes: keep the name short, still unique
        word = word[:24] + "-" + hashlib.sha1(word.encode()).hexdigest()[:12]
    return transport.ipc_endpoint(f"admin-{word}")


class Lease:
    """The one lease of a server. Not thread-safe: the server's loop is its only user."""

    def __init__(self, timeout: float):
        if not timeout > 0:
            raise ValueError(f"lease timeout must be > 0 s, got {timeout}")
        self.timeout = timeout
        self.token: str | None = None
        self.holder = ""  # the name the holder gave (for messages; not a secret, not checked)
        self.renewed = 0.0  # when the holder was last heard from

    def live(self, now: float) -> bool:
        return self.token is not None and now - self.renewed <= self.timeout

    def seconds_left(self, now: float) -> float:
        return max(0.0, self.timeout - (now - self.renewed)) if self.live(now) else 0.0

    def acquire(self, now: float, holder: str, token=None) -> tuple[str, bool]:
        """(token, new): the caller's own live lease is renewed (new=False); a free or expired
        one goes to it with a fresh token (new=True). ValueError naming the holder and the
        seconds left while someone else holds it."""
        if self.live(now):
            if isinstance(token, str) and secrets.compare_digest(token, self.token):
                self.renewed = now
                return self.token, False
            raise ValueError(f"{HELD_BY} {self.holder!r} for {self.seconds_left(now):.2f} s more "
                             f"unless it renews it (it expires {self.timeout:g} s after the "
                             "holder's last request): wait for it to release or die, or break it "
                             "on the server's admin socket")
        self.token, self.holder, self.renewed = secrets.token_hex(16), holder, now
        return self.token, True

    def check(self, now: float, token) -> None:
        """Accept a request carrying `token` and renew the lease, or ValueError saying why not."""
        if isinstance(token, str) and self.token is not None \
                and secrets.compare_digest(token, self.token):
            if now - self.renewed <= self.timeout:
                self.renewed = now
                return
            raise ValueError(f"your lease expired {now - self.renewed - self.timeout:.2f} s ago "
                             f"(no request for over {self.timeout:g} s): {NO_LEASE}, then 'arm' "
                             "or 'reset' (the arm was stopped)")
        if token is not None and not isinstance(token, str):
            raise ValueError(f"meta 'lease' must be the token string 'acquire' returned, got "
                             f"{type(token).__name__}; {NO_LEASE}")
        if self.live(now):
            raise ValueError(f"{HELD_BY} {self.holder!r}; only its holder may send this; "
                             f"{NO_LEASE} (it is free once released or expired)")
        raise ValueError(f"this request needs the lease: {NO_LEASE}")

    def release(self) -> None:
        self.token, self.holder = None, ""
