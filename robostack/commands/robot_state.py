"""What `robostack robot state` reads and prints: a robot server looked at without taking control.

`ServerReader` never holds the lease and never heartbeats (docs/leases.md, "How a dashboard
should poll"): `hello` once; the state from the **state stream** in real time (a `state` request
would take the clamp and hold flags from the stream's readers, a training actor among them) and
from a `state` request in lock-step (nothing is published there); `stats` (loop statistics, the
lease holder, the gains in force) at most once a second. Every wait has a timeout.

`snapshot()` turns that into one plain dict (what `--json` prints); `format_block()` is the
readable block. Units: m, quaternion (w, x, y, z), degrees where the block says so, N, Nm, mm for
the gripper; every Cartesian quantity in the robot's `base` frame (README, Conventions).
"""

from __future__ import annotations

import math
import time

import numpy as np

from controllers.gain_limits import GAIN_SHAPES
from controllers.rotations import quat_to_rpy
from controllers.supervisor import ENERGIZED
from robostack import transport
from robostack.robot.client import PEER

# What `base` is on each backend (README, Conventions): named in the block, so that a person
# reading numbers off a real arm knows which frame they are in.
PANDA_BASE = "base = panda_link0 (z up, x toward the workspace)"
BASE_FRAMES = {"mujoco": PANDA_BASE + "; the table top is z = 0", "pybullet": PANDA_BASE + "; the table top is z = 0",
               "franka": PANDA_BASE + ", libfranka's O frame"}
BASE_FRAME = "base = the arm's base frame (its controller's)"
GUARD_MARGIN = 0.05  # rad: the joint-limit guard's margin (controllers/safety.py), marked in the block


def stream_endpoint(state_endpoint: str, server: str) -> str:
    """The state stream's address as seen from here: a server bound to every interface (tcp://*
    or 0.0.0.0) is reached at the host of its command endpoint."""
    scheme, _, rest = state_endpoint.partition("://")
    host, _, port = rest.rpartition(":")
    if scheme == "tcp" and host in ("*", "0.0.0.0", "[::]", "::"):
        server_host = server.partition("://")[2].rpartition(":")[0]
        return f"tcp://{server_host}:{port}"
    return state_endpoint


class ServerReader:
    """Reads one robot server (see the module docstring). `hello` is asked at construction:
    PeerTimeout there means nothing answers at `server`."""

    def __init__(self, server: str, timeout: float, state_endpoint: str = "", curve=None):
        self.server, self.timeout = server, timeout
        self.requests = transport.RequestClient(server, source="robostack-robot", timeout=timeout,
                                                peer=PEER, curve=curve)
        self.hello = self.requests.request("hello").meta
        self.realtime = self.hello.get("clock") == "realtime"
        self.stream = None
        if self.realtime:
            endpoint = state_endpoint or stream_endpoint(self.hello.get("state_endpoint", ""), server)
            self.stream = transport.Subscriber(endpoint, "state", curve=curve)
        self.flags: dict[str, list] = {}  # name -> [messages it was in, latest reason]
        self._stats, self._stats_at = None, -math.inf

    def close(self) -> None:
        self.requests.close()
        if self.stream is not None:
            self.stream.close()

    def stats(self, fresh: bool = False) -> dict:
        if fresh or time.monotonic() - self._stats_at >= 1.0:  # the server asks for <= 1 Hz
            self._stats, self._stats_at = self.requests.request("stats").meta, time.monotonic()
        return self._stats

    def state(self, window: float) -> transport.Message:
        """The newest state; in real time every message of the next `window` s is read for its
        flags (most of them: a message that queued behind another is dropped unread)."""
        if self.stream is None:
            message = self.requests.request("state")
            self._count_flags(message)
            return message
        try:
            message = self.stream.latest(self.timeout)
        except transport.PeerTimeout as silent:
            raise transport.PeerTimeout(
                f"{self.server} answers requests but its state stream {self.stream.endpoint} sent "
                f"nothing within {self.timeout:g} s ({silent}); pass the server's "
                "--state-endpoint as --state-endpoint") from None
        self._count_flags(message)
        deadline = time.monotonic() + window
        while (left := deadline - time.monotonic()) > 0:
            try:
                message = self.stream.latest(left)
            except transport.PeerTimeout:
                break
            self._count_flags(message)
        return message

    def _count_flags(self, message) -> None:
        for name, reason in message.meta.get("flags", []):
            seen = self.flags.setdefault(str(name), [0, ""])
            seen[0] += 1
            seen[1] = str(reason)

    def snapshot(self, window: float = 0.3, fresh_stats: bool = False) -> dict:
        message = self.state(window)
        snap = snapshot(self.hello, message.meta, message.arrays, self.stats(fresh_stats),
                        self.flags, age=time.monotonic() - message.stamp)
        since = snap["supervisor"]["since_s"]
        if self.realtime and isinstance(since, (int, float)):  # both the server's monotonic clock
            snap["supervisor"]["for_s"] = round(message.stamp - since, 3)
        snap["server"] = self.server
        self.flags = {}
        return snap


