"""TCP reachability checks for the stack's loopback services."""

from __future__ import annotations

import socket

LOOPBACK = "127.0.0.1"


def port_open(port: int, host: str = LOOPBACK, timeout_s: float = 0.5) -> bool:
    """Whether something accepts TCP connections on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False
