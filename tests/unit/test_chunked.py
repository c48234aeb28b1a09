"""aws-chunked decoding: our own encoders, AWS's published example, and botocore's real output."""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import random
import zlib
from collections.abc import Iterable
from datetime import UTC, datetime

import pytest
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.httpchecksum import AwsChunkedWrapper, Crc32Checksum

from sagestack.aws import sigv4
from sagestack.aws.chunked import (
    AwsChunkedDecoder,
    ChunkSigner,
    decoder_for_request,
    is_aws_chunked,
    strip_aws_chunked,
)
from sagestack.aws.errors import AwsError
from tests.unit.test_sigv4 import CREDS, Wire, boto_client, capture, s3_url, signed

EMPTY = hashlib.sha256(b"").hexdigest()


# --------------------------------------------------------------- encoders (independent of chunked.py)


def _hmac_hex(key: bytes, text: str) -> str:
    return hmac.new(key, text.encode(), hashlib.sha256).hexdigest()


def crc32_b64(data: bytes) -> str:
    return base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()


def pieces(payload: bytes, size: int) -> list[bytes]:
    return [payload[i : i + size] for i in range(0, len(payload), size)] + [b""]


def encode_unsigned(payload: bytes, size: int, trailers: dict[str, str] | None = None) -> bytes:
    out = bytearray()
    for chunk in pieces(payload, size):
        out += f"{len(chunk):x}\r\n".encode()
        if chunk:
            out += chunk + b"\r\n"
    for name, value in (trailers or {}).items():
        out += f"{name}:{value}\r\n".encode()
    return bytes(out + b"\r\n")


def encode_signed(
    payload: bytes,
    size: int,
    key: bytes,
    timestamp: str,
    scope: str,
    seed: str,
    trailers: dict[str, str] | None = None,
) -> bytes:
    out = bytearray()
    previous = seed
    for chunk in pieces(payload, size):
        to_sign = "\n".join(
            ["AWS4-HMAC-SHA256-PAYLOAD", timestamp, scope, previous, EMPTY, hashlib.sha256(chunk).hexdigest()]
        )
        previous = _hmac_hex(key, to_sign)
        out += f"{len(chunk):x};chunk-signature={previous}\r\n".encode()
        if chunk:
            out += chunk + b"\r\n"
    if trailers is not None:
        canonical = "".join(f"{k}:{v}\n" for k, v in sorted(trailers.items()))
        for name, value in trailers.items():
            out += f"{name}:{value}\r\n".encode()
        to_sign = "\n".join(
            [
                "AWS4-HMAC-SHA256-TRAILER",
                timestamp,
                scope,
                previous,
                hashlib.sha256(canonical.encode()).hexdigest(),
            ]
        )
        out += f"x-amz-trailer-signature:{_hmac_hex(key, to_sign)}\r\n".encode()
    return bytes(out + b"\r\n")


def feed_all(decoder: AwsChunkedDecoder, body: bytes, splits: Iterable[int]) -> tuple[bytes, dict[str, str]]:
    out = bytearray()
    pos = 0
    for cut in sorted(set(splits)):
        out += decoder.feed(body[pos:cut])
        pos = cut
    out += decoder.feed(body[pos:])
    return bytes(out), decoder.finish()


