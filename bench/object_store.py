"""Object store benchmark: the S3 data path of a real server, against ``cp`` on the same disk.

Everything runs in one temporary directory (``--dir``, default: the system temp dir), so the
source file, the ``cp`` copy and the server's data dir share a disk:

1. 1 GiB PUT and GET throughput, next to ``cp`` of the same file (best of 3, page cache warm).
   ``cp`` does not fsync; the server fsyncs every object before acknowledging it, so ``cp`` +
   fsync of the copy is printed too. Two clients are measured:
   - boto3 ``upload_file`` / ``download_file`` (multipart: 8 MiB parts, 10 threads; ranged GETs), and
   - a lean streaming client: one presigned PUT sent with ``socket.sendfile``, one GET read into a
     reused 1 MiB buffer.
2. Peak server RSS during the 1 GiB uploads (psutil, sampled every 10 ms).
3. 4 KiB PUT and GET operations per second (boto3, 8 threads, one client each).
4. ListObjectsV2 with prefix + delimiter over 100,000 keys. The keys are created through the
   storage engine in-process (``LocalObjectStore.put_object``, 32 threads) in the server's data
   dir before the server starts, which is faster than 100,000 HTTP PUTs and stores the same rows.

Usage: ``python bench/object_store.py [--size-mib 1024] [--keys 100000] [--small-ops 2000]``
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from sagestack.testing.server_process import ServerProcess

MiB = 1024 * 1024
BUCKET = "bench-objects"
LIST_BUCKET = "bench-listing"
DIRECTORIES = 100  # keys are spread over data/00/ .. data/99/


# ---------------------------------------------------------------- helpers


class RssSampler:
    """Peak RSS of a process while the block runs."""

    def __init__(self, pid: int) -> None:
        self._proc = psutil.Process(pid)
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._proc.memory_info().rss)
            time.sleep(0.01)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def make_file(path: Path, size: int) -> None:
    block = os.urandom(64 * MiB)
    with open(path, "wb") as handle:
        written, n = 0, 0
        while written < size:
            piece = (n.to_bytes(8, "big") + block[8:])[: size - written]  # every 64 MiB distinct
            handle.write(piece)
            written += len(piece)
            n += 1


def md5_of(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        while chunk := handle.read(4 * MiB):
            digest.update(chunk)
    return digest.hexdigest()


def best_of(runs: int, func: Callable[[], Any]) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        func()
        times.append(time.perf_counter() - started)
    return min(times)


def cp_times(src: Path, dst: Path) -> tuple[float, float]:
    def plain() -> None:
        subprocess.run(["cp", str(src), str(dst)], check=True)

    def durable() -> None:
        plain()
        fd = os.open(dst, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    result = best_of(3, plain), best_of(3, durable)
    dst.unlink()
    return result


def mbps(size: int, seconds: float) -> float:
    return size / MiB / seconds


# ---------------------------------------------------------------- lean client


def lean_put(url: str, path: Path) -> None:
    """One PUT to a presigned URL, the file handed to the kernel with sendfile."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=600)
    try:
        conn.putrequest("PUT", f"{parts.path}?{parts.query}", skip_accept_encoding=True)
        conn.putheader("Content-Length", str(path.stat().st_size))
        conn.endheaders()
        with open(path, "rb") as handle:
            assert conn.sock is not None
            conn.sock.sendfile(handle)
        response = conn.getresponse()
        response.read()
        if response.status != 200:
            raise RuntimeError(f"PUT failed: {response.status}")
    finally:
        conn.close()


def lean_get(url: str, path: Path) -> None:
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=600)
    buffer = bytearray(MiB)
    view = memoryview(buffer)
    try:
        conn.request("GET", f"{parts.path}?{parts.query}")
        response = conn.getresponse()
        if response.status != 200:
            raise RuntimeError(f"GET failed: {response.status}")
        with open(path, "wb") as handle:
            while n := response.readinto(buffer):
                handle.write(view[:n])
    finally:
        conn.close()


