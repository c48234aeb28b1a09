"""The embedded object store's engine: buckets, objects, listing, multipart, crash safety."""

from __future__ import annotations

import base64
import hashlib
import os
import random
import threading
import time
import tracemalloc
import zlib
from pathlib import Path

import pytest
from sqlalchemy import func, insert, select

import sagestack.db.models  # noqa: F401 - registers every table
from sagestack.aws.errors import AwsError
from sagestack.db.base import Base, Database, utcnow
from sagestack.db.models.objects import S3Object
from sagestack.storage import (
    ChecksumExpectations,
    CompletedPart,
    LocalObjectStore,
    ObjectMeta,
    ObjectStore,
    files,
)
from sagestack.storage import checksums as cks
from sagestack.storage.crc import CRC32, CRC32C, CRC64NVME
from sagestack.storage.names import is_valid_bucket_name
from sagestack.storage.ranges import (
    Condition,
    check_conditions,
    check_copy_source_conditions,
    parse_range_header,
)

MiB = 1024 * 1024
OWNER = "123456789012"


@pytest.fixture
def db(tmp_path: Path) -> Database:
    database = Database(f"sqlite:///{tmp_path}/t.db")
    Base.metadata.create_all(database.engine)
    yield database
    database.dispose()


@pytest.fixture
def store(db: Database, tmp_path: Path) -> LocalObjectStore:
    s = LocalObjectStore(db, tmp_path / "objects")
    s.create_bucket("bkt", "us-east-1", OWNER)
    return s


def put(store: LocalObjectStore, key: str, data: bytes, bucket: str = "bkt", **kw):
    algorithms = kw.pop("algorithms", ())
    meta = kw.pop("meta", ObjectMeta())
    with store.begin_write(algorithms) as w:
        for i in range(0, len(data), 64 * 1024):
            w.write(data[i : i + 64 * 1024])
        return store.put_object(bucket, key, w, meta, kw.pop("expected", None), **kw)


def read(store: LocalObjectStore, key: str, bucket: str = "bkt", **kw) -> bytes:
    return b"".join(store.open_object(bucket, key, **kw).chunks)


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def blob_files(store: LocalObjectStore) -> list[Path]:
    return [p for p in store.blobs.blob_dir.rglob("*") if p.is_file()]


def tmp_files(store: LocalObjectStore) -> list[Path]:
    return list(store.blobs.tmp_dir.iterdir())


def raises(code: str, status: int | None = None):
    class _Ctx:
        def __enter__(self):
            self.cm = pytest.raises(AwsError)
            self.info = self.cm.__enter__()
            return self.info

        def __exit__(self, *exc):
            handled = self.cm.__exit__(*exc)
            assert self.info.value.code == code, self.info.value
            if status is not None:
                assert self.info.value.status == status
            return handled

    return _Ctx()


