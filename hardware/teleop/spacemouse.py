"""3Dconnexion SpaceMouse teleop over raw HID (the `hidapi` package, `import hid`).

Motion: push/tilt the cap; the arm follows in the base frame (operator behind the robot facing
base +x, see `operator_yaw`): push away = +x, push left = +y, lift = +z; rotations likewise.
Deadman: moving the cap past the deadzone is the intervention; it ends `intervene_hold` s after
the cap is back at rest (so a short pause mid-correction does not hand control back).
Buttons: left closes the gripper, right opens it (latched). The SpaceMouse has no buttons to
spare for success/failure/re-record/stop: pair it with the keyboard for those.

Why a reader thread that drains every report: the device sends a report per axis change at up
to ~60-120 Hz, while the policy reads at 10 Hz. Reading one report per policy step walks
through a queue of stale reports, so the arm keeps moving for seconds after the cap is released.
The thread reads every report as it arrives and keeps only the newest state; `read()` returns
that state without touching the device.

HID reports (little-endian int16, about +-350 full scale): id 1 translation x y z (newer
devices put rotation rx ry rz in the same report, bytes 7-12), id 2 rotation, id 3 buttons
(bit 0 left, bit 1 right). Raw axes: x right, y toward the operator, z down (push).
"""

from __future__ import annotations

import threading

import numpy as np

from hardware.teleop.base import DeviceUnavailable, TeleopReading, deadzone, now, yaw_matrix

INSTALL = "pip install 'robostack[spacemouse]'  (installs hidapi; needs libhidapi-hidraw0 / libusb)"
VENDOR_3DCONNEXION = 0x256F
VENDOR_LOGITECH = 0x046D  # older SpaceMice were sold under Logitech's vendor id
LOGITECH_SPACEMICE = {0xC603, 0xC605, 0xC606, 0xC621, 0xC623, 0xC625, 0xC626, 0xC627, 0xC628,
                      0xC629, 0xC62B, 0xC62E, 0xC62F, 0xC631, 0xC632, 0xC633, 0xC635, 0xC652}
UDEV_RULE = """\
Your user may not open the SpaceMouse's hidraw node. Allow it with a udev rule:

  sudo tee /etc/udev/rules.d/99-spacemouse.rules <<'EOF'
  KERNEL=="hidraw*", ATTRS{idVendor}=="256f", MODE="0660", GROUP="plugdev"
  KERNEL=="hidraw*", ATTRS{idVendor}=="046d", ATTRS{idProduct}=="c6[0-5]?", MODE="0660", GROUP="plugdev"
  EOF
  sudo usermod -aG plugdev $USER          # then log out and in again
  sudo udevadm control --reload-rules && sudo udevadm trigger   # then replug the SpaceMouse"""

FULL_SCALE = 350.0
# Raw device axes (x right, y toward the operator, z down) -> operator frame (x forward,
# y left, z up): forward = -raw y, left = -raw x, up = -raw z. A proper rotation (det +1), so
# the same matrix maps the rotation axes.
RAW_TO_OPERATOR = np.array([[0.0, -1.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 0.0, -1.0]])


CONTROLS = [  # (role, control, what it does): what a live view shows
    ("deadman", "move the cap", "start / deadman: the arm follows while the cap is off centre"),
    ("translation", "push / pull the cap", "away: +x, left: +y, lift: +z"),
    ("rotation", "tilt / twist the cap", "roll, pitch, yaw about the same axes"),
    ("gripper", "left/right button", "close / open the gripper (stays)"),
    ("stop", "Ctrl-C", "quit; episodes end at the task's success or the time limit"),
]


def is_spacemouse(info: dict) -> bool:
    vendor, product = info.get("vendor_id"), info.get("product_id")
    return vendor == VENDOR_3DCONNEXION or (vendor == VENDOR_LOGITECH and product in LOGITECH_SPACEMICE)


def _int16(data, start: int) -> list[float]:
    values = []
    for i in range(3):
        low, high = data[start + 2 * i], data[start + 2 * i + 1]
        value = low | (high << 8)
        values.append(float(value - 65536 if value >= 32768 else value))
    return values


