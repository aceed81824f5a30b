"""`robostack keys`: the CURVE key pairs and the allow-list that let robostack serve a network.

Every socket serves this machine only (loopback tcp, unix sockets in a folder only you can open)
unless it is given CURVE keys; a bind on a network address without them is refused. To run
processes on two machines, say the robot server on `robot-pc` and the actors on `gpu-box`:

  1. On each machine, make its key pair:        robostack keys create robot-pc
                                                 robostack keys create gpu-box
     (NAME.key is the public key, NAME.key_secret the secret one, mode 0600: it never leaves
     its machine.)
  2. Copy each PUBLIC key to the other machine:  scp robot-pc:~/.config/robostack/keys/robot-pc.key .
  3. On the serving machine, allow each client:  robostack keys allow gpu-box.key
     (servers admit only allow-listed keys; any other key is refused and logged with its
     fingerprint and address).
  4. On the client, put the server's public key in its keys folder (or pass its path), then
     give the processes their CURVE options: the server its own key name (robot-pc), each
     client its own key name (gpu-box) and the server's key (robot-pc).
  5. Check with `robostack keys list` on both: the fingerprints must match across machines.

`robostack keys revoke gpu-box` removes a client from the allow-list: its next connection is
refused (a connection already up stays up until that server restarts). The keys folder is
$ROBOSTACK_KEYS, else ~/.config/robostack/keys; --dir overrides both. docs/security.md explains
what this protects and what it does not.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from zmq.utils import z85

from robostack.transport.auth import (
    ALLOWED,
    PUBLIC_SUFFIX,
    SECRET_SUFFIX,
    _write_new,
    allowed_keys,
    default_keys_dir,
    fingerprint,
    read_public_key,
    write_key_pair,
)
from robostack.transport.endpoints import private_dir
from robostack.transport.envelope import TransportError


def create(keys_dir: Path, name: str) -> None:
    public_path, secret_path = write_key_pair(keys_dir, name)
    print(f"created the key pair {name!r} (fingerprint {fingerprint(read_public_key(public_path))})")
    print(f"  public: {public_path}   (copy it to the machines that talk to this one)")
    print(f"  secret: {secret_path}   (mode 0600; never copy it)")
    print(f"next: on a serving machine, `robostack keys allow {name}{PUBLIC_SUFFIX}` admits this one")


def list_keys(keys_dir: Path) -> None:
    allowed = {z85.encode(raw): name for raw, name in allowed_keys(keys_dir / ALLOWED).items()}
    print(f"keys folder: {keys_dir}" + ("" if keys_dir.is_dir() else "  (does not exist yet)"))
    rows = []
    for path in sorted(keys_dir.glob(f"*{PUBLIC_SUFFIX}")) if keys_dir.is_dir() else []:
        try:
            key = read_public_key(path)
        except TransportError as exc:
            rows.append((path.stem, "?", f"unreadable: {exc}"))
            continue
        kind = "key pair" if path.with_suffix(SECRET_SUFFIX).exists() else "public key only"
        note = f", allowed as {allowed[key]!r}" if key in allowed else ""
        rows.append((path.stem, fingerprint(key), kind + note))
    rows += [(f"{ALLOWED}/{name}", fingerprint(key), "allowed client") for key, name in
             sorted(allowed.items(), key=lambda item: item[1])]
    if not rows:
        print("no keys: `robostack keys create NAME` makes this machine's pair")
    for name, print_key, what in rows:
        print(f"  {name:<24} {print_key:<17} {what}")


def allow(keys_dir: Path, public_file: Path, name: str | None) -> None:
    if public_file.name.endswith(SECRET_SUFFIX):
        raise TransportError(f"{public_file} is a secret key: allow the public one "
                             f"({public_file.name[:-len(SECRET_SUFFIX)]}{PUBLIC_SUFFIX}); a "
                             f"secret key never leaves its machine")
    key = read_public_key(public_file)
    name = name or public_file.name.removesuffix(PUBLIC_SUFFIX)
    if not name or not all(c.isalnum() or c in "-_." for c in name) or name.startswith("."):
        raise TransportError(f"allow-list name {name!r}: use letters, digits, '-', '_' or '.' "
                             f"(--name NAME)")
    folder = private_dir(private_dir(keys_dir, "the keys directory") / ALLOWED, "the allow-list")
    for other_key, other in ((z85.encode(k), n) for k, n in allowed_keys(folder).items()):
        if other_key == key:
            print(f"already allowed as {other!r} (fingerprint {fingerprint(key)})")
            return
    target = folder / f"{name}{PUBLIC_SUFFIX}"
    if os.path.lexists(target):
        raise TransportError(f"{target} exists and holds another key: pick another --name, or "
                             f"`robostack keys revoke {name}` first")
    # Written afresh from the parsed key: whatever else the copied file held stays out.
    _write_new(target, 0o644, f"#   robostack CURVE client key {name!r}, allowed from "
               f"{public_file}\nmetadata\ncurve\n    public-key = \"{key.decode()}\"\n")
    print(f"allowed {name!r} (fingerprint {fingerprint(key)}): this machine's CURVE servers "
          f"admit it from its next connection")


def revoke(keys_dir: Path, name: str) -> None:
    target = keys_dir / ALLOWED / f"{name.removesuffix(PUBLIC_SUFFIX)}{PUBLIC_SUFFIX}"
    if not target.is_file():
        raise TransportError(f"no allowed key {name!r} in {target.parent}: `robostack keys list` "
                             f"shows the names")
    print_key = fingerprint(read_public_key(target))
    target.unlink()
    print(f"revoked {target.stem!r} (fingerprint {print_key}): its next connection is refused; "
          f"restart the servers to drop a connection already up")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="robostack keys", description=__doc__.splitlines()[0],
                                     epilog=__doc__.split("\n", 2)[2],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    where = argparse.ArgumentParser(add_help=False)
    where.add_argument("--dir", type=Path, default=None,
                       help="the keys folder (default: $ROBOSTACK_KEYS, else "
                            "~/.config/robostack/keys); created mode 0700")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                     help="create | list | allow | revoke (robostack keys "
                                          "COMMAND --help for each)")
    make = commands.add_parser("create", parents=[where], help="make this machine's key pair",
                               description="Write NAME.key (public) and NAME.key_secret (0600); "
                                           "never overwrites.")
    make.add_argument("name", help="the key pair's name, e.g. this machine's host name")
    commands.add_parser("list", parents=[where], help="key pairs, public keys and the allow-list",
                        description="Every key in the folder with its fingerprint, and which "
                                    "are allowed.")
    admit = commands.add_parser("allow", parents=[where],
                                help="admit a client's public key to this machine's servers",
                                description="Copy a client's public key into the allow-list.")
    admit.add_argument("public_key_file", type=Path, help="the client's NAME.key file")
    admit.add_argument("--name", default=None, help="its name in the allow-list (default: NAME "
                                                    "of the file)")
    drop = commands.add_parser("revoke", parents=[where], help="remove a key from the allow-list",
                               description="Refuse a client's next connections.")
    drop.add_argument("name", help="the allowed key's name, as `robostack keys list` shows it")
    args = parser.parse_args(argv)
    keys_dir = (args.dir or default_keys_dir()).expanduser()
    try:
        if args.command == "create":
            create(keys_dir, args.name)
        elif args.command == "list":
            list_keys(keys_dir)
        elif args.command == "allow":
            allow(keys_dir, args.public_key_file.expanduser(), args.name)
        else:
            revoke(keys_dir, args.name)
    except TransportError as exc:
        print(f"robostack keys {args.command}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