def split_plans(body: bytes) -> list[list[int]]:
    rng = random.Random(len(body))
    return [
        [],  # all at once
        list(range(1, len(body))),  # byte by byte
        [rng.randrange(1, max(len(body), 2)) for _ in range(max(len(body) // 7, 1))],
        list(range(3, len(body), 5)),
    ]


# --------------------------------------------------------------------------- a real signed request as seed


class _StreamingS3Signer(S3SigV4Auth):
    """botocore's S3 signer with the payload declared as signed streaming, as the Java/Go SDKs do."""

    def __init__(self, literal: str) -> None:
        super().__init__(CREDS, "s3", "us-east-1")
        self._literal = literal

    def payload(self, request: AWSRequest) -> str:
        return self._literal


def signed_streaming_request(
    literal: str, trailer: str | None = None
) -> tuple[Wire, sigv4.SignedRequest, bytes]:
    headers = {"Content-Encoding": "aws-chunked", "X-Amz-Decoded-Content-Length": "0"}
    if trailer:
        headers["X-Amz-Trailer"] = trailer
    request = AWSRequest(method="PUT", url=s3_url("bucket", "object key"), headers=headers)
    wire = signed(request, _StreamingS3Signer(literal))
    req = wire.parse()
    assert req.content_sha256 == literal and req.streaming
    key = wire.verify("s3")
    return wire, req, key


# --------------------------------------------------------------------------- AWS's published examples

DOC_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
DOC_NOW = datetime(2013, 5, 24, 0, 1, tzinfo=UTC)
DOC_SCOPE = "AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request"


def _doc_request(trailer: bool) -> tuple[dict[str, str], list[str], str]:
    headers = {
        "content-encoding": "aws-chunked",
        "host": "s3.amazonaws.com",
        "x-amz-date": "20130524T000000Z",
        "x-amz-decoded-content-length": "66560",
        "x-amz-storage-class": "REDUCED_REDUNDANCY",
    }
    if trailer:
        headers["x-amz-content-sha256"] = sigv4.STREAMING_SIGNED_TRAILER
        headers["x-amz-trailer"] = "x-amz-checksum-crc32c"
        signed_headers = "content-encoding;host;x-amz-content-sha256;x-amz-date;x-amz-decoded-content-length;"
        signed_headers += "x-amz-storage-class;x-amz-trailer"
        seed = "106e2a8a18243abcf37539882f36619c00e2dfc72633413f02d3b74544bfeb8e"
        sigs = [
            "b474d8862b1487a5145d686f57f013e54db672cee1c953b3010fb58501ef5aa2",
            "1c1344b170168f8e65b41376b44b20fe354e373826ccbbe2c1d40a8cae51e5c7",
            "2ca2aba2005185cf7159c6277faf83795951dd77a3a99e6e65d5c9f85863f992",
        ]
    else:
        headers["x-amz-content-sha256"] = sigv4.STREAMING_SIGNED
        headers["content-length"] = "66824"
        signed_headers = "content-encoding;content-length;host;x-amz-content-sha256;x-amz-date;"
        signed_headers += "x-amz-decoded-content-length;x-amz-storage-class"
        seed = "4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9"
        sigs = [
            "ad80c730a21e5b8d04586a2213dd63b9a0e99e0e2307b0ade35a65485a288648",
            "0055627c9e194cb4542bae2aa5492e3c1575bbb81b612b7d234b86a503ef5497",
            "b6c6ea8a5354eaf15b3cb7646744f4275b71ea724fed81ceb9323e279d449df9",
        ]
    headers["authorization"] = (
        f"AWS4-HMAC-SHA256 Credential={DOC_SCOPE},SignedHeaders={signed_headers},Signature={seed}"
    )
    return headers, sigs, seed


def _doc_body(sigs: list[str], trailer: bool) -> bytes:
    body = f"10000;chunk-signature={sigs[0]}\r\n".encode() + b"a" * 65536
    body += f"\r\n400;chunk-signature={sigs[1]}\r\n".encode() + b"a" * 1024
    body += f"\r\n0;chunk-signature={sigs[2]}\r\n".encode()
    if trailer:
        body += b"x-amz-checksum-crc32c:sOO8/Q==\r\n"
        body += (
            b"x-amz-trailer-signature:d81f82fc3505edab99d459891051a732e8730629a2e4a59689829ca17fe2e435\r\n"
        )
    return body + b"\r\n"


@pytest.mark.parametrize("trailer", [False, True], ids=["signed", "signed-trailer"])
def test_aws_documented_chunked_upload(trailer: bool) -> None:
    headers, sigs, _ = _doc_request(trailer)
    path = "/examplebucket/chunkObject.txt"
    req = sigv4.parse("PUT", path, "", headers)
    assert req is not None
    key = sigv4.verify(req, "PUT", path, "", headers, DOC_SECRET, DOC_NOW, "s3")
    body = _doc_body(sigs, trailer)
    if not trailer:
        assert len(body) == 66824  # the documented Content-Length
    decoder = decoder_for_request(req, key, headers)
    assert decoder is not None
    data, trailers = feed_all(decoder, body, range(0, len(body), 4093))
    assert data == b"a" * 66560 and decoder.bytes_decoded == 66560
    assert trailers == ({"x-amz-checksum-crc32c": "sOO8/Q=="} if trailer else {})


def test_chunk_signer_matches_the_documented_chain() -> None:
    _, sigs, seed = _doc_request(False)
    key = sigv4.signing_key(DOC_SECRET, "20130524", "us-east-1", "s3")
    signer = ChunkSigner(key, "20130524T000000Z", "20130524/us-east-1/s3/aws4_request", seed)
    first = signer.chunk_signature(seed, hashlib.sha256(b"a" * 65536).hexdigest())
    second = signer.chunk_signature(first, hashlib.sha256(b"a" * 1024).hexdigest())
    assert [first, second, signer.chunk_signature(second, EMPTY)] == sigs


# --------------------------------------------------------------- signed chunks from a botocore seed


@pytest.mark.parametrize(("length", "size"), [(0, 8), (1, 8), (100, 8), (8192, 8192), (20000, 8192)])
def test_signed_chunks_any_split(length: int, size: int) -> None:
    _, req, key = signed_streaming_request(sigv4.STREAMING_SIGNED)
    payload = bytes(random.Random(length).randrange(256) for _ in range(length))
    body = encode_signed(payload, size, key, req.timestamp, req.scope, req.signature)
    for plan in split_plans(body):
        decoder = AwsChunkedDecoder(ChunkSigner.for_request(req, key), trailer_expected=False)
        assert feed_all(decoder, body, plan) == (payload, {})


def test_signed_chunks_with_signed_trailer() -> None:
    wire, req, key = signed_streaming_request(sigv4.STREAMING_SIGNED_TRAILER, trailer="x-amz-checksum-crc32")
    payload = b"0123456789" * 50
    trailers = {"x-amz-checksum-crc32": crc32_b64(payload)}
    body = encode_signed(payload, 64, key, req.timestamp, req.scope, req.signature, trailers)
    for plan in split_plans(body):
        decoder = decoder_for_request(req, key, wire.headers)
        assert decoder is not None
        assert feed_all(decoder, body, plan) == (payload, trailers)


def _signed_setup(trailers: dict[str, str] | None = None) -> tuple[sigv4.SignedRequest, bytes, bytes]:
    literal = sigv4.STREAMING_SIGNED_TRAILER if trailers is not None else sigv4.STREAMING_SIGNED
    _, req, key = signed_streaming_request(literal)
    body = encode_signed(b"x" * 40 + b"y" * 40, 40, key, req.timestamp, req.scope, req.signature, trailers)
    return req, key, body


def _decode(req: sigv4.SignedRequest, key: bytes, body: bytes, trailer: bool = False) -> AwsError:
    decoder = AwsChunkedDecoder(ChunkSigner.for_request(req, key), trailer_expected=trailer)
    with pytest.raises(AwsError) as info:
        decoder.feed(body)
        decoder.finish()
    return info.value


def test_bad_chunk_signatures() -> None:
    req, key, body = _signed_setup()
    sig_at = body.index(b"chunk-signature=") + len(b"chunk-signature=")
    swapped = body.replace(b"x" * 40, b"Q" * 40).replace(b"y" * 40, b"x" * 40).replace(b"Q" * 40, b"y" * 40)
    cases = {
        "flipped data byte": body.replace(b"x" * 40, b"x" * 39 + b"z", 1),
        "zeroed signature": body[:sig_at] + b"0" * 64 + body[sig_at + 64 :],
        "swapped chunks": swapped,
    }
    for name, tampered in cases.items():
        assert tampered != body, name
        error = _decode(req, key, tampered)
        assert (error.code, error.status) == ("SignatureDoesNotMatch", 403), name
    # A wrong seed (e.g. a body replayed under another request's signature) fails the first chunk.
    other = ChunkSigner(key, req.timestamp, req.scope, "f" * 64)
    with pytest.raises(AwsError) as info:
        AwsChunkedDecoder(other, trailer_expected=False).feed(body)
    assert info.value.code == "SignatureDoesNotMatch"


def test_signed_chunk_errors_surface_before_later_data() -> None:
    # The bad chunk is rejected as soon as its CRLF arrives; nothing after it is decoded.
    req, key, body = _signed_setup()
    tampered = body.replace(b"x" * 40, b"x" * 39 + b"z", 1)
    decoder = AwsChunkedDecoder(ChunkSigner.for_request(req, key), trailer_expected=False)
    first_end = tampered.index(b"\r\n", tampered.index(b"\r\n") + 2) + 2
    assert len(decoder.feed(tampered[: first_end - 2])) == 40
    with pytest.raises(AwsError):
        decoder.feed(tampered[first_end - 2 : first_end])


def test_bad_trailer_signatures() -> None:
    trailers = {"x-amz-checksum-crc32": "AAAAAA=="}
    req, key, body = _signed_setup(trailers)
    tampered_value = body.replace(b"AAAAAA==", b"BBBBBB==")
    missing_sig = body[: body.index(b"x-amz-trailer-signature")] + b"\r\n"
    for tampered in (tampered_value, missing_sig):
        error = _decode(req, key, tampered, trailer=True)
        assert (error.code, error.status) == ("SignatureDoesNotMatch", 403)
    # Trailers cannot ride on the no-trailer signed framing, where nothing signs them.
    req, key, body = _signed_setup()
    injected = body[:-2] + b"x-amz-checksum-crc32:AAAAAA==\r\n\r\n"
    assert _decode(req, key, injected).code == "InvalidRequest"


def test_signed_framing_requires_chunk_signature() -> None:
    req, key, _ = _signed_setup()
    assert _decode(req, key, encode_unsigned(b"abc", 8)).code == "InvalidRequest"


# --------------------------------------------------------------------------- unsigned framing


@pytest.mark.parametrize("length", [0, 1, 5, 300])
def test_unsigned_trailer_any_split(length: int) -> None:
    payload = bytes(range(256)) * 2
    payload = payload[:length]
    trailers = {"x-amz-checksum-crc32": crc32_b64(payload)}
    body = encode_unsigned(payload, 7, trailers)
    for plan in split_plans(body):
        decoder = AwsChunkedDecoder(None, trailer_expected=True)
        assert feed_all(decoder, body, plan) == (payload, trailers)


def test_chunk_extensions_and_uppercase_hex_are_accepted_unsigned() -> None:
    body = b"A;name=value\r\n0123456789\r\n0;x=y\r\n\r\n"
    decoder = AwsChunkedDecoder(None, trailer_expected=False)
    assert feed_all(decoder, body, []) == (b"0123456789", {})


def test_trailer_names_are_lowercased_and_values_trimmed() -> None:
    body = b"3\r\nabc\r\n0\r\nX-Amz-Checksum-SHA256:  abc=  \r\n\r\n"
    decoder = AwsChunkedDecoder(None, trailer_expected=True)
    assert feed_all(decoder, body, []) == (b"abc", {"x-amz-checksum-sha256": "abc="})


def test_missing_final_blank_line_is_tolerated() -> None:
    decoder = AwsChunkedDecoder(None, trailer_expected=True)
    assert feed_all(decoder, b"3\r\nabc\r\n0\r\nx-amz-checksum-crc32:NSRBwg==\r\n", []) == (
        b"abc",
        {"x-amz-checksum-crc32": "NSRBwg=="},
    )


def test_declared_trailer_that_never_comes() -> None:
    decoder = AwsChunkedDecoder(None, trailer_expected=True)
    decoder.feed(b"3\r\nabc\r\n0\r\n")
    with pytest.raises(AwsError) as info:
        decoder.feed(b"\r\n")
    assert info.value.code == "IncompleteBody"


# --------------------------------------------------------------------------- truncation and malformed framing


def test_every_truncation_is_incomplete() -> None:
    payload = b"hello, chunked world"
    bodies = {
        "unsigned": (encode_unsigned(payload, 6, {"x-amz-checksum-crc32": crc32_b64(payload)}), None),
    }
    _, req, key = signed_streaming_request(sigv4.STREAMING_SIGNED)
    bodies["signed"] = (encode_signed(payload, 6, key, req.timestamp, req.scope, req.signature), req)
    for name, (body, request) in bodies.items():
        # Everything before the last chunk's header is finished is an early end.
        final_at = body.index(b"\r\n0") + 3
        for cut in range(final_at):
            signer = ChunkSigner.for_request(request, key) if request else None
            decoder = AwsChunkedDecoder(signer, trailer_expected=request is None)
            decoder.feed(body[:cut])
            with pytest.raises(AwsError) as info:
                decoder.finish()
            assert (info.value.code, info.value.status) == ("IncompleteBody", 400), (name, cut)
            assert info.value.message == "The request body terminated unexpectedly"


@pytest.mark.parametrize(
    "body",
    [
        b"zz\r\nab\r\n",  # not hex
        b"+2\r\nab\r\n",  # int() would take it; the grammar does not
        b"0x2\r\nab\r\n",
        b"\r\n",  # empty size
        b"2\nab\r\n",  # bare LF
        b"2\r\nabXY",  # data not followed by CRLF
        b"1" * 5000,  # a header line with no end
        b"2\r\nab\r\n0\r\n\r\nextra",  # bytes after the end
        b"0\r\nno-colon-here\r\n\r\n",
        b"0\r\n\xff:x\r\n\r\n",
    ],
)
def test_malformed_framing(body: bytes) -> None:
    decoder = AwsChunkedDecoder(None, trailer_expected=False)
    with pytest.raises(AwsError) as info:
        decoder.feed(body)
        decoder.finish()
    assert (info.value.code, info.value.status) == ("InvalidRequest", 400)


def test_memory_is_bounded_by_what_was_fed() -> None:
    # One 4 MiB chunk fed in 64 KiB pieces comes straight back out: nothing waits for the chunk end.
    payload = b"\x5a" * (4 << 20)
    body = encode_unsigned(payload, len(payload))
    decoder = AwsChunkedDecoder(None, trailer_expected=False)
    header = body.index(b"\r\n") + 2
    assert decoder.feed(body[:header]) == b""
    step = 64 << 10
    total = 0
    for pos in range(header, header + len(payload), step):
        out = decoder.feed(body[pos : pos + step])
        assert len(out) == step
        total += len(out)
    decoder.feed(body[header + len(payload) :])
    assert total == len(payload) and decoder.finish() == {}


# --------------------------------------------------------------------------- what botocore really sends


@pytest.mark.parametrize(("length", "chunk_size"), [(0, 5), (1, 5), (23, 5), (1000, 64), (70000, 65536)])
def test_botocore_aws_chunked_wrapper_output(length: int, chunk_size: int) -> None:
    payload = bytes(random.Random(length).randrange(256) for _ in range(length))
    wrapper = AwsChunkedWrapper(
        io.BytesIO(payload),
        checksum_cls=Crc32Checksum,
        checksum_name="x-amz-checksum-crc32",
        chunk_size=chunk_size,
    )
    body = wrapper.read()
    for plan in split_plans(body)[:3]:
        decoder = AwsChunkedDecoder(None, trailer_expected=True)
        assert feed_all(decoder, body, plan) == (payload, {"x-amz-checksum-crc32": crc32_b64(payload)})


def test_botocore_wrapper_without_checksum() -> None:
    body = AwsChunkedWrapper(io.BytesIO(b"abcdefgh"), chunk_size=3).read()
    assert body.endswith(b"0\r\n\r\n")
    assert feed_all(AwsChunkedDecoder(None, trailer_expected=False), body, range(len(body))) == (
        b"abcdefgh",
        {},
    )


def test_real_boto3_put_object_over_https() -> None:
    client = boto_client("s3", endpoint="https://127.0.0.1:9")
    sent = capture(client)
    payload = b"".join(i.to_bytes(4, "big") for i in range(50000))
    client.put_object(Bucket="bucket", Key="dir/ü file.bin", Body=payload)
    client.upload_fileobj(io.BytesIO(payload), "bucket", "multi")
    for wire in sent:
        req = wire.parse()
        key = wire.verify("s3")
        assert wire.headers["x-amz-decoded-content-length"] == str(len(payload))
        assert strip_aws_chunked(wire.headers["content-encoding"]) == ""
        decoder = decoder_for_request(req, key, wire.headers)
        assert decoder is not None
        data, trailers = feed_all(decoder, wire.body, range(0, len(wire.body), 8191))
        assert data == payload
        assert trailers == {"x-amz-checksum-crc32": crc32_b64(payload)}


# --------------------------------------------------------------------------- helpers


def test_is_aws_chunked_and_factory() -> None:
    plain = {"content-encoding": "gzip"}
    assert not is_aws_chunked(None, plain)
    assert decoder_for_request(None, None, plain) is None
    assert is_aws_chunked(None, {"content-encoding": "gzip, AWS-Chunked"})
    assert strip_aws_chunked("gzip,aws-chunked") == "gzip"
    _, req, _ = signed_streaming_request(sigv4.STREAMING_SIGNED)
    with pytest.raises(ValueError):
        decoder_for_request(req, None, {})
    unsigned = decoder_for_request(None, None, {"content-encoding": "aws-chunked"})
    assert unsigned is not None and unsigned.feed(b"1\r\nz\r\n0\r\n\r\n") == b"z"
