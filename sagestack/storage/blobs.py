"""Blob files on local disk: crash-safe writes, streaming reads, cheap copies.

Layout under the objects directory::

    tmp/                 bodies being received (``<random>.tmp``)
    blobs/<ab>/<ab...>   committed blobs, 32 random hex digits, sharded by the first two

Blob names are random rather than content-addressed: every blob is owned by
exactly one metadata row (an object, an upload part, or a part of a completed
multipart object), so replacing or deleting an object can unlink its blob
without reference counting. A copy is a hard link under a new name.

A body is written to ``tmp/``, fsync'ed, then renamed into ``blobs/`` *before*
its row is committed; so a row never points at missing or partial bytes, even
after a SIGKILL of the server (power loss is out of scope, see :meth:`BlobStore.publish`).
A crash can only leave files without rows, which
:meth:`BlobStore.orphans` finds at the next start.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, BinaryIO, NamedTuple

from sagestack.storage import checksums as cks
from sagestack.storage import errors

if TYPE_CHECKING:
    from sagestack.storage.api import ChecksumExpectations

CHUNK_SIZE = 1 << 20
_SHARDS = [f"{i:02x}" for i in range(256)]


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass(frozen=True)
class FinishedBody:
    """A fully received, fsync'ed temp file and what was computed while receiving it."""

    tmp_path: Path
    size: int
    md5: bytes
    #: Raw digests of the additional checksums computed (algorithm -> bytes).
    digests: dict[str, bytes]


def hash_file(path: Path, algorithms: Iterable[str]) -> dict[str, bytes]:
    """Checksums of a file on disk, read in chunks (for an algorithm the writer was not told)."""
    hashers = {a: cks.new_hasher(a) for a in algorithms}
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK_SIZE):
            for h in hashers.values():
                h.update(chunk)
    return {a: h.digest() for a, h in hashers.items()}


def verify_body(body: FinishedBody, expected: ChecksumExpectations | None) -> dict[str, bytes]:
    """Check a received body against what the request claimed (size, Content-MD5, checksums), as S3
    does before it keeps an object or part; returns every checksum digest to store."""
    digests = dict(body.digests)
    if expected is None:
        return digests
    expected.validate()
    if expected.size is not None and expected.size != body.size:
        raise errors.incomplete_body(expected.size, body.size)
    if expected.content_md5 is not None:
        want = cks.decode_content_md5(expected.content_md5)
        if want != body.md5:
            raise errors.bad_content_md5(expected.content_md5, body.md5, want)
    for name, value in expected.checksums.items():
        algorithm = cks.normalize_algorithm(name)
        if algorithm not in digests:
            digests.update(hash_file(body.tmp_path, [algorithm]))
        if cks.decode_checksum(algorithm, value) != digests[algorithm]:
            raise errors.bad_checksum(algorithm)
    return digests


class BlobWriter:
    """Receives a body into a temp file, hashing as it goes. Use as a context manager or abort()."""

    def __init__(self, tmp_dir: Path, algorithms: Iterable[str], max_size: int) -> None:
        self._file: BinaryIO | None = None
        self._done = True  # published or aborted (or never created): the temp file is not ours
        chosen = sorted({cks.normalize_algorithm(a) for a in algorithms})  # may raise: before any file
        self._md5 = cks.new_hasher("MD5")
        self._hashers = {a: cks.new_hasher(a) for a in chosen}
        self.tmp_path = tmp_dir / f"{secrets.token_hex(16)}.tmp"
        self._size = 0
        self._max_size = max_size
        self._finished: FinishedBody | None = None
        self._file = open(self.tmp_path, "xb")  # noqa: SIM115 - lives across calls
        self._done = False

    @property
    def size(self) -> int:
        return self._size

    @property
    def algorithms(self) -> frozenset[str]:
        return frozenset(self._hashers)

    def write(self, chunk: bytes | memoryview) -> None:
        if self._file is None:
            raise RuntimeError("write after the body was finished or aborted")
        if self._size + len(chunk) > self._max_size:
            size = self._size + len(chunk)
            self.abort()
            raise errors.entity_too_large(size, self._max_size)
        self._file.write(chunk)
        self._md5.update(chunk)
        for hasher in self._hashers.values():
            hasher.update(chunk)
        self._size += len(chunk)

    def add_algorithm(self, algorithm: str) -> None:
        """Also compute ``algorithm``; only possible before any byte was written."""
        if self._size:
            raise RuntimeError("checksum algorithms must be chosen before the first write")
        self._hashers.setdefault(algorithm, cks.new_hasher(algorithm))

    def finish(self) -> FinishedBody:
        """Flush and fsync the temp file; idempotent."""
        if self._finished is None:
            if self._file is None:
                raise RuntimeError("the body was aborted")
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            self._file = None
            digests = {a: h.digest() for a, h in self._hashers.items()}
            self._finished = FinishedBody(self.tmp_path, self._size, self._md5.digest(), digests)
        return self._finished

    def mark_published(self) -> None:
        self._done = True

    def abort(self) -> None:
        """Drop the body; safe to call at any time, any number of times."""
        if self._file is not None:
            self._file.close()
            self._file = None
        if not self._done:
            self._done = True
            with contextlib.suppress(FileNotFoundError):
                self.tmp_path.unlink()

    def __del__(self) -> None:
        # A writer dropped without commit or abort (a handler bug) must not leave its temp file.
        self.abort()

    def __enter__(self) -> BlobWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        # Leaving the block without a commit (normally or by an exception) drops the body.
        self.abort()


