"""The XGBoost model server as a process over HTTP/1.1, and the router's pipelining client to it."""

from __future__ import annotations

import http.client
import json
import re
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from sagestack.testing.model_server_process import ModelServerProcess
from tests.unit.serving_support import FEATURES, csv_of, reference_scores, train_models, training_data


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return train_models(tmp_path_factory.mktemp("models"))


# --------------------------------------------------------------------------- the process over HTTP


@pytest.fixture(scope="module")
def live(models: dict[str, Path]) -> Iterator[ModelServerProcess]:
    server = ModelServerProcess(models["binary"]).ready()
    yield server
    server.stop()


def _raw(port: int, data: bytes, until_close: bool = False) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(data)
        if not until_close:
            return sock.recv(65536)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
        return b"".join(chunks)


def test_ping_and_keep_alive_reuse(live: ModelServerProcess, models: dict[str, Path]) -> None:
    x = np.nan_to_num(training_data(rows=1, seed=67)[0])
    expected = reference_scores(models["binary"], x)[0]
    conn = http.client.HTTPConnection("127.0.0.1", live.port, timeout=10)
    conn.request("GET", "/ping")
    response = conn.getresponse()
    assert (response.status, response.read()) == (200, b"")
    sock = conn.sock
    for _ in range(20):
        conn.request("POST", "/invocations", csv_of(x), {"Content-Type": "text/csv"})
        response = conn.getresponse()
        assert response.status == 200 and response.getheader("Content-Type") == "text/csv; charset=utf-8"
        assert abs(float(response.read()) - expected) < 1e-6
    assert conn.sock is sock  # the same TCP connection served every request
    assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
    conn.close()


def test_http_error_statuses_and_their_log_lines(live: ModelServerProcess) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", live.port, timeout=10)
    cases = [
        ("POST", "/invocations", b"1,zz", {"Content-Type": "text/csv"}, 415, b"Loading csv data failed"),
        (
            "POST",
            "/invocations",
            b"1,2",
            {"Content-Type": "application/pdf"},
            415,
            b"application/pdf is not an",
        ),
        (
            "POST",
            "/invocations",
            b"1,2",
            {"Content-Type": "text/csv", "Accept": "image/gif"},
            406,
            b"Accept type",
        ),
        (
            "POST",
            "/invocations",
            b",".join([b"1"] * 20),
            {"Content-Type": "text/csv"},
            400,
            b"Unable to evaluate",
        ),
        ("POST", "/invocations", b"", {"Content-Type": "text/csv"}, 204, b""),
        ("GET", "/invocations", None, {}, 405, b"Method Not Allowed"),
        ("GET", "/nowhere", None, {}, 404, b"{}"),
    ]
    for method, path, body, headers, status, start in cases:
        conn.request(method, path, body, headers)
        response = conn.getresponse()
        payload = response.read()
        assert response.status == status and payload.startswith(start), (path, response.status, payload)
    assert "POST /invocations 415: Loading csv data failed with Exception" in live.wait_for(
        " 415: Loading csv"
    )
    assert "406: Accept type image/gif is not supported" in live.wait_for(" 406: ")
    conn.request("GET", "/execution-parameters")
    assert json.loads(conn.getresponse().read())["BatchStrategy"] == "MULTI_RECORD"
    conn.close()


def test_large_request_of_6513_rows(live: ModelServerProcess, models: dict[str, Path]) -> None:
    rng = np.random.default_rng(71)
    x = rng.normal(size=(6513, FEATURES)).astype(np.float32)
    body = csv_of(x)
    conn = http.client.HTTPConnection("127.0.0.1", live.port, timeout=30)
    conn.request("POST", "/invocations", body, {"Content-Type": "text/csv", "Accept": "application/json"})
    response = conn.getresponse()
    assert response.status == 200
    scores = [p["score"] for p in json.loads(response.read())["predictions"]]
    np.testing.assert_allclose(scores, reference_scores(models["binary"], x), atol=1e-6, rtol=0)
    conn.close()


def test_chunked_body_expect_continue_and_connection_close(live: ModelServerProcess) -> None:
    row = b"0.5,1,2,-1,0,3,0.25,1"
    chunked = (
        b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: text/csv\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
        + b"%x\r\n%s\r\n" % (10, row[:10])
        + b"%x\r\n%s\r\n" % (len(row) - 10, row[10:])
        + b"0\r\n\r\n"
    )
    reply = _raw(live.port, chunked)
    assert reply.startswith(b"HTTP/1.1 200 OK\r\n") and reply.endswith(b"\n")
    # Expect: 100-continue gets the interim response before the body is sent.
    with socket.create_connection(("127.0.0.1", live.port), timeout=10) as sock:
        sock.sendall(
            b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: text/csv\r\nExpect: 100-continue\r\n"
            b"Content-Length: %d\r\n\r\n" % len(row)
        )
        assert sock.recv(1024) == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(row)
        assert sock.recv(1024).startswith(b"HTTP/1.1 200 OK\r\n")
    closing = b"GET /ping HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    reply = _raw(live.port, closing, until_close=True)  # returns only because the server closes
    assert reply.startswith(b"HTTP/1.1 200 OK\r\n") and b"Connection: close\r\n" in reply
    reply = _raw(live.port, b"GET /ping HTTP/1.0\r\n\r\n", until_close=True)
    assert reply.startswith(b"HTTP/1.1 200 OK\r\n")


