"""Signed control-plane throughput and latency: 8 concurrent keep-alive clients.

Starts a real server, signs requests with botocore (SigV4, as boto3 would), and
replays them from a separate load process over 8 keep-alive connections, so the
load generator costs as little CPU as possible on this 2-core machine. Each
signed request stays valid for the 15 minutes SigV4 allows, so replaying the
same signed bytes is legitimate.

Prints calls/s and p50/p99 latency per operation. Target (issue 2): >= 1,500
calls/s on 2 cores with p50 < 2 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import statistics
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from sagestack.testing.server_process import ServerProcess

OPERATIONS = {
    "sts:GetCallerIdentity (query)": (
        "sts", {"Content-Type": "application/x-www-form-urlencoded"},
        b"Action=GetCallerIdentity&Version=2011-06-15",
    ),
    "logs:DescribeLogGroups (json, DB read)": (
        "logs", {"Content-Type": "application/x-amz-json-1.1", "X-Amz-Target": "Logs_20140328.DescribeLogGroups"},
        b"{}",
    ),
}


def signed_bytes(url: str, key: str, secret: str, service: str, headers: dict[str, str], body: bytes) -> bytes:
    request = AWSRequest("POST", url + "/", data=body, headers=headers)
    SigV4Auth(Credentials(key, secret), service, "us-east-1").add_auth(request)
    host = urlsplit(url).netloc
    lines = ["POST / HTTP/1.1", f"Host: {host}", f"Content-Length: {len(body)}"]
    lines += [f"{k}: {v}" for k, v in request.headers.items() if k.lower() not in ("host", "content-length")]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def _connection(host: str, port: int, payload: bytes, deadline: float, latencies: list[float],
                      statuses: dict[int, int]) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    while time.perf_counter() < deadline:
        started = time.perf_counter()
        writer.write(payload)
        head = await reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
        await reader.readexactly(length)
        latencies.append(time.perf_counter() - started)
        statuses[status] = statuses.get(status, 0) + 1
    writer.close()


def _load(host: str, port: int, payload: bytes, seconds: float, clients: int, queue: mp.Queue) -> None:
    latencies: list[float] = []
    statuses: dict[int, int] = {}

    async def main() -> None:
        deadline = time.perf_counter() + seconds
        await asyncio.gather(*[_connection(host, port, payload, deadline, latencies, statuses)
                               for _ in range(clients)])

    started = time.perf_counter()
    asyncio.run(main())
    queue.put((latencies, statuses, time.perf_counter() - started))


def _user_with_twenty_statements(server: ServerProcess) -> tuple[str, str]:
    """A user whose managed policy has 20 statements, one allowing logs:Describe*: its key."""
    import json

    iam = server.client("iam")
    statements = [{"Effect": "Allow", "Action": f"ec2:Describe{i}*", "Resource": f"arn:aws:ec2:*:*:thing-{i}/*"}
                  for i in range(19)]
    statements.append({"Effect": "Allow", "Action": "logs:Describe*", "Resource": "*"})
    iam.create_user(UserName="bench-reader")
    arn = iam.create_policy(PolicyName="bench-reader", PolicyDocument=json.dumps(
        {"Version": "2012-10-17", "Statement": statements}))["Policy"]["Arn"]
    iam.attach_user_policy(UserName="bench-reader", PolicyArn=arn)
    key = iam.create_access_key(UserName="bench-reader")["AccessKey"]
    return key["AccessKeyId"], key["SecretAccessKey"]


def run(seconds: float, clients: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        server = ServerProcess(Path(tmp) / "data").start()
        try:
            env = server.env
            parts = urlsplit(server.url)
            print(f"server {server.url}, {clients} keep-alive clients, {seconds:.0f} s per operation")
            admin = (env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"])
            user = _user_with_twenty_statements(server)
            # The admin key skips authorization; the user's calls are decided (and cached) by its policies.
            cases = [(label, admin, op) for label, op in OPERATIONS.items()]
            describe = OPERATIONS["logs:DescribeLogGroups (json, DB read)"]
            cases.append(("  same, as a user with 20 statements", user, describe))
            for label, (key, secret), (service, headers, body) in cases:
                payload = signed_bytes(server.url, key, secret, service, headers, body)
                queue: mp.Queue = mp.Queue()
                warm = mp.Process(target=_load, args=(parts.hostname, parts.port, payload, 1.0, clients, queue))
                warm.start()
                queue.get()
                warm.join()
                proc = mp.Process(target=_load, args=(parts.hostname, parts.port, payload, seconds, clients, queue))
                proc.start()
                latencies, statuses, elapsed = queue.get()
                proc.join()
                latencies.sort()
                p50 = statistics.median(latencies) * 1000
                p99 = latencies[int(len(latencies) * 0.99)] * 1000
                rate = len(latencies) / elapsed
                print(f"{label:42s} {rate:8.0f} calls/s  p50 {p50:6.2f} ms  p99 {p99:6.2f} ms  statuses {statuses}")
        finally:
            server.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--clients", type=int, default=8)
    args = parser.parse_args()
    run(args.seconds, args.clients)
