"""Who may talk to our sockets: private unix-socket directories, ZeroMQ CURVE keys, and the ZAP
authenticator that admits only allow-listed client keys (docs/security.md says why each part).

- Loopback and unix sockets serve this machine only, and the unix sockets live in a directory
  only this user can open (`private_dir`), so nothing else is needed there.
- A socket bound on a network interface must use CURVE (sockets.py refuses it otherwise): the
  binding side is the CURVE server and holds a secret key; each connecting side holds its own
  key pair and the server's public key. CURVE alone encrypts but admits every key (libzmq lets
  any client in when no ZAP handler answers), so each context that serves CURVE runs one
  `_ZapHandler` thread that answers libzmq's ZAP requests from the allow-list directory, and
  the sockets set ZAP_ENFORCE_DOMAIN so that without an answer nobody gets in.

Key files are ZeroMQ's certificate format (what zmq.auth writes and reads):

    <keys dir>/NAME.key          public key, readable by anyone (copy it to other machines)
    <keys dir>/NAME.key_secret   public and secret key, mode 0600 (never leaves this machine)
    <keys dir>/allowed/NAME.key  client public keys this machine's servers admit

`robostack keys` (robostack/commands/keys.py) creates, lists, allows and revokes them.
"""

from __future__ import annotations

import hashlib
import logging
import os
import stat
import threading
import time
import weakref
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import zmq
from zmq.utils import z85

from robostack.transport.endpoints import check_private, private_dir
from robostack.transport.envelope import TransportError

__all__ = ["CurveKeys", "default_keys_dir", "fingerprint", "read_public_key",
           "write_key_pair", "allowed_keys"]

_log = logging.getLogger(__name__)

PUBLIC_SUFFIX = ".key"
SECRET_SUFFIX = ".key_secret"
ALLOWED = "allowed"
_Z85_KEY_CHARS = 40  # a 32-byte curve25519 key in Z85


# --- key files ----------------------------------------------------------------------------------

def default_keys_dir() -> Path:
    """$ROBOSTACK_KEYS, else $XDG_CONFIG_HOME/robostack/keys (~/.config/robostack/keys)."""
    if os.environ.get("ROBOSTACK_KEYS"):
        return Path(os.environ["ROBOSTACK_KEYS"]).expanduser()
    config = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(config) / "robostack" / "keys"


def fingerprint(public_key: bytes) -> str:
    """A short name for a public key (Z85 bytes) for logs and listings: the first 16 hex digits
    of the sha256 of its 32 raw bytes."""
    return hashlib.sha256(z85.decode(public_key)).hexdigest()[:16]


def _valid_key(key: bytes | None, path: Path, which: str) -> bytes:
    try:
        ok = key is not None and len(key) == _Z85_KEY_CHARS and len(z85.decode(key)) == 32
    except Exception:  # z85.decode raises whatever its arithmetic hits on bad characters
        ok = False
    if not ok:
        raise TransportError(f"{path}: no valid {which} key in it (40 Z85 characters expected): "
                             f"use a file written by `robostack keys create`")
    return key


def _read_cert(path: Path) -> tuple[bytes, bytes | None]:
    # zmq.auth.load_certificate reads the format; its errors name no fix, so ours wrap them.
    import zmq.auth

    try:
        return zmq.auth.load_certificate(path)
    except (OSError, ValueError) as exc:
        raise TransportError(f"cannot read the key file {path}: {exc}: expected a file written by "
                             f"`robostack keys create` (see `robostack keys --help`)") from None


def read_public_key(path: Path) -> bytes:
    """The Z85 public key in a .key (or .key_secret) file."""
    return _valid_key(_read_cert(Path(path))[0], Path(path), "public")