class SpaceMouseMapping:
    """HID reports -> device state -> TeleopReading. Pure: no device, no thread."""

    def __init__(self, deadzone: float = 0.1, full_scale: float = FULL_SCALE, speed: float = 1.0,
                 rotation_speed: float = 1.0, operator_yaw: float = 0.0, intervene_hold: float = 0.3):
        self.deadzone, self.full_scale = deadzone, full_scale
        self.speed, self.rotation_speed = speed, rotation_speed
        self.to_base = yaw_matrix(operator_yaw) @ RAW_TO_OPERATOR
        self.intervene_hold = intervene_hold
        self.raw_translation = np.zeros(3)
        self.raw_rotation = np.zeros(3)
        self.buttons = 0
        self.gripper = 0.0
        self.last_report = 0.0
        self.last_active = -np.inf

    def new_episode(self) -> None:
        """The env reset the arm (gripper open): forget the latched gripper command."""
        self.gripper = 0.0

    def update(self, report, t: float) -> None:
        """Fold one report (list of ints, report id first) into the state: the newest wins."""
        if not report:
            return
        kind = report[0]
        if kind == 1 and len(report) >= 7:
            self.raw_translation = np.array(_int16(report, 1))
            if len(report) >= 13:
                self.raw_rotation = np.array(_int16(report, 7))
        elif kind == 2 and len(report) >= 7:
            self.raw_rotation = np.array(_int16(report, 1))
        elif kind == 3 and len(report) >= 2:
            self.buttons = report[1]
            if self.buttons & 1:
                self.gripper = 1.0
            elif self.buttons & 2:
                self.gripper = -1.0
        else:
            return
        self.last_report = t
        if self.buttons or np.abs(self._scaled()).max() > 0:
            self.last_active = t

    def _scaled(self) -> np.ndarray:
        raw = np.concatenate([self.raw_translation, self.raw_rotation]) / self.full_scale
        return deadzone(raw, self.deadzone)

    def reading(self, t: float) -> TeleopReading:
        scaled = self._scaled()
        return TeleopReading(
            translation=self.to_base @ scaled[:3] * self.speed,
            rotation=self.to_base @ scaled[3:] * self.rotation_speed,
            gripper=self.gripper, intervene=t - self.last_active <= self.intervene_hold,
            timestamp=self.last_report)


def _import_hid():
    try:
        import hid
    except ImportError:
        raise DeviceUnavailable(f"the spacemouse device needs hidapi: {INSTALL}") from None
    if not hasattr(hid, "device"):
        raise DeviceUnavailable(
            "`import hid` found a different package (the `hid` ctypes binding), not `hidapi`: "
            f"pip uninstall hid && {INSTALL}")
    return hid


class SpaceMouseDevice:
    """The first SpaceMouse found, read by a background thread. `hid` may be a stand-in module
    with hidapi's calls (`enumerate()`, `device()` -> open_path/read/close), for tests."""

    name = "spacemouse"
    start_hint = "move the cap"  # how a person starts an episode (the deadman)

    def __init__(self, hid=None, clock=now, poll_ms: int = 10, **mapping_options):
        hid = hid or _import_hid()
        self.clock = clock
        found = [info for info in hid.enumerate() if is_spacemouse(info)]
        if not found:
            raise DeviceUnavailable(
                "no SpaceMouse found among the HID devices: plug it in (wireless: the receiver), "
                "check `lsusb | grep -i -e 3dconnexion -e 046d:c6`. " + UDEV_RULE.splitlines()[0])
        # One physical device can list several interfaces; the multi-axis one is usage page 1,
        # usage 8 where the platform reports it.
        found.sort(key=lambda info: (info.get("usage_page"), info.get("usage")) != (1, 8))
        self.info = found[0]
        self.device = hid.device()
        try:
            self.device.open_path(self.info["path"])
        except (OSError, IOError) as exc:
            raise DeviceUnavailable(f"cannot open the SpaceMouse at {self.info['path']!r} ({exc}). "
                                    + UDEV_RULE) from None
        self.mapping = SpaceMouseMapping(**mapping_options)
        self.poll_ms = poll_ms
        self.error: Exception | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.reports = 0
        self._thread = threading.Thread(target=self._drain, name="spacemouse-reader", daemon=True)
        self._thread.start()

    def _drain(self) -> None:
        while not self._stop.is_set():
            try:
                # Blocks at most poll_ms, so close() is honoured quickly; returns [] on timeout.
                report = self.device.read(64, self.poll_ms)
            except (OSError, IOError, ValueError) as exc:
                self.error = exc
                return
            if report:
                with self._lock:
                    self.mapping.update(report, self.clock())
                    self.reports += 1

    def read(self) -> TeleopReading:
        if self.error is not None:
            raise DeviceUnavailable(f"the SpaceMouse stopped answering ({self.error}): reconnect it "
                                    "and restart; the arm will not act on stale input")
        with self._lock:
            return self.mapping.reading(self.clock())

    def new_episode(self) -> None:
        with self._lock:
            self.mapping.new_episode()

    def controls(self) -> list[tuple[str, str, str]]:
        return list(CONTROLS)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=1.0)
        self.device.close()
