"""A free local TCP port, for a server the test starts or for a port nothing listens on."""

from __future__ import annotations

import socket
from typing import cast

HOST = "127.0.0.1"


def free_port() -> int:
    """A port on ``127.0.0.1`` nothing listens on right now (bound, then released).

    For servers that cannot bind port 0 themselves (aiosmtpd's Controller, a process told its
    port on the command line) and for "connection refused" tests.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return cast(int, sock.getsockname()[1])
