"""Socket settings every keep-alive HTTP/1.1 endpoint of the platform needs."""

from __future__ import annotations

import asyncio
import socket


def set_no_delay(transport: asyncio.BaseTransport) -> None:
    """Nagle off on TCP transports: else a keep-alive answer can wait ~40 ms for the peer's delayed ACK."""
    sock = transport.get_extra_info("socket")
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
