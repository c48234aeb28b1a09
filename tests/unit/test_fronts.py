"""Pieces of the multi-process runtime front: the message channel, the table mirror, the connection rotation."""

from __future__ import annotations

import asyncio
import os
import socket
from pathlib import Path
from typing import Any

import pytest

from sagestack.control.endpoint_metrics import EndpointMetrics
from sagestack.control.routing import Deployment, Instance, RemoteServer, Router, TableMirror, Variant, table_of
from sagestack.front.channel import Channel
from sagestack.front.pool import FrontWorkers
from sagestack.serving.upstream import UpstreamPool


def _pair(received: list[tuple[dict[str, Any], list[int]]], closed: list[bool]) -> tuple[Channel, Channel]:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    left = Channel(a, lambda m, fds: None, lambda: None)
    right = Channel(b, lambda m, fds: received.append((m, fds)), lambda: closed.append(True))
    return left, right


def test_channel_carries_messages_and_descriptors_in_order() -> None:
    async def run() -> None:
        received: list[tuple[dict[str, Any], list[int]]] = []
        closed: list[bool] = []
        left, right = _pair(received, closed)
        reader, writer = os.pipe()
        big = {"t": "table", "blob": "x" * 3_000_000}  # more than the socket takes at once
        assert left.send({"t": "a", "n": 1})
        assert left.send(big)
        assert not left.send({"t": "conn"}, [writer])  # descriptors never queue behind bytes
        for _ in range(200):
            if len(received) == 2:
                break
            await asyncio.sleep(0.01)
        assert left.send({"t": "conn"}, [writer])
        for _ in range(200):
            if len(received) == 3:
                break
            await asyncio.sleep(0.01)
        assert [m["t"] for m, _ in received] == ["a", "table", "conn"]
        assert received[1][0]["blob"] == big["blob"]
        (fd,) = received[2][1]
        os.write(fd, b"through the copy")
        assert os.read(reader, 100) == b"through the copy"
        for descriptor in (fd, reader, writer):
            os.close(descriptor)
        left.close()
        for _ in range(100):
            if closed:
                break
            await asyncio.sleep(0.01)
        assert closed == [True] and right.closed
        assert not left.send({"t": "late"})

    asyncio.run(run())


def test_channel_closes_on_a_broken_stream() -> None:
    async def run() -> None:
        a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        closed: list[bool] = []
        Channel(b, lambda m, fds: None, lambda: closed.append(True))
        a.sendall(b"\xff\xff\xff\xff garbage")  # a length no message of ours has
        for _ in range(100):
            if closed:
                break
            await asyncio.sleep(0.01)
        assert closed == [True]
        a.close()

    asyncio.run(run())


def _deployment(instances: list[tuple[str, bool]], weight: float = 1.0) -> Deployment:
    variant = Variant("AllTraffic", "model", Path(), {}, weight)
    for index, (instance_id, healthy) in enumerate(instances):
        pool = UpstreamPool("127.0.0.1", 9000 + index, timeout=7.0, unix_socket=f"/tmp/ms-{index}.sock")
        variant.instances.append(Instance(instance_id, "AllTraffic", RemoteServer(pool), healthy=healthy))
    return Deployment("ep", "cfg", {"AllTraffic": variant})


def test_table_mirror_keeps_connections_and_reports_what_to_drain() -> None:
    router = Router(db=None, account_id="123456789012", metrics=EndpointMetrics(db=None))
    mirror = TableMirror(router)
    first = table_of({"ep": _deployment([("i-1", True), ("i-2", True)])})
    assert mirror.apply(first) == []
    variant = router.live["ep"].variants["AllTraffic"]
    kept = variant.instances[0]
    assert (kept.server.pool.port, kept.server.pool.unix_socket, kept.server.pool.timeout) == (9000, "/tmp/ms-0.sock",
                                                                                                7.0)
    kept.in_flight = 1
    # i-2 leaves, i-1 turns unhealthy (retiring), i-3 arrives
    second = table_of({"ep": _deployment([("i-1", False), ("i-3", True)], weight=0.5)})
    second["ep"]["variants"][0]["instances"][1]["port"] = 9002
    gone = mirror.apply(second)
    assert sorted(i.instance_id for i in gone) == ["i-1", "i-2"]
    variant = router.live["ep"].variants["AllTraffic"]
    assert variant.weight == 0.5
    assert variant.instances[0] is kept and not kept.healthy  # same object: its in-flight count and connection
    assert kept.in_flight == 1
    assert [i.instance_id for i in variant.pick()] == ["i-3"]

    async def drain() -> None:
        kept.in_flight = 0
        await mirror.drain(gone)

    asyncio.run(drain())
    mirror.release(gone)  # closes i-2's connection only; i-1 is still in the table
    assert {i.instance_id for i in mirror.apply({})} == {"i-1", "i-3"}  # the endpoint went: all to drain
    assert router.live == {}


def test_rotation_hands_every_other_connection_to_a_worker(tmp_path: Path) -> None:
    from sagestack.config import Settings

    fronts = FrontWorkers(Settings(data_dir=tmp_path), "123456789012", 1, dict, EndpointMetrics(db=None))
    sent: list[list[int]] = []

    class FakeChannel:
        def send(self, message: dict[str, Any], fds: list[int] = ()) -> bool:  # type: ignore[assignment]
            sent.append(list(fds))
            return True

    class FakeWorker:
        channel = FakeChannel()

    a, b = socket.socketpair()
    with a, b:
        assert fronts.hand_off(a) is False  # no worker serving yet: all stay with the main process
        fronts._serving.append(FakeWorker())  # type: ignore[arg-type]
        turns = [fronts.hand_off(a) for _ in range(6)]
        assert sent == [[a.fileno()]] * 3
    assert turns == [True, False, True, False, True, False]


def test_metrics_rows_merge_into_the_main_process_counters() -> None:
    worker, main = EndpointMetrics(db=None), EndpointMetrics(db=None)
    worker.record("ep", "AllTraffic", 200, 0.001, 0.0005)
    worker.record("ep", "AllTraffic", 404, 0.002, 0.0005)
    main.record("ep", "AllTraffic", 200, 0.001, 0.0)
    main.merge_rows(worker.take_rows())
    assert worker.take_rows() == []
    (merged,) = main.take_rows()
    assert merged[:6] == ["ep", "AllTraffic", 3, 1, 0, 1]
    assert merged[6] == pytest.approx(0.004) and merged[7] == pytest.approx(0.001)
