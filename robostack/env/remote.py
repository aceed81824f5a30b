"""How a command reaches servers that run apart from it: a real arm's robot server and the
camera server beside it, maybe on another machine.

A real-time robot server renders no images, so a task that observes cameras reads them from a
`robostack camera-server` (docs/camera_server.md); a server bound on a network address serves
only with CURVE keys (docs/security.md). record-demos, record-labels, replay and eval take
these options as one group, so they read the same everywhere:

    robostack record-demos --endpoint tcp://arm-pc:5555 --cameras front \
        --camera-endpoint tcp://arm-pc:5560 --curve-key laptop --server-key arm-pc \
        --camera-server-key arm-pc
"""

from __future__ import annotations

from dataclasses import dataclass

from robostack import transport


@dataclass
class RemoteServers:
    """Servers run apart from this command (a real arm): its camera server and CURVE keys."""

    camera_endpoint: str = ""  # real time: the `robostack camera-server` publishing the cameras observed (a real-time robot server renders none); "": the robot server renders them (lock-step mirror)
    curve_key: str = ""  # this client's CURVE key pair (NAME in `robostack keys list`, or a path), for servers started with --curve-key ("": plaintext, loopback/ipc only)
    server_key: str = ""  # the robot server's CURVE public key (NAME or path), with --curve-key
    camera_server_key: str = ""  # the camera server's CURVE public key (NAME or path), with --curve-key

    def __post_init__(self):
        servers = bool(self.server_key or self.camera_server_key)
        if servers and not self.curve_key:
            raise ValueError("--server-key / --camera-server-key need --curve-key: this client's "
                             "own key pair (`robostack keys create NAME`; docs/security.md)")
        if self.curve_key and not servers:
            raise ValueError("--curve-key needs the public key of the server it talks to: "
                             "--server-key (the robot server) and/or --camera-server-key")

    def check_against(self, endpoint: str, option: str = "--endpoint") -> None:
        """These options are for a robot server run apart: refused without its `option`."""
        given = [f"--{name.replace('_', '-')}" for name, value in vars(self).items() if value]
        if given and not endpoint:
            raise ValueError(f"{', '.join(given)}: for a robot server run apart ({option}); "
                             f"without {option} the command starts a lock-step mirror of its "
                             "own, on loopback, which renders its own cameras")

    def env_options(self) -> dict:
        """make_env's keywords for these servers: CURVE for each server whose key is given."""
        def keys(server_key):
            return transport.CurveKeys(self.curve_key, server_key) if server_key else None
        return {"curve": keys(self.server_key), "camera_endpoint": self.camera_endpoint or None,
                "camera_curve": keys(self.camera_server_key)}
