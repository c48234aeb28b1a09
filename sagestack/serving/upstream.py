"""A lean keep-alive HTTP/1.1 client for talking to model servers on loopback.

The router forwards every InvokeEndpoint through here, so it is kept minimal:
one pool of idle connections per instance, requests written as one buffer,
responses framed by Content-Length (or chunked), Nagle off.
"""

from __future__ import annotations

import asyncio
import socket
from dataclasses import dataclass


class UpstreamError(ConnectionError):
    """The instance could not be reached or broke the connection: try another one."""


@dataclass
class UpstreamResponse:
    status: int
    headers: dict[str, str]
    body: bytes


class UpstreamPool:
    def __init__(self, host: str, port: int, max_idle: int = 64, timeout: float = 60.0) -> None:
        self.host = host
        self.port = port
        self.max_idle = max_idle
        self.timeout = timeout
        self._idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        #: The loop the connections belong to; they may only be closed from it.
        self._loop: asyncio.AbstractEventLoop | None = None

    async def request(self, method: str, path: str, headers: dict[str, str], body: bytes) -> UpstreamResponse:
        head = [f"{method} {path} HTTP/1.1", f"Host: {self.host}:{self.port}", f"Content-Length: {len(body)}"]
        head.extend(f"{name}: {value}" for name, value in headers.items())
        payload = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body
        reused = bool(self._idle)
        try:
            return await self._exchange(payload)
        except (UpstreamError, OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
            if not reused:
                raise UpstreamError(str(exc)) from exc
        # A pooled connection may have been closed by the server meanwhile: one fresh try.
        self.close()
        try:
            return await self._exchange(payload)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
            raise UpstreamError(str(exc)) from exc

    async def _exchange(self, payload: bytes) -> UpstreamResponse:
        reader, writer = await self._connection()
        try:
            writer.write(payload)
            response, keep = await asyncio.wait_for(_read_response(reader), self.timeout)
        except BaseException:
            writer.close()
            raise
        if keep and len(self._idle) < self.max_idle:
            self._idle.append((reader, writer))
        else:
            writer.close()
        return response

    async def _connection(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        while self._idle:
            reader, writer = self._idle.pop()
            if not writer.is_closing() and not reader.at_eof():
                return reader, writer
            writer.close()
        self._loop = asyncio.get_running_loop()
        reader, writer = await asyncio.open_connection(self.host, self.port, limit=2**22)
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return reader, writer

    def close(self) -> None:
        """Drop idle connections; safe from any thread (transports are closed on their own loop)."""
        idle, self._idle = self._idle, []
        loop = self._loop
        if not idle or loop is None or loop.is_closed():
            return  # a closed loop already let go of its sockets
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            _close_all(idle)
        else:
            loop.call_soon_threadsafe(_close_all, idle)


def _close_all(connections: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]]) -> None:
    for _, writer in connections:
        writer.close()


async def _read_response(reader: asyncio.StreamReader) -> tuple[UpstreamResponse, bool]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[1].isdigit():
        raise UpstreamError(f"bad status line {lines[0]!r}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if ":" in line:
            name, value = line.split(":", 1)
            headers[name.strip().lower()] = value.strip()
    if headers.get("transfer-encoding", "").lower() == "chunked":
        body = await _read_chunked(reader)
    else:
        body = await reader.readexactly(int(headers.get("content-length", "0")))
    keep = headers.get("connection", "").lower() != "close" and parts[0] == "HTTP/1.1"
    return UpstreamResponse(int(parts[1]), headers, body), keep


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    chunks = []
    while True:
        size = int((await reader.readline()).split(b";", 1)[0].strip() or b"0", 16)
        if size == 0:
            await reader.readline()
            return b"".join(chunks)
        chunks.append(await reader.readexactly(size))
        await reader.readexactly(2)
