"""Teleop devices behind one interface (hardware/teleop/base.py): keyboard, gamepad, SpaceMouse.

Vendor SDKs are imported only when their device is opened, so `import hardware.teleop` works
without any of them; robostack.env.teleop.make_device picks a device by name (and adds the autopilot).
"""

from hardware.teleop.base import DeviceUnavailable, TeleopDevice, TeleopReading

__all__ = ["DeviceUnavailable", "TeleopDevice", "TeleopReading"]
