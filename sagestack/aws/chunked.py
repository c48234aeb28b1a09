"""Incremental decoding of ``aws-chunked`` request bodies (S3 PutObject / UploadPart).

Three framings share one grammar::

    chunk     = hex-size [";chunk-signature=" sig] CRLF data CRLF
    last      = "0" [";chunk-signature=" sig] CRLF
    trailer   = *(name ":" value CRLF) CRLF

- ``STREAMING-AWS4-HMAC-SHA256-PAYLOAD``: every chunk signed, no trailer.
- ``STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER``: signed chunks, then a
  trailer closed by ``x-amz-trailer-signature``.
- ``STREAMING-UNSIGNED-PAYLOAD-TRAILER``: unsigned chunks plus a trailer;
  this is what botocore sends over HTTPS (``AwsChunkedWrapper``).

Chunk data is handed back as soon as it arrives, so memory stays at one
chunk-header line however large the chunk. The price: a chunk's signature is
only known good at the chunk's end, so a caller must treat the decoded bytes
as provisional (spool them) until :meth:`AwsChunkedDecoder.finish` returns.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping

from sagestack.aws.errors import AwsError
from sagestack.aws.sigv4 import (
    EMPTY_SHA256,
    STREAMING_SIGNED,
    STREAMING_SIGNED_TRAILER,
    SignedRequest,
    sign,
)

MAX_HEADER_LINE = 4096  # a signed chunk header is ~90 bytes; anything near this is garbage
MAX_TRAILER_BYTES = 16 * 1024

_CHUNK_SIZE = re.compile(rb"[0-9a-fA-F]{1,16}")
_SIG_EXT = b"chunk-signature="
_TRAILER_SIG = "x-amz-trailer-signature"

_SIGNATURE_MISMATCH = (
    "The request signature we calculated does not match the signature you provided. "
    "Check your key and signing method."
)

# Decoder states.
_HEADER, _DATA, _DATA_END, _TRAILER, _DONE = range(5)


class ChunkSigner:
    """Recomputes the chained chunk signatures that follow a request's seed signature."""

    __slots__ = ("_prefix", "key", "seed_signature")

    def __init__(self, signing_key: bytes, timestamp: str, scope: str, seed_signature: str) -> None:
        self.key = signing_key
        self.seed_signature = seed_signature
        self._prefix = f"{timestamp}\n{scope}\n"

    @classmethod
    def for_request(cls, req: SignedRequest, signing_key: bytes) -> ChunkSigner:
        """``signing_key`` is what :func:`sagestack.aws.sigv4.verify` returned for ``req``."""
        return cls(signing_key, req.timestamp, req.scope, req.signature)

    def chunk_signature(self, previous: str, chunk_sha256: str) -> str:
        return sign(
            self.key,
            f"AWS4-HMAC-SHA256-PAYLOAD\n{self._prefix}{previous}\n{EMPTY_SHA256}\n{chunk_sha256}",
        )

    def trailer_signature(self, previous: str, trailer_sha256: str) -> str:
        return sign(self.key, f"AWS4-HMAC-SHA256-TRAILER\n{self._prefix}{previous}\n{trailer_sha256}")


def is_aws_chunked(req: SignedRequest | None, headers: Mapping[str, str]) -> bool:
    """Whether the body is aws-chunked framed: declared by the payload hash or Content-Encoding."""
    if req is not None and req.streaming:
        return True
    encodings = headers.get("content-encoding", "")
    return "aws-chunked" in (e.strip().lower() for e in encodings.split(","))


