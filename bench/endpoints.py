"""Endpoint serving through the whole platform: create time, latency, throughput, one big request.

In one run, on one model (the tutorial's job trained on the Adult data):
- CreateEndpoint → InService (from the API's own timestamps);
- signed single-row CSV InvokeEndpoint over keep-alive connections (SigV4 done
  by botocore once per connection; the signed request is replayed, which SigV4
  allows for 15 minutes), p50/p99 with 1 client and max throughput with
  8 clients against 1 and 2 instances (``--rounds`` runs each: median and best,
  as this machine's speed drifts by +-20% within minutes; and CPU per request of
  the router and of the model servers, the figure that travels best between machines);
  on the runtime port (``AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME``, the lean front) and,
  for comparison, on the main port (uvicorn/ASGI);
- the same single row POSTed straight to one model server (no router, no auth);
- in-process prediction of the same model;
- all 6,513 test rows in one InvokeEndpoint.

Load comes from wrk (as in shared/reference/serving-anchors.md) when it is installed
(`apt-get install wrk`), else from a Python asyncio client, which itself takes a
good share of the two cores. Model servers are measured after their compiled trees
took over (the log line says when).

Targets (issue 5): InService <= 2 s; p50 <= 1 ms; >= 4,000 req/s with 2 instances;
6,513 rows in one request <= 50 ms.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.control_plane import _load  # noqa: E402
from sagestack.compute import free_port  # noqa: E402
from sagestack.testing.server_process import ServerProcess  # noqa: E402
from tests.integration.training_support import (  # noqa: E402
    XGBOOST_IMAGE,
    adult_bucket,
    channel,
    execution_role,
    load_model,
    training_request,
    unique,
    wait_for_job,
)


def invoke_bytes(url: str, key: str, secret: str, endpoint: str, body: bytes) -> bytes:
    request = AWSRequest("POST", f"{url}/endpoints/{endpoint}/invocations", data=body,
                         headers={"Content-Type": "text/csv", "Accept": "text/csv"})
    SigV4Auth(Credentials(key, secret), "sagemaker", "us-east-1").add_auth(request)
    host = urlsplit(url).netloc
    lines = [f"POST /endpoints/{endpoint}/invocations HTTP/1.1", f"Host: {host}", f"Content-Length: {len(body)}"]
    lines += [f"{k}: {v}" for k, v in request.headers.items() if k.lower() not in ("host", "content-length")]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def direct_bytes(port: int, body: bytes) -> bytes:
    head = (f"POST /invocations HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: text/csv\r\n"
            f"Content-Length: {len(body)}\r\n\r\n")
    return head.encode() + body


def measure(host: str, port: int, payload: bytes, seconds: float, clients: int) -> tuple[float, float, float, dict]:
    if shutil.which("wrk"):
        return _measure_with_wrk(host, port, payload, seconds, clients)
    queue: mp.Queue = mp.Queue()
    worker = mp.Process(target=_load, args=(host, port, payload, seconds, clients, queue))
    worker.start()
    latencies, statuses, elapsed = queue.get()
    worker.join()
    latencies.sort()
    return (len(latencies) / elapsed, statistics.median(latencies) * 1000,
            latencies[int(len(latencies) * 0.99)] * 1000, statuses)


def _measure_with_wrk(host: str, port: int, payload: bytes, seconds: float,
                      clients: int) -> tuple[float, float, float, dict]:
    """wrk replaying the raw request (-t1, keep-alive connections): rate, p50 and p99 in ms."""
    head, body = payload.split(b"\r\n\r\n", 1)
    lines = head.decode().split("\r\n")
    script = [f"wrk.method = {json.dumps(lines[0].split()[0])}", f"wrk.path = {json.dumps(lines[0].split()[1])}",
              f"wrk.body = {json.dumps(body.decode())}"]
    for line in lines[1:]:
        name, value = line.split(": ", 1)
        if name.lower() not in ("host", "content-length"):
            script.append(f"wrk.headers[{json.dumps(name)}] = {json.dumps(value)}")
    script.append("done = function(summary, latency, requests)\n"
                  "  io.write(string.format('RESULT %d %d %f %f %d\\n', summary.requests, summary.duration,\n"
                  "    latency:percentile(50), latency:percentile(99), summary.errors.status))\nend")
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as handle:
        handle.write("\n".join(script))
    try:
        output = subprocess.run(["wrk", "-t1", f"-c{clients}", f"-d{seconds:g}s", "-s", handle.name,
                                 f"http://{host}:{port}"], capture_output=True, text=True, check=True).stdout
    finally:
        os.unlink(handle.name)
    requests, micros, p50, p99, bad = (float(v) for v in output.split("RESULT ", 1)[1].split())
    return requests / (micros / 1e6), p50 / 1000, p99 / 1000, {"non-2xx": int(bad), "total": int(requests)}


def measure_baseline(booster: Any, workdir: Path, row: bytes, seconds: float) -> float:
    """req/s of the anchors' reference stack on this machine, same model and row, same load generator."""
    model_file = workdir / "baseline-model.ubj"
    booster.save_model(str(model_file))
    port = free_port()
    process = subprocess.Popen([sys.executable, str(ROOT / "bench" / "serving_baseline.py"), str(model_file),
                                str(port)])
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=1):
                    break
            except OSError:
                time.sleep(0.2)
        measure("127.0.0.1", port, direct_bytes(port, row), 2.0, 8)  # warm up both workers
        return max(measure("127.0.0.1", port, direct_bytes(port, row), seconds, 8)[0] for _ in range(2))
    finally:
        process.terminate()
        process.wait(10)


