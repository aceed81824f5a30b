"""The wire: one schema-versioned envelope (envelope.py) carried by four socket roles
(sockets.py: Publisher/Subscriber for latest-value streams, RequestClient/RequestServer for
requests with timeouts), and who may reach them (endpoints.py: loopback, private unix-socket
folders; auth.py: CURVE keys and the allow-list). `from robostack import transport` gives all
under one name."""

from robostack.transport.auth import *  # noqa: F401,F403
from robostack.transport.auth import __all__ as _auth_all
from robostack.transport.endpoints import *  # noqa: F401,F403
from robostack.transport.endpoints import __all__ as _endpoints_all
from robostack.transport.envelope import *  # noqa: F401,F403
from robostack.transport.envelope import __all__ as _envelope_all
from robostack.transport.sockets import *  # noqa: F401,F403
from robostack.transport.sockets import __all__ as _sockets_all

__all__ = [*_envelope_all, *_sockets_all, *_endpoints_all, *_auth_all]
