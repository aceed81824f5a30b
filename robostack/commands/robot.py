"""`robostack robot ACTION --server ADDR`: look at and operate a running robot server, for a
new arm's bring-up and for debugging (docs/hardware/bring-up.md).

    state        the block: mode, supervisor state and reason, lease holder, tcp pose, joints
                 and their distance to the limits, external wrench, gripper, loop statistics,
                 gains, clamps and holds (--watch refreshes, --json for scripts). Never takes
                 the lease.
    arm          take the lease, arm (optionally set gains first: KEY=VALUE...), and keep the arm
                 energized while this runs, showing state (--hold s; until Ctrl-C by default).
                 On exit the lease is released: a damped stop, then disarmed.
    disarm       take the lease (refused while another client holds it) and disarm.
    home         take the lease and reset: a real arm is driven home by the joint impedance law,
                 the mirror teleports (--drive: driven there too); then released unless --hold.
    gains        KEY=VALUE... to set them (with the lease); none: print every gain and ceiling.
    stop         a damped stop whoever holds the lease: `disarm` on the server's local admin
                 socket (docs/leases.md: an operator's stop belongs there); --break-lease also
                 ends the holder's lease. Without an admin socket here (a server on another
                 host) only a free lease lets it stop the arm: stop it on that host.
    fault-reset  take the lease and clear a fault (latched or not) through the backend; ends
                 disarmed, never moves the arm. Exit code 1 if the backend still reports it.

The lease rules are the server's (robostack/robot/lease.py): a client taking the lease finds the
arm disarmed, and releasing it stops the arm, so a one-shot command cannot leave an arm energized
behind it: only a command that keeps running (arm, home --hold) keeps it energized. Every request
has a timeout; an unreachable server is an error naming the address within --timeout seconds.
Exit codes: 0 done, 1 failed or refused, 2 bad usage.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import sys
import time
from dataclasses import dataclass

from controllers.gain_limits import GAIN_SHAPES
from controllers.supervisor import ENERGIZED
from robostack import transport
from robostack.commands.robot_state import ServerReader, format_block, format_gains
from robostack.config import add_dataclass_arguments, dataclass_from_args, usage_errors
from robostack.robot import lease
from robostack.robot.client import PEER, ZmqConnection

ACTIONS = ("state", "arm", "disarm", "home", "gains", "stop", "fault-reset")


class Failed(Exception):
    """The action did not do what was asked: the message says what happened (exit code 1)."""


@dataclass
class RobotToolConfig:
    """How to reach the robot server and how long to wait."""

    server: str = "tcp://127.0.0.1:5555"  # the robot server's command endpoint: its --command-endpoint
    state_endpoint: str = ""  # real time: its state stream (its --state-endpoint); empty: the one its hello names
    admin_endpoint: str = ""  # its local admin socket, for stop (its --admin-endpoint); empty: derived
        # from --server as the server derives it
    timeout: float = 2.0  # s to wait for each reply; nothing within it is an error naming the address
    home_timeout: float = 30.0  # s, home: to wait for the reset's reply (a real arm's homing takes up
        # to the server's --home-timeout, 10 s by default)
    lease_wait: float = 1.0  # s to keep asking for the lease while another client holds it
    rate: float = 2.0  # Hz: how often state --watch, arm and home --hold read the state
    count: int = 0  # state --watch: stop after this many readings (0: until Ctrl-C)
    window: float = 0.3  # s, real time: how long each reading follows the state stream for clamps and holds
    hold: float = -1.0  # s, arm / home: keep the lease (arm energized) this long, showing state, then
        # release it: a damped stop. -1: until Ctrl-C for arm, 0 for home
    recovery_wait: float = 5.0  # s, fault-reset: how long to wait for the recovery to end
    curve_key: str = ""  # this client's CURVE key pair (`robostack keys`), for a server started with --curve-key
    server_key: str = ""  # that server's CURVE public key (NAME or path), with --curve-key

    def __post_init__(self):
        for name in ("timeout", "home_timeout", "rate", "recovery_wait"):
            if not (math.isfinite(getattr(self, name)) and getattr(self, name) > 0):
                raise ValueError(f"--{name.replace('_', '-')}: must be a number > 0, got {getattr(self, name)}")
        if self.lease_wait < 0 or self.window < 0 or self.count < 0:
            raise ValueError("--lease-wait, --window and --count must be >= 0")
        if not (self.hold == -1.0 or self.hold >= 0):
            raise ValueError(f"--hold: seconds >= 0, or -1 for the action's default; got {self.hold}")


def parse_gain_settings(settings: list[str]) -> dict:
    """KEY=VALUE words -> a gains request: a number, a per-axis list (a,b,c) or auto (a damping
    derived as 2 sqrt(K)). ValueError (a usage error) naming the word and the valid keys."""
    gains = {}
    for word in settings:
        key, eq, text = word.partition("=")
        if not eq or not key:
            raise ValueError(f"gains: {word!r} is not KEY=VALUE (e.g. translational_stiffness=500)")
        if key not in GAIN_SHAPES:
            raise ValueError(f"gains: unknown gain {key!r}; valid: " +
                             ", ".join(f"{n} ({u})" for n, (_, u) in GAIN_SHAPES.items()))
        try:
            if text.lower() in ("auto", "none"):
                gains[key] = None
            elif "," in text or ":" in text:
                gains[key] = [float(v) for v in text.replace(":", ",").split(",")]
            else:
                gains[key] = float(text)
        except ValueError:
            raise ValueError(f"gains: {key}={text!r}: give a number, comma-separated numbers "
                             f"(one per axis / joint) or auto") from None
    return gains


class Tool:
    """One invocation: the config, the output mode, and connections opened as needed."""

    def __init__(self, config: RobotToolConfig, json_out: bool, watch: bool):
        self.config, self.json, self.watch = config, json_out, watch
        self.curve = transport.CurveKeys.from_options(config.curve_key, config.server_key)
        self._reader: ServerReader | None = None

    @property
    def reader(self) -> ServerReader:
        if self._reader is None:
            self._reader = ServerReader(self.config.server, self.config.timeout,
                                        self.config.state_endpoint, self.curve)
        return self._reader

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()

    def emit(self, text: str, record: dict) -> None:
        print(json.dumps(record) if self.json else text, flush=True)

    def connection(self, action: str, heartbeat: bool) -> ZmqConnection:
        """A lease-holding connection (the lease is acquired by its first request that needs it)."""
        _ = self.reader  # the server answers at all: otherwise the clear error first
        return ZmqConnection(self.config.server, timeout=self.config.timeout,
                             holder=f"robostack robot {action} ({os.uname().nodename} pid {os.getpid()})",
                             lease_wait=self.config.lease_wait, heartbeat=heartbeat, curve=self.curve)

    def settled(self, modes=("stopping", "recovering"), wait: float = 2.0) -> dict:
        """A snapshot after an action, once the arm is out of `modes` (real time: at most `wait`
        s). The mode is asked with `stats` (answered after the action); the stream may still
        hold messages from before it, so it is read until one shows that mode (~10 ms)."""
        deadline = time.monotonic() + wait
        while True:
            mode = self.reader.stats(fresh=True)["mode"]
            if mode not in modes or not self.reader.realtime or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        for _ in range(50):
            snap = self.reader.snapshot(window=0.0)
            if snap["mode"] == mode or not self.reader.realtime:
                break
        return snap

    def result(self, action: str, outcome: str, snap: dict, ok: bool = True) -> int:
        sup = snap["supervisor"]
        if snap["mode"] == "stopping" and not self.reader.realtime:
            outcome += " (lock-step: the damped stop completes with the next physics step)"
        self.emit(f"{outcome}\nmode {snap['mode']}: {sup['reason']}",
                  {"action": action, "ok": ok, "outcome": outcome, "mode": snap["mode"],
                   "reason": sup["reason"], "faults": sup["faults"], "lease": snap["lease"]})
        return 0 if ok else 1

    # --- actions --------------------------------------------------------------------------
    def state(self, settings) -> int:
        readings = 0
        while True:
            start = time.monotonic()
            snap = self.reader.snapshot(self.config.window)
            readings += 1
            if self.watch and not self.json and sys.stdout.isatty():
                print("\033[H\033[J", end="")  # clear the terminal: a refreshing view
            self.emit(format_block(snap) + ("\n" if self.watch else ""), snap)
            if not self.watch or (self.config.count and readings >= self.config.count):
                return 0
            time.sleep(max(0.0, 1.0 / self.config.rate - (time.monotonic() - start)))

    def gains(self, settings) -> int:
        if not settings:
            stats = self.reader.stats(fresh=True)
            self.emit(format_gains(stats), {"action": "gains", "ok": True, "gains": stats.get("gains"),
                                            "damping_in_force": stats.get("damping_in_force"),
                                            "gain_ceilings": stats.get("gain_ceilings")})
            return 0
        requested = parse_gain_settings(settings)
        with self.connection("gains", heartbeat=False) as conn:
            conn.request("gains", requested)
        stats = self.reader.stats(fresh=True)
        self.emit("gains set: " + ", ".join(f"{k}={stats['gains'].get(k)}" for k in requested),
                  {"action": "gains", "ok": True, "set": requested, "gains": stats.get("gains")})
        return 0

    def arm(self, settings) -> int:
        requested = parse_gain_settings(settings)
        with self.connection("arm", heartbeat=True) as conn:
            if requested:
                conn.request("gains", requested)
            reply = conn.request("arm")
            self.emit(f"armed: {reply.meta['supervisor']['reason']}",
                      {"action": "arm", "ok": True, "mode": reply.meta["mode"]})
            failure = self.hold("arm", conn, math.inf if self.config.hold == -1.0 else self.config.hold)
        return self.after_release("arm", failure)

    def home(self, settings, drive: bool) -> int:
        with self.connection("home", heartbeat=True) as conn:
            reply = conn.request("reset", {"drive": True} if drive else {}, timeout=self.config.home_timeout)
            driven = drive or not self.reader.hello.get("capabilities", {}).get("simulated_reset")
            own_move = self.reader.hello.get("control_mode") == "cartesian_position"
            how = ("teleported home (mirror)" if not driven else
                   "driven home by the arm's own joint move" if own_move else "driven home by the joint impedance law")
            self.emit(f"at home ({how}): {reply.meta['supervisor']['reason']}",
                      {"action": "home", "ok": True, "mode": reply.meta["mode"], "how": how})
            failure = self.hold("home", conn, 0.0 if self.config.hold == -1.0 else self.config.hold)
        return self.after_release("home", failure)

    def hold(self, action: str, conn: ZmqConnection, seconds: float) -> str | None:
        """Keep the lease (the connection's heartbeat thread) for `seconds`, showing the state;
        what went wrong if the arm stopped being energized meanwhile (a stop, a fault, the lease
        lost), else None."""
        end = time.monotonic() + seconds
        try:
            return self._hold(action, conn, end)
        except KeyboardInterrupt:  # Ctrl-C ends the hold; the caller releases the lease
            return None

    def _hold(self, action: str, conn: ZmqConnection, end: float) -> str | None:
        while time.monotonic() < end:
            start = time.monotonic()
            snap = self.reader.snapshot(self.config.window)
            if self.json:
                self.emit("", snap)
            elif self.watch:
                print(format_block(snap) + "\n", flush=True)
            else:
                tcp, w = snap["tcp"], snap["external_wrench"]
                print(f"{snap['mode']:<9} tcp {tcp['position_m']} m  |F| "
                      f"{sum(f * f for f in w['force_n']) ** 0.5:.2f} N  lease "
                      f"{'ours' if conn.lease else 'LOST'}  ({snap['supervisor']['reason']})", flush=True)
            if snap["mode"] not in ENERGIZED or conn.lease is None:
                why = "the lease was lost (broken on the admin socket, or expired)" if conn.lease is None \
                    else f"the arm is {snap['mode']}: {snap['supervisor']['reason']}"
                return f"no longer holding: {why}"
            time.sleep(max(0.0, min(end - time.monotonic(), 1.0 / self.config.rate - (time.monotonic() - start))))
        return None

    def after_release(self, action: str, failure: str | None) -> int:
        """The state once the lease is released; Failed(failure) if the hold ended by itself."""
        snap = self.settled()
        self.result(action, "lease released: damped stop, then disarmed (the lease rules: nobody "
                            "holds an energized arm)", snap)
        if failure:
            raise Failed(failure)
        return 0

    def disarm(self, settings) -> int:
        try:
            with self.connection("disarm", heartbeat=False) as conn:
                conn.request("disarm")
        except transport.RemoteError as refused:
            if lease.HELD_BY in refused.text:
                raise Failed(f"disarm: {refused.text}. To stop the arm whoever holds the lease: "
                             f"robostack robot stop --server {self.config.server}") from None
            raise
        snap = self.settled()
        return self.result("disarm", f"disarm sent: the arm is {snap['mode']}", snap)

    def stop(self, settings, break_lease: bool) -> int:
        endpoint = self.config.admin_endpoint or lease.admin_endpoint_for(self.config.server)
        if not os.path.exists(endpoint[len("ipc://"):]) and not self.config.admin_endpoint:
            try:  # a server started with its own --admin-endpoint names it in its hello
                endpoint = self.reader.hello.get("admin_endpoint") or endpoint
            except transport.TransportError:
                pass
        if not os.path.exists(endpoint[len("ipc://"):]):
            return self.stop_without_admin(endpoint)
        with transport.RequestClient(endpoint, source="robostack-robot-stop", timeout=self.config.timeout,
                                     peer=PEER) as admin:
            broken = admin.request("break_lease").meta.get("broken") if break_lease else None
            admin.request("disarm")
            deadline = time.monotonic() + 2.0
            while True:  # stats: cheap, and it takes no flags from the stream's readers
                stats = admin.request("stats").meta
                if stats["mode"] != "stopping" or time.monotonic() > deadline:
                    break
                time.sleep(0.05)
            meta = admin.request("state").meta
        held = stats.get("lease", {})
        who = (f"lease of {broken!r} broken" if broken else "no lease broken") if break_lease else \
            (f"lease still held by {held.get('holder')!r}: it must send 'arm' or 'reset' to move again"
             if held.get("held") else "lease free")
        outcome = f"stopped on the admin socket {endpoint}: {meta['mode']}; {who}"
        if meta["mode"] == "stopping" and meta.get("control") == "damped":
            outcome += " (lock-step: the damped stop completes with the next physics step)"
        self.emit(f"{outcome}\nmode {meta['mode']}: {meta['supervisor']['reason']}",
                  {"action": "stop", "ok": True, "outcome": outcome, "mode": meta["mode"],
                   "reason": meta["supervisor"]["reason"], "broken": broken, "admin_endpoint": endpoint})
        return 0

    def stop_without_admin(self, endpoint: str) -> int:
        """No admin socket on this host: the command socket, which needs a free lease."""
        try:
            with self.connection("stop", heartbeat=False) as conn:
                conn.request("disarm")
        except transport.RemoteError as refused:
            raise Failed(f"stop: no admin socket here ({endpoint}: the server runs on another host "
                         f"or with another --admin-endpoint), and the command socket refused: "
                         f"{refused.text}. Stop it on the server's host: robostack robot stop "
                         f"--server {self.config.server} (or its --admin-endpoint)") from None
        return self.result("stop", "stopped through the command socket (the lease was free)", self.settled())

    def fault_reset(self, settings) -> int:
        with self.connection("fault-reset", heartbeat=True) as conn:
            reply = conn.request("fault_reset")
            if reply.meta.get("fault_reset") == "no fault":
                return self.result("fault-reset", f"no fault to reset: the arm is {reply.meta['mode']}",
                                   self.reader.snapshot(0.0))
            snap = self.settled(("recovering",), self.config.recovery_wait)
        if snap["mode"] == "disarmed" and not snap["supervisor"]["faults"]:
            return self.result("fault-reset", "fault cleared: disarmed (send arm or reset to move)", snap)
        return self.result("fault-reset", f"fault reset failed: the arm is {snap['mode']}", snap, ok=False)


def unreachable(config: RobotToolConfig, error: Exception) -> str:
    return (f"robostack robot: no robot server answered at {config.server} within {config.timeout:g} s "
            f"({error}).\nIs `robostack robot-server` running, and is --server its --command-endpoint "
            f"(default tcp://127.0.0.1:5555; the server logs its endpoints when it starts)? Over the "
            f"network it needs CURVE keys (--curve-key, --server-key; docs/security.md).")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="robostack robot", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Look at and operate a running robot server (bring-up, debugging): " + ", ".join(ACTIONS),
        epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("action", choices=ACTIONS, help="what to do (see the list below)")
    parser.add_argument("settings", nargs="*", metavar="KEY=VALUE",
                        help="gains (and arm): gain=value, e.g. translational_stiffness=500 or "
                             "translational_clip=0.01,0.01,0.02; a damping may be auto (2 sqrt(K))")
    parser.add_argument("--watch", action="store_true",
                        help="state: refresh at --rate until Ctrl-C (or --count readings); arm/home: the full block")
    parser.add_argument("--json", action="store_true",
                        help="print one JSON object per reading or result (for scripts) instead of text")
    parser.add_argument("--break-lease", action="store_true",
                        help="stop: also end the holder's lease (it must acquire it again, then arm)")
    parser.add_argument("--drive", action="store_true",
                        help="home: drive the arm home with the joint impedance law even in the mirror "
                             "(a real arm's reset; the scene is not reset)")
    add_dataclass_arguments(parser, RobotToolConfig)
    args = parser.parse_args(argv)
    with usage_errors(parser):
        config = dataclass_from_args(RobotToolConfig, args)
        if args.action in ("gains", "arm"):
            parse_gain_settings(args.settings)  # a bad word is a usage error before any request
        elif args.settings:
            raise ValueError(f"{args.action} takes no KEY=VALUE words, got {args.settings}")
    tool = Tool(config, args.json, args.watch)

    def terminate(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, terminate)
    action = args.action.replace("-", "_")
    extra = {"home": (args.drive,), "stop": (args.break_lease,)}.get(action, ())
    try:
        return getattr(tool, action)(args.settings, *extra)
    except KeyboardInterrupt:
        return 0 if action in ("state", "arm", "home") else 1
    except BrokenPipeError:  # its reader went away (| head): nothing more to say to anyone
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except transport.PeerTimeout as error:
        if tool._reader is None:
            print(unreachable(config, error), file=sys.stderr)
        else:
            print(f"robostack robot {args.action}: {error}", file=sys.stderr)
        return 1
    except (Failed, transport.TransportError, ValueError) as error:
        hint = ""
        if isinstance(error, transport.RemoteError) and lease.HELD_BY in error.text:
            hint = ("\nOnly the lease holder may do this (docs/leases.md): let it finish, or end it "
                    f"with robostack robot stop --break-lease --server {config.server}")
        print(f"robostack robot {args.action}: {error}{hint}", file=sys.stderr)
        return 1
    finally:
        tool.close()


if __name__ == "__main__":
    sys.exit(main())