def read_key_pair(path: Path) -> tuple[bytes, bytes]:
    """(public, secret) from a .key_secret file, refused if others may read it (like ssh)."""
    path = Path(path)
    public, secret = _read_cert(path)
    mode = stat.S_IMODE(os.stat(path).st_mode)
    if mode & 0o077:
        raise TransportError(f"{path} holds a secret key but is readable by group or others "
                             f"(mode {mode:04o}): `chmod 600 {path}`, and if others may have "
                             f"read it, make a new pair (`robostack keys create`)")
    return _valid_key(public, path, "public"), _valid_key(secret, path, "secret")


def write_key_pair(keys_dir: Path, name: str) -> tuple[Path, Path]:
    """Create NAME.key (0644) and NAME.key_secret (0600) in keys_dir; refuses to overwrite."""
    if not name or not all(c.isalnum() or c in "-_." for c in name) or name.startswith("."):
        raise TransportError(f"key name {name!r}: use letters, digits, '-', '_' or '.' "
                             f"(e.g. the machine's name)")
    keys_dir = private_dir(Path(keys_dir), "the keys directory")
    public_path, secret_path = keys_dir / f"{name}{PUBLIC_SUFFIX}", keys_dir / f"{name}{SECRET_SUFFIX}"
    for path in (public_path, secret_path):
        if os.path.lexists(path):
            raise TransportError(f"{path} exists: robostack never overwrites a key (machines may "
                                 f"trust it); pick another name, or `rm` it first if you mean to")
    public, secret = zmq.curve_keypair()
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    _write_new(secret_path, 0o600, f"#   robostack CURVE secret key {name!r}, {stamp}: never copy it "
               f"anywhere\nmetadata\ncurve\n    public-key = \"{public.decode()}\"\n"
               f"    secret-key = \"{secret.decode()}\"\n")
    _write_new(public_path, 0o644, f"#   robostack CURVE public key {name!r}, {stamp}\n"
               f"metadata\ncurve\n    public-key = \"{public.decode()}\"\n")
    return public_path, secret_path


def _write_new(path: Path, mode: int, text: str) -> None:
    # O_EXCL with the final mode: the secret is never readable by others, not even for a moment.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def allowed_keys(allowed_dir: Path) -> dict[bytes, str]:
    """The allow-list: raw 32-byte public key -> its name (the file's stem). A missing folder
    is an empty list; an unreadable file is logged and left out (it admits nobody)."""
    keys = {}
    try:
        paths = sorted(Path(allowed_dir).glob(f"*{PUBLIC_SUFFIX}"))
    except OSError:
        return keys
    for path in paths:
        try:
            keys[z85.decode(read_public_key(path))] = path.stem
        except TransportError as exc:
            _log.warning("allow-list: left out %s", exc)
    return keys


# --- the configuration a socket takes -----------------------------------------------------------

@dataclass(frozen=True)
class CurveKeys:
    """CURVE for one socket. A binding socket is the CURVE server: it uses `key`'s secret and
    admits the client keys in `allowed` (default <keys_dir>/allowed). A connecting socket is a
    client: it uses `key` and needs `server_key`, the server's public key.

    `key` and `server_key` are a NAME in the keys directory (NAME.key_secret, NAME.key) or a path
    to such a file; `keys_dir` defaults to default_keys_dir(). Wiring an option into a process is
    `curve=CurveKeys.from_options(args.curve_key, args.curve_server_key)`."""

    key: str
    server_key: str | None = None
    keys_dir: str | None = None
    allowed: str | None = None

    @classmethod
    def from_options(cls, key: str | None, server_key: str | None = None) -> CurveKeys | None:
        """None (plaintext, loopback and ipc only) when no key is given."""
        return None if not key else cls(key, server_key or None)

    @property
    def directory(self) -> Path:
        return Path(self.keys_dir).expanduser() if self.keys_dir else default_keys_dir()

    def _resolve(self, ref: str, suffix: str) -> Path:
        path = Path(ref).expanduser()
        if path.suffix in (PUBLIC_SUFFIX, SECRET_SUFFIX) or os.sep in ref:
            return path
        return self.directory / f"{ref}{suffix}"

    @cached_property
    def pair(self) -> tuple[bytes, bytes]:
        """(public, secret) Z85 key of this side, read once."""
        path = self._resolve(self.key, SECRET_SUFFIX)
        if path.suffix == PUBLIC_SUFFIX:
            path = path.with_suffix(SECRET_SUFFIX)
        return read_key_pair(path)

    @cached_property
    def server_public(self) -> bytes:
        if not self.server_key:
            raise TransportError(f"CURVE client with key {self.key!r} has no server key: pass the "
                                 f"server's public key (its NAME.key file, copied from the server "
                                 f"machine) as the CURVE server key")
        return read_public_key(self._resolve(self.server_key, PUBLIC_SUFFIX))

    @property
    def allowed_dir(self) -> Path:
        return Path(self.allowed).expanduser() if self.allowed else self.directory / ALLOWED

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.pair[0])