# ======================================================================================
# checksums
# ======================================================================================
def test_crc_check_values_and_numpy_path_match_the_byte_loop() -> None:
    assert CRC32C.compute(b"123456789") == 0xE3069283
    assert CRC64NVME.compute(b"123456789") == 0xAE8B14860A799888
    rnd = random.Random(7)
    for n in (0, 1, 4095, 4096, 70_001, 300_000):
        data = rnd.randbytes(n)
        assert CRC32.compute(data) == zlib.crc32(data)
        for impl in (CRC32C, CRC64NVME):
            assert impl.compute(data) == impl.finish(impl._raw_bytes(impl.initial(), data))
        a, b = data[: n // 3], data[n // 3 :]
        assert CRC32C.combine(CRC32C.compute(a), CRC32C.compute(b), len(b)) == CRC32C.compute(data)


def test_hashers_stream_like_one_shot() -> None:
    data = os.urandom(3 * MiB + 17)
    for algorithm in cks.ALGORITHMS:
        h1, h2 = cks.new_hasher(algorithm), cks.new_hasher(algorithm)
        h1.update(data)
        for i in range(0, len(data), 100_000):
            h2.update(data[i : i + 100_000])
        assert h1.digest() == h2.digest()
    sha = cks.new_hasher("SHA256")
    sha.update(data)
    assert sha.digest() == hashlib.sha256(data).digest()


# ======================================================================================
# buckets
# ======================================================================================
@pytest.mark.parametrize(
    "name",
    [
        "ab",
        "a" * 64,
        "Upper",
        "under_score",
        "-dash",
        "dash-",
        "two..dots",
        "192.168.5.4",
        "xn--abc",
        "sthree-x",
        "amzn-s3-demo-x",
        "x-s3alias",
        "x--ol-s3",
        "x.mrap",
        "x--x-s3",
        "a b",
    ],
)
def test_invalid_bucket_names(store: LocalObjectStore, name: str) -> None:
    assert not is_valid_bucket_name(name)
    with raises("InvalidBucketName", 400) as exc:
        store.create_bucket(name, "us-east-1", OWNER)
    assert exc.value.message == "The specified bucket is not valid."
    assert exc.value.extra == {"BucketName": name}


@pytest.mark.parametrize("name", ["abc", "a" * 63, "my.bucket-1", "1.2.3", "b1-x.y"])
def test_valid_bucket_names(name: str) -> None:
    assert is_valid_bucket_name(name)


def test_bucket_lifecycle_and_errors(store: LocalObjectStore) -> None:
    with raises("BucketAlreadyOwnedByYou", 409):
        store.create_bucket("bkt", "us-east-1", OWNER)
    with raises("BucketAlreadyExists", 409):
        store.create_bucket("bkt", "us-east-1", "999999999999")
    store.create_bucket("abc", "eu-west-1", OWNER)
    store.create_bucket("zzz", "us-east-1", "999999999999")
    assert [b.name for b in store.list_buckets()] == ["abc", "bkt", "zzz"]
    assert [b.name for b in store.list_buckets(OWNER)] == ["abc", "bkt"]
    assert store.head_bucket("abc").region == "eu-west-1"
    for call in (store.head_bucket, store.get_bucket, store.delete_bucket):
        with raises("NoSuchBucket", 404) as exc:
            call("nope")
        assert exc.value.extra == {"BucketName": "nope"}
    put(store, "k", b"x", bucket="abc")
    with raises("BucketNotEmpty", 409):
        store.delete_bucket("abc")
    store.delete_object("abc", "k")
    store.delete_bucket("abc")
    assert [b.name for b in store.list_buckets()] == ["bkt", "zzz"]


def test_delete_bucket_drops_unfinished_uploads(store: LocalObjectStore) -> None:
    store.create_bucket("tmpb", "us-east-1", OWNER)
    up = store.create_multipart_upload("tmpb", "k", ObjectMeta())
    with store.begin_write() as w:
        w.write(b"part")
        store.upload_part("tmpb", "k", up.upload_id, 1, w)
    assert len(blob_files(store)) == 1
    store.delete_bucket("tmpb")
    assert blob_files(store) == []
    with raises("NoSuchBucket"):
        store.list_multipart_uploads("tmpb")


def test_object_store_protocol(store: LocalObjectStore) -> None:
    assert isinstance(store, ObjectStore)


# ======================================================================================
# objects
# ======================================================================================
def test_put_head_get_roundtrip_with_metadata(store: LocalObjectStore) -> None:
    data = os.urandom(3 * MiB + 5)
    meta = ObjectMeta(
        content_type="text/plain",
        content_encoding="gzip",
        content_disposition="attachment",
        content_language="en",
        cache_control="no-cache",
        expires="Wed, 21 Oct 2015 07:28:00 GMT",
        user={"color": "blue"},
    )
    info = put(store, "dir/file.txt", data, meta=meta)
    assert info.etag == f'"{hashlib.md5(data).hexdigest()}"'
    assert info.size == len(data)
    assert info.last_modified.microsecond == 0
    assert info.last_modified.tzinfo is not None
    head = store.head_object("bkt", "dir/file.txt")
    assert head.meta == meta
    assert head.etag == info.etag
    body = store.open_object("bkt", "dir/file.txt")
    chunks = list(body.chunks)
    assert [len(c) for c in chunks] == [MiB, MiB, MiB, 5]
    assert b"".join(chunks) == data
    assert body.span is None
    assert store.head_object("bkt", "dir/file.txt").meta.content_type == "text/plain"


def test_default_content_type_and_empty_object(store: LocalObjectStore) -> None:
    info = put(store, "empty", b"")
    assert info.meta.content_type == "binary/octet-stream"
    assert info.etag == '"d41d8cd98f00b204e9800998ecf8427e"'
    assert read(store, "empty") == b""


def test_missing_objects(store: LocalObjectStore) -> None:
    with raises("NoSuchKey", 404) as exc:
        store.head_object("bkt", "missing")
    assert exc.value.message == "The specified key does not exist."
    assert exc.value.extra == {"Key": "missing"}
    with raises("NoSuchKey", 404):
        store.open_object("bkt", "missing")
    with raises("NoSuchBucket", 404):
        store.open_object("nobucket", "missing")
    with raises("NoSuchBucket", 404):
        put(store, "k", b"data", bucket="nobucket")
    assert blob_files(store) == [] and tmp_files(store) == []


def test_replace_is_atomic_and_frees_the_old_blob(store: LocalObjectStore) -> None:
    put(store, "k", b"one")
    first_blob = blob_files(store)
    put(store, "k", b"two!")
    assert read(store, "k") == b"two!"
    assert len(blob_files(store)) == 1 and blob_files(store) != first_blob


def test_key_length_limit_counts_utf8_bytes(store: LocalObjectStore) -> None:
    ok = "é" * 512  # 1024 bytes
    put(store, ok, b"x")
    assert read(store, ok) == b"x"
    with raises("KeyTooLongError", 400) as exc:
        put(store, ok + "a", b"x")
    assert exc.value.extra == {"Size": "1025", "MaxSizeAllowed": "1024"}
    assert tmp_files(store) == []


def test_user_metadata_limit(store: LocalObjectStore) -> None:
    with raises("MetadataTooLarge", 400):
        put(store, "k", b"x", meta=ObjectMeta(user={"a": "v" * 2048}))


def test_content_md5(store: LocalObjectStore) -> None:
    data = b"hello world"
    good = b64(hashlib.md5(data).digest())
    put(store, "k", data, expected=ChecksumExpectations(content_md5=good))
    bad = b64(hashlib.md5(b"other").digest())
    with raises("BadDigest", 400) as exc:
        put(store, "k2", data, expected=ChecksumExpectations(content_md5=bad))
    assert exc.value.message == "The Content-MD5 you specified did not match what we received."
    assert exc.value.extra["CalculatedDigest"] == good
    with raises("InvalidDigest", 400) as exc:
        put(store, "k3", data, expected=ChecksumExpectations(content_md5="not-base64!"))
    assert exc.value.message == "The Content-MD5 you specified is not valid."
    with raises("InvalidDigest"):
        ChecksumExpectations(content_md5=b64(b"short")).validate()
    assert [o.key for o in store.list_objects("bkt").contents] == ["k"]
    assert tmp_files(store) == [] and len(blob_files(store)) == 1


def _digest(algorithm: str, data: bytes) -> bytes:
    return {
        "CRC32": zlib.crc32(data).to_bytes(4, "big"),
        "CRC32C": CRC32C.compute(data).to_bytes(4, "big"),
        "CRC64NVME": CRC64NVME.compute(data).to_bytes(8, "big"),
        "SHA1": hashlib.sha1(data).digest(),
        "SHA256": hashlib.sha256(data).digest(),
    }[algorithm]


@pytest.mark.parametrize("algorithm", cks.ALGORITHMS)
@pytest.mark.parametrize("announced", [True, False])
def test_additional_checksums(store: LocalObjectStore, algorithm: str, announced: bool) -> None:
    data = os.urandom(200_000)
    value = b64(_digest(algorithm, data))
    algorithms = [algorithm] if announced else []  # unannounced: recomputed from disk at commit
    info = put(
        store, "k", data, algorithms=algorithms, expected=ChecksumExpectations(checksums={algorithm: value})
    )
    assert info.checksums == {algorithm: value}
    assert info.checksum_type == "FULL_OBJECT"
    assert store.head_object("bkt", "k").checksums == {algorithm: value}
    wrong = b64(_digest(algorithm, b"other"))
    with raises("BadDigest", 400) as exc:
        put(
            store,
            "k",
            data,
            algorithms=algorithms,
            expected=ChecksumExpectations(checksums={algorithm: wrong}),
        )
    assert exc.value.message == f"The {algorithm} you specified did not match the calculated checksum."
    assert read(store, "k") == data  # the failed overwrite left the object alone


def test_checksum_requested_without_value_is_stored(store: LocalObjectStore) -> None:
    info = put(store, "k", b"abc", algorithms=["crc32"])
    assert info.checksums == {"CRC32": b64(zlib.crc32(b"abc").to_bytes(4, "big"))}


def test_malformed_checksum_headers(store: LocalObjectStore) -> None:
    with raises("InvalidRequest") as exc:
        put(store, "k", b"x", expected=ChecksumExpectations(checksums={"CRC32": "AAAA"}))
    assert exc.value.message == "Value for x-amz-checksum-crc32 header is invalid."
    two = {"CRC32": b64(b"\0" * 4), "SHA1": b64(b"\0" * 20)}
    with raises("InvalidRequest"):
        put(store, "k", b"x", expected=ChecksumExpectations(checksums=two))
    with raises("InvalidRequest"):
        store.begin_write(["MD4"])
    assert tmp_files(store) == [] and blob_files(store) == []


def test_incomplete_body_and_too_large(store: LocalObjectStore) -> None:
    with raises("IncompleteBody", 400):
        put(store, "k", b"abc", expected=ChecksumExpectations(size=10))
    w = store.begin_write(max_size=10)
    w.write(b"x" * 10)
    with raises("EntityTooLarge", 400) as exc:
        w.write(b"y")
    assert exc.value.extra == {"ProposedSize": "11", "MaxSizeAllowed": "10"}
    assert tmp_files(store) == []


def test_conditional_writes(store: LocalObjectStore) -> None:
    put(store, "new", b"1", if_none_match="*")
    with raises("PreconditionFailed", 412):
        put(store, "new", b"2", if_none_match="*")
    etag = store.head_object("bkt", "new").etag
    with raises("PreconditionFailed", 412):
        put(store, "new", b"3", if_match='"0000"')
    put(store, "new", b"4", if_match=etag)
    assert read(store, "new") == b"4"
    with raises("NoSuchKey", 404):
        put(store, "absent", b"5", if_match=etag)
    assert len(blob_files(store)) == 1 and tmp_files(store) == []


# ======================================================================================
# ranges and conditions
# ======================================================================================
def test_ranges(store: LocalObjectStore) -> None:
    data = b"hello world"  # 11 bytes
    put(store, "k", data)
    cases = {
        (0, 4): b"hello",
        (6, None): b"world",
        (None, 5): b"world",
        (None, 100): data,
        (5, 1000): b" world",
        (10, 10): b"d",
    }
    for spec, want in cases.items():
        body = store.open_object("bkt", "k", spec)
        assert b"".join(body.chunks) == want, spec
        assert body.span[1] - body.span[0] + 1 == len(want)
    for spec in [(11, None), (11, 20), (None, 0)]:
        with raises("InvalidRange", 416) as exc:
            store.open_object("bkt", "k", spec)
        assert exc.value.message == "The requested range is not satisfiable"
        assert exc.value.extra["ActualObjectSize"] == "11"
    put(store, "empty", b"")
    with raises("InvalidRange", 416):
        store.open_object("bkt", "empty", (0, None))
    with raises("InvalidRequest"):
        store.open_object("bkt", "k", (0, 1), part_number=1)


def test_range_header_parsing() -> None:
    assert parse_range_header("bytes=0-4") == (0, 4)
    assert parse_range_header("bytes=5-") == (5, None)
    assert parse_range_header("bytes=-5") == (None, 5)
    # S3 ignores what it cannot use and serves the whole object.
    for bad in [None, "", "bytes=-", "bytes=5-3", "items=0-1", "bytes=0-1,3-4", "bytes=a-b"]:
        assert parse_range_header(bad) is None


def test_conditions() -> None:
    etag, lm = '"abc"', utcnow().replace(microsecond=0)
    from datetime import timedelta

    earlier, later = lm - timedelta(hours=1), lm + timedelta(hours=1)
    assert check_conditions(etag, lm) is Condition.OK
    assert check_conditions(etag, lm, if_match='"abc"') is Condition.OK
    assert check_conditions(etag, lm, if_match="*") is Condition.OK
    with raises("PreconditionFailed", 412):
        check_conditions(etag, lm, if_match='"zzz"')
    with raises("PreconditionFailed", 412):
        check_conditions(etag, lm, if_unmodified_since=earlier)
    # A passing If-Match wins over a failing If-Unmodified-Since.
    assert check_conditions(etag, lm, if_match="abc", if_unmodified_since=earlier) is Condition.OK
    assert check_conditions(etag, lm, if_none_match='"abc"') is Condition.NOT_MODIFIED
    assert check_conditions(etag, lm, if_modified_since=later) is Condition.NOT_MODIFIED
    assert check_conditions(etag, lm, if_modified_since=earlier) is Condition.OK
    assert check_conditions(etag, lm, if_none_match='"x"', if_modified_since=later) is Condition.OK
    with raises("PreconditionFailed", 412):
        check_copy_source_conditions(etag, lm, if_none_match='"abc"')


# ======================================================================================
# deleting and copying
# ======================================================================================
def test_delete_object_and_delete_objects(store: LocalObjectStore) -> None:
    for k in ["a", "b", "c"]:
        put(store, k, k.encode())
    store.delete_object("bkt", "a")
    store.delete_object("bkt", "never-existed")  # S3 answers 204 for a missing key
    with raises("NoSuchBucket"):
        store.delete_object("nobucket", "a")
    results = store.delete_objects("bkt", ["b", "missing", "x" * 1025])
    assert [r.key for r in results] == ["b", "missing", "x" * 1025]
    assert results[0].error is None and results[1].error is None
    assert results[2].error is not None and results[2].error.code == "KeyTooLongError"
    assert [o.key for o in store.list_objects("bkt").contents] == ["c"]
    assert len(blob_files(store)) == 1
    with raises("MalformedXML", 400):
        store.delete_objects("bkt", ["k"] * 1001)


def test_copy_object(store: LocalObjectStore) -> None:
    meta = ObjectMeta(content_type="text/plain", user={"a": "1"})
    src = put(store, "src", b"payload", meta=meta, algorithms=["CRC32"])
    copy = store.copy_object("bkt", "src", "bkt", "dst")
    assert copy.etag == src.etag and copy.meta == meta and copy.checksums == src.checksums
    # A single-part copy is a hard link: no bytes were copied.
    assert os.stat(copy.blob_path).st_ino == os.stat(src.blob_path).st_ino
    replaced = store.copy_object("bkt", "src", "bkt", "dst2", ObjectMeta(user={"b": "2"}))
    assert replaced.meta.user == {"b": "2"} and replaced.meta.content_type == "binary/octet-stream"
    with raises("InvalidRequest", 400) as exc:
        store.copy_object("bkt", "src", "bkt", "src")
    assert "copy an object to itself" in exc.value.message
    onto_itself = store.copy_object("bkt", "src", "bkt", "src", ObjectMeta(content_type="a/b"))
    assert onto_itself.meta.content_type == "a/b"
    assert read(store, "src") == b"payload"
    store.delete_object("bkt", "src")
    assert read(store, "dst") == b"payload"  # the link survives the source's deletion
    with raises("NoSuchKey", 404):
        store.copy_object("bkt", "src", "bkt", "x")
    with raises("NoSuchBucket", 404):
        store.copy_object("bkt", "dst", "nobucket", "x")
    assert len(blob_files(store)) == 2  # dst and dst2


# ======================================================================================
# listing
# ======================================================================================
TRICKY_KEYS = [
    "a",
    "a b",
    "a+b",
    "a%2Fb",
    "a/b",
    "a//b",
    "a/b/c",
    "a/b/d",
    "a/c",
    "a/é",
    "a/z",
    "ab",
    "b",
    "b/",
    "b//",
    "b//x",
    "photos/2024/jan.jpg",
    "photos/2024/feb.jpg",
    "photos/2025/x",
    "photos/index",
    "z",
    "é",
    "日本/語",
    "日本語",
    "\U0001f600/smile",
    "\ufb01",
    " lead",
    "~tilde",
]


def reference_list(keys, prefix="", delimiter=None, marker=None, max_keys=1000):
    """S3 listing semantics, the slow obvious way, to check the engine against."""
    entries: list[tuple[str, bool]] = []
    for key in sorted(keys, key=lambda k: k.encode()):
        if not key.startswith(prefix):
            continue
        entry = (key, False)
        if delimiter:
            i = key.find(delimiter, len(prefix))
            if i >= 0:
                entry = (key[: i + len(delimiter)], True)
        if marker is not None and entry[0].encode() <= marker.encode():
            continue
        if entries and entries[-1] == entry:
            continue
        entries.append(entry)
    page = entries[:max_keys]
    contents = [e for e, cp in page if not cp]
    prefixes = [e for e, cp in page if cp]
    truncated = len(entries) > max_keys
    return contents, prefixes, truncated, (page[-1][0] if truncated else None)


def engine_list(store, **kw):
    r = store.list_objects("bkt", **kw)
    return [o.key for o in r.contents], r.common_prefixes, r.is_truncated, r.next_marker


@pytest.fixture(scope="module")
def tricky(tmp_path_factory: pytest.TempPathFactory) -> LocalObjectStore:
    """One read-only store with TRICKY_KEYS, shared by the listing tests (puts fsync: slow-ish)."""
    root = tmp_path_factory.mktemp("tricky")
    database = Database(f"sqlite:///{root}/t.db")
    Base.metadata.create_all(database.engine)
    s = LocalObjectStore(database, root / "objects")
    s.create_bucket("bkt", "us-east-1", OWNER)
    for key in TRICKY_KEYS:
        put(s, key, key.encode())
    yield s
    database.dispose()


def test_listing_is_in_utf8_byte_order(tricky: LocalObjectStore) -> None:
    keys = [o.key for o in tricky.list_objects("bkt").contents]
    assert keys == sorted(TRICKY_KEYS, key=lambda k: k.encode("utf-8"))
    # U+FB01 sorts before U+1F600 in UTF-8 (and code points), but after it in UTF-16.
    assert keys.index("\ufb01") < keys.index("\U0001f600/smile")
    info = next(o for o in tricky.list_objects("bkt", prefix="a/é").contents)
    assert info.size == len("a/é".encode()) and info.etag.startswith('"')


@pytest.mark.parametrize("prefix", ["", "a", "a/", "b/", "photos/", "photos/2024/", "日本", "zz"])
@pytest.mark.parametrize("delimiter", [None, "/", "//", "b"])
def test_listing_matches_reference(tricky: LocalObjectStore, prefix: str, delimiter: str | None) -> None:
    assert engine_list(tricky, prefix=prefix, delimiter=delimiter) == reference_list(
        TRICKY_KEYS, prefix, delimiter
    )
    for marker in ["a/", "a/b", "b/", "photos/2024/", "photos/2024/jan.jpg", "é"]:
        got = engine_list(tricky, prefix=prefix, delimiter=delimiter, marker=marker)
        assert got == reference_list(TRICKY_KEYS, prefix, delimiter, marker), marker


@pytest.mark.parametrize("delimiter", [None, "/"])
@pytest.mark.parametrize("page", [1, 2, 3, 7])
def test_listing_pagination_walks_everything_once(
    tricky: LocalObjectStore, delimiter: str | None, page: int
) -> None:
    full = reference_list(TRICKY_KEYS, "", delimiter)
    keys, prefixes, marker = [], [], None
    while True:
        got = engine_list(tricky, delimiter=delimiter, marker=marker, max_keys=page)
        assert got == reference_list(TRICKY_KEYS, "", delimiter, marker, page)
        keys += got[0]
        prefixes += got[1]
        if not got[2]:
            break
        marker = got[3]
    assert (keys, prefixes) == (full[0], full[1])


def test_listing_edge_cases(tricky: LocalObjectStore) -> None:
    assert tricky.list_objects("bkt", max_keys=0) == ([], [], False, None)
    r = tricky.list_objects("bkt", max_keys=5000)
    assert len(r.contents) == len(TRICKY_KEYS) and not r.is_truncated
    assert tricky.list_objects("bkt", prefix="nothing/").contents == []
    with raises("NoSuchBucket"):
        tricky.list_objects("nobucket")


def _bulk_insert(store: LocalObjectStore, keys: list[str]) -> None:
    """Rows only (listing never touches blobs): fast setup for big listings."""
    now = utcnow().replace(microsecond=0)
    with store.db.transaction() as s:
        bucket_id = s.scalar(select(func.min(S3Object.bucket_id))) or 1
        s.execute(
            insert(S3Object),
            [
                {
                    "bucket_id": bucket_id,
                    "key": k.encode(),
                    "size": 1,
                    "etag": "0" * 32,
                    "last_modified": now,
                    "blob": f"00/{i:032x}",
                    "checksums": {},
                    "user_meta": {},
                }
                for i, k in enumerate(keys)
            ],
        )


def test_listing_speed_over_20k_keys(store: LocalObjectStore) -> None:
    # 200 "directories" x 100 files: a delimiter listing must seek over each, not read 20k rows.
    keys = [f"data/part-{d:03d}/file-{f:03d}.csv" for d in range(200) for f in range(100)]
    _bulk_insert(store, keys)
    t0 = time.perf_counter()
    r = store.list_objects("bkt", prefix="data/", delimiter="/")
    t_delim = time.perf_counter() - t0
    assert r.common_prefixes == [f"data/part-{d:03d}/" for d in range(200)] and not r.is_truncated
    r = store.list_objects("bkt", prefix="data/part-150/", delimiter="/")
    assert len(r.contents) == 100
    t0 = time.perf_counter()
    marker, count = None, 0
    while True:
        page = store.list_objects("bkt", marker=marker)
        count += len(page.contents)
        if not page.is_truncated:
            break
        marker = page.next_marker
    t_full = time.perf_counter() - t0
    assert count == 20_000
    print(
        f"\n20k keys: delimiter listing {t_delim * 1000:.1f} ms, full paginated walk {t_full * 1000:.0f} ms"
    )
    assert t_delim < 5 and t_full < 30  # generous: catches only pathological regressions


# ======================================================================================
# multipart uploads
# ======================================================================================
def upload_part(store, up, number, data, key="mp", **kw):
    with store.begin_write(kw.pop("algorithms", ())) as w:
        w.write(data)
        return store.upload_part("bkt", key, up.upload_id, number, w, kw.pop("expected", None))


def test_multipart_etag_and_assembly(store: LocalObjectStore) -> None:
    up = store.create_multipart_upload("bkt", "mp", ObjectMeta(content_type="text/csv", user={"m": "1"}))
    parts_data = [os.urandom(5 * MiB), os.urandom(5 * MiB + 3), b"tail"]
    parts = [upload_part(store, up, i + 1, d) for i, d in enumerate(parts_data)]
    for p, d in zip(parts, parts_data, strict=True):
        assert p.etag == f'"{hashlib.md5(d).hexdigest()}"' and p.size == len(d)
    info = store.complete_multipart_upload(
        "bkt", "mp", up.upload_id, [CompletedPart(p.part_number, p.etag) for p in parts]
    )
    md5_of_md5s = hashlib.md5(b"".join(hashlib.md5(d).digest() for d in parts_data)).hexdigest()
    assert info.etag == f'"{md5_of_md5s}-3"'
    assert info.size == sum(map(len, parts_data)) and info.parts_count == 3
    assert info.meta.content_type == "text/csv" and info.meta.user == {"m": "1"}
    assert read(store, "mp") == b"".join(parts_data)
    assert read(store, "mp", part_number=3) == b"tail"
    assert read(store, "mp", part_number=2) == parts_data[1]
    with raises("InvalidPartNumber", 416):
        store.open_object("bkt", "mp", part_number=4)
    # Completion moves no bytes: the object is its three part blobs, not a copy of them.
    assert len(blob_files(store)) == 3 and info.blob_path is None
    with raises("NoSuchUpload", 404):
        store.complete_multipart_upload("bkt", "mp", up.upload_id, [CompletedPart(1, parts[0].etag)])


def test_multipart_part_reupload_and_subset(store: LocalObjectStore) -> None:
    up = store.create_multipart_upload("bkt", "mp", ObjectMeta())
    upload_part(store, up, 1, b"a" * (5 * MiB))
    p1 = upload_part(store, up, 1, b"b" * (5 * MiB))  # replaces part 1
    upload_part(store, up, 2, b"unused")
    p3 = upload_part(store, up, 3, b"end")
    assert len(blob_files(store)) == 3
    listed = store.list_parts("bkt", "mp", up.upload_id)
    assert [p.part_number for p in listed.parts] == [1, 2, 3] and listed.parts[0].etag == p1.etag
    store.complete_multipart_upload(
        "bkt", "mp", up.upload_id, [CompletedPart(1, p1.etag), CompletedPart(3, p3.etag)]
    )
    assert read(store, "mp") == b"b" * (5 * MiB) + b"end"
    assert len(blob_files(store)) == 2  # the replaced part 1 and the unlisted part 2 are gone


def test_multipart_errors(store: LocalObjectStore) -> None:
    with raises("NoSuchBucket"):
        store.create_multipart_upload("nobucket", "mp", ObjectMeta())
    up = store.create_multipart_upload("bkt", "mp", ObjectMeta())
    small = upload_part(store, up, 1, b"x" * 100)
    big = upload_part(store, up, 2, b"y" * (5 * MiB))
    for bad in (0, 10001):
        with raises("InvalidArgument", 400) as exc:
            upload_part(store, up, bad, b"z")
        assert exc.value.message == "Part number must be an integer between 1 and 10000, inclusive"
        assert exc.value.extra == {"ArgumentName": "partNumber", "ArgumentValue": str(bad)}
    with raises("InvalidPartOrder", 400):
        store.complete_multipart_upload(
            "bkt", "mp", up.upload_id, [CompletedPart(2, big.etag), CompletedPart(1, small.etag)]
        )
    with raises("InvalidPartOrder", 400):
        store.complete_multipart_upload(
            "bkt", "mp", up.upload_id, [CompletedPart(1, small.etag), CompletedPart(1, small.etag)]
        )
    with raises("InvalidPart", 400) as exc:
        store.complete_multipart_upload("bkt", "mp", up.upload_id, [CompletedPart(1, '"deadbeef"')])
    assert exc.value.extra["PartNumber"] == "1" and exc.value.extra["UploadId"] == up.upload_id
    with raises("InvalidPart", 400):
        store.complete_multipart_upload(
            "bkt", "mp", up.upload_id, [CompletedPart(1, small.etag), CompletedPart(7, big.etag)]
        )
    with raises("EntityTooSmall", 400) as exc:
        store.complete_multipart_upload(
            "bkt", "mp", up.upload_id, [CompletedPart(1, small.etag), CompletedPart(2, big.etag)]
        )
    assert exc.value.message == "Your proposed upload is smaller than the minimum allowed size"
    assert exc.value.extra["ProposedSize"] == "100" and exc.value.extra["MinSizeAllowed"] == str(5 * MiB)
    with raises("MalformedXML"):
        store.complete_multipart_upload("bkt", "mp", up.upload_id, [])
    # A single small last part is fine; unquoted ETags are accepted as in S3.
    info = store.complete_multipart_upload(
        "bkt", "mp", up.upload_id, [CompletedPart(1, small.etag.strip('"'))]
    )
    assert info.size == 100
    for call in (
        lambda: store.get_upload("bkt", "mp", up.upload_id),
        lambda: upload_part(store, up, 3, b"late"),
        lambda: store.abort_multipart_upload("bkt", "mp", up.upload_id),
        lambda: store.list_parts("bkt", "mp", up.upload_id),
        lambda: store.get_upload("bkt", "mp", "bogus"),
    ):
        with raises("NoSuchUpload", 404):
            call()
    up2 = store.create_multipart_upload("bkt", "mp2", ObjectMeta())
    with raises("NoSuchUpload"):  # an upload id only works with its own key
        store.get_upload("bkt", "other", up2.upload_id)
    assert tmp_files(store) == [] and len(blob_files(store)) == 1


def test_abort_multipart_upload(store: LocalObjectStore) -> None:
    up = store.create_multipart_upload("bkt", "mp", ObjectMeta())
    upload_part(store, up, 1, b"data")
    store.abort_multipart_upload("bkt", "mp", up.upload_id)
    assert blob_files(store) == []
    with raises("NoSuchUpload"):
        store.abort_multipart_upload("bkt", "mp", up.upload_id)
    with raises("NoSuchKey"):
        store.head_object("bkt", "mp")


def test_multipart_composite_and_full_object_checksums(store: LocalObjectStore) -> None:
    data = [os.urandom(5 * MiB), b"rest of it"]
    up = store.create_multipart_upload("bkt", "c", ObjectMeta(), checksum_algorithm="SHA256")
    assert up.checksum_type == "COMPOSITE"
    parts = [upload_part(store, up, i + 1, d, key="c") for i, d in enumerate(data)]
    sha_parts = [hashlib.sha256(d).digest() for d in data]
    assert [p.checksums["SHA256"] for p in parts] == [b64(s) for s in sha_parts]
    with raises("InvalidRequest") as exc:
        store.complete_multipart_upload(
            "bkt", "c", up.upload_id, [CompletedPart(1, parts[0].etag), CompletedPart(2, parts[1].etag)]
        )
    assert "missing for part 1" in exc.value.message
    done = [CompletedPart(p.part_number, p.etag, p.checksums) for p in parts]
    info = store.complete_multipart_upload("bkt", "c", up.upload_id, done)
    assert info.checksums == {"SHA256": f"{b64(hashlib.sha256(b''.join(sha_parts)).digest())}-2"}
    assert info.checksum_type == "COMPOSITE"

    up = store.create_multipart_upload(
        "bkt", "f", ObjectMeta(), checksum_algorithm="CRC32", checksum_type="FULL_OBJECT"
    )
    parts = [upload_part(store, up, i + 1, d, key="f") for i, d in enumerate(data)]
    whole = b64(zlib.crc32(b"".join(data)).to_bytes(4, "big"))
    with raises("BadDigest"):
        store.complete_multipart_upload(
            "bkt",
            "f",
            up.upload_id,
            [CompletedPart(p.part_number, p.etag) for p in parts],
            ChecksumExpectations(checksums={"CRC32": b64(b"\0\0\0\1")}),
        )
    info = store.complete_multipart_upload(
        "bkt",
        "f",
        up.upload_id,
        [CompletedPart(p.part_number, p.etag) for p in parts],
        ChecksumExpectations(checksums={"CRC32": whole}),
    )
    assert info.checksums == {"CRC32": whole} and info.checksum_type == "FULL_OBJECT"

    with raises("InvalidRequest"):
        store.create_multipart_upload(
            "bkt", "x", ObjectMeta(), checksum_algorithm="SHA1", checksum_type="FULL_OBJECT"
        )
    with raises("InvalidRequest"):
        store.create_multipart_upload("bkt", "x", ObjectMeta(), checksum_type="COMPOSITE")
    up = store.create_multipart_upload("bkt", "x", ObjectMeta(), checksum_algorithm="CRC32")
    with raises("InvalidRequest"):  # a part's checksum must use the upload's algorithm
        upload_part(
            store,
            up,
            1,
            b"abc",
            key="x",
            expected=ChecksumExpectations(checksums={"SHA1": b64(hashlib.sha1(b"abc").digest())}),
        )


def test_upload_part_copy(store: LocalObjectStore) -> None:
    source = os.urandom(6 * MiB)
    put(store, "src", source)
    up = store.create_multipart_upload("bkt", "mp", ObjectMeta())
    p1 = store.upload_part_copy("bkt", "mp", up.upload_id, 1, "bkt", "src", f"bytes=0-{5 * MiB - 1}")
    p2 = store.upload_part_copy("bkt", "mp", up.upload_id, 2, "bkt", "src")
    p3 = store.upload_part_copy("bkt", "mp", up.upload_id, 3, "bkt", "src", f"bytes={5 * MiB}-{6 * MiB - 1}")
    assert p1.etag == f'"{hashlib.md5(source[: 5 * MiB]).hexdigest()}"'
    with raises("InvalidArgument", 400) as exc:
        store.upload_part_copy("bkt", "mp", up.upload_id, 4, "bkt", "src", "0-10")
    assert exc.value.extra["ArgumentName"] == "x-amz-copy-source-range"
    with raises("InvalidArgument", 400) as exc:
        store.upload_part_copy("bkt", "mp", up.upload_id, 4, "bkt", "src", f"bytes=0-{6 * MiB}")
    assert exc.value.message == f"Range specified is not valid for source object of size: {6 * MiB}"
    with raises("NoSuchKey"):
        store.upload_part_copy("bkt", "mp", up.upload_id, 4, "bkt", "nope")
    store.complete_multipart_upload(
        "bkt", "mp", up.upload_id, [CompletedPart(n, p.etag) for n, p in enumerate([p1, p2, p3], 1)]
    )
    assert read(store, "mp") == source[: 5 * MiB] + source + source[5 * MiB :]


def test_copy_of_multipart_object_gets_plain_md5(store: LocalObjectStore) -> None:
    up = store.create_multipart_upload("bkt", "mp", ObjectMeta())
    p = upload_part(store, up, 1, b"abc")
    store.complete_multipart_upload("bkt", "mp", up.upload_id, [CompletedPart(1, p.etag)])
    copy = store.copy_object("bkt", "mp", "bkt", "copy")
    assert copy.etag == f'"{hashlib.md5(b"abc").hexdigest()}"' and copy.parts_count is None


def _completed_multipart(store: LocalObjectStore, key: str, chunks: list[bytes]):
    up = store.create_multipart_upload("bkt", key, ObjectMeta())
    parts = [upload_part(store, up, i + 1, d, key=key) for i, d in enumerate(chunks)]
    return store.complete_multipart_upload(
        "bkt", key, up.upload_id, [CompletedPart(p.part_number, p.etag) for p in parts]
    )


def test_multipart_object_ranges_span_parts(store: LocalObjectStore) -> None:
    chunks = [os.urandom(5 * MiB), os.urandom(5 * MiB + 17), os.urandom(1000)]
    whole = b"".join(chunks)
    _completed_multipart(store, "mp", chunks)
    for first, last in [(0, 0), (5 * MiB - 3, 5 * MiB + 2), (MiB, 10 * MiB + 500), (len(whole) - 1, len(whole) - 1)]:
        got = read(store, "mp", byte_range=parse_range_header(f"bytes={first}-{last}"))
        assert got == whole[first : last + 1], (first, last)
    assert read(store, "mp", byte_range=parse_range_header("bytes=-1500")) == whole[-1500:]
    body = store.open_object("bkt", "mp", byte_range=parse_range_header("bytes=10-20"))
    body.chunks.close()  # an unconsumed reader closes its files


def test_multipart_object_delete_replace_and_copy_free_parts(store: LocalObjectStore, tmp_path: Path) -> None:
    chunks = [os.urandom(5 * MiB), b"end"]
    _completed_multipart(store, "a", chunks)
    _completed_multipart(store, "b", chunks)
    assert len(blob_files(store)) == 4
    copy = store.copy_object("bkt", "a", "bkt", "c")  # streamed into one plain blob
    assert copy.etag == f'"{hashlib.md5(b"".join(chunks)).hexdigest()}"' and copy.blob_path is not None
    assert read(store, "c") == b"".join(chunks) and len(blob_files(store)) == 5
    store.copy_object("bkt", "a", "bkt", "a", ObjectMeta(content_type="x/y"))  # in place: becomes plain
    assert read(store, "a") == b"".join(chunks) and len(blob_files(store)) == 4
    put(store, "b", b"small")  # replacing a multipart object unlinks all its parts
    assert len(blob_files(store)) == 3
    _completed_multipart(store, "d", chunks)
    store.delete_objects("bkt", ["d", "c"])
    store.delete_object("bkt", "a")
    assert len(blob_files(store)) == 1
    _completed_multipart(store, "e", chunks)
    dest = tmp_path / "fetched" / "e"
    files.fetch(store, store.head_object("bkt", "e"), dest)  # no blob to link: streamed
    assert dest.read_bytes() == b"".join(chunks)


def test_multipart_object_parts_survive_recovery(store: LocalObjectStore) -> None:
    chunks = [os.urandom(5 * MiB), b"end"]
    _completed_multipart(store, "mp", chunks)
    assert store.recover() == (0, 0)
    assert read(store, "mp") == b"".join(chunks)


def test_failed_completion_leaves_parts_with_the_upload(store: LocalObjectStore) -> None:
    put(store, "mp", b"exists")
    up = store.create_multipart_upload("bkt", "mp", ObjectMeta())
    p = upload_part(store, up, 1, b"abc")
    with raises("PreconditionFailed"):
        store.complete_multipart_upload("bkt", "mp", up.upload_id, [CompletedPart(1, p.etag)], if_none_match="*")
    info = store.complete_multipart_upload("bkt", "mp", up.upload_id, [CompletedPart(1, p.etag)])
    assert read(store, "mp") == b"abc" and info.parts_count == 1 and len(blob_files(store)) == 1


def test_list_multipart_uploads(store: LocalObjectStore) -> None:
    ups = [store.create_multipart_upload("bkt", k, ObjectMeta()) for k in ["b", "a/1", "a/2", "b", "c"]]
    page = store.list_multipart_uploads("bkt")
    assert [(u.key, u.upload_id) for u in page.uploads] == [
        ("a/1", ups[1].upload_id),
        ("a/2", ups[2].upload_id),
        ("b", ups[0].upload_id),
        ("b", ups[3].upload_id),
        ("c", ups[4].upload_id),
    ]
    page = store.list_multipart_uploads("bkt", delimiter="/")
    assert page.common_prefixes == ["a/"] and [u.key for u in page.uploads] == ["b", "b", "c"]
    page = store.list_multipart_uploads("bkt", max_uploads=3)
    assert page.is_truncated and (page.next_key_marker, page.next_upload_id_marker) == ("b", ups[0].upload_id)
    page = store.list_multipart_uploads("bkt", key_marker="b", upload_id_marker=ups[0].upload_id)
    assert [u.upload_id for u in page.uploads] == [ups[3].upload_id, ups[4].upload_id]
    page = store.list_multipart_uploads("bkt", key_marker="b")
    assert [u.key for u in page.uploads] == ["c"]
    assert [u.key for u in store.list_multipart_uploads("bkt", prefix="a/").uploads] == ["a/1", "a/2"]


def test_list_parts_pagination(store: LocalObjectStore) -> None:
    up = store.create_multipart_upload("bkt", "mp", ObjectMeta())
    for n in (1, 2, 5, 9):
        upload_part(store, up, n, b"p")
    page = store.list_parts("bkt", "mp", up.upload_id, max_parts=2)
    assert [p.part_number for p in page.parts] == [1, 2] and page.is_truncated
    page = store.list_parts("bkt", "mp", up.upload_id, part_number_marker=page.next_part_number_marker)
    assert [p.part_number for p in page.parts] == [5, 9] and not page.is_truncated


# ======================================================================================
# crash safety and concurrency
# ======================================================================================
def test_aborted_or_failed_writes_leave_nothing(store: LocalObjectStore) -> None:
    w = store.begin_write()
    w.write(b"partial")
    assert len(tmp_files(store)) == 1
    with raises("NoSuchKey"):
        store.head_object("bkt", "k")
    w.abort()
    assert tmp_files(store) == []
    with pytest.raises(RuntimeError), store.begin_write() as w2:
        w2.write(b"x")
        raise RuntimeError("client disconnected")
    assert tmp_files(store) == [] and blob_files(store) == []


def test_recover_removes_orphans_but_keeps_committed_blobs(store: LocalObjectStore) -> None:
    put(store, "kept", b"kept")
    up = store.create_multipart_upload("bkt", "mp", ObjectMeta())
    upload_part(store, up, 1, b"part")
    # A crash mid-upload: a temp file nobody will finish.
    stale = store.begin_write()
    stale.write(b"half a body")
    # A crash between rename and commit: a published blob with no row.
    orphan = store.begin_write()
    orphan.write(b"never committed")
    orphan_name, _ = store.blobs.publish_writer(orphan)
    assert store.blobs.path(orphan_name).exists()
    assert store.recover(grace_seconds=3600) == (0, 0)  # too young to be judged orphans
    report = store.recover()
    assert (report.temp_files_removed, report.orphan_blobs_removed) == (1, 1)
    assert not store.blobs.path(orphan_name).exists() and tmp_files(store) == []
    assert read(store, "kept") == b"kept"
    assert len(store.list_parts("bkt", "mp", up.upload_id).parts) == 1
    assert len(blob_files(store)) == 2


def test_concurrent_writers(store: LocalObjectStore) -> None:
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        try:
            for i in range(15):
                put(store, f"shared/{i % 3}", f"{n}-{i}".encode() * 1000)
                put(store, f"own/{n}/{i}", os.urandom(10_000))
                read(store, f"shared/{i % 3}")
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    listing = store.list_objects("bkt")
    assert len(listing.contents) == 3 + 6 * 15
    assert len(blob_files(store)) == len(listing.contents)  # every replaced blob was freed
    assert tmp_files(store) == []


def test_streaming_200mib_in_bounded_memory(store: LocalObjectStore) -> None:
    chunk = os.urandom(MiB)
    md5 = hashlib.md5()
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        with store.begin_write(["CRC32"]) as w:
            for _ in range(200):
                w.write(chunk)
                md5.update(chunk)
            info = store.put_object("bkt", "big", w, ObjectMeta())
        _, write_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        readback = hashlib.md5()
        size = 0
        for piece in store.open_object("bkt", "big").chunks:
            readback.update(piece)
            size += len(piece)
        _, read_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert info.size == size == 200 * MiB
    assert info.etag == f'"{md5.hexdigest()}"' and readback.hexdigest() == md5.hexdigest()
    assert write_peak < 8 * MiB, write_peak
    assert read_peak < 8 * MiB, read_peak
