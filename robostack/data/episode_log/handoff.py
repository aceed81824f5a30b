"""How a camera frame passes from the control loop to the writer thread, and back to a pool.

One job: the ownership of camera frames between `add_frame` (the caller's thread) and the
writer thread that encodes them. Two ways in:

  copied (the default)  into a buffer of the writer's own, recycled once the frame is
                        encoded: the caller may do anything with its array afterwards. The copy
                        is memory-bound: ~0.25 ms for two 640x480x3 frames on an idle core,
                        ~0.5 ms beside a concurrent encoder (bench_episode_log.py).
  taken (take=True)     the caller's array itself, no copy (~1 us): the writer keeps it until
                        it is encoded, and marks it read-only first, so that a later write
                        through it raises ValueError instead of changing the logged frame.
                        Only arrays whose memory nothing else can write are taken: an array
                        owning its memory (np.empty, np.roll, cv2.imdecode, a fresh render), or
                        a read-only view of an immutable bytes object (np.frombuffer of a
                        message). Anything else (a view into a larger writable array, a
                        non-contiguous or non-uint8 array) is copied, as without take: taking
                        it could not be made safe.

What read-only cannot stop, and the caller promises not to do: write through a view made
*before* the handoff (numpy keeps such views writable), or set `writeable = True` again.
An env that decodes fresh arrays every step (the robot server's reply) does neither.

The cost moves rather than vanishing when the writer lags: taken frames wait in its queue as
the caller's arrays, so the caller's next allocations get fresh pages (bench_episode_log.py,
unpaced at 640x480: producing two frames 0.46 -> 1.18 ms, more than the copy saved), where
copied ones wait in recycled buffers. At a paced 10 Hz the writer keeps up and it does not show.
"""

from __future__ import annotations

import collections

import numpy as np


def _immutable_memory(arr: np.ndarray) -> bool:
    """Whether nothing but `arr` (and views made later, read-only like it) can write its
    memory: it owns it, or its chain of bases ends in a bytes object behind read-only arrays."""
    if arr.base is None:
        return True
    base = arr
    while isinstance(base, np.ndarray):
        if base.flags.writeable and base is not arr:
            return False  # a writable array above it can change the pixels
        base = base.base
    return isinstance(base, bytes)


class FrameHandoff:
    """The camera frames in flight: `hand` on the caller's thread, `release` on the writer's.
    Buffers the writer allocated go back to a pool; a caller's taken array is only dropped
    (recycling it would write into the caller's memory)."""

    def __init__(self, video_keys):
        self._pool = {key: collections.deque() for key in video_keys}  # free buffers, own only
        # Every buffer the writer allocated, by id(): holding them here keeps each alive, so
        # that no array of the caller's can ever come to have the id of one.
        self._own: dict[int, np.ndarray] = {}
        self.taken = 0   # frames handed over without a copy
        self.copied = 0  # frames copied (the default, or take=True with an array not takeable)

    def __contains__(self, key: str) -> bool:
        return key in self._pool

    def hand(self, key: str, arr: np.ndarray, take: bool) -> np.ndarray:
        """The array the writer thread will encode for `arr` (already checked for its shape)."""
        if take and arr.dtype == np.uint8 and arr.flags.c_contiguous and _immutable_memory(arr):
            arr.flags.writeable = False  # from now on a write raises instead of corrupting
            self.taken += 1
            return arr
        # Recycled buffers: a freshly allocated 50 kB array costs ~25 us of page faults on
        # every frame, ten times the copy itself.
        pool = self._pool[key]
        if pool:
            buf = pool.pop()
        else:
            buf = np.empty(arr.shape, np.uint8)
            self._own[id(buf)] = buf
        np.copyto(buf, arr, casting="unsafe")
        self.copied += 1
        return buf

    def release(self, key: str, buf: np.ndarray) -> None:
        """The writer thread is done with `buf`: back to the pool when it is the writer's."""
        if id(buf) in self._own:
            self._pool[key].append(buf)
