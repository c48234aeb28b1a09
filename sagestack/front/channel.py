"""A message channel between two processes of one server: JSON messages, and sockets handed over with them.

Over one end of a Unix stream socketpair, on the asyncio loop. Each message is a
4-byte length and a JSON object; a message may carry file descriptors (an
accepted client connection the main process hands to a front worker), which
travel as ancillary data with the message's first bytes. Both ends are
non-blocking; what the socket cannot take at once waits for it to drain, in order.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import struct
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

_LENGTH = struct.Struct(">I")
#: No message between our own processes comes near this; a bigger length means a broken stream.
MAX_MESSAGE = 64 * 1024 * 1024
_MAX_FDS = 64


class Channel:
    """``on_message(message, fds)`` for each message received; ``on_close()`` once, when the peer is gone."""

    def __init__(self, sock: socket.socket, on_message: Callable[[dict[str, Any], list[int]], None],
                 on_close: Callable[[], None]) -> None:
        self.sock = sock
        sock.setblocking(False)
        self._on_message = on_message
        self._on_close = on_close
        self._loop = asyncio.get_running_loop()
        self._inbox = bytearray()
        self._fds: deque[int] = deque()
        self._outbox = bytearray()
        self.closed = False
        self._loop.add_reader(sock.fileno(), self._readable)

    def send(self, message: dict[str, Any], fds: Sequence[int] = ()) -> bool:
        """Queue ``message``; False when it cannot go now (closed, or descriptors behind queued bytes)."""
        if self.closed:
            return False
        frame = _frame(message, len(fds))
        if self._outbox:
            if fds:
                return False  # descriptors must ride their own bytes; the caller keeps the socket
            self._outbox += frame
            return True
        try:
            sent = socket.send_fds(self.sock, [frame], list(fds)) if fds else self.sock.send(frame)
        except (BlockingIOError, InterruptedError):
            if fds:
                return False
            sent = 0
        except OSError:
            self.close()
            return False
        if sent < len(frame):
            self._outbox += frame[sent:]
            self._loop.add_writer(self.sock.fileno(), self._writable)
        return True

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._loop.remove_reader(self.sock.fileno())
        self._loop.remove_writer(self.sock.fileno())
        self.sock.close()
        while self._fds:
            os.close(self._fds.popleft())
        self._on_close()

    # ----------------------------------------------------------------- loop callbacks

    def _writable(self) -> None:
        try:
            sent = self.sock.send(self._outbox)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self.close()
            return
        del self._outbox[:sent]
        if not self._outbox:
            self._loop.remove_writer(self.sock.fileno())

    def _readable(self) -> None:
        try:
            data, fds, _flags, _addr = socket.recv_fds(self.sock, 256 * 1024, _MAX_FDS)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data, fds = b"", []
        self._fds.extend(fds)
        if not data:
            self.close()
            return
        self._inbox += data
        self._dispatch()

    def _dispatch(self) -> None:
        while len(self._inbox) >= _LENGTH.size and not self.closed:
            (length,) = _LENGTH.unpack_from(self._inbox)
            if length > MAX_MESSAGE:
                self.close()
                return
            end = _LENGTH.size + length
            if len(self._inbox) < end:
                return
            message = json.loads(self._inbox[_LENGTH.size:end])
            del self._inbox[:end]
            fds = [self._fds.popleft() for _ in range(min(int(message.pop("fds", 0)), len(self._fds)))]
            self._on_message(message, fds)


def _frame(message: dict[str, Any], fd_count: int) -> bytes:
    body = json.dumps({**message, "fds": fd_count} if fd_count else message, separators=(",", ":")).encode()
    return _LENGTH.pack(len(body)) + body
