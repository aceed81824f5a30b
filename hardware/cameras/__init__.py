"""Cameras behind one interface (hardware/cameras/base.py): OpenCV/UVC webcams and video files
(opencv_camera.py), Intel RealSense (realsense_camera.py). The shared capture-thread logic (the
newest frame, its waiters, the two-period health rule) is capture.py.

Vendor SDKs are imported only when a camera starts, so `import hardware.cameras` works without
pyrealsense2 (or even cv2).
"""

from hardware.cameras.base import Camera, CameraError, CameraTimeout, Frame, Intrinsics, StaleFrame

__all__ = ["Camera", "CameraError", "CameraTimeout", "Frame", "Intrinsics", "StaleFrame"]