def wait_for_compiled(server: ServerProcess, endpoint: str, timeout: float = 60) -> None:
    logs, deadline = server.client("logs"), time.monotonic() + timeout
    while time.monotonic() < deadline:
        events = logs.filter_log_events(logGroupName=f"/aws/sagemaker/Endpoints/{endpoint}")["events"]
        if sum("compiled trees serving" in e["message"] for e in events) >= 1:
            return
        time.sleep(0.5)
    print(f"(endpoint {endpoint}: compiled trees not serving after {timeout:.0f} s; measuring xgboost's predictor)")


def deploy(server: ServerProcess, model: str, count: int) -> tuple[str, float]:
    sm = server.client("sagemaker")
    config, name = unique("cfg"), unique("ep")
    sm.create_endpoint_config(EndpointConfigName=config, ProductionVariants=[{
        "VariantName": "AllTraffic", "ModelName": model, "InitialInstanceCount": count,
        "InstanceType": "ml.m4.xlarge"}])
    sm.create_endpoint(EndpointName=name, EndpointConfigName=config)
    while (endpoint := sm.describe_endpoint(EndpointName=name))["EndpointStatus"] == "Creating":
        time.sleep(0.02)
    assert endpoint["EndpointStatus"] == "InService", endpoint.get("FailureReason")
    return name, (endpoint["LastModifiedTime"] - endpoint["CreationTime"]).total_seconds()


def model_servers(server: ServerProcess, endpoint: str) -> list[Any]:
    import psutil

    assert server.proc is not None
    return [p for p in psutil.Process(server.proc.pid).children(recursive=True)
            if f"/endpoints/{endpoint}/" in p.cwd() + "/"]


def model_server_port(server: ServerProcess, endpoint: str) -> int:
    import psutil

    for process in model_servers(server, endpoint):
        listening = [c.laddr.port for c in process.net_connections("tcp") if c.status == psutil.CONN_LISTEN]
        if listening:
            return listening[0]
    raise RuntimeError("model server not found")


def front_processes(server: ServerProcess, runtime_port: int, timeout: float = 30) -> list[Any]:
    """The main process and the front workers serving the runtime port, once each worker took a connection
    (they start with the first endpoint; see sagestack/control/fronts.py)."""
    import socket

    import psutil

    assert server.proc is not None
    main = psutil.Process(server.proc.pid)
    deadline = time.monotonic() + timeout
    while True:
        workers = [p for p in main.children() if "sagestack.front.worker" in " ".join(p.cmdline())]
        probes = [socket.create_connection(("127.0.0.1", runtime_port)) for _ in range(len(workers) + 1)]
        time.sleep(0.1)
        serving = [w for w in workers
                   if any(c.laddr and c.laddr.port == runtime_port for c in w.net_connections("tcp"))]
        for probe in probes:
            probe.close()
        if len(serving) == len(workers) or time.monotonic() > deadline:
            return [main, *serving]
        time.sleep(0.2)


