"""Where sockets live and who can reach them: loopback and unix-socket endpoints, the private
per-user folder for unix sockets, and which binds serve the network (those need CURVE: auth.py).

Unix sockets are files: anyone who may open the folder holding one may connect to it, whatever
the socket file's own mode. So they go in a folder only this user can open (ipc_dir), never
straight in /tmp.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import stat
from pathlib import Path

from robostack.transport.envelope import TransportError

__all__ = ["free_tcp_endpoint", "ipc_dir", "ipc_endpoint", "is_loopback", "is_same_host", "private_dir",
           "MAX_IPC_PATH_BYTES"]


# --- private folders ----------------------------------------------------------------------------

def check_private(path: Path, what: str) -> None:
    """Refuse `path` unless it is a real directory (not a link), ours, and closed to group and
    others: anything less lets another user connect to our sockets or read our keys."""
    try:
        st = os.lstat(path)
    except OSError as exc:
        raise TransportError(f"cannot use {path} as {what}: {exc.strerror}") from None
    if not stat.S_ISDIR(st.st_mode):
        raise TransportError(f"{path} ({what}) is not a directory (a link or a file): remove it "
                             f"so that robostack can create it, or point robostack elsewhere")
    if st.st_uid != os.getuid():
        raise TransportError(f"{path} ({what}) belongs to uid {st.st_uid}, not to you "
                             f"(uid {os.getuid()}): another user may be intercepting your "
                             f"sockets; have it removed, or point robostack elsewhere")
    if st.st_mode & 0o077:
        raise TransportError(f"{path} ({what}) is open to group or others (mode "
                             f"{stat.S_IMODE(st.st_mode):04o}): `chmod 700 {path}`")


def private_dir(path: Path, what: str) -> Path:
    """`path`, created 0700 if missing, checked private (check_private) either way."""
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    except OSError as exc:
        raise TransportError(f"cannot create {path} ({what}): {exc.strerror}") from None
    check_private(path, what)
    return path


def free_tcp_endpoint(host: str = "127.0.0.1") -> str:
    """A tcp endpoint on a port that was free a moment ago (for tests; another process can take
    it before you bind)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return f"tcp://{host}:{s.getsockname()[1]}"


# A unix socket's path must fit sockaddr_un.sun_path: 108 bytes with the terminating NUL.
MAX_IPC_PATH_BYTES = 107


def ipc_dir() -> Path:
    """This user's directory for robostack's unix sockets, created 0700: $XDG_RUNTIME_DIR/robostack
    when XDG_RUNTIME_DIR is set and private (systemd makes /run/user/<uid> so), else
    /tmp/robostack-<uid>. Refused (TransportError) when it exists but is not ours or is open to
    group or others: a socket in it would let that other user in."""
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime:
        try:
            st = os.stat(runtime)
            if st.st_uid == os.getuid() and not st.st_mode & 0o077:
                return private_dir(Path(runtime) / "robostack", "robostack's socket directory")
        except OSError:
            pass  # not there: fall back to /tmp
    return private_dir(Path(f"/tmp/robostack-{os.getuid()}"), "robostack's socket directory")


def ipc_endpoint(name: str) -> str:
    """A per-user unix-socket endpoint (in ipc_dir()), faster than loopback tcp between
    processes on one host, and only this user can connect to it."""
    if not name or "/" in name:
        raise ValueError(f"ipc endpoint name must be a non-empty word without '/', got {name!r}")
    endpoint = f"ipc://{ipc_dir() / name}"
    check_ipc_length(endpoint)
    return endpoint


def check_ipc_length(endpoint: str) -> None:
    path = endpoint[len("ipc://"):]
    if len(path.encode()) > MAX_IPC_PATH_BYTES:
        raise TransportError(
            f"unix socket path {path!r} is {len(path.encode())} bytes, over the {MAX_IPC_PATH_BYTES} "
            f"a unix socket allows: use a shorter name, or a shorter private directory (e.g. "
            f"XDG_RUNTIME_DIR=/run/user/{os.getuid()})")


def is_loopback(host: str) -> bool:
    """True for hosts only this machine can reach: localhost, 127.0.0.0/8, ::1."""
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serves_network(endpoint: str) -> bool:
    """True when binding `endpoint` lets other machines connect: tcp on anything but loopback,
    and every transport other than ipc and inproc."""
    scheme, _, rest = endpoint.partition("://")
    if scheme in ("ipc", "inproc"):
        return False
    if scheme == "tcp":
        return not is_loopback(rest.rpartition(":")[0])
    return True


def is_same_host(endpoint: str) -> bool:
    """True when the endpoint can only reach this machine, so sender stamps are on our clock."""
    if endpoint.startswith(("ipc://", "inproc://")):
        return True
    return is_loopback(endpoint.partition("://")[2].rpartition(":")[0])


def check_endpoint(endpoint: str, bind: bool, curve: bool) -> None:
    """Refuse (TransportError) a bind that would serve the network without CURVE, and a unix
    socket path too long to exist."""
    if bind and not curve and serves_network(endpoint):
        raise TransportError(
            f"refusing to bind {endpoint!r} without CURVE: any machine on the network could "
            f"connect to it. Bind loopback (tcp://127.0.0.1:PORT) for this machine only, or "
            f"serve the network with keys: `robostack keys create NAME` on this machine, "
            f"`robostack keys allow CLIENT.key` for each client, and pass the key (the CURVE key "
            f"option of the command; in code curve=CurveKeys('NAME')): docs/security.md")
    if endpoint.startswith("ipc://"):
        check_ipc_length(endpoint)