def _floats(values, scale=1.0, digits=4) -> list:
    return [round(float(v) * scale, digits) + 0.0 for v in np.asarray(values, dtype=float).ravel()]  # no -0.0


def snapshot(hello: dict, meta: dict, arrays: dict, stats: dict, flags: dict, age: float) -> dict:
    """One reading as plain types: what --json prints and format_block() shows."""
    q = np.asarray(arrays["q"], dtype=float)
    lower = np.asarray(hello.get("joint_lower", [-math.inf] * len(q)), dtype=float)
    upper = np.asarray(hello.get("joint_upper", [math.inf] * len(q)), dtype=float)
    quat = np.asarray(arrays["tcp_quaternion"], dtype=float)
    wrench = np.asarray(arrays["external_wrench"], dtype=float)
    sup = meta.get("supervisor", {})
    lease = stats.get("lease", {})
    mode = meta.get("mode", "?")
    return {
        "task": hello.get("task"), "backend": hello.get("backend"), "clock": hello.get("clock"),
        "control_hz": round(1.0 / hello["control_period"], 3) if hello.get("control_period") else None,
        "mode": mode, "control": meta.get("control"), "energized": mode in ENERGIZED,
        "stiffness_scale": meta.get("stiffness_scale"),
        "supervisor": {"state": sup.get("state", mode), "reason": sup.get("reason", ""),
                       "since_s": sup.get("since"), "latched": sup.get("latched", False),
                       "faults": list(sup.get("faults", [])),
                       "transitions": [{"seq": t[0], "time_s": t[1], "from": t[2], "to": t[3],
                                        "reason": t[4]} for t in sup.get("transitions", [])]},
        "lease": {"held": bool(lease.get("held")), "holder": lease.get("holder", ""),
                  "seconds_left": lease.get("seconds_left"), "timeout_s": lease.get("timeout")},
        "time_s": meta.get("time"), "age_s": round(age, 4), "command_seq": meta.get("command_seq"),
        "tcp": {"frame": "base",
                "position_m": _floats(arrays["tcp_position"]),
                "quaternion_wxyz": _floats(quat),
                "rpy_deg": _floats(quat_to_rpy(quat), 180.0 / math.pi, 2),
                "velocity_m_s": _floats(np.asarray(arrays["tcp_velocity"])[:3]),
                "reference_position_m": _floats(arrays["reference_position"])},
        "joints": {"q_deg": _floats(q, 180.0 / math.pi, 2),
                   "dq_deg_s": _floats(arrays["dq"], 180.0 / math.pi, 2),
                   "to_limit_deg": _floats(np.minimum(q - lower, upper - q), 180.0 / math.pi, 2)},
        "external_wrench": {"frame": "base", "force_n": _floats(wrench[:3], digits=2),
                            "torque_nm": _floats(wrench[3:], digits=3)},
        "gripper": {"width_mm": round(float(np.asarray(arrays["gripper_width"]).ravel()[0]) * 1e3, 2),
                    "target_mm": round(float(meta.get("gripper_target", math.nan)) * 1e3, 2)},
        "loop": stats.get("loop", {}),
        "flags": {name: {"count": n, "reason": reason} for name, (n, reason) in flags.items()},
        "gains": stats.get("gains", {}), "damping_in_force": stats.get("damping_in_force", {}),
        "gain_ceilings": stats.get("gain_ceilings", {}),
        "law": stats.get("law", "cartesian_impedance"),
    }


