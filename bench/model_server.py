"""Model-server latency and throughput: one-row CSV predictions over keep-alive, and one 6,513-row request.

    .venv/bin/python bench/model_server.py [--data adult|synthetic] [--seconds 5]

Trains a model (the UCI Adult data prepared as in the tutorial, 108 one-hot
features, 100 rounds of depth 5; or synthetic data with 100 features when the
Adult file is absent), starts real model-server processes on loopback and
drives them from a separate load process: an asyncio protocol on uvloop that
replays pre-built request bytes, so the client spends as little of the two
cores as possible. Reports, for the same model:

* in-process times: ``Booster.predict(DMatrix)``, ``Booster.inplace_predict``
  and the handler's whole ``invoke`` (parse + predict + encode);
* one connection: p50/p90/p99 latency (the unloaded per-request cost);
* 8 connections to one server, and 8 connections spread over two servers (two
  instances): requests/s, p50/p99, and the servers' CPU time per request;
* the Adult test set (6,513 rows) in one request: latency.

No assertions: numbers are printed for the reader (targets: p50 well under
1 ms, >= 4,000 req/s with two instances, 6,513 rows <= 50 ms).
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from sagestack.testing.model_server_process import ModelServerProcess  # noqa: E402

ADULT = Path(os.environ.get("SAGESTACK_ADULT_DATA", ROOT.parent / "shared/datasets/adult/adult.data.gz"))


# --------------------------------------------------------------------------- data and model


def make_data(kind: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(train X, train y, test X)``, float32, label not included in X."""
    if kind == "adult":
        from tests.unit.adult_prep import load, split

        train, test = split(load(ADULT))
        x_train, y_train = train.iloc[:, 1:].to_numpy(np.float32), train.iloc[:, 0].to_numpy(np.float32)
        return x_train, y_train, test.iloc[:, 1:].to_numpy(np.float32)
    rng = np.random.default_rng(7)
    x = rng.normal(size=(32_569, 100)).astype(np.float32)
    y = (x[:, :6].sum(axis=1) + rng.normal(size=len(x)) > 0).astype(np.float32)
    return x[:26_056], y[:26_056], x[26_056:]


def train_model(x: np.ndarray, y: np.ndarray, model_dir: Path) -> None:
    import xgboost as xgb

    params = {"objective": "binary:logistic", "max_depth": 5, "eta": 0.2, "nthread": os.cpu_count() or 1}
    booster = xgb.train(params, xgb.DMatrix(x, y), num_boost_round=100)
    booster.save_model(model_dir / "xgboost-model")  # no extension: UBJSON, as the 3.0-5 image writes it


def csv_rows(x: np.ndarray) -> bytes:
    # Written the way the tutorial's clients send rows: Python's shortest float text.
    return ("\n".join(",".join(repr(float(v)) for v in row) for row in x) + "\n").encode()


