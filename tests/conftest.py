"""Fixtures every test folder shares."""

import shutil

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