def _row(values, fmt="{:8.3f}") -> str:
    return " ".join(fmt.format(v) for v in values)


def _ms(loop: dict, key: str) -> str:
    value = loop.get(key)
    return "n/a" if value is None else f"{value:.3f}"


def format_block(s: dict) -> str:
    """The readable block of one snapshot."""
    sup, lease, tcp, joints = s["supervisor"], s["lease"], s["tcp"], s["joints"]
    lines = [f"robot server {s.get('server', '')}  task {s['task']}, backend {s['backend']}, "
             f"clock {s['clock']}, control {s['control_hz']:g} Hz  (state {s['age_s'] * 1e3:.0f} ms old)"]
    scale = s["stiffness_scale"]
    lines.append(f"mode          {s['mode']}  (law {s['control']}"
                 + (f", stiffness {scale * 100:.0f} %" if s["control"] in ("hold", "track") and scale is not None else "")
                 + f"; {'energized' if s['energized'] else 'not energized'})")
    since = f" for {sup['for_s']:.1f} s" if "for_s" in sup else \
        (f" since t={sup['since_s']:.3f} s" if isinstance(sup["since_s"], (int, float)) else "")
    lines.append(f"supervisor    {sup['state']}{since}: {sup['reason']}")
    lines.append(f"              faults {', '.join(sup['faults']) or 'none'}; latched {'yes' if sup['latched'] else 'no'}")
    for t in sup["transitions"][-3:]:
        lines.append(f"              #{t['seq']} t={t['time_s']:.3f} s  {t['from']} -> {t['to']}: {t['reason']}")
    if lease["held"]:
        lines.append(f"lease         held by {lease['holder']!r} ({lease['seconds_left']:.2f} s left of "
                     f"{lease['timeout_s']:g} s unless it renews it)")
    else:
        lines.append(f"lease         free (timeout {lease['timeout_s']:g} s): any client may acquire it")
    lines.append(f"tcp           frame {BASE_FRAMES.get(s['backend'], BASE_FRAME)}")
    lines.append(f"  position    {_row(tcp['position_m'], '{:8.4f}')} m   (reference {_row(tcp['reference_position_m'], '{:.4f}')})")
    lines.append(f"  quaternion  {_row(tcp['quaternion_wxyz'], '{:8.4f}')}   (w, x, y, z)")
    lines.append(f"  rpy         {_row(tcp['rpy_deg'], '{:8.2f}')} deg (R = Rz(yaw) Ry(pitch) Rx(roll))")
    speed = float(np.linalg.norm(tcp["velocity_m_s"]))
    lines.append(f"  speed       {speed * 1e3:8.1f} mm/s")
    lines.append(f"joints q      {_row(joints['q_deg'], '{:7.1f}')} deg")
    to_limit = joints["to_limit_deg"]
    near = [i + 1 for i, d in enumerate(to_limit) if d < math.degrees(GUARD_MARGIN)]
    lines.append(f"  to limit    {_row(to_limit, '{:7.1f}')} deg   (closest: joint {int(np.argmin(to_limit)) + 1}, "
                 f"{min(to_limit):.1f} deg" + (f"; joints {near} inside the guard's "
                                               f"{math.degrees(GUARD_MARGIN):.1f} deg margin" if near else "") + ")")
    w = s["external_wrench"]
    lines.append(f"wrench        force {_row(w['force_n'], '{:7.2f}')} N (|F| {float(np.linalg.norm(w['force_n'])):.2f} N);"
                 f" torque {_row(w['torque_nm'], '{:6.3f}')} Nm  (external, at the tcp, base frame)")
    g = s["gripper"]
    lines.append(f"gripper       width {g['width_mm']:.1f} mm (target {g['target_mm']:.1f} mm)")
    loop = s["loop"]
    if loop.get("ticks"):
        lines.append(f"loop          {loop.get('rate_hz', 0):.1f} Hz, {loop['ticks']} ticks, missed {loop.get('missed_ticks', 0)}"
                     f" (worst stall {_ms(loop, 'stall_max_ms')} ms)")
        lines.append(f"  overrun     p50 {_ms(loop, 'overrun_p50_ms')}  p99 {_ms(loop, 'overrun_p99_ms')}  "
                     f"max {_ms(loop, 'overrun_max_ms')} ms   (last {loop.get('window_ticks', 0)} ticks)")
        lines.append(f"  cpu         p50 {_ms(loop, 'cpu_p50_ms')}  p99 {_ms(loop, 'cpu_p99_ms')}  max {_ms(loop, 'cpu_max_ms')} ms"
                     f" per tick; worst request {_ms(loop, 'request_cpu_max_ms')} ms cpu "
                     f"({loop.get('request_cpu_max_kind') or '-'})")
    else:
        lines.append("loop          no real-time loop statistics (lock-step: physics runs inside requests)")
    gains = s["gains"]
    if gains and s["law"] == "admittance":
        lines.append(f"gains         admittance: force bound {gains.get('force_bound')} N, stiffness "
                     f"{gains.get('stiffness')} N/m, max speed {gains.get('max_velocity')} m/s"
                     f" (robostack robot gains: all of them)")
    elif gains:
        def first(name):
            value = gains.get(name)
            return value if not isinstance(value, list) else (value[0] if len(set(value)) == 1 else value)
        lines.append(f"gains         stiffness {first('translational_stiffness')} N/m, {first('rotational_stiffness')} Nm/rad;"
                     f" clip {first('translational_clip')} m, {first('rotational_clip')} rad"
                     f" (robostack robot gains: all of them)")
    if s["flags"]:
        lines.append("clamps/holds  (name: messages, latest reason)")
        for name, f in s["flags"].items():
            lines.append(f"  {name}: {f['count']}, {f['reason']}")
    else:
        lines.append("clamps/holds  none reported" + (" in the window read" if s["clock"] == "realtime" else ""))
    return "\n".join(lines)