def _cpu_seconds(processes: list[Any]) -> float:
    return sum(sum(p.cpu_times()[:2]) for p in processes)


def measure_rounds(host: str, port: int, payload: bytes, seconds: float, rounds: int, router: list[Any],
                   instances: list[Any]) -> dict[str, float]:
    """8 clients, ``rounds`` times (this machine's speed drifts by +-20% within minutes): median and best
    req/s, and CPU per request of the router and of the model servers, the figures that travel best."""
    rates, router_us, model_us = [], [], []
    for _ in range(rounds):
        before = (_cpu_seconds(router), _cpu_seconds(instances))
        rate, _, _, _ = measure(host, port, payload, seconds, 8)
        total = rate * seconds
        rates.append(rate)
        router_us.append((_cpu_seconds(router) - before[0]) / total * 1e6)
        model_us.append((_cpu_seconds(instances) - before[1]) / total * 1e6)
    return {"median": statistics.median(rates), "best": max(rates), "router_us": statistics.median(router_us),
            "model_us": statistics.median(model_us)}


def invoker_with_twenty_statements(server: ServerProcess) -> tuple[str, str]:
    """A user whose one managed policy has 20 statements, the last allowing InvokeEndpoint: its key."""
    from bench.authorization import twenty_statements

    iam = server.client("iam")
    name = unique("invoker")
    iam.create_user(UserName=name)
    policy = iam.create_policy(PolicyName=name, PolicyDocument=twenty_statements(False))["Policy"]["Arn"]
    iam.attach_user_policy(UserName=name, PolicyArn=policy)
    created = iam.create_access_key(UserName=name)["AccessKey"]
    return created["AccessKeyId"], created["SecretAccessKey"]