def request_bytes(port: int, body: bytes, accept: str = "text/csv") -> bytes:
    head = (
        f"POST /invocations HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: text/csv\r\n"
        f"Accept: {accept}\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


# --------------------------------------------------------------------------- servers


# --------------------------------------------------------------------------- load process


class _Client(asyncio.Protocol):
    """Sends one request, waits for its whole response, records the latency, repeats."""

    def __init__(self, payload: bytes, deadline: float, latencies: list[int], done: asyncio.Future) -> None:
        self.payload, self.deadline, self.latencies, self.done = payload, deadline, latencies, done
        self.buffer = bytearray()
        self.statuses: dict[int, int] = {}

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self._send()

    def _send(self) -> None:
        self.started = time.perf_counter_ns()
        self.transport.write(self.payload)  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        head = bytes(self.buffer[:end]).lower()
        length = int(head.split(b"content-length:")[1].split(b"\r\n")[0]) if b"content-length:" in head else 0
        if len(self.buffer) < end + 4 + length:
            return
        now = time.perf_counter_ns()
        status = int(head.split(b" ", 2)[1])
        self.statuses[status] = self.statuses.get(status, 0) + 1
        self.latencies.append(now - self.started)
        del self.buffer[: end + 4 + length]
        if time.perf_counter() < self.deadline:
            self._send()
        else:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_result(self.statuses)


async def _drive(targets: list[tuple[int, bytes]], connections: int, seconds: float) -> dict:
    loop = asyncio.get_running_loop()
    latencies: list[int] = []
    # Warm-up, then the measured run on fresh connections.
    for duration in (min(1.0, seconds), seconds):
        latencies.clear()
        deadline = time.perf_counter() + duration
        futures = []
        for i in range(connections):
            port, payload = targets[i % len(targets)]
            done = loop.create_future()
            await loop.create_connection(
                lambda p=payload, d=done, t=deadline: _Client(p, t, latencies, d), "127.0.0.1", port
            )
            futures.append(done)
        started = time.perf_counter()
        results = await asyncio.gather(*futures)
        elapsed = time.perf_counter() - started
    statuses: dict[int, int] = {}
    for result in results:
        for status, count in result.items():
            statuses[status] = statuses.get(status, 0) + count
    return {"latencies_ns": latencies, "elapsed": elapsed, "statuses": statuses}


def _load_process(targets: list[tuple[int, bytes]], connections: int, seconds: float, out: mp.Queue) -> None:
    try:
        import uvloop

        loop = uvloop.new_event_loop()
    except ImportError:
        loop = asyncio.new_event_loop()
    out.put(loop.run_until_complete(_drive(targets, connections, seconds)))


def run_load(servers: list[ModelServerProcess], body: bytes, connections: int, seconds: float) -> dict:
    targets = [(s.port, request_bytes(s.port, body)) for s in servers]
    cpu_before = sum(s.cpu_seconds() for s in servers)
    queue: mp.Queue = mp.get_context("spawn").Queue()
    proc = mp.get_context("spawn").Process(target=_load_process, args=(targets, connections, seconds, queue))
    proc.start()
    result = queue.get()
    proc.join()
    result["server_cpu"] = sum(s.cpu_seconds() for s in servers) - cpu_before
    return result


def summary(name: str, result: dict, warm_seconds: float) -> str:
    lat = sorted(result["latencies_ns"])
    n = len(lat)
    rate = n / result["elapsed"]

    def pct(q: float) -> float:
        return lat[min(n - 1, int(q * n))] / 1e6

    # Server CPU covers warm-up too: spread it over every request of both phases.
    total = n + rate * warm_seconds
    cpu_per_req = result["server_cpu"] / total * 1e3 if total else float("nan")
    statuses = ",".join(f"{k}x{v}" for k, v in sorted(result["statuses"].items()))
    return (
        f"{name:44s} {rate:8.0f} req/s  p50 {pct(0.5):6.3f} ms  p90 {pct(0.9):6.3f} ms  "
        f"p99 {pct(0.99):6.3f} ms  server CPU {cpu_per_req:5.3f} ms/req  [{statuses}]"
    )


# --------------------------------------------------------------------------- in-process


def timed(fn, n: int) -> tuple[float, float]:
    for _ in range(min(200, n)):
        fn()
    samples = []
    for _ in range(n):
        t = time.perf_counter_ns()
        fn()
        samples.append(time.perf_counter_ns() - t)
    samples.sort()
    return samples[len(samples) // 2] / 1e3, samples[int(len(samples) * 0.99)] / 1e3


def in_process(model_dir: Path, row: np.ndarray, row_csv: bytes, test: np.ndarray, test_csv: bytes) -> None:
    import xgboost as xgb

    from sagestack.serving.xgboost_handler import XGBoostHandler

    handler = XGBoostHandler.from_model_dir(model_dir, log=lambda _m: None)
    booster = handler.model.boosters[0]
    one = row.reshape(1, -1)
    print("in-process, one thread (p50 / p99 in us):")
    for name, fn in [
        ("Booster.predict(DMatrix(row))", lambda: booster.predict(xgb.DMatrix(one))),
        ("Booster.inplace_predict(row)", lambda: booster.inplace_predict(one)),
        ("handler predictor (ctypes in-place)", lambda: handler.model.predictors[0].dense(one)),
        ("handler.invoke(csv row) parse+predict+encode", lambda: handler.invoke(row_csv, "text/csv", None)),
    ]:
        p50, p99 = timed(fn, 5000)
        print(f"  {name:46s} {p50:8.1f} {p99:8.1f}")
    for name, fn in [
        (f"Booster.predict(DMatrix({len(test)} rows))", lambda: booster.predict(xgb.DMatrix(test))),
        (f"handler.invoke({len(test)} csv rows)", lambda: handler.invoke(test_csv, "text/csv", None)),
    ]:
        p50, _ = timed(fn, 10)
        print(f"  {name:46s} {p50 / 1e3:8.2f} ms")
    reference = booster.predict(xgb.DMatrix(test))
    served = np.array(handler.invoke(test_csv, "text/csv", None).body.split(), dtype=np.float64)
    print(f"  max |served - Booster.predict| over {len(test)} rows: {np.abs(served - reference).max():.2e}")


def big_request(server: ModelServerProcess, body: bytes, repeats: int = 15) -> None:
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", server.port)
    samples = []
    for _ in range(repeats):
        t = time.perf_counter()
        conn.request("POST", "/invocations", body, {"Content-Type": "text/csv", "Accept": "text/csv"})
        response = conn.getresponse()
        payload = response.read()
        samples.append(time.perf_counter() - t)
        assert response.status == 200, payload[:200]
    conn.close()
    lines = payload.count(b"\n")
    print(
        f"{'one request, ' + str(lines) + ' csv rows (' + str(len(body) // 1024) + ' KiB)':44s} "
        f"p50 {statistics.median(samples) * 1e3:6.1f} ms  min {min(samples) * 1e3:6.1f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data", choices=["adult", "synthetic"], default="adult" if ADULT.exists() else "synthetic"
    )
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()

    x_train, y_train, test = make_data(args.data)
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = Path(tmp) / "model"
        model_dir.mkdir()
        started = time.perf_counter()
        train_model(x_train, y_train, model_dir)
        row_csv = csv_rows(test[:1]).strip()
        test_csv = csv_rows(test)
        print(
            f"data={args.data} features={test.shape[1]} trees=100 depth=5 (trained in "
            f"{time.perf_counter() - started:.1f} s); one row = {len(row_csv)} bytes; cpus={os.cpu_count()}"
        )
        in_process(model_dir, test[0], row_csv, test, test_csv)

        servers = [ModelServerProcess(model_dir).ready(), ModelServerProcess(model_dir).ready()]
        try:
            warm = min(1.0, args.seconds)
            print(f"over HTTP/1.1 keep-alive, {args.seconds:g} s per run after {warm:g} s warm-up:")
            print(summary("1 server, 1 connection", run_load(servers[:1], row_csv, 1, args.seconds), warm))
            print(summary("1 server, 8 connections", run_load(servers[:1], row_csv, 8, args.seconds), warm))
            print(
                summary(
                    "2 servers, 8 connections (4 each)", run_load(servers, row_csv, 8, args.seconds), warm
                )
            )
            big_request(servers[0], test_csv)
        finally:
            for server in servers:
                server.stop()


if __name__ == "__main__":
    main()