def refusal_hint(curve: CurveKeys | None) -> str:
    """What a silent CURVE peer may mean (a refused key looks exactly like no server), for
    PeerTimeout texts; "" without CURVE."""
    if curve is None:
        return ""
    return (f" CURVE is on: the server may have refused our key (fingerprint {curve.fingerprint}; "
            f"its log names it): on the server, `robostack keys allow` our public key file; and "
            f"check that {curve.server_key!r} is that server's public key")


def apply_curve(sock: zmq.Socket, context: zmq.Context, curve: CurveKeys, bind: bool) -> None:
    """Set up `sock` (before bind or connect) as a CURVE server if it binds, else a client;
    closes it when that fails (a key file missing, unreadable or too open)."""
    try:
        apply_server(sock, context, curve) if bind else apply_client(sock, curve)
    except BaseException:
        sock.close()
        raise


def apply_server(sock: zmq.Socket, context: zmq.Context, curve: CurveKeys) -> None:
    """Make `sock` (before bind) a CURVE server whose clients the allow-list decides."""
    secret = curve.pair[1]
    if os.path.lexists(curve.allowed_dir):
        check_private(curve.allowed_dir, "the allow-list")
    domain = _handler_for(context).domain_for(curve.allowed_dir)
    if not allowed_keys(curve.allowed_dir):
        _log.warning("CURVE server with an empty allow-list %s admits no client: "
                     "`robostack keys allow CLIENT.key` on this machine", curve.allowed_dir)
    sock.curve_server = True
    sock.curve_secretkey = secret
    sock.zap_domain = domain.encode()
    # Without this, libzmq admits every client when no ZAP handler answers (the handler thread
    # gone): fail closed instead.
    sock.setsockopt(zmq.ZAP_ENFORCE_DOMAIN, 1)


def apply_client(sock: zmq.Socket, curve: CurveKeys) -> None:
    """Make `sock` (before connect) a CURVE client of the server whose public key is given."""
    public, secret = curve.pair
    sock.curve_serverkey = curve.server_public
    sock.curve_publickey = public
    sock.curve_secretkey = secret


# --- the ZAP authenticator ----------------------------------------------------------------------

_ZAP_ENDPOINT = "inproc://zeromq.zap.01"  # fixed by the ZAP spec (RFC 27): one per context
_handlers: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_handlers_lock = threading.Lock()


def _handler_for(context: zmq.Context) -> _ZapHandler:
    with _handlers_lock:
        handler = _handlers.get(context)
        if handler is None or not handler.alive:
            handler = _handlers[context] = _ZapHandler(context)
        return handler