# ---------------------------------------------------------------- sections


def throughput(server: ServerProcess, src: Path, work: Path, cp: tuple[float, float]) -> dict[str, Any]:
    s3 = server.client("s3")
    s3.create_bucket(Bucket=BUCKET)
    size = src.stat().st_size
    want = md5_of(src)
    out = work / "download.bin"
    assert server.proc is not None
    results: dict[str, Any] = {}
    with RssSampler(server.proc.pid) as rss:
        results["put_boto3"] = best_of(2, lambda: s3.upload_file(str(src), BUCKET, "boto3.bin"))
        put_url = s3.generate_presigned_url("put_object", Params={"Bucket": BUCKET, "Key": "lean.bin"},
                                            ExpiresIn=3600)
        results["put_lean"] = best_of(2, lambda: lean_put(put_url, src))
    results["peak_rss"] = rss.peak
    results["get_boto3"] = best_of(2, lambda: s3.download_file(BUCKET, "boto3.bin", str(out)))
    assert md5_of(out) == want, "boto3 download differs"
    get_url = s3.generate_presigned_url("get_object", Params={"Bucket": BUCKET, "Key": "lean.bin"}, ExpiresIn=3600)
    results["get_lean"] = best_of(2, lambda: lean_get(get_url, out))
    assert md5_of(out) == want, "lean download differs"
    out.unlink()
    s3.delete_objects(Bucket=BUCKET, Delete={"Objects": [{"Key": "boto3.bin"}, {"Key": "lean.bin"}]})
    results["size"] = size
    results["cp"], results["cp_fsync"] = cp
    return results


def small_ops(server: ServerProcess, count: int, threads: int = 8) -> tuple[float, float]:
    body = os.urandom(4096)
    clients = [server.client("s3") for _ in range(threads)]
    per_thread = count // threads

    def run(op: str) -> float:
        def work(index: int) -> None:
            client = clients[index]
            for i in range(per_thread):
                key = f"small/{index}/{i}"
                if op == "put":
                    client.put_object(Bucket=BUCKET, Key=key, Body=body)
                else:
                    client.get_object(Bucket=BUCKET, Key=key)["Body"].read()

        started = time.perf_counter()
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(work, range(threads)))
        return per_thread * threads / (time.perf_counter() - started)

    return run("put"), run("get")


def fill_listing_bucket(data_dir: Path, keys: int) -> float:
    """Create the listing keys through the engine, in-process, while no server runs."""
    from sagestack.config import Settings
    from sagestack.db import Database
    from sagestack.identity import ensure_installation
    from sagestack.storage import LocalObjectStore, ObjectMeta

    settings = Settings(data_dir=data_dir)
    db = Database(settings.database_url)
    account = ensure_installation(db)
    store = LocalObjectStore(db, settings.objects_dir)
    store.create_bucket(LIST_BUCKET, settings.region, account)
    meta = ObjectMeta(content_type="text/csv")

    def put(i: int) -> None:
        writer = store.begin_write()
        writer.write(b"%d\n" % i)
        store.put_object(LIST_BUCKET, f"data/{i % DIRECTORIES:02d}/part-{i:06d}.csv", writer, meta)

    started = time.perf_counter()
    with ThreadPoolExecutor(32) as pool:
        for _ in pool.map(put, range(keys), chunksize=256):
            pass
    elapsed = time.perf_counter() - started
    db.dispose()
    return elapsed