def decoder_for_request(
    req: SignedRequest | None, signing_key: bytes | None, headers: Mapping[str, str]
) -> AwsChunkedDecoder | None:
    """A decoder configured from the request, or None when the body is not aws-chunked."""
    if not is_aws_chunked(req, headers):
        return None
    signed = req is not None and req.content_sha256 in (STREAMING_SIGNED, STREAMING_SIGNED_TRAILER)
    signer = None
    if signed:
        assert req is not None
        if signing_key is None:
            raise ValueError("signed aws-chunked bodies need the signing key verify() returned")
        signer = ChunkSigner.for_request(req, signing_key)
    trailer = "x-amz-trailer" in headers or (
        req is not None and req.content_sha256 == STREAMING_SIGNED_TRAILER
    )
    return AwsChunkedDecoder(signer, trailer_expected=trailer)


def strip_aws_chunked(content_encoding: str) -> str:
    """Content-Encoding to store for the object: the transport's aws-chunked token removed."""
    return ",".join(e.strip() for e in content_encoding.split(",") if e.strip().lower() != "aws-chunked")


class AwsChunkedDecoder:
    """Feed raw body bytes in any split; get payload bytes back; call finish() at EOF.

    With a ``signing`` signer every chunk signature is checked (403
    SignatureDoesNotMatch on the first bad one); ``trailer_expected`` says the
    client announced trailing headers (x-amz-trailer), which the signed
    framing must then sign.
    """

    def __init__(self, signing: ChunkSigner | None, trailer_expected: bool) -> None:
        self._signer = signing
        self._trailer_expected = trailer_expected
        self._state = _HEADER
        self._line = bytearray()  # partial header or trailer line
        self._remaining = 0  # data bytes left in the current chunk
        self._crlf_seen = 0  # bytes of the CRLF after chunk data matched so far
        self._hasher: hashlib._Hash | None = None
        self._chunk_sig = ""
        self._previous = signing.seed_signature if signing else ""
        self._trailer_bytes = 0
        self._trailers: dict[str, str] = {}
        self._trailer_signature: str | None = None
        self.bytes_decoded = 0

    # ------------------------------------------------------------------ public

    def feed(self, data: bytes) -> bytes:
        out: list[memoryview] = []
        view = memoryview(data)
        pos, end = 0, len(data)
        while pos < end:
            state = self._state
            if state == _DATA:
                pos = self._take_data(view, pos, end, out)
            elif state == _DATA_END:
                pos = self._take_crlf(data, pos, end)
            elif state == _DONE:
                raise _malformed("unexpected bytes after the end of the aws-chunked body")
            else:
                pos = self._take_line(data, pos, end)
        return b"".join(out)

    def finish(self) -> dict[str, str]:
        """Check the body ended cleanly; returns the trailing headers (lowercase names)."""
        if self._state == _TRAILER and not self._line:
            # Tolerate a client that omits the blank line closing an (empty) trailer section.
            self._end_trailer()
        if self._state != _DONE:
            raise AwsError("IncompleteBody", "The request body terminated unexpectedly", 400)
        return dict(self._trailers)

    # ------------------------------------------------------------------ states

    def _take_data(self, view: memoryview, pos: int, end: int, out: list[memoryview]) -> int:
        take = min(self._remaining, end - pos)
        piece = view[pos : pos + take]
        if self._hasher is not None:
            self._hasher.update(piece)
        out.append(piece)
        self._remaining -= take
        self.bytes_decoded += take
        if self._remaining == 0:
            self._state = _DATA_END
        return pos + take

    def _take_crlf(self, data: bytes, pos: int, end: int) -> int:
        while pos < end and self._crlf_seen < 2:
            if data[pos] != b"\r\n"[self._crlf_seen]:
                raise _malformed("chunk data is not followed by CRLF")
            self._crlf_seen += 1
            pos += 1
        if self._crlf_seen == 2:
            self._crlf_seen = 0
            self._end_chunk()
        return pos

    def _take_line(self, data: bytes, pos: int, end: int) -> int:
        newline = data.find(b"\n", pos, end)
        stop = end if newline < 0 else newline + 1
        self._line += data[pos:stop]
        limit = MAX_HEADER_LINE if self._state == _HEADER else MAX_TRAILER_BYTES
        if len(self._line) > limit:
            raise _malformed("chunk header or trailer line too long")
        if newline >= 0:
            if not self._line.endswith(b"\r\n"):
                raise _malformed("line not terminated by CRLF")
            line = bytes(self._line[:-2])
            self._line.clear()
            if self._state == _HEADER:
                self._chunk_header(line)
            else:
                self._trailer_line(line)
        return stop

    # ------------------------------------------------------------------ chunks

    def _chunk_header(self, line: bytes) -> None:
        size_text, _, extensions = line.partition(b";")
        if not _CHUNK_SIZE.fullmatch(size_text):
            raise _malformed("invalid chunk size")
        size = int(size_text, 16)
        if self._signer is not None:
            self._chunk_sig = _chunk_signature(extensions)
            self._hasher = hashlib.sha256()
        if size:
            self._remaining = size
            self._state = _DATA
            return
        self._end_chunk()  # the final, empty chunk is signed like any other
        self._state = _TRAILER

    def _end_chunk(self) -> None:
        if self._signer is not None:
            assert self._hasher is not None
            expected = self._signer.chunk_signature(self._previous, self._hasher.hexdigest())
            if not hmac.compare_digest(expected, self._chunk_sig):
                raise AwsError("SignatureDoesNotMatch", _SIGNATURE_MISMATCH, 403)
            self._previous = self._chunk_sig
            self._hasher = None
        if self._state == _DATA_END:
            self._state = _HEADER

    # ------------------------------------------------------------------ trailer

    def _trailer_line(self, line: bytes) -> None:
        if not line:
            self._end_trailer()
            return
        self._trailer_bytes += len(line) + 2
        if self._trailer_bytes > MAX_TRAILER_BYTES:
            raise _malformed("trailing headers too large")
        name, colon, value = line.partition(b":")
        if not colon or not name.strip():
            raise _malformed("invalid trailing header")
        key = _ascii(name).strip().lower()
        text = _ascii(value).strip()
        if key == _TRAILER_SIG:
            self._trailer_signature = text.lower()
        else:
            self._trailers[key] = text

    def _end_trailer(self) -> None:
        if self._signer is not None:
            self._check_trailer_signature()
        elif self._trailer_expected and not self._trailers:
            raise AwsError(
                "IncompleteBody", "The trailing header declared in x-amz-trailer was not sent", 400
            )
        self._state = _DONE

    def _check_trailer_signature(self) -> None:
        assert self._signer is not None
        if not self._trailer_expected:
            # The signed framing without -TRAILER has nothing to sign trailers with.
            if self._trailers or self._trailer_signature is not None:
                raise _malformed("trailing headers are not allowed for STREAMING-AWS4-HMAC-SHA256-PAYLOAD")
            return
        if self._trailer_signature is None:
            raise AwsError("SignatureDoesNotMatch", _SIGNATURE_MISMATCH, 403)
        canonical = "".join(f"{k}:{v}\n" for k, v in sorted(self._trailers.items()))
        expected = self._signer.trailer_signature(
            self._previous, hashlib.sha256(canonical.encode()).hexdigest()
        )
        if not hmac.compare_digest(expected, self._trailer_signature):
            raise AwsError("SignatureDoesNotMatch", _SIGNATURE_MISMATCH, 403)


def _chunk_signature(extensions: bytes) -> str:
    for ext in extensions.split(b";"):
        ext = ext.strip()
        if ext.startswith(_SIG_EXT):
            signature = _ascii(ext[len(_SIG_EXT) :]).lower()
            if len(signature) == 64:
                return signature
    raise _malformed("chunk-signature missing or invalid")


def _ascii(raw: bytes) -> str:
    try:
        return raw.decode("ascii")
    except UnicodeDecodeError:
        raise _malformed("non-ASCII bytes in chunk framing") from None


def _malformed(detail: str) -> AwsError:
    return AwsError("InvalidRequest", f"Malformed aws-chunked body: {detail}.", 400)