class _ZapHandler:
    """Answers libzmq's ZAP requests for one context: a CURVE client is admitted when its
    public key is in the allow-list folder of the socket's domain, read at each handshake (so
    `robostack keys allow/revoke` applies to the next connection without a restart; a
    connection already up stays up). Every refusal is logged with the key's fingerprint and the
    peer's address, each key at most once per `quiet_s`.

    Why our own thread rather than zmq.auth.ThreadAuthenticator: that one logs refusals at
    debug level without the peer's address or any rate limit, and serves one allow-list per
    domain only through its own API; this is the whole protocol in a few lines."""

    quiet_s = 10.0

    def __init__(self, context: zmq.Context):
        self._domains: dict[str, Path] = {}
        self._lock = threading.Lock()
        self.refused = 0
        self._last_logged: dict[bytes, float] = {}
        self._sock = context.socket(zmq.REP)
        self._sock.linger = 0
        try:
            self._sock.bind(_ZAP_ENDPOINT)
        except zmq.ZMQError as exc:
            self._sock.close()
            raise TransportError(f"cannot start the CURVE authenticator: {exc.strerror} (another "
                                 f"ZAP handler, e.g. zmq.auth, already serves this context: use "
                                 f"one or the other)") from None
        self._thread = threading.Thread(target=self._run, name="robostack-zap", daemon=True)
        self._thread.start()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def domain_for(self, allowed_dir: Path) -> str:
        with self._lock:
            for domain, folder in self._domains.items():
                if folder == allowed_dir:
                    return domain
            domain = f"robostack-{len(self._domains)}"
            self._domains[domain] = allowed_dir
            return domain

    def _run(self) -> None:
        # Blocks until a handshake needs an answer; the context's term() wakes it with ETERM,
        # and closing the socket then lets term() finish.
        while True:
            try:
                frames = self._sock.recv_multipart()
            except zmq.ContextTerminated:
                break
            try:
                reply = self._answer(frames)
            except Exception:  # a bug here must refuse the client, never stop the thread
                _log.exception("CURVE authenticator: refused a client after an internal error")
                reply = [b"1.0", frames[1] if len(frames) > 1 else b"", b"500", b"internal error",
                         b"", b""]
            try:
                self._sock.send_multipart(reply)
            except zmq.ContextTerminated:
                break
        self._sock.close()

    def _answer(self, frames: list[bytes]) -> list[bytes]:
        # ZAP request: version, request id, domain, address, routing id, mechanism, credentials.
        if len(frames) < 6 or frames[0] != b"1.0":
            return [b"1.0", frames[1] if len(frames) > 1 else b"", b"500", b"bad ZAP request",
                    b"", b""]
        request_id, domain, address, mechanism = frames[1], frames[2], frames[3], frames[5]
        with self._lock:
            folder = self._domains.get(domain.decode(errors="replace"))
        key = frames[6] if len(frames) > 6 else b""
        if folder is None or mechanism != b"CURVE" or len(key) != 32:
            self._note_refusal(key, address, domain, f"mechanism {mechanism!r} in domain "
                               f"{domain!r}: only CURVE clients of robostack sockets are admitted")
            return [b"1.0", request_id, b"400", b"not admitted", b"", b""]
        try:  # a folder others may write to would let them add keys: refuse everyone then
            check_private(folder, "the allow-list")
        except TransportError as exc:
            self._note_refusal(key, address, domain, str(exc))
            return [b"1.0", request_id, b"400", b"allow-list unusable", b"", b""]
        name = allowed_keys(folder).get(key)
        if name is None:
            self._note_refusal(key, address, domain, f"not in the allow-list {folder} (to admit "
                               f"it: `robostack keys allow ITS_NAME.key` on this machine)")
            return [b"1.0", request_id, b"400", b"key not allowed", b"", b""]
        return [b"1.0", request_id, b"200", b"OK", name.encode(), b""]

    def _note_refusal(self, key: bytes, address: bytes, domain: bytes, why: str) -> None:
        self.refused += 1
        now = time.monotonic()
        if now - self._last_logged.get(key, -self.quiet_s) < self.quiet_s:
            return
        if len(self._last_logged) > 1000:  # a flood of fresh keys must not grow this forever
            self._last_logged.clear()
        self._last_logged[key] = now
        print_key = fingerprint(z85.encode(key)) if len(key) == 32 else "none"
        _log.warning("CURVE: refused client key %s from %s (%d refusals so far; this key is "
                     "logged at most every %.0f s): %s", print_key,
                     address.decode(errors="replace") or "?", self.refused, self.quiet_s, why)