def listing(server: ServerProcess, keys: int) -> dict[str, float]:
    s3 = server.client("s3")

    def pages(**kwargs: Any) -> Iterator[dict[str, Any]]:
        token = None
        while True:
            extra = {"ContinuationToken": token} if token else {}
            page = s3.list_objects_v2(Bucket=LIST_BUCKET, **kwargs, **extra)
            yield page
            if not page["IsTruncated"]:
                return
            token = page["NextContinuationToken"]

    def timed(**kwargs: Any) -> tuple[float, int, int]:
        latencies, entries, started = [], 0, time.perf_counter()
        for page in _timed_pages(pages(**kwargs), latencies):
            entries += page["KeyCount"]
        return time.perf_counter() - started, entries, len(latencies)

    top = [timed(Prefix="data/", Delimiter="/") for _ in range(5)]
    one_dir = [timed(Prefix="data/42/", Delimiter="/") for _ in range(5)]
    whole_seconds, whole_entries, whole_pages = timed(Prefix="data/")
    assert top[0][1] == DIRECTORIES and whole_entries == keys
    return {
        "top_level_ms": statistics.median(t[0] for t in top) * 1000,
        "one_dir_ms": statistics.median(t[0] for t in one_dir) * 1000,
        "one_dir_entries": one_dir[0][1],
        "all_seconds": whole_seconds,
        "all_pages": whole_pages,
    }


def _timed_pages(pages: Iterator[dict[str, Any]], latencies: list[float]) -> Iterator[dict[str, Any]]:
    while True:
        started = time.perf_counter()
        try:
            page = next(pages)
        except StopIteration:
            return
        latencies.append(time.perf_counter() - started)
        yield page


# ---------------------------------------------------------------- main


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--keys", type=int, default=100_000)
    parser.add_argument("--small-ops", type=int, default=2000)
    parser.add_argument("--dir", type=Path, default=None, help="where to work (default: system temp dir)")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="sagestack-bench-", dir=args.dir))
    server: ServerProcess | None = None
    try:
        src = work / "source.bin"
        make_file(src, args.size_mib * MiB)
        cp = cp_times(src, work / "cp-copy.bin")
        data_dir = work / "data"
        # Start once so the data dir is initialised, then fill the listing bucket with the server down.
        ServerProcess(data_dir).start().stop()
        fill_seconds = fill_listing_bucket(data_dir, args.keys)
        server = ServerProcess(data_dir).start()
        tp = throughput(server, src, work, cp)
        put_ops, get_ops = small_ops(server, args.small_ops)
        lst = listing(server, args.keys)
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(work, ignore_errors=True)

    size = tp["size"]
    print(f"\nsagestack object store benchmark ({size // MiB} MiB file, same disk as cp)\n")
    print(f"{'':34}{'seconds':>9}{'MiB/s':>9}{'vs cp':>8}{'vs cp+fsync':>13}")

    def row(label: str, seconds: float) -> None:
        print(f"{label:34}{seconds:9.2f}{mbps(size, seconds):9.0f}"
              f"{tp['cp'] / seconds:8.2f}{tp['cp_fsync'] / seconds:13.2f}")

    row("cp", tp["cp"])
    row("cp + fsync", tp["cp_fsync"])
    row("PUT boto3 upload_file", tp["put_boto3"])
    row("PUT lean (one PUT, sendfile)", tp["put_lean"])
    row("GET boto3 download_file", tp["get_boto3"])
    row("GET lean (one GET)", tp["get_lean"])
    print("  target: >= 0.50 of cp both ways")
    print(f"\npeak server RSS during the {size // MiB} MiB uploads: {tp['peak_rss'] / MiB:.0f} MiB "
          "(target < 200 MiB)")
    print(f"\n4 KiB PUT: {put_ops:,.0f} ops/s   4 KiB GET: {get_ops:,.0f} ops/s   (boto3, 8 threads)")
    print(f"\nListObjectsV2 over {args.keys:,} keys in {DIRECTORIES} prefixes "
          f"(created through the engine in-process: {args.keys / fill_seconds:,.0f} keys/s)")
    print(f"  prefix=data/ delimiter=/   -> {DIRECTORIES} common prefixes: {lst['top_level_ms']:.1f} ms")
    print(f"  prefix=data/42/ delimiter=/ -> {lst['one_dir_entries']} keys: {lst['one_dir_ms']:.1f} ms")
    print(f"  prefix=data/ (all keys, {lst['all_pages']} pages of 1000): {lst['all_seconds']:.2f} s "
          f"({args.keys / lst['all_seconds']:,.0f} keys/s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