class ChunkReader:
    """Yields ``length`` bytes from ``start`` of an already open file, in CHUNK_SIZE pieces.

    The file is opened before this object exists, so a concurrent delete or
    replace (which unlinks the blob) cannot cut a read short.
    """

    def __init__(self, fd: int, start: int, length: int, chunk_size: int = CHUNK_SIZE) -> None:
        self._fd: int | None = fd
        self._pos = start
        self._left = length
        self._chunk = chunk_size

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        if self._left <= 0 or self._fd is None:
            self.close()
            raise StopIteration
        data = os.pread(self._fd, min(self._chunk, self._left), self._pos)
        if not data:
            self.close()
            raise OSError(f"blob ended {self._left} bytes early")
        self._pos += len(data)
        self._left -= len(data)
        return data

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __del__(self) -> None:
        self.close()


class Piece(NamedTuple):
    """A blob holding the object's bytes from ``start`` (the object offset) for ``size`` bytes."""

    blob: str
    start: int
    size: int


#: A multipart read opens at most this many part files up front (the rest as it gets to them),
#: so a full read of a 10,000-part object cannot run a busy server out of file descriptors.
EAGER_OPENS = 64


class PieceReader:
    """Yields ``length`` bytes from object offset ``first`` of an object stored as consecutive pieces.

    The first :data:`EAGER_OPENS` pieces are opened by the constructor (so a
    concurrent replace cannot cut those short, as with :class:`ChunkReader`);
    a later piece unlinked before the read reaches it ends the read with an
    OSError, which the HTTP layer turns into a broken response the client retries.
    """

    def __init__(self, store: BlobStore, pieces: Sequence[Piece], first: int, length: int) -> None:
        self._store = store
        end = first + length
        # (piece, first byte within it, bytes from it), only for the pieces the span touches.
        self._todo = [
            (p, max(first - p.start, 0), min(end, p.start + p.size) - max(first, p.start))
            for p in pieces
            if p.size and p.start < end and p.start + p.size > first
        ]
        self._fds: list[int | None] = []
        self._current: ChunkReader | None = None
        try:
            for p, _, _ in self._todo[:EAGER_OPENS]:
                self._fds.append(store.open_fd(p.blob))
        except BaseException:
            self.close()
            raise

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        while True:
            if self._current is not None:
                chunk = next(self._current, None)
                if chunk is not None:
                    return chunk
                self._current = None
            if not self._todo:
                self.close()
                raise StopIteration
            self._current = self._open_next()

    def _open_next(self) -> ChunkReader:
        piece, offset, count = self._todo.pop(0)
        fd = self._fds.pop(0) if self._fds else None
        if fd is None:
            try:
                fd = self._store.open_fd(piece.blob)
            except FileNotFoundError:
                self.close()
                raise OSError("the object was replaced or deleted while it was being read") from None
        return ChunkReader(fd, offset, count)

    def close(self) -> None:
        self._todo = []
        if self._current is not None:
            self._current.close()
            self._current = None
        for fd in self._fds:
            if fd is not None:
                os.close(fd)
        self._fds = []

    def __del__(self) -> None:
        self.close()