def compare_principals(server: ServerProcess, host: str, port: int, runtime_url: str, endpoint: str, row: bytes,
                       admin_key: str, admin_secret: str, args: argparse.Namespace, router: list[Any]) -> None:
    """Authorization's cost: the admin key (which skips it) and a 20-statement user, round by round."""
    user_key, user_secret = invoker_with_twenty_statements(server)
    payloads = {"admin key": invoke_bytes(runtime_url, admin_key, admin_secret, endpoint, row),
                "user, 20 statements": invoke_bytes(runtime_url, user_key, user_secret, endpoint, row)}
    rates: dict[str, list[float]] = {label: [] for label in payloads}
    cpu: dict[str, list[float]] = {label: [] for label in payloads}
    for round_number in range(args.rounds):
        # Alternate which goes first: the machine's speed drifts within a round too.
        order = list(payloads.items()) if round_number % 2 == 0 else list(payloads.items())[::-1]
        for label, payload in order:
            before = _cpu_seconds(router)
            rate, _, _, statuses = measure(host, port, payload, args.seconds, 8)
            if statuses.get("non-2xx"):  # a refused key would measure the error path, not authorization
                raise SystemExit(f"{label}: {statuses['non-2xx']} requests were not answered 200")
            rates[label].append(rate)
            cpu[label].append((_cpu_seconds(router) - before) / (rate * args.seconds) * 1e6)
    for label in payloads:
        print(f"InvokeEndpoint, 2 instances, 8 clients, {label:20s}: median {statistics.median(rates[label]):5.0f} "
              f"req/s; router CPU per request {statistics.median(cpu[label]):.0f} us")
    ratio = statistics.median(rates["user, 20 statements"]) / statistics.median(rates["admin key"])
    print(f"  20-statement user / admin key = {ratio:.3f} (target: >= 0.97)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the 8-client runs (median and best)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        server = ServerProcess(Path(tmp) / "data").start()
        try:
            data = adult_bucket(server, Path(tmp) / "adult")
            role = execution_role(server)
            sm = server.client("sagemaker")
            job = unique("bench")
            sm.create_training_job(**training_request(job, role, data["bucket"], [
                channel("train", data["uris"]["train"]), channel("validation", data["uris"]["validation"])]))
            artifacts = wait_for_job(sm, job)["ModelArtifacts"]["S3ModelArtifacts"]
            model = unique("model")
            sm.create_model(ModelName=model, ExecutionRoleArn=role,
                            PrimaryContainer={"Image": XGBOOST_IMAGE, "ModelDataUrl": artifacts})
            table = np.loadtxt(data["local"]["test"], delimiter=",", dtype=np.float32)
            row = (",".join(f"{v:.9g}" for v in table[0, 1:])).encode()
            everything = "\n".join(",".join(f"{v:.9g}" for v in r) for r in table[:, 1:]).encode()
            env = server.env
            url = urlsplit(server.url)

            one, created_one = deploy(server, model, 1)
            two, created_two = deploy(server, model, 2)
            print(f"CreateEndpoint -> InService: 1 instance {created_one:.2f} s, 2 instances {created_two:.2f} s "
                  "(target <= 2 s; SageMaker: about 4.5 minutes)")
            wait_for_compiled(server, one)
            wait_for_compiled(server, two)

            key, secret = env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"]
            runtime_url = server.endpoint_url("sagemaker-runtime")
            rt = urlsplit(runtime_url)
            signed_one = invoke_bytes(runtime_url, key, secret, one, row)
            signed_two = invoke_bytes(runtime_url, key, secret, two, row)
            main_two = invoke_bytes(server.url, key, secret, two, row)
            port = model_server_port(server, one)
            print(f"load generator: {'wrk -t1' if shutil.which('wrk') else 'Python asyncio client'}")
            measure(rt.hostname, rt.port, signed_one, 1.0, 8)  # warm up
            for label, host, target_port, payload, clients in (
                ("InvokeEndpoint, 1 instance, 1 client ", rt.hostname, rt.port, signed_one, 1),
                ("  same on the main port (ASGI), 8 clients, 2 instances", url.hostname, url.port, main_two, 8),
                ("direct model server, 1 client        ", "127.0.0.1", port, direct_bytes(port, row), 1),
                ("direct model server, 8 clients       ", "127.0.0.1", port, direct_bytes(port, row), 8),
            ):
                rate, p50, p99, statuses = measure(host, target_port, payload, args.seconds, clients)
                print(f"{label}  {rate:7.0f} req/s  p50 {p50:6.3f} ms  p99 {p99:6.3f} ms  {statuses}")
            router = front_processes(server, rt.port)
            print(f"runtime port served by {len(router)} processes (the main one and its front workers); "
                  "router CPU below is theirs together")
            for label, endpoint, payload in (("1 instance ", one, signed_one), ("2 instances", two, signed_two)):
                figures = measure_rounds(rt.hostname, rt.port, payload, args.seconds, args.rounds, router,
                                         model_servers(server, endpoint))
                print(f"InvokeEndpoint, {label}, 8 clients, {args.rounds} rounds: median {figures['median']:5.0f} "
                      f"req/s, best {figures['best']:5.0f}; CPU per request: router {figures['router_us']:.0f} us, "
                      f"model servers {figures['model_us']:.0f} us")
            best_two = figures["median"]
            compare_principals(server, rt.hostname, rt.port, runtime_url, two, row, key, secret, args, router)

            booster = load_model(server, artifacts)
            booster.set_param({"nthread": 1})
            if shutil.which("wrk"):
                baseline = measure_baseline(booster, Path(tmp), row, args.seconds)
                print(f"reference stack (Starlette + uvicorn 2 workers + inplace_predict), 8 clients  {baseline:7.0f} "
                      f"req/s; anchors' machine: 5,646")
                print(f"  InvokeEndpoint with 2 instances (median) / reference stack = {best_two / baseline:.2f} "
                      "(issue 5's 4,000 req/s is 0.71 of the reference stack on the anchors' machine)")
            single = table[:1, 1:]
            timings = []
            for _ in range(2000):
                started = time.perf_counter()
                booster.inplace_predict(single)
                timings.append(time.perf_counter() - started)
            print(f"in-process inplace_predict, 1 row, 1 thread   p50 {statistics.median(timings) * 1000:.3f} ms")

            runtime = server.client("sagemaker-runtime")
            runtime.invoke_endpoint(EndpointName=one, ContentType="text/csv", Body=everything)
            big = []
            for _ in range(10):
                started = time.perf_counter()
                runtime.invoke_endpoint(EndpointName=one, ContentType="text/csv", Body=everything)["Body"].read()
                big.append(time.perf_counter() - started)
            print(f"6,513 rows in one InvokeEndpoint (boto3)      median {statistics.median(big) * 1000:.1f} ms "
                  "(target <= 50 ms)")
        finally:
            server.stop()


if __name__ == "__main__":
    main()