def format_gains(stats: dict) -> str:
    """Every gain as set, in force (derived dampings) and its ceiling, with units."""
    gains, force, top = stats.get("gains", {}), stats.get("damping_in_force", {}), stats.get("gain_ceilings", {})
    if stats.get("law") == "admittance":  # fixed at start (--admittance-gains): no ceilings
        lines = ["admittance law (position-controlled arm), set with robot-server --admittance-gains",
                 f"{'gain':<30} value"]
        lines += [f"{name:<30} {_short(value)}" for name, value in gains.items()]
        return "\n".join(lines)
    if stats.get("law") == "the arm's own Cartesian impedance":  # franky's tracker: fixed at start
        lines = ["the arm's own Cartesian impedance law (robot-server --franka-law tracker), fixed at start",
                 f"{'gain':<30} value"]
        lines += [f"{name:<30} {_short(value)}" for name, value in gains.items()]
        return "\n".join(lines)
    lines = [f"{'gain':<30} {'set':<34} {'ceiling':<12} unit"]
    for name, (_, unit) in GAIN_SHAPES.items():
        value = gains.get(name)
        shown = f"auto {_short(force.get(name))}" if value is None else _short(value)
        lines.append(f"{name:<30} {shown:<34} {_short(top.get(name)):<12} {unit}")
    for name in ("max_clip_force", "max_clip_torque"):
        if name in top:
            lines.append(f"{'(stiffness x clip) ' + name:<30} {'':<34} {_short(top[name]):<12} "
                         f"{'N' if 'force' in name else 'Nm'}")
    return "\n".join(lines)


def _short(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, list):
        if len(set(value)) == 1:
            return f"{value[0]:g}"
        return "[" + ", ".join(f"{v:.4g}" for v in value) + "]"
    return f"{value:g}"
