"""Free loopback ports for the servers the tests start (one helper for every tier)."""

from __future__ import annotations

import socket


def free_ports(n: int) -> list[int]:
    """*n* distinct free loopback ports, all held open until all are chosen."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def free_port() -> int:
    """One free loopback port."""
    return free_ports(1)[0]
