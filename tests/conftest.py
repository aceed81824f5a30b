"""Fixtures every test folder shares, and the environment every test runs in."""

import os
import shutil

# As `make test` and the `robostack` entry point set them, for a bare `pytest` too: mujoco picks
# its GL backend when first imported (EGL renders headless), and one thread per process keeps
# the test's subprocesses from oversubscribing a 2-core machine.
os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest


@pytest.fixture
def keys(tmp_path):
    """A CURVE keys folder (robostack keys' layout) with key pairs 'server', 'client' (in the
    allow-list) and 'stranger' (not in it)."""
    from robostack.transport.auth import write_key_pair

    folder = tmp_path / "keys"
    for name in ("server", "client", "stranger"):
        write_key_pair(folder, name)
    (folder / "allowed").mkdir(mode=0o700)
    shutil.copy(folder / "client.key", folder / "allowed" / "client.key")
    return folder
