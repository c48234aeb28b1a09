"""The policy generation: one counter, shared by every process of a server, bumped by any change
that can alter an authorization decision (a policy, an attachment, a group, a tag, a bucket policy).

Each process keeps its caches per generation; one that sees a newer number starts empty ones
before deciding. The counter lives in an 8-byte file of the data dir mapped into every
process (the main one and the runtime's front workers), so reading it costs a memory load, and a
change committed by one process is seen by the next request any process serves.
"""

from __future__ import annotations

import fcntl
import mmap
import os
import struct
import threading
from pathlib import Path

_FORMAT = "<Q"
_SIZE = struct.calcsize(_FORMAT)
_COUNTER = struct.Struct(_FORMAT)


class PolicyGeneration:
    """A counter in a shared file; ``path=None`` keeps it in this process only (unit tests)."""

    def __init__(self, path: Path | None = None) -> None:
        self._lock = threading.Lock()
        self._fd: int | None = None
        if path is None:
            self._map: mmap.mmap | bytearray = bytearray(_SIZE)
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        if os.fstat(fd).st_size < _SIZE:
            os.ftruncate(fd, _SIZE)
        self._fd = fd
        self._map = mmap.mmap(fd, _SIZE)

    @property
    def current(self) -> int:
        return _COUNTER.unpack_from(self._map)[0]

    def bump(self) -> None:
        # A thread lock for this process, a file lock for the others that may write.
        with self._lock:
            if self._fd is not None:
                fcntl.flock(self._fd, fcntl.LOCK_EX)
            try:
                struct.pack_into(_FORMAT, self._map, 0, self.current + 1)
            finally:
                if self._fd is not None:
                    fcntl.flock(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        if isinstance(self._map, mmap.mmap):
            self._map.close()
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
