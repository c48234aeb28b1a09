"""Moving object bytes between sockets and the store in bounded memory.

Uploads: the decoded request body is gathered into ~1 MiB batches and each batch
is written (hashed, appended to the temp file) in a worker thread *while the
next batch is being received*, so network and disk overlap and at most about
two batches per request are held in memory.

Downloads: 1 MiB chunks are read in a worker thread, the next one while the
current one is being sent.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator

from sagestack.aws.http import BodyStream
from sagestack.storage import errors
from sagestack.storage.api import BodyWriter

BATCH_SIZE = 1 << 20
#: Bodies declared up to this size are received whole and committed in a single thread hop.
SMALL_BODY = BATCH_SIZE


def is_small(stream: BodyStream | bytes) -> bool:
    if isinstance(stream, bytes | bytearray):
        return True
    return stream.declared_length is not None and stream.declared_length <= SMALL_BODY


async def read_small(stream: BodyStream | bytes) -> bytes:
    """The whole body of a request that declared a small one (a body longer than declared is cut off)."""
    if isinstance(stream, bytes | bytearray):
        return bytes(stream)
    limit = stream.declared_length if stream.declared_length is not None else SMALL_BODY
    parts: list[bytes] = []
    size = 0
    async for chunk in stream.chunks():
        size += len(chunk)
        if size > limit:
            # More than the client declared: it cannot be the object it announced.
            raise errors.incomplete_body(limit, size)
        parts.append(chunk)
    return b"".join(parts)


async def receive_into(stream: BodyStream | bytes, writer: BodyWriter) -> bytes:
    """Write the body into ``writer`` and return the unwritten tail (< BATCH_SIZE).

    The tail is left to the caller so that a small body costs a single thread hop:
    the commit writes it and publishes the object in the same call. The stream's
    verification (signatures, payload hash, truncation) has run when this returns.
    """
    if isinstance(stream, bytes | bytearray):
        return bytes(stream)
    loop = asyncio.get_running_loop()
    pending: asyncio.Future[None] | None = None
    parts: list[bytes] = []
    size = 0
    try:
        async for chunk in stream.chunks():
            parts.append(chunk)
            size += len(chunk)
            if size < BATCH_SIZE:
                continue
            batch = b"".join(parts)
            parts.clear()
            size = 0
            if pending is not None:
                await pending
            pending = loop.run_in_executor(None, writer.write, batch)
        if pending is not None:
            await pending
            pending = None
    finally:
        if pending is not None:
            # Never leave a write running against a writer the caller is about to abort.
            with contextlib.suppress(BaseException):
                await asyncio.shield(pending)
    return b"".join(parts)


async def send_chunks(chunks: Iterator[bytes]) -> AsyncIterator[bytes]:
    """Serve an object's chunk iterator, reading ahead one chunk in a worker thread."""
    loop = asyncio.get_running_loop()
    pending: asyncio.Future[bytes | None] | None = None
    try:
        pending = loop.run_in_executor(None, next, chunks, None)
        while True:
            chunk = await pending
            if chunk is None:
                pending = None
                return
            pending = loop.run_in_executor(None, next, chunks, None)
            yield chunk
    finally:
        _close_after(chunks, pending)


def _close_after(chunks: Iterator[bytes], pending: asyncio.Future[bytes | None] | None) -> None:
    """Close the reader once no read is in flight (closing its fd under a pread could hit a reused fd)."""
    close = getattr(chunks, "close", None)
    if close is None:
        return
    if pending is None or pending.done():
        close()
    else:
        pending.add_done_callback(lambda _future: close())


def close_chunks(chunks: Iterator[bytes]) -> None:
    close = getattr(chunks, "close", None)
    if close is not None:
        close()