def test_pipelined_requests_are_answered_in_order(live: ModelServerProcess) -> None:
    head = b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: text/csv\r\n"
    one = head + b"Content-Length: 15\r\n\r\n0,0,0,0,0,0,0,0"
    bad = head + b"Content-Length: 3\r\n\r\na,b"
    last = b"GET /ping HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    reply = _raw(live.port, one + bad + last, until_close=True)
    assert re.findall(rb"HTTP/1\.1 (\d{3}) ", reply) == [b"200", b"415", b"200"]


def test_malformed_http_gets_400(live: ModelServerProcess) -> None:
    reply = _raw(live.port, b"NOT HTTP AT ALL\r\n\r\n", until_close=True)
    assert reply.startswith(b"HTTP/1.1 400 Bad Request\r\n")


def test_body_limit_and_graceful_stop(models: dict[str, Path]) -> None:
    server = ModelServerProcess(models["binary"], MAX_CONTENT_LENGTH="64").ready()
    try:
        big = b"1," * 40
        request = (
            b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: text/csv\r\nContent-Length: %d\r\n\r\n"
            % len(big)
        )
        reply = _raw(server.port, request + big, until_close=True)
        assert reply.startswith(b"HTTP/1.1 413 ")
        chunked = b"POST /invocations HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        reply = _raw(server.port, chunked + b"50\r\n" + b"1" * 80 + b"\r\n0\r\n\r\n", until_close=True)
        assert reply.startswith(b"HTTP/1.1 413 ")
        assert "413: body larger than 64 bytes" in server.wait_for(" 413: ")
        server.proc.send_signal(signal.SIGTERM)
        assert server.proc.wait(10) == 0
        server.wait_for("stopped")
    finally:
        server.stop()


def test_unloadable_model_exits_with_an_error_line(tmp_path: Path) -> None:
    (tmp_path / "xgboost-model").write_bytes(b"garbage")
    server = ModelServerProcess(tmp_path)
    try:
        line = server.wait_for("error:")
        assert line.startswith("sagestack-model-server error: Unable to load model: Model ")
        assert server.proc.wait(20) == 1
    finally:
        server.stop()


# --------------------------------------------------------------------------- the router's client


def test_pool_pipelines_concurrent_requests_and_matches_answers(live: ModelServerProcess,
                                                                 models: dict[str, Path]) -> None:
    import asyncio

    from sagestack.serving.upstream import UpstreamPool

    x = np.nan_to_num(training_data(rows=40, seed=71)[0])
    expected = reference_scores(models["binary"], x)

    async def run() -> tuple[list[float], int]:
        pool = UpstreamPool("127.0.0.1", live.port)
        try:
            answers = await asyncio.gather(*(
                pool.request("POST", "/invocations", {"Content-Type": "text/csv"}, csv_of(x[i : i + 1]))
                for i in range(len(x))
            ))
            connections = {id(pool._connection)}
            again = await pool.request("POST", "/invocations", {"Content-Type": "text/csv"}, csv_of(x[:1]))
            connections.add(id(pool._connection))
        finally:
            pool.close()
        assert all(a.status == 200 for a in answers) and again.status == 200
        return [float(a.body) for a in answers], len(connections)

    scores, connections = asyncio.run(run())
    np.testing.assert_allclose(scores, expected, atol=1e-6, rtol=0)  # each answer went to its own request
    assert connections == 1  # all of them over one kept connection


def test_pool_fails_every_request_in_flight_when_the_server_dies(models: dict[str, Path]) -> None:
    import asyncio

    from sagestack.serving.upstream import UpstreamError, UpstreamPool

    server = ModelServerProcess(models["binary"]).ready()
    x = np.nan_to_num(training_data(rows=1, seed=72)[0])

    async def run() -> list[BaseException | object]:
        pool = UpstreamPool("127.0.0.1", server.port, timeout=10)
        first = await pool.request("POST", "/invocations", {"Content-Type": "text/csv"}, csv_of(x))
        assert first.status == 200
        server.proc.send_signal(signal.SIGSTOP)  # stuck: requests pile up on the connection
        pending = [asyncio.ensure_future(pool.request("POST", "/invocations", {"Content-Type": "text/csv"},
                                                      csv_of(x))) for _ in range(5)]
        await asyncio.sleep(0.2)
        server.proc.kill()
        return await asyncio.gather(*pending, return_exceptions=True)

    try:
        outcomes = asyncio.run(run())
    finally:
        server.stop()
    assert all(isinstance(o, UpstreamError) for o in outcomes), outcomes


def test_pool_timeout_fails_the_stuck_connection(models: dict[str, Path]) -> None:
    import asyncio

    from sagestack.serving.upstream import UpstreamError, UpstreamPool

    server = ModelServerProcess(models["binary"]).ready()
    x = np.nan_to_num(training_data(rows=1, seed=73)[0])

    async def run() -> tuple[list[BaseException | object], int]:
        pool = UpstreamPool("127.0.0.1", server.port, timeout=0.3)
        server.proc.send_signal(signal.SIGSTOP)
        try:
            started = time.monotonic()
            outcomes = await asyncio.gather(*(pool.request("POST", "/invocations", {"Content-Type": "text/csv"},
                                                           csv_of(x)) for _ in range(3)), return_exceptions=True)
            elapsed = time.monotonic() - started
        finally:
            server.proc.send_signal(signal.SIGCONT)
        answer = await pool.request("POST", "/invocations", {"Content-Type": "text/csv"}, csv_of(x))
        pool.close()
        assert elapsed < 5
        return outcomes, answer.status

    try:
        outcomes, status = asyncio.run(run())
    finally:
        server.stop()
    assert all(isinstance(o, UpstreamError) and "did not answer within 0.3 s" in str(o) for o in outcomes)
    assert status == 200  # a fresh connection serves once the server is back