class BlobStore:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.tmp_dir = self.root / "tmp"
        self.blob_dir = self.root / "blobs"
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        for shard in _SHARDS:
            (self.blob_dir / shard).mkdir(parents=True, exist_ok=True)
        _fsync_dir(self.blob_dir)

    def path(self, name: str) -> Path:
        return self.blob_dir / name

    @staticmethod
    def _new_name() -> str:
        token = secrets.token_hex(16)
        return f"{token[:2]}/{token}"

    def writer(self, algorithms: Iterable[str], max_size: int) -> BlobWriter:
        return BlobWriter(self.tmp_dir, algorithms, max_size)

    def publish(self, tmp_path: Path) -> str:
        """Move a finished (fsync'ed) temp file into place; returns its blob name."""
        name = self._new_name()
        os.rename(tmp_path, self.path(name))
        # No fsync of the shard directory: the promise is that a committed object survives a
        # SIGKILL of the server, and a rename is visible to every later process as soon as it
        # returns. Power loss is out of scope (the metadata DB runs SQLite with synchronous=NORMAL,
        # which can drop its last commits then too). The shard directories themselves were made
        # durable at start-up. Skipping it halves the fsyncs of a small PUT.
        return name

    def publish_writer(self, writer: BlobWriter) -> tuple[str, FinishedBody]:
        body = writer.finish()
        name = self.publish(body.tmp_path)
        writer.mark_published()
        return name, body

    def open_fd(self, name: str) -> int:
        return os.open(self.path(name), os.O_RDONLY)

    def open_pieces(self, pieces: Sequence[Piece], first: int, length: int) -> Iterator[bytes]:
        """A reader of ``length`` bytes from object offset ``first``; FileNotFoundError if a blob is gone."""
        if len(pieces) == 1 and pieces[0].start == 0:
            return ChunkReader(self.open_fd(pieces[0].blob), first, length)
        return PieceReader(self, pieces, first, length)

    def link_copy(self, name: str) -> str:
        """A new blob with the same bytes: a hard link, or a real copy where links fail."""
        new = self._new_name()
        try:
            os.link(self.path(name), self.path(new))
        except FileNotFoundError:
            raise
        except OSError:
            tmp = self.concat([(name, 0, None)])
            return self.publish(tmp)
        return new  # no directory fsync: see publish()

    def concat(self, pieces: Iterable[tuple[str, int, int | None]]) -> Path:
        """Write (blob, offset, length-or-None) pieces one after another into a fsync'ed temp file.

        ``copy_file_range`` lets the kernel move the bytes (or reflink them), so a
        multi-GiB assembly needs no user-space buffer at all; the fallback copies 1 MiB at a time.
        """
        tmp = self.tmp_dir / f"{secrets.token_hex(16)}.tmp"
        try:
            with open(tmp, "xb", buffering=0) as out:
                for name, offset, length in pieces:
                    with open(self.path(name), "rb") as src:
                        size = os.fstat(src.fileno()).st_size
                        todo = size - offset if length is None else length
                        _copy_range(src.fileno(), out.fileno(), offset, todo)
                os.fsync(out.fileno())
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            raise
        return tmp

    def delete(self, names: Iterable[str]) -> None:
        for name in names:
            with contextlib.suppress(FileNotFoundError):
                self.path(name).unlink()

    # --- recovery -------------------------------------------------------------------------
    def remove_temp_files(self, grace_seconds: float = 0.0) -> int:
        cutoff = time.time() - grace_seconds
        removed = 0
        for entry in os.scandir(self.tmp_dir):
            with contextlib.suppress(FileNotFoundError):
                if entry.stat().st_mtime <= cutoff:
                    os.unlink(entry.path)
                    removed += 1
        return removed

    def remove_orphans(self, known: Callable[[list[str]], set[str]], grace_seconds: float = 0.0) -> int:
        """Unlink blob files that no row names; ``known(names)`` returns those some row holds.

        One shard at a time, so memory follows the size of a shard, not of the store,
        and the DB is asked by exact name (an indexed lookup under any collation).
        Files younger than ``grace_seconds`` are spared: they may belong to a write
        that is between its rename and its commit.
        """
        cutoff = time.time() - grace_seconds
        removed = 0
        for shard in _SHARDS:
            candidates: dict[str, str] = {}
            for entry in os.scandir(self.blob_dir / shard):
                with contextlib.suppress(FileNotFoundError):
                    if entry.is_file() and entry.stat().st_mtime <= cutoff:
                        candidates[f"{shard}/{entry.name}"] = entry.path
            if not candidates:
                continue
            keep = known(list(candidates))
            for name, path in candidates.items():
                if name not in keep:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(path)
                        removed += 1
        return removed


def _copy_range(src: int, dst: int, offset: int, length: int) -> None:
    kernel = hasattr(os, "copy_file_range")
    while length > 0:
        if kernel:
            try:
                n = os.copy_file_range(src, dst, min(length, 1 << 30), offset)
            except OSError:  # e.g. across file systems on older kernels: copy by hand
                kernel = False
                continue
        else:
            data = os.pread(src, min(CHUNK_SIZE, length), offset)
            n = len(data)
            view = memoryview(data)
            while view:
                view = view[os.write(dst, view) :]
        if n == 0:
            raise OSError("source blob ended early")
        offset += n
        length -= n
